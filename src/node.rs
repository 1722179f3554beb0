//! The driver: tokio plumbing around the sans-IO [`Engine`]. It moves bytes
//! between the MQTT transport and the engine, hands store batches to the
//! persister thread, publishes from a task of its own, sleeps until the
//! engine's next timeout, and logs the engine's events. It decides nothing
//! (the driver contract is on [`Engine`]).

use crate::config::BrokerUrl;
use crate::config::{Config, MqttConfig};
use crate::engine::{Ack, Engine, Event, Link, Severity, StoreBatch, Transmit};
use crate::metrics::Metrics;
use crate::persist::{Memory, PersistError, Persistence, Sqlite};
use crate::time::Now;
use crate::transport::mqtt::{token_link, Incoming, Settings, Transport, TransportError};
use m2mnode::reload::ReloadPlan;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Store(#[from] PersistError),
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("{0}")]
    Broker(String),
    #[error("{path}: {why}; move it away to start with an empty store")]
    BadStore { path: String, why: String },
    #[error("cannot start the store thread: {0}")]
    Thread(std::io::Error),
    #[error("metrics.listen {addr}: {why}")]
    Metrics { addr: String, why: std::io::Error },
}

/// The connection of `[mqtt]`: toward registrees, and toward the registrar
/// too unless `[registrar.mqtt]` sets a broker of its own.
pub fn transport_settings(cfg: &Config) -> Result<Settings, NodeError> {
    settings_of(cfg, &cfg.mqtt, "mqtt", Link::LOCAL)
}

/// The connection of `[registrar.mqtt]`, if there is one.
pub fn upstream_settings(cfg: &Config) -> Result<Option<Settings>, NodeError> {
    cfg.upstream_mqtt()
        .map(|m| settings_of(cfg, m, "registrar.mqtt", Link::UPSTREAM))
        .transpose()
}

/// The connections of `[sp_registrar.<name>.mqtt]`, one per peer SP with a
/// broker of its own, on the link the engine knows it by.
pub fn peer_transport_settings(cfg: &Config) -> Result<Vec<Settings>, NodeError> {
    let peers = cfg.peer_settings();
    cfg.peer_mqtt()
        .into_iter()
        .zip(peers.iter().filter(|p| p.link != Link::LOCAL))
        .map(|((section, m), p)| settings_of(cfg, m, &section, p.link))
        .collect()
}

/// What the node answers to besides its CSE-ID when it talks to other
/// SPs: its absolute CSE-ID (TS-0010 `:sp:id`) and, for ACME, its SP-ID
/// (docs/protocol.md §13.2).
fn also_addressed_as(cfg: &Config) -> Vec<String> {
    let across =
        !cfg.sp_registrar.is_empty() || cfg.registrees.allowed.iter().any(|a| a.starts_with("//"));
    match (&cfg.cse.sp_id, across) {
        (Some(sp), true) => vec![format!("//{sp}{}", cfg.cse.id), format!("/{sp}")],
        _ => Vec::new(),
    }
}

fn settings_of(
    cfg: &Config,
    m: &MqttConfig,
    section: &str,
    link: Link,
) -> Result<Settings, NodeError> {
    Ok(Settings {
        broker: BrokerUrl::parse(&m.url)
            .map_err(|e| NodeError::Broker(format!("{section}.url: {e}")))?,
        client_id: cfg.cse.id.client_id(),
        username: m.username.clone(),
        password: m.password.clone(),
        ca_file: m.ca_file.clone(),
        client_cert: m.client_cert.clone(),
        client_key: m.client_key.clone(),
        keep_alive: m.keep_alive,
        qos: m.qos,
        max_payload: m.max_payload,
        timeout: m.timeout,
        own: cfg.cse.id.to_string(),
        also: also_addressed_as(cfg),
        persistent_session: true,
        node: true,
        topic_prefix: m.topic_prefix.clone(),
        link,
        seed: crate::time::Timestamp::now().0 ^ u64::from(link.0),
    })
}

