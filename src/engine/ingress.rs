//! The way in: a publish on a request or response topic becomes a decoded
//! primitive, a duplicate is recognised (dedupe.rs), and the request is
//! answered here, parked until its change is durable (durability.rs) or
//! forwarded (forwards.rs); an answer completes what it answers. Also the
//! way out for answers: encoded once, bounded by `mqtt.max_payload`.

use super::dedupe::{self, Seen};
use super::durability::Parked;
use super::events::DropReason;
use super::registrar::{mark_partial, Outcome, Page};
use super::store::Answered;
use super::{status, Ack, Engine, Event, Transmit};
use crate::error::Refusal;
use crate::primitive::{Format, Operation, Response, Rsc};
use crate::time::Now;
use crate::topic::Route;
use tracing::debug;

impl Engine {
    pub(super) fn on_request(
        &mut self,
        mut route: Route,
        payload: &[u8],
        ack: Option<Ack>,
        now: Now,
    ) {
        let format = match route.format {
            Ok(f) => f,
            Err(ref suffix) => {
                let suffix = suffix.clone();
                return self.refuse_media_type(route, &suffix, payload, ack);
            }
        };
        let mut req = match format.decode_request(payload) {
            Ok(r) => r,
            Err(e) => {
                // TS-0004 7.3.1: a request that cannot be read is answered
                // 4000 where an answer can reach its originator; a payload
                // that is not even a primitive (no rqi, not an object) is
                // noise and dropped.
                let is_object = format.decode_value(payload).is_ok_and(|v| v.is_object());
                if e.rqi.is_none() && !is_object {
                    self.events.push_back(Event::Dropped {
                        reason: DropReason::UndecodableRequest,
                        why: format!(
                            "an undecodable payload with no rqi on {}: {e}",
                            request_topic(&route)
                        ),
                    });
                    return self.ack_only(ack);
                }
                let rsp = self.own_answer(
                    Rsc::BAD_REQUEST,
                    Asked {
                        rqi: e.rqi.as_deref().unwrap_or_default(),
                        rvi: e.rvi.as_deref(),
                        fr: e.fr.as_deref(),
                    },
                    e.to_string(),
                    Some(now.wall.to_onem2m()),
                );
                self.reply(route, format, &rsp, ack);
                return;
            }
        };
        // Which SP the hop speaks for, before anything is keyed on it.
        let across = self.cross_sp_gate(&mut route, &mut req);
        let fr = req.fr.clone().unwrap_or_default();
        let key = dedupe::key(&route.originator, &fr, &req.rqi);
        if let Some(previous) = self.durability.take_restored(&key) {
            debug!(rqi = %req.rqi, fr = %fr, "redelivery after a restart; answering as before");
            let size = self.reply(route, format, &previous, ack);
            self.registrar
                .store_mut()
                .forget_answer(&key.0, &key.1, &key.2);
            self.recent.remember(key, previous, size);
            return;
        }
        match self.recent.get(&key) {
            Some(Seen::Answered(previous)) => {
                debug!(rqi = %req.rqi, fr = %fr, "duplicate delivery; answering again");
                let previous = (**previous).clone();
                self.reply(route, format, &previous, ack);
                return;
            }
            Some(Seen::InFlight) => {
                debug!(rqi = %req.rqi, fr = %fr, "duplicate delivery of a request in progress");
                return self.ack_only(ack);
            }
            None => {}
        }
        let outcome = if let Some(why) = across.or_else(|| self.wrong_link(&route)) {
            let rsp = Response::error(Rsc::ORIGINATOR_HAS_NO_PRIVILEGE, "", why);
            Outcome::Respond {
                response: self.registrar.answer(&req, rsp, now.wall),
            }
        } else if req.op == Operation::Retrieve && status::is_target(self, &req.to) {
            let rsp = match self.registrar.may_read_status(&req, &route.originator) {
                Ok(()) => {
                    let page =
                        Page::of(&req, self.registrar.answer_budget()).or_lim(status::STATUS_PAGE);
                    let (pc, next) = status::status(self, page);
                    let mut rsp = Response::new(Rsc::OK, "").with_pc(pc);
                    mark_partial(&mut rsp, next);
                    rsp
                }
                Err(refusal) => Response::error(refusal.rsc(), "", refusal.to_string()),
            };
            Outcome::Respond {
                response: self.registrar.answer(&req, rsp, now.wall),
            }
        } else {
            // A peer SP's IN vouches for the CSEs of its SP (the gate
            // checked `fr` is one of them): the registrar sees the CSE
            // that `fr` names as the hop.
            let hop = match crate::id::split_absolute(&route.originator) {
                Some((sp, _)) => match crate::id::speaker_cse(&fr) {
                    Some(cse) => format!("//{sp}{cse}"),
                    None => route.originator.clone(),
                },
                None => route.originator.clone(),
            };
            self.registrar.handle(&req, &hop, now.wall)
        };
        if let Outcome::Respond { response, .. } = &outcome {
            self.learn_sp_from_update(&req, &route.originator, response.rsc, now);
        }
        match outcome {
            Outcome::Respond { response, .. } => {
                let handled = Event::Handled {
                    op: req.op,
                    to: req.to.clone(),
                    fr,
                    rsc: response.rsc,
                    why: response.debug_text().map(str::to_owned),
                };
                let undo = self.registrar.store_mut().take_undo();
                if undo.is_empty() {
                    self.events.push_back(handled);
                    let size = self.reply(route, format, &response, ack);
                    // A local RETRIEVE changes nothing: a repeat is answered
                    // anew, and the cache keeps what must not run twice.
                    if req.op != Operation::Retrieve {
                        self.recent.remember(key, response, size);
                    }
                    return;
                }
                self.durability.track(undo, false);
                // The answer goes into the same batch as the change, so a
                // redelivery after a crash is answered as it was.
                if let Ok(json) = serde_json::to_string(&response) {
                    self.registrar.store_mut().record_answer(Answered {
                        hop: key.0.clone(),
                        fr: key.1.clone(),
                        rqi: key.2.clone(),
                        response: json,
                    });
                }
                self.recent.in_flight(key.clone());
                self.durability
                    .park(Parked::new(route, format, response, key, ack, handled));
            }
            Outcome::Forward { next_hop, request } => {
                self.forward(route, format, request, next_hop, key, ack, now)
            }
        }
    }

