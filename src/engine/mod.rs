//! The sans-IO engine: every protocol decision of the node, as a pure
//! function of inputs and time (docs/protocol.md §10).
//!
//! It owns the registrar (hosting side: CSR C/R/U/D, routing), the own
//! registration machine, the registree liveness schedule, duplicate-delivery
//! tracking, pending forwards and the requests this node is waiting on, and
//! the in-memory store with its indexes.
//!
//! # Driver contract
//!
//! Modelled on quinn-proto's `Connection`:
//!
//! 1. Feed inputs as they happen: [`Engine::handle_request`] for a publish
//!    on a request topic, [`Engine::handle_response`] for one on a response
//!    topic, [`Engine::connection`] when the broker link comes or goes
//!    ([`Engine::link_connection`] for each of two links, when the
//!    registrar is on a broker of its own: [`Link`]),
//!    [`Engine::store_committed`] / [`Engine::store_failed`] when a batch
//!    from [`Engine::poll_store`] has been written (or not), and
//!    [`Engine::handle_timeout`] when the instant from
//!    [`Engine::poll_timeout`] has come.
//! 2. After **every** input, drain the outputs: [`Engine::poll_store`]
//!    (hand the batch to the persister; at most one is outstanding),
//!    [`Engine::poll_transmit`] (publish; a transmit's [`Ack`] is released
//!    only after its payload was handed to the client, so the broker
//!    redelivers what a crash cut short), [`Engine::poll_event`] (log,
//!    status), then re-read [`Engine::poll_timeout`] and sleep until then.
//! 3. `now` is a [`Now`]: a monotonic instant for every timer and the wall
//!    time for what goes on the wire (`ot`, `rqet`, `ct`, `lt`). It must
//!    never go backwards (the monotonic part); the wall part may jump.
//!
//! Transmits are addressed to a next-hop CSE (a request) or to the hop a
//! request came from (an answer), never to a topic or a connection: which
//! broker carries them is the driver's business (with two links: a request
//! to the registrar's CSE-ID goes upstream, any other locally, and an
//! answer goes back on the [`Route::link`] its request came in on).
//!
//! Nothing acknowledged is lost: a CREATE/UPDATE/DELETE of a durable node is
//! answered only once its batch is committed (group commit); a batch that
//! fails is undone in memory and every request in it is answered 5000.

mod counters;
mod dedupe;
mod durability;
mod forwards;
mod liveness;
pub mod registrar;
pub mod registration;
pub mod store;

pub use crate::topic::Link;
pub use counters::{Counters, DropReason};
pub use liveness::MISSES as LIVENESS_MISSES;
pub use registrar::{Limits, Outcome, Registrar, RegistrarSettings};
pub use registration::{Action, Input, OwnCsr, Phase, Registration, RegistreeConfig, Step};

use crate::error::Refusal;
use crate::id::CseId;
use crate::persist::{Snapshot, StoreChange};
use crate::primitive::{Format, Operation, Request, ResourceType, Response, Rsc, OWN_RVI};
use crate::time::Now;
use crate::topic::Route;
use dedupe::{RecentRequests, Seen};
use durability::{Parked, Uncommitted};
use forwards::{Pending, Purpose};
use liveness::{Liveness, ProbeOutcome, Verdict};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};
use store::{Notice, Store, Undo};
use tracing::debug;

/// The own registration, when this node has a registrar.
#[derive(Clone, Debug)]
pub struct UpstreamSettings {
    pub registrar_rn: String,
    pub check_interval: Duration,
    /// The own `<remoteCSE>`'s `poa` when it is not the CSEBase's (the
    /// registrar reaches this node on another broker than registrees do).
    pub poa: Option<Vec<String>>,
}

/// Everything the engine is configured with (built by `config.rs`).
#[derive(Clone, Debug)]
pub struct EngineSettings {
    pub registrar: RegistrarSettings,
    pub registration: Option<UpstreamSettings>,
    pub registree_check_interval: Duration,
    /// How long an answer to this node's own requests may take.
    pub request_timeout: Duration,
    /// Answer changes only once they are committed by a persister.
    pub durable: bool,
    /// The largest payload this node may publish (`mqtt.max_payload`).
    pub max_payload: usize,
    /// Seeds rqis and jitter; any value unique per start.
    pub seed: u64,
}

/// The name of the status resource below the CSEBase.
const STATUS_RN: &str = "m2mnode-status";

/// Liveness probes outstanding at once, at least (more when the population
/// needs it to be probed once per interval even if every probe times out).
const PROBES_IN_FLIGHT: usize = 64;
/// Acks whose durable answer is tracked for forgetting; beyond, the
/// persister's count bound trims them.
const DURABLE_ANSWERS_TRACKED: usize = 65_536;

/// Recent answers kept for duplicate deliveries (also bounded in bytes).
const RECENT_ANSWERS: usize = 1024;

