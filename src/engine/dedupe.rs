//! QoS 1 delivers at least once: the same request (same hop, originator and
//! rqi) may arrive twice. The hop is part of the key so that nobody can claim
//! another CSE's rqi and have its request answered from the cache. It is executed once; a repeat gets the first answer, or
//! nothing while the first is still being forwarded (its answer will come).

use crate::primitive::Response;
use std::collections::{HashMap, VecDeque};

/// What became of a request seen before.
#[derive(Clone, Debug, PartialEq)]
pub enum Seen {
    /// Forwarded; the answer is not back yet.
    InFlight,
    Answered(Box<Response>),
}

/// (hop, fr, rqi).
pub type Key = (String, String, String);

pub fn key(hop: &str, fr: &str, rqi: &str) -> Key {
    (hop.to_owned(), fr.to_owned(), rqi.to_owned())
}

/// Bounded twice: in entries and in bytes (an answer can be large; a
/// thousand large answers must not exhaust a gateway).
pub struct RecentRequests {
    capacity: usize,
    max_bytes: usize,
    bytes: usize,
    order: VecDeque<Key>,
    answers: HashMap<Key, (Seen, usize)>,
}

impl RecentRequests {
    pub fn new(capacity: usize, max_bytes: usize) -> Self {
        RecentRequests {
            capacity: capacity.max(1),
            max_bytes,
            bytes: 0,
            order: VecDeque::new(),
            answers: HashMap::new(),
        }
    }

    pub fn set_max_bytes(&mut self, max_bytes: usize) {
        self.max_bytes = max_bytes;
    }

    pub fn get(&self, key: &Key) -> Option<&Seen> {
        self.answers.get(key).map(|(s, _)| s)
    }

    /// Keeps `answer` (about `size` bytes encoded) for a repeat delivery.
    pub fn remember(&mut self, key: Key, answer: Response, size: usize) {
        self.record(key, Seen::Answered(Box::new(answer)), size);
    }

    pub fn in_flight(&mut self, key: Key) {
        self.record(key, Seen::InFlight, 0);
    }

    /// Forgets a request whose answer must not be replayed (it was never
    /// executed, e.g. its write failed).
    pub fn forget(&mut self, key: &Key) {
        if let Some((_, size)) = self.answers.remove(key) {
            self.bytes -= size;
        }
    }

    fn record(&mut self, key: Key, seen: Seen, size: usize) {
        let size = size + key.0.len() + key.1.len() + key.2.len();
        match self.answers.insert(key.clone(), (seen, size)) {
            None => self.order.push_back(key),
            Some((_, old)) => self.bytes -= old,
        }
        self.bytes += size;
        while self.order.len() > self.capacity || self.bytes > self.max_bytes {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some((_, s)) = self.answers.remove(&old) {
                self.bytes -= s;
            }
        }
    }

    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.answers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::primitive::Rsc;

    #[test]
    fn remembers_a_bounded_number_of_answers() {
        let mut r = RecentRequests::new(2, 1 << 20);
        let k = |fr: &str, rqi: &str| key("/h", fr, rqi);
        r.remember(k("/a", "1"), Response::new(Rsc::CREATED, "1"), 10);
        r.remember(k("/a", "2"), Response::new(Rsc::OK, "2"), 10);
        assert!(matches!(r.get(&k("/a", "1")), Some(Seen::Answered(x)) if x.rsc == Rsc::CREATED));
        assert!(
            r.get(&key("/other-hop", "/a", "1")).is_none(),
            "another hop's rqi is not ours"
        );
        r.in_flight(k("/a", "4"));
        assert_eq!(r.get(&k("/a", "4")), Some(&Seen::InFlight));
        r.remember(k("/a", "4"), Response::new(Rsc::OK, "4"), 10);
        assert!(matches!(r.get(&k("/a", "4")), Some(Seen::Answered(_))));
        assert!(r.get(&k("/b", "1")).is_none());
        r.remember(k("/a", "3"), Response::new(Rsc::OK, "3"), 10);
        assert!(r.get(&k("/a", "1")).is_none());
        assert!(r.get(&k("/a", "2")).is_none());
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn large_answers_are_bounded_in_bytes() {
        let mut r = RecentRequests::new(1000, 10_000);
        for i in 0..100 {
            r.remember(
                key("/h", "/a", &i.to_string()),
                Response::new(Rsc::OK, "x"),
                2_000,
            );
        }
        assert!(r.bytes() <= 10_000);
        assert!(r.len() <= 5);
        assert!(r.get(&key("/h", "/a", "99")).is_some(), "the newest stays");
    }
}
