//! The driver: wires the transport, the topic router, the registrar and the
//! registration machine together with tokio. Kept small on purpose: every
//! protocol decision is made in the sans-IO core.

use crate::config::Config;
use crate::dedupe::{RecentRequests, Seen};
use crate::id::CseId;
use crate::primitive::{Format, Request, Response, Rsc};
use crate::registrar::{Outcome, Registrar};
use crate::registration::{Action, Input, OwnCsr, Phase, Registration, RegistreeConfig, Step};
use crate::resource::{Store, StoreError};
use crate::time::Timestamp;
use crate::topic::Route;
use crate::transport::mqtt::{Incoming, Settings, Transport, TransportError};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("mqtt.url: {0}")]
    Broker(String),
}

/// The state shared by the request loop, the registration task and the
/// liveness task. Locked only for short, non-async sections.
struct Shared {
    registrar: Registrar,
    data_dir: Option<PathBuf>,
}

impl Shared {
    fn persist(&self) {
        if let Some(dir) = &self.data_dir {
            if let Err(e) = self.registrar.store.save(dir) {
                error!(error = %e, "cannot persist the CSR store");
            }
        }
    }
}

#[derive(Clone)]
struct Node {
    shared: Arc<Mutex<Shared>>,
    transport: Transport,
    /// With a registrar: how to tell the registration machine that the own
    /// CSR should change (dcse), and what it says apart from dcse.
    own_csr: Option<(mpsc::UnboundedSender<Input>, OwnCsr)>,
    /// Answers to recent requests, for duplicate deliveries.
    recent: Arc<Mutex<RecentRequests>>,
}

impl Node {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// After the store changed: persist, and let the registration machine
    /// carry new descendants up to the registrar.
    fn store_changed(&self) {
        let dcse = {
            let s = self.lock();
            s.persist();
            s.registrar.descendant_ids()
        };
        if let Some((tx, base)) = &self.own_csr {
            let mut want = base.clone();
            want.dcse = dcse;
            let _ = tx.send(Input::OwnCsrChanged(want));
        }
    }
}

pub fn transport_settings(cfg: &Config) -> Result<Settings, NodeError> {
    Ok(Settings {
        broker: cfg.broker().map_err(NodeError::Broker)?,
        client_id: cfg.cse.id.client_id(),
        username: cfg.mqtt.username.clone(),
        password: cfg.mqtt.password.clone(),
        ca_file: cfg.mqtt.ca_file.clone(),
        client_cert: cfg.mqtt.client_cert.clone(),
        client_key: cfg.mqtt.client_key.clone(),
        keep_alive: cfg.mqtt.keep_alive,
        qos: cfg.mqtt.qos,
        max_payload: cfg.mqtt.max_payload,
        timeout: cfg.mqtt.timeout,
        own: cfg.cse.id.to_string(),
        persistent_session: true,
    })
}

