//! Requests this node sent and waits on: its own registration's, liveness
//! probes, and forwards, which travel with a hop-local rqi so that two
//! originators' identical rqis never meet at the next hop (docs/protocol.md
//! §4.3). Each ends in its answer or, at its deadline, a 4008.

use super::*;

/// A request this node sent and waits on.
pub(super) struct Pending {
    pub(super) peer: String,
    pub(super) deadline: Instant,
    pub(super) purpose: Purpose,
}

pub(super) enum Purpose {
    Registration,
    Probe {
        csi: String,
    },
    /// A request relayed for `reply`'s hop; the answer goes back with the
    /// original rqi. Forwards carry a hop-local rqi so that two originators'
    /// identical rqis never meet at the next hop.
    Forward(Box<Relay>),
}

pub(super) struct Relay {
    pub(super) reply: Route,
    pub(super) format: Format,
    pub(super) rqi: String,
    pub(super) key: dedupe::Key,
}

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
        let refusal = if !self.link_is_up(self.link_to(next_hop.as_str())) {
            Some("not connected to the MQTT broker".to_owned())
        } else if self.forwards >= self.max_forwards {
            Some(format!(
                "{} forwarded requests are awaiting their answer ([limits] forwards_in_flight); try again later",
                self.forwards
            ))
        } else {
            None
        };
        if let Some(why) = refusal {
            let rsp = Response::error(Rsc::TARGET_NOT_REACHABLE, &request.rqi, why);
            self.reply(reply, format, &rsp, ack);
            return;
        }
        let original = std::mem::replace(&mut request.rqi, self.next_rqi("fw"));
        let payload = match format.encode(&request) {
            Ok(p) => p,
            Err(e) => {
                let rsp = Response::error(Rsc::INTERNAL_SERVER_ERROR, &original, e.to_string());
                self.reply(reply, format, &rsp, ack);
                return;
            }
        };
        self.forwards += 1;
        debug!(to = %request.to, via = %next_hop, rqi = %original, "forwarding");
        self.recent.in_flight(key.clone());
        self.add_pending(
            request.rqi.clone(),
            next_hop.as_str(),
            now,
            Purpose::Forward(Box::new(Relay {
                reply,
                format,
                rqi: original,
                key,
            })),
        );
        self.transmits.push_back(Transmit::Request {
            to: next_hop,
            format,
            payload,
            ack,
        });
    }

    pub(super) fn add_pending(&mut self, rqi: String, peer: &str, now: Now, purpose: Purpose) {
        let deadline = now.mono + self.request_timeout;
        self.deadlines.insert((deadline, rqi.clone()));
        self.pending.insert(
            rqi,
            Pending {
                peer: peer.to_owned(),
                deadline,
                purpose,
            },
        );
    }

    pub(super) fn take_pending(&mut self, rqi: &str) -> Option<Pending> {
        let p = self.pending.remove(rqi)?;
        self.deadlines.remove(&(p.deadline, rqi.to_owned()));
        if matches!(p.purpose, Purpose::Forward(_)) {
            self.forwards -= 1;
        }
        Some(p)
    }

    /// The end of a request this node sent: `rsp` is the answer or a 4008.
    pub(super) fn complete(&mut self, p: Pending, mut rsp: Response, now: Now) {
        match p.purpose {
            Purpose::Registration => {
                if let Some(m) = &mut self.registration {
                    m.handle(Input::Response(rsp), now);
                }
            }
            Purpose::Probe { csi } => {
                let outcome = if self.local_up {
                    ProbeOutcome::Answered(rsp.rsc)
                } else {
                    ProbeOutcome::NoConnection
                };
                let verdict = self.liveness.result(&csi, outcome, now);
                match verdict {
                    Verdict::Alive => self.counters.probes_answered += 1,
                    Verdict::Missed(_) | Verdict::Gone => self.counters.probes_missed += 1,
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
                } = *relay;
                rsp.rqi = rqi;
                let size = self.reply(reply, format, &rsp, None);
                self.recent.remember(key, rsp, size);
            }
        }
    }

    pub(super) fn next_rqi(&mut self, kind: &str) -> String {
        self.counter += 1;
        format!("{kind}-{:x}-{}", self.seed & 0xff_ffff, self.counter)
    }
}
