//! PUBACKs in the order their PUBLISHes came in.
//!
//! MQTT 3.1.1 §4.6 [MQTT-4.6.0-2]: a client MUST send PUBACK packets in the
//! order in which the corresponding PUBLISH packets were received. The node
//! finishes requests out of that order (a RETRIEVE is answered at once, a
//! CREATE received before it only once its batch is durable; a response is
//! taken at once), and rumqttd closes the connection of a client whose
//! PUBACK is not the one it expects next. So a PUBACK that is due waits here
//! until every earlier one is due too; then they go out in order. Only the
//! PUBACK waits: the answer has gone already.
//!
//! Whoever makes a PUBACK due hands what is ready to the client while it
//! has room; what finds none stays first in line, and the event loop hands
//! it on as room appears. One queue, one way out: nothing overtakes.
//!
//! Per connection: a new connection starts empty (the broker redelivers
//! what was not acknowledged on the old one).

use std::collections::VecDeque;

#[derive(Debug, Default)]
pub struct AckOrder {
    /// Received QoS 1 publishes not acknowledged yet, oldest first, with
    /// whether their PUBACK is due.
    waiting: VecDeque<(u16, bool)>,
    /// Due in order, not yet handed to the client.
    ready: VecDeque<u16>,
}

impl AckOrder {
    /// A new connection: what was pending belongs to the old one.
    pub fn reset(&mut self) {
        *self = AckOrder::default();
    }

    /// A QoS 1 publish came in with `pkid`, after all that came before.
    pub fn received(&mut self, pkid: u16) {
        self.waiting.push_back((pkid, false));
    }

    /// The PUBACK of `pkid` is due; the ones now due in order move to the
    /// ready queue. An unknown `pkid` (a connection ago) is ignored.
    pub fn done(&mut self, pkid: u16) {
        if let Some(entry) = self.waiting.iter_mut().find(|(p, due)| *p == pkid && !due) {
            entry.1 = true;
        }
        while let Some(&(pkid, true)) = self.waiting.front() {
            self.waiting.pop_front();
            self.ready.push_back(pkid);
        }
    }

    /// The next PUBACK to hand to the client.
    pub fn next_ready(&self) -> Option<u16> {
        self.ready.front().copied()
    }

    /// The PUBACK `next_ready` gave is with the client.
    pub fn sent(&mut self) {
        self.ready.pop_front();
    }

    /// Received and not acknowledged yet.
    #[cfg(test)]
    pub fn pending(&self) -> usize {
        self.waiting.len() + self.ready.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(o: &mut AckOrder) -> Vec<u16> {
        let mut out = Vec::new();
        while let Some(p) = o.next_ready() {
            o.sent();
            out.push(p);
        }
        out
    }

    #[test]
    fn a_later_puback_waits_for_the_earlier_ones() {
        let mut o = AckOrder::default();
        for p in [7, 8, 9] {
            o.received(p);
        }
        // The RETRIEVE (8) is answered before the CREATE (7) is durable.
        o.done(8);
        assert_eq!(drain(&mut o), Vec::<u16>::new());
        o.done(7);
        assert_eq!(drain(&mut o), vec![7, 8]);
        o.done(9);
        assert_eq!(drain(&mut o), vec![9]);
        assert_eq!(o.pending(), 0);
    }

    #[test]
    fn unknown_and_repeated_pkids_change_nothing() {
        let mut o = AckOrder::default();
        o.received(1);
        o.done(5);
        o.done(5);
        assert_eq!(drain(&mut o), Vec::<u16>::new());
        o.done(1);
        o.done(1);
        assert_eq!(drain(&mut o), vec![1]);
    }

    #[test]
    fn a_pkid_used_again_after_its_puback_is_a_new_publish() {
        let mut o = AckOrder::default();
        o.received(1);
        o.done(1);
        assert_eq!(drain(&mut o), vec![1]);
        o.received(2);
        o.received(1);
        o.done(1);
        assert_eq!(drain(&mut o), Vec::<u16>::new());
        o.done(2);
        assert_eq!(drain(&mut o), vec![2, 1]);
    }

    #[test]
    fn a_puback_that_finds_no_room_stays_first_in_line() {
        let mut o = AckOrder::default();
        for p in 1..=2 {
            o.received(p);
            o.done(p);
        }
        // The client had no room for 1: it is offered again, before 2.
        assert_eq!(o.next_ready(), Some(1));
        o.received(3);
        o.done(3);
        assert_eq!(drain(&mut o), vec![1, 2, 3]);
    }

    #[test]
    fn a_new_connection_forgets_the_old_one() {
        let mut o = AckOrder::default();
        o.received(1);
        o.received(2);
        o.done(2);
        o.reset();
        o.done(1);
        assert_eq!(drain(&mut o), Vec::<u16>::new());
        assert_eq!(o.pending(), 0);
    }
}
