//! The in-memory model of the `<remoteCSE>`s this node hosts, with the
//! indexes that keep every lookup O(log n) or better (docs/protocol.md §10): by `ri` (the map itself), by `csi` and by `rn`, and the table of
//! descendants (ACME `descendantCSR`), updated from the changed CSR's `dcse`
//! instead of being rebuilt.
//!
//! Every mutation is recorded twice: as a [`StoreChange`] for the persister
//! (when the node is durable) and as a [`Notice`] the engine turns into
//! liveness bookkeeping and events. No I/O happens here.

use crate::persist::{Snapshot, StoreChange};
use crate::resource::RemoteCse;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Where a descendant CSE hangs (ACME `descendantCSR`: csi -> (CSR, registered-at csi)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descendant {
    /// The ri of the local registree CSR through which it is reached.
    /// Shared by every descendant of one registree: a subtree of thousands
    /// costs one string, not thousands.
    pub via_ri: Arc<str>,
    /// The CSE it is registered at.
    pub registered_at: Arc<str>,
}

/// A registree came or went (not the registrar's own CSR).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Notice {
    RegistreeAdded(String),
    RegistreeRemoved(String),
    /// The set of descendants changed (the own `dcse` upward may need an UPDATE).
    DescendantsChanged,
}

/// What puts a change back.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Undo {
    Csr {
        ri: String,
        old: Option<Box<RemoteCse>>,
    },
    OwnRn(Option<String>),
}

pub struct Store {
    own: Arc<str>,
    /// This node's registrar: its CSR is not a registree.
    upstream: Option<String>,
    /// Boxed: a 400-byte value inline would leave tree nodes half empty.
    csrs: BTreeMap<String, Box<RemoteCse>>,
    by_csi: HashMap<String, String>,
    by_rn: HashMap<String, String>,
    descendants: BTreeMap<String, Descendant>,
    own_csr_rn: Option<String>,
    /// Changes not yet handed to the persister; `None`: not durable.
    changes: Option<Vec<StoreChange>>,
    /// How to undo each change, for the engine (durable only).
    undo: Vec<Undo>,
    notices: Vec<Notice>,
}

/// Checks what a persister kept as a request would be checked: a store
/// that holds this node itself, a CSE twice, or an invalid ID is refused
/// with the entry named, never loaded half-right.
pub(crate) fn validate_snapshot(
    snapshot: &Snapshot,
    own: &str,
    name_length: usize,
) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for (ri, csr) in &snapshot.csrs {
        let at = |why: String| format!("entry {ri:?}: {why}");
        let csi = csr.csi().ok_or_else(|| at("no csi".into()))?;
        crate::id::CseId::new(csi).map_err(|e| at(e.to_string()))?;
        if csi == own {
            return Err(at(format!("its csi {csi} is this CSE")));
        }
        if !seen.insert(csi) {
            return Err(at(format!("csi {csi} is held by another entry too")));
        }
        if ri.as_str() != &csi[1..] {
            return Err(at(format!(
                "ri must be the CSE-ID without '/', {:?}",
                &csi[1..]
            )));
        }
        if let Some(rn) = &csr.rn {
            if !super::registrar::valid_name(rn, name_length) {
                return Err(at(format!("invalid resource name {rn:?}")));
            }
        }
        for d in csr.dcse() {
            crate::id::CseId::new(d.clone()).map_err(|e| at(format!("dcse: {e}")))?;
        }
    }
    if let Some(rn) = &snapshot.own_csr_rn {
        if !super::registrar::valid_name(rn, name_length) {
            return Err(format!("own_csr_rn {rn:?} is not a valid resource name"));
        }
    }
    Ok(())
}

impl Store {
    /// An empty store of CSE `own`; `durable`: record changes for a persister.
    pub(crate) fn new(own: &str, upstream: Option<&str>, durable: bool) -> Store {
        Store {
            own: Arc::from(own),
            upstream: upstream.map(str::to_owned),
            csrs: BTreeMap::new(),
            by_csi: HashMap::new(),
            by_rn: HashMap::new(),
            descendants: BTreeMap::new(),
            own_csr_rn: None,
            changes: durable.then(Vec::new),
            undo: Vec::new(),
            notices: Vec::new(),
        }
    }

