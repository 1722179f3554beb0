//! Load benchmark: CSR RETRIEVE round trips through a real Mosquitto to an
//! `m2mnode run` registrar, against a baseline measured in the same run: an
//! in-process echo responder on the same broker that answers without any
//! oneM2M processing. The ratio is what the node costs over MQTT itself.
//! Bounded in count and time; loopback only.
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
use support::{rss_kib, NodeProc};

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

struct Run {
    rps: f64,
    p50: Duration,
    p99: Duration,
    errors: usize,
}

/// `total` RETRIEVEs of `to` at `receiver`, spread over `clients`, each
/// with `per_client` in flight.
async fn drive(
    clients: &[MqttClient],
    receiver: &str,
    to: &str,
    total: usize,
    per_client: usize,
) -> Run {
    let start = Instant::now();
    let workers = clients.len() * per_client;
    let mut tasks = Vec::new();
    for w in 0..workers {
        let client = clients[w % clients.len()].clone();
        let (receiver, to) = (receiver.to_owned(), to.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0;
            for i in (w..total).step_by(workers) {
                let mut req = Request::new(
                    Operation::Retrieve,
                    to.as_str(),
                    client.own(),
                    format!("l{w}-{i}"),
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
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (lat, e) = t.await.expect("worker");
        all.extend(lat);
        errors += e;
    }
    let elapsed = start.elapsed();
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    Run {
        rps: total as f64 / elapsed.as_secs_f64(),
        p50: pct(0.5),
        p99: pct(0.99),
        errors,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    // `cargo test --all-targets` runs benches once in test mode: keep that quick.
    let quick =
        std::env::args().any(|a| a == "--test") || !std::env::args().any(|a| a == "--bench");
    let total: usize = std::env::var("M2M_LOAD_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 200 } else { 5000 });
    let rounds: usize = std::env::var("M2M_LOAD_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 1 } else { 3 });
    let broker = Mosquitto::start();
    // At the production log level (the test harness's node logs at debug).
    let node = NodeProc::start(
        "load-in",
        &node_config("/id-in", "cse-in", "IN", &broker.url(), None, None, "60s"),
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        // Baseline: an echo responder that answers every request at once.
        let (echo, mut echo_rx) = connect(&broker, "/id-echo").await;
        let canned = serde_json::json!({"m2m:csr": {"csi": "/id-x"}});
        let responder = tokio::spawn(async move {
            while let Some(ev) = echo_rx.recv().await {
                if let Incoming::Request { route, payload } = ev {
                    let Ok(fmt) = route.format else { continue };
                    let Ok(req) = fmt.decode_request(&payload) else { continue };
                    let rsp = Response::new(Rsc::OK, req.rqi).with_pc(canned.clone());
                    echo.answer(&route, fmt, &rsp).await;
                }
            }
        });
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
        for (mode, per_client) in [("latency", 1), ("throughput", 64)] {
            // Warm both paths.
            let _ = drive(&clients, echo_path.0, echo_path.1, 200, per_client).await;
            let _ = drive(&clients, node_path.0, node_path.1, 200, per_client).await;
            let (mut p50s, mut p99s, mut rpss) = (Vec::new(), Vec::new(), Vec::new());
            println!(
                "load, {mode}: {total} CSR RETRIEVEs a measure, {CLIENTS} clients x {per_client} in flight, QoS 1, JSON, loopback Mosquitto"
            );
            for round in 1..=rounds {
                let before = drive(&clients, echo_path.0, echo_path.1, total, per_client).await;
                let ours = drive(&clients, node_path.0, node_path.1, total, per_client).await;
                let after = drive(&clients, echo_path.0, echo_path.1, total, per_client).await;
                let echo_p50 = (ms(before.p50) + ms(after.p50)) / 2.0;
                let echo_p99 = (ms(before.p99) + ms(after.p99)) / 2.0;
                let echo_rps = (before.rps + after.rps) / 2.0;
                println!(
                    "  round {round}: echo before {:>7.0} req/s p50 {:.3} ms p99 {:.3} ms | m2mnode {:>7.0} req/s p50 {:.3} ms p99 {:.3} ms | echo after {:>7.0} req/s p50 {:.3} ms p99 {:.3} ms",
                    before.rps, ms(before.p50), ms(before.p99),
                    ours.rps, ms(ours.p50), ms(ours.p99),
                    after.rps, ms(after.p50), ms(after.p99),
                );
                p50s.push(ms(ours.p50) / echo_p50);
                p99s.push(ms(ours.p99) / echo_p99);
                rpss.push(ours.rps / echo_rps);
                failed += ours.errors;
            }
            println!(
                "  {mode}: median over {rounds} rounds, m2mnode/echo: p50 {:.2}x, p99 {:.2}x, throughput {:.2}x",
                median(p50s),
                median(p99s),
                median(rpss)
            );
        }
        responder.abort();
        if let Some(kib) = rss_kib(node.pid()) {
            println!("  m2mnode resident memory after the run: {} KiB", kib);
        }
        assert_eq!(failed, 0, "the node failed requests under load");
    });
}
