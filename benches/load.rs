//! Load benchmark: CSR RETRIEVE round trips through a real Mosquitto to an
//! `m2mnode run` registrar, against a baseline measured in the same run: an
//! in-process echo responder on the same broker that answers without any
//! oneM2M processing. The ratio is what the node costs over MQTT itself.
//! Bounded in count and time; loopback only.
//!
//! Measured at 16 and at 64 requests in flight (target ratio at 64: >= 0.9).
//!
//! cargo bench --bench load            (M2M_LOAD_REQUESTS=5000 to change the count)

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

struct Run {
    rps: f64,
    p50: Duration,
    p99: Duration,
    errors: usize,
}

async fn drive(
    client: &MqttClient,
    receiver: &str,
    to: &str,
    total: usize,
    concurrency: usize,
) -> Run {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let client = client.clone();
        let (receiver, to) = (receiver.to_owned(), to.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0;
            for i in (w..total).step_by(concurrency) {
                let mut req = Request::new(
                    Operation::Retrieve,
                    to.as_str(),
                    "/id-load",
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

fn main() {
    // `cargo test --all-targets` runs benches once in test mode: keep that quick.
    let quick =
        std::env::args().any(|a| a == "--test") || !std::env::args().any(|a| a == "--bench");
    let total: usize = std::env::var("M2M_LOAD_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 200 } else { 5000 });
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
        let (client, _rx) = connect(&broker, "/id-load").await;
        // Something to retrieve: a registered CSR.
        let (mn, _mn_rx) = connect(&broker, "/id-x").await;
        let mut create = Request::new(Operation::Create, "/id-in/cse-in", "/id-x", "setup-1");
        create.rvi = Some("3".into());
        create.ty = Some(ResourceType::REMOTE_CSE);
        create.pc = Some(serde_json::json!({"m2m:csr": {"csi": "/id-x", "cb": "/id-x/cse", "rr": true, "srv": ["3"]}}));
        let created = mn.request(&create, "/id-in", Format::Json).await;
        assert_eq!(created.rsc, Rsc::CREATED, "{created:?}");

        // Warm up both paths, then measure baseline and node back to back,
        // at each concurrency.
        let mut failed = 0;
        for concurrency in [16, 64] {
            let _ = drive(&client, "/id-echo", "/id-echo/cse", 100, concurrency).await;
            let _ = drive(&client, "/id-in", "/id-in/cse-in/id-x", 100, concurrency).await;
            let base = drive(&client, "/id-echo", "/id-echo/cse", total, concurrency).await;
            let ours = drive(&client, "/id-in", "/id-in/cse-in/id-x", total, concurrency).await;
            println!("load: {total} CSR RETRIEVEs, concurrency {concurrency}, QoS 1, JSON, loopback Mosquitto");
            for (name, r) in [("baseline (echo)", &base), ("m2mnode", &ours)] {
                println!(
                    "  {name:<16} {:>8.0} req/s   p50 {:>7.2} ms   p99 {:>7.2} ms   errors {}",
                    r.rps,
                    r.p50.as_secs_f64() * 1e3,
                    r.p99.as_secs_f64() * 1e3,
                    r.errors
                );
            }
            println!(
                "  ratio m2mnode/baseline at {concurrency} in flight: throughput {:.2}, p50 latency {:.2}",
                ours.rps / base.rps,
                ours.p50.as_secs_f64() / base.p50.as_secs_f64()
            );
            failed += ours.errors;
        }
        responder.abort();
        if let Some(kib) = rss_kib(node.pid()) {
            println!("  m2mnode resident memory after the run: {} KiB", kib);
        }
        assert_eq!(failed, 0, "the node failed requests under load");
    });
}
