//! The own registration, seen from the engine: the registration machine
//! (registration.rs) decides; this carries out its actions against the
//! store, the outstanding requests and the wire, and feeds it the
//! descendants that go up as `dcse` (docs/protocol.md §6).

use super::forwards::Purpose;
use super::registration::{Action, Input, OwnCsr, Phase, Registration};
use super::{Engine, Event, Transmit};
use crate::id::CseId;
use crate::primitive::{Format, Response, Rsc};
use crate::time::Now;
use tracing::debug;

/// The own registration and what the engine keeps for it.
pub(crate) struct Upstream {
    pub(crate) machine: Registration,
    /// Held until the broker is there: a request sent before would only
    /// fail and cost a backoff.
    pub(crate) start: Option<Input>,
    pub(crate) registrar: CseId,
    /// The own `<remoteCSE>`'s `poa` when it is not the CSEBase's.
    pub(crate) own_poa: Option<Vec<String>>,
    /// The descendants changed since the last `dcse` went up.
    pub(crate) dcse_dirty: bool,
}

impl Engine {
    /// Carries the descendants up as the own CSR's `dcse`: computed only when
    /// the machine can act on it, so a storm of registrations costs one
    /// UPDATE per round trip, not one (and one O(n) list) per registree.
    pub(super) fn feed_dcse(&mut self, now: Now) {
        let Some(up) = &mut self.upstream else {
            return;
        };
        if !up.dcse_dirty
            || matches!(
                up.machine.phase(),
                Phase::Waiting { .. } | Phase::Deregistering { .. }
            )
        {
            return;
        }
        up.dcse_dirty = false;
        let mut want = OwnCsr::from_cse_base(
            self.registrar.cse_base(),
            self.registrar.store().descendant_ids(),
        );
        if let Some(poa) = &up.own_poa {
            want.poa = poa.clone();
        }
        up.machine.handle(Input::OwnCsrChanged(want), now);
    }

    /// Feeds the machine `input` (an answer, or one made up for a request
    /// that could not go out).
    fn feed_machine(&mut self, input: Input, now: Now) {
        if let Some(up) = &mut self.upstream {
            up.machine.handle(input, now);
        }
    }

    pub(super) fn carry_out(&mut self, action: Action, now: Now) {
        let Some(registrar) = self.upstream.as_ref().map(|u| u.registrar.clone()) else {
            return;
        };
        match action {
            Action::Send(req) => {
                if !self.links.is_up(self.links.registrar()) {
                    let rsp = Response::error(
                        Rsc::TARGET_NOT_REACHABLE,
                        &req.rqi,
                        "not connected to the MQTT broker",
                    );
                    return self.feed_machine(Input::Response(rsp), now);
                }
                debug!(op = req.op.name(), to = %req.to, rqi = %req.rqi, "registration request");
                match Format::Json.encode(&req) {
                    Ok(payload) if payload.len() > self.max_payload => {
                        // A local limit, not a lost CSR: say what it is and
                        // keep the registration (the machine retries at the
                        // next check, as for an unreachable registrar).
                        self.events.push_back(Event::OwnRequestTooLarge {
                            op: req.op,
                            bytes: payload.len(),
                            limit: self.max_payload,
                            dcse: self.registrar.store().descendant_ids().len(),
                        });
                        let rsp = Response::error(
                            Rsc::TARGET_NOT_REACHABLE,
                            &req.rqi,
                            "request exceeds mqtt.max_payload",
                        );
                        self.feed_machine(Input::Response(rsp), now);
                    }
                    Ok(payload) => {
                        self.forwards.add(
                            req.rqi.clone(),
                            registrar.as_str(),
                            now.mono,
                            Purpose::Registration,
                        );
                        self.transmits.push_back(Transmit::Request {
                            to: registrar,
                            format: Format::Json,
                            payload,
                            ack: None,
                        });
                    }
                    Err(e) => {
                        let rsp =
                            Response::error(Rsc::INTERNAL_SERVER_ERROR, &req.rqi, e.to_string());
                        self.feed_machine(Input::Response(rsp), now);
                    }
                }
            }
            Action::StoreRegistrarCsr(csr) => {
                let base_ri = self.registrar.cse_base().ri.clone();
                self.registrar.store_mut().put_registrar_csr(
                    registrar.bare(),
                    &base_ri,
                    csr,
                    now.wall.to_onem2m(),
                );
                self.take_internal_undo();
            }
            Action::RemoveRegistrarCsr => {
                self.registrar.store_mut().remove_csi(registrar.as_str());
                self.take_internal_undo();
            }
            Action::RemoteCsrName(rn) => {
                self.registrar.store_mut().set_own_csr_rn(rn);
                self.take_internal_undo();
            }
            Action::Registered => self.events.push_back(Event::Registered { registrar }),
            Action::Deregistered { confirmed } => self.events.push_back(Event::Deregistered {
                registrar,
                confirmed,
            }),
            Action::Retry {
                step,
                retry_in,
                answer,
            } => self.events.push_back(Event::RegistrationRetry {
                step,
                retry_in,
                answer,
            }),
            Action::Squatted { rn, csi } => self.events.push_back(Event::Squatted { rn, csi }),
            Action::Lost { answer } => self
                .events
                .push_back(Event::RegistrationLost { registrar, answer }),
            Action::CheckUnanswered { times } => self
                .events
                .push_back(Event::CheckUnanswered { registrar, times }),
            Action::UpdateRefused { answer } => self.events.push_back(Event::OwnUpdateRefused {
                registrar,
                dcse: self.registrar.store().descendant_count(),
                answer,
            }),
            Action::Stopped => {
                self.stopped = true;
                self.events.push_back(Event::Stopped);
            }
        }
    }
}
