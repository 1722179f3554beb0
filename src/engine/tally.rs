//! Counts of what the engine reported since it started, for the status
//! resource (`m2mnode status --json`, object `counts`): an operator or a
//! test reads what happened as numbers instead of scanning the log. Also
//! what the sign-of-life line counts since the last one, and a spike of
//! refusals (told in one WARN a minute, each refusal being a debug line).

use super::events::{Event, Removal, Summary};
use super::registration::{Phase, Registration, Step};
use super::status::STATUS_RN;
use super::Engine;
use crate::primitive::Operation;
use crate::time::Now;
use crate::topic::Link;
use std::time::{Duration, Instant};

/// Refusals within a minute above which one WARN line says so.
const REFUSAL_SPIKE: u64 = 100;

/// Totals since the engine started, for monitoring (docs/operations.md
/// "Metrics"); they only grow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Liveness probes sent to registrees.
    pub probes_sent: u64,
    /// Probes the registree answered with success.
    pub probes_answered: u64,
    /// Probes that failed or timed out while connected (each one a miss,
    /// the last of which removes the registree).
    pub probes_missed: u64,
    /// Forwarded requests whose next hop did not answer in time (4008).
    pub forwards_timed_out: u64,
    /// Times the local broker link came up (the first connection included).
    pub local_connects: u64,
    /// Times the registrar's broker link came up, with a broker of its own.
    pub upstream_connects: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Tally {
    probes_sent: u64,
    probes_answered: u64,
    forwards_timed_out: u64,
    /// Times each broker link came up (a single broker: both at once).
    local_connects: u64,
    upstream_connects: u64,
    registered: u64,
    deregistered: u64,
    registration_lost: u64,
    registration_retries: u64,
    /// Retries after a registration request got no answer at all.
    registration_unanswered: u64,
    checks_unanswered: u64,
    squatted: u64,
    registrees_added: u64,
    /// Registrees that deleted their CSR, and those removed after failed
    /// liveness probes.
    registrees_deleted: u64,
    registrees_unresponsive: u64,
    probes_missed: u64,
    /// Requests answered here, by operation (forwards and status requests
    /// are not counted).
    handled: [u64; 5],
    /// Requests of the own registration sent to the registrar, by operation.
    registration_requests: [u64; 5],
    /// Requests forwarded to another CSE.
    forwarded: u64,
    store_failures: u64,
    dropped: u64,
    /// The last answer a registration step got that was not a success:
    /// (step, rsc, dbg).
    last_refusal: Option<(String, u16, String)>,
    /// Requests answered with an error status.
    refused: u64,
    /// Answered and refused since the last [`Tally::take_since`].
    handled_since: u64,
    refused_since: u64,
    minute_start: Option<Instant>,
    refused_minute: u64,
    spike_told: bool,
}

impl Tally {
    /// The local link, and the registrar's link of its own, came up.
    pub(crate) fn connects(&mut self, local: bool, upstream: bool) {
        self.local_connects += u64::from(local);
        self.upstream_connects += u64::from(upstream);
    }

    pub(crate) fn probe_sent(&mut self) {
        self.probes_sent += 1;
    }

    /// A probe ended: answered with success, or missed (failed or timed
    /// out while connected).
    pub(crate) fn probe_ended(&mut self, answered: bool) {
        if answered {
            self.probes_answered += 1;
        } else {
            self.probes_missed += 1;
        }
    }

    pub(crate) fn forward_timed_out(&mut self) {
        self.forwards_timed_out += 1;
    }

    /// The running totals for monitoring.
    pub(crate) fn counters(&self) -> Counters {
        Counters {
            probes_sent: self.probes_sent,
            probes_answered: self.probes_answered,
            probes_missed: self.probes_missed,
            forwards_timed_out: self.forwards_timed_out,
            local_connects: self.local_connects,
            upstream_connects: self.upstream_connects,
        }
    }

    /// (handled, refused) since the last call.
    pub(crate) fn take_since(&mut self) -> (u64, u64) {
        let r = (self.handled_since, self.refused_since);
        self.handled_since = 0;
        self.refused_since = 0;
        r
    }

    /// Counts one refusal at `now`; `Some(n)` when refusals just passed
    /// the spike threshold in the current minute (told once a minute).
    fn refusal(&mut self, now: Instant) -> Option<u64> {
        self.refused += 1;
        self.refused_since += 1;
        match self.minute_start {
            Some(s) if now.duration_since(s) < Duration::from_secs(60) => {}
            _ => {
                self.minute_start = Some(now);
                self.refused_minute = 0;
                self.spike_told = false;
            }
        }
        self.refused_minute += 1;
        if self.refused_minute >= REFUSAL_SPIKE && !self.spike_told {
            self.spike_told = true;
            return Some(self.refused_minute);
        }
        None
    }

