//! The sans-IO engine: every protocol decision of the node, as a pure
//! function of inputs and time (docs/protocol.md §10).
//!
//! It owns the registrar (hosting side: CSR C/R/U/D, routing), the own
//! registration machine, the registree liveness schedule, duplicate-delivery
//! tracking, pending forwards and the requests this node is waiting on, and
//! the in-memory store with its indexes.
//!
//!
//! Its parts are owned and unit-tested on their own: `forwards` (what this
//! node waits on), `durability` (group commit), `links` (per broker
//! connection), `liveness`, `registration` (the own registration machine,
//! glued in `upstream`), `registrar` (the hosting side), `store`,
//! `dedupe`, `tally` and `events`. `ingress`, `outbound` and `status` are
//! the engine's way in, way out and status view. The driver contract is
//! the documentation of [`Engine`].

mod dedupe;
mod durability;
mod events;
mod forwards;
mod ingress;
mod intersp;
mod io;
mod links;
mod liveness;
mod outbound;
mod peer;
mod registrar;
mod registration;
mod sp_identity;
mod status;
pub mod store;
mod tally;
mod upstream;

pub use crate::topic::Link;
pub use events::{DropReason, Dropped, Event, LinkReport, Removal, Severity, Summary};
pub use intersp::{HopIds, PeerSettings, TopicIds};
pub use liveness::MISSES as LIVENESS_MISSES;
pub use registrar::{
    Limits, Outcome, Registrar, RegistrarSettings, FORWARD_BYTES, STATUS_ORIGINATOR,
};
pub use registration::{Action, Input, OwnCsr, Phase, Registration, RegistreeConfig, Step};

use crate::id::CseId;
use crate::primitive::Rsc;
use crate::time::Now;
use crate::topic::Route;
use dedupe::RecentRequests;
pub use durability::Ack;
use durability::Durability;
use events::Throttle;
use forwards::Forwards;
pub(crate) use ingress::Asked;
pub use io::{EngineSettings, InvalidStore, StoreBatch, Transmit, UpstreamSettings};
use links::Links;
use liveness::{Liveness, ProbeOutcome};
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use store::{Notice, Snapshot, Store, Undo};
pub use tally::Counters;
use tally::Tally;
use upstream::Upstream;

/// Liveness probes outstanding at once, at least (more when the population
/// needs it to be probed once per interval even if every probe times out).
const PROBES_IN_FLIGHT: usize = 64;
/// Recent answers kept for duplicate deliveries (also bounded in bytes).
const RECENT_ANSWERS: usize = 1024;
/// How often the sign-of-life line comes (docs/operations.md, "Logs").
const SUMMARY_EVERY: Duration = Duration::from_secs(3600);
/// Dropped payloads told one line each per minute; the rest are counted.
const DROPS_SHOWN_PER_MINUTE: u32 = 10;

/// The engine: the node's every protocol decision, composed of owned parts,
/// as a pure function of inputs and time. It does no I/O and reads no clock.
///
/// # Driver contract
///
/// Modelled on quinn-proto's `Connection`:
///
/// 1. Feed inputs as they happen: [`Engine::handle_request`] for a publish
///    on a request topic, [`Engine::handle_response`] for one on a response
///    topic, [`Engine::connection`] when the broker link comes or goes
///    ([`Engine::link_connection`] for each of two links, when the
///    registrar is on a broker of its own: [`Link`]),
///    [`Engine::store_committed`] / [`Engine::store_failed`] when a batch
///    from [`Engine::poll_store`] has been written (or not), and
///    [`Engine::handle_timeout`] when the instant from
///    [`Engine::poll_timeout`] has come.
/// 2. After **every** input, drain the outputs: [`Engine::poll_store`]
///    (hand the batch to the persister; at most one is outstanding),
///    [`Engine::poll_transmit`] (publish; a transmit's [`Ack`] is released
///    only after its payload was handed to the client, so the broker
///    redelivers what a crash cut short), [`Engine::poll_event`] (log,
///    status), then re-read [`Engine::poll_timeout`] and sleep until then.
/// 3. `now` is a [`Now`]: a monotonic instant for every timer and the wall
///    time for what goes on the wire (`ot`, `rqet`, `ct`, `lt`). It must
///    never go backwards (the monotonic part); the wall part may jump.
///
/// Transmits are addressed to a next-hop CSE on a [`Link`] (a request) or to
/// the hop a request came from (an answer, which goes back on the
/// [`Route::link`] its request came in on), never to a topic: the driver
/// keeps one broker connection per link and builds the topic.
///
/// Nothing acknowledged is lost: a CREATE/UPDATE/DELETE of a durable node is
/// answered only once its batch is committed (group commit); a batch that
/// fails is undone in memory and every request in it is answered 5000.
pub struct Engine {
    own: CseId,
    /// The hosting side: CSEBase, `<remoteCSE>` C/R/U/D, routing, the store.
    registrar: Registrar,
    /// The own registration, when this node has a registrar.
    upstream: Option<Upstream>,
    /// The registration that takes over once the current one has
    /// deregistered (a reload changed the registrar).
    switch: Option<Option<Upstream>>,
    seed: u64,
    liveness: Liveness,
    recent: RecentRequests,
    forwards: Forwards,
    durability: Durability,
    links: Links,
    stopping: bool,
    stopped: bool,
    max_payload: usize,
    transmits: VecDeque<Transmit>,
    /// Events of the current input, before [`Engine::review_events`]
    /// counts and throttles them into `out_events`.
    events: VecDeque<Event>,
    out_events: VecDeque<Event>,
    tally: Tally,
    drops: Throttle,
    next_summary: Instant,
    /// A check was asked for (SIGUSR1): its result is told when it is over.
    check_report: bool,
    /// The own SP-ID (`cse.sp_id`), without slashes.
    sp_id: Option<String>,
    /// The registrations at other SPs' IN-CSEs (intersp.rs).
    peers: Vec<intersp::Peer>,
    /// The SP identity learned from the registrar (sp_identity.rs).
    sp_learned: Option<(String, Option<String>)>,
    sp_mismatch_told: bool,
    /// rqis of the UPDATEs that hand the SP identity down.
    sp_pushes: std::collections::HashSet<String>,
}

