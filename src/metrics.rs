//! Prometheus metrics (docs/operations.md "Metrics"), opt-in with
//! `[metrics] listen`: the driver hands every engine event to
//! [`Metrics::observe`] and, after each round of inputs, lets
//! [`Metrics::sample`] read the engine's inspection methods. Nothing here
//! decides anything; it counts what the engine reports.
//!
//! `GET /metrics` is answered by a minimal HTTP/1.x server on the node's
//! runtime: requests are bounded in size, time and number, and encoding
//! reads atomics, so a scraper can never hold up the engine's loop.

use crate::config::Config;
use crate::engine::{Counters, Engine, Event, Link, Phase, Removal};
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A request head larger than this is refused (a scrape sends ~100 bytes).
const MAX_REQUEST: usize = 8 * 1024;
/// A client that has not sent its request head by then is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Scrapes served at once; more connections wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 8;

type Labels1 = [(&'static str, &'static str); 1];
type Labels2 = [(&'static str, &'static str); 2];
type StateLabels = [(&'static str, String); 2];

/// Every registration state [`registration_state`] reports.
pub const REGISTRATION_STATES: [&str; 6] = [
    "idle",
    "registering",
    "registered",
    "backoff",
    "deregistering",
    "stopped",
];

/// The own registration's state, as metrics and `STATUS=` name it; `None`
/// for a node that registers nowhere (an IN-CSE).
pub fn registration_state(engine: &Engine) -> Option<&'static str> {
    let m = engine.registration()?;
    Some(match m.phase() {
        Phase::Deregistering { .. } => "deregistering",
        Phase::Stopped => "stopped",
        _ if m.is_registered() => "registered",
        Phase::Waiting { .. } => "registering",
        Phase::Backoff { .. } => "backoff",
        Phase::Idle | Phase::Registered => "idle",
    })
}

/// The metrics of one node, and the server answering `GET /metrics`.
pub struct Metrics {
    requests: Family<Labels2, Counter>,
    registrees: Gauge,
    registrees_added: Counter,
    registrees_removed: Family<Labels1, Counter>,
    descendants: Gauge,
    /// One gauge per state of [`REGISTRATION_STATES`], for a registree.
    registration: Vec<(&'static str, Gauge)>,
    state: Option<&'static str>,
    registration_retries: Counter,
    probes_sent: Counter,
    probes_answered: Counter,
    probes_missed: Counter,
    forwards_in_flight: Gauge,
    forwards_timed_out: Counter,
    store_commits: Family<Labels1, Counter>,
    commit_seconds: Histogram,
    awaiting_durability: Gauge,
    dropped: Family<Labels1, Counter>,
    /// Per link: its `broker_link_up` gauge and `broker_reconnects` counter.
    links: Vec<(Link, Gauge, Counter)>,
    /// Per peer SP (`[sp_registrar.*]`, by absolute CSE-ID): registered there.
    peer_registered: Family<[(&'static str, String); 1], Gauge>,
    /// The peers reported at the last sample: a peer a reload removed goes.
    peers_seen: Vec<String>,
    /// The engine's totals at the last [`Metrics::sample`].
    last: Counters,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Metrics {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Metrics {
    /// Registers the metrics of the node `cfg` describes and starts serving
    /// them on `listen`. Call from within the node's runtime.
    pub async fn start(listen: SocketAddr, cfg: &Config) -> std::io::Result<Metrics> {
        let listener = TcpListener::bind(listen).await?;
        let mut reg = Registry::with_prefix("m2mnode");
        let requests = Family::<Labels2, Counter>::default();
        reg.register(
            "requests",
            "Requests answered by this node, by operation and status code class (2xxx, 4xxx, 5xxx)",
            requests.clone(),
        );
        let registrees = Gauge::default();
        reg.register(
            "registrees",
            "CSEs registered here (their <remoteCSE>s)",
            registrees.clone(),
        );
        let registrees_added = Counter::default();
        reg.register(
            "registrees_added",
            "Registrees that registered",
            registrees_added.clone(),
        );
        let registrees_removed = Family::<Labels1, Counter>::default();
        reg.register(
            "registrees_removed",
            "Registrees whose <remoteCSE> went: deleted by them, or unresponsive to liveness probes",
            registrees_removed.clone(),
        );
        let descendants = Gauge::default();
        reg.register(
            "descendants",
            "CSEs below this one (the own <remoteCSE>'s dcse)",
            descendants.clone(),
        );
        let registration = Family::<StateLabels, Gauge>::default();
        reg.register(
            "registration_state",
            "1 for the state the registration at the registrar is in, 0 for the others",
            registration.clone(),
        );
        let registration_retries = Counter::default();
        reg.register(
            "registration_retries",
            "Registration steps that failed and are retried, and registrations lost at the registrar",
            registration_retries.clone(),
        );
        let probes_sent = Counter::default();
        reg.register(
            "liveness_probes_sent",
            "Liveness probes sent to registrees",
            probes_sent.clone(),
        );
        let probes_answered = Counter::default();
        reg.register(
            "liveness_probes_answered",
            "Liveness probes a registree answered with success",
            probes_answered.clone(),
        );
        let probes_missed = Counter::default();
        reg.register(
            "liveness_probes_missed",
            "Liveness probes that failed or timed out while connected",
            probes_missed.clone(),
        );
        let forwards_in_flight = Gauge::default();
        reg.register(
            "forwards_in_flight",
            "Forwarded requests awaiting their answer",
            forwards_in_flight.clone(),
        );
        let forwards_timed_out = Counter::default();
        reg.register(
            "forwards_timed_out",
            "Forwarded requests whose next hop did not answer in time (answered 4008)",
            forwards_timed_out.clone(),
        );
        let store_commits = Family::<Labels1, Counter>::default();
        reg.register(
            "store_commits",
            "Store transactions (group commits), by result",
            store_commits.clone(),
        );
        let commit_seconds = Histogram::new(exponential_buckets(0.000_25, 2.0, 15));
        reg.register(
            "store_commit_seconds",
            "Time to write one store transaction",
            commit_seconds.clone(),
        );
        let awaiting_durability = Gauge::default();
        reg.register(
            "answers_awaiting_durability",
            "Answers held until their change is written",
            awaiting_durability.clone(),
        );
        let dropped = Family::<Labels1, Counter>::default();
        reg.register(
            "dropped_payloads",
            "Payloads dropped without an answer, by reason",
            dropped.clone(),
        );
        let link_up = Family::<Labels1, Gauge>::default();
        reg.register(
            "broker_link_up",
            "1 while the broker link is connected and subscribed",
            link_up.clone(),
        );
        let reconnects = Family::<Labels1, Counter>::default();
        reg.register(
            "broker_reconnects",
            "Times a broker link came back after the first connection",
            reconnects.clone(),
        );
        let peer_registered = Family::<[(&'static str, String); 1], Gauge>::default();
        reg.register(
            "peer_sp_registered",
            "1 while registered at the IN-CSE of a peer SP ([sp_registrar.*]), by its absolute CSE-ID",
            peer_registered.clone(),
        );
        // Every series exists from the start, at zero: a rate over a series
        // that appears with its first increment misses that increment. The
        // handles are kept, so sampling takes no lock.
        // With a broker per side, the registrar's link is reported apart.
        let mut link_names = vec![(Link::LOCAL, "local")];
        if cfg.upstream_mqtt().is_some() {
            link_names.push((Link::UPSTREAM, "upstream"));
        }
        let links = link_names
            .into_iter()
            .map(|(link, name)| {
                let labels = [("link", name)];
                let up = link_up.get_or_create_owned(&labels);
                (link, up, reconnects.get_or_create_owned(&labels))
            })
            .collect();
        for result in ["ok", "failed"] {
            let _ = store_commits.get_or_create(&[("result", result)]);
        }
        let registration = match &cfg.registrar {
            Some(r) => REGISTRATION_STATES
                .iter()
                .map(|&state| {
                    let labels = [("registrar", r.id.to_string()), ("state", state.to_owned())];
                    (state, registration.get_or_create_owned(&labels))
                })
                .collect(),
            None => Vec::new(),
        };
        let registry = Arc::new(reg);
        let server = tokio::spawn(serve(listener, registry));
        Ok(Metrics {
            requests,
            registrees,
            registrees_added,
            registrees_removed,
            descendants,
            registration,
            registration_retries,
            probes_sent,
            probes_answered,
            probes_missed,
            forwards_in_flight,
            forwards_timed_out,
            store_commits,
            commit_seconds,
            awaiting_durability,
            dropped,
            links,
            peer_registered,
            peers_seen: Vec::new(),
            state: None,
            last: Counters::default(),
            server,
        })
    }

    /// Counts one engine event.
    pub fn observe(&self, event: &Event) {
        match event {
            Event::Handled { op, rsc, .. } => {
                let class = match rsc.code() / 1000 {
                    1 => "1xxx",
                    2 => "2xxx",
                    4 => "4xxx",
                    5 => "5xxx",
                    6 => "6xxx",
                    _ => "other",
                };
                self.requests
                    .get_or_create(&[("operation", op.name()), ("class", class)])
                    .inc();
            }
            Event::RegistreeAdded { .. } => {
                self.registrees_added.inc();
            }
            Event::RegistreeRemoved { why, .. } => {
                let reason = match why {
                    Removal::Deleted => "deleted",
                    Removal::Unresponsive { .. } => "unresponsive",
                };
                self.registrees_removed
                    .get_or_create(&[("reason", reason)])
                    .inc();
            }
            Event::RegistrationRetry { .. } | Event::RegistrationLost { .. } => {
                self.registration_retries.inc();
            }
            Event::Dropped { reason, .. } | Event::DroppedQuietly { reason } => {
                self.dropped
                    .get_or_create(&[("reason", reason.name())])
                    .inc();
            }
            // Counted elsewhere (engine counters, sampled) or not a metric.
            _ => {}
        }
    }

    /// One store transaction ended after `took`.
    pub fn store_commit(&self, took: Duration, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.store_commits
            .get_or_create(&[("result", result)])
            .inc();
        self.commit_seconds.observe(took.as_secs_f64());
    }

    /// Reads the engine's gauges and totals (each O(1)).
    pub fn sample(&mut self, engine: &Engine) {
        self.registrees.set(gauge(engine.registree_count()));
        self.descendants.set(gauge(engine.descendant_count()));
        self.forwards_in_flight
            .set(gauge(engine.forwards_in_flight()));
        self.awaiting_durability
            .set(gauge(engine.answers_awaiting_durability()));
        for (link, up, _) in &self.links {
            up.set(i64::from(engine.link_up(*link)));
        }
        let state = registration_state(engine);
        if state != self.state {
            self.state = state;
            for (name, gauge) in &self.registration {
                gauge.set(i64::from(Some(*name) == state));
            }
        }
        let peers = engine.peer_registrations();
        for gone in self
            .peers_seen
            .iter()
            .filter(|s| !peers.iter().any(|(id, _)| id == *s))
        {
            self.peer_registered.remove(&[("peer", gone.clone())]);
        }
        self.peers_seen = peers.iter().map(|(id, _)| id.clone()).collect();
        for (id, registered) in peers {
            self.peer_registered
                .get_or_create(&[("peer", id)])
                .set(i64::from(registered));
        }
        let c = engine.counters();
        let was = std::mem::replace(&mut self.last, c);
        self.probes_sent.inc_by(c.probes_sent - was.probes_sent);
        self.probes_answered
            .inc_by(c.probes_answered - was.probes_answered);
        self.probes_missed
            .inc_by(c.probes_missed - was.probes_missed);
        self.forwards_timed_out
            .inc_by(c.forwards_timed_out - was.forwards_timed_out);
        // The first connection is no reconnect.
        let reconnects = |now: u64, was: u64| now.saturating_sub(1) - was.saturating_sub(1);
        for (link, _, counter) in &self.links {
            counter.inc_by(if *link == Link::LOCAL {
                reconnects(c.local_connects, was.local_connects)
            } else {
                reconnects(c.upstream_connects, was.upstream_connects)
            });
        }
    }
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

async fn serve(listener: TcpListener, registry: Arc<Registry>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::debug!(error = %e, "metrics: accept failed");
                // Out of file descriptors and the like: do not spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(READ_TIMEOUT * 2, answer(stream, &registry)).await;
            drop(permit);
        });
    }
}

/// Reads one request head and answers it; the connection then closes.
async fn answer(mut stream: TcpStream, registry: &Registry) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 1024];
    let complete = tokio::time::timeout(READ_TIMEOUT, async {
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Ok::<bool, std::io::Error>(false);
            }
            head.extend_from_slice(&buf[..n]);
            if head.windows(4).any(|w| w == b"\r\n\r\n") {
                return Ok(true);
            }
            if head.len() > MAX_REQUEST {
                return Ok(false);
            }
        }
    })
    .await;
    let (status, content_type, body) = match complete {
        Ok(Ok(true)) => route(&head, registry),
        Ok(Ok(false)) if head.len() > MAX_REQUEST => (
            "431 Request Header Fields Too Large",
            "text/plain",
            "request too large\n".to_owned(),
        ),
        _ => return Ok(()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await?;
    // Closing with unread input would reset the connection and could take
    // the answer with it: read what the client still sends, a bounded amount.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let mut left: usize = 64 * 1024;
        while left > 0 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
    Ok(())
}

fn route(head: &[u8], registry: &Registry) -> (&'static str, &'static str, String) {
    let line = head
        .split(|b| *b == b'\r')
        .next()
        .and_then(|l| std::str::from_utf8(l).ok())
        .unwrap_or("");
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => {
            let mut text = String::new();
            match prometheus_text::encode(&mut text, registry) {
                Ok(()) => ("200 OK", prometheus_text::CONTENT_TYPE, text),
                Err(_) => (
                    "500 Internal Server Error",
                    "text/plain",
                    "cannot encode the metrics\n".to_owned(),
                ),
            }
        }
        ("GET", _) => (
            "404 Not Found",
            "text/plain",
            "m2mnode serves /metrics only\n".to_owned(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "GET /metrics\n".to_owned(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> Registry {
        let mut r = Registry::with_prefix("m2mnode");
        r.register("x", "An x", Counter::<u64>::default());
        r
    }

    #[test]
    fn only_get_metrics_is_served() {
        let r = registry();
        let (status, ct, body) = route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", &r);
        assert_eq!((status, ct), ("200 OK", prometheus_text::CONTENT_TYPE));
        assert!(body.contains("m2mnode_x_total 0"), "{body}");
        assert_eq!(route(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n", &r).0, "200 OK");
        assert_eq!(route(b"GET / HTTP/1.1\r\n\r\n", &r).0, "404 Not Found");
        assert_eq!(
            route(b"POST /metrics HTTP/1.1\r\n\r\n", &r).0,
            "405 Method Not Allowed"
        );
        assert_eq!(route(b"\xff\xfe\r\n\r\n", &r).0, "405 Method Not Allowed");
    }
}
