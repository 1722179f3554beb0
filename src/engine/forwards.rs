//! Requests this node sent and waits on: its own registration's, liveness
//! probes, and forwards, which travel with a hop-local rqi so that two
//! originators' identical rqis never meet at the next hop (docs/protocol.md
//! §4.3). Each ends in its answer or, at its deadline, a 4008.

use super::dedupe;
use crate::primitive::Format;
use crate::topic::Route;
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// A request this node sent and waits on.
pub(crate) struct Pending {
    pub(crate) peer: String,
    deadline: Instant,
    pub(crate) purpose: Purpose,
}

pub(crate) enum Purpose {
    Registration,
    Probe {
        csi: String,
    },
    /// A request relayed for `reply`'s hop; the answer goes back with the
    /// original rqi.
    Forward(Box<Relay>),
}

pub(crate) struct Relay {
    pub(crate) reply: Route,
    pub(crate) format: Format,
    pub(crate) rqi: String,
    pub(crate) key: dedupe::Key,
}

/// Everything outstanding, by the rqi it was sent with, with its deadline.
pub(crate) struct Forwards {
    pending: HashMap<String, Pending>,
    deadlines: BTreeSet<(Instant, String)>,
    /// Forwards among `pending`, and how many may be.
    forwards: usize,
    max_forwards: usize,
    timeout: Duration,
    seed: u64,
    counter: u64,
}

impl Forwards {
    pub(crate) fn new(max_forwards: usize, timeout: Duration, seed: u64) -> Forwards {
        Forwards {
            pending: HashMap::new(),
            deadlines: BTreeSet::new(),
            forwards: 0,
            max_forwards,
            timeout,
            seed,
            counter: 0,
        }
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }

    pub(crate) fn set_max_forwards(&mut self, max: usize) {
        self.max_forwards = max;
    }

    /// A fresh rqi for a request of this node (`kind`: what it is for).
    pub(crate) fn next_rqi(&mut self, kind: &str) -> String {
        self.counter += 1;
        format!("{kind}-{:x}-{}", self.seed & 0xff_ffff, self.counter)
    }

    /// Whether one more forward may start; the refusal says why not.
    pub(crate) fn admit_forward(&self) -> Result<(), String> {
        if self.forwards >= self.max_forwards {
            return Err(format!(
                "{} forwarded requests are awaiting their answer ([limits] forwards_in_flight); try again later",
                self.forwards
            ));
        }
        Ok(())
    }

    pub(crate) fn add(&mut self, rqi: String, peer: &str, now: Instant, purpose: Purpose) {
        let deadline = now + self.timeout;
        if matches!(purpose, Purpose::Forward(_)) {
            self.forwards += 1;
        }
        self.deadlines.insert((deadline, rqi.clone()));
        self.pending.insert(
            rqi,
            Pending {
                peer: peer.to_owned(),
                deadline,
                purpose,
            },
        );
    }

    /// The request `rqi` if it went to `peer`: only the peer a request went
    /// to may answer it.
    pub(crate) fn take_answered(&mut self, rqi: &str, peer: &str) -> Option<Pending> {
        if self.pending.get(rqi).is_some_and(|p| p.peer == peer) {
            self.take(rqi)
        } else {
            None
        }
    }

    pub(crate) fn take(&mut self, rqi: &str) -> Option<Pending> {
        let p = self.pending.remove(rqi)?;
        self.deadlines.remove(&(p.deadline, rqi.to_owned()));
        if matches!(p.purpose, Purpose::Forward(_)) {
            self.forwards -= 1;
        }
        Some(p)
    }

    /// The next request whose deadline has passed at `now`, taken out.
    pub(crate) fn take_expired(&mut self, now: Instant) -> Option<(String, Pending)> {
        let (t, rqi) = self.deadlines.first()?.clone();
        if t > now {
            return None;
        }
        let p = self.take(&rqi)?;
        Some((rqi, p))
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(t, _)| *t)
    }

    pub(crate) fn has_probes(&self) -> bool {
        self.pending
            .values()
            .any(|p| matches!(p.purpose, Purpose::Probe { .. }))
    }

    /// Outstanding liveness probes: (rqi, registree).
    pub(crate) fn probes(&self) -> Vec<(String, String)> {
        self.pending
            .iter()
            .filter_map(|(rqi, p)| match &p.purpose {
                Purpose::Probe { csi } => Some((rqi.clone(), csi.clone())),
                _ => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay() -> Purpose {
        Purpose::Forward(Box::new(Relay {
            reply: crate::topic::parse("/oneM2M/req/id-a/id-in/json").expect("route"),
            format: Format::Json,
            rqi: "r".into(),
            key: dedupe::key("id-a", "/id-a", "r"),
        }))
    }

    #[test]
    fn only_the_addressee_answers() {
        let t0 = Instant::now();
        let mut f = Forwards::new(4, Duration::from_secs(5), 1);
        f.add("q1".into(), "/id-b", t0, Purpose::Registration);
        assert!(f.take_answered("q1", "/id-c").is_none());
        assert!(f.take_answered("q1", "/id-b").is_some());
        assert_eq!(f.len(), 0);
    }

    #[test]
    fn forwards_are_bounded_and_expire_in_order() {
        let t0 = Instant::now();
        let mut f = Forwards::new(2, Duration::from_secs(5), 1);
        f.add("a".into(), "/id-b", t0, relay());
        f.add("b".into(), "/id-b", t0 + Duration::from_secs(1), relay());
        assert!(f.admit_forward().is_err());
        assert!(f.take_expired(t0 + Duration::from_secs(4)).is_none());
        let (rqi, _) = f
            .take_expired(t0 + Duration::from_secs(5))
            .expect("first expires");
        assert_eq!(rqi, "a");
        assert!(f.admit_forward().is_ok());
        assert_eq!(f.next_deadline(), Some(t0 + Duration::from_secs(6)));
    }
}
