//! Shared pieces of the broker benches (storm.rs, liveness.rs): an
//! `m2mnode run` process at the production log level, its resident memory,
//! and a raw MQTT client that pipelines CSR requests as many originators.
//!
//! Include after `common` (the integration-test harness):
//! `#[path = "../tests/common/mod.rs"] mod common; mod support;`
#![allow(dead_code)]

use crate::common::{scratch, wait_until, BIN};
use m2mnode::id::to_topic_segment;
use m2mnode::primitive::{Format, Operation, Request, ResourceType, Rsc};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// `cargo test --all-targets` runs benches once without `--bench`: keep that quick.
pub fn quick() -> bool {
    std::env::args().any(|a| a == "--test") || !std::env::args().any(|a| a == "--bench")
}

pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// An `m2mnode run` process logging at the default level (info), as in
/// production; killed on drop.
pub struct NodeProc {
    child: Child,
    pub dir: PathBuf,
    pub log_path: PathBuf,
}

/// Runs the process `cmd` starts, and every thread it makes, on `cpu` only.
/// The load bench puts the node and the echo it is compared with on one
/// core: on a 2-core machine the core a sleeping responder wakes on
/// otherwise swings its latency by 2x from one second to the next.
pub fn pin(cmd: &mut Command, cpu: usize) {
    use std::os::unix::process::CommandExt;
    // SAFETY: runs in the child between fork and exec, and calls only
    // sched_setaffinity(2), which is async-signal-safe; the set is built
    // before the fork.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    unsafe { libc::CPU_SET(cpu, &mut set) };
    unsafe {
        cmd.pre_exec(move || {
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The core the load bench pins its responders to: the last one, when
/// there are two or more.
pub fn responder_cpu() -> Option<usize> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    (cores >= 2).then(|| cores - 1)
}

impl NodeProc {
    pub fn start(name: &str, config: &str) -> NodeProc {
        NodeProc::start_on(name, config, None)
    }

    /// As [`NodeProc::start`], pinned to `cpu` if given ([`pin`]).
    pub fn start_on(name: &str, config: &str, cpu: Option<usize>) -> NodeProc {
        let dir = scratch(name);
        let cfg = dir.join("node.toml");
        std::fs::write(&cfg, config).expect("write config");
        let log_path = dir.join("node.log");
        let log = std::fs::File::create(&log_path).expect("log");
        let mut cmd = Command::new(BIN);
        cmd.args(["run", "--config"])
            .arg(&cfg)
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(cpu) = cpu {
            pin(&mut cmd, cpu);
        }
        let child = cmd.spawn().expect("start m2mnode");
        let n = NodeProc {
            child,
            dir,
            log_path,
        };
        // It answers `m2mnode status` (exit 0, or 1 while not registered)
        // once connected and subscribed.
        wait_until(Duration::from_secs(10), "the node to connect", || {
            Command::new(BIN)
                .args(["status", "--timeout", "1s", "--config"])
                .arg(&cfg)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| matches!(s.code(), Some(0 | 1)))
        });
        n
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Resident memory in bytes (VmRSS).
    pub fn rss(&self) -> u64 {
        rss_kib(self.pid()).unwrap_or(0) * 1024
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// A raw MQTT client: publishes on any topic (so each request can carry its
/// own originator in the topic) and hands on every publish it receives.
pub struct Raw {
    pub client: AsyncClient,
    pub rx: mpsc::UnboundedReceiver<(String, bytes::Bytes)>,
}

impl Raw {
    /// Connects to the broker on `port` and subscribes to `filters` (QoS 1),
    /// returning once the subscriptions are acknowledged.
    pub async fn connect(port: u16, name: &str, filters: &[&str]) -> Raw {
        static N: AtomicU32 = AtomicU32::new(0);
        let id = format!(
            "bench-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(30))
            .set_clean_session(true)
            .set_max_packet_size(1 << 20, 1 << 20)
            .set_inflight(256);
        let (client, mut eventloop) = AsyncClient::new(opts, 1024);
        let mut net = rumqttc::NetworkOptions::new();
        net.set_tcp_nodelay(true);
        eventloop.set_network_options(net);
        let (tx, rx) = mpsc::unbounded_channel();
        let (subscribed, ready) = oneshot::channel::<()>();
        let want = filters.len();
        tokio::spawn(async move {
            let mut subscribed = Some(subscribed);
            let mut subacks = 0;
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if tx.send((p.topic, p.payload)).is_err() {
                            break;
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        subacks += 1;
                        if subacks >= want {
                            if let Some(s) = subscribed.take() {
                                let _ = s.send(());
                            }
                        }
                    }
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => break,
                    Ok(_) => {}
                    Err(e) => {
                        if tx.is_closed() {
                            break;
                        }
                        eprintln!("bench MQTT client: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        for f in filters {
            client
                .subscribe(*f, QoS::AtLeastOnce)
                .await
                .expect("subscribe");
        }
        if want > 0 {
            tokio::time::timeout(Duration::from_secs(10), ready)
                .await
                .expect("subscribed in time")
                .expect("subscribed");
        }
        Raw { client, rx }
    }

    pub async fn publish(&self, topic: String, payload: Vec<u8>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .expect("publish");
    }

    pub async fn close(self) {
        let _ = self.client.disconnect().await;
    }
}

/// The request topic from `orig` to `/id-in`.
pub fn req_topic(orig: &str) -> String {
    format!("/oneM2M/req/{}/id-in/json", to_topic_segment(orig))
}

pub fn csr_create(csi: &str, rqi: &str) -> Vec<u8> {
    let mut r = Request::new(Operation::Create, "/id-in/cse-in", csi, rqi);
    r.ty = Some(ResourceType::REMOTE_CSE);
    r.rvi = Some("3".into());
    r.pc = Some(serde_json::json!({"m2m:csr": {
        "csi": csi, "cb": format!("{csi}/cse"), "rr": true, "srv": ["3"],
    }}));
    Format::Json.encode(&r).expect("json")
}

pub fn csr_request(op: Operation, csi: &str, fr: &str, rqi: &str) -> Vec<u8> {
    let mut r = Request::new(
        op,
        format!("/id-in/cse-in/{}", csi.trim_start_matches('/')),
        fr,
        rqi,
    );
    r.rvi = Some("3".into());
    Format::Json.encode(&r).expect("json")
}

/// What a pipelined phase did.
#[derive(Clone, Debug, Default)]
pub struct Phase {
    pub sent: usize,
    pub answered: usize,
    /// Answers with a code outside 2xxx.
    pub non_2xxx: usize,
    /// 2xxx answers, but not the expected code.
    pub unexpected: usize,
    pub elapsed: Duration,
    pub timed_out: bool,
}

impl Phase {
    pub fn rate(&self) -> f64 {
        self.answered as f64 / self.elapsed.as_secs_f64()
    }
}

/// Sends `n` requests built by `make(i)` = (originator, payload) with at most
/// `window` unanswered, and waits for every answer (or `limit`). Answers
/// whose rqi does not start with `prefix` are not counted (stale ones).
pub async fn pipeline(
    raw: &mut Raw,
    n: usize,
    window: usize,
    prefix: &str,
    expect: Rsc,
    limit: Duration,
    mut make: impl FnMut(usize) -> (String, Vec<u8>),
) -> Phase {
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + limit;
    let mut p = Phase::default();
    while p.answered < n {
        while p.sent < n && p.sent - p.answered < window {
            let (orig, payload) = make(p.sent);
            raw.publish(req_topic(&orig), payload).await;
            p.sent += 1;
        }
        let got = tokio::time::timeout_at(deadline, raw.rx.recv()).await;
        let Ok(Some((_topic, payload))) = got else {
            p.timed_out = true;
            break;
        };
        let Ok(rsp) = Format::Json.decode_response(&payload) else {
            continue;
        };
        if !rsp.rqi.starts_with(prefix) {
            continue;
        }
        p.answered += 1;
        if !rsp.rsc.is_success() {
            p.non_2xxx += 1;
            if p.non_2xxx <= 3 {
                eprintln!("  {prefix}: answer {} {:?}", rsp.rsc, rsp.debug_text());
            }
        } else if rsp.rsc != expect {
            p.unexpected += 1;
        }
    }
    p.elapsed = start.elapsed();
    p
}
