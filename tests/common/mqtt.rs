//! A oneM2M test client on rumqttc, independent of the node's own transport:
//! it connects with a client id, subscribes to the request and response
//! topics of its originator (TS-0010 6.4), publishes requests on
//! `/oneM2M/req/<orig>/<recv>/<fmt>` and correlates the answers on
//! `/oneM2M/resp/...` by receiver and rqi. Requests to it, and answers that
//! no `request` waits for, come out of the receiver `connect` returns (for
//! stand-in responders and for clients that publish and collect). QoS 1 by
//! default. The codec and the topics are the library's
//! (`m2mnode::primitive`, `m2mnode::topic`).
#![allow(dead_code)]

use m2mnode::primitive::{Format, Request, Response, Rsc};
use m2mnode::topic::{self, Kind, Route};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How to connect.
#[derive(Clone, Debug)]
pub struct Options {
    /// `mqtt://host:port` (the test brokers are plain TCP).
    pub url: String,
    pub client_id: String,
    /// The originator whose topics are subscribed (`/id-x`, `Cxyz`).
    pub own: String,
    pub login: Option<(String, String)>,
    /// In front of `/oneM2M/...` (`mqtt.topic_prefix`).
    pub prefix: String,
    pub qos: QoS,
    /// Clean session off: the broker keeps what arrives while away.
    pub persistent_session: bool,
    /// How long `request` waits for an answer.
    pub timeout: Duration,
    /// More topic filters (e.g. `/oneM2M/req/#` for a spy): what comes in
    /// on them is handed on as [`Incoming`] like the rest.
    pub also: Vec<String>,
}

impl Options {
    pub fn new(url: &str, client_id: impl Into<String>, own: impl Into<String>) -> Options {
        Options {
            url: url.to_owned(),
            client_id: client_id.into(),
            own: own.into(),
            login: None,
            prefix: String::new(),
            qos: QoS::AtLeastOnce,
            persistent_session: false,
            timeout: Duration::from_secs(5),
            also: Vec::new(),
        }
    }
}

/// What comes in that no `request` of this client waits for.
#[derive(Debug)]
pub enum Incoming {
    /// A publish on a request topic addressed to `own`, undecoded.
    Request { route: Route, payload: Vec<u8> },
    /// An answer that matches no pending request (late, or sent by
    /// `publish` rather than `request`).
    Response { route: Route, payload: Vec<u8> },
}

type Pending = Arc<Mutex<HashMap<(String, String), oneshot::Sender<Response>>>>;

#[derive(Clone)]
pub struct MqttClient {
    client: AsyncClient,
    pending: Pending,
    own: String,
    prefix: String,
    qos: QoS,
    timeout: Duration,
    task: Arc<tokio::task::JoinHandle<()>>,
}

/// Far above what any test sends (oversize tests send a few MiB at most).
const PACKET_LIMIT: usize = 64 << 20;

fn host_port(url: &str) -> Result<(String, u16), String> {
    let rest = url
        .strip_prefix("mqtt://")
        .ok_or_else(|| format!("the test client speaks mqtt:// only, not {url}"))?;
    let rest = rest.trim_end_matches('/');
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| format!("no port in {url}"))?;
    let port = port.parse().map_err(|e| format!("port of {url}: {e}"))?;
    Ok((host.trim_matches(['[', ']']).to_owned(), port))
}

