//! The client side of the MQTT binding, for `m2mnode request`, `status`
//! and the demo: publish a request, wait for the answer that carries its
//! rqi on the response topic (docs/protocol.md §1.3). A node never uses
//! this: its engine correlates its own requests (engine/forwards.rs).

use crate::primitive::{Format, Request, Response, Rsc};
use crate::transport::mqtt::{Incoming, Transport};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

/// (receiver, rqi) of a request waiting for its answer.
type Key = (String, String);
type Waiting = Arc<Mutex<HashMap<Key, oneshot::Sender<Response>>>>;

/// Why a request got no answer (as opposed to an answer with an error
/// status, which is a [`Response`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoAnswer {
    #[error("not connected to the MQTT broker")]
    NotConnected,
    #[error("{0}")]
    Unsendable(String),
    #[error("cannot publish: {0}")]
    Unpublished(String),
    /// Published, and nothing came back in time.
    #[error("no response from {receiver} within {}", humantime::format_duration(*.waited))]
    Silence { receiver: String, waited: Duration },
}

impl NoAnswer {
    /// The answer a node gives in place of the missing one: 5103 when
    /// nothing went out, 4008 when nothing came back (TS-0004 6.6).
    pub fn into_response(self, rqi: &str) -> Response {
        let rsc = match &self {
            NoAnswer::NotConnected | NoAnswer::Unpublished(_) => Rsc::TARGET_NOT_REACHABLE,
            NoAnswer::Unsendable(_) => Rsc::INTERNAL_SERVER_ERROR,
            NoAnswer::Silence { .. } => Rsc::REQUEST_TIMEOUT,
        };
        Response::error(rsc, rqi, self.to_string())
    }
}

/// A connected one-shot client.
pub struct Client {
    transport: Transport,
    waiting: Waiting,
}

fn lock(w: &Waiting) -> std::sync::MutexGuard<'_, HashMap<Key, oneshot::Sender<Response>>> {
    // A poisoned map is still a valid map: keep serving.
    w.lock().unwrap_or_else(|p| p.into_inner())
}

impl Client {
    /// A client over a started `transport` and what it receives: answers
    /// complete the requests that wait for them; the rest is ignored.
    pub fn new(transport: Transport, mut incoming: mpsc::Receiver<Incoming>) -> Client {
        let waiting = Waiting::default();
        let w = waiting.clone();
        tokio::spawn(async move {
            while let Some(msg) = incoming.recv().await {
                let Incoming::Response { route, payload } = msg else {
                    continue;
                };
                let Ok(format) = route.format else {
                    continue;
                };
                match format.decode_response(&payload) {
                    Ok(rsp) => match lock(&w).remove(&(route.receiver.clone(), rsp.rqi.clone())) {
                        Some(done) => {
                            let _ = done.send(rsp);
                        }
                        None => {
                            debug!(rqi = %rsp.rqi, peer = %route.receiver, "response to no pending request (late or duplicate)")
                        }
                    },
                    Err(e) => debug!(peer = %route.receiver, error = %e, "undecodable response"),
                }
            }
        });
        Client { transport, waiting }
    }

    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    pub async fn close(&self) {
        self.transport.close().await;
    }

    /// Sends `req` to the CSE `receiver` (the next hop) and waits for the
    /// answer. Never fails: no broker is 5103, no answer in time is 4008.
    pub async fn request(&self, req: &Request, receiver: &str, format: Format) -> Response {
        match self.ask(req, receiver, format).await {
            Ok(rsp) => rsp,
            Err(e) => e.into_response(&req.rqi),
        }
    }

    /// Sends `req` to `receiver` and waits for the answer: whatever answer
    /// carries its `rqi` on the response topic, however little else it
    /// holds (a relayed 4008 may have no `rvi`, `to` or `fr`); `Err` only
    /// when nothing came back or nothing could be sent.
    pub async fn ask(
        &self,
        req: &Request,
        receiver: &str,
        format: Format,
    ) -> Result<Response, NoAnswer> {
        if !self.transport.is_connected() {
            return Err(NoAnswer::NotConnected);
        }
        let payload = format
            .encode(req)
            .map_err(|e| NoAnswer::Unsendable(e.to_string()))?;
        let key = (receiver.to_owned(), req.rqi.clone());
        let (done, answer) = oneshot::channel();
        lock(&self.waiting).insert(key.clone(), done);
        if let Err(e) = self.transport.publish_request(receiver, format, payload) {
            lock(&self.waiting).remove(&key);
            return Err(NoAnswer::Unpublished(e));
        }
        let timeout = self.transport.timeout();
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(rsp)) => Ok(rsp),
            _ => {
                lock(&self.waiting).remove(&key);
                Err(NoAnswer::Silence {
                    receiver: receiver.to_owned(),
                    waited: timeout,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_and_an_answer_are_told_apart() {
        let silence = NoAnswer::Silence {
            receiver: "/id-in".into(),
            waited: Duration::from_secs(2),
        };
        assert_eq!(silence.to_string(), "no response from /id-in within 2s");
        let rsp = silence.into_response("r1");
        assert_eq!((rsp.rsc, rsp.rqi.as_str()), (Rsc::REQUEST_TIMEOUT, "r1"));
        assert_eq!(
            NoAnswer::NotConnected.into_response("r2").rsc,
            Rsc::TARGET_NOT_REACHABLE
        );
    }
}
