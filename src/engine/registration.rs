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

use crate::id::CseId;
use crate::primitive::{wrap, Content, Operation, Request, ResourceType, Response, Rsc, OWN_RVI};
use crate::resource::{CseBase, RemoteCse};
use crate::time::Now;
use serde_json::{json, Value};
use std::collections::VecDeque;
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
        self.add_optional(&mut body);
        wrap("m2m:csr", body)
    }

    /// The UPDATE body: only attributes that are RW after creation.
    pub fn update_content(&self) -> Content {
        let mut body = json!({
            "rr": true,
            "srv": self.srv,
            "poa": self.poa,
            "csz": self.csz,
            "dcse": self.dcse,
        });
        self.add_optional(&mut body);
        wrap("m2m:csr", body)
    }

    fn add_optional(&self, body: &mut Value) {
        if let Value::Object(m) = body {
            if !self.lbl.is_empty() {
                m.insert("lbl".into(), json!(self.lbl));
            }
            if let Some(nl) = &self.nl {
                m.insert("nl".into(), json!(nl));
            }
        }
    }

    /// Whether the CSR at the registrar says something else than wanted.
    pub fn differs_from(&self, remote: &RemoteCse) -> bool {
        let same = |want: &[String], have: &Option<Vec<String>>| {
            have.as_deref().unwrap_or_default() == want
        };
        let mut want_dcse = self.dcse.clone();
        want_dcse.sort();
        let mut have_dcse = remote.dcse().to_vec();
        have_dcse.sort();
        !(same(&self.srv, &remote.srv)
            && same(&self.poa, &remote.poa)
            && same(&self.csz, &remote.csz)
            && want_dcse == have_dcse
            && (self.lbl.is_empty() || same(&self.lbl, &remote.lbl))
            && (self.nl.is_none() || self.nl == remote.nl)
            && remote.rr == Some(true))
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
    /// An UPDATE refusal (5000) was reported; not again until one succeeds.
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
                    Phase::Backoff { step } => self.begin(step, now),
                    _ => {}
                }
            }
            Input::OwnCsrChanged(want) => {
                if self.want.as_ref() == Some(&want) {
                    return;
                }
                self.want = Some(want);
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
        // unanswered may have succeeded, though.
        let creating = matches!(
            self.phase,
            Phase::Waiting {
                step: Step::Create,
                ..
            }
        );
        if !self.registered && self.remote_rn.is_none() && !creating {
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
                // Whatever the answer, the local half goes: the registrar's
                // own liveness check removes a CSR we could not delete.
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
        match step {
            Step::CleanStale if unreachable => self.backoff(step, now),
            Step::CleanStale => {
                self.remote_rn = None;
                self.begin(Step::Create, now)
            }
            Step::Create => match rsp.rsc {
                Rsc::CREATED => {
                    let rn = rsp
                        .pc
                        .as_ref()
                        .and_then(|pc| RemoteCse::from_content(pc).ok())
                        .and_then(|c| c.rn);
                    self.set_remote_rn(rn.unwrap_or_else(|| self.cfg.own.bare().to_owned()));
                    self.after_conflict = false;
                    self.begin(Step::FetchBase, now);
                }
                Rsc::CONFLICT
                | Rsc::ORIGINATOR_HAS_ALREADY_REGISTERED
                | Rsc::OPERATION_NOT_ALLOWED => {
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
                        return self.backoff(Step::Create, now);
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
                    self.backoff(Step::Create, now)
                }
                _ => self.begin(Step::Create, now),
            },
            Step::Update => match rsp.rsc {
                Rsc::UPDATED if self.registered => {
                    self.update_refused = false;
                    self.settle_or_update(now)
                }
                Rsc::UPDATED => {
                    self.update_refused = false;
                    self.begin(Step::FetchBase, now)
                }
                // The CSR is there; the registrar cannot take the change.
                Rsc::INTERNAL_SERVER_ERROR => self.update_refused(now),
                _ if unreachable && self.registered => {
                    // Try again at the next check, which compares.
                    self.dirty = true;
                    self.settle(now)
                }
                _ if unreachable => self.backoff(step, now),
                _ => self.lost(now),
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
                    let differs = match (&self.want, &remote) {
                        (Some(w), Some(r)) => w.differs_from(r),
                        _ => false,
                    };
                    self.dirty |= differs;
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
                _ => self.lost(now),
            },
        }
    }

    /// The own CSR is gone at the registrar (e.g. 4004 after a registrar
    /// reset): drop the local half and register anew.
    ///
    /// Only a CSR that was there and vanished is recreated at once; a
    /// refusal while registering (an UPDATE answered 4103, say) backs off,
    /// so no sequence of refusals can loop without a pause.
    fn lost(&mut self, now: Now) {
        self.update_refused = false;
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
            self.backoff(Step::Create, now);
        }
    }

    /// The registrar refused an UPDATE of the own CSR with 5000: a limit of
    /// its own (e.g. a `dcse` longer than it accepts), not a lost CSR. The
    /// registration stands (or is completed, after an adopt) with the CSR
    /// as the registrar has it; the refusal is reported once; the change is
    /// tried again after the next check finds it missing, one interval on,
    /// and never by a new CREATE (docs/protocol.md §5.3).
    fn update_refused(&mut self, now: Now) {
        self.dirty = false;
        if !self.update_refused {
            self.update_refused = true;
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

    /// Exponential backoff from 1 s, capped at the check interval (so the
    /// node is back within one interval of the registrar), ±20 % jitter.
    fn backoff(&mut self, step: Step, now: Now) {
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
        self.phase = Phase::Backoff { step };
        self.timer = Some(now.mono + delay);
        self.out.push_back(Action::Retry {
            step,
            retry_in: delay,
            answer: self.refusal.take(),
        });
    }

    fn begin(&mut self, step: Step, now: Now) {
        let rqi = self.next_rqi();
        let registrar_cb = format!("{}/{}", self.cfg.registrar, self.cfg.registrar_rn);
        let want = self.want.clone();
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
                r.pc = want.map(|w| w.create_content(&self.cfg.own));
                r
            }
            Step::Update => {
                let mut r = self.request(Operation::Update, self.own_csr_address(), &rqi, now);
                r.pc = want.map(|w| w.update_content());
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