    pub(crate) fn registration_request(&mut self, op: Operation) {
        self.registration_requests[usize::from(op.code() - 1)] += 1;
    }

    pub(crate) fn forwarded(&mut self) {
        self.forwarded += 1;
    }

    /// Counts `e`, reported at `now`; `Some(n)`: refusals just spiked.
    pub(crate) fn event(&mut self, e: &Event, now: Instant) -> Option<u64> {
        match e {
            Event::Registered { .. } => self.registered += 1,
            Event::Deregistered { .. } => self.deregistered += 1,
            Event::RegistrationRetry { step, answer, .. } => {
                self.registration_retries += 1;
                match answer {
                    Some((rsc, dbg)) => {
                        let step = format!("{step:?}").to_ascii_lowercase();
                        self.last_refusal = Some((step, rsc.code(), dbg.clone()));
                    }
                    None => self.registration_unanswered += 1,
                }
            }
            Event::RegistrationLost { answer, .. } => {
                self.registration_lost += 1;
                if let Some((rsc, dbg)) = answer {
                    self.last_refusal = Some(("check".into(), rsc.code(), dbg.clone()));
                }
            }
            Event::CheckUnanswered { .. } => self.checks_unanswered += 1,
            Event::Squatted { .. } => self.squatted += 1,
            Event::RegistreeAdded { .. } => self.registrees_added += 1,
            Event::RegistreeRemoved { why, .. } => match why {
                Removal::Deleted => self.registrees_deleted += 1,
                Removal::Unresponsive { .. } => self.registrees_unresponsive += 1,
            },
            // Counted where the probe ends ([`Tally::probe_ended`]).
            Event::ProbeMissed { .. } => {}
            Event::Handled { op, to, rsc, .. } => {
                if !to.ends_with(STATUS_RN) {
                    self.handled[usize::from(op.code() - 1)] += 1;
                }
                self.handled_since += 1;
                if !rsc.is_success() {
                    return self.refusal(now);
                }
            }
            Event::StoreFailed { .. } => self.store_failures += 1,
            Event::Dropped { .. } | Event::Ignored { .. } => self.dropped += 1,
            Event::OwnRequestTooLarge { .. }
            | Event::Stopped
            | Event::AttributesRefused { .. }
            | Event::OwnUpdateRefused { .. }
            | Event::NoLongerAllowed { .. }
            | Event::RegistrarChanged { .. }
            | Event::RefusalsSpiking { .. }
            | Event::DropsSuppressed { .. }
            | Event::DroppedQuietly { .. }
            | Event::Link { .. }
            // The own registration's counts; peer SPs are in `peer_sps`.
            | Event::PeerSp { .. }
            | Event::SpLearned { .. }
            | Event::SpMismatch { .. }
            | Event::Summary(_) => {}
        }
        None
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        let ops = [
            Operation::Create,
            Operation::Retrieve,
            Operation::Update,
            Operation::Delete,
            Operation::Notify,
        ];
        let by_op = |counts: [u64; 5]| {
            ops.iter()
                .zip(counts)
                .map(|(op, n)| (op.name().to_owned(), n.into()))
                .collect::<serde_json::Map<String, serde_json::Value>>()
        };
        serde_json::json!({
            "connects": { "local": self.local_connects, "upstream": self.upstream_connects },
            "registered": self.registered,
            "deregistered": self.deregistered,
            "registration_lost": self.registration_lost,
            "registration_retries": self.registration_retries,
            "registration_unanswered": self.registration_unanswered,
            "checks_unanswered": self.checks_unanswered,
            "squatted": self.squatted,
            "last_refusal": self.last_refusal.as_ref().map(|(step, rsc, dbg)| {
                serde_json::json!({ "step": step, "rsc": rsc, "dbg": dbg })
            }),
            "registrees_added": self.registrees_added,
            "registrees_deleted": self.registrees_deleted,
            "registrees_unresponsive": self.registrees_unresponsive,
            "probes_missed": self.probes_missed,
            "handled": by_op(self.handled),
            "refused": self.refused,
            "registration_requests": by_op(self.registration_requests),
            "forwarded": self.forwarded,
            "store_failures": self.store_failures,
            "dropped": self.dropped,
        })
    }
}