    /// Loads what a persister kept, recording no changes (it is durable already).
    pub(crate) fn restore(&mut self, snapshot: Snapshot) {
        for (ri, csr) in snapshot.csrs {
            self.apply(&ri, Some(csr));
        }
        self.own_csr_rn = snapshot.own_csr_rn;
    }

    pub fn get(&self, ri: &str) -> Option<&RemoteCse> {
        self.csrs.get(ri).map(|b| &**b)
    }

    pub fn by_rn(&self, rn: &str) -> Option<(&String, &RemoteCse)> {
        let ri = self.by_rn.get(rn)?;
        self.csrs.get_key_value(ri).map(|(k, v)| (k, &**v))
    }

    pub fn by_csi(&self, csi: &str) -> Option<(&String, &RemoteCse)> {
        let ri = self.by_csi.get(csi)?;
        self.csrs.get_key_value(ri).map(|(k, v)| (k, &**v))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &RemoteCse)> {
        self.csrs.iter().map(|(k, v)| (k, &**v))
    }

    pub fn len(&self) -> usize {
        self.csrs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.csrs.is_empty()
    }

    pub fn own_csr_rn(&self) -> Option<&str> {
        self.own_csr_rn.as_deref()
    }

    pub fn descendant_count(&self) -> usize {
        self.descendants.len()
    }

    pub fn descendant(&self, csi: &str) -> Option<&Descendant> {
        self.descendants.get(csi)
    }

    /// This node's `dcse` toward its registrar: every CSE below it, sorted.
    pub fn descendant_ids(&self) -> Vec<String> {
        self.descendants.keys().cloned().collect()
    }

    pub fn is_registree(&self, csr: &RemoteCse) -> bool {
        self.upstream.is_none() || csr.csi() != self.upstream.as_deref()
    }

    /// The registree CSRs: all but the registrar's.
    pub fn registrees(&self) -> impl Iterator<Item = (&String, &RemoteCse)> {
        self.iter().filter(|(_, c)| self.is_registree(c))
    }

    pub fn registree_count(&self) -> usize {
        self.csrs.len() - usize::from(self.upstream_csr().is_some())
    }

    fn upstream_csr(&self) -> Option<&RemoteCse> {
        self.by_csi(self.upstream.as_deref()?).map(|(_, c)| c)
    }

    /// Creates or replaces a CSR; returns what it replaces.
    pub(crate) fn insert(&mut self, ri: String, csr: RemoteCse) -> Option<RemoteCse> {
        if let Some(c) = &mut self.changes {
            c.push(StoreChange::Put {
                ri: ri.clone(),
                csr: csr.clone(),
            });
        }
        let old = self.apply(&ri, Some(csr));
        if self.changes.is_some() {
            self.undo.push(Undo::Csr {
                ri,
                old: old.clone().map(Box::new),
            });
        }
        old
    }

    pub(crate) fn remove(&mut self, ri: &str) -> Option<RemoteCse> {
        if !self.csrs.contains_key(ri) {
            return None;
        }
        if let Some(c) = &mut self.changes {
            c.push(StoreChange::Remove { ri: ri.to_owned() });
        }
        let old = self.apply(ri, None);
        if self.changes.is_some() {
            self.undo.push(Undo::Csr {
                ri: ri.to_owned(),
                old: old.clone().map(Box::new),
            });
        }
        old
    }

    pub(crate) fn set_own_csr_rn(&mut self, rn: Option<String>) {
        if self.own_csr_rn == rn {
            return;
        }
        if let Some(c) = &mut self.changes {
            c.push(StoreChange::OwnCsrRn(rn.clone()));
            self.undo.push(Undo::OwnRn(self.own_csr_rn.clone()));
        }
        self.own_csr_rn = rn;
    }

    /// Writes the answer of a change with it (durable only; nothing to undo:
    /// a failed batch takes it along).
    pub(crate) fn record_answer(&mut self, answer: crate::persist::Answered) {
        if let Some(c) = &mut self.changes {
            c.push(StoreChange::Answered(answer));
        }
    }

    /// The answer of `key` need not be kept: its request was acknowledged.
    pub(crate) fn forget_answer(&mut self, hop: &str, fr: &str, rqi: &str) {
        if let Some(c) = &mut self.changes {
            c.push(StoreChange::ForgetAnswer {
                hop: hop.to_owned(),
                fr: fr.to_owned(),
                rqi: rqi.to_owned(),
            });
        }
    }