impl Engine {
    /// An engine with nothing stored yet.
    pub fn new(settings: EngineSettings, now: Now) -> Engine {
        Engine::build(settings, Snapshot::default(), now)
    }

    /// An engine over what the persister kept, once it has been checked:
    /// a store that breaks the engine's invariants (a CSR of this CSE
    /// itself, two CSRs of one CSE-ID or name, an invalid name) is refused
    /// with what is wrong, never half used.
    pub fn restore(
        settings: EngineSettings,
        snapshot: Snapshot,
        now: Now,
    ) -> Result<Engine, InvalidStore> {
        store::validate_snapshot(
            &snapshot,
            settings.registrar.cse_base.csi.as_str(),
            settings.registrar.limits.name_length,
        )
        .map_err(InvalidStore)?;
        Ok(Engine::build(settings, snapshot, now))
    }

    fn build(settings: EngineSettings, mut snapshot: Snapshot, now: Now) -> Engine {
        let own = settings.registrar.cse_base.csi.clone();
        let limits = settings.registrar.limits.clone();
        let registrar_id = settings.registrar.upstream.clone();
        let mut store = Store::new(
            own.as_str(),
            registrar_id.as_ref().map(CseId::as_str),
            settings.durable,
        );
        let answered = std::mem::take(&mut snapshot.answered);
        store.set_peers(settings.peers.iter().map(PeerSettings::absolute).collect());
        store.restore(snapshot);
        let sp_id = settings.registrar.sp_id.clone();
        let peers = match &sp_id {
            Some(sp) => Engine::peer_machines(
                &settings.peers,
                &settings.registrar.cse_base,
                &store,
                settings.request_timeout,
                settings.seed,
                sp,
            ),
            None => Vec::new(),
        };
        let upstream = match (&settings.registration, registrar_id) {
            (Some(up), Some(registrar)) => {
                let adopt = store.by_csi(registrar.as_str()).is_some();
                let remote_rn = store.own_csr_rn().map(str::to_owned);
                let memo = store.registrar_memo(registrar.as_str());
                Some(Upstream::new(
                    up,
                    registrar,
                    &settings.registrar.cse_base,
                    store.descendant_ids(),
                    settings.request_timeout,
                    settings.seed,
                    adopt,
                    remote_rn,
                    &memo,
                ))
            }
            _ => None,
        };
        let links = Links::new(
            settings
                .registration
                .as_ref()
                .map_or(Link::LOCAL, |u| u.link),
        );
        let mut registrar = Registrar::with_store(settings.registrar, store);
        registrar.set_answer_budget(settings.max_payload);
        let mut engine = Engine {
            own,
            registrar,
            upstream,
            switch: None,
            seed: settings.seed,
            liveness: Liveness::new(
                settings.registree_check_interval,
                settings.request_timeout,
                PROBES_IN_FLIGHT,
                settings.seed,
            ),
            recent: RecentRequests::new(RECENT_ANSWERS, limits.answer_cache_bytes),
            forwards: Forwards::new(
                limits.forwards_in_flight,
                limits.forwards_per_hop,
                settings.request_timeout,
                settings.seed,
            ),
            // Answers of changes made before a crash whose requests were
            // not acknowledged: the broker redelivers those.
            durability: Durability::new(settings.durable, answered),
            links,
            stopping: false,
            stopped: false,
            max_payload: settings.max_payload,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            out_events: VecDeque::new(),
            tally: Tally::default(),
            drops: Throttle::new(Duration::from_secs(60), DROPS_SHOWN_PER_MINUTE),
            next_summary: now.mono + SUMMARY_EVERY,
            check_report: false,
            sp_id,
            peers,
            sp_learned: None,
            sp_mismatch_told: false,
            sp_pushes: std::collections::HashSet::new(),
        };
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
        self.upstream.as_ref().map(|u| &u.machine)
    }

