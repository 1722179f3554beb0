//! What this node knows of its next hops beyond the standard
//! (docs/protocol.md §4.4, §5.6): the serialization each declares, and what
//! its registrar refused of the own `<remoteCSE>`.

use super::store::RegistrarMemo;
use super::{Engine, Event};
use crate::id::CseId;
use crate::primitive::{Format, Rsc};

impl Engine {
    /// The serialization of a request to the next hop `hop` that came in
    /// as `incoming` (docs/protocol.md §4.4): one the hop declares in `csz`
    /// (the registrar's `<CSEBase>`, copied into its local CSR at
    /// registration; a registree's own CSR), the incoming one if it is
    /// among them; for a registrar that declares nothing, `[registrar]
    /// serialization`; otherwise JSON. A CSE is never sent CBOR it did not
    /// declare: Mobius, for one, reads "cbor" as hex text and crashes on
    /// binary CBOR (docs/mobius.md).
    pub(super) fn hop_format(&self, hop: &CseId, incoming: Format) -> Format {
        let declared: Vec<Format> = self
            .registrar
            .store()
            .by_csi(hop.as_str())
            .and_then(|(_, c)| c.csz.as_ref())
            .map(|csz| csz.iter().filter_map(|s| Format::from_csz(s)).collect())
            .unwrap_or_default();
        if declared.contains(&incoming) {
            return incoming;
        }
        if let Some(f) = declared.first() {
            return *f;
        }
        match &self.upstream {
            Some(u) if &u.registrar == hop => u.format.unwrap_or(Format::Json),
            _ => Format::Json,
        }
    }

    /// The registrar refused optional attributes of the own CSR: keep that
    /// (it outlives a restart) and say it.
    pub(super) fn attributes_refused(
        &mut self,
        registrar: CseId,
        attributes: Vec<String>,
        answer: Option<(Rsc, String)>,
        memo: RegistrarMemo,
    ) {
        self.registrar
            .store_mut()
            .set_registrar_memo(registrar.as_str(), memo);
        self.take_internal_undo();
        self.events.push_back(Event::AttributesRefused {
            registrar,
            attributes,
            answer,
        });
    }

    /// The deregistration ended, `confirmed` or not: what the event says.
    pub(super) fn deregistered(&self, registrar: CseId, confirmed: bool) -> Event {
        let (csr, default_name) = self
            .registration()
            .map(|m| (m.own_csr(), m.own_csr_has_default_name()))
            .unwrap_or_default();
        Event::Deregistered {
            registrar,
            confirmed,
            csr,
            // The store keeps the CSR's name (a node without one clears a
            // CSR of the default name at every start anyway).
            retried_at_start: !confirmed && (self.durability.is_durable() || default_name),
        }
    }
}

#[cfg(test)]
#[path = "peer_tests.rs"]
mod tests;