/// The node's broker connections: `[mqtt]`, and one per link of its own
/// (`[registrar.mqtt]`, `[sp_registrar.<name>.mqtt]`).
#[derive(Clone)]
struct Links {
    local: Transport,
    others: Vec<(Link, Transport)>,
}

impl Links {
    /// `link` as it is here: a link without a connection of its own is
    /// the local one.
    fn norm(&self, link: Link) -> Link {
        if self.others.iter().any(|(l, _)| *l == link) {
            link
        } else {
            Link::LOCAL
        }
    }

    fn get(&self, link: Link) -> &Transport {
        self.others
            .iter()
            .find(|(l, _)| *l == link)
            .map_or(&self.local, |(_, t)| t)
    }
}

/// Incoming messages handled between two drains of the outputs, at most.
const BURST: usize = 64;

/// `link`: the connection `msg` came from, `None` with a single broker.
fn feed(engine: &mut Engine, msg: Incoming, link: Option<Link>, now: Now) {
    match (msg, link) {
        (
            Incoming::Request {
                route,
                payload,
                ack,
            },
            _,
        ) => engine.handle_request(route, &payload, ack.map(Ack), now),
        (Incoming::Response { route, payload }, _) => engine.handle_response(&route, &payload, now),
        (Incoming::Dropped { topic, why }, _) => engine.handle_dropped(&topic, why, now),
        (Incoming::Report(report), link) => engine.handle_link_report(link, report, now),
        (Incoming::Connected, Some(l)) => engine.link_connection(l, true, now),
        (Incoming::Disconnected, Some(l)) => engine.link_connection(l, false, now),
        (Incoming::Connected, None) => engine.connection(true, now),
        (Incoming::Disconnected, None) => engine.connection(false, now),
        (Incoming::Acked(token), _) => engine.acked(Ack(token)),
    }
}

/// Feeds `first` and what else `rx` holds already: one wake-up and one
/// drain of the outputs for a burst, not one per message.
fn feed_burst(
    engine: &mut Engine,
    first: Incoming,
    rx: &mut mpsc::Receiver<Incoming>,
    link: Option<Link>,
    now: Now,
) {
    feed(engine, first, link, now);
    for _ in 0..BURST {
        match rx.try_recv() {
            Ok(msg) => feed(engine, msg, link, now),
            Err(_) => break,
        }
    }
}

/// What the publisher task is handed, in order.
enum Out {
    Publish { topic: String, payload: Vec<u8> },
    Ack(u64),
}

/// Runs the node that the config file `path` describes (already loaded as
/// `cfg`): as [`run`], and on SIGHUP it re-reads `path` and applies what
/// can change live; SIGUSR1 runs the liveness checks now.
pub async fn run_file(
    path: std::path::PathBuf,
    cfg: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), NodeError> {
    run_inner(cfg, Some(path), shutdown).await
}

/// Runs a node until `shutdown` resolves, then deregisters and returns.
pub async fn run(cfg: Config, shutdown: impl Future<Output = ()>) -> Result<(), NodeError> {
    run_inner(cfg, None, shutdown).await
}

