//! Requests this node sent and waits on: its own registration's, liveness
//! probes, and forwards, which travel with a hop-local rqi so that two
//! originators' identical rqis never meet at the next hop (docs/protocol.md
//! §4.3). Each ends in its answer or, at its deadline, a 4008.
//!
//! Forwards in flight are shared (docs/protocol.md §4.3, "Fair
//! forwarding"): besides the global bound (`[limits] forwards_in_flight`)
//! each next hop and each originating hop may hold at most
//! `[limits] forwards_per_hop`, so one silent registree, or one originator
//! flooding, takes its share and not the whole pool. The own registrar is
//! not held to a share: everything outside this CSE's subtree comes and
//! goes through it, and the other end of each forward still is.

use super::dedupe;
use crate::primitive::Format;
use crate::topic::Route;
use std::collections::{hash_map::Entry, BTreeSet, HashMap};
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
    /// The original request's rvi and originator: an answer this node
    /// makes up for it (4008) carries them like any other.
    pub(crate) rvi: Option<String>,
    pub(crate) fr: Option<String>,
}

/// Everything outstanding, by the rqi it was sent with, with its deadline.
pub(crate) struct Forwards {
    pending: HashMap<String, Pending>,
    deadlines: BTreeSet<(Instant, String)>,
    /// Forwards among `pending`, and how many may be.
    forwards: usize,
    max_forwards: usize,
    /// Forwards in flight by next hop and by originating hop, and the
    /// share each may hold.
    by_next_hop: HashMap<String, usize>,
    by_origin: HashMap<String, usize>,
    per_hop: usize,
    timeout: Duration,
    seed: u64,
    counter: u64,
}