/// Runs a node until `shutdown` resolves, then deregisters and returns.
pub async fn run(cfg: Config, shutdown: impl Future<Output = ()>) -> Result<(), NodeError> {
    let now = Timestamp::now();
    let store = match &cfg.cse.data_dir {
        Some(dir) => Store::load(dir)?,
        None => Store::new(),
    };
    let upstream = cfg.registrar.as_ref().map(|r| r.id.clone());
    let adopt = upstream
        .as_ref()
        .is_some_and(|u| store.by_csi(u.as_str()).is_some());
    let remote_rn = store.own_csr_rn.clone();
    info!(
        cse = %cfg.cse.id, name = %cfg.cse.name, r#type = ?cfg.cse.cse_type,
        registrees = store.registrees(upstream.as_ref().map(CseId::as_str)).count(),
        "starting m2mnode"
    );
    let registrar = Registrar::new(&cfg, store, now);
    let want = OwnCsr::from_cse_base(&registrar.cse_base, registrar.descendant_ids());
    let (transport, mut incoming) = Transport::start(transport_settings(&cfg)?)?;
    let shared = Arc::new(Mutex::new(Shared {
        registrar,
        data_dir: cfg.cse.data_dir.clone(),
    }));

    let (reg_tx, reg_rx) = mpsc::unbounded_channel();
    let mut node = Node {
        shared,
        transport: transport.clone(),
        own_csr: None,
        recent: Arc::new(Mutex::new(RecentRequests::new(1024))),
    };
    // Registration begins once the broker is there: a first request sent
    // before that would only fail and cost a backoff.
    let mut start = None;
    let registration = match &cfg.registrar {
        Some(r) => {
            node.own_csr = Some((reg_tx.clone(), want.clone()));
            let machine = Registration::new(
                RegistreeConfig {
                    own: cfg.cse.id.clone(),
                    registrar: r.id.clone(),
                    registrar_rn: r.name.clone(),
                    check_interval: r.check_interval,
                    request_timeout: cfg.mqtt.timeout,
                    seed: now.0,
                },
                want,
            );
            start = Some(Input::Start { adopt, remote_rn });
            Some(tokio::spawn(drive_registration(
                machine,
                node.clone(),
                r.id.clone(),
                reg_rx,
                reg_tx.clone(),
            )))
        }
        None => None,
    };
    let liveness = tokio::spawn(watch_registrees(
        node.clone(),
        cfg.registrees.check_interval,
    ));

    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            msg = incoming.recv() => match msg {
                Some(Incoming::Request { route, payload }) => node.on_request(route, &payload),
                Some(Incoming::Connected) => {
                    if let Some(s) = start.take() {
                        let _ = reg_tx.send(s);
                    }
                }
                Some(Incoming::Disconnected) => {}
                None => break,
            },
            _ = &mut shutdown => break,
        }
    }
    info!("shutting down");
    liveness.abort();
    if let Some(task) = registration {
        let _ = reg_tx.send(Input::Shutdown);
        // The DELETE is bounded by mqtt.timeout; this bounds everything else.
        let limit = cfg.mqtt.timeout + Duration::from_secs(2);
        if tokio::time::timeout(limit, task).await.is_err() {
            warn!("deregistration did not finish in time");
        }
    }
    node.lock().persist();
    transport.close().await;
    Ok(())
}

impl Node {
    fn recent(&self) -> MutexGuard<'_, RecentRequests> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn on_request(&self, route: Route, payload: &[u8]) {
        let reply_topic = route.response_topic();
        let format = match route.format {
            Ok(f) => f,
            Err(ref suffix) => return self.refuse_media_type(reply_topic, suffix, payload),
        };
        let req = match format.decode_request(payload) {
            Ok(r) => r,
            Err(e) => {
                let is_object = format.decode_value(payload).is_ok_and(|v| v.is_object());
                if e.rqi.is_none() && !is_object {
                    warn!(topic = %reply_topic, error = %e, "dropping an undecodable payload with no rqi");
                    return;
                }
                debug!(error = %e, "answering a malformed request with 4000");
                let why = e.to_string();
                let mut rsp = Response::error(Rsc::BAD_REQUEST, e.rqi.unwrap_or_default(), why);
                rsp.rvi = e.rvi;
                rsp.to = e.fr;
                rsp.ot = Some(Timestamp::now().to_onem2m());
                return self.send(reply_topic, format, &rsp);
            }
        };
        let fr = req.fr.clone().unwrap_or_default();
        match self.recent().get(&fr, &req.rqi) {
            Some(Seen::Answered(previous)) => {
                debug!(rqi = %req.rqi, fr = %fr, "duplicate delivery; answering again");
                return self.send(reply_topic, format, previous);
            }
            Some(Seen::InFlight) => {
                debug!(rqi = %req.rqi, fr = %fr, "duplicate delivery of a request being forwarded; its answer will come");
                return;
            }
            None => {}
        }
        let outcome = self
            .lock()
            .registrar
            .handle(&req, &route.originator, Timestamp::now());
        match outcome {
            Outcome::Respond { response, changed } => {
                log_outcome(&req, &response);
                if changed {
                    self.store_changed();
                }
                self.send(reply_topic.clone(), format, &response);
                self.recent().remember(&fr, &req.rqi, response);
            }
            Outcome::Forward { next_hop, request } => {
                debug!(to = %request.to, via = %next_hop, "forwarding");
                self.recent().in_flight(&fr, &req.rqi);
                let node = self.clone();
                tokio::spawn(async move {
                    let mut rsp = node
                        .transport
                        .request(&request, next_hop.as_str(), format)
                        .await;
                    if !rsp.rsc.is_success() {
                        debug!(via = %next_hop, rsc = %rsp.rsc, "forwarded request failed");
                    }
                    rsp.rqi.clone_from(&request.rqi);
                    node.send(reply_topic, format, &rsp);
                    node.recent().remember(&fr, &request.rqi, rsp);
                });
            }
        }
    }

    fn send(&self, topic: String, format: Format, rsp: &Response) {
        match format.encode(rsp) {
            Ok(bytes) => self.transport.publish(topic, bytes),
            Err(e) => error!(error = %e, "cannot encode a response"),
        }
    }

    /// XML (or anything else) cannot be read here: answer 4015 in XML, the
    /// format the originator listens for, when its rqi can be found.
    fn refuse_media_type(&self, topic: String, suffix: &str, payload: &[u8]) {
        let text = String::from_utf8_lossy(payload);
        let rqi = text
            .split_once("<rqi>")
            .and_then(|(_, rest)| rest.split_once("</rqi>"))
            .map(|(r, _)| r.trim().to_owned());
        match (suffix, rqi) {
            ("xml", Some(rqi)) if !rqi.contains('<') => {
                let body = format!(
                    "<m2m:rsp xmlns:m2m=\"http://www.onem2m.org/xml/protocols\"><rsc>4015</rsc><rqi>{rqi}</rqi><pc><m2m:dbg>serialization xml is not supported (json, cbor)</m2m:dbg></pc></m2m:rsp>"
                );
                self.transport.publish(topic, body.into_bytes());
            }
            _ => warn!(%topic, "dropping a request in unsupported serialization {suffix:?}"),
        }
    }
}

