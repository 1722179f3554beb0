//! The registree state machine: register at the registrar, watch the own
//! `<remoteCSE>` there, recover, deregister (docs/protocol.md §5.1, §5.5; ACME
//! RemoteCSEManager, registrar half).
//!
//! Sans-IO in the quinn-proto manner: [`Registration::handle`] takes an
//! [`Input`] and `now`; [`Registration::poll_action`] hands out what to do;
//! [`Registration::poll_timeout`] says when to call back with
//! [`Input::Timer`]. The driver promises one [`Input::Response`] for every
//! [`Action::Send`], a 4008 when none came in time. The machine has at most
//! one request outstanding, so it can never create two CSRs at once.

use super::store::RegistrarMemo;
use crate::id::CseId;
use crate::primitive::{wrap, Content, Operation, Request, ResourceType, Response, Rsc, OWN_RVI};
use crate::resource::{CseBase, RemoteCse};
use crate::time::Now;
use serde_json::{json, Value};
use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;
use std::time::Instant;

pub struct RegistreeConfig {
    pub own: CseId,
    pub registrar: CseId,
    pub registrar_rn: String,
    pub check_interval: Duration,
    /// How long a request may wait in the broker before the registrar should
    /// discard it (`rqet`).
    pub request_timeout: Duration,
    /// Seeds the backoff jitter and the rqi prefix; any value unique per start.
    pub seed: u64,
}

/// Attributes of the own `<remoteCSE>` that a registrar may refuse: all
/// optional in TS-0001 §9.6.4 (docs/protocol.md §5.6). A registrar that
/// refuses them gets the CSR without them.
pub const OPTIONAL_ATTRIBUTES: &[&str] = &["csz", "dcse", "lbl", "nl"];

/// What a registration always carries: the mandatory attributes of
/// TS-0001 §9.6.4 (`cb`, `csi`, `rr`, `srv`) plus `poa` and `cst`, without
/// which the registrar can neither reach nor classify this CSE. A refusal
/// that names one of them is not answered by leaving anything out.
const REQUIRED_ATTRIBUTES: &[&str] = &["cb", "csi", "rr", "srv", "poa", "cst"];

/// What this node wants its CSR at the registrar to say (ACME `_copyCSE2CSR`
/// for the own CSR).
#[derive(Clone, Debug, PartialEq)]
pub struct OwnCsr {
    pub cb: String,
    pub cst: u8,
    pub srv: Vec<String>,
    pub poa: Vec<String>,
    pub csz: Vec<String>,
    pub dcse: Vec<String>,
    pub lbl: Vec<String>,
    pub nl: Option<String>,
}

impl OwnCsr {
    /// What the CSR should say for this CSEBase and these descendants.
    pub fn from_cse_base(base: &CseBase, dcse: Vec<String>) -> OwnCsr {
        OwnCsr {
            cb: base.address(),
            cst: base.cst,
            srv: base.srv.clone(),
            poa: base.poa.clone(),
            csz: base.csz.clone(),
            dcse,
            lbl: base.lbl.clone(),
            nl: base.nl.clone(),
        }
    }

    /// The CREATE body: cb, csi, rr, srv, cst, poa, csz, dcse (+ lbl, nl).
    pub fn create_content(&self, own: &CseId) -> Content {
        self.create_content_without(own, &BTreeSet::new())
    }

    /// The CREATE body without the optional attributes in `omit`.
    pub fn create_content_without(&self, own: &CseId, omit: &BTreeSet<String>) -> Content {
        let mut body = json!({
            "rn": own.bare(),
            "csi": own.as_str(),
            "cb": self.cb,
            "cst": self.cst,
            "rr": true,
            "srv": self.srv,
            "poa": self.poa,
            "csz": self.csz,
            "dcse": self.dcse,
        });
        self.add_optional(&mut body, omit);
        wrap("m2m:csr", body)
    }

    /// The UPDATE body: only attributes that are RW after creation.
    pub fn update_content(&self) -> Content {
        self.update_content_without(&BTreeSet::new())
    }

    /// The UPDATE body without the optional attributes in `omit`.
    pub fn update_content_without(&self, omit: &BTreeSet<String>) -> Content {
        let mut body = json!({
            "rr": true,
            "srv": self.srv,
            "poa": self.poa,
            "csz": self.csz,
            "dcse": self.dcse,
        });
        self.add_optional(&mut body, omit);
        wrap("m2m:csr", body)
    }

