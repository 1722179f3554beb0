//! The MQTT binding on rumqttc (TS-0010; pitfalls: docs/protocol.md §9).
//!
//! One task owns the rumqttc `EventLoop` and never awaits the client (that
//! deadlocks when the request channel is full): it resubscribes on every
//! CONNACK without a session, completes pending requests from response
//! topics, hands request publishes to the node over a bounded channel, and
//! backs off with jitter between reconnects (poll() alone retries in a tight
//! loop). Everything else publishes with `try_publish`, so a dead broker can
//! block nobody: a request then ends at once as 5103. rumqttc is vendored
//! with one patch: what the client has queued goes out in one flush, so an
//! answer and its request's PUBACK leave in one write (issue 23,
//! vendor/rumqttc/PATCHES.md, docs/benchmarks.md "The wire path").

use super::ack_order::AckOrder;
use crate::config::BrokerUrl;
use crate::engine::{Dropped, LinkReport};
use crate::primitive::Format;
use crate::topic::{self, Kind, Link, Route};
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, NetworkOptions, Packet, QoS,
};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tracing::debug;

/// Everything the transport needs to know; built from the config by the node
/// or by `m2mnode request`.
#[derive(Clone, Debug)]
pub struct Settings {
    pub broker: BrokerUrl,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub keep_alive: Duration,
    pub qos: u8,
    pub max_payload: usize,
    pub timeout: Duration,
    /// The ID whose request and response topics are subscribed (a CSE-ID,
    /// or whatever `m2mnode request --from` names).
    pub own: String,
    /// More IDs this client is addressed by, whose request and response
    /// topics are subscribed too: the own absolute CSE-ID and SP-ID
    /// toward other SPs (docs/protocol.md §13.2).
    pub also: Vec<String>,
    /// Clean session off (TS-0010 6.3.3); `m2m request` turns it on so a
    /// one-shot client leaves nothing queued at the broker.
    pub persistent_session: bool,
    /// Acknowledge a QoS 1 request only when told ([`Transport::ack`]), i.e.
    /// once it is answered and durable: the broker's in-flight window then
    /// bounds what the node holds and the broker queues the rest; after a
    /// crash it redelivers what was not acknowledged (docs/protocol.md §9).
    /// Responses that match no [`Transport::request`] are handed on as
    /// [`Incoming::Response`].
    pub node: bool,
    /// In front of `/oneM2M/...` in every topic (`mqtt.topic_prefix`).
    pub topic_prefix: String,
    /// Which of the node's links this connection is: routes of what comes
    /// in are marked with it, and so are ack tokens (their top bit).
    pub link: Link,
    /// Seeds the reconnect jitter (the node passes its start seed, so
    /// nodes restarted together do not retry in step).
    pub seed: u64,
}

impl Settings {
    /// A plain client: no credentials or TLS, QoS 1, clean session, 1 MiB cap.
    pub fn client(
        broker: BrokerUrl,
        client_id: impl Into<String>,
        own: impl Into<String>,
        timeout: Duration,
    ) -> Settings {
        Settings {
            broker,
            client_id: client_id.into(),
            username: None,
            password: None,
            ca_file: None,
            client_cert: None,
            client_key: None,
            keep_alive: Duration::from_secs(30),
            qos: 1,
            max_payload: 1 << 20,
            timeout,
            own: own.into(),
            also: Vec::new(),
            persistent_session: false,
            node: false,
            topic_prefix: String::new(),
            link: Link::LOCAL,
            seed: std::process::id().into(),
        }
    }
}

