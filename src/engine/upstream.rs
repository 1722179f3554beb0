//! The own registration, seen from the engine: the registration machine
//! (registration.rs) decides; this carries out its actions against the
//! store, the outstanding requests and the wire, and feeds it the
//! descendants that go up as `dcse` (docs/protocol.md §6).

use super::forwards::Purpose;
use super::registration::{Action, Input, OwnCsr, Phase, Registration, RegistreeConfig};
use super::store::RegistrarMemo;
use super::{Engine, Event, Transmit, UpstreamSettings};
use crate::id::CseId;
use crate::primitive::{Format, Response, Rsc};
use crate::resource::CseBase;
use crate::time::Now;
use std::time::Duration;
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
    /// `[registrar] serialization`, for a registrar that declares no `csz`.
    pub(crate) format: Option<Format>,
}

impl Upstream {
    /// The own registration at `registrar`, not started yet; `adopt`: the
    /// local state says a CSR of this CSE is there already (named
    /// `remote_rn`, when known).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        settings: &UpstreamSettings,
        registrar: CseId,
        base: &CseBase,
        descendants: Vec<String>,
        request_timeout: Duration,
        seed: u64,
        adopt: bool,
        remote_rn: Option<String>,
        memo: &RegistrarMemo,
    ) -> Upstream {
        let mut want = OwnCsr::from_cse_base(base, descendants);
        if let Some(poa) = &settings.poa {
            want.poa = poa.clone();
        }
        let mut machine = Registration::new(
            RegistreeConfig {
                own: base.csi.clone(),
                registrar: registrar.clone(),
                registrar_rn: settings.registrar_rn.clone(),
                check_interval: settings.check_interval,
                request_timeout,
                seed,
            },
            want,
        );
        machine.restore(memo);
        Upstream {
            machine,
            start: Some(Input::Start { adopt, remote_rn }),
            registrar,
            own_poa: settings.poa.clone(),
            dcse_dirty: false,
            format: settings.serialization,
        }
    }
}

impl Engine {
    /// Another registrar (config reload; `None`: none any more): the node
    /// deregisters from the one it has, then registers at the new one. The
    /// link toward it stays what it was (a broker of its own needs a
    /// restart).
    pub fn set_registrar(&mut self, registrar: Option<(CseId, UpstreamSettings)>, now: Now) {
        let next = registrar.map(|(id, settings)| {
            let id_str = id.as_str().to_owned();
            let id_str = id_str.as_str();
            Upstream::new(
                &settings,
                id,
                self.registrar.cse_base(),
                self.registrar.store().descendant_ids(),
                self.forwards.timeout(),
                self.seed ^ now.wall.0,
                false,
                None,
                &self.registrar.store().registrar_memo(id_str),
            )
        });
        match &mut self.upstream {
            Some(old) => {
                if let Some(n) = &next {
                    self.events.push_back(Event::RegistrarChanged {
                        from: old.registrar.clone(),
                        to: n.registrar.clone(),
                    });
                }
                self.switch = Some(next);
                old.machine.handle(Input::Shutdown, now);
            }
            None => self.install_upstream(next, now),
        }
        self.flush(now);
    }

    /// Makes `next` the own registration and starts it when its link is up.
    fn install_upstream(&mut self, next: Option<Upstream>, now: Now) {
        let id = next.as_ref().map(|u| u.registrar.clone());
        self.registrar.set_upstream(id);
        self.upstream = next;
        if let Some(u) = &mut self.upstream {
            u.dcse_dirty = true;
            if self.links.is_up(self.links.registrar()) && !self.stopping {
                if let Some(start) = u.start.take() {
                    u.machine.handle(start, now);
                }
            }
        }
    }

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
                self.tally.registration_request(req.op);
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
                            link: self.links.registrar(),
                            format: Format::Json,
                            payload,
                            ack: None,
                            hop: None,
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
            Action::Deregistered { confirmed } => {
                let e = self.deregistered(registrar, confirmed);
                self.events.push_back(e)
            }
            Action::AttributesRefused {
                attributes,
                answer,
                memo,
            } => self.attributes_refused(registrar, attributes, answer, memo),
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
            Action::Stopped => match self.switch.take() {
                Some(next) if !self.stopping => self.install_upstream(next, now),
                _ => {
                    self.stopped = true;
                    self.events.push_back(Event::Stopped);
                }
            },
        }
    }
}