fn log_outcome(req: &Request, rsp: &Response) {
    if rsp.rsc.is_success() && req.op != crate::primitive::Operation::Retrieve {
        info!(op = req.op.name(), to = %req.to, fr = ?req.fr, rsc = %rsp.rsc, "request handled");
    } else if !rsp.rsc.is_success() {
        info!(op = req.op.name(), to = %req.to, fr = ?req.fr, rsc = %rsp.rsc, why = rsp.debug_text().unwrap_or(""), "request refused");
    } else {
        debug!(op = req.op.name(), to = %req.to, fr = ?req.fr, rsc = %rsp.rsc, "request handled");
    }
}

/// Runs the registration machine: carries out its actions, feeds back
/// answers and timers.
async fn drive_registration(
    mut machine: Registration,
    node: Node,
    registrar: CseId,
    mut events: mpsc::UnboundedReceiver<Input>,
    events_tx: mpsc::UnboundedSender<Input>,
) {
    let mut last_phase = None;
    loop {
        while let Some(action) = machine.poll_action() {
            match action {
                Action::Send(req) => {
                    let (transport, tx, to) =
                        (node.transport.clone(), events_tx.clone(), registrar.clone());
                    debug!(op = req.op.name(), to = %req.to, rqi = %req.rqi, "registration request");
                    tokio::spawn(async move {
                        let rsp = transport.request(&req, to.as_str(), Format::Json).await;
                        let _ = tx.send(Input::Response(rsp));
                    });
                }
                Action::StoreRegistrarCsr(mut csr) => {
                    let mut s = node.lock();
                    let ri = csr
                        .ri
                        .clone()
                        .unwrap_or_else(|| registrar.bare().to_owned());
                    let ts = Timestamp::now().to_onem2m();
                    let existing_ct = s.registrar.store.get(&ri).and_then(|c| c.ct.clone());
                    csr.ty = Some(crate::primitive::ResourceType::REMOTE_CSE);
                    csr.pi = Some(s.registrar.cse_base.ri.clone());
                    csr.ct = Some(existing_ct.unwrap_or_else(|| ts.clone()));
                    csr.lt = Some(ts);
                    s.registrar.store.insert(ri, csr);
                    s.persist();
                }
                Action::RemoveRegistrarCsr => {
                    let mut s = node.lock();
                    let ri = s
                        .registrar
                        .store
                        .by_csi(registrar.as_str())
                        .map(|(ri, _)| ri.clone());
                    if let Some(ri) = ri {
                        s.registrar.store.remove(&ri);
                        s.persist();
                    }
                }
                Action::RemoteCsrName(rn) => {
                    let mut s = node.lock();
                    s.registrar.store.own_csr_rn = rn;
                    s.persist();
                }
                Action::Registered => info!(registrar = %registrar, "registered at {registrar}"),
                Action::Deregistered => {
                    info!(registrar = %registrar, "deregistered from {registrar}")
                }
                Action::Stopped => return,
            }
        }
        let wake = machine.poll_timeout().map(|t| t.since(Timestamp::now()));
        log_phase(machine.phase(), &mut last_phase, wake);
        let input = tokio::select! {
            ev = events.recv() => match ev {
                Some(ev) => ev,
                None => return,
            },
            _ = sleep_opt(wake) => Input::Timer,
        };
        machine.handle(input, Timestamp::now());
    }
}