    /// Records the present state of `ri` again (after a failed batch that
    /// must not be undone).
    pub(crate) fn rewrite(&mut self, ri: &str) {
        let change = match self.csrs.get(ri) {
            Some(csr) => StoreChange::Put {
                ri: ri.to_owned(),
                csr: (**csr).clone(),
            },
            None => StoreChange::Remove { ri: ri.to_owned() },
        };
        if let Some(c) = &mut self.changes {
            c.push(change);
            self.undo.push(Undo::Csr {
                ri: ri.to_owned(),
                old: self.csrs.get(ri).cloned(),
            });
        }
    }

    pub(crate) fn rewrite_own_csr_rn(&mut self) {
        if let Some(c) = &mut self.changes {
            c.push(StoreChange::OwnCsrRn(self.own_csr_rn.clone()));
            self.undo.push(Undo::OwnRn(self.own_csr_rn.clone()));
        }
    }

    /// How to undo the changes since the last call.
    pub(crate) fn take_undo(&mut self) -> Vec<Undo> {
        std::mem::take(&mut self.undo)
    }

    /// Puts back what a failed write had changed, recording nothing (the
    /// persister never kept it).
    pub(crate) fn revert(&mut self, ri: &str, old: Option<Box<RemoteCse>>) {
        self.apply(ri, old.map(|b| *b));
    }

    pub(crate) fn revert_own_csr_rn(&mut self, old: Option<String>) {
        self.own_csr_rn = old;
    }

    /// Changes since the last call, for the persister.
    pub(crate) fn take_changes(&mut self) -> Vec<StoreChange> {
        self.changes
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Drops changes not yet handed out (they were reverted).
    pub(crate) fn discard_changes(&mut self) {
        if let Some(c) = &mut self.changes {
            c.clear();
        }
        self.undo.clear();
    }

    pub fn has_changes(&self) -> bool {
        self.changes.as_ref().is_some_and(|c| !c.is_empty())
    }

    pub(crate) fn take_notices(&mut self) -> std::vec::Drain<'_, Notice> {
        self.notices.drain(..)
    }

    /// Sets `ri` to `new`, keeping every index right. O(log n + |dcse|).
    fn apply(&mut self, ri: &str, new: Option<RemoteCse>) -> Option<RemoteCse> {
        let old = self.csrs.remove(ri).map(|b| *b);
        if let Some(o) = &old {
            self.unindex(ri, o);
        }
        if let Some(n) = new {
            self.index(ri, &n);
            self.csrs.insert(ri.to_owned(), Box::new(n));
        }
        let was = old
            .as_ref()
            .filter(|c| self.is_registree(c))
            .and_then(|c| c.csi().map(str::to_owned));
        let is = self
            .csrs
            .get(ri)
            .filter(|c| self.is_registree(c))
            .and_then(|c| c.csi().map(str::to_owned));
        if was != is {
            if let Some(w) = was {
                self.notices.push(Notice::RegistreeRemoved(w));
            }
            if let Some(i) = is {
                self.notices.push(Notice::RegistreeAdded(i));
            }
        }
        old
    }

    fn index(&mut self, ri: &str, csr: &RemoteCse) {
        if let Some(csi) = csr.csi() {
            self.by_csi.insert(csi.to_owned(), ri.to_owned());
        }
        if let Some(rn) = &csr.rn {
            self.by_rn.insert(rn.clone(), ri.to_owned());
        }
        if !self.is_registree(csr) {
            return;
        }
        let Some(csi) = csr.csi() else { return };
        // A registree is reached directly; what it lists in dcse through it.
        // A CSE listed twice keeps its first route (dcse is checked against
        // the tree when it is accepted).
        let via: Arc<str> = Arc::from(ri);
        let at: Arc<str> = Arc::from(csi);
        for d in csr.dcse() {
            self.descendants
                .entry(d.clone())
                .or_insert_with(|| Descendant {
                    via_ri: via.clone(),
                    registered_at: at.clone(),
                });
        }
        self.descendants.insert(
            csi.to_owned(),
            Descendant {
                via_ri: via,
                registered_at: self.own.clone(),
            },
        );
        self.notices.push(Notice::DescendantsChanged);
    }

