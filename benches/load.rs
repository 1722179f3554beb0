//! Load benchmark: CSR RETRIEVE round trips through a real Mosquitto to an
//! `m2mnode run` registrar, against a baseline measured in the same run: a
//! bare echo responder on the same broker that decodes each request and
//! answers it with a canned CSR, without any oneM2M processing. The ratio
//! is what the node costs over MQTT itself. Bounded in count and time;
//! loopback only.
//!
//! The echo runs as a process of its own (this bench binary, started again
//! with `M2M_LOAD_ECHO_PROCESS`), on a current-thread runtime as the node
//! does: a responder inside the load meter's own busy process is spared the
//! wake-up of a sleeping process that every real responder pays, and on two
//! cores that alone measured 2x (docs/benchmarks.md, "The wire path").
//! `M2M_LOAD_ECHO=in-process` measures that echo instead, for comparison.
//!
//! Two modes, as a user feels the node (issue "the wire path"), each with 4
//! clients: latency (1 request in flight per client; p50/p99 against the
//! echo) and throughput (64 in flight per client). Each mode runs several
//! rounds; a round measures the echo, then the node, then the echo again, so
//! drift of the machine shows; the ratio is against the mean of the two
//! echoes, and the median over the rounds is reported.
//! Targets: p50 <= 1.1x echo at 1 in flight, throughput >= 0.9x at 64.
//!
//! cargo bench --bench load   (M2M_LOAD_REQUESTS=5000, M2M_LOAD_ROUNDS=3)

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use common::mqtt::{Incoming, MqttClient, Options};
use common::{node_config, Mosquitto};
use m2mnode::primitive::{Format, Operation, Request, ResourceType, Response, Rsc};
use std::time::{Duration, Instant};
use support::{env_or, pin, quick, responder_cpu, rss_kib, NodeProc};

async fn connect(
    broker: &Mosquitto,
    own: &str,
) -> (MqttClient, tokio::sync::mpsc::UnboundedReceiver<Incoming>) {
    let mut opts = Options::new(
        &broker.url(),
        format!("load-{}", own.trim_start_matches('/')),
        own,
    );
    opts.timeout = Duration::from_secs(10);
    MqttClient::connect(opts, Duration::from_secs(10))
        .await
        .expect("connect")
}

/// Clients of the load meter (each its own MQTT connection).
const CLIENTS: usize = 4;

/// What one system did in one measure: every round trip's latency.
#[derive(Default)]
struct Samples {
    latencies: Vec<Duration>,
    elapsed: Duration,
    errors: usize,
}

impl Samples {
    fn add(&mut self, other: Samples) {
        self.latencies.extend(other.latencies);
        self.elapsed += other.elapsed;
        self.errors += other.errors;
    }

    fn rps(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    fn pct(&mut self, p: f64) -> Duration {
        self.latencies.sort_unstable();
        let n = self.latencies.len();
        self.latencies[((n as f64 * p) as usize).min(n - 1)]
    }
}

/// `total` RETRIEVEs of `to` at `receiver`, spread over `clients`, each
/// with `per_client` in flight; `tag` keeps every rqi of the run unique.
async fn drive(
    clients: &[MqttClient],
    (receiver, to): (&str, &str),
    total: usize,
    per_client: usize,
    tag: &str,
) -> Samples {
    let start = Instant::now();
    let workers = clients.len() * per_client;
    let mut tasks = Vec::new();
    for w in 0..workers {
        let client = clients[w % clients.len()].clone();
        let (receiver, to, tag) = (receiver.to_owned(), to.to_owned(), tag.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0;
            for i in (w..total).step_by(workers) {
                let mut req = Request::new(
                    Operation::Retrieve,
                    to.as_str(),
                    client.own(),
                    format!("l{tag}-{w}-{i}"),
                );
                req.rvi = Some("3".into());
                let t0 = Instant::now();
                let rsp = client.request(&req, &receiver, Format::Json).await;
                lat.push(t0.elapsed());
                if rsp.rsc != Rsc::OK {
                    errors += 1;
                }
            }
            (lat, errors)
        }));
    }
    let mut samples = Samples::default();
    for t in tasks {
        let (lat, e) = t.await.expect("worker");
        samples.latencies.extend(lat);
        samples.errors += e;
    }
    samples.elapsed = start.elapsed();
    samples
}