    fn add_optional(&self, body: &mut Value, omit: &BTreeSet<String>) {
        if let Value::Object(m) = body {
            if !self.lbl.is_empty() {
                m.insert("lbl".into(), json!(self.lbl));
            }
            if let Some(nl) = &self.nl {
                m.insert("nl".into(), json!(nl));
            }
            m.retain(|k, _| !omit.contains(k));
        }
    }

    /// The optional attributes a CREATE or UPDATE of this CSR would carry.
    fn optional_present(&self) -> BTreeSet<String> {
        let mut present: BTreeSet<String> = ["csz", "dcse"].map(String::from).into();
        if !self.lbl.is_empty() {
            present.insert("lbl".into());
        }
        if self.nl.is_some() {
            present.insert("nl".into());
        }
        present
    }

    /// The attributes whose value at the registrar (as `remote` shows it)
    /// is not what this node wants. An attribute the registrar does not
    /// show is not compared: a registrar that does not store it (or leaves
    /// an empty list out) would otherwise be updated on every check, for
    /// ever (docs/protocol.md §5.6). `skip`: attributes not to compare.
    pub fn drift(&self, remote: &RemoteCse, skip: &BTreeSet<String>) -> BTreeSet<String> {
        let differs = |want: &[String], have: &Option<Vec<String>>| {
            have.as_deref().is_some_and(|h| h != want)
        };
        let sorted = |v: &[String]| {
            let mut v = v.to_vec();
            v.sort();
            v
        };
        let mut out = BTreeSet::new();
        let mut check = |name: &str, d: bool| {
            if d && !skip.contains(name) {
                out.insert(name.to_owned());
            }
        };
        check("srv", differs(&self.srv, &remote.srv));
        check("poa", differs(&self.poa, &remote.poa));
        check("csz", differs(&self.csz, &remote.csz));
        check(
            "dcse",
            remote
                .dcse
                .as_deref()
                .is_some_and(|h| sorted(h) != sorted(&self.dcse)),
        );
        check(
            "lbl",
            !self.lbl.is_empty() && differs(&self.lbl, &remote.lbl),
        );
        check(
            "nl",
            self.nl.is_some() && remote.nl.is_some() && self.nl != remote.nl,
        );
        check("rr", remote.rr == Some(false));
        out
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// Begin; `adopt`: this node kept state from an earlier run (a local
    /// registrar CSR), so its CSR at the registrar is adopted, not recreated.
    Start {
        adopt: bool,
        remote_rn: Option<String>,
    },
    Response(Response),
    Timer,
    OwnCsrChanged(OwnCsr),
    Shutdown,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send this request to the registrar.
    Send(Request),
    /// Create or refresh the local CSR that represents the registrar.
    StoreRegistrarCsr(RemoteCse),
    /// Delete the local registrar CSR.
    RemoveRegistrarCsr,
    /// The name of the own CSR at the registrar (to persist), or none.
    RemoteCsrName(Option<String>),
    Registered,
    /// No longer registered. `confirmed`: the registrar answered the DELETE
    /// (2002/4004) or said the CSR is gone; false: it could not be reached
    /// and the CSR may still be there.
    Deregistered {
        confirmed: bool,
    },
    /// A step failed and is retried after `retry_in`; `answer` is the
    /// registrar's refusal (status and `m2m:dbg`), `None` if it did not
    /// answer at all.
    Retry {
        step: Step,
        retry_in: Duration,
        answer: Option<(Rsc, String)>,
    },
    /// The own CSR's name at the registrar belongs to another CSE.
    Squatted {
        rn: String,
        csi: String,
    },
    /// The registrar refused the optional `attributes` of the own CSR
    /// (`answer`: its refusal) and took the CSR without them: they are left
    /// out from now on, and `memo` is what to keep about this registrar.
    AttributesRefused {
        attributes: Vec<String>,
        answer: Option<(Rsc, String)>,
        memo: RegistrarMemo,
    },
    /// The registrar no longer has the own CSR (e.g. 4004 after its reset):
    /// no longer registered; registering again follows.
    Lost {
        answer: Option<(Rsc, String)>,
    },
    /// The check of the own CSR went unanswered `times` in a row; the
    /// registration is kept (docs/protocol.md §5.5).
    CheckUnanswered {
        times: u32,
    },
    /// The registrar keeps the own CSR but refused to change it (5000, a
    /// limit of its own such as `[limits] dcse_entries`); said once until a
    /// change is taken again. The registration stands (docs/protocol.md §5.3).
    UpdateRefused {
        answer: Option<(Rsc, String)>,
    },
    /// Deregistration is over; the driver may exit.
    Stopped,
}

/// A request the machine can (re)issue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    CleanStale,
    Create,
    Adopt,
    Update,
    FetchBase,
    Check,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    Idle,
    /// Waiting for the answer to `step`'s request.
    Waiting {
        step: Step,
        rqi: String,
    },
    /// Registered; the next check is at the timer.
    Registered,
    /// Waiting to retry `step` at the timer.
    Backoff {
        step: Step,
    },
    Deregistering {
        rqi: String,
    },
    Stopped,
}