/// What the transport hands to the node.
#[derive(Debug)]
pub enum Incoming {
    /// A publish on a request topic, undecoded; `ack`: acknowledge it with
    /// [`Transport::ack`] once done (node mode, QoS 1).
    /// The payload is rumqttc's buffer, handed on without a copy.
    Request {
        route: Route,
        payload: bytes::Bytes,
        ack: Option<u64>,
    },
    /// A publish on a response topic that no [`Transport::request`] waits
    /// for (node mode).
    Response {
        route: Route,
        payload: bytes::Bytes,
    },
    /// A publish that never reached the engine as a message: too large
    /// for `max_payload`, or on a topic that is not oneM2M. It was
    /// acknowledged; the engine counts and tells it.
    Dropped {
        topic: String,
        why: Dropped,
    },
    /// What the connection went through, for the engine to judge (node
    /// mode; a one-shot client reads [`Transport::last_failure`]).
    Report(LinkReport),
    /// Connected (again) and subscribed.
    Connected,
    Disconnected,
    /// The PUBACK of a request handed over with this `ack` token has been
    /// written to the broker (node mode): only now will the broker not
    /// redeliver it.
    Acked(u64),
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot read {0}: {1}")]
    File(PathBuf, std::io::Error),
    #[error("TLS needs mqtt.ca_file (e.g. /etc/ssl/certs/ca-certificates.crt for public CAs)")]
    NoCa,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Setup(#[from] TransportError),
    #[error("cannot reach the MQTT broker at {url}: {why}")]
    NoBroker { url: String, why: String },
}

/// What kind of failure ended a connection attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// CONNACK 4 or 5: the broker does not take these credentials.
    LoginRefused,
    /// Another CONNACK refusal (protocol version, client id, unavailable).
    Refused,
    /// The TLS handshake failed (certificate, CA, or not TLS at all).
    Tls,
    /// Nothing listens, no route, a timeout.
    Network,
    /// The peer closed or spoke something that is not MQTT (often a TLS
    /// port reached with mqtt://).
    Protocol,
}

/// A failed connection attempt: its kind and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    pub text: String,
}

impl Failure {
    fn of(e: &ConnectionError) -> Failure {
        use rumqttc::ConnectReturnCode as C;
        let (kind, text) = match e {
            ConnectionError::ConnectionRefused(code) => {
                let why = match code {
                    C::BadUserNamePassword => "bad user name or password",
                    C::NotAuthorized => "not authorized",
                    C::BadClientId => "client id rejected",
                    C::ServiceUnavailable => "server unavailable",
                    C::RefusedProtocolVersion => "unacceptable protocol version",
                    C::Success => "accepted",
                };
                let kind = if matches!(code, C::BadUserNamePassword | C::NotAuthorized) {
                    FailureKind::LoginRefused
                } else {
                    FailureKind::Refused
                };
                // MQTT 3.1.1 §3.2.2.3: the CONNACK return code is all the
                // reason the broker gives.
                (kind, format!("{why} (CONNACK return code {})", *code as u8))
            }
            ConnectionError::Tls(_) => (FailureKind::Tls, e.to_string()),
            ConnectionError::Io(io) => {
                let text = e.to_string();
                let kind = if text.contains("certificate")
                    || text.contains("peer sent")
                    || text.contains("corrupt message")
                    || text.contains("InvalidContentType")
                    || text.contains("HandshakeFailure")
                {
                    FailureKind::Tls
                } else {
                    match io.kind() {
                        std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::UnexpectedEof
                        | std::io::ErrorKind::InvalidData => FailureKind::Protocol,
                        _ => FailureKind::Network,
                    }
                };
                (kind, text)
            }
            ConnectionError::MqttState(_) | ConnectionError::NotConnAck(_) => {
                (FailureKind::Protocol, e.to_string())
            }
            _ => (FailureKind::Network, e.to_string()),
        };
        Failure { kind, text }
    }
}

#[derive(Clone)]
pub struct Transport {
    client: AsyncClient,
    connected: Arc<AtomicBool>,
    settings: Arc<Settings>,
    shutdown: watch::Sender<bool>,
    last_error: Arc<Mutex<Option<Failure>>>,
    /// Set by [`Transport::close`]: what the connection does from then on
    /// (the broker closing it after our DISCONNECT) is no failure.
    closing: Arc<AtomicBool>,
    /// Set when the event-loop task has ended.
    finished: watch::Sender<bool>,
    /// Counts connections: an acknowledgement is only valid on the
    /// connection its publish came in on.
    epoch: Arc<AtomicU64>,
    /// PUBACKs go out in the order their publishes came in (node mode).
    acks: Arc<Mutex<AckOrder>>,
}

/// A connection closed by the broker sooner than this after it was accepted
/// counts towards a suspected client-id takeover.
const TAKEOVER_WINDOW: Duration = Duration::from_secs(3);
/// The reconnect backoff while a takeover is suspected.
const TAKEOVER_BACKOFF: Duration = Duration::from_secs(30);

