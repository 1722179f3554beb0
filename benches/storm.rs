//! Registration storm through a real Mosquitto: N distinct CSEs (/id-s0..)
//! CREATE their CSR at an `m2mnode run` IN-CSE with 64 requests in flight,
//! then every CSR is RETRIEVEd, then DELETEd. Wall time of each phase, with
//! and without `data_dir`, and the node's resident memory before and after
//! the CREATE phase. Bounded in count and time; loopback only.
//!
//! One MQTT connection publishes every request on the topic of its own
//! originator (`/oneM2M/req/id-sN/id-in/json`, fr = /id-sN) and takes the
//! answers from `/oneM2M/resp/+/id-in/json`.
//!
//! cargo bench --bench storm    (M2M_STORM_CSES=10000, M2M_STORM_WINDOW=64)

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use common::{node_config, scratch, Mosquitto};
use m2mnode::primitive::{Operation, Rsc};
use std::time::Duration;
use support::{csr_create, csr_request, env_or, pipeline, quick, NodeProc, Phase, Raw};

struct Run {
    label: &'static str,
    create: Phase,
    retrieve: Phase,
    delete: Phase,
    rss_before: u64,
    rss_after: u64,
    rss_end: u64,
}

async fn storm(broker: &Mosquitto, node: &NodeProc, n: usize, window: usize) -> Run {
    let limit = Duration::from_secs(env_or("M2M_STORM_PHASE_LIMIT_SECS", 300));
    let mut raw = Raw::connect(broker.port, "storm", &["/oneM2M/resp/+/id-in/json"]).await;
    let csi = |i: usize| format!("/id-s{i}");
    // Let the node settle before reading its memory.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = node.rss();
    let create = pipeline(&mut raw, n, window, "c", Rsc::CREATED, limit, |i| {
        (csi(i), csr_create(&csi(i), &format!("c{i}")))
    })
    .await;
    let rss_after = node.rss();
    let retrieve = pipeline(&mut raw, n, window, "r", Rsc::OK, limit, |i| {
        let c = csi(i);
        let p = csr_request(Operation::Retrieve, &c, &c, &format!("r{i}"));
        (c, p)
    })
    .await;
    let delete = pipeline(&mut raw, n, window, "d", Rsc::DELETED, limit, |i| {
        let c = csi(i);
        let p = csr_request(Operation::Delete, &c, &c, &format!("d{i}"));
        (c, p)
    })
    .await;
    let rss_end = node.rss();
    raw.close().await;
    Run {
        label: "",
        create,
        retrieve,
        delete,
        rss_before,
        rss_after,
        rss_end,
    }
}

fn main() {
    let quick = quick();
    let n: usize = env_or("M2M_STORM_CSES", if quick { 200 } else { 10_000 });
    let window: usize = env_or("M2M_STORM_WINDOW", 64);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut runs = Vec::new();
    for (label, durable) in [("no data_dir", false), ("data_dir (SQLite)", true)] {
        let broker = Mosquitto::start();
        let data = durable.then(|| scratch("storm-data"));
        let node = NodeProc::start(
            "storm-in",
            &node_config(
                "/id-in",
                "cse-in",
                "IN",
                &broker.url(),
                data.as_deref(),
                None,
                "1h",
            ),
        );
        let mut run = rt.block_on(storm(&broker, &node, n, window));
        run.label = label;
        runs.push(run);
        if let Some(d) = data {
            let _ = std::fs::remove_dir_all(d);
        }
    }

    println!(
        "storm: {n} CSEs, {window} in flight, QoS 1, JSON, one client, loopback Mosquitto, node log level info"
    );
    println!(
        "  {:<18} {:>8} {:>10} {:>10} {:>10} {:>10} {:>9} {:>9}",
        "run", "phase", "wall s", "req/s", "answered", "non-2xxx", "other", "timeout"
    );
    let mut failures = 0;
    for r in &runs {
        for (phase, p) in [
            ("CREATE", &r.create),
            ("RETRIEVE", &r.retrieve),
            ("DELETE", &r.delete),
        ] {
            println!(
                "  {:<18} {:>8} {:>10.2} {:>10.0} {:>10} {:>10} {:>9} {:>9}",
                r.label,
                phase,
                p.elapsed.as_secs_f64(),
                p.rate(),
                p.answered,
                p.non_2xxx,
                p.unexpected,
                p.timed_out
            );
            failures += p.non_2xxx + p.unexpected + usize::from(p.timed_out) + (n - p.answered);
        }
    }
    println!("  resident memory of the node (VmRSS)");
    for r in &runs {
        let grown = r.rss_after.saturating_sub(r.rss_before);
        println!(
            "  {:<18} before CREATE {:>7} KiB, after {:>7} KiB, after DELETE {:>7} KiB: {:.0} bytes per registree",
            r.label,
            r.rss_before / 1024,
            r.rss_after / 1024,
            r.rss_end / 1024,
            grown as f64 / n as f64
        );
    }
    assert_eq!(
        failures, 0,
        "requests failed or went unanswered in the storm"
    );
}
