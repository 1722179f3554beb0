//! Group commit (docs/protocol.md §10, "nothing acknowledged is lost"): a
//! change is answered only once the batch holding it is durable; a batch
//! that fails is undone in memory and answered 5000; the answer of a change
//! stays durable until its request's PUBACK is written.

use super::dedupe;
use super::events::Event;
use super::store::{Answered, Store, Undo};
use crate::primitive::{Format, Response};
use crate::topic::Route;
use std::collections::HashMap;

/// A message the driver must acknowledge to the broker (an opaque token it
/// chose), once what the engine says about it has been handed on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ack(pub u64);

/// Acks whose durable answer is tracked for forgetting; beyond, the
/// persister's count bound trims them.
const DURABLE_ANSWERS_TRACKED: usize = 65_536;

struct Uncommitted {
    batch: Option<u64>,
    undo: Undo,
    /// Made by the registration machine, not by a request: it is kept and
    /// written again rather than undone (the machine relies on it).
    internal: bool,
}

/// An answer held until its change is durable.
pub(crate) struct Parked {
    batch: Option<u64>,
    pub(crate) reply: Route,
    pub(crate) format: Format,
    pub(crate) response: Response,
    pub(crate) key: dedupe::Key,
    pub(crate) ack: Option<Ack>,
    pub(crate) handled: Event,
}

impl Parked {
    pub(crate) fn new(
        reply: Route,
        format: Format,
        response: Response,
        key: dedupe::Key,
        ack: Option<Ack>,
        handled: Event,
    ) -> Parked {
        Parked {
            batch: None,
            reply,
            format,
            response,
            key,
            ack,
            handled,
        }
    }
}

/// What is not durable yet, and the answers that wait for it.
pub(crate) struct Durability {
    durable: bool,
    next_batch: u64,
    batch_in_flight: Option<u64>,
    uncommitted: Vec<Uncommitted>,
    parked: Vec<Parked>,
    /// Answers written with their change whose request is not acknowledged
    /// yet: once it is, the durable copy goes.
    durable_answers: HashMap<Ack, dedupe::Key>,
    /// Answers kept by the persister from before a restart, for requests
    /// the broker redelivers; each is used once.
    restored: HashMap<dedupe::Key, Response>,
}

impl Durability {
    /// `answered`: the answers the persister kept from before a restart.
    pub(crate) fn new(durable: bool, answered: Vec<Answered>) -> Durability {
        // A stored answer that no longer parses is one redelivery answered
        // anew (dedupe by the store's 4105): nothing worth refusing to start.
        let restored = answered
            .into_iter()
            .filter_map(|a| {
                let rsp = serde_json::from_str::<Response>(&a.response).ok()?;
                Some((dedupe::key(&a.hop, &a.fr, &a.rqi), rsp))
            })
            .collect();
        Durability {
            durable,
            next_batch: 1,
            batch_in_flight: None,
            uncommitted: Vec::new(),
            parked: Vec::new(),
            durable_answers: HashMap::new(),
            restored,
        }
    }

    pub(crate) fn is_durable(&self) -> bool {
        self.durable
    }

    /// Changes not written yet.
    pub(crate) fn unwritten(&self) -> usize {
        self.uncommitted.len()
    }

    /// Answers that wait on a batch.
    pub(crate) fn parked(&self) -> usize {
        self.parked.len()
    }

    /// No answer waits on a batch.
    pub(crate) fn is_idle(&self) -> bool {
        self.parked.is_empty()
    }

    /// The answer given before a restart to the redelivered request `key`.
    pub(crate) fn take_restored(&mut self, key: &dedupe::Key) -> Option<Response> {
        self.restored.remove(key)
    }

    /// Acks of a lost connection will never be written: the broker
    /// redelivers those requests, and their durable answers stay.
    pub(crate) fn connection_lost(&mut self) {
        self.durable_answers.clear();
    }

    /// The request handed over with `ack` is acknowledged: the key of its
    /// durable answer, which can go.
    pub(crate) fn acked(&mut self, ack: Ack) -> Option<dedupe::Key> {
        self.durable_answers.remove(&ack)
    }

    /// Keeps how to undo `undo` until its batch is durable; `internal`:
    /// made by the engine itself, written again instead of undone.
    pub(crate) fn track(&mut self, undo: Vec<Undo>, internal: bool) {
        self.uncommitted
            .extend(undo.into_iter().map(|undo| Uncommitted {
                batch: None,
                undo,
                internal,
            }));
    }

    pub(crate) fn park(&mut self, p: Parked) {
        self.parked.push(p);
    }

    /// The number of the next batch, when none is outstanding and the
    /// store has changes; what is tracked so far belongs to it.
    pub(crate) fn next_batch(&mut self, store_has_changes: bool) -> Option<u64> {
        if self.batch_in_flight.is_some() || !store_has_changes {
            return None;
        }
        let seq = self.next_batch;
        self.next_batch += 1;
        self.batch_in_flight = Some(seq);
        for u in self.uncommitted.iter_mut().filter(|u| u.batch.is_none()) {
            u.batch = Some(seq);
        }
        for p in self.parked.iter_mut().filter(|p| p.batch.is_none()) {
            p.batch = Some(seq);
        }
        Some(seq)
    }

    /// The batch `seq` is durable: the answers that waited for it.
    pub(crate) fn committed(&mut self, seq: u64) -> Vec<Parked> {
        if self.batch_in_flight == Some(seq) {
            self.batch_in_flight = None;
        }
        self.uncommitted.retain(|u| u.batch.is_none_or(|b| b > seq));
        let (done, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.parked)
            .into_iter()
            .partition(|p| p.batch.is_some_and(|b| b <= seq));
        self.parked = rest;
        for p in &done {
            match p.ack {
                Some(a) if self.durable_answers.len() < DURABLE_ANSWERS_TRACKED => {
                    self.durable_answers.insert(a, p.key.clone());
                }
                _ => {}
            }
        }
        done
    }

    /// The batch `seq` could not be written. Everything not yet durable is
    /// undone in `store` (later changes were made on top of it), the
    /// engine's own changes are written again, and the answers that waited
    /// are returned, to be answered 5000.
    pub(crate) fn failed(&mut self, seq: u64, store: &mut Store) -> Vec<Parked> {
        if self.batch_in_flight == Some(seq) {
            self.batch_in_flight = None;
        }
        store.discard_changes();
        let mut redo = Vec::new();
        for u in std::mem::take(&mut self.uncommitted).into_iter().rev() {
            match (u.internal, u.undo) {
                (true, Undo::Csr { ri, .. }) => redo.push(ri),
                (true, Undo::OwnRn(_)) => store.rewrite_own_csr_rn(),
                (_, Undo::Memo(csi)) => store.rewrite_memo(&csi),
                (false, Undo::Csr { ri, old }) => store.revert(&ri, old),
                (false, Undo::OwnRn(old)) => store.revert_own_csr_rn(old),
            }
        }
        for ri in redo {
            store.rewrite(&ri);
        }
        self.track(store.take_undo(), true);
        std::mem::take(&mut self.parked)
    }
}
