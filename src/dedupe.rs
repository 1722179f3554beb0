//! QoS 1 delivers at least once: the same request (same originator and rqi)
//! may arrive twice. It is executed once; a repeat gets the first answer, or
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

pub struct RecentRequests {
    capacity: usize,
    order: VecDeque<(String, String)>,
    answers: HashMap<(String, String), Seen>,
}

impl RecentRequests {
    pub fn new(capacity: usize) -> Self {
        RecentRequests {
            capacity: capacity.max(1),
            order: VecDeque::new(),
            answers: HashMap::new(),
        }
    }

    pub fn get(&self, fr: &str, rqi: &str) -> Option<&Seen> {
        self.answers.get(&(fr.to_owned(), rqi.to_owned()))
    }

    pub fn remember(&mut self, fr: &str, rqi: &str, answer: Response) {
        self.record(fr, rqi, Seen::Answered(Box::new(answer)));
    }

    pub fn in_flight(&mut self, fr: &str, rqi: &str) {
        self.record(fr, rqi, Seen::InFlight);
    }

    fn record(&mut self, fr: &str, rqi: &str, seen: Seen) {
        let key = (fr.to_owned(), rqi.to_owned());
        if self.answers.insert(key.clone(), seen).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.answers.remove(&old);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.answers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.answers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::primitive::Rsc;

    #[test]
    fn remembers_a_bounded_number_of_answers() {
        let mut r = RecentRequests::new(2);
        r.remember("/a", "1", Response::new(Rsc::CREATED, "1"));
        r.remember("/a", "2", Response::new(Rsc::OK, "2"));
        assert!(matches!(r.get("/a", "1"), Some(Seen::Answered(x)) if x.rsc == Rsc::CREATED));
        r.in_flight("/a", "4");
        assert_eq!(r.get("/a", "4"), Some(&Seen::InFlight));
        r.remember("/a", "4", Response::new(Rsc::OK, "4"));
        assert!(matches!(r.get("/a", "4"), Some(Seen::Answered(_))));
        assert!(r.get("/b", "1").is_none());
        r.remember("/a", "3", Response::new(Rsc::OK, "3"));
        assert!(r.get("/a", "1").is_none());
        assert!(r.get("/a", "2").is_none());
        assert_eq!(r.len(), 2);
    }
}