impl Forwards {
    pub(crate) fn new(
        max_forwards: usize,
        per_hop: usize,
        timeout: Duration,
        seed: u64,
    ) -> Forwards {
        Forwards {
            pending: HashMap::new(),
            deadlines: BTreeSet::new(),
            forwards: 0,
            max_forwards,
            by_next_hop: HashMap::new(),
            by_origin: HashMap::new(),
            per_hop,
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

    pub(crate) fn set_max_forwards(&mut self, max: usize, per_hop: usize) {
        self.max_forwards = max;
        self.per_hop = per_hop;
    }

    /// Forwards in flight.
    pub(crate) fn forwards_in_flight(&self) -> usize {
        self.forwards
    }

    /// Forwards in flight to the next hop `hop`.
    pub(crate) fn to_next_hop(&self, hop: &str) -> usize {
        self.by_next_hop.get(hop).copied().unwrap_or(0)
    }

    /// A fresh rqi for a request of this node (`kind`: what it is for).
    pub(crate) fn next_rqi(&mut self, kind: &str) -> String {
        self.counter += 1;
        format!("{kind}-{:x}-{}", self.seed & 0xff_ffff, self.counter)
    }

    /// Whether one more forward from the hop `origin` to the next hop
    /// `next_hop` may start (`registrar`: this CSE's registrar, which holds
    /// no share); the refusal names whose share is full.
    pub(crate) fn admit_forward(
        &self,
        origin: &str,
        next_hop: &str,
        registrar: Option<&str>,
    ) -> Result<(), String> {
        let shared = |hop: &str| registrar != Some(hop);
        let to_next = self.to_next_hop(next_hop);
        if shared(next_hop) && to_next >= self.per_hop {
            return Err(format!(
                "{to_next} forwarded requests to {next_hop} are awaiting its answer, its share ([limits] forwards_per_hop); try again later"
            ));
        }
        let from_origin = self.by_origin.get(origin).copied().unwrap_or(0);
        if shared(origin) && from_origin >= self.per_hop {
            return Err(format!(
                "{from_origin} forwarded requests from {origin} are awaiting their answer, its share ([limits] forwards_per_hop); try again later"
            ));
        }
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
        if let Purpose::Forward(relay) = &purpose {
            self.forwards += 1;
            *self.by_next_hop.entry(peer.to_owned()).or_default() += 1;
            *self
                .by_origin
                .entry(relay.reply.originator.clone())
                .or_default() += 1;
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
        if let Purpose::Forward(relay) = &p.purpose {
            self.forwards -= 1;
            release(&mut self.by_next_hop, &p.peer);
            release(&mut self.by_origin, &relay.reply.originator);
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

/// One forward of `hop` fewer; a hop with none leaves the table.
fn release(counts: &mut HashMap<String, usize>, hop: &str) {
    if let Entry::Occupied(mut e) = counts.entry(hop.to_owned()) {
        *e.get_mut() -= 1;
        if *e.get() == 0 {
            e.remove();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay() -> Purpose {
        relay_from("id-a")
    }

    fn relay_from(hop: &str) -> Purpose {
        Purpose::Forward(Box::new(Relay {
            reply: crate::topic::parse(&format!("/oneM2M/req/{hop}/id-in/json")).expect("route"),
            format: Format::Json,
            rqi: "r".into(),
            key: dedupe::key(hop, "/id-a", "r"),
            rvi: None,
            fr: None,
        }))
    }

    #[test]
    fn only_the_addressee_answers() {
        let t0 = Instant::now();
        let mut f = Forwards::new(4, 4, Duration::from_secs(5), 1);
        f.add("q1".into(), "/id-b", t0, Purpose::Registration);
        assert!(f.take_answered("q1", "/id-c").is_none());
        assert!(f.take_answered("q1", "/id-b").is_some());
        assert_eq!(f.len(), 0);
    }

    #[test]
    fn forwards_are_bounded_and_expire_in_order() {
        let t0 = Instant::now();
        let mut f = Forwards::new(2, 2, Duration::from_secs(5), 1);
        f.add("a".into(), "/id-b", t0, relay());
        f.add("b".into(), "/id-b", t0 + Duration::from_secs(1), relay());
        assert!(f.admit_forward("/id-a", "/id-c", None).is_err());
        assert!(f.take_expired(t0 + Duration::from_secs(4)).is_none());
        let (rqi, _) = f
            .take_expired(t0 + Duration::from_secs(5))
            .expect("first expires");
        assert_eq!(rqi, "a");
        assert!(f.admit_forward("/id-a", "/id-b", None).is_ok());
        assert_eq!(f.next_deadline(), Some(t0 + Duration::from_secs(6)));
    }

    #[test]
    fn a_next_hop_or_an_originator_holds_only_its_share() {
        let t0 = Instant::now();
        let mut f = Forwards::new(10, 3, Duration::from_secs(5), 1);
        for i in 0..3 {
            f.add(
                format!("s{i}"),
                "/id-silent",
                t0,
                relay_from(&format!("id-o{i}")),
            );
        }
        let full = f
            .admit_forward("/id-o9", "/id-silent", None)
            .expect_err("share");
        assert!(
            full.contains("/id-silent") && full.contains("forwards_per_hop"),
            "{full}"
        );
        assert!(f.admit_forward("/id-o9", "/id-honest", None).is_ok());
        assert!(
            f.admit_forward("/id-o9", "/id-silent", Some("/id-silent"))
                .is_ok(),
            "the registrar holds no share"
        );
        for i in 0..3 {
            f.add(
                format!("f{i}"),
                &format!("/id-h{i}"),
                t0,
                relay_from("id-flood"),
            );
        }
        let full = f
            .admit_forward("/id-flood", "/id-h9", None)
            .expect_err("share");
        assert!(full.contains("/id-flood"), "{full}");
        assert!(f.admit_forward("/id-o9", "/id-h9", None).is_ok());
        f.take("s0");
        assert!(f.admit_forward("/id-o9", "/id-silent", None).is_ok());
        assert_eq!(f.to_next_hop("/id-silent"), 2);
    }
}