/// A message the driver must acknowledge to the broker (an opaque token it
/// chose), once what the engine says about it has been handed on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ack(pub u64);

/// Something to send.
#[derive(Clone, Debug, PartialEq)]
pub enum Transmit {
    /// A request to the next-hop CSE `to`.
    Request {
        to: CseId,
        format: Format,
        payload: Vec<u8>,
        /// The incoming request this one forwards: acknowledge after sending.
        ack: Option<Ack>,
    },
    /// An answer to the hop that sent the request on `to`.
    Response {
        to: Route,
        payload: Vec<u8>,
        ack: Option<Ack>,
    },
    /// Nothing to send; acknowledge the message.
    Ack(Ack),
}

/// Why a registree's CSR went away.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Removal {
    /// It deleted it (or its registrar did, through this node).
    Deleted,
    /// It failed [`LIVENESS_MISSES`] liveness probes in a row.
    Unresponsive { rsc: Rsc },
}

/// What happened, for logs and status.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    Registered {
        registrar: CseId,
    },
    /// `confirmed`: the registrar confirmed the deletion (2002/4004) or the
    /// CSR was lost there; false: it could not be reached, and the CSR may
    /// still be there (its liveness check will remove it).
    Deregistered {
        registrar: CseId,
        confirmed: bool,
    },
    /// A registration step failed and is retried; `answer`: the registrar's
    /// status and `m2m:dbg`, `None` when it did not answer.
    RegistrationRetry {
        step: Step,
        retry_in: Duration,
        answer: Option<(Rsc, String)>,
    },
    /// The registrar no longer has the own CSR; registering again.
    RegistrationLost {
        registrar: CseId,
        answer: Option<(Rsc, String)>,
    },
    /// The check of the own CSR went unanswered `times` in a row.
    CheckUnanswered {
        registrar: CseId,
        times: u32,
    },
    /// The own CSR's name at the registrar is held by another CSE.
    Squatted {
        rn: String,
        csi: String,
    },
    RegistreeAdded {
        csi: String,
    },
    RegistreeRemoved {
        csi: String,
        why: Removal,
    },
    /// A liveness probe failed; the registree stays for now.
    ProbeMissed {
        csi: String,
        rsc: Rsc,
        misses: u32,
    },
    /// A request was answered (or refused); for the request log.
    Handled {
        op: Operation,
        to: String,
        fr: String,
        rsc: Rsc,
        why: Option<String>,
    },
    /// A batch could not be written; its requests were answered 5000.
    StoreFailed {
        why: String,
    },
    /// A request of this node's own registration would exceed
    /// `mqtt.max_payload` (e.g. the `dcse` of a large subtree).
    OwnRequestTooLarge {
        op: Operation,
        bytes: usize,
        limit: usize,
        dcse: usize,
    },
    /// A payload that could not be answered was dropped.
    Dropped {
        reason: DropReason,
        why: String,
    },
    /// Deregistration is over (or there was none): the driver may exit.
    Stopped,
}

/// Changes for the persister; answer with [`Engine::store_committed`] or
/// [`Engine::store_failed`] and the same `seq`.
#[derive(Clone, Debug, PartialEq)]
pub struct StoreBatch {
    pub seq: u64,
    pub changes: Vec<StoreChange>,
}

pub struct Engine {
    own: CseId,
    registrar: Registrar,
    registration: Option<Registration>,
    /// Held until the broker is there: a request sent before would only
    /// fail and cost a backoff.
    start: Option<Input>,
    upstream: Option<CseId>,
    liveness: Liveness,
    recent: RecentRequests,
    /// Answers written with their change whose request is not acknowledged
    /// yet: once it is, the durable copy goes.
    durable_answers: HashMap<Ack, dedupe::Key>,
    /// Answers kept by the persister from before a restart, for requests
    /// the broker redelivers; each is used once.
    restored: HashMap<dedupe::Key, Response>,
    /// Forwards awaiting their answer, and how many may.
    forwards: usize,
    max_forwards: usize,
    pending: HashMap<String, Pending>,
    deadlines: BTreeSet<(Instant, String)>,
    /// The link toward registrees (and everything not the registrar) and
    /// the one toward the registrar; one and the same with a single broker.
    local_up: bool,
    upstream_up: bool,
    /// The registrar is on a broker of its own ([`Engine::link_connection`]).
    separate_upstream: bool,
    own_poa: Option<Vec<String>>,
    stopping: bool,
    stopped: bool,
    request_timeout: Duration,
    max_payload: usize,
    seed: u64,
    counter: u64,
    durable: bool,
    next_batch: u64,
    batch_in_flight: Option<u64>,
    uncommitted: Vec<Uncommitted>,
    parked: Vec<Parked>,
    dcse_dirty: bool,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    counters: Counters,
}