pub struct Registration {
    cfg: RegistreeConfig,
    want: Option<OwnCsr>,
    phase: Phase,
    registered: bool,
    /// When the registration was made and last confirmed (wall time, for
    /// `m2mnode status`).
    since: Option<crate::time::Timestamp>,
    last_check: Option<crate::time::Timestamp>,
    remote_rn: Option<String>,
    /// The own CSEBase changed while a request was outstanding.
    dirty: bool,
    /// The last CREATE met a conflict; an adopt that then finds nothing must
    /// not loop straight back to CREATE.
    after_conflict: bool,
    /// The CSE found holding the own CSR's name, once reported.
    squatter: Option<String>,
    /// Checks of the own CSR unanswered in a row.
    unanswered_checks: u32,
    /// The registrar's last refusal, reported with the retry it causes.
    refusal: Option<(Rsc, String)>,
    /// Optional attributes this registrar refused: never sent to it.
    omit: BTreeSet<String>,
    /// Optional attributes left out on trial, after a refusal (`trial_cause`)
    /// that may have been about them; learned into `omit` on success.
    trial: Option<BTreeSet<String>>,
    trial_cause: Option<(Rsc, String)>,
    /// The one trial of this attempt was made (reset at each retry).
    trial_spent: bool,
    /// The own CSR was deleted and created anew because it could not be
    /// updated; done once until an UPDATE succeeds or the CSR changes.
    replaced: bool,
    /// Attributes the registrar accepted in an UPDATE but does not keep (a
    /// RETRIEVE shows them unchanged): no longer compared at the check.
    unkept: BTreeSet<String>,
    /// The attributes the last UPDATE after a check was made for.
    drift_sent: Option<BTreeSet<String>>,
    /// An UPDATE refused for a limit of the registrar's (5000) was
    /// reported; not again until one succeeds.
    over_limit_told: bool,
    /// An UPDATE was refused and the CSR kept as it is: no UPDATE for what
    /// the check finds until the own CSR changes.
    update_refused: bool,
    timer: Option<Instant>,
    failures: u32,
    rng: u64,
    counter: u64,
    out: VecDeque<Action>,
}

impl Registration {
    pub fn new(cfg: RegistreeConfig, want: OwnCsr) -> Self {
        let rng = cfg.seed | 1;
        Registration {
            cfg,
            want: Some(want),
            phase: Phase::Idle,
            registered: false,
            since: None,
            last_check: None,
            remote_rn: None,
            dirty: false,
            after_conflict: false,
            squatter: None,
            unanswered_checks: 0,
            refusal: None,
            omit: BTreeSet::new(),
            trial: None,
            trial_cause: None,
            trial_spent: false,
            replaced: false,
            unkept: BTreeSet::new(),
            drift_sent: None,
            over_limit_told: false,
            update_refused: false,
            timer: None,
            failures: 0,
            rng,
            counter: 0,
            out: VecDeque::new(),
        }
    }

    pub fn is_registered(&self) -> bool {
        self.registered
    }

    /// Takes what an earlier run learned about this registrar.
    pub fn restore(&mut self, memo: &RegistrarMemo) {
        self.omit = memo
            .refused
            .iter()
            .filter(|a| OPTIONAL_ATTRIBUTES.contains(&a.as_str()))
            .cloned()
            .collect();
    }

