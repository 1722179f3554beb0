//! Requests this node sends for others and for itself: forwards of
//! requests whose target lies below or above it (docs/protocol.md §4.3),
//! liveness probes of registrees (§7), and the end of each, in its answer
//! or a 4008. What is outstanding is kept by forwards.rs.

use super::dedupe;
use super::forwards::{Pending, Purpose, Relay};
use super::liveness::{ProbeOutcome, Verdict};
use super::upstream::Upstream;
use super::{Ack, Asked, Engine, Event, Removal, Transmit};
use crate::id::CseId;
use crate::primitive::{Format, Operation, Request, Response, Rsc, OWN_RVI};
use crate::time::Now;
use crate::topic::{Link, Route};
use tracing::debug;

impl Engine {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn forward(
        &mut self,
        reply: Route,
        format: Format,
        mut request: Request,
        next_hop: CseId,
        key: dedupe::Key,
        ack: Option<Ack>,
        now: Now,
    ) {
        let across = self.peer_hop(&next_hop, &request);
        let link = match &across {
            Some((link, _)) => *link,
            None => self.links.to(
                next_hop.as_str(),
                self.upstream.as_ref().map(|u| &u.registrar),
            ),
        };
        let admitted = if self.links.is_up(link) {
            self.forwards.admit_forward(
                &reply.originator,
                next_hop.as_str(),
                self.upstream.as_ref().map(|u| u.registrar.as_str()),
            )
        } else {
            Err("not connected to the MQTT broker".to_owned())
        };
        let ot = Some(now.wall.to_onem2m());
        if let Err(why) = admitted {
            let rsp = self.own_answer(Rsc::TARGET_NOT_REACHABLE, Asked::of(&request), why, ot);
            self.reply(reply, format, &rsp, ack);
            return;
        }
        let original = std::mem::replace(&mut request.rqi, self.forwards.next_rqi("fw"));
        // Each hop gets a serialization it declares; the answer goes back
        // in the originator's (`format`, kept in the relay).
        let hop_format = self.hop_format(&next_hop, format);
        let payload = match hop_format.encode(&request) {
            Ok(p) => p,
            Err(e) => {
                request.rqi = original;
                let rsp = self.own_answer(
                    Rsc::INTERNAL_SERVER_ERROR,
                    Asked::of(&request),
                    e.to_string(),
                    ot,
                );
                self.reply(reply, format, &rsp, ack);
                return;
            }
        };
        debug!(to = %request.to, via = %next_hop, rqi = %original, "forwarding");
        self.tally.forwarded();
        self.recent.in_flight(key.clone());
        let (peer, hop) = match across {
            Some((_, hop)) => (hop.to.clone(), Some(hop)),
            None => (next_hop.to_string(), None),
        };
        self.forwards.add(
            request.rqi.clone(),
            &peer,
            now.mono,
            Purpose::Forward(Box::new(Relay {
                reply,
                format,
                rqi: original,
                key,
                rvi: request.rvi.take(),
                fr: request.fr.take(),
            })),
        );
        self.transmits.push_back(Transmit::Request {
            to: next_hop,
            link,
            format: hop_format,
            payload,
            ack,
            hop,
        });
    }

    /// The end of a request this node sent: `rsp` is the answer or a 4008.
    pub(super) fn complete(&mut self, p: Pending, mut rsp: Response, now: Now) {
        match p.purpose {
            Purpose::Registration if self.peer_by_hop(&p.peer).is_some() => {
                for i in self.peers_by_hop(&p.peer) {
                    self.peer_response(i, rsp.clone(), now);
                }
            }
            Purpose::Registration if self.sp_pushes.remove(&rsp.rqi) => {
                debug!(registree = %p.peer, rsc = %rsp.rsc, "SP identity handed down");
            }
            Purpose::Registration => {
                self.learn_sp_from_base(&rsp, now);
                if let Some(Upstream { machine, .. }) = &mut self.upstream {
                    machine.handle(super::Input::Response(rsp), now);
                }
            }
            Purpose::Probe { csi } => {
                let outcome = if self.links.is_up(Link::LOCAL) {
                    ProbeOutcome::Answered(rsp.rsc)
                } else {
                    ProbeOutcome::NoConnection
                };
                let verdict = self.liveness.result(&csi, outcome, now);
                match verdict {
                    Verdict::Alive => self.tally.probe_ended(true),
                    Verdict::Missed(_) | Verdict::Gone => self.tally.probe_ended(false),
                    Verdict::Ignored => {}
                }
                match verdict {
                    Verdict::Gone => self.remove_registree(&csi, rsp.rsc),
                    Verdict::Missed(misses) => self.events.push_back(Event::ProbeMissed {
                        csi,
                        rsc: rsp.rsc,
                        misses,
                    }),
                    Verdict::Alive | Verdict::Ignored => {}
                }
            }
            Purpose::Forward(relay) => {
                let Relay {
                    reply,
                    format,
                    rqi,
                    key,
                    ..
                } = *relay;
                rsp.rqi = rqi;
                self.map_back(&p.peer, &mut rsp, &key.1);
                let size = self.reply(reply, format, &rsp, None);
                self.recent.remember(key, rsp, size);
            }
        }
    }