    /// Registered at the registrar (true for a node that has none).
    pub fn is_registered(&self) -> bool {
        self.registration().is_none_or(Registration::is_registered)
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped && self.durability.is_idle()
    }

    pub fn registree_count(&self) -> usize {
        self.registrar.store().registree_count()
    }

    /// Requests this node sent and still waits on (own, probes, forwards).
    pub fn pending_requests(&self) -> usize {
        self.forwards.len()
    }

    /// Consecutive failed probes of registree `csi`.
    pub fn liveness_misses(&self, csi: &str) -> Option<u32> {
        self.liveness.misses(csi)
    }

    /// What `m2mnode status` shows (status.rs), its first page.
    pub fn status(&self) -> serde_json::Value {
        let page = registrar::Page::of(
            &crate::primitive::Request::new(crate::primitive::Operation::Retrieve, "", "", ""),
            self.registrar.answer_budget(),
        )
        .or_lim(status::STATUS_PAGE);
        status::status(self, page).0
    }

    /// Running totals for monitoring (docs/operations.md "Metrics").
    pub fn counters(&self) -> Counters {
        self.tally.counters()
    }

    /// Forwarded requests awaiting their answer.
    pub fn forwards_in_flight(&self) -> usize {
        self.forwards.forwards_in_flight()
    }

    /// Answers held until their change is durable (group commit).
    pub fn answers_awaiting_durability(&self) -> usize {
        self.durability.parked()
    }

    /// CSEs below this one (the own CSR's `dcse`).
    pub fn descendant_count(&self) -> usize {
        self.registrar.store().descendant_count()
    }

    /// Whether `link` is connected and subscribed.
    pub fn link_up(&self, link: Link) -> bool {
        self.links.is_up(link)
    }

    /// The link this node reaches the next hop `to` on.
    pub fn link_to(&self, to: &str) -> Link {
        self.links
            .to(to, self.upstream.as_ref().map(|u| &u.registrar))
    }

    // ----- inputs -----

    /// The broker link came up or went down (a single broker: every link).
    pub fn connection(&mut self, up: bool, now: Now) {
        self.count_connects(None, up);
        self.links.set(None, up);
        self.link_changed(None, up, now);
    }

    /// One broker link came up or went down: liveness of registrees pauses
    /// only while the local one is down, the own registration's requests
    /// fail fast only while the registrar's is.
    pub fn link_connection(&mut self, link: Link, up: bool, now: Now) {
        self.count_connects(Some(link), up);
        self.links.set(Some(link), up);
        self.link_changed(Some(link), up, now);
    }

    /// Counts `link` (`None`: every one) coming up, before it is recorded:
    /// a repeated "up" is no new connection.
    fn count_connects(&mut self, link: Option<Link>, up: bool) {
        if !up {
            return;
        }
        let reg = self.links.registrar();
        let local = link.is_none_or(|l| l == Link::LOCAL) && !self.links.is_up(Link::LOCAL);
        let upstream = self.links.registrar_is_separate()
            && link.is_none_or(|l| l == reg)
            && !self.links.is_up(reg);
        self.tally.connects(local, upstream);
    }

    /// `link` (`None`: every one) came up or went down.
    fn link_changed(&mut self, link: Option<Link>, up: bool, now: Now) {
        let local = link.is_none_or(|l| l == Link::LOCAL);
        let upstream = link.is_none_or(|l| l == self.links.registrar());
        if !up {
            self.durability.connection_lost();
        }
        self.peers_link_changed(link, up, now);
        if up && upstream && !self.stopping {
            if let Some(u) = &mut self.upstream {
                if let Some(start) = u.start.take() {
                    u.machine.handle(start, now);
                }
            }
        }
        if !up && local {
            // Silence while the link is down proves nothing about a registree.
            for (rqi, csi) in self.forwards.probes() {
                self.forwards.take(&rqi);
                self.liveness.result(&csi, ProbeOutcome::NoConnection, now);
            }
        }
        self.flush(now);
    }