    /// What to keep about this registrar.
    pub fn memo(&self) -> RegistrarMemo {
        RegistrarMemo {
            refused: self.omit.iter().cloned().collect(),
        }
    }

    /// The address of the own CSR at the registrar.
    pub fn own_csr(&self) -> String {
        self.own_csr_address()
    }

    /// Whether the own CSR at the registrar has the name this node would
    /// give it at any start (its CSE-ID without '/'): then even a node
    /// without a store deletes it at its next start.
    pub fn own_csr_has_default_name(&self) -> bool {
        self.remote_rn
            .as_deref()
            .is_none_or(|rn| rn == self.cfg.own.bare())
    }

    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// Since when this node is registered (wall time), if it is.
    pub fn registered_since(&self) -> Option<crate::time::Timestamp> {
        self.since.filter(|_| self.registered)
    }

    /// When the registrar last confirmed the own CSR (wall time).
    pub fn last_check(&self) -> Option<crate::time::Timestamp> {
        self.last_check
    }

    /// A new check interval (config reload); the next check moves with it.
    pub fn set_check_interval(&mut self, interval: Duration, now: Now) {
        self.cfg.check_interval = interval;
        if self.phase == Phase::Registered {
            self.timer = Some(now.mono + interval);
        }
    }

    /// Checks the own CSR now instead of at the next interval (SIGUSR1).
    pub fn check_now(&mut self, now: Now) {
        if self.phase == Phase::Registered {
            self.begin(Step::Check, now);
        }
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.out.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timer
    }

    pub fn handle(&mut self, input: Input, now: Now) {
        match input {
            Input::Start { adopt, remote_rn } => {
                if self.phase != Phase::Idle {
                    return;
                }
                self.remote_rn = remote_rn;
                self.begin(if adopt { Step::Adopt } else { Step::CleanStale }, now);
            }
            Input::Response(rsp) => self.on_response(rsp, now),
            Input::Timer => {
                if self.timer.is_none_or(|t| t > now.mono) {
                    return;
                }
                self.timer = None;
                match self.phase.clone() {
                    Phase::Registered => self.begin(Step::Check, now),
                    Phase::Backoff { step } => {
                        self.trial_spent = false;
                        self.begin(step, now)
                    }
                    _ => {}
                }
            }
            Input::OwnCsrChanged(want) => {
                if self.want.as_ref() == Some(&want) {
                    return;
                }
                // A change only of what this registrar refuses is not sent.
                let unseen = self.want.as_ref().is_some_and(|old| {
                    old.update_content_without(&self.omit)
                        == want.update_content_without(&self.omit)
                });
                self.want = Some(want);
                if unseen {
                    return;
                }
                // A real change: worth one UPDATE (and, if refused, one
                // replacement) again.
                self.replaced = false;
                self.update_refused = false;
                match self.phase {
                    Phase::Registered => self.begin(Step::Update, now),
                    Phase::Waiting { .. } | Phase::Backoff { .. } => self.dirty = true,
                    _ => {}
                }
            }
            Input::Shutdown => self.shutdown(now),
        }
    }

    fn shutdown(&mut self, now: Now) {
        match self.phase {
            Phase::Stopped | Phase::Deregistering { .. } => return,
            Phase::Idle => {
                self.stop(true);
                return;
            }
            _ => {}
        }
        self.timer = None;
        // Nothing was ever created at the registrar this run and nothing is
        // known from earlier ones: nothing to delete there. A CREATE still
        // unanswered may have succeeded, though, and a conflict said a CSR
        // of this name is there. Whatever the state otherwise (a backoff, a
        // refused UPDATE of an adopted CSR), a CSR this node may hold is
        // deleted.
        let may_exist = matches!(
            self.phase,
            Phase::Waiting {
                step: Step::Create | Step::Adopt,
                ..
            }
        ) || self.after_conflict;
        if !self.registered && self.remote_rn.is_none() && !may_exist {
            self.out.push_back(Action::RemoveRegistrarCsr);
            self.stop(true);
            return;
        }
        let rqi = self.next_rqi();
        let req = self.request(Operation::Delete, self.own_csr_address(), &rqi, now);
        self.out.push_back(Action::Send(req));
        self.phase = Phase::Deregistering { rqi };
    }