impl Engine {
    /// An engine over what the persister kept.
    pub fn new(settings: EngineSettings, mut snapshot: Snapshot, now: Now) -> Engine {
        let own = settings.registrar.cse_base.csi.clone();
        let limits = settings.registrar.limits.clone();
        let upstream = settings.registrar.upstream.clone();
        let mut store = Store::new(
            own.as_str(),
            upstream.as_ref().map(CseId::as_str),
            settings.durable,
        );
        let answered = std::mem::take(&mut snapshot.answered);
        store.restore(snapshot);
        let adopt = upstream
            .as_ref()
            .is_some_and(|u| store.by_csi(u.as_str()).is_some());
        let remote_rn = store.own_csr_rn().map(str::to_owned);
        let registration = match (&settings.registration, &upstream) {
            (Some(up), Some(registrar)) => {
                let mut want =
                    OwnCsr::from_cse_base(&settings.registrar.cse_base, store.descendant_ids());
                if let Some(poa) = &up.poa {
                    want.poa = poa.clone();
                }
                let m = Registration::new(
                    RegistreeConfig {
                        own: own.clone(),
                        registrar: registrar.clone(),
                        registrar_rn: up.registrar_rn.clone(),
                        check_interval: up.check_interval,
                        request_timeout: settings.request_timeout,
                        seed: settings.seed,
                    },
                    want,
                );
                Some(m)
            }
            _ => None,
        };
        let mut engine = Engine {
            own,
            registrar: Registrar::with_store(settings.registrar, store),
            start: registration
                .is_some()
                .then_some(Input::Start { adopt, remote_rn }),
            registration,
            upstream,
            liveness: Liveness::new(
                settings.registree_check_interval,
                settings.request_timeout,
                PROBES_IN_FLIGHT,
                settings.seed,
            ),
            recent: RecentRequests::new(RECENT_ANSWERS, limits.answer_cache_bytes),
            durable_answers: HashMap::new(),
            restored: HashMap::new(),
            forwards: 0,
            max_forwards: limits.forwards_in_flight,
            pending: HashMap::new(),
            deadlines: BTreeSet::new(),
            local_up: false,
            upstream_up: false,
            separate_upstream: false,
            own_poa: settings.registration.as_ref().and_then(|u| u.poa.clone()),
            stopping: false,
            stopped: false,
            request_timeout: settings.request_timeout,
            max_payload: settings.max_payload,
            seed: settings.seed,
            counter: 0,
            durable: settings.durable,
            next_batch: 1,
            batch_in_flight: None,
            uncommitted: Vec::new(),
            parked: Vec::new(),
            dcse_dirty: false,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            counters: Counters::default(),
        };
        // Answers of changes made before a crash whose requests were not
        // acknowledged: the broker redelivers those.
        for a in answered {
            if let Ok(rsp) = serde_json::from_str::<Response>(&a.response) {
                engine
                    .restored
                    .insert(dedupe::key(&a.hop, &a.fr, &a.rqi), rsp);
            }
        }
        // Restored registrees are watched like new ones (spread over the
        // first interval); that is not news, so no events.
        let added: Vec<String> = engine
            .registrar
            .store_mut()
            .take_notices()
            .filter_map(|n| match n {
                Notice::RegistreeAdded(csi) => Some(csi),
                _ => None,
            })
            .collect();
        for csi in added {
            engine.liveness.add(&csi, now.mono);
        }
        engine
    }

    // ----- inspection -----

    pub fn own(&self) -> &CseId {
        &self.own
    }

    pub fn registrar(&self) -> &Registrar {
        &self.registrar
    }

    pub fn registration(&self) -> Option<&Registration> {
        self.registration.as_ref()
    }

    /// Registered at the registrar (true for a node that has none).
    pub fn is_registered(&self) -> bool {
        self.registration
            .as_ref()
            .is_none_or(Registration::is_registered)
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped && self.parked.is_empty()
    }

    pub fn registree_count(&self) -> usize {
        self.registrar.store().registree_count()
    }

    /// Requests this node sent and still waits on (own, probes, forwards).
    pub fn pending_requests(&self) -> usize {
        self.pending.len()
    }

    /// Consecutive failed probes of registree `csi`.
    pub fn liveness_misses(&self, csi: &str) -> Option<u32> {
        self.liveness.misses(csi)
    }