/// One round: `total` requests to each system in `slices` alternating
/// slices (echo, node, node, echo, echo, ...), so that the machine's
/// drift and its fast swings (which core the responder wakes on) fall on
/// both alike. Returns the echo's first and second half, and the node.
async fn round(
    clients: &[MqttClient],
    echo: (&str, &str),
    node: (&str, &str),
    total: usize,
    per_client: usize,
    slices: usize,
    tag: &str,
) -> (Samples, Samples, Samples) {
    let (mut first, mut second, mut ours) =
        (Samples::default(), Samples::default(), Samples::default());
    let per_slice = (total / slices).max(1);
    for s in 0..slices {
        let echo_half: &mut Samples = if s < slices / 2 {
            &mut first
        } else {
            &mut second
        };
        let tag = format!("{tag}s{s}");
        if s % 2 == 0 {
            echo_half.add(drive(clients, echo, per_slice, per_client, &tag).await);
            ours.add(drive(clients, node, per_slice, per_client, &tag).await);
        } else {
            ours.add(drive(clients, node, per_slice, per_client, &tag).await);
            echo_half.add(drive(clients, echo, per_slice, per_client, &tag).await);
        }
    }
    (first, second, ours)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The echo responder: answers every request on `echo` at once.
async fn echo_loop(echo: MqttClient, mut echo_rx: tokio::sync::mpsc::UnboundedReceiver<Incoming>) {
    let canned = serde_json::json!({"m2m:csr": {"csi": "/id-x"}});
    while let Some(ev) = echo_rx.recv().await {
        if let Incoming::Request { route, payload } = ev {
            let Ok(fmt) = route.format else { continue };
            let Ok(req) = fmt.decode_request(&payload) else {
                continue;
            };
            let rsp = Response::new(Rsc::OK, req.rqi).with_pc(canned.clone());
            echo.answer(&route, fmt, &rsp).await;
        }
    }
}

/// The echo as a process of its own: connects to the broker at `url`,
/// says "ready" on stdout and answers until killed.
fn echo_process(url: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut opts = Options::new(url, "load-id-echo", "/id-echo");
        opts.timeout = Duration::from_secs(10);
        let (echo, rx) = MqttClient::connect(opts, Duration::from_secs(10))
            .await
            .expect("connect");
        println!("ready");
        echo_loop(echo, rx).await;
    });
}

/// Killed on drop, so a failed run leaves no echo behind.
struct EchoProc(std::process::Child);

impl EchoProc {
    fn start(broker: &Mosquitto, cpu: Option<usize>) -> EchoProc {
        use std::io::BufRead;
        let mut cmd = std::process::Command::new(std::env::current_exe().expect("own path"));
        cmd.env("M2M_LOAD_ECHO_PROCESS", broker.url())
            .stdout(std::process::Stdio::piped());
        if let Some(cpu) = cpu {
            pin(&mut cmd, cpu);
        }
        let mut child = cmd.spawn().expect("start the echo process");
        let out = child.stdout.take().expect("the echo's stdout");
        let echo = EchoProc(child);
        let mut line = String::new();
        std::io::BufReader::new(out)
            .read_line(&mut line)
            .expect("the echo's ready line");
        assert_eq!(line.trim(), "ready", "the echo process did not start");
        echo
    }
}