/// What a phase is, without its rqi: the unit of a state change.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PhaseKind {
    Idle,
    Waiting(Step),
    Registered,
    Backoff(Step),
    Deregistering,
    Stopped,
}

impl From<&Phase> for PhaseKind {
    fn from(p: &Phase) -> PhaseKind {
        match p {
            Phase::Idle => PhaseKind::Idle,
            Phase::Waiting { step, .. } => PhaseKind::Waiting(*step),
            Phase::Registered => PhaseKind::Registered,
            Phase::Backoff { step } => PhaseKind::Backoff(*step),
            Phase::Deregistering { .. } => PhaseKind::Deregistering,
            Phase::Stopped => PhaseKind::Stopped,
        }
    }
}

/// State changes at info level, the routine check at debug: one line per
/// change, not one per check interval.
fn log_phase(phase: &Phase, last: &mut Option<PhaseKind>, wake: Option<Duration>) {
    let now = PhaseKind::from(phase);
    if *last == Some(now) {
        return;
    }
    let routine = matches!(now, PhaseKind::Waiting(Step::Check) | PhaseKind::Registered)
        && matches!(
            *last,
            Some(PhaseKind::Waiting(Step::Check) | PhaseKind::Registered)
        );
    *last = Some(now);
    match now {
        _ if routine => debug!(phase = ?phase, "registration"),
        PhaseKind::Backoff(step) => {
            let retry = wake.map(|d| {
                humantime::format_duration(Duration::from_millis(d.as_millis() as u64)).to_string()
            });
            warn!(step = ?step, retry_in = retry.as_deref().unwrap_or("-"), "registrar did not answer; retrying")
        }
        PhaseKind::Waiting(step) => info!(step = ?step, "registration: {}", describe(step)),
        _ => debug!(phase = ?phase, "registration"),
    }
}

fn describe(step: Step) -> &'static str {
    match step {
        Step::CleanStale => "deleting a stale own <remoteCSE> at the registrar",
        Step::Create => "creating the own <remoteCSE> at the registrar",
        Step::Adopt => "retrieving the existing own <remoteCSE> at the registrar",
        Step::Update => "updating the own <remoteCSE> at the registrar",
        Step::FetchBase => "retrieving the registrar's <CSEBase>",
        Step::Check => "checking the own <remoteCSE> at the registrar",
    }
}

async fn sleep_opt(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// Registrar side of liveness (ACME `_checkCSRLiveliness`): every interval,
/// RETRIEVE each registree's CSEBase; one that does not answer 2000 loses
/// its CSR. Skipped while the broker is away: silence then proves nothing.
async fn watch_registrees(node: Node, interval: Duration) {
    let mut counter = 0u64;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        if !node.transport.is_connected() {
            continue;
        }
        let (probes, own) = {
            let s = node.lock();
            (s.registrar.liveness_probes(), s.registrar.own().clone())
        };
        for (csi, cb) in probes {
            counter += 1;
            let node = node.clone();
            let own = own.clone();
            tokio::spawn(async move {
                let now = Timestamp::now();
                let mut req = Request::new(
                    crate::primitive::Operation::Retrieve,
                    cb,
                    own.as_str(),
                    format!("live-{}-{counter}", now.0 % 1_000_000),
                );
                req.rvi = Some(crate::primitive::OWN_RVI.into());
                req.ot = Some(now.to_onem2m());
                req.rqet = Some(now.plus(node.transport.timeout()).to_onem2m());
                let rsp = node
                    .transport
                    .request(&req, csi.as_str(), Format::Json)
                    .await;
                if rsp.rsc == Rsc::OK || !node.transport.is_connected() {
                    return;
                }
                let removed = node.lock().registrar.liveness_result(&csi, rsp.rsc);
                if removed {
                    info!(registree = %csi, rsc = %rsp.rsc, "registree is gone; removed its <remoteCSE>");
                    node.store_changed();
                }
            });
        }
    }
}