    /// What `m2mnode status` shows: a virtual resource `m2mnode-status`
    /// below the CSEBase (not a oneM2M resource type; README "Operating
    /// m2mnode" documents it). Registrees and descendants are also
    /// available the oneM2M way: discovery `fu=1&ty=16`, `rcn=4`/`6`/`8`.
    pub fn status(&self) -> serde_json::Value {
        let store = self.registrar.store();
        let registrar = self.registration.as_ref().map(|m| {
            serde_json::json!({
                "id": self.upstream.as_ref().map(CseId::as_str),
                "registered": m.is_registered(),
                "since": m.registered_since().map(|t| t.to_onem2m()),
                "last_check": m.last_check().map(|t| t.to_onem2m()),
            })
        });
        let registrees: Vec<serde_json::Value> = store
            .registrees()
            .filter_map(|(_, c)| c.csi())
            .map(|csi| {
                serde_json::json!({
                    "csi": csi,
                    "misses": self.liveness.misses(csi).unwrap_or(0),
                    "last_ok": self.liveness.last_ok(csi).map(|t| t.to_onem2m()),
                })
            })
            .collect();
        serde_json::json!({ "m2mnode:status": {
            "cse": self.own.as_str(),
            "connected": self.local_up && self.upstream_up,
            "links": {
                "local": self.local_up,
                "upstream": self.upstream.as_ref().map(|_| self.upstream_up),
            },
            "registrar": registrar,
            "registrees": registrees,
            "descendants": store.descendant_ids(),
            "store": {
                "durable": self.durable,
                "unwritten": self.uncommitted.len(),
            },
        }})
    }

    fn is_status_target(&self, to: &str) -> bool {
        let Ok(crate::id::Target::Local(path)) = crate::id::resolve(to, &self.own, None) else {
            return false;
        };
        match path.split_once('/') {
            Some((base, STATUS_RN)) => base == "-" || base == self.registrar.cse_base().rn,
            _ => false,
        }
    }

    // ----- inputs -----

    /// The broker link came up or went down (a single broker: both links).
    pub fn connection(&mut self, up: bool, now: Now) {
        self.count_connect(None, up);
        self.local_up = up;
        self.upstream_up = up;
        self.link_changed(None, up, now);
    }

    /// One of two broker links came up or went down: liveness of registrees
    /// pauses only while the local one is down, the own registration's
    /// requests fail fast only while the upstream one is.
    pub fn link_connection(&mut self, link: Link, up: bool, now: Now) {
        self.separate_upstream = true;
        self.count_connect(Some(link), up);
        match link {
            Link::Local => self.local_up = up,
            Link::Upstream => self.upstream_up = up,
        }
        self.link_changed(Some(link), up, now);
    }

    /// With the registrar on a broker of its own, a hop is believed only on
    /// the broker where it belongs: this CSE's subtree speaks on the local
    /// one, the registrar on the upstream one (the hop is the identity, and
    /// each broker vouches only for its own clients).
    fn wrong_link(&self, route: &Route) -> Option<String> {
        if !self.separate_upstream {
            return None;
        }
        let hop = crate::engine::registrar::speaker_cse(&route.originator)?;
        let store = self.registrar.store();
        match route.link {
            Link::Upstream if hop == self.own.as_str() || store.descendant(hop).is_some() => Some(
                format!("{hop} is below this CSE and cannot speak on the registrar's broker"),
            ),
            Link::Local if self.upstream.as_ref().is_some_and(|u| u.as_str() == hop) => Some(
                format!("the registrar {hop} speaks on its own broker, not on this one"),
            ),
            _ => None,
        }
    }

    /// The link this node reaches the next hop `to` on.
    pub fn link_to(&self, to: &str) -> Link {
        match &self.upstream {
            Some(u) if u.as_str() == to => Link::Upstream,
            _ => Link::Local,
        }
    }

    fn link_is_up(&self, link: Link) -> bool {
        match link {
            Link::Local => self.local_up,
            Link::Upstream => self.upstream_up,
        }
    }

    /// `link` (`None`: the single one) came up or went down.
    fn link_changed(&mut self, link: Option<Link>, up: bool, now: Now) {
        let local = link != Some(Link::Upstream);
        let upstream = link != Some(Link::Local);
        if !up {
            // Acks of the old connection will never be written now; the
            // broker redelivers those requests and the answers stay.
            self.durable_answers.clear();
        }
        if up && upstream && !self.stopping {
            if let (Some(m), Some(start)) = (&mut self.registration, self.start.take()) {
                m.handle(start, now);
            }
        }
        if !up && local {
            // Silence while the link is down proves nothing about a registree.
            let probes: Vec<(String, String)> = self
                .pending
                .iter()
                .filter_map(|(rqi, p)| match &p.purpose {
                    Purpose::Probe { csi } => Some((rqi.clone(), csi.clone())),
                    _ => None,
                })
                .collect();
            for (rqi, csi) in probes {
                self.take_pending(&rqi);
                self.liveness.result(&csi, ProbeOutcome::NoConnection, now);
            }
        }
        self.flush(now);
    }

    /// Runs every registree's liveness check now (SIGUSR1).
    pub fn check_now(&mut self, now: Now) {
        self.liveness.all_due(now.mono);
        if let Some(m) = &mut self.registration {
            m.check_now(now);
        }
        self.flush(now);
    }

    /// Replaces the allow-list of registrees (config reload).
    pub fn set_allowed(&mut self, allowed: Vec<String>) {
        self.registrar.set_allowed(allowed);
    }

