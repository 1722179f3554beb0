//! Read-only inspection for monitoring (docs/operations.md "Metrics"):
//! running totals of what the engine did that no [`Event`] reports one by
//! one (a probe per registree per interval would flood the event queue),
//! and the sizes of what it holds. Counting changes no decision.

use super::*;

/// Totals since the engine started; they only grow.
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

/// Why a payload was dropped without an answer ([`Event::Dropped`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// A request that is not a primitive and has no rqi to answer.
    UndecodableRequest,
    /// A response that cannot be read.
    UndecodableResponse,
    /// A request in a serialization this node does not speak, with no rqi
    /// to answer 4015 to.
    UnsupportedSerialization,
    /// An answer that could not be encoded.
    UnencodableAnswer,
}

impl DropReason {
    /// The metric label.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::UndecodableRequest => "undecodable_request",
            DropReason::UndecodableResponse => "undecodable_response",
            DropReason::UnsupportedSerialization => "unsupported_serialization",
            DropReason::UnencodableAnswer => "unencodable_answer",
        }
    }
}

impl Engine {
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Forwarded requests awaiting their answer.
    pub fn forwards_in_flight(&self) -> usize {
        self.forwards
    }

    /// Answers held until their change is durable (group commit).
    pub fn answers_awaiting_durability(&self) -> usize {
        self.parked.len()
    }

    /// CSEs below this one (the own CSR's `dcse`).
    pub fn descendant_count(&self) -> usize {
        self.registrar.store().descendant_count()
    }

    /// Whether `link` is connected and subscribed; with a single broker
    /// both links are that one.
    pub fn link_up(&self, link: Link) -> bool {
        self.link_is_up(link)
    }

    /// Counts a link coming up (before the engine records it).
    pub(super) fn count_connect(&mut self, link: Option<Link>, up: bool) {
        if !up {
            return;
        }
        if link != Some(Link::Upstream) && !self.local_up {
            self.counters.local_connects += 1;
        }
        if link == Some(Link::Upstream) && !self.upstream_up {
            self.counters.upstream_connects += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_reasons_have_distinct_labels() {
        let all = [
            DropReason::UndecodableRequest,
            DropReason::UndecodableResponse,
            DropReason::UnsupportedSerialization,
            DropReason::UnencodableAnswer,
        ];
        let names: std::collections::HashSet<_> = all.iter().map(|r| r.name()).collect();
        assert_eq!(names.len(), all.len());
    }
}
