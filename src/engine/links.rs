//! The node's broker connections as the engine sees them: one state per
//! [`Link`] key, and which link reaches which next hop. With one broker
//! there is one link and everything travels on it; `[registrar.mqtt]` adds
//! a link toward the registrar (docs/protocol.md §1.3, "two brokers").

use crate::id::CseId;
use crate::topic::Link;

#[derive(Clone, Debug, Default)]
struct LinkState {
    up: bool,
}

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
