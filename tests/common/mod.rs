//! Integration-test harness: a real Mosquitto on a free port, m2mnode
//! processes, and a oneM2M test client (`mqtt.rs`, on rumqttc, over the
//! real broker). Every process is killed on drop, so a failing test leaves
//! nothing behind.
#![allow(dead_code)]

pub mod acme;
pub mod mqtt;
pub mod standin;

use m2mnode::primitive::{Format, Operation, Request, Response};
use mqtt::MqttClient;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A fresh directory under the target dir for one test.
pub fn scratch(name: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn mosquitto_binary() -> PathBuf {
    let candidates = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")]);
    for dir in candidates {
        let bin = dir.join("mosquitto");
        if bin.is_file() {
            return bin;
        }
    }
    panic!("mosquitto is not installed: run the README test command (./test.sh, run by .ci/run), which installs it");
}

pub fn wait_until(timeout: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

pub struct Mosquitto {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    template: &'static str,
    vars: Vec<(String, String)>,
}

impl Mosquitto {
    pub fn start() -> Mosquitto {
        Mosquitto::start_on(free_port())
    }

    pub fn start_on(port: u16) -> Mosquitto {
        Mosquitto::start_with(port, "test.conf", Vec::new())
    }

    /// A broker from `mosquitto/<template>` with `@NAME@` placeholders filled.
    pub fn start_with(port: u16, template: &'static str, vars: Vec<(String, String)>) -> Mosquitto {
        let mut m = Mosquitto {
            child: None,
            port,
            dir: scratch("mosquitto"),
            template,
            vars,
        };
        m.launch();
        m
    }

    fn launch(&mut self) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("mosquitto")
            .join(self.template);
        let mut text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        text = text.replace("@PORT@", &self.port.to_string());
        for (k, v) in &self.vars {
            text = text.replace(&format!("@{k}@"), v);
        }
        let conf = self.dir.join("mosquitto.conf");
        std::fs::write(&conf, text).expect("write conf");
        let log = std::fs::File::create(self.dir.join("mosquitto.log")).expect("log");
        let child = Command::new(mosquitto_binary())
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start mosquitto");
        self.child = Some(child);
        let port = self.port;
        wait_until(Duration::from_secs(10), "mosquitto to listen", || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills the broker (losing every session) and starts it again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
    }
}

pub const BIN: &str = env!("CARGO_BIN_EXE_m2mnode");

/// Config text for a node.
pub fn node_config(
    id: &str,
    name: &str,
    ty: &str,
    broker: &str,
    data_dir: Option<&Path>,
    registrar: Option<(&str, &str)>,
    check: &str,
) -> String {
    let mut s = format!("[cse]\nid = \"{id}\"\nname = \"{name}\"\ntype = \"{ty}\"\n");
    if let Some(d) = data_dir {
        s += &format!("data_dir = \"{}\"\n", d.display());
    }
    s += &format!("\n[mqtt]\nurl = \"{broker}\"\ntimeout = \"2s\"\n");
    if let Some((rid, rname)) = registrar {
        s += &format!(
            "\n[registrar]\nid = \"{rid}\"\nname = \"{rname}\"\ncheck_interval = \"{check}\"\n"
        );
    }
    s += &format!("\n[registrees]\ncheck_interval = \"{check}\"\n");
    s
}

/// An `m2mnode run` process.
pub struct Node {
    child: Option<Child>,
    pub dir: PathBuf,
    pub log_path: PathBuf,
    config: PathBuf,
}

impl Node {
    pub fn start(name: &str, config: &str) -> Node {
        let dir = scratch(name);
        let cfg = dir.join("node.toml");
        std::fs::write(&cfg, config).expect("write config");
        let mut n = Node {
            child: None,
            log_path: dir.join("node.log"),
            dir,
            config: cfg,
        };
        n.launch();
        n
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("log");
        let child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "m2mnode=debug")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start m2mnode");
        self.child = Some(child);
    }

    /// Whether the process is still running (not exited).
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log_path) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    pub fn wait_log(&self, needle: &str, timeout: Duration) {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if self.log().contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "no {needle:?} in the node log within {timeout:?}:\n{}",
            self.log()
        );
    }

    pub fn count_in_log(&self, needle: &str) -> usize {
        self.log().matches(needle).count()
    }

    /// A mark in the log: count only what comes after it.
    pub fn mark(&self) -> usize {
        self.log().len()
    }

    pub fn count_since(&self, mark: usize, needle: &str) -> usize {
        self.log()
            .get(mark..)
            .unwrap_or_default()
            .matches(needle)
            .count()
    }

    /// SIGTERM, then wait for the exit; returns whether it exited in time.
    pub fn terminate(&mut self, timeout: Duration) -> bool {
        let Some(mut c) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Ok(Some(_)) = c.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = c.kill();
        let _ = c.wait();
        false
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the same node again (same config and data_dir).
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `m2mnode request ...`: (exit code, stdout, stderr).
pub fn cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg("request")
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run m2mnode request");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A oneM2M client on the broker with originator `own`.
pub struct Client {
    link: Link,
    pub own: String,
    n: AtomicU32,
}

/// How a test client reaches the node.
enum Link {
    /// Over the real broker, as peers do.
    Mqtt {
        t: MqttClient,
        rt: tokio::runtime::Runtime,
    },
    /// Straight into an engine in this process: the same primitives, as
    /// bytes on the same routes, without a broker (issue: tests that hit the
    /// core).
    Engine(std::rc::Rc<std::cell::RefCell<m2mnode::engine::Engine>>),
}

/// A node's engine in this process, connected and not durable: the
/// registrar's request handling, checked in microseconds.
pub struct InProcess {
    engine: std::rc::Rc<std::cell::RefCell<m2mnode::engine::Engine>>,
}

impl InProcess {
    pub fn new(config: &str) -> InProcess {
        let cfg = m2mnode::config::Config::from_str(config, Path::new("in-process.toml"))
            .expect("config");
        let now = m2mnode::time::Now::system();
        let mut e = m2mnode::engine::Engine::new(cfg.engine_settings(now.wall, now.wall.0), now);
        e.connection(true, now);
        while e.poll_transmit().is_some() {}
        InProcess {
            engine: std::rc::Rc::new(std::cell::RefCell::new(e)),
        }
    }

    pub fn connect(&self, own: &str) -> Client {
        Client {
            link: Link::Engine(self.engine.clone()),
            own: own.to_owned(),
            n: AtomicU32::new(0),
        }
    }
}

/// Hands `payload` to the engine as a publish on `topic` and returns the
/// answer that carries `rqi`, if any (4008 when none: e.g. a forward).
fn engine_exchange(
    engine: &std::cell::RefCell<m2mnode::engine::Engine>,
    topic: &str,
    rqi: &str,
    format: Format,
    payload: &[u8],
) -> Response {
    use m2mnode::engine::Transmit;
    let route = m2mnode::topic::parse(topic).expect("a oneM2M topic");
    let now = m2mnode::time::Now::system();
    let mut e = engine.borrow_mut();
    e.handle_request(route, payload, None, now);
    let mut answer = None;
    loop {
        while let Some(b) = e.poll_store() {
            e.store_committed(b.seq, now);
        }
        let Some(t) = e.poll_transmit() else { break };
        if let Transmit::Response { payload, .. } = t {
            if let Ok(rsp) = format.decode_response(&payload) {
                if rsp.rqi == rqi {
                    answer = Some(rsp);
                }
            }
        }
    }
    while e.poll_event().is_some() {}
    answer.unwrap_or_else(|| {
        Response::error(
            m2mnode::primitive::Rsc::REQUEST_TIMEOUT,
            rqi,
            "no answer in process",
        )
    })
}

impl Client {
    pub fn connect(broker: &Mosquitto, own: &str) -> Client {
        Client::connect_as(broker, own, None)
    }

    /// Connects with broker credentials (user, password).
    pub fn connect_as(broker: &Mosquitto, own: &str, login: Option<(&str, &str)>) -> Client {
        Client::connect_url(&broker.url(), own, login, "")
    }

    /// Connects to the broker at `url` (any broker), topics under `prefix`.
    pub fn connect_url(url: &str, own: &str, login: Option<(&str, &str)>, prefix: &str) -> Client {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let mut opts = mqtt::Options::new(
            url,
            format!("test-{}-{}", own.replace('/', "_"), free_port()),
            own,
        );
        opts.prefix = prefix.to_owned();
        opts.login = login.map(|(u, p)| (u.to_owned(), p.to_owned()));
        let t = rt.block_on(async {
            let (t, mut rx) = MqttClient::connect(opts, Duration::from_secs(10))
                .await
                .unwrap_or_else(|e| panic!("test client {own}: {e}"));
            // Keep draining (requests to the test client are not expected).
            tokio::spawn(async move { while rx.recv().await.is_some() {} });
            t
        });
        Client {
            link: Link::Mqtt { t, rt },
            own: own.to_owned(),
            n: AtomicU32::new(0),
        }
    }

    /// Unique in this process, across clients: a client made again for the
    /// same originator must not repeat an rqi (the node would rightly take
    /// it for a duplicate and answer from its cache).
    pub fn rqi(&self) -> String {
        static ALL: AtomicU32 = AtomicU32::new(0);
        let _ = self.n.fetch_add(1, Ordering::Relaxed);
        format!(
            "t{}-{}",
            self.own.replace('/', ""),
            ALL.fetch_add(1, Ordering::Relaxed)
        )
    }

    pub fn req(&self, op: Operation, to: &str) -> Request {
        let mut r = Request::new(op, to, self.own.as_str(), self.rqi());
        r.rvi = Some("3".into());
        r
    }

    pub fn send(&self, req: &Request, receiver: &str) -> Response {
        self.send_as(req, receiver, Format::Json)
    }

    pub fn send_as(&self, req: &Request, receiver: &str, format: Format) -> Response {
        match &self.link {
            Link::Mqtt { t, rt } => rt.block_on(t.request(req, receiver, format)),
            Link::Engine(e) => {
                let topic = m2mnode::topic::request_topic(&self.own, receiver, format);
                let payload = format.encode(req).expect("encode");
                engine_exchange(e, &topic, &req.rqi, format, &payload)
            }
        }
    }

    pub fn raw(
        &self,
        receiver: &str,
        rqi: &str,
        format: Format,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Response {
        match &self.link {
            Link::Mqtt { t, rt } => {
                rt.block_on(t.exchange(receiver, rqi, format, payload, timeout))
            }
            Link::Engine(e) => {
                let topic = m2mnode::topic::request_topic(&self.own, receiver, format);
                engine_exchange(e, &topic, rqi, format, &payload)
            }
        }
    }

    pub fn publish(&self, topic: &str, payload: Vec<u8>) {
        match &self.link {
            Link::Mqtt { t, rt } => rt.block_on(t.publish(topic, payload)),
            Link::Engine(e) => {
                engine_exchange(e, topic, "", Format::Json, &payload);
            }
        }
    }
}

impl Client {
    /// The status object of the node `cse` (CSEBase `cb`), asked over this
    /// client's link; `None` without an answer.
    /// The node answers it only to the hop `Cm2mnode-status` speaking for
    /// itself (or its admin): connect this client as that.
    pub fn status_of(&self, cse: &str, cb: &str) -> Option<serde_json::Value> {
        let r = self.send(
            &self.req(Operation::Retrieve, &format!("{cse}/{cb}/m2mnode-status")),
            cse,
        );
        r.pc?.get("m2mnode:status").cloned()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Link::Mqtt { t, rt } = &self.link {
            rt.block_on(t.close());
        }
    }
}

/// The CREATE content of a CSR for `csi`, with extra attributes merged in.
pub fn csr_body(csi: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut body = serde_json::json!({
        "csi": csi,
        "cb": format!("{csi}/cse"),
        "rr": true,
        "srv": ["3"],
    });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            if v.is_null() {
                b.remove(k);
            } else {
                b.insert(k.clone(), v.clone());
            }
        }
    }
    serde_json::json!({ "m2m:csr": body })
}