    fn unindex(&mut self, ri: &str, csr: &RemoteCse) {
        if let Some(csi) = csr.csi() {
            if self.by_csi.get(csi).is_some_and(|r| r == ri) {
                self.by_csi.remove(csi);
            }
        }
        if let Some(rn) = &csr.rn {
            if self.by_rn.get(rn).is_some_and(|r| r == ri) {
                self.by_rn.remove(rn);
            }
        }
        if !self.is_registree(csr) {
            return;
        }
        for d in csr.dcse().iter().map(String::as_str).chain(csr.csi()) {
            if self.descendants.get(d).is_some_and(|x| &*x.via_ri == ri) {
                self.descendants.remove(d);
            }
        }
        self.notices.push(Notice::DescendantsChanged);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr(csi: &str, dcse: &[&str]) -> RemoteCse {
        RemoteCse {
            csi: Some(csi.into()),
            rn: Some(csi[1..].into()),
            dcse: Some(dcse.iter().map(|s| s.to_string()).collect()),
            ..RemoteCse::default()
        }
    }

    #[test]
    fn descendants_follow_dcse_incrementally() {
        let mut s = Store::new("/id-mn", Some("/id-in"), false);
        s.insert("id-mn1".into(), csr("/id-mn1", &["/id-asn1", "/id-asn2"]));
        s.insert("id-in".into(), csr("/id-in", &["/id-other"]));
        assert_eq!(s.descendant_ids(), ["/id-asn1", "/id-asn2", "/id-mn1"]);
        assert_eq!(
            s.descendant("/id-asn1").map(|d| &*d.registered_at),
            Some("/id-mn1")
        );
        assert_eq!(
            s.descendant("/id-mn1").map(|d| &*d.registered_at),
            Some("/id-mn")
        );
        assert_eq!(s.descendant("/id-asn2").map(|d| &*d.via_ri), Some("id-mn1"));
        s.insert("id-mn1".into(), csr("/id-mn1", &["/id-asn2"]));
        assert_eq!(s.descendant_ids(), ["/id-asn2", "/id-mn1"]);
        s.remove("id-mn1");
        assert!(s.descendant_ids().is_empty());
        assert_eq!(s.registree_count(), 0);
        assert!(s.by_csi("/id-mn1").is_none() && s.by_rn("id-mn1").is_none());
        assert!(s.by_csi("/id-in").is_some());
    }

    #[test]
    fn a_bad_snapshot_is_refused_with_the_entry_named() {
        let ok = Snapshot {
            csrs: vec![("id-a".into(), csr("/id-a", &[]))],
            own_csr_rn: None,
            answered: Vec::new(),
        };
        assert_eq!(validate_snapshot(&ok, "/id-in", 64), Ok(()));
        for (ri, c, what) in [
            ("id-in", csr("/id-in", &[]), "this CSE"),
            ("x", csr("/id-a", &[]), "ri must be"),
            ("bad", csr("bad", &[]), "entry \"bad\""),
        ] {
            let s = Snapshot {
                csrs: vec![(ri.into(), c)],
                own_csr_rn: None,
                answered: Vec::new(),
            };
            let e = validate_snapshot(&s, "/id-in", 64).expect_err(what);
            assert!(e.contains(what), "{e}");
        }
        let twice = Snapshot {
            csrs: vec![
                ("id-a".into(), csr("/id-a", &[])),
                ("id-a".into(), csr("/id-a", &[])),
            ],
            own_csr_rn: None,
            answered: Vec::new(),
        };
        assert!(validate_snapshot(&twice, "/id-in", 64).is_err());
    }

    #[test]
    fn changes_and_notices_are_recorded_and_reverts_record_none() {
        let mut s = Store::new("/id-in", None, true);
        s.insert("a".into(), csr("/a", &[]));
        s.set_own_csr_rn(Some("x".into()));
        assert_eq!(s.take_changes().len(), 2);
        let notices: Vec<_> = s.take_notices().collect();
        assert!(notices.contains(&Notice::RegistreeAdded("/a".into())));
        let old = s.remove("a");
        s.revert("a", old.map(Box::new));
        assert_eq!(s.take_changes().len(), 1, "only the remove, not its revert");
        assert!(s.by_csi("/a").is_some());
    }
}