    fn stop(&mut self, confirmed: bool) {
        if self.registered {
            self.registered = false;
            self.out.push_back(Action::Deregistered { confirmed });
        }
        self.phase = Phase::Stopped;
        self.timer = None;
        self.out.push_back(Action::Stopped);
    }

    fn on_response(&mut self, rsp: Response, now: Now) {
        let step = match &self.phase {
            Phase::Waiting { step, rqi } if *rqi == rsp.rqi => *step,
            Phase::Deregistering { rqi } if *rqi == rsp.rqi => {
                // Whatever the answer, the local half goes. An unconfirmed
                // DELETE keeps the own CSR's name in the store: the next
                // start deletes that CSR before it registers again
                // (docs/protocol.md §5.6); a registrar need not have a
                // liveness check that would (Mobius has none).
                self.out.push_back(Action::RemoveRegistrarCsr);
                let confirmed = rsp.rsc == Rsc::DELETED || rsp.rsc == Rsc::NOT_FOUND;
                if confirmed {
                    self.out.push_back(Action::RemoteCsrName(None));
                }
                self.stop(confirmed);
                return;
            }
            // A late answer to a request this machine has moved past.
            _ => return,
        };
        let unreachable = is_unreachable(rsp.rsc);
        self.refusal = (!unreachable && !rsp.rsc.is_success())
            .then(|| (rsp.rsc, rsp.debug_text().unwrap_or_default().to_owned()));
        if matches!(step, Step::Create | Step::Update) && self.refusal.is_some() {
            // A registrar that refuses an optional attribute of the own CSR
            // is asked once more without it (docs/protocol.md §5.6).
            if let Some(attrs) = self.trial_for(&rsp) {
                self.trial_spent = true;
                self.trial = Some(attrs);
                self.trial_cause = self.refusal.take();
                return self.begin(step, now);
            }
            // Refused without them too: they were not what the registrar
            // minded. A conflict says nothing about them.
            if !is_conflict(rsp.rsc) {
                self.trial = None;
            }
        }
        match step {
            Step::CleanStale if unreachable => self.backoff(step, now),
            Step::CleanStale => {
                self.remote_rn = None;
                self.begin(Step::Create, now)
            }
            Step::Create => match rsp.rsc {
                Rsc::CREATED => {
                    self.learn();
                    let rn = rsp
                        .pc
                        .as_ref()
                        .and_then(|pc| RemoteCse::from_content(pc).ok())
                        .and_then(|c| c.rn);
                    self.set_remote_rn(rn.unwrap_or_else(|| self.cfg.own.bare().to_owned()));
                    self.after_conflict = false;
                    self.begin(Step::FetchBase, now);
                }
                _ if is_conflict(rsp.rsc) => {
                    self.after_conflict = true;
                    self.begin(Step::Adopt, now);
                }
                _ => self.backoff(step, now),
            },
            Step::Adopt => match rsp.rsc {
                Rsc::OK => {
                    let remote = rsp
                        .pc
                        .as_ref()
                        .and_then(|pc| RemoteCse::from_content(pc).ok());
                    // The name is taken by another CSE (registered first
                    // with our rn): adopting it would update a stranger's
                    // CSR. Wait and try again; the operator must act.
                    if let Some(other) = remote
                        .as_ref()
                        .and_then(|c| c.csi.clone())
                        .filter(|c| c != self.cfg.own.as_str())
                    {
                        // Said once per holder, not on every retry.
                        if self.squatter.as_deref() != Some(other.as_str()) {
                            let rn = self.own_csr_address();
                            self.out.push_back(Action::Squatted {
                                rn,
                                csi: other.clone(),
                            });
                            self.squatter = Some(other.clone());
                        }
                        self.refusal = Some((
                            Rsc::CONFLICT,
                            format!("the name is taken at the registrar by {other}"),
                        ));
                        self.after_conflict = false;
                        return self.backoff_to(step, Step::Create, now);
                    }
                    if let Some(rn) = remote.as_ref().and_then(|c| c.rn.clone()) {
                        self.set_remote_rn(rn);
                    }
                    self.after_conflict = false;
                    // Always bring the adopted CSR up to date: it may be from
                    // an earlier run with other poa or dcse.
                    self.begin(Step::Update, now);
                }
                _ if unreachable => self.backoff(step, now),
                _ if self.after_conflict => {
                    self.after_conflict = false;
                    self.backoff_to(step, Step::Create, now)
                }
                _ => self.begin(Step::Create, now),
            },
            Step::Update => match rsp.rsc {
                Rsc::UPDATED => {
                    self.learn();
                    self.replaced = false;
                    self.over_limit_told = false;
                    if self.registered {
                        self.settle_or_update(now)
                    } else {
                        self.begin(Step::FetchBase, now)
                    }
                }
                // The CSR is there; the registrar cannot take the change.
                Rsc::INTERNAL_SERVER_ERROR => self.over_limit(now),
                _ if unreachable && self.registered => {
                    // Try again at the next check, which compares.
                    self.dirty = true;
                    self.settle(now)
                }
                _ if unreachable => self.backoff(step, now),
                Rsc::NOT_FOUND => self.lost(step, now),
                _ => self.update_refused(now),
            },
            Step::FetchBase => match rsp.rsc {
                Rsc::OK => match rsp.pc.as_ref().map(RemoteCse::from_cse_base) {
                    Some(Ok(mut csr)) => {
                        csr.rn = Some(self.cfg.registrar.bare().to_owned());
                        csr.ri = Some(self.cfg.registrar.bare().to_owned());
                        self.out.push_back(Action::StoreRegistrarCsr(csr));
                        if !self.registered {
                            self.registered = true;
                            self.squatter = None;
                            self.since = Some(now.wall);
                            self.out.push_back(Action::Registered);
                        }
                        self.last_check = Some(now.wall);
                        self.settle_or_update(now);
                    }
                    _ => self.backoff(step, now),
                },
                _ => self.backoff(step, now),
            },
            Step::Check => match rsp.rsc {
                Rsc::OK => {
                    let remote = rsp
                        .pc
                        .as_ref()
                        .and_then(|pc| RemoteCse::from_content(pc).ok());
                    if let (Some(w), Some(r)) = (&self.want, &remote) {
                        let mut skip = self.unkept.clone();
                        skip.extend(self.omit.iter().cloned());
                        let drift = w.drift(r, &skip);
                        if drift.is_empty() || self.update_refused {
                            self.drift_sent = None;
                        } else if self.drift_sent.as_ref() == Some(&drift) {
                            // The UPDATE for exactly this was accepted and
                            // changed nothing: the registrar does not keep
                            // these (docs/protocol.md §5.6). Stop comparing
                            // them rather than UPDATE on every check.
                            self.unkept.extend(drift);
                            self.drift_sent = None;
                        } else {
                            self.drift_sent = Some(drift);
                            self.dirty = true;
                        }
                    }
                    self.last_check = Some(now.wall);
                    self.unanswered_checks = 0;
                    self.settle_or_update(now)
                }
                _ if unreachable => {
                    self.unanswered_checks += 1;
                    self.out.push_back(Action::CheckUnanswered {
                        times: self.unanswered_checks,
                    });
                    self.settle(now)
                }
                _ => self.lost(step, now),
            },
        }
    }

