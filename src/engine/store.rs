//! The in-memory model of the `<remoteCSE>`s this node hosts, with the
//! indexes that keep every lookup O(log n) or better (docs/protocol.md §10): by `ri` (the map itself), by `csi` and by `rn`, and the table of
//! descendants (ACME `descendantCSR`), updated from the changed CSR's `dcse`
//! instead of being rebuilt.
//!
//! Every mutation is recorded twice: as a [`StoreChange`] for the persister
//! (when the node is durable) and as a `Notice` the engine turns into
//! liveness bookkeeping and events. No I/O happens here.

use crate::resource::RemoteCse;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// One change to the durable store, emitted by the (sans-IO) engine.
// Most changes are Puts, so boxing the CSR would add an allocation to nearly
// every change to save space only on the rare Remove and OwnCsrRn.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum StoreChange {
    /// Create or replace the CSR with resource id `ri`.
    Put { ri: String, csr: RemoteCse },
    /// Delete the CSR with resource id `ri`; deleting an absent one is no error.
    Remove { ri: String },
    /// The rn of this node's own CSR at its registrar (None: not registered).
    OwnCsrRn(Option<String>),
    /// The answer to a request that changed the store, written with the
    /// change: a request redelivered after a crash (QoS 1) is answered as it
    /// was, not executed again (which would say 4105 to a CREATE that
    /// succeeded). Only the newest [`ANSWERS_KEPT`] are kept.
    Answered(Answered),
    /// The request (hop, fr, rqi) was acknowledged to the broker, which
    /// will not redeliver it: its answer need not be kept any more.
    ForgetAnswer {
        hop: String,
        fr: String,
        rqi: String,
    },
    /// What this node learned about its registrar `csi` (default: forget it).
    Registrar { csi: String, memo: RegistrarMemo },
}

/// What a node learned about one of its registrars beyond the standard,
/// kept across restarts (docs/protocol.md §5.6).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegistrarMemo {
    /// Optional attributes of the own `<remoteCSE>` (`csz`, `dcse`, ...) that
    /// the registrar refused: they are left out of every CREATE and UPDATE.
    pub refused: Vec<String>,
}

impl RegistrarMemo {
    pub fn is_empty(&self) -> bool {
        self.refused.is_empty()
    }
}

/// A remembered answer: to the request (hop, fr, rqi), the response
/// primitive as JSON.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answered {
    pub hop: String,
    pub fr: String,
    pub rqi: String,
    pub response: String,
}

/// Durable answers kept at most, newest first. Answers are forgotten once
/// their request is acknowledged; this bounds the table if acks never come.
pub const ANSWERS_KEPT: i64 = 65_536;

/// What a node starts from.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// ri -> CSR, ordered by ri.
    pub csrs: Vec<(String, RemoteCse)>,
    pub own_csr_rn: Option<String>,
    /// Answers of the latest changes, oldest first.
    pub answered: Vec<Answered>,
    /// What was learned per registrar (by CSE-ID), ordered by CSE-ID.
    pub registrars: Vec<(String, RegistrarMemo)>,
}

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
    /// What was learned about registrar `csi` (never undone: written again).
    Memo(String),
}

pub struct Store {
    own: Arc<str>,
    /// This node's registrar: its CSR is not a registree.
    upstream: Option<String>,
    /// The IN-CSEs of other SPs this node registers at (absolute CSE-IDs):
    /// their CSRs are not registrees either.
    peers: Vec<String>,
    /// Boxed: a 400-byte value inline would leave tree nodes half empty.
    csrs: BTreeMap<String, Box<RemoteCse>>,
    by_csi: HashMap<String, String>,
    by_rn: HashMap<String, String>,
    descendants: BTreeMap<String, Descendant>,
    own_csr_rn: Option<String>,
    /// What was learned per registrar, by CSE-ID.
    memos: BTreeMap<String, RegistrarMemo>,
    /// Changes not yet handed to the persister; `None`: not durable.
    changes: Option<Vec<StoreChange>>,
    /// How to undo each change, for the engine (durable only).
    undo: Vec<Undo>,
    notices: Vec<Notice>,
    /// What the CSRs and the descendants cost, in [`Store::cost`]'s terms.
    bytes: usize,
}