    /// With the registrar on a broker of its own, a hop is believed only on
    /// the broker where it belongs: this CSE's subtree speaks on the local
    /// one, the registrar on its own (the hop is the identity, and each
    /// broker vouches only for its own clients).
    fn wrong_link(&self, route: &Route) -> Option<String> {
        if !self.links.registrar_is_separate() {
            return None;
        }
        let hop = crate::id::speaker_cse(&route.originator)?;
        let store = self.registrar.store();
        let is_registrar = self
            .upstream
            .as_ref()
            .is_some_and(|u| u.registrar.as_str() == hop);
        if route.link == self.links.registrar()
            && (hop == self.own.as_str() || store.descendant(hop).is_some())
        {
            Some(format!(
                "{hop} is below this CSE and cannot speak on the registrar's broker"
            ))
        } else if route.link == Link::LOCAL && is_registrar {
            Some(format!(
                "the registrar {hop} speaks on its own broker, not on this one"
            ))
        } else {
            None
        }
    }

    /// Runs every registree's liveness check now (SIGUSR1); a
    /// [`Event::Summary`] tells the result when the checks are over.
    pub fn check_now(&mut self, now: Now) {
        self.check_report = true;
        self.liveness.all_due(now.mono);
        if let Some(u) = &mut self.upstream {
            u.machine.check_now(now);
        }
        for p in &mut self.peers {
            p.up.machine.check_now(now);
        }
        self.flush(now);
    }

    /// Replaces the allow-list of registrees (config reload); returns the
    /// registrees it no longer matches (also as [`Event::NoLongerAllowed`]),
    /// which stay registered until they go: the reload line names them.
    pub fn set_allowed(&mut self, allowed: Vec<String>, now: Now) -> Vec<String> {
        self.registrar.set_allowed(allowed);
        let csis = self.registrar.not_allowed();
        if !csis.is_empty() {
            self.events
                .push_back(Event::NoLongerAllowed { csis: csis.clone() });
        }
        self.flush(now);
        csis
    }

    pub fn set_registree_check_interval(&mut self, interval: Duration) {
        self.liveness.set_interval(interval);
    }

    /// A new check interval of the own registration (config reload).
    pub fn set_registrar_check_interval(&mut self, interval: Duration, now: Now) {
        if let Some(u) = &mut self.upstream {
            u.machine.set_check_interval(interval, now);
        }
        self.flush(now);
    }

    /// New limits (config reload); what is held already stays.
    pub fn set_limits(&mut self, limits: Limits) {
        self.forwards
            .set_max_forwards(limits.forwards_in_flight, limits.forwards_per_hop);
        self.recent.set_max_bytes(limits.answer_cache_bytes);
        self.registrar.set_limits(limits);
    }