    /// The optional attributes to leave out on trial after the refusal
    /// `rsp` of a CREATE or UPDATE, if it may have been about them: a 4000
    /// or 5001 (TS-0004 would have 5001 for an unsupported attribute;
    /// Mobius says 4000 without a name), or any refusal that names some of
    /// them; never one that names a required attribute. One trial per
    /// attempt, so a refusing registrar sees one more request, no loop.
    fn trial_for(&self, rsp: &Response) -> Option<BTreeSet<String>> {
        if self.trial_spent || self.trial.is_some() {
            return None;
        }
        let sent: BTreeSet<String> = self
            .want
            .as_ref()?
            .optional_present()
            .difference(&self.omit)
            .cloned()
            .collect();
        let text = rsp.debug_text().unwrap_or_default().to_ascii_lowercase();
        let words: BTreeSet<&str> = text
            .split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|w| !w.is_empty())
            .collect();
        if sent.is_empty() || REQUIRED_ATTRIBUTES.iter().any(|a| words.contains(a)) {
            return None;
        }
        let named: BTreeSet<String> = sent
            .iter()
            .filter(|a| words.contains(a.as_str()))
            .cloned()
            .collect();
        // A 5000 is a limit of the registrar's (a `dcse` longer than it
        // takes, docs/protocol.md §5.3), not an attribute it does not know,
        // even when it names one: leaving `dcse` out for good would cut the
        // subtree off.
        if rsp.rsc == Rsc::INTERNAL_SERVER_ERROR {
            return None;
        }
        if !named.is_empty() {
            return Some(named);
        }
        matches!(rsp.rsc, Rsc::BAD_REQUEST | Rsc::NOT_IMPLEMENTED).then_some(sent)
    }

    /// A CREATE or UPDATE succeeded: what was left out on trial is what the
    /// registrar refuses.
    fn learn(&mut self) {
        self.trial_spent = false;
        let Some(attrs) = self.trial.take() else {
            return;
        };
        self.omit.extend(attrs.iter().cloned());
        self.out.push_back(Action::AttributesRefused {
            attributes: attrs.into_iter().collect(),
            answer: self.trial_cause.take(),
            memo: self.memo(),
        });
    }

    /// An UPDATE of the own CSR was refused (not with 4004: it is there).
    /// The first time, the CSR is deleted and created anew, after a backoff;
    /// after that, an adopted CSR is retried from the RETRIEVE with backoff
    /// and a registered one is kept as it is until the own CSR changes.
    fn update_refused(&mut self, now: Now) {
        if !self.replaced {
            self.replaced = true;
            self.registered = false;
            return self.backoff_to(Step::Update, Step::CleanStale, now);
        }
        if self.registered {
            self.update_refused = true;
            self.out.push_back(Action::Retry {
                step: Step::Update,
                retry_in: self.cfg.check_interval,
                answer: self.refusal.take(),
            });
            return self.settle(now);
        }
        self.backoff_to(Step::Update, Step::Adopt, now)
    }

    /// The own CSR is gone at the registrar (e.g. 4004 after a registrar
    /// reset): drop the local half and register anew.
    ///
    /// Only a CSR that was there and vanished is recreated at once; a
    /// refusal while registering (an UPDATE answered 4103, say) backs off,
    /// so no sequence of refusals can loop without a pause.
    fn lost(&mut self, step: Step, now: Now) {
        self.over_limit_told = false;
        self.out.push_back(Action::RemoveRegistrarCsr);
        self.out.push_back(Action::RemoteCsrName(None));
        self.remote_rn = None;
        if self.registered {
            self.registered = false;
            self.out.push_back(Action::Lost {
                answer: self.refusal.take(),
            });
            self.begin(Step::Create, now);
        } else {
            self.backoff_to(step, Step::Create, now);
        }
    }

    /// The registrar refused an UPDATE of the own CSR with 5000: a limit of
    /// its own (e.g. a `dcse` longer than it accepts), not a lost CSR. The
    /// registration stands (or is completed, after an adopt) with the CSR
    /// as the registrar has it; the refusal is reported once; the change is
    /// tried again after the next check finds it missing, one interval on,
    /// and never by a new CREATE (docs/protocol.md §5.3).
    fn over_limit(&mut self, now: Now) {
        self.dirty = false;
        if !self.over_limit_told {
            self.over_limit_told = true;
            self.out.push_back(Action::UpdateRefused {
                answer: self.refusal.take(),
            });
        }
        if self.registered {
            self.settle(now)
        } else {
            self.begin(Step::FetchBase, now)
        }
    }

    /// Registered and idle: next check one interval from now.
    fn settle(&mut self, now: Now) {
        self.failures = 0;
        self.phase = Phase::Registered;
        self.timer = Some(now.mono + self.cfg.check_interval);
    }

    /// Registered, and the own CSEBase may have changed meanwhile.
    fn settle_or_update(&mut self, now: Now) {
        if self.dirty {
            self.begin(Step::Update, now)
        } else {
            self.settle(now)
        }
    }

    fn set_remote_rn(&mut self, rn: String) {
        if self.remote_rn.as_deref() != Some(&rn) {
            self.out.push_back(Action::RemoteCsrName(Some(rn.clone())));
        }
        self.remote_rn = Some(rn);
    }

    fn backoff(&mut self, step: Step, now: Now) {
        self.backoff_to(step, step, now)
    }

    /// `failed` failed; `retry` follows after a backoff: exponential from
    /// 1 s, capped at the check interval (so the node is back within one
    /// interval of the registrar), ±20 % jitter. The event names the step
    /// that failed.
    fn backoff_to(&mut self, failed: Step, retry: Step, now: Now) {
        self.failures = self.failures.saturating_add(1);
        let base = Duration::from_secs(1)
            .saturating_mul(1u32 << self.failures.saturating_sub(1).min(16))
            .min(self.cfg.check_interval);
        // xorshift64: deterministic for a seed, which is what tests need.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let jitter = (self.rng % 401) as f64 / 1000.0 - 0.2;
        let delay = base.mul_f64(1.0 + jitter).min(self.cfg.check_interval);
        self.phase = Phase::Backoff { step: retry };
        self.timer = Some(now.mono + delay);
        self.out.push_back(Action::Retry {
            step: failed,
            retry_in: delay,
            answer: self.refusal.take(),
        });
    }

    fn begin(&mut self, step: Step, now: Now) {
        let rqi = self.next_rqi();
        let registrar_cb = format!("{}/{}", self.cfg.registrar, self.cfg.registrar_rn);
        let want = self.want.clone();
        let mut omit = self.omit.clone();
        omit.extend(self.trial.iter().flatten().cloned());
        let mut req = match step {
            Step::CleanStale | Step::Adopt | Step::Check => {
                let op = if step == Step::CleanStale {
                    Operation::Delete
                } else {
                    Operation::Retrieve
                };
                self.request(op, self.own_csr_address(), &rqi, now)
            }
            Step::Create => {
                let mut r = self.request(Operation::Create, registrar_cb, &rqi, now);
                r.ty = Some(ResourceType::REMOTE_CSE);
                r.pc = want.map(|w| w.create_content_without(&self.cfg.own, &omit));
                r
            }
            Step::Update => {
                let mut r = self.request(Operation::Update, self.own_csr_address(), &rqi, now);
                r.pc = want.map(|w| w.update_content_without(&omit));
                r
            }
            Step::FetchBase => self.request(Operation::Retrieve, registrar_cb, &rqi, now),
        };
        if step == Step::Update {
            self.dirty = false;
        }
        req.rqi.clone_from(&rqi);
        self.out.push_back(Action::Send(req));
        self.phase = Phase::Waiting { step, rqi };
        self.timer = None;
    }

    fn own_csr_address(&self) -> String {
        let rn = self.remote_rn.as_deref().unwrap_or(self.cfg.own.bare());
        format!("{}/{}/{}", self.cfg.registrar, self.cfg.registrar_rn, rn)
    }

    fn request(&self, op: Operation, to: String, rqi: &str, now: Now) -> Request {
        let mut r = Request::new(op, to, self.cfg.own.as_str(), rqi);
        r.rvi = Some(OWN_RVI.into());
        r.ot = Some(now.wall.to_onem2m());
        r.rqet = Some(now.wall.plus(self.cfg.request_timeout).to_onem2m());
        r
    }

    fn next_rqi(&mut self) -> String {
        self.counter += 1;
        format!(
            "{}-{:x}-{}",
            self.cfg.own.bare(),
            self.cfg.seed & 0xff_ffff,
            self.counter
        )
    }
}

/// A CSR of this name is there already (ACME: 4105; others 4117 or 4005).
fn is_conflict(rsc: Rsc) -> bool {
    matches!(
        rsc,
        Rsc::CONFLICT | Rsc::ORIGINATOR_HAS_ALREADY_REGISTERED | Rsc::OPERATION_NOT_ALLOWED
    )
}

/// No answer, or the registrar could not be reached: not evidence that the
/// CSR is gone (docs/protocol.md §5.5), so keep state and try again.
fn is_unreachable(rsc: Rsc) -> bool {
    matches!(
        rsc,
        Rsc::TARGET_NOT_REACHABLE | Rsc::REQUEST_TIMEOUT | Rsc::REMOTE_ENTITY_NOT_REACHABLE
    )
}

#[cfg(test)]
#[path = "registration_tests.rs"]
mod tests;