impl Engine {
    /// No probe of a check asked for is due or outstanding, nor the check
    /// of the own CSR.
    pub(super) fn checks_are_over(&self, now: Now) -> bool {
        let own_checking = self.upstream.as_ref().is_some_and(|u| {
            matches!(
                u.machine.phase(),
                Phase::Waiting {
                    step: Step::Check,
                    ..
                }
            )
        });
        !own_checking
            && !self.forwards.has_probes()
            && self
                .liveness
                .poll_timeout()
                .is_none_or(|t| t > now.mono || !self.links.is_up(Link::LOCAL))
    }

    pub(super) fn summary(&mut self, checked_now: bool) -> Event {
        let (handled, refused) = self.tally.take_since();
        let registrees_missing = self
            .registrar
            .store()
            .registrees()
            .filter_map(|(_, c)| c.csi())
            .filter(|csi| self.liveness.misses(csi).unwrap_or(0) > 0)
            .count();
        Event::Summary(Summary {
            checked_now,
            registered: self.registration().map(Registration::is_registered),
            registrees: self.registree_count(),
            registrees_missing,
            handled,
            refused,
        })
    }

    /// Counts every event and throttles drops: what the driver gets to
    /// print is decided here, on the engine's clock.
    pub(super) fn review_events(&mut self, now: Now) {
        while let Some(e) = self.events.pop_front() {
            let spike = self.tally.event(&e, now.mono);
            let e = match e {
                Event::Dropped { reason, why } => {
                    let (show, ended) = self.drops.allow(now.mono);
                    if let Some(count) = ended {
                        self.out_events.push_back(Event::DropsSuppressed { count });
                    }
                    if show {
                        Event::Dropped { reason, why }
                    } else {
                        Event::DroppedQuietly { reason }
                    }
                }
                e => e,
            };
            self.out_events.push_back(e);
            if let Some(count) = spike {
                self.out_events.push_back(Event::RefusalsSpiking { count });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::primitive::Rsc;

    #[test]
    fn counts_what_the_engine_reported() {
        let now = Instant::now();
        let mut t = Tally::default();
        t.connects(true, false);
        t.connects(false, true);
        t.event(
            &Event::Dropped {
                reason: super::super::DropReason::Oversize,
                why: "x".into(),
            },
            now,
        );
        t.event(
            &Event::Handled {
                op: Operation::Delete,
                to: "/id-in/cse-in".into(),
                fr: "/id-mn".into(),
                rsc: Rsc::DELETED,
                why: None,
            },
            now,
        );
        t.event(
            &Event::RegistrationRetry {
                step: super::super::registration::Step::Create,
                retry_in: std::time::Duration::from_secs(1),
                answer: Some((Rsc::CONFLICT, "taken".into())),
            },
            now,
        );
        t.event(
            &Event::Handled {
                op: Operation::Retrieve,
                to: "/id-in/cse-in/m2mnode-status".into(),
                fr: "Cm2mnode-status".into(),
                rsc: Rsc::OK,
                why: None,
            },
            now,
        );
        t.registration_request(Operation::Update);
        t.forwarded();
        let j = t.json();
        assert_eq!(
            j["handled"]["retrieve"], 0,
            "status requests are not counted"
        );
        assert_eq!(j["registration_requests"]["update"], 1);
        assert_eq!(j["forwarded"], 1);
        assert_eq!(j["connects"]["local"], 1);
        assert_eq!(j["connects"]["upstream"], 1);
        assert_eq!(j["dropped"], 1);
        assert_eq!(j["handled"]["delete"], 1);
        assert_eq!(j["handled"]["create"], 0);
        assert_eq!(j["registration_retries"], 1);
        assert_eq!(j["registration_unanswered"], 0);
        assert_eq!(j["last_refusal"]["step"], "create");
        assert_eq!(j["last_refusal"]["rsc"], 4105);
        assert_eq!(t.take_since(), (2, 0));
    }

    #[test]
    fn a_refusal_spike_is_told_once_a_minute() {
        let t0 = Instant::now();
        let mut t = Tally::default();
        let refusal = Event::Handled {
            op: Operation::Update,
            to: "/id-in/cse-in".into(),
            fr: "/id-x".into(),
            rsc: crate::primitive::Rsc::ORIGINATOR_HAS_NO_PRIVILEGE,
            why: None,
        };
        let told: Vec<u64> = (0..250).filter_map(|_| t.event(&refusal, t0)).collect();
        assert_eq!(told, vec![REFUSAL_SPIKE]);
        assert_eq!(
            t.event(&refusal, t0 + Duration::from_secs(61)),
            None,
            "a new minute starts counting anew"
        );
        assert_eq!(t.take_since(), (251, 251));
        assert_eq!(t.take_since(), (0, 0));
        assert_eq!(t.json()["refused"], 251);
    }
}
