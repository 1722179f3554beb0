//! Counts of what the engine reported since it started, for the status
//! resource (`m2mnode status --json`, object `counts`): an operator or a
//! test reads what happened as numbers instead of scanning the log.

use super::{Event, Removal, STATUS_RN};
use crate::primitive::Operation;
use crate::topic::Link;

#[derive(Debug, Default)]
pub(crate) struct Tally {
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
}

impl Tally {
    pub(crate) fn link(&mut self, link: Option<Link>, up: bool) {
        if !up {
            return;
        }
        if link != Some(Link::Upstream) {
            self.local_connects += 1;
        }
        if link != Some(Link::Local) {
            self.upstream_connects += 1;
        }
    }

    pub(crate) fn registration_request(&mut self, op: Operation) {
        self.registration_requests[usize::from(op.code() - 1)] += 1;
    }

    pub(crate) fn forwarded(&mut self) {
        self.forwarded += 1;
    }

    pub(crate) fn event(&mut self, e: &Event) {
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
            Event::ProbeMissed { .. } => self.probes_missed += 1,
            Event::Handled { op, to, .. } => {
                if !to.ends_with(STATUS_RN) {
                    self.handled[usize::from(op.code() - 1)] += 1;
                }
            }
            Event::StoreFailed { .. } => self.store_failures += 1,
            Event::Dropped { .. } => self.dropped += 1,
            Event::OwnRequestTooLarge { .. } | Event::Stopped => {}
        }
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
            "registration_requests": by_op(self.registration_requests),
            "forwarded": self.forwarded,
            "store_failures": self.store_failures,
            "dropped": self.dropped,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::primitive::Rsc;

    #[test]
    fn counts_what_the_engine_reported() {
        let mut t = Tally::default();
        t.link(None, true);
        t.link(Some(Link::Upstream), true);
        t.link(None, false);
        t.event(&Event::Dropped { why: "x".into() });
        t.event(&Event::Handled {
            op: Operation::Delete,
            to: "/id-in/cse-in".into(),
            fr: "/id-mn".into(),
            rsc: Rsc::DELETED,
            why: None,
        });
        t.event(&Event::RegistrationRetry {
            step: super::super::registration::Step::Create,
            retry_in: std::time::Duration::from_secs(1),
            answer: Some((Rsc::CONFLICT, "taken".into())),
        });
        t.event(&Event::Handled {
            op: Operation::Retrieve,
            to: "/id-in/cse-in/m2mnode-status".into(),
            fr: "Cm2mnode-status".into(),
            rsc: Rsc::OK,
            why: None,
        });
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
        assert_eq!(j["connects"]["upstream"], 2);
        assert_eq!(j["dropped"], 1);
        assert_eq!(j["handled"]["delete"], 1);
        assert_eq!(j["handled"]["create"], 0);
        assert_eq!(j["registration_retries"], 1);
        assert_eq!(j["registration_unanswered"], 0);
        assert_eq!(j["last_refusal"]["step"], "create");
        assert_eq!(j["last_refusal"]["rsc"], 4105);
    }
}