    pub fn set_registree_check_interval(&mut self, interval: Duration) {
        self.liveness.set_interval(interval);
    }

    /// A new check interval of the own registration (config reload).
    pub fn set_registrar_check_interval(&mut self, interval: Duration, now: Now) {
        if let Some(m) = &mut self.registration {
            m.set_check_interval(interval, now);
        }
        self.flush(now);
    }

    /// New limits (config reload); what is held already stays.
    pub fn set_limits(&mut self, limits: Limits) {
        self.max_forwards = limits.forwards_in_flight;
        self.recent.set_max_bytes(limits.answer_cache_bytes);
        self.registrar.set_limits(limits);
    }

    /// Begins deregistration; [`Event::Stopped`] follows when it is over.
    pub fn shutdown(&mut self, now: Now) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        match &mut self.registration {
            Some(m) => m.handle(Input::Shutdown, now),
            None => {
                self.stopped = true;
                self.events.push_back(Event::Stopped);
            }
        }
        self.flush(now);
    }

    /// A publish on a request topic, from the hop `route.originator`.
    pub fn handle_request(&mut self, route: Route, payload: &[u8], ack: Option<Ack>, now: Now) {
        self.on_request(route, payload, ack, now);
        self.flush(now);
    }

    fn on_request(&mut self, route: Route, payload: &[u8], ack: Option<Ack>, now: Now) {
        let format = match route.format {
            Ok(f) => f,
            Err(ref suffix) => {
                let suffix = suffix.clone();
                return self.refuse_media_type(route, &suffix, payload, ack);
            }
        };
        let req = match format.decode_request(payload) {
            Ok(r) => r,
            Err(e) => {
                // TS-0004 7.3.1: a request that cannot be read is answered
                // 4000 where an answer can reach its originator; a payload
                // that is not even a primitive (no rqi, not an object) is
                // noise and dropped.
                let is_object = format.decode_value(payload).is_ok_and(|v| v.is_object());
                if e.rqi.is_none() && !is_object {
                    self.events.push_back(Event::Dropped {
                        reason: DropReason::UndecodableRequest,
                        why: format!(
                            "an undecodable payload with no rqi on {}: {e}",
                            route.response_topic()
                        ),
                    });
                    return self.ack_only(ack);
                }
                let why = e.to_string();
                let mut rsp = Response::error(Rsc::BAD_REQUEST, e.rqi.unwrap_or_default(), why);
                rsp.rvi = e.rvi;
                rsp.to = e.fr;
                rsp.ot = Some(now.wall.to_onem2m());
                self.reply(route, format, &rsp, ack);
                return;
            }
        };
        let fr = req.fr.clone().unwrap_or_default();
        let key = dedupe::key(&route.originator, &fr, &req.rqi);
        if let Some(previous) = self.restored.remove(&key) {
            debug!(rqi = %req.rqi, fr = %fr, "redelivery after a restart; answering as before");
            let size = self.reply(route, format, &previous, ack);
            self.registrar
                .store_mut()
                .forget_answer(&key.0, &key.1, &key.2);
            self.recent.remember(key, previous, size);
            return;
        }
        match self.recent.get(&key) {
            Some(Seen::Answered(previous)) => {
                debug!(rqi = %req.rqi, fr = %fr, "duplicate delivery; answering again");
                let previous = (**previous).clone();
                self.reply(route, format, &previous, ack);
                return;
            }
            Some(Seen::InFlight) => {
                debug!(rqi = %req.rqi, fr = %fr, "duplicate delivery of a request in progress");
                return self.ack_only(ack);
            }
            None => {}
        }
        let outcome = if let Some(why) = self.wrong_link(&route) {
            let rsp = Response::error(Rsc::ORIGINATOR_HAS_NO_PRIVILEGE, "", why);
            Outcome::Respond {
                response: self.registrar.answer(&req, rsp, now.wall),
            }
        } else if req.op == Operation::Retrieve && self.is_status_target(&req.to) {
            let rsp = Response::new(Rsc::OK, "").with_pc(self.status());
            Outcome::Respond {
                response: self.registrar.answer(&req, rsp, now.wall),
            }
        } else {
            self.registrar.handle(&req, &route.originator, now.wall)
        };
        match outcome {
            Outcome::Respond { response, .. } => {
                let handled = Event::Handled {
                    op: req.op,
                    to: req.to.clone(),
                    fr,
                    rsc: response.rsc,
                    why: response.debug_text().map(str::to_owned),
                };
                let undo = self.registrar.store_mut().take_undo();
                if undo.is_empty() {
                    self.events.push_back(handled);
                    let size = self.reply(route, format, &response, ack);
                    // A local RETRIEVE changes nothing: a repeat is answered
                    // anew, and the cache keeps what must not run twice.
                    if req.op != Operation::Retrieve {
                        self.recent.remember(key, response, size);
                    }
                    return;
                }
                self.track_undo(undo, false);
                // The answer goes into the same batch as the change, so a
                // redelivery after a crash is answered as it was.
                if let Ok(json) = serde_json::to_string(&response) {
                    self.registrar
                        .store_mut()
                        .record_answer(crate::persist::Answered {
                            hop: key.0.clone(),
                            fr: key.1.clone(),
                            rqi: key.2.clone(),
                            response: json,
                        });
                }
                self.recent.in_flight(key.clone());
                self.parked.push(Parked {
                    batch: None,
                    reply: route,
                    format,
                    response,
                    key,
                    ack,
                    handled,
                });
            }
            Outcome::Forward { next_hop, request } => {
                self.forward(route, format, request, next_hop, key, ack, now)
            }
        }
    }

    /// A publish on a response topic: an answer from the peer `route.receiver`.
    pub fn handle_response(&mut self, route: &Route, payload: &[u8], now: Now) {
        self.on_response(route, payload, now);
        self.flush(now);
    }

    fn on_response(&mut self, route: &Route, payload: &[u8], now: Now) {
        let Ok(format) = route.format else {
            return;
        };
        let rsp = match format.decode_response(payload) {
            Ok(r) => r,
            Err(e) => {
                self.events.push_back(Event::Dropped {
                    reason: DropReason::UndecodableResponse,
                    why: format!("undecodable response from {}: {e}", route.receiver),
                });
                return;
            }
        };
        // Only the peer the request went to may answer it.
        let known = self
            .pending
            .get(&rsp.rqi)
            .is_some_and(|p| p.peer == route.receiver);
        if !known {
            debug!(rqi = %rsp.rqi, peer = %route.receiver, "response to no pending request (late or duplicate)");
            return;
        }
        if let Some(p) = self.take_pending(&rsp.rqi) {
            self.complete(p, rsp, now);
        }
    }

    /// Time has come: expire what waited too long, fire timers, start probes.
    pub fn handle_timeout(&mut self, now: Now) {
        while let Some((t, rqi)) = self.deadlines.first().cloned() {
            if t > now.mono {
                break;
            }
            if let Some(p) = self.take_pending(&rqi) {
                if matches!(p.purpose, Purpose::Forward(_)) {
                    self.counters.forwards_timed_out += 1;
                }
                let why = format!(
                    "no response from {} within {}",
                    p.peer,
                    humantime::format_duration(self.request_timeout)
                );
                let rsp = Response::error(Rsc::REQUEST_TIMEOUT, &rqi, why);
                self.complete(p, rsp, now);
            }
        }
        if let Some(m) = &mut self.registration {
            m.handle(Input::Timer, now);
        }
        self.flush(now);
    }

    // ----- outputs -----

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Engine::handle_timeout`] is due next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self.deadlines.first().map(|(t, _)| *t);
        let mut consider = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        if let Some(m) = &self.registration {
            consider(m.poll_timeout());
        }
        if self.local_up && !self.stopping {
            consider(self.liveness.poll_timeout());
        }
        t
    }

    // ----- internals -----

    /// A registree failed its probes: its CSR goes, and with it its
    /// descendants. Not waiting on durability: nobody is answered.
    fn remove_registree(&mut self, csi: &str, rsc: Rsc) {
        let store = self.registrar.store_mut();
        let Some(ri) = store.by_csi(csi).map(|(ri, _)| ri.clone()) else {
            return;
        };
        store.remove(&ri);
        self.take_internal_undo();
        self.events.push_back(Event::RegistreeRemoved {
            csi: csi.to_owned(),
            why: Removal::Unresponsive { rsc },
        });
    }

    /// Queues the answer; returns its encoded size (for the answer cache).
    fn reply(&mut self, to: Route, format: Format, rsp: &Response, ack: Option<Ack>) -> usize {
        let too_large = |size: usize| {
            error_instead_of(
                rsp,
                Rsc::INTERNAL_SERVER_ERROR,
                format!("the answer of {size} bytes exceeds mqtt.max_payload; narrow the request (discovery instead of rcn 4/8)"),
            )
        };
        let encoded = format.encode(rsp).and_then(|p| match p.len() {
            n if n > self.max_payload => format.encode(&too_large(n)),
            _ => Ok(p),
        });
        match encoded {
            Ok(payload) => {
                let size = payload.len();
                self.transmits
                    .push_back(Transmit::Response { to, payload, ack });
                size
            }
            Err(e) => {
                self.events.push_back(Event::Dropped {
                    reason: DropReason::UnencodableAnswer,
                    why: format!("cannot encode an answer: {e}"),
                });
                self.ack_only(ack);
                0
            }
        }
    }

    fn ack_only(&mut self, ack: Option<Ack>) {
        if let Some(a) = ack {
            self.transmits.push_back(Transmit::Ack(a));
        }
    }

    /// XML (or anything else) cannot be read here: answer 4015 in XML, the
    /// format the originator listens for, when its rqi can be found
    /// (TS-0004 6.6: 4015 UNSUPPORTED_MEDIA_TYPE).
    fn refuse_media_type(&mut self, route: Route, suffix: &str, payload: &[u8], ack: Option<Ack>) {
        let text = String::from_utf8_lossy(payload);
        let rqi = text
            .split_once("<rqi>")
            .and_then(|(_, rest)| rest.split_once("</rqi>"))
            .map(|(r, _)| r.trim().to_owned());
        match (suffix, rqi) {
            ("xml", Some(rqi)) if !rqi.contains('<') && !rqi.contains('&') => {
                let why = Refusal::UnsupportedMediaType(suffix.to_owned());
                let body = format!(
                    "<m2m:rsp xmlns:m2m=\"http://www.onem2m.org/xml/protocols\"><rsc>{}</rsc><rqi>{rqi}</rqi><pc><m2m:dbg>{why}</m2m:dbg></pc></m2m:rsp>",
                    why.rsc().code()
                );
                self.transmits.push_back(Transmit::Response {
                    to: route,
                    payload: body.into_bytes(),
                    ack,
                });
            }
            _ => {
                self.events.push_back(Event::Dropped {
                    reason: DropReason::UnsupportedSerialization,
                    why: format!("a request in unsupported serialization {suffix:?}"),
                });
                self.ack_only(ack);
            }
        }
    }

    /// After every input: carry out what the registration machine wants,
    /// keep liveness in step with the store, start due probes.
    fn flush(&mut self, now: Now) {
        loop {
            self.apply_notices(now);
            self.feed_dcse(now);
            let Some(action) = self
                .registration
                .as_mut()
                .and_then(Registration::poll_action)
            else {
                break;
            };
            self.carry_out(action, now);
        }
        self.start_probes(now);
    }

    fn apply_notices(&mut self, now: Now) {
        let notices: Vec<Notice> = self.registrar.store_mut().take_notices().collect();
        for n in notices {
            match n {
                Notice::RegistreeAdded(csi) => {
                    self.liveness.add(&csi, now.mono);
                    self.events.push_back(Event::RegistreeAdded { csi });
                }
                Notice::RegistreeRemoved(csi) => {
                    self.liveness.remove(&csi);
                    let already = self
                        .events
                        .iter()
                        .any(|e| matches!(e, Event::RegistreeRemoved { csi: c, .. } if *c == csi));
                    if !already {
                        self.events.push_back(Event::RegistreeRemoved {
                            csi,
                            why: Removal::Deleted,
                        });
                    }
                }
                Notice::DescendantsChanged => self.dcse_dirty = true,
            }
        }
    }

    /// Carries the descendants up as the own CSR's `dcse`: computed only when
    /// the machine can act on it, so a storm of registrations costs one
    /// UPDATE per round trip, not one (and one O(n) list) per registree.
    fn feed_dcse(&mut self, now: Now) {
        if !self.dcse_dirty {
            return;
        }
        let Some(m) = &mut self.registration else {
            self.dcse_dirty = false;
            return;
        };
        if matches!(
            m.phase(),
            Phase::Waiting { .. } | Phase::Deregistering { .. }
        ) {
            return;
        }
        self.dcse_dirty = false;
        let mut want = OwnCsr::from_cse_base(
            self.registrar.cse_base(),
            self.registrar.store().descendant_ids(),
        );
        if let Some(poa) = &self.own_poa {
            want.poa = poa.clone();
        }
        m.handle(Input::OwnCsrChanged(want), now);
    }

    fn carry_out(&mut self, action: Action, now: Now) {
        let Some(registrar) = self.upstream.clone() else {
            return;
        };
        match action {
            Action::Send(req) => {
                if !self.upstream_up {
                    let rsp = Response::error(
                        Rsc::TARGET_NOT_REACHABLE,
                        &req.rqi,
                        "not connected to the MQTT broker",
                    );
                    if let Some(m) = &mut self.registration {
                        m.handle(Input::Response(rsp), now);
                    }
                    return;
                }
                debug!(op = req.op.name(), to = %req.to, rqi = %req.rqi, "registration request");
                match Format::Json.encode(&req) {
                    Ok(payload) if payload.len() > self.max_payload => {
                        // A local limit, not a lost CSR: say what it is and
                        // keep the registration (the machine retries at the
                        // next check, as for an unreachable registrar).
                        self.events.push_back(Event::OwnRequestTooLarge {
                            op: req.op,
                            bytes: payload.len(),
                            limit: self.max_payload,
                            dcse: self.registrar.store().descendant_ids().len(),
                        });
                        let rsp = Response::error(
                            Rsc::TARGET_NOT_REACHABLE,
                            &req.rqi,
                            "request exceeds mqtt.max_payload",
                        );
                        if let Some(m) = &mut self.registration {
                            m.handle(Input::Response(rsp), now);
                        }
                    }
                    Ok(payload) => {
                        self.add_pending(
                            req.rqi.clone(),
                            registrar.as_str(),
                            now,
                            Purpose::Registration,
                        );
                        self.transmits.push_back(Transmit::Request {
                            to: registrar,
                            format: Format::Json,
                            payload,
                            ack: None,
                        });
                    }
                    Err(e) => {
                        let rsp =
                            Response::error(Rsc::INTERNAL_SERVER_ERROR, &req.rqi, e.to_string());
                        if let Some(m) = &mut self.registration {
                            m.handle(Input::Response(rsp), now);
                        }
                    }
                }
            }
            Action::StoreRegistrarCsr(mut csr) => {
                let base_ri = self.registrar.cse_base().ri.clone();
                let store = self.registrar.store_mut();
                let ri = csr
                    .ri
                    .clone()
                    .unwrap_or_else(|| registrar.bare().to_owned());
                let ts = now.wall.to_onem2m();
                let existing = store.get(&ri).cloned();
                csr.ty = Some(ResourceType::REMOTE_CSE);
                csr.pi = Some(base_ri);
                csr.ct = Some(
                    existing
                        .as_ref()
                        .and_then(|c| c.ct.clone())
                        .unwrap_or_else(|| ts.clone()),
                );
                // lt moves only when something else changed, so a routine
                // re-fetch writes nothing.
                let mut same = existing.clone();
                if let Some(s) = &mut same {
                    s.lt = None;
                }
                let mut probe = csr.clone();
                probe.lt = None;
                if same.as_ref() != Some(&probe) {
                    csr.lt = Some(ts);
                    store.insert(ri, csr);
                }
                self.take_internal_undo();
            }
            Action::RemoveRegistrarCsr => {
                let store = self.registrar.store_mut();
                if let Some(ri) = store.by_csi(registrar.as_str()).map(|(ri, _)| ri.clone()) {
                    store.remove(&ri);
                }
                self.take_internal_undo();
            }
            Action::RemoteCsrName(rn) => {
                self.registrar.store_mut().set_own_csr_rn(rn);
                self.take_internal_undo();
            }
            Action::Registered => self.events.push_back(Event::Registered { registrar }),
            Action::Deregistered { confirmed } => self.events.push_back(Event::Deregistered {
                registrar,
                confirmed,
            }),
            Action::Retry {
                step,
                retry_in,
                answer,
            } => self.events.push_back(Event::RegistrationRetry {
                step,
                retry_in,
                answer,
            }),
            Action::Squatted { rn, csi } => self.events.push_back(Event::Squatted { rn, csi }),
            Action::Lost { answer } => self
                .events
                .push_back(Event::RegistrationLost { registrar, answer }),
            Action::CheckUnanswered { times } => self
                .events
                .push_back(Event::CheckUnanswered { registrar, times }),
            Action::Stopped => {
                self.stopped = true;
                self.events.push_back(Event::Stopped);
            }
        }
    }

    fn start_probes(&mut self, now: Now) {
        if !self.local_up || self.stopping {
            return;
        }
        while let Some(csi) = self.liveness.next_due(now.mono) {
            let Some((_, csr)) = self.registrar.store().by_csi(&csi) else {
                self.liveness.result(&csi, ProbeOutcome::NoConnection, now);
                continue;
            };
            let cb = csr.cb.clone().unwrap_or_else(|| csi.clone());
            let Ok(peer) = CseId::new(csi.clone()) else {
                self.liveness.result(&csi, ProbeOutcome::NoConnection, now);
                continue;
            };
            let rqi = self.next_rqi("live");
            let mut req = Request::new(Operation::Retrieve, cb, self.own.as_str(), rqi.clone());
            req.rvi = Some(OWN_RVI.into());
            req.ot = Some(now.wall.to_onem2m());
            req.rqet = Some(now.wall.plus(self.request_timeout).to_onem2m());
            match Format::Json.encode(&req) {
                Ok(payload) => {
                    self.counters.probes_sent += 1;
                    self.add_pending(rqi, &csi, now, Purpose::Probe { csi: csi.clone() });
                    self.transmits.push_back(Transmit::Request {
                        to: peer,
                        format: Format::Json,
                        payload,
                        ack: None,
                    });
                }
                Err(_) => {
                    self.liveness.result(&csi, ProbeOutcome::NoConnection, now);
                }
            }
        }
    }
}

/// An error answer to the same request as `rsp` (its rqi, rvi, to, fr).
fn error_instead_of(rsp: &Response, rsc: Rsc, why: String) -> Response {
    let mut r = Response::error(rsc, &rsp.rqi, why);
    r.rvi.clone_from(&rsp.rvi);
    r.to.clone_from(&rsp.to);
    r.fr.clone_from(&rsp.fr);
    r
}

#[cfg(test)]
mod tests;