impl Node {
    /// Sends a signal (`HUP`, `USR1`, ...) to the running node.
    pub fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(c.id().to_string())
                .status();
        }
    }

    /// Replaces the node's config file (for a reload).
    pub fn rewrite_config(&self, text: &str) {
        std::fs::write(&self.config, text).expect("rewrite config");
    }
}

impl Node {
    /// Resident memory of the running node in bytes (Linux /proc).
    pub fn rss(&self) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    }
}

impl Node {
    pub fn config_path(&self) -> &Path {
        &self.config
    }
}

/// The node's state as `m2mnode status --json` reports it (the status
/// resource, docs/operations.md): tests wait on states, not on log text.
impl Node {
    /// The `m2mnode:status` object, or `None` while the node gives none
    /// (not running, not connected and subscribed yet).
    pub fn status(&self) -> Option<serde_json::Value> {
        let out = Command::new(BIN)
            .args(["status", "--json", "--timeout", "2s", "--config"])
            .arg(&self.config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        // A failed status prints an error object ({"error": ...}): no status.
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .ok()
            .filter(|v| v.get("error").is_none())
    }

    /// Polls the status until `ok` holds; returns the status that did.
    #[track_caller]
    pub fn wait_status(
        &self,
        timeout: Duration,
        what: &str,
        mut ok: impl FnMut(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let end = Instant::now() + timeout;
        let mut last = None;
        loop {
            if let Some(s) = self.status() {
                if ok(&s) {
                    return s;
                }
                last = Some(s);
            }
            if Instant::now() >= end {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "timed out after {timeout:?} waiting for {what}; last status: {}\nnode log:\n{}",
            last.map_or("none".into(), |s| s.to_string()),
            self.log()
        );
    }

    /// The status now; panics if the node gives none within 10 s.
    #[track_caller]
    pub fn status_now(&self) -> serde_json::Value {
        self.wait_status(Duration::from_secs(10), "a status", |_| true)
    }

    /// Connected to its broker(s) and subscribed: it answers its status.
    #[track_caller]
    pub fn wait_connected(&self, timeout: Duration) -> serde_json::Value {
        self.wait_status(timeout, "the node to be connected", |s| {
            s["connected"] == true
        })
    }

    /// Registered at its registrar.
    #[track_caller]
    pub fn wait_registered(&self, timeout: Duration) -> serde_json::Value {
        self.wait_status(timeout, "the node to be registered", |s| {
            s["registrar"]["registered"] == true
        })
    }

    /// A number of the status's `counts` (`"registered"`,
    /// `"handled/create"`, `"connects/local"`); panics without a status.
    #[track_caller]
    pub fn count(&self, name: &str) -> u64 {
        count_of(&self.status_now(), name)
    }

    /// Waits until the own registration's check has been answered `n` more
    /// times (the status's `registrar.last_check` took `n` new values).
    #[track_caller]
    pub fn wait_checks(&self, n: usize, timeout: Duration) {
        wait_new_values(
            timeout,
            "answered checks of the own registration",
            n,
            || self.status(),
            |s| s["registrar"]["last_check"].clone(),
        );
    }

    /// Waits until the registree `csi` has answered `n` more liveness
    /// checks (its `last_ok` took `n` new values).
    #[track_caller]
    pub fn wait_probes(&self, csi: &str, n: usize, timeout: Duration) {
        wait_new_values(
            timeout,
            &format!("answered checks of {csi}"),
            n,
            || self.status(),
            |s| registree(s, csi)["last_ok"].clone(),
        );
    }
}

/// The entry of registree `csi` in a status object (`null` if absent).
pub fn registree(status: &serde_json::Value, csi: &str) -> serde_json::Value {
    status["registrees"]
        .as_array()
        .and_then(|all| all.iter().find(|r| r["csi"] == csi))
        .cloned()
        .unwrap_or_default()
}

/// Polls statuses from `fetch` until `pick` of them has taken `n` values
/// other than the first one seen (a clock in the status moving on).
#[track_caller]
pub fn wait_new_values(
    timeout: Duration,
    what: &str,
    n: usize,
    mut fetch: impl FnMut() -> Option<serde_json::Value>,
    pick: impl Fn(&serde_json::Value) -> serde_json::Value,
) {
    let mut seen: Vec<serde_json::Value> = Vec::new();
    wait_until(timeout, &format!("{n} new {what}"), || {
        if let Some(v) = fetch().map(|s| pick(&s)) {
            if !v.is_null() && !seen.contains(&v) {
                seen.push(v);
            }
        }
        seen.len() > n
    });
}

/// A number of a status object's `counts` (see [`Node::count`]).
pub fn count_of(status: &serde_json::Value, name: &str) -> u64 {
    status["counts"]
        .pointer(&format!("/{name}"))
        .and_then(serde_json::Value::as_u64)
        .unwrap_or_else(|| panic!("no count {name} in the status: {status}"))
}

/// A tiny tmpfs, unmounted (and its mount point removed) when dropped, also
/// when the test fails.
pub struct Tmpfs(pub PathBuf);

impl Tmpfs {
    pub fn mount(size: &str) -> Result<Tmpfs, String> {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "m2mnode-tmpfs-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output();
        match out {
            Ok(o) if o.status.success() => Ok(Tmpfs(dir)),
            Ok(o) => {
                let _ = std::fs::remove_dir(&dir);
                Err(String::from_utf8_lossy(&o.stderr).trim().to_owned())
            }
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                Err(format!("cannot run mount: {e}"))
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Still busy (e.g. a panic left a file open): detach it anyway.
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Writes to `path` until the file system says it is full.
pub fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).expect("create filler");
    for chunk in [64 * 1024, 4096, 512, 1] {
        let buf = vec![0xa5u8; chunk];
        while let Ok(n) = f.write(&buf) {
            if n == 0 {
                break;
            }
        }
    }
    let _ = f.sync_all();
}

/// A registree simulated by a test client that answers requests addressed
/// to it (for 30 s); subscribed when this returns.
pub fn responder(
    broker: &Mosquitto,
    own: &'static str,
    cb_rn: &'static str,
) -> std::thread::JoinHandle<()> {
    responder_counting(broker, own, cb_rn, Default::default())
}

/// The same, counting the requests it receives.
pub fn responder_counting(
    broker: &Mosquitto,
    own: &'static str,
    cb_rn: &'static str,
    seen: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> std::thread::JoinHandle<()> {
    let url = broker.url();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        rt.block_on(async move {
            let opts = mqtt::Options::new(&url, format!("responder-{own}"), own);
            let (t, mut rx) = MqttClient::connect(opts, Duration::from_secs(10))
                .await
                .expect("responder connects");
            let _ = ready_tx.send(());
            let end = tokio::time::Instant::now() + Duration::from_secs(30);
            while let Ok(Some(ev)) = tokio::time::timeout_at(end, rx.recv()).await {
                if let mqtt::Incoming::Request { route, payload } = ev {
                    seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Ok(fmt) = route.format else { continue };
                    let Ok(req) = fmt.decode_request(&payload) else {
                        continue;
                    };
                    let rsp = if req.to == format!("{own}/{cb_rn}") {
                        m2mnode::primitive::Response::new(m2mnode::primitive::Rsc::OK, req.rqi)
                            .with_pc(
                                serde_json::json!({"m2m:cb": {"csi": own, "rn": cb_rn, "ri": "x"}}),
                            )
                    } else {
                        m2mnode::primitive::Response::error(
                            m2mnode::primitive::Rsc::NOT_FOUND,
                            req.rqi,
                            "nothing here",
                        )
                    };
                    t.answer(&route, fmt, &rsp).await;
                }
            }
        });
    });
    // Subscribed before it is handed out: nothing sent to it is lost.
    ready_rx
        .recv_timeout(Duration::from_secs(15))
        .expect("the responder connects and subscribes");
    handle
}

/// A private CA, a server certificate for 127.0.0.1 and a client certificate,
/// made with the openssl command line for this test only.
pub fn make_certificates(dir: &std::path::Path) -> bool {
    let run = |args: &[&str]| {
        std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ok = run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=m2mnode test CA",
        ],
    ]
    .concat());
    for (name, san) in [
        ("server", "subjectAltName=IP:127.0.0.1"),
        ("client", "subjectAltName=DNS:client"),
    ] {
        std::fs::write(dir.join(format!("{name}.ext")), san).expect("ext");
        ok &= run(&[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={name}"),
            ],
        ]
        .concat());
        ok &= run(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &format!("{name}.crt"),
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
        ]);
    }
    // Mosquitto started as root drops to its own user, which must read the key.
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(
        dir.join("server.key"),
        std::fs::Permissions::from_mode(0o644),
    );
    ok
}