    /// A request this node sent ends without an answer (`rsc`: 4008 at
    /// its deadline): a forward's originator gets an answer of this node's.
    pub(super) fn unanswered(&mut self, rqi: String, p: Pending, rsc: Rsc, why: String, now: Now) {
        let rsp = match &p.purpose {
            Purpose::Forward(relay) => self.own_answer(
                rsc,
                Asked {
                    rqi: &relay.rqi,
                    rvi: relay.rvi.as_deref(),
                    fr: relay.fr.as_deref(),
                },
                why,
                Some(now.wall.to_onem2m()),
            ),
            _ => Response::error(rsc, rqi, why),
        };
        self.complete(p, rsp, now);
    }

    /// A registree failed its probes: its CSR goes, and with it its
    /// descendants. Not waiting on durability: nobody is answered.
    fn remove_registree(&mut self, csi: &str, rsc: Rsc) {
        let store = self.registrar.store_mut();
        if store.by_csi(csi).is_none() {
            return;
        }
        store.remove_csi(csi);
        self.take_internal_undo();
        self.events.push_back(Event::RegistreeRemoved {
            csi: csi.to_owned(),
            why: Removal::Unresponsive { rsc },
        });
    }

    /// Sends the liveness probes that are due (a RETRIEVE of each
    /// registree's CSEBase), while the local link is up.
    pub(super) fn start_probes(&mut self, now: Now) {
        if !self.links.is_up(Link::LOCAL) || self.stopping {
            return;
        }
        while let Some(csi) = self.liveness.next_due(now.mono) {
            let Some((_, csr)) = self.registrar.store().by_csi(&csi) else {
                self.liveness.result(&csi, ProbeOutcome::NoConnection, now);
                continue;
            };
            let cb = csr.cb.clone().unwrap_or_else(|| csi.clone());
            // A CSE of another SP that registered here is reached on its
            // SP-relative CSE-ID (what ACME listens on) and told this CSE's
            // absolute one (docs/protocol.md §13).
            let (rel, fr) = match crate::id::split_absolute(&csi) {
                Some((_, rel)) => (
                    rel.to_owned(),
                    format!("//{}{}", self.own_sp().unwrap_or_default(), self.own),
                ),
                None => (csi.clone(), self.own.to_string()),
            };
            let Ok(peer) = CseId::new(rel) else {
                self.liveness.result(&csi, ProbeOutcome::NoConnection, now);
                continue;
            };
            let rqi = self.forwards.next_rqi("live");
            let mut req = Request::new(Operation::Retrieve, cb, fr.as_str(), rqi.clone());
            req.rvi = Some(OWN_RVI.into());
            req.ot = Some(now.wall.to_onem2m());
            req.rqet = Some(now.wall.plus(self.forwards.timeout()).to_onem2m());
            match Format::Json.encode(&req) {
                Ok(payload) => {
                    self.tally.probe_sent();
                    self.forwards.add(
                        rqi,
                        peer.as_str(),
                        now.mono,
                        Purpose::Probe { csi: csi.clone() },
                    );
                    self.transmits.push_back(Transmit::Request {
                        to: peer,
                        link: Link::LOCAL,
                        format: Format::Json,
                        payload,
                        ack: None,
                        hop: None,
                    });
                }
                Err(_) => {
                    self.liveness.result(&csi, ProbeOutcome::NoConnection, now);
                }
            }
        }
    }
}