    pub(super) fn on_response(&mut self, route: &Route, payload: &[u8], now: Now) {
        let Ok(format) = route.format else {
            return;
        };
        let rsp = match format.decode_response(payload) {
            Ok(r) => r,
            Err(e) => {
                self.events.push_back(Event::Dropped {
                    reason: DropReason::UndecodableResponse,
                    why: format!("undecodable response from {}: {e}", route.receiver),
                });
                return;
            }
        };
        // Only the peer the request went to may answer it.
        match self.forwards.take_answered(&rsp.rqi, &route.receiver) {
            Some(p) => self.complete(p, rsp, now),
            None => {
                debug!(rqi = %rsp.rqi, peer = %route.receiver, "response to no pending request (late or duplicate)");
            }
        }
    }

    /// Queues the answer; returns its encoded size (for the answer cache).
    pub(super) fn reply(
        &mut self,
        to: Route,
        format: Format,
        rsp: &Response,
        ack: Option<Ack>,
    ) -> usize {
        // ACME drops an answer whose `to` is absolute; it is the one that
        // sends to the SP-ID receiver segment (docs/acme.md, "Across SPs").
        let acme_form = self
            .own_sp()
            .is_some_and(|sp| to.receiver.strip_prefix('/') == Some(sp));
        let relative;
        let rsp = match rsp.to.as_deref().and_then(crate::id::split_absolute) {
            Some((_, rel)) if acme_form => {
                relative = Response {
                    to: Some(rel.to_owned()),
                    ..rsp.clone()
                };
                &relative
            }
            _ => rsp,
        };
        let too_large = |size: usize| {
            self.error_instead_of(
                rsp,
                Rsc::INTERNAL_SERVER_ERROR,
                format!("the answer of {size} bytes exceeds mqtt.max_payload; narrow the request (discovery instead of rcn 4/8)"),
            )
        };
        let encoded = format.encode(rsp).and_then(|p| match p.len() {
            n if n > self.max_payload => format.encode(&too_large(n)),
            _ => Ok(p),
        });
        match encoded {
            Ok(payload) => {
                let size = payload.len();
                self.transmits
                    .push_back(Transmit::Response { to, payload, ack });
                size
            }
            Err(e) => {
                self.events.push_back(Event::Dropped {
                    reason: DropReason::UnencodableAnswer,
                    why: format!("cannot encode an answer: {e}"),
                });
                self.ack_only(ack);
                0
            }
        }
    }