impl MqttClient {
    /// Connects and waits (at most `within`) until every subscription is
    /// acknowledged. Call inside a tokio runtime.
    pub async fn connect(
        opts: Options,
        within: Duration,
    ) -> Result<(MqttClient, mpsc::UnboundedReceiver<Incoming>), String> {
        let (host, port) = host_port(&opts.url)?;
        let mut mo = MqttOptions::new(&opts.client_id, host, port);
        mo.set_keep_alive(Duration::from_secs(30))
            .set_clean_session(!opts.persistent_session)
            .set_max_packet_size(PACKET_LIMIT, PACKET_LIMIT)
            .set_inflight(1024);
        if let Some((u, p)) = &opts.login {
            mo.set_credentials(u, p);
        }
        let (client, mut eventloop) = AsyncClient::new(mo, 1024);
        let mut net = rumqttc::NetworkOptions::new();
        net.set_tcp_nodelay(true);
        net.set_connection_timeout(5);
        eventloop.set_network_options(net);
        let pending: Pending = Arc::default();
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = oneshot::channel::<()>();
        let last_error: Arc<Mutex<Option<String>>> = Arc::default();
        let task = {
            let client = client.clone();
            let pending = pending.clone();
            let own = opts.own.clone();
            let prefix = opts.prefix.clone();
            let qos = opts.qos;
            let also = opts.also.clone();
            let last_error = last_error.clone();
            tokio::spawn(async move {
                let mut ready = Some(ready_tx);
                let mut awaiting = 0usize;
                loop {
                    match eventloop.poll().await {
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {
                            // On every CONNACK: a clean session holds no
                            // subscriptions after a broker restart.
                            let mut filters = topic::subscriptions_prefixed(&prefix, &own).to_vec();
                            filters.extend(also.iter().cloned());
                            awaiting = filters.len();
                            for f in filters {
                                let _ = client.try_subscribe(f, qos);
                            }
                        }
                        Ok(Event::Incoming(Packet::SubAck(_))) if awaiting > 0 => {
                            awaiting -= 1;
                            if awaiting == 0 {
                                if let Some(r) = ready.take() {
                                    let _ = r.send(());
                                }
                            }
                        }
                        Ok(Event::Incoming(Packet::Publish(p))) => {
                            let Some(route) = topic::parse_prefixed(&prefix, &p.topic) else {
                                continue;
                            };
                            let payload = p.payload.to_vec();
                            match route.kind {
                                Kind::Request => {
                                    let _ = tx.send(Incoming::Request { route, payload });
                                }
                                Kind::Response => {
                                    let waiting = route.format.as_ref().ok().and_then(|f| {
                                        let rsp = f.decode_response(&payload).ok()?;
                                        let key = (route.receiver.clone(), rsp.rqi.clone());
                                        let done = pending.lock().unwrap().remove(&key)?;
                                        Some((done, rsp))
                                    });
                                    match waiting {
                                        Some((done, rsp)) => {
                                            let _ = done.send(rsp);
                                        }
                                        None => {
                                            let _ = tx.send(Incoming::Response { route, payload });
                                        }
                                    }
                                }
                            }
                        }
                        Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => break,
                        Ok(_) => {}
                        Err(e) => {
                            if matches!(e, rumqttc::ConnectionError::RequestsDone) {
                                break;
                            }
                            // Keep trying (a broker may be starting); say
                            // why if it never works.
                            *last_error.lock().unwrap() = Some(e.to_string());
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            })
        };
        let me = MqttClient {
            client,
            pending,
            own: opts.own,
            prefix: opts.prefix,
            qos: opts.qos,
            timeout: opts.timeout,
            task: Arc::new(task),
        };
        match tokio::time::timeout(within, ready_rx).await {
            Ok(Ok(())) => Ok((me, rx)),
            _ => {
                me.abort();
                let why = last_error.lock().unwrap().take();
                Err(format!(
                    "not connected and subscribed at {} within {within:?}: {}",
                    opts.url,
                    why.as_deref().unwrap_or("no answer")
                ))
            }
        }
    }

    pub fn own(&self) -> &str {
        &self.own
    }

    /// The topic of a request from this client to `receiver`.
    pub fn request_topic(&self, receiver: &str, format: Format) -> String {
        topic::request_topic_prefixed(&self.prefix, &self.own, receiver, format)
    }

    /// Sends `req` to `receiver` and waits for the answer: 4008 when none
    /// comes within the client's timeout, 5103 when it cannot be sent.
    pub async fn request(&self, req: &Request, receiver: &str, format: Format) -> Response {
        let payload = match format.encode(req) {
            Ok(p) => p,
            Err(e) => return Response::error(Rsc::INTERNAL_SERVER_ERROR, &req.rqi, e.to_string()),
        };
        self.exchange(receiver, &req.rqi, format, payload, self.timeout)
            .await
    }

    /// Publishes `payload` (possibly deliberately broken) to `receiver` and
    /// waits for the answer that carries `rqi`.
    pub async fn exchange(
        &self,
        receiver: &str,
        rqi: &str,
        format: Format,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Response {
        let key = (receiver.to_owned(), rqi.to_owned());
        let (done, answer) = oneshot::channel();
        self.pending.lock().unwrap().insert(key.clone(), done);
        let topic = self.request_topic(receiver, format);
        if let Err(e) = self.client.publish(topic, self.qos, false, payload).await {
            self.pending.lock().unwrap().remove(&key);
            return Response::error(
                Rsc::TARGET_NOT_REACHABLE,
                rqi,
                format!("cannot publish: {e}"),
            );
        }
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(rsp)) => rsp,
            _ => {
                self.pending.lock().unwrap().remove(&key);
                Response::error(
                    Rsc::REQUEST_TIMEOUT,
                    rqi,
                    format!("no response from {receiver} within {timeout:?}"),
                )
            }
        }
    }

    /// Publishes on any topic, waiting while the client's queue is full.
    pub async fn publish(&self, topic: impl Into<String>, payload: Vec<u8>) {
        let _ = self
            .client
            .publish(topic.into(), self.qos, false, payload)
            .await;
    }

    /// Answers an incoming request (on its route's response topic).
    pub async fn answer(&self, route: &Route, format: Format, rsp: &Response) {
        if let Ok(bytes) = format.encode(rsp) {
            self.publish(route.response_topic(), bytes).await;
        }
    }

    /// Disconnects after what is queued has gone out.
    pub async fn close(&self) {
        let _ = self.client.disconnect().await;
        for _ in 0..40 {
            if self.task.is_finished() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        self.abort();
    }

    fn abort(&self) {
        self.task.abort();
    }
}