/// QoS 1 publishes of this client awaiting the broker's PUBACK, at most.
/// rumqttc takes nothing from its queue while this is full, and the node's
/// PUBACKs of requests wait in that queue behind their answers and leave in
/// the same write (vendor/rumqttc/PATCHES.md). Even so, under a flood of
/// requests rumqttc's loop alternates between reading and writing a batch
/// of at most 64, so PUBACKs can lag behind answers: the node keeps the
/// answer of every change durable until the PUBACK is written
/// ([`Incoming::Acked`]).
const OUTGOING_INFLIGHT: u16 = 4096;

/// Incoming messages the node may hold before the event loop stops reading
/// the socket (backpressure: the broker keeps the rest).
const INCOMING_CAPACITY: usize = 1024;

/// The top byte of an ack token names its link (several transports hand
/// their tokens to one engine); below it, the connection epoch and the pkid.
const LINK_SHIFT: u32 = 56;

fn ack_token(link: Link, epoch: u64, pkid: u16) -> u64 {
    (u64::from(link.0) << LINK_SHIFT) | ((epoch << 16) & ((1 << LINK_SHIFT) - 1)) | u64::from(pkid)
}

/// The link an ack token of [`Transport`] belongs to.
pub fn token_link(token: u64) -> Link {
    Link((token >> LINK_SHIFT) as u8)
}

fn token_epoch(token: u64) -> u64 {
    (token & ((1 << LINK_SHIFT) - 1)) >> 16
}

fn token_pkid(token: u64) -> u16 {
    (token & 0xffff) as u16
}

/// The PUBACK of the publish `pkid` (the client only reads its pkid).
fn puback(pkid: u16) -> rumqttc::Publish {
    let mut p = rumqttc::Publish::new("", QoS::AtLeastOnce, Vec::new());
    p.pkid = pkid;
    p
}

/// What the client reads at all: well above what a broker configured as in
/// `mosquitto/` delivers (max_packet_size), so that an oversize message
/// is read, acknowledged and dropped, and costs no other message.
fn incoming_limit(max_payload: usize) -> usize {
    max_payload.saturating_mul(16).max(16 << 20)
}

fn qos(level: u8) -> QoS {
    if level == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    }
}