    pub(super) fn ack_only(&mut self, ack: Option<Ack>) {
        if let Some(a) = ack {
            self.transmits.push_back(Transmit::Ack(a));
        }
    }

    /// XML (or anything else) cannot be read here: answer 4015 in XML, the
    /// format the originator listens for, when its rqi can be found
    /// (TS-0004 6.6: 4015 UNSUPPORTED_MEDIA_TYPE).
    pub(super) fn refuse_media_type(
        &mut self,
        route: Route,
        suffix: &str,
        payload: &[u8],
        ack: Option<Ack>,
    ) {
        let text = String::from_utf8_lossy(payload);
        let rqi = text
            .split_once("<rqi>")
            .and_then(|(_, rest)| rest.split_once("</rqi>"))
            .map(|(r, _)| r.trim().to_owned());
        match (suffix, rqi) {
            ("xml", Some(rqi)) if !rqi.contains('<') && !rqi.contains('&') => {
                let why = Refusal::UnsupportedMediaType(suffix.to_owned());
                let body = format!(
                    "<m2m:rsp xmlns:m2m=\"http://www.onem2m.org/xml/protocols\"><rsc>{}</rsc><rqi>{rqi}</rqi><pc><m2m:dbg>{why}</m2m:dbg></pc></m2m:rsp>",
                    why.rsc().code()
                );
                self.transmits.push_back(Transmit::Response {
                    to: route,
                    payload: body.into_bytes(),
                    ack,
                });
            }
            _ => {
                self.events.push_back(Event::Dropped {
                    reason: DropReason::UnsupportedSerialization,
                    why: format!("a request in unsupported serialization {suffix:?}"),
                });
                self.ack_only(ack);
            }
        }
    }
}

/// The topic a request came on (for logs: an answer would go on the
/// response topic, TS-0010 6.4.5).
fn request_topic(route: &Route) -> String {
    route
        .response_topic()
        .replacen("/oneM2M/resp/", "/oneM2M/req/", 1)
}

/// What an answer echoes of the request it answers: its rqi and rvi, and
/// its originator, to whom the answer goes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Asked<'a> {
    pub(crate) rqi: &'a str,
    pub(crate) rvi: Option<&'a str>,
    pub(crate) fr: Option<&'a str>,
}

impl<'a> Asked<'a> {
    /// The request `req`.
    pub(crate) fn of(req: &'a crate::primitive::Request) -> Asked<'a> {
        Asked {
            rqi: &req.rqi,
            rvi: req.rvi.as_deref(),
            fr: req.fr.as_deref(),
        }
    }

    /// The request an answer `rsp` answers, as that answer echoes it.
    pub(crate) fn by(rsp: &'a Response) -> Asked<'a> {
        Asked {
            rqi: &rsp.rqi,
            rvi: rsp.rvi.as_deref(),
            fr: rsp.to.as_deref(),
        }
    }
}

impl Engine {
    /// Every answer this node originates (a refusal, a 4008 or 5103 for a
    /// forward, a 5000 of the store, a decode error): like any answer it
    /// echoes rqi and rvi, goes `to` the originator and is `fr` this CSE
    /// (TS-0004 7.2.1.2; docs/protocol.md §2.2). `ot`: its time.
    pub(crate) fn own_answer(
        &self,
        rsc: Rsc,
        asked: Asked<'_>,
        why: impl Into<String>,
        ot: Option<String>,
    ) -> Response {
        let mut r = Response::error(rsc, asked.rqi, why);
        r.rvi = asked.rvi.map(str::to_owned);
        r.to = asked.fr.map(str::to_owned);
        r.fr = Some(self.own.to_string());
        r.ot = ot;
        r
    }

    /// An error answer to the same request as `rsp`, instead of it.
    pub(super) fn error_instead_of(&self, rsp: &Response, rsc: Rsc, why: String) -> Response {
        self.own_answer(rsc, Asked::by(rsp), why, rsp.ot.clone())
    }
}
