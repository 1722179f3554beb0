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

pub struct RecentRequests {
    capacity: usize,
    order: VecDeque<Key>,
    answers: HashMap<Key, Seen>,
}

impl RecentRequests {
    pub fn new(capacity: usize) -> Self {
        RecentRequests {
            capacity: capacity.max(1),
            order: VecDeque::new(),
            answers: HashMap::new(),
        }
    }

    pub fn get(&self, key: &Key) -> Option<&Seen> {
        self.answers.get(key)
    }

    pub fn remember(&mut self, key: Key, answer: Response) {
        self.record(key, Seen::Answered(Box::new(answer)));
    }

    pub fn in_flight(&mut self, key: Key) {
        self.record(key, Seen::InFlight);
    }

    /// Forgets a request whose answer must not be replayed (it was never
    /// executed, e.g. its write failed).
    pub fn forget(&mut self, key: &Key) {
        self.answers.remove(key);
    }

    fn record(&mut self, key: Key, seen: Seen) {
        if self.answers.insert(key.clone(), seen).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.answers.remove(&old);
            }
        }
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
        let mut r = RecentRequests::new(2);
        let k = |fr: &str, rqi: &str| key("/h", fr, rqi);
        r.remember(k("/a", "1"), Response::new(Rsc::CREATED, "1"));
        r.remember(k("/a", "2"), Response::new(Rsc::OK, "2"));
        assert!(matches!(r.get(&k("/a", "1")), Some(Seen::Answered(x)) if x.rsc == Rsc::CREATED));
        assert!(
            r.get(&key("/other-hop", "/a", "1")).is_none(),
            "another hop's rqi is not ours"
        );
        r.in_flight(k("/a", "4"));
        assert_eq!(r.get(&k("/a", "4")), Some(&Seen::InFlight));
        r.remember(k("/a", "4"), Response::new(Rsc::OK, "4"));
        assert!(matches!(r.get(&k("/a", "4")), Some(Seen::Answered(_))));
        assert!(r.get(&k("/b", "1")).is_none());
        r.remember(k("/a", "3"), Response::new(Rsc::OK, "3"));
        assert!(r.get(&k("/a", "1")).is_none());
        assert!(r.get(&k("/a", "2")).is_none());
        assert_eq!(r.len(), 2);
    }
}