impl Transport {
    /// Starts the event-loop task. Connecting happens in the background; the
    /// receiver sees `Connected` once the subscriptions are placed.
    pub fn start(
        settings: Settings,
    ) -> Result<(Transport, mpsc::Receiver<Incoming>), TransportError> {
        let b = &settings.broker;
        // For WebSocket, rumqttc takes the whole URL as the address.
        let addr = if b.ws {
            let host = if b.host.contains(':') {
                format!("[{}]", b.host)
            } else {
                b.host.clone()
            };
            let scheme = if b.tls { "wss" } else { "ws" };
            format!("{scheme}://{host}:{}{}", b.port, b.path)
        } else {
            b.host.clone()
        };
        let mut opts = MqttOptions::new(&settings.client_id, addr, b.port);
        opts.set_keep_alive(settings.keep_alive)
            .set_clean_session(!settings.persistent_session)
            // Incoming packets up to 4x the cap are read and dropped by the
            // node with a log line; larger ones cost a session purge (below).
            .set_max_packet_size(
                incoming_limit(settings.max_payload),
                settings.max_payload + 1024,
            )
            .set_request_channel_capacity(256)
            .set_inflight(OUTGOING_INFLIGHT)
            .set_manual_acks(settings.node);
        let user = settings
            .username
            .clone()
            .or_else(|| settings.broker.username.clone());
        let pass = settings
            .password
            .clone()
            .or_else(|| settings.broker.password.clone());
        if let Some(u) = user {
            opts.set_credentials(u, pass.unwrap_or_default());
        }
        if settings.broker.tls {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let read =
                |p: &PathBuf| std::fs::read(p).map_err(|e| TransportError::File(p.clone(), e));
            let ca = read(settings.ca_file.as_ref().ok_or(TransportError::NoCa)?)?;
            let client_auth = match (&settings.client_cert, &settings.client_key) {
                (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
                _ => None,
            };
            let tls = rumqttc::TlsConfiguration::Simple {
                ca,
                alpn: None,
                client_auth,
            };
            opts.set_transport(if settings.broker.ws {
                rumqttc::Transport::wss_with_config(tls)
            } else {
                rumqttc::Transport::tls_with_config(tls)
            });
        } else if settings.broker.ws {
            opts.set_transport(rumqttc::Transport::Ws);
        }
        let (client, mut eventloop) = AsyncClient::new(opts, 256);
        let mut net = NetworkOptions::new();
        // A QoS 1 round trip otherwise waits ~40 ms on Nagle + delayed ACK.
        net.set_tcp_nodelay(true);
        net.set_connection_timeout(5);
        eventloop.set_network_options(net);

        let (tx, rx) = mpsc::channel(INCOMING_CAPACITY);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let t = Transport {
            client,
            connected: Arc::default(),
            settings: Arc::new(settings),
            shutdown,
            last_error: Arc::default(),
            closing: Arc::default(),
            finished: watch::channel(false).0,
            epoch: Arc::default(),
            acks: Arc::default(),
        };
        tokio::spawn(t.clone().drive(eventloop, tx, shutdown_rx));
        Ok((t, rx))
    }

    /// Starts and waits until connected and subscribed, at most `within`.
    pub async fn connect(
        settings: Settings,
        within: Duration,
    ) -> Result<(Transport, mpsc::Receiver<Incoming>), ConnectError> {
        let url = settings.broker.poa();
        let (t, mut rx) = Transport::start(settings)?;
        let connected = tokio::time::timeout(within, async {
            while let Some(ev) = rx.recv().await {
                if matches!(ev, Incoming::Connected) {
                    return true;
                }
            }
            false
        })
        .await;
        if connected == Ok(true) {
            return Ok((t, rx));
        }
        let why = t.last_error().unwrap_or_else(|| "no answer".into());
        t.close().await;
        Err(ConnectError::NoBroker { url, why })
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    pub fn own(&self) -> &str {
        &self.settings.own
    }

    /// The topic of a request from this client to `receiver`.
    pub fn request_topic(&self, receiver: &str, format: Format) -> String {
        topic::request_topic_prefixed(
            &self.settings.topic_prefix,
            &self.settings.own,
            receiver,
            format,
        )
    }

    /// The topic of a request between the IDs `hop` names (a hop to
    /// another SP, whose topics may name this client otherwise).
    pub fn request_topic_between(&self, from: &str, to: &str, format: Format) -> String {
        topic::request_topic_prefixed(&self.settings.topic_prefix, from, to, format)
    }

    /// Why the last connection attempt failed, for a clear CLI message.
    pub fn last_error(&self) -> Option<String> {
        self.last_failure().map(|f| f.text)
    }

    /// Why the last connection attempt failed, classified.
    pub fn last_failure(&self) -> Option<Failure> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Publishes a request to `receiver` now, if the client takes it
    /// (the client side, src/client.rs, waits for the answer).
    pub fn publish_request(
        &self,
        receiver: &str,
        format: Format,
        payload: Vec<u8>,
    ) -> Result<(), String> {
        if payload.len() > self.settings.max_payload {
            return Err(format!(
                "request of {} bytes exceeds mqtt.max_payload ({})",
                payload.len(),
                self.settings.max_payload
            ));
        }
        let topic = self.request_topic(receiver, format);
        self.client
            .try_publish(topic, qos(self.settings.qos), false, payload)
            .map_err(|e| e.to_string())
    }

    /// How long a request of this client may wait for its answer.
    pub fn timeout(&self) -> Duration {
        self.settings.timeout
    }

    /// Publishes `payload` if the client's queue has room now; gives it back
    /// if not (the caller then waits with [`Transport::publish_wait`]).
    pub fn try_publish_now(&self, topic: &str, payload: Vec<u8>) -> Result<(), Vec<u8>> {
        if payload.len() > self.settings.max_payload {
            // The engine bounds what it sends by max_payload (ingress.rs):
            // this is a guard, not a decision.
            debug!(%topic, bytes = payload.len(), "message exceeds mqtt.max_payload; not sent");
            return Ok(());
        }
        match self
            .client
            .try_publish(topic, qos(self.settings.qos), false, payload)
        {
            Ok(()) => Ok(()),
            Err(rumqttc::ClientError::TryRequest(rumqttc::Request::Publish(p))) => {
                Err(p.payload.to_vec())
            }
            Err(e) => {
                // Only a client that is shutting down refuses a publish.
                debug!(%topic, error = %e, "cannot publish");
                Ok(())
            }
        }
    }

    /// Publishes `payload`, waiting while the client's queue is full (never
    /// dropping it). Call from a task that is not the event loop's.
    pub async fn publish_wait(&self, topic: String, payload: Vec<u8>) {
        if payload.len() > self.settings.max_payload {
            // The engine bounds what it sends by max_payload (ingress.rs):
            // this is a guard, not a decision.
            debug!(%topic, bytes = payload.len(), "message exceeds mqtt.max_payload; not sent");
            return;
        }
        if let Err(e) = self
            .client
            .publish(&topic, qos(self.settings.qos), false, payload)
            .await
        {
            // Only a client that is shutting down refuses a publish.
            debug!(%topic, error = %e, "cannot publish");
        }
    }

    /// Acknowledges a request handed over as [`Incoming::Request`] with
    /// `ack`, in turn (ack_order.rs): its PUBACK and those due after it go
    /// to the client while it has room, and the event loop hands on the
    /// rest as room appears. Never waits, so the event loop's task may call
    /// it too. One from an earlier connection is skipped: the broker
    /// redelivers that publish, and dedupe answers it again.
    pub fn ack(&self, token: u64) {
        if token_epoch(token) != self.epoch.load(Ordering::Acquire) {
            return;
        }
        self.lock_acks().done(token_pkid(token));
        self.send_ready_acks();
    }

    /// Hands the PUBACKs that are due, in order, to the client while it has
    /// room; the first that finds none stays first in line.
    fn send_ready_acks(&self) {
        let mut order = self.lock_acks();
        while let Some(pkid) = order.next_ready() {
            if let Err(rumqttc::ClientError::TryRequest(_)) = self.client.try_ack(&puback(pkid)) {
                return;
            }
            // Sent, or a client that is shutting down: done either way.
            order.sent();
        }
    }

    fn lock_acks(&self) -> std::sync::MutexGuard<'_, AckOrder> {
        self.acks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Disconnects cleanly (after what is queued has gone out) and stops the
    /// task. The broker closing the connection after our DISCONNECT is
    /// expected and not reported (MQTT 3.1.1 §3.14: the server closes the
    /// network connection on DISCONNECT).
    pub async fn close(&self) {
        self.closing.store(true, Ordering::Release);
        let mut finished = self.finished.subscribe();
        if self.is_connected() && self.client.try_disconnect().is_ok() {
            // The task ends once DISCONNECT is written (or the link drops).
            let _ =
                tokio::time::timeout(Duration::from_millis(500), finished.wait_for(|done| *done))
                    .await;
        }
        let _ = self.shutdown.send(true);
    }

    async fn drive(
        self,
        mut eventloop: EventLoop,
        tx: mpsc::Sender<Incoming>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut failures: u32 = 0;
        // Connections the broker closed within seconds of accepting them: the
        // mark of a client-id takeover (another client with this id).
        let mut connected_at: Option<std::time::Instant> = None;
        let mut quick_drops: u32 = 0;
        let mut awaiting_subacks = 0usize;
        let mut seed = self.settings.seed | 1;
        loop {
            if self.settings.node {
                // PUBACKs that found no room in the client's queue: each
                // event may have made some.
                self.send_ready_acks();
            }
            let event = tokio::select! {
                ev = eventloop.poll() => ev,
                _ = shutdown.changed() => break,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    failures = 0;
                    connected_at = Some(std::time::Instant::now());
                    // Back to the persistent session after a purge (below).
                    eventloop
                        .mqtt_options
                        .set_clean_session(!self.settings.persistent_session);
                    self.connected.store(true, Ordering::Release);
                    self.report(
                        &tx,
                        LinkReport::Connected {
                            broker: self.settings.broker.poa(),
                            session_present: ack.session_present,
                        },
                    )
                    .await;
                    self.epoch.fetch_add(1, Ordering::AcqRel);
                    self.lock_acks().reset();
                    // Subscribe on every CONNACK, session or not: a session
                    // left by another client with this id (or a takeover
                    // that unsubscribed) holds none of ours, and the node
                    // would be deaf (docs/protocol.md §9). It costs a packet.
                    let mut filters = topic::subscriptions_prefixed(
                        &self.settings.topic_prefix,
                        &self.settings.own,
                    )
                    .to_vec();
                    for id in &self.settings.also {
                        filters.extend(topic::subscriptions_prefixed(
                            &self.settings.topic_prefix,
                            id,
                        ));
                    }
                    awaiting_subacks = filters.len();
                    for filter in filters {
                        if let Err(e) = self.client.try_subscribe(filter, qos(self.settings.qos)) {
                            let why = e.to_string();
                            self.report(&tx, LinkReport::CannotSubscribe { why }).await;
                        }
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(_))) if awaiting_subacks > 0 => {
                    awaiting_subacks -= 1;
                    if awaiting_subacks == 0 {
                        let _ = tx.send(Incoming::Connected).await;
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let ack = (self.settings.node && p.qos != QoS::AtMostOnce).then(|| {
                        self.lock_acks().received(p.pkid);
                        ack_token(
                            self.settings.link,
                            self.epoch.load(Ordering::Acquire),
                            p.pkid,
                        )
                    });
                    self.on_publish(&p.topic, p.payload, ack, &tx).await
                }
                Ok(Event::Outgoing(rumqttc::Outgoing::PubAck(pkid))) if self.settings.node => {
                    let token =
                        ack_token(self.settings.link, self.epoch.load(Ordering::Acquire), pkid);
                    let _ = tx.send(Incoming::Acked(token)).await;
                }
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => {
                    self.connected.store(false, Ordering::Release);
                    if self.closing.load(Ordering::Acquire) {
                        // Written and flushed: nothing more to read.
                        break;
                    }
                }
                Ok(_) => {}
                Err(ConnectionError::MqttState(rumqttc::StateError::Deserialization(
                    rumqttc::Error::PayloadSizeLimitExceeded(size),
                ))) => {
                    // Only a broker without a message size limit delivers this.
                    // It would deliver the same message again on every
                    // reconnect of this session (rumqttc #614) and the node
                    // would never hear anything else: as a last resort,
                    // reconnect once with a clean session to drop it.
                    let limit = incoming_limit(self.settings.max_payload);
                    self.report(&tx, LinkReport::SessionPurged { size, limit })
                        .await;
                    self.connected.store(false, Ordering::Release);
                    let _ = tx.send(Incoming::Disconnected).await;
                    eventloop.mqtt_options.set_clean_session(true);
                }
                Err(e) if self.closing.load(Ordering::Acquire) || *shutdown.borrow() => {
                    // Our own DISCONNECT (or the end of the node): the
                    // broker closing the connection is the expected answer.
                    debug!(error = %e, "MQTT connection closed");
                    break;
                }
                Err(e) => {
                    let failure = Failure::of(&e);
                    *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(failure.clone());
                    let was_connected = self.connected.swap(false, Ordering::AcqRel);
                    let short_lived = connected_at
                        .take()
                        .is_some_and(|t| t.elapsed() < TAKEOVER_WINDOW);
                    if was_connected && short_lived {
                        quick_drops += 1;
                    } else if was_connected {
                        quick_drops = 0;
                    }
                    let report = if was_connected && quick_drops >= 3 {
                        LinkReport::Takeover {
                            client_id: self.settings.client_id.clone(),
                            drops: quick_drops,
                            why: e.to_string(),
                        }
                    } else if was_connected {
                        LinkReport::Lost { why: e.to_string() }
                    } else if failure.kind == FailureKind::LoginRefused {
                        LinkReport::LoginRefused {
                            broker: self.settings.broker.poa(),
                            user: self.login_name().map(str::to_owned),
                            why: failure.text,
                        }
                    } else {
                        LinkReport::Unreachable {
                            broker: self.settings.broker.poa(),
                            why: failure.text,
                        }
                    };
                    if !matches!(e, ConnectionError::RequestsDone) {
                        self.report(&tx, report).await;
                    }
                    if was_connected {
                        let _ = tx.send(Incoming::Disconnected).await;
                    }
                    if *shutdown.borrow() {
                        break;
                    }
                    failures = failures.saturating_add(1);
                    if quick_drops >= 3 {
                        // Two clients with one id kick each other off many
                        // times a second; back off far enough to stop that.
                        failures = failures.max(quick_drops.min(12));
                    }
                    // 100 ms doubling to 5 s, ±25 % jitter: fast back after a
                    // broker restart, no CPU storm while it is away.
                    let cap = if quick_drops >= 3 {
                        TAKEOVER_BACKOFF
                    } else {
                        Duration::from_secs(5)
                    };
                    let base = Duration::from_millis(100)
                        .saturating_mul(1 << failures.min(12))
                        .min(cap);
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let delay = base.mul_f64(0.75 + (seed % 500) as f64 / 1000.0);
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.changed() => break,
                    }
                }
            }
        }
        self.connected.store(false, Ordering::Release);
        self.finished.send_replace(true);
    }

    /// Hands a report to the engine (node mode); a one-shot client only
    /// keeps it at debug level (its caller reads `last_failure`).
    async fn report(&self, tx: &mpsc::Sender<Incoming>, report: LinkReport) {
        if self.settings.node {
            let _ = tx.send(Incoming::Report(report)).await;
        } else {
            debug!("MQTT connection: {report:?}");
        }
    }

    /// The user name the connection logs in with, if any.
    fn login_name(&self) -> Option<&str> {
        self.settings
            .username
            .as_deref()
            .or(self.settings.broker.username.as_deref())
    }

    /// Hands a publish on. Waiting for room in `tx` is the backpressure:
    /// the loop stops reading the socket and the broker holds the rest.
    async fn on_publish(
        &self,
        topic_name: &str,
        payload: bytes::Bytes,
        ack: Option<u64>,
        tx: &mpsc::Sender<Incoming>,
    ) {
        let parsed = topic::parse_prefixed(&self.settings.topic_prefix, topic_name)
            .map(|r| r.on(self.settings.link));
        let dropped = if payload.len() > self.settings.max_payload {
            Some(Dropped::Oversize {
                bytes: payload.len(),
                limit: self.settings.max_payload,
            })
        } else if parsed.is_none() {
            Some(Dropped::NotOneM2M)
        } else {
            None
        };
        let (Some(route), None) = (parsed, &dropped) else {
            if let Some(token) = ack {
                self.ack(token);
            }
            let why = dropped.unwrap_or(Dropped::NotOneM2M);
            if self.settings.node {
                let topic = topic_name.to_owned();
                let _ = tx.send(Incoming::Dropped { topic, why }).await;
            } else {
                debug!(topic = topic_name, "dropped: {why}");
            }
            return;
        };
        match route.kind {
            Kind::Request => {
                let _ = tx
                    .send(Incoming::Request {
                        route,
                        payload,
                        ack,
                    })
                    .await;
            }
            Kind::Response => {
                // A response needs no durability: taking it is enough.
                if let Some(token) = ack {
                    self.ack(token);
                }
                let _ = tx.send(Incoming::Response { route, payload }).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_classified_with_the_brokers_reason() {
        use rumqttc::ConnectReturnCode as C;
        let f = Failure::of(&ConnectionError::ConnectionRefused(C::BadUserNamePassword));
        assert_eq!(f.kind, FailureKind::LoginRefused);
        assert_eq!(f.text, "bad user name or password (CONNACK return code 4)");
        let f = Failure::of(&ConnectionError::ConnectionRefused(C::NotAuthorized));
        assert_eq!(f.kind, FailureKind::LoginRefused);
        assert!(f.text.contains("not authorized"), "{}", f.text);
        let f = Failure::of(&ConnectionError::ConnectionRefused(C::BadClientId));
        assert_eq!(f.kind, FailureKind::Refused);
        let io = |kind, text: &str| {
            Failure::of(&ConnectionError::Io(std::io::Error::new(
                kind,
                text.to_owned(),
            )))
            .kind
        };
        assert_eq!(
            io(
                std::io::ErrorKind::InvalidData,
                "invalid peer certificate: UnknownIssuer"
            ),
            FailureKind::Tls
        );
        assert_eq!(
            io(std::io::ErrorKind::ConnectionRefused, "Connection refused"),
            FailureKind::Network
        );
        assert_eq!(
            io(std::io::ErrorKind::ConnectionReset, "reset by peer"),
            FailureKind::Protocol
        );
    }
}