/// What one heap string costs beyond its characters (the `String`, the
/// allocator's rounding and header), and what one CSR costs beyond its
/// attributes (its box, tree node and index entries). Calibrated against
/// RSS in tests/limits.rs; docs/operations.md "Limits and memory".
const STRING_COST: usize = 48;
const CSR_COST: usize = 1024;
/// A descendant is kept twice: in its CSR's `dcse` and as a key of the
/// descendant table, with its entry and tree node.
const DESCENDANT_COST: usize = 2 * STRING_COST + 96;

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
        // A CSE of another SP (docs/protocol.md §13): absolute, and named
        // `<sp>_<csi>` as ACME names it.
        let foreign = crate::id::split_absolute(csi);
        let rel = foreign.map_or(csi, |(_, rel)| rel);
        let rel_id = crate::id::CseId::new(rel).map_err(|e| at(e.to_string()))?;
        if csi == own {
            return Err(at(format!("its csi {csi} is this CSE")));
        }
        if !seen.insert(csi) {
            return Err(at(format!("csi {csi} is held by another entry too")));
        }
        if let Some((sp, _)) = foreign {
            let want = crate::id::foreign_rn(sp, &rel_id);
            if *ri != want {
                return Err(at(format!("ri must be {want:?} for {csi}")));
            }
        } else if ri.as_str() != &csi[1..] {
            return Err(at(format!(
                "ri must be the CSE-ID without '/', {:?}",
                &csi[1..]
            )));
        }
        if let Some(rn) = &csr.rn {
            if !valid_name(rn, name_length) {
                return Err(at(format!("invalid resource name {rn:?}")));
            }
        }
        for d in csr.dcse() {
            crate::id::CseId::new(d.clone()).map_err(|e| at(format!("dcse: {e}")))?;
        }
    }
    if let Some(rn) = &snapshot.own_csr_rn {
        if !valid_name(rn, name_length) {
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
            peers: Vec::new(),
            csrs: BTreeMap::new(),
            by_csi: HashMap::new(),
            by_rn: HashMap::new(),
            descendants: BTreeMap::new(),
            own_csr_rn: None,
            memos: BTreeMap::new(),
            changes: durable.then(Vec::new),
            undo: Vec::new(),
            notices: Vec::new(),
            bytes: 0,
        }
    }

    /// What the store holds, in [`Store::cost`]'s terms.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// What holding `csr` costs: its attributes' characters, each string's
    /// overhead, and each descendant twice (docs/operations.md "Limits and
    /// memory"). A proxy of RSS, not an exact count.
    pub fn cost(csr: &RemoteCse) -> usize {
        let text = |s: &Option<String>| s.as_ref().map_or(0, |s| s.len() + STRING_COST);
        let list = |l: &Option<Vec<String>>| {
            l.iter()
                .flatten()
                .map(|s| s.len() + STRING_COST)
                .sum::<usize>()
        };
        let other = if csr.other.is_empty() {
            0
        } else {
            serde_json::to_string(&csr.other).map_or(0, |t| 4 * t.len())
        };
        CSR_COST
            + [
                &csr.rn, &csr.ri, &csr.pi, &csr.ct, &csr.lt, &csr.et, &csr.csi, &csr.cb, &csr.nl,
            ]
            .into_iter()
            .map(text)
            .sum::<usize>()
            + [&csr.lbl, &csr.poa, &csr.csz, &csr.srv]
                .into_iter()
                .map(list)
                .sum::<usize>()
            + csr
                .dcse()
                .iter()
                .map(|d| 2 * d.len() + DESCENDANT_COST)
                .sum::<usize>()
            + other
    }

    /// Descendants below this CSE (registrees and what they list).
    pub fn descendant_count(&self) -> usize {
        self.descendants.len()
    }

    /// Up to `n` descendants, sorted, from the `skip`-th on.
    pub fn descendants_page(&self, skip: usize, n: usize) -> impl Iterator<Item = &String> {
        self.descendants.keys().skip(skip).take(n)
    }

    /// Loads what a persister kept, recording no changes (it is durable already).
    pub(crate) fn restore(&mut self, snapshot: Snapshot) {
        for (ri, csr) in snapshot.csrs {
            self.apply(&ri, Some(csr));
        }
        self.own_csr_rn = snapshot.own_csr_rn;
        self.memos = snapshot.registrars.into_iter().collect();
    }

    /// What was learned about registrar `csi` (empty if nothing).
    pub fn registrar_memo(&self, csi: &str) -> RegistrarMemo {
        self.memos.get(csi).cloned().unwrap_or_default()
    }

    pub(crate) fn set_registrar_memo(&mut self, csi: &str, memo: RegistrarMemo) {
        if self.registrar_memo(csi) == memo {
            return;
        }
        if memo.is_empty() {
            self.memos.remove(csi);
        } else {
            self.memos.insert(csi.to_owned(), memo.clone());
        }
        if let Some(c) = &mut self.changes {
            c.push(StoreChange::Registrar {
                csi: csi.to_owned(),
                memo,
            });
            self.undo.push(Undo::Memo(csi.to_owned()));
        }
    }

    /// Records what is known about registrar `csi` again (after a failed batch).
    pub(crate) fn rewrite_memo(&mut self, csi: &str) {
        let memo = self.registrar_memo(csi);
        if let Some(c) = &mut self.changes {
            c.push(StoreChange::Registrar {
                csi: csi.to_owned(),
                memo,
            });
            self.undo.push(Undo::Memo(csi.to_owned()));
        }
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

    pub fn descendant(&self, csi: &str) -> Option<&Descendant> {
        self.descendants.get(csi)
    }

    /// This node's `dcse` toward its registrar: every CSE below it, sorted.
    pub fn descendant_ids(&self) -> Vec<String> {
        self.descendants.keys().cloned().collect()
    }

    pub fn is_registree(&self, csr: &RemoteCse) -> bool {
        (self.upstream.is_none() || csr.csi() != self.upstream.as_deref())
            && !csr.csi().is_some_and(|c| self.peers.iter().any(|p| p == c))
    }

    /// The registree CSRs: all but the registrar's.
    pub fn registrees(&self) -> impl Iterator<Item = (&String, &RemoteCse)> {
        self.iter().filter(|(_, c)| self.is_registree(c))
    }

    pub fn registree_count(&self) -> usize {
        let peers = self
            .peers
            .iter()
            .filter(|p| self.by_csi.contains_key(p.as_str()))
            .count();
        self.csrs.len() - usize::from(self.upstream_csr().is_some()) - peers
    }

    /// The IN-CSEs of other SPs this node registers at (before restore).
    pub(crate) fn set_peers(&mut self, peers: Vec<String>) {
        self.peers = peers;
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

    pub(crate) fn set_upstream(&mut self, upstream: Option<&str>) {
        self.upstream = upstream.map(str::to_owned);
    }

    /// Keeps the local `<remoteCSE>` of the own registrar (`csr` as
    /// retrieved from it) below the CSEBase `base_ri`. `ct` stays what it
    /// was; `lt` moves only when something else changed, so a routine
    /// re-fetch writes nothing.
    pub(crate) fn put_registrar_csr(
        &mut self,
        fallback_ri: &str,
        base_ri: &str,
        mut csr: RemoteCse,
        ts: String,
    ) {
        let ri = csr.ri.clone().unwrap_or_else(|| fallback_ri.to_owned());
        let existing = self.get(&ri).cloned();
        csr.ty = Some(crate::primitive::ResourceType::REMOTE_CSE);
        csr.pi = Some(base_ri.to_owned());
        csr.ct = Some(
            existing
                .as_ref()
                .and_then(|c| c.ct.clone())
                .unwrap_or_else(|| ts.clone()),
        );
        let mut same = existing;
        if let Some(s) = &mut same {
            s.lt = None;
        }
        let mut probe = csr.clone();
        probe.lt = None;
        if same.as_ref() != Some(&probe) {
            csr.lt = Some(ts);
            self.insert(ri, csr);
        }
    }

    /// Drops the local `<remoteCSE>` of the CSE `csi`, if there is one.
    pub(crate) fn remove_csi(&mut self, csi: &str) {
        if let Some(ri) = self.by_csi(csi).map(|(ri, _)| ri.clone()) {
            self.remove(&ri);
        }
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
    pub(crate) fn record_answer(&mut self, answer: Answered) {
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
            self.bytes = self.bytes.saturating_sub(Store::cost(o));
            self.unindex(ri, o);
        }
        if let Some(n) = new {
            self.bytes += Store::cost(&n);
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
        // A CSE of another SP lists CSEs of its SP, not of this one.
        let dcse: &[String] = if csi.starts_with("//") {
            &[]
        } else {
            csr.dcse()
        };
        for d in dcse {
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

/// A resourceName: unreserved URI characters (TS-0001 9.6.1.2.1, used in
/// paths), not `.` or `..` (which would be path steps), bounded.
pub(crate) fn valid_name(rn: &str, max: usize) -> bool {
    !rn.is_empty()
        && rn.len() <= max
        && rn != "."
        && rn != ".."
        && rn
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~'))
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
            registrars: Vec::new(),
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
                registrars: Vec::new(),
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
            registrars: Vec::new(),
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