/// A durable store with `n` plain registrees, written before the node starts
/// (registering 5,000 CSEs over MQTT would take 5,000 clients).
pub fn store_with_registrees(dir: &Path, n: usize, dcse: usize) {
    use m2mnode::persist::{Persistence, Sqlite, StoreChange};
    use m2mnode::primitive::ResourceType;
    use m2mnode::resource::RemoteCse;
    let mut db = Sqlite::open(dir).expect("store");
    // In transactions of 10,000: a store of 100,000 is one bench's start.
    for chunk in (0..n).collect::<Vec<_>>().chunks(10_000) {
        let changes: Vec<StoreChange> = chunk
            .iter()
            .map(|&i| {
                let csi = format!("/id-r{i:06}");
                let ri = csi[1..].to_owned();
                StoreChange::Put {
                    ri: ri.clone(),
                    csr: RemoteCse {
                        rn: Some(ri.clone()),
                        ri: Some(ri),
                        pi: Some("cse-in".into()),
                        ty: Some(ResourceType::REMOTE_CSE),
                        ct: Some("20250101T000000,000000".into()),
                        lt: Some("20250101T000000,000000".into()),
                        csi: Some(csi.clone()),
                        cb: Some(format!("{csi}/cb")),
                        rr: Some(true),
                        srv: Some(vec!["3".into()]),
                        dcse: (dcse > 0)
                            .then(|| (0..dcse).map(|j| format!("/id-d{i}-{j}")).collect()),
                        ..RemoteCse::default()
                    },
                }
            })
            .collect();
        db.commit(&changes).expect("commit");
    }
}

/// How long the IN `/id-in` (CSEBase `cse-in`) on `broker` takes to answer a
/// CSEBase RETRIEVE when quiet, and right behind `n` status requests of its
/// health-check user published at once: (quiet, busy).
pub fn cse_base_behind_status_requests(broker: &Mosquitto, n: usize) -> (Duration, Duration) {
    let st = Client::connect(broker, "Cm2mnode-status");
    let x = Client::connect(broker, "/id-x");
    let base = || {
        let t = Instant::now();
        let rsp = x.send(&x.req(Operation::Retrieve, "/id-in/cse-in"), "/id-in");
        assert_eq!(rsp.rsc, m2mnode::primitive::Rsc::OK);
        t.elapsed()
    };
    let quiet = base();
    for _ in 0..n {
        let r = st.req(Operation::Retrieve, "/id-in/cse-in/m2mnode-status");
        st.publish(
            "/oneM2M/req/Cm2mnode-status/id-in/json",
            Format::Json.encode(&r).expect("json"),
        );
    }
    (quiet, base())
}