impl Drop for EchoProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    if let Ok(url) = std::env::var("M2M_LOAD_ECHO_PROCESS") {
        return echo_process(&url);
    }
    // `cargo test --all-targets` runs benches once in test mode: keep that quick.
    let total: usize = env_or("M2M_LOAD_REQUESTS", if quick() { 200 } else { 10_000 });
    let rounds: usize = env_or("M2M_LOAD_ROUNDS", if quick() { 1 } else { 3 });
    let broker = Mosquitto::start();
    // At the production log level (the test harness's node logs at debug).
    let cpu = responder_cpu();
    let node = NodeProc::start_on(
        "load-in",
        &node_config("/id-in", "cse-in", "IN", &broker.url(), None, None, "60s"),
        cpu,
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        // Baseline: an echo responder that answers every request at once.
        let in_process = std::env::var("M2M_LOAD_ECHO").is_ok_and(|v| v == "in-process");
        let (_echo_proc, echo_task) = if in_process {
            let (echo, echo_rx) = connect(&broker, "/id-echo").await;
            (None, Some(tokio::spawn(echo_loop(echo, echo_rx))))
        } else {
            (Some(EchoProc::start(&broker, cpu)), None)
        };
        let mut clients = Vec::new();
        let mut _rxs = Vec::new();
        for c in 0..CLIENTS {
            let (client, rx) = connect(&broker, &format!("/id-load{c}")).await;
            clients.push(client);
            _rxs.push(rx);
        }
        // Something to retrieve: a registered CSR.
        let (mn, _mn_rx) = connect(&broker, "/id-x").await;
        let mut create = Request::new(Operation::Create, "/id-in/cse-in", "/id-x", "setup-1");
        create.rvi = Some("3".into());
        create.ty = Some(ResourceType::REMOTE_CSE);
        create.pc = Some(serde_json::json!({"m2m:csr": {"csi": "/id-x", "cb": "/id-x/cse", "rr": true, "srv": ["3"]}}));
        let created = mn.request(&create, "/id-in", Format::Json).await;
        assert_eq!(created.rsc, Rsc::CREATED, "{created:?}");

        let echo_path = ("/id-echo", "/id-echo/cse");
        let node_path = ("/id-in", "/id-in/cse-in/id-x");
        let mut failed = 0;
        let mut answered = 0;
        // Slices short enough to interleave the swings of a 2-core
        // machine; at 64 in flight long enough that ramping up and down
        // is a small part of each.
        for (mode, per_client, slices) in [("latency", 1, 20), ("throughput", 64, 8)] {
            // Warm both paths.
            let _ = drive(&clients, echo_path, 200, per_client, "warm").await;
            let _ = drive(&clients, node_path, 200, per_client, "warm").await;
            answered += 200;
            let (mut p50s, mut p99s, mut rpss) = (Vec::new(), Vec::new(), Vec::new());
            println!(
                "load, {mode}: {total} CSR RETRIEVEs a system a round in {slices} alternating slices, {CLIENTS} clients x {per_client} in flight, QoS 1, JSON, loopback Mosquitto, echo {}",
                if in_process { "in the meter's process" } else { "in its own process" }
            );
            for r in 1..=rounds {
                let tag = format!("{mode}{r}");
                let (mut first, mut second, mut ours) =
                    round(&clients, echo_path, node_path, total, per_client, slices, &tag).await;
                // The echo over the whole round, and its halves for drift.
                let (f50, s50) = (ms(first.pct(0.5)), ms(second.pct(0.5)));
                let mut echo = Samples::default();
                echo.add(first);
                echo.add(second);
                let (echo_p50, echo_p99) = (ms(echo.pct(0.5)), ms(echo.pct(0.99)));
                println!(
                    "  round {r}: echo {:>7.0} req/s p50 {echo_p50:.3} ms p99 {echo_p99:.3} ms (p50 {f50:.3} ms in the first half, {s50:.3} ms in the second) | m2mnode {:>7.0} req/s p50 {:.3} ms p99 {:.3} ms",
                    echo.rps(),
                    ours.rps(),
                    ms(ours.pct(0.5)),
                    ms(ours.pct(0.99)),
                );
                p50s.push(ms(ours.pct(0.5)) / echo_p50);
                p99s.push(ms(ours.pct(0.99)) / echo_p99);
                rpss.push(ours.rps() / echo.rps());
                failed += ours.errors;
                answered += ours.latencies.len();
            }
            println!(
                "  {mode}: median over {rounds} rounds, m2mnode/echo: p50 {:.2}x, p99 {:.2}x, throughput {:.2}x",
                median(p50s),
                median(p99s),
                median(rpss)
            );
        }
        if let Some(task) = echo_task {
            task.abort();
        }
        println!(
            "  each system answered {answered} requests (200 a mode to warm up, then {rounds} rounds); responders pinned to {}",
            cpu.map_or("no core (one core only)".to_owned(), |c| format!("core {c}")),
        );
        if let Some(kib) = rss_kib(node.pid()) {
            println!("  m2mnode resident memory after the run: {} KiB", kib);
        }
        assert_eq!(failed, 0, "the node failed requests under load");
    });
}
