//! The node's broker connections as the engine sees them: one state per
//! [`Link`] key, and which link reaches which next hop. With one broker
//! there is one link and everything travels on it; `[registrar.mqtt]` adds
//! a link toward the registrar (docs/protocol.md §1.3, "two brokers").

use super::events::LinkReport;
use crate::id::CseId;
use crate::topic::Link;
use std::time::{Duration, Instant};

#[derive(Clone, Debug, Default)]
struct LinkState {
    up: bool,
    /// Failed attempts since the last connection, and when one was told.
    attempts: u32,
    last_told: Option<Instant>,
}

/// A refused login is told again this often while it lasts (a fault of the
/// configuration: the operator should see it); an unreachable broker less
/// often (it may just be away).
const LOGIN_REMINDER: Duration = Duration::from_secs(30);
const UNREACHABLE_REMINDER: Duration = Duration::from_secs(60);

/// Every link's state, by key.
#[derive(Clone, Debug)]
pub(crate) struct Links {
    states: Vec<LinkState>,
    /// The link the own registrar is reached on.
    registrar: Link,
}

impl Links {
    /// `registrar`: the link toward the own registrar ([`Link::LOCAL`]
    /// when it is on the same broker as everything else).
    pub(crate) fn new(registrar: Link) -> Links {
        Links {
            states: vec![LinkState::default(); registrar.index().max(Link::LOCAL.index()) + 1],
            registrar,
        }
    }

    fn state_mut(&mut self, link: Link) -> &mut LinkState {
        let i = link.index();
        if i >= self.states.len() {
            self.states.resize(i + 1, LinkState::default());
        }
        &mut self.states[i]
    }

    /// `link` came up or went down; `None`: every link (one broker).
    pub(crate) fn set(&mut self, link: Option<Link>, up: bool) {
        match link {
            Some(l) => self.state_mut(l).up = up,
            None => {
                for s in &mut self.states {
                    s.up = up;
                }
            }
        }
    }

    /// Keeps count of `link`'s report at `now`: (failed attempts since the
    /// last connection, whether it is news).
    pub(crate) fn report(&mut self, link: Link, report: &LinkReport, now: Instant) -> (u32, bool) {
        let s = self.state_mut(link);
        let reminder = match report {
            LinkReport::Connected { .. } => {
                s.attempts = 0;
                s.last_told = None;
                return (0, true);
            }
            // Once at the third drop, then every tenth, not per drop.
            LinkReport::Takeover { drops, .. } => return (s.attempts, drops % 10 == 3),
            LinkReport::LoginRefused { .. } => LOGIN_REMINDER,
            LinkReport::Unreachable { .. } => UNREACHABLE_REMINDER,
            LinkReport::Lost { .. }
            | LinkReport::SessionPurged { .. }
            | LinkReport::CannotSubscribe { .. } => return (s.attempts, true),
        };
        s.attempts += 1;
        let due = s
            .last_told
            .is_none_or(|t| now.duration_since(t) >= reminder);
        if due {
            s.last_told = Some(now);
        }
        (s.attempts, due)
    }

    pub(crate) fn is_up(&self, link: Link) -> bool {
        self.states.get(link.index()).is_some_and(|s| s.up)
    }

    pub(crate) fn all_up(&self) -> bool {
        self.states.iter().all(|s| s.up)
    }

    /// The registrar has a broker of its own: each broker then vouches
    /// only for its own side (the hop is the identity).
    pub(crate) fn registrar_is_separate(&self) -> bool {
        self.registrar != Link::LOCAL
    }

    pub(crate) fn registrar(&self) -> Link {
        self.registrar
    }

    /// The link the next hop `to` is reached on.
    pub(crate) fn to(&self, to: &str, registrar: Option<&CseId>) -> Link {
        match registrar {
            Some(r) if r.as_str() == to => self.registrar,
            _ => Link::LOCAL,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_broker_is_one_link() {
        let mut l = Links::new(Link::LOCAL);
        let reg = CseId::new("/id-in").expect("id");
        assert!(!l.registrar_is_separate());
        assert_eq!(l.to("/id-in", Some(&reg)), Link::LOCAL);
        l.set(None, true);
        assert!(l.all_up());
    }

    #[test]
    fn a_refused_login_is_told_then_reminded_not_repeated() {
        let t0 = Instant::now();
        let mut l = Links::new(Link::LOCAL);
        let refused = LinkReport::LoginRefused {
            broker: "mqtt://b".into(),
            user: Some("u".into()),
            why: "not authorized".into(),
        };
        let told: Vec<bool> = (0..7u64)
            .map(|i| {
                l.report(Link::LOCAL, &refused, t0 + Duration::from_secs(5 * i))
                    .1
            })
            .collect();
        assert_eq!(told, [true, false, false, false, false, false, true]);
        let connected = LinkReport::Connected {
            broker: "mqtt://b".into(),
            session_present: false,
        };
        assert_eq!(l.report(Link::LOCAL, &connected, t0), (0, true));
        assert!(
            l.report(Link::LOCAL, &refused, t0).1,
            "a new outage is news"
        );
    }

    #[test]
    fn the_registrar_on_its_own_broker() {
        let mut l = Links::new(Link::UPSTREAM);
        let reg = CseId::new("/id-in").expect("id");
        assert_eq!(l.to("/id-in", Some(&reg)), Link::UPSTREAM);
        assert_eq!(l.to("/id-asn", Some(&reg)), Link::LOCAL);
        l.set(Some(Link::LOCAL), true);
        assert!(l.is_up(Link::LOCAL) && !l.is_up(Link::UPSTREAM) && !l.all_up());
        l.set(Some(Link::UPSTREAM), true);
        assert!(l.all_up());
    }
}