async fn run_inner(
    cfg: Config,
    config_path: Option<std::path::PathBuf>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), NodeError> {
    let mut current = cfg.clone();
    let start = Now::system();
    let (mut persister, store_path): (Box<dyn Persistence>, String) = match &cfg.cse.data_dir {
        Some(dir) => {
            let db = Sqlite::open(dir)?;
            let path = db.path().display().to_string();
            (Box::new(db), path)
        }
        None => (Box::new(Memory), String::new()),
    };
    let snapshot = persister.load()?;
    let mut engine = Engine::restore(
        cfg.engine_settings(start.wall, start.wall.0),
        snapshot,
        start,
    )
    .map_err(|e| NodeError::BadStore {
        path: store_path,
        why: e.0,
    })?;
    info!(
        cse = %cfg.cse.id, name = %cfg.cse.name, r#type = ?cfg.cse.cse_type,
        registrees = engine.registree_count(),
        "starting m2mnode"
    );
    // Metrics (docs/operations.md "Metrics") only report what the engine
    // says; without [metrics] nothing listens. Bound before connecting, so
    // a taken port stops the node before it touches a broker.
    let mut metrics = match cfg.metrics.as_ref() {
        Some(m) => {
            Some(
                Metrics::start(m.listen, &cfg)
                    .await
                    .map_err(|why| NodeError::Metrics {
                        addr: m.listen.to_string(),
                        why,
                    })?,
            )
        }
        None => None,
    };
    let (transport, mut incoming) = Transport::start(transport_settings(&cfg)?)?;
    // Every other connection feeds one channel, its messages marked with
    // its link.
    let mut others = Vec::new();
    let (other_tx, mut other_rx) = mpsc::channel::<(Link, Incoming)>(1024);
    let extra = upstream_settings(&cfg)?
        .into_iter()
        .chain(peer_transport_settings(&cfg)?);
    for s in extra {
        let link = s.link;
        let (t, mut rx) = Transport::start(s)?;
        let tx = other_tx.clone();
        tokio::spawn(async move {
            while let Some(msg) = rx.recv().await {
                if tx.send((link, msg)).await.is_err() {
                    break;
                }
            }
        });
        others.push((link, t));
    }
    drop(other_tx);
    let split = !others.is_empty();
    let links = Links {
        local: transport.clone(),
        others: others.clone(),
    };

    // Group commit: the persister thread writes one batch per transaction
    // while the engine gathers the next (engine::Engine, driver contract).
    let (batch_tx, batch_rx) = std::sync::mpsc::channel::<StoreBatch>();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(u64, Result<(), String>, Duration)>();
    let persist_thread = std::thread::Builder::new()
        .name("m2mnode-store".into())
        .spawn(move || {
            for batch in batch_rx {
                let started = std::time::Instant::now();
                let r = persister.commit(&batch.changes).map_err(|e| e.to_string());
                if done_tx.send((batch.seq, r, started.elapsed())).is_err() {
                    break;
                }
            }
        })
        .map_err(NodeError::Thread)?;

    // Publishing may wait for room in the client's queue; it does so here,
    // never in the engine's loop and never in the MQTT event loop. One
    // publisher per connection: a broker that is away stalls only its own.
    let mut lanes = Vec::new();
    let mut publishers = Vec::new();
    let all_links: Vec<Link> = std::iter::once(Link::LOCAL)
        .chain(others.iter().map(|(l, _)| *l))
        .collect();
    for link in all_links {
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Out>();
        let backlog = Arc::new(AtomicUsize::new(0));
        let (both, backlog2) = (links.clone(), backlog.clone());
        publishers.push(tokio::spawn(async move {
            let transport = both.get(link);
            while let Some(out) = out_rx.recv().await {
                match out {
                    Out::Publish { topic, payload } => transport.publish_wait(topic, payload).await,
                    Out::Ack(token) => transport.ack(token),
                }
                backlog2.fetch_sub(1, Ordering::AcqRel);
            }
        }));
        lanes.push(Lane {
            link,
            queue: out_tx,
            backlog,
            transport: links.get(link).clone(),
        });
    }
    let out = Outbox {
        lanes,
        links: links.clone(),
    };

    let mut supervisor = crate::sdnotify::Supervisor::from_env();
    let mut stop_by: Option<Instant> = None;
    let mut hangup = unix_signal(Sig::Hangup);
    let mut usr1 = unix_signal(Sig::User1);
    tokio::pin!(shutdown);
    loop {
        drain(&mut engine, &batch_tx, &out, metrics.as_ref());
        if let Some(m) = &mut metrics {
            m.sample(&engine);
        }
        supervisor.update(&engine, split);
        if engine.is_stopped() {
            break;
        }
        let wake = engine.poll_timeout();
        tokio::select! {
            msg = incoming.recv() => {
                let Some(msg) = msg else { break };
                let link = split.then_some(Link::LOCAL);
                feed_burst(&mut engine, msg, &mut incoming, link, Now::system());
            }
            Some((link, msg)) = other_rx.recv() => {
                let now = Now::system();
                feed(&mut engine, msg, Some(link), now);
                for _ in 0..BURST {
                    match other_rx.try_recv() {
                        Ok((l, m)) => feed(&mut engine, m, Some(l), now),
                        Err(_) => break,
                    }
                }
            }
            Some((seq, result, took)) = done_rx.recv() => {
                let now = Now::system();
                if let Some(m) = &metrics {
                    m.store_commit(took, result.is_ok());
                }
                match result {
                    Ok(()) => engine.store_committed(seq, now),
                    Err(why) => engine.store_failed(seq, &why, now),
                }
            }
            _ = sleep_until(wake) => engine.handle_timeout(Now::system()),
            _ = sleep_until(supervisor.next_ping()) => supervisor.ping(),
            _ = next_signal(&mut hangup) => match &config_path {
                Some(path) => reload(path, &mut current, &mut engine),
                None => info!("SIGHUP ignored: this node was not started from a config file"),
            },
            _ = next_signal(&mut usr1) => engine.check_now(Now::system()),
            _ = &mut shutdown, if stop_by.is_none() => {
                info!("shutting down");
                supervisor.stopping();
                // The DELETE is bounded by mqtt.timeout; this bounds the rest.
                stop_by = Some(Instant::now() + cfg.mqtt.timeout + Duration::from_secs(2));
                engine.shutdown(Now::system());
            }
            _ = sleep_until(stop_by.map(Instant::into_std)), if stop_by.is_some() => {
                warn!("deregistration did not finish in time");
                break;
            }
        }
    }
    drain(&mut engine, &batch_tx, &out, metrics.as_ref());
    // What was answered goes out; what is being written is finished.
    drop(out);
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        for p in publishers {
            let _ = p.await;
        }
    })
    .await;
    drop(batch_tx);
    let _ = tokio::task::spawn_blocking(move || persist_thread.join()).await;
    for (_, t) in &others {
        t.close().await;
    }
    transport.close().await;
    Ok(())
}