    /// Begins deregistration; [`Event::Stopped`] follows when it is over.
    pub fn shutdown(&mut self, now: Now) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        let peers_running = self.peers_shutdown(now);
        match &mut self.upstream {
            Some(u) => u.machine.handle(Input::Shutdown, now),
            None if peers_running => {}
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

    /// A publish on a response topic: an answer from the peer `route.receiver`.
    pub fn handle_response(&mut self, route: &Route, payload: &[u8], now: Now) {
        self.on_response(route, payload, now);
        self.flush(now);
    }

    /// A broker connection's report (`None`: the single one): counted per
    /// link and told as news or not ([`Event::Link`]).
    pub fn handle_link_report(&mut self, link: Option<Link>, report: LinkReport, now: Now) {
        let link = link.unwrap_or(Link::LOCAL);
        let (attempts, told) = self.links.report(link, &report, now.mono);
        self.events.push_back(Event::Link {
            link,
            report,
            attempts,
            told,
        });
        self.flush(now);
    }

    /// The transport dropped a publish on `topic` before it became a
    /// message (it was acknowledged): counted, and told unless it is noise.
    pub fn handle_dropped(&mut self, topic: &str, why: Dropped, now: Now) {
        let event = match why {
            Dropped::NotOneM2M => Event::Ignored {
                topic: topic.to_owned(),
            },
            oversize => Event::Dropped {
                reason: DropReason::Oversize,
                why: format!("{oversize} on {topic}"),
            },
        };
        self.events.push_back(event);
        self.flush(now);
    }

    /// Time has come: expire what waited too long, fire timers, start probes.
    pub fn handle_timeout(&mut self, now: Now) {
        while let Some((rqi, p)) = self.forwards.take_expired(now.mono) {
            if matches!(p.purpose, forwards::Purpose::Forward(_)) {
                self.tally.forward_timed_out();
            }
            let why = format!(
                "no response from {} within {}",
                p.peer,
                humantime::format_duration(self.forwards.timeout())
            );
            self.unanswered(rqi, p, Rsc::REQUEST_TIMEOUT, why, now);
        }
        if let Some(u) = &mut self.upstream {
            u.machine.handle(Input::Timer, now);
        }
        for p in &mut self.peers {
            p.up.machine.handle(Input::Timer, now);
        }
        if now.mono >= self.next_summary {
            self.next_summary = now.mono + SUMMARY_EVERY;
            let summary = self.summary(false);
            self.events.push_back(summary);
        }
        self.flush(now);
    }

    /// The broker has the PUBACK of the request handed over with `ack`: it
    /// will not come again, and the durable copy of its answer can go.
    pub fn acked(&mut self, ack: Ack) {
        if let Some((hop, fr, rqi)) = self.durability.acked(ack) {
            self.registrar.store_mut().forget_answer(&hop, &fr, &rqi);
        }
    }

    /// The batch `seq` is durable: its answers go out.
    pub fn store_committed(&mut self, seq: u64, now: Now) {
        for p in self.durability.committed(seq) {
            self.events.push_back(p.handled);
            let size = self.reply(p.reply, p.format, &p.response, p.ack);
            self.recent.remember(p.key, p.response, size);
        }
        self.flush(now);
    }

    /// The batch `seq` could not be written. Everything not yet durable is
    /// undone in memory (later changes were made on top of it) and every
    /// request waiting on it is answered 5000 with the reason.
    pub fn store_failed(&mut self, seq: u64, why: &str, now: Now) {
        self.events.push_back(Event::StoreFailed {
            why: why.to_owned(),
        });
        let parked = self.durability.failed(seq, self.registrar.store_mut());
        for p in parked {
            let rsp = self.error_instead_of(
                &p.response,
                Rsc::INTERNAL_SERVER_ERROR,
                format!("the change could not be stored: {why}"),
            );
            self.recent.forget(&p.key);
            if let Event::Handled { op, to, fr, .. } = p.handled {
                self.events.push_back(Event::Handled {
                    op,
                    to,
                    fr,
                    rsc: rsp.rsc,
                    why: rsp.debug_text().map(str::to_owned),
                });
            }
            self.reply(p.reply, p.format, &rsp, p.ack);
        }
        self.flush(now);
    }

    // ----- outputs -----

    /// The next batch of changes to make durable, when none is outstanding.
    pub fn poll_store(&mut self) -> Option<StoreBatch> {
        let seq = self
            .durability
            .next_batch(self.registrar.store().has_changes())?;
        Some(StoreBatch {
            seq,
            changes: self.registrar.store_mut().take_changes(),
        })
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.out_events.pop_front()
    }

    /// When [`Engine::handle_timeout`] is due next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let own = self
            .upstream
            .as_ref()
            .and_then(|u| u.machine.poll_timeout())
            .into_iter()
            .chain(
                self.peers
                    .iter()
                    .filter_map(|p| p.up.machine.poll_timeout()),
            )
            .min();
        let probes = (self.links.is_up(Link::LOCAL) && !self.stopping)
            .then(|| self.liveness.poll_timeout())
            .flatten();
        [
            self.forwards.next_deadline(),
            own,
            probes,
            Some(self.next_summary),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // ----- internals -----

    /// After every input: carry out what the registration machine wants,
    /// keep liveness in step with the store, start due probes.
    fn flush(&mut self, now: Now) {
        loop {
            self.apply_notices(now);
            self.feed_dcse(now);
            let Some(action) = self.upstream.as_mut().and_then(|u| u.machine.poll_action()) else {
                if self.flush_peers(now) {
                    continue;
                }
                break;
            };
            self.carry_out(action, now);
        }
        self.start_probes(now);
        if self.check_report && self.checks_are_over(now) {
            self.check_report = false;
            let summary = self.summary(true);
            self.events.push_back(summary);
        }
        self.review_events(now);
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
                Notice::DescendantsChanged => {
                    if let Some(u) = &mut self.upstream {
                        u.dcse_dirty = true;
                    }
                }
            }
        }
    }

    /// Tracks the store's changes since the last call as the engine's own.
    fn take_internal_undo(&mut self) {
        let undo: Vec<Undo> = self.registrar.store_mut().take_undo();
        self.durability.track(undo, true);
    }
}

#[cfg(test)]
mod tests;
