//! The SP identity handed down (docs/protocol.md §13.4): a CSE without
//! `cse.sp_id` learns `spi` and `ici` from its registrar (its CSEBase, or
//! an UPDATE of the `<remoteCSE>` this CSE holds for it), shows them in its
//! own CSEBase and, when they change, UPDATEs the `<remoteCSE>` each
//! registree holds for this CSE (`<registree cb>/<own CSE-ID>`, as ACME
//! does), so the whole subtree learns its SP.

use super::forwards::Purpose;
use super::{Engine, Event, Transmit};
use crate::id::CseId;
use crate::primitive::{Format, Operation, Request, Response, Rsc, OWN_RVI};
use crate::time::Now;
use crate::topic::Link;
use serde_json::{json, Value};

impl Engine {
    /// An answer of the registrar: its CSEBase says the SP (`spi`) and, for
    /// an IN-CSE, the root (`ici`, else its `csi`).
    pub(super) fn learn_sp_from_base(&mut self, rsp: &Response, now: Now) {
        let Some(cb) = rsp.pc.as_ref().and_then(|pc| pc.get("m2m:cb")) else {
            return;
        };
        if rsp.rsc != Rsc::OK {
            return;
        }
        let Some(spi) = cb.get("spi").and_then(Value::as_str) else {
            return;
        };
        let is_in = cb.get("cst").and_then(Value::as_u64) == Some(1);
        let ici = cb
            .get("ici")
            .and_then(Value::as_str)
            .or_else(|| {
                is_in
                    .then(|| cb.get("csi").and_then(Value::as_str))
                    .flatten()
            })
            .map(str::to_owned);
        self.learn_sp(spi.to_owned(), ici, now);
    }

    /// The registrar UPDATEd the `<remoteCSE>` this CSE holds for it with
    /// its `spi`/`ici` (it hands its SP down).
    pub(super) fn learn_sp_from_update(&mut self, req: &Request, hop: &str, rsc: Rsc, now: Now) {
        let from_registrar = self
            .upstream
            .as_ref()
            .is_some_and(|u| u.registrar.as_str() == hop);
        if !from_registrar || req.op != Operation::Update || rsc != Rsc::UPDATED {
            return;
        }
        let Some(csr) = req.pc.as_ref().and_then(|pc| pc.get("m2m:csr")) else {
            return;
        };
        if let Some(spi) = csr.get("spi").and_then(Value::as_str) {
            let ici = csr.get("ici").and_then(Value::as_str).map(str::to_owned);
            self.learn_sp(spi.to_owned(), ici, now);
        }
    }

    fn learn_sp(&mut self, spi: String, ici: Option<String>, now: Now) {
        let spi = if spi.starts_with("//") {
            spi
        } else {
            format!("//{spi}")
        };
        if let Some(own) = &self.sp_id {
            let configured = format!("//{own}");
            if configured != spi && !self.sp_mismatch_told {
                self.sp_mismatch_told = true;
                self.events.push_back(Event::SpMismatch {
                    configured,
                    registrar: spi,
                });
            }
            return;
        }
        let learned = Some((spi.clone(), ici.clone()));
        if self.sp_learned == learned {
            return;
        }
        self.sp_learned = learned;
        self.registrar.set_sp_identity(spi.clone(), ici.clone());
        self.events.push_back(Event::SpLearned {
            spi: spi.clone(),
            ici: ici.clone(),
        });
        self.push_sp_down(&spi, ici.as_deref(), now);
    }

    /// UPDATEs, at each registree, the `<remoteCSE>` it holds for this CSE.
    fn push_sp_down(&mut self, spi: &str, ici: Option<&str>, now: Now) {
        if !self.links.is_up(Link::LOCAL) {
            // A registree that registers later reads it from the CSEBase.
            return;
        }
        let targets: Vec<(String, String)> = self
            .registrar
            .store()
            .registrees()
            .filter_map(|(_, c)| Some((c.csi()?.to_owned(), c.cb.clone()?)))
            .filter(|(csi, _)| !csi.starts_with("//"))
            .collect();
        let mut body = json!({ "spi": spi });
        if let Some(ici) = ici {
            body["ici"] = json!(ici);
        }
        for (csi, cb) in targets {
            let Ok(peer) = CseId::new(csi.clone()) else {
                continue;
            };
            let rqi = self.forwards.next_rqi("spi");
            let to = format!("{cb}/{}", self.own.bare());
            let mut req = Request::new(Operation::Update, to, self.own.as_str(), rqi.clone());
            req.rvi = Some(OWN_RVI.into());
            req.ot = Some(now.wall.to_onem2m());
            req.rqet = Some(now.wall.plus(self.forwards.timeout()).to_onem2m());
            req.pc = Some(json!({ "m2m:csr": body.clone() }));
            if let Ok(payload) = Format::Json.encode(&req) {
                self.forwards
                    .add(rqi.clone(), &csi, now.mono, Purpose::Registration);
                self.sp_pushes.insert(rqi);
                self.transmits.push_back(Transmit::Request {
                    to: peer,
                    link: Link::LOCAL,
                    format: Format::Json,
                    payload,
                    ack: None,
                    hop: None,
                });
            }
        }
    }
}

#[cfg(test)]
#[path = "sp_identity_tests.rs"]
mod tests;