#[derive(Clone, Copy)]
enum Sig {
    Hangup,
    User1,
}

#[cfg(unix)]
type SignalStream = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type SignalStream = Option<()>;

#[cfg(unix)]
fn unix_signal(sig: Sig) -> SignalStream {
    use tokio::signal::unix::{signal, SignalKind};
    let kind = match sig {
        Sig::Hangup => SignalKind::hangup(),
        Sig::User1 => SignalKind::user_defined1(),
    };
    signal(kind).ok()
}

#[cfg(not(unix))]
fn unix_signal(_: Sig) -> SignalStream {
    None
}

async fn next_signal(s: &mut SignalStream) {
    #[cfg(unix)]
    if let Some(s) = s {
        if s.recv().await.is_some() {
            return;
        }
    }
    let _ = s;
    std::future::pending::<()>().await
}

/// SIGHUP: re-reads the config file and applies what can change while
/// running; a config with errors is refused and the running one stays.
fn reload(path: &std::path::Path, current: &mut Config, engine: &mut Engine) {
    let new = match Config::load(path) {
        Ok(c) => c,
        Err(e) => return say(ReloadPlan::refused(path, &e.to_string())),
    };
    let now = Now::system();
    let plan = current.reload_plan(&new);
    if let Some(allowed) = plan.allowed.clone() {
        engine.set_allowed(allowed, now);
    }
    if let Some(i) = plan.registree_check_interval {
        engine.set_registree_check_interval(i);
    }
    if let Some(l) = plan.limits.clone() {
        engine.set_limits(l);
    }
    if let Some(i) = plan.registrar_check_interval {
        engine.set_registrar_check_interval(i, now);
    }
    if let Some(r) = plan.registrar.clone() {
        engine.set_registrar(r, now);
    }
    if let Some(p) = plan.peers.clone() {
        engine.set_peers(p, now);
    }
    *current = current.after_reload(new, &plan);
    say(plan.outcome(path));
}

