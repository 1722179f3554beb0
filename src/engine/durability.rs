//! Group commit (docs/protocol.md §10, "nothing acknowledged is lost"): a
//! change is answered only once the batch holding it is durable; a batch
//! that fails is undone in memory and answered 5000; the answer of a change
//! stays durable until its request's PUBACK is written.

use super::*;

pub(super) struct Uncommitted {
    pub(super) batch: Option<u64>,
    pub(super) undo: Undo,
    /// Made by the registration machine, not by a request: it is kept and
    /// written again rather than undone (the machine relies on it).
    pub(super) internal: bool,
}

/// An answer held until its change is durable.
pub(super) struct Parked {
    pub(super) batch: Option<u64>,
    pub(super) reply: Route,
    pub(super) format: Format,
    pub(super) response: Response,
    pub(super) key: dedupe::Key,
    pub(super) ack: Option<Ack>,
    pub(super) handled: Event,
}

impl Engine {
    /// The broker has the PUBACK of the request handed over with `ack`: it
    /// will not come again, and the durable copy of its answer can go.
    pub fn acked(&mut self, ack: Ack) {
        if let Some((hop, fr, rqi)) = self.durable_answers.remove(&ack) {
            self.registrar.store_mut().forget_answer(&hop, &fr, &rqi);
        }
    }

    /// The batch `seq` is durable: its answers go out.
    pub fn store_committed(&mut self, seq: u64, now: Now) {
        if self.batch_in_flight == Some(seq) {
            self.batch_in_flight = None;
        }
        self.uncommitted.retain(|u| u.batch.is_none_or(|b| b > seq));
        let (done, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.parked)
            .into_iter()
            .partition(|p| p.batch.is_some_and(|b| b <= seq));
        self.parked = rest;
        for p in done {
            match p.ack {
                Some(a) if self.durable_answers.len() < DURABLE_ANSWERS_TRACKED => {
                    self.durable_answers.insert(a, p.key.clone());
                }
                _ => {}
            }
            self.events.push_back(p.handled);
            let size = self.reply(p.reply, p.format, &p.response, p.ack);
            self.recent.remember(p.key, p.response, size);
        }
        self.flush(now);
    }

    /// The batch `seq` could not be written. Everything not yet durable is
    /// undone in memory (later changes were made on top of it) and every
    /// request waiting on it is answered 5000 with the reason.
    pub fn store_failed(&mut self, seq: u64, why: &str, now: Now) {
        if self.batch_in_flight == Some(seq) {
            self.batch_in_flight = None;
        }
        self.events.push_back(Event::StoreFailed {
            why: why.to_owned(),
        });
        let store = self.registrar.store_mut();
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
        self.take_internal_undo();
        for p in std::mem::take(&mut self.parked) {
            let mut rsp = error_instead_of(
                &p.response,
                Rsc::INTERNAL_SERVER_ERROR,
                format!("the change could not be stored: {why}"),
            );
            rsp.ot.clone_from(&p.response.ot);
            self.recent.forget(&p.key);
            if let Event::Handled { op, to, fr, .. } = p.handled {
                self.events.push_back(Event::Handled {
                    op,
                    to,
                    fr,
                    rsc: rsp.rsc,
                    why: rsp.debug_text().map(str::to_owned),
                });
            }
            self.reply(p.reply, p.format, &rsp, p.ack);
        }
        self.flush(now);
    }

    /// The next batch of changes to make durable, when none is outstanding.
    pub fn poll_store(&mut self) -> Option<StoreBatch> {
        if self.batch_in_flight.is_some() || !self.registrar.store().has_changes() {
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
        Some(StoreBatch {
            seq,
            changes: self.registrar.store_mut().take_changes(),
        })
    }

    /// Keeps how to undo `undo` until its batch is durable; `internal`:
    /// made by the engine itself, written again instead of undone.
    pub(super) fn track_undo(&mut self, undo: Vec<Undo>, internal: bool) {
        self.uncommitted
            .extend(undo.into_iter().map(|undo| Uncommitted {
                batch: None,
                undo,
                internal,
            }));
    }

    /// Tracks the store's changes since the last call as the engine's own.
    pub(super) fn take_internal_undo(&mut self) {
        let undo = self.registrar.store_mut().take_undo();
        self.track_undo(undo, true);
    }
}