/// Where transmits go, per connection: straight into the MQTT client
/// while it has room (no task hop on the common path), else, and then in
/// order, through that connection's publisher task, which waits for room.
/// Nothing is dropped.
struct Outbox {
    /// One lane per connection, the local one first.
    lanes: Vec<Lane>,
    links: Links,
}

struct Lane {
    link: Link,
    queue: mpsc::UnboundedSender<Out>,
    /// Messages handed to the publisher task and not yet sent by it.
    backlog: Arc<AtomicUsize>,
    transport: Transport,
}

impl Outbox {
    fn send(&self, link: Link, out: Out) {
        let link = self.links.norm(link);
        let Some(lane) = self
            .lanes
            .iter()
            .find(|l| l.link == link)
            .or(self.lanes.first())
        else {
            return;
        };
        let out = if lane.backlog.load(Ordering::Acquire) > 0 {
            out
        } else {
            match out {
                Out::Publish { topic, payload } => {
                    match lane.transport.try_publish_now(&topic, payload) {
                        Ok(()) => return,
                        Err(payload) => Out::Publish { topic, payload },
                    }
                }
                Out::Ack(token) => {
                    lane.transport.ack(token);
                    return;
                }
            }
        };
        lane.backlog.fetch_add(1, Ordering::AcqRel);
        if lane.queue.send(out).is_err() {
            lane.backlog.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Carries out everything the engine has to say after an input.
fn drain(
    engine: &mut Engine,
    batches: &std::sync::mpsc::Sender<StoreBatch>,
    out: &Outbox,
    metrics: Option<&Metrics>,
) {
    let links = &out.links;
    if let Some(batch) = engine.poll_store() {
        if batches.send(batch).is_err() {
            error!("the store thread is gone");
        }
    }
    while let Some(t) = engine.poll_transmit() {
        let (link, publish, ack) = match t {
            Transmit::Request {
                to,
                link,
                format,
                payload,
                ack,
                hop,
            } => {
                let link = links.norm(link);
                let t = links.get(link);
                let topic = match hop {
                    Some(h) => t.request_topic_between(&h.from, &h.to, format),
                    None => t.request_topic(to.as_str(), format),
                };
                (link, Some((topic, payload)), ack)
            }
            Transmit::Response { to, payload, ack } => (
                links.norm(to.link),
                Some((to.response_topic(), payload)),
                ack,
            ),
            Transmit::Ack(a) => (links.norm(token_link(a.0)), None, Some(a)),
        };
        if let Some((topic, payload)) = publish {
            out.send(link, Out::Publish { topic, payload });
        }
        if let Some(Ack(token)) = ack {
            // After the publish it follows (a forward may leave on another
            // connection), on the lane of the connection the request came
            // in on: PUBACKs leave in the order their publishes came in
            // (transport/ack_order.rs), so one held in another connection's
            // queue would hold every later one of its own.
            out.send(links.norm(token_link(token)), Out::Ack(token));
        }
    }
    while let Some(e) = engine.poll_event() {
        if let Some(m) = metrics {
            m.observe(&e);
        }
        print(&e);
    }
}

/// Prints an event at the level the engine gave it; nothing is decided here.
fn print(e: &Event) {
    let kind = e.kind();
    match e.severity() {
        Severity::Debug => debug!(event = kind, "{e}"),
        Severity::Info => info!(event = kind, "{e}"),
        Severity::Warn => warn!(event = kind, "{e}"),
        Severity::Error => error!(event = kind, "{e}"),
    }
}

/// Prints a line at the level its maker gave it (the reload plan).
fn say((severity, line): (Severity, String)) {
    match severity {
        Severity::Debug => debug!(event = "reload", "{line}"),
        Severity::Info => info!(event = "reload", "{line}"),
        Severity::Warn => warn!(event = "reload", "{line}"),
        Severity::Error => error!(event = "reload", "{line}"),
    }
}

async fn sleep_until(t: Option<std::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(Instant::from_std(t)).await,
        None => std::future::pending().await,
    }
}
