//! Liveness under load: N live registrees (/id-s0.., default 10,000) at an
//! `m2mnode run` IN-CSE with `[registrees] check_interval = "30s"`, for 5
//! minutes, while other CSEs (/id-xR-K) CREATE, RETRIEVE and DELETE their
//! CSRs in rounds. A responder connection subscribed to every request the
//! node sends (`/oneM2M/req/id-in/+/json`) answers each liveness probe 2000
//! at once, as a live registree would. At the end every one of the N CSRs
//! must still be there (each is RETRIEVEd).
//!
//! cargo bench --bench liveness
//!   M2M_LIVENESS_CSES=10000  M2M_LIVENESS_SECS=300  M2M_LIVENESS_CHECK=30s
//!   M2M_LIVENESS_ROUND=1000 (CSEs per load round)

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use common::{node_config, Mosquitto};
use m2mnode::primitive::{Format, Operation, Response, Rsc};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{csr_create, csr_request, env_or, pipeline, quick, NodeProc, Raw};

/// Answers every request the node sends to a registree: 2000 with a CSEBase.
async fn responder(port: u16, answered: Arc<AtomicU64>) -> tokio::task::JoinHandle<()> {
    let mut raw = Raw::connect(port, "registrees", &["/oneM2M/req/id-in/+/json"]).await;
    tokio::spawn(async move {
        while let Some((topic, payload)) = raw.rx.recv().await {
            // /oneM2M/req/id-in/<registree>/json
            let Some(seg) = topic.split('/').nth(4).map(str::to_owned) else {
                continue;
            };
            let Ok(req) = Format::Json.decode_request(&payload) else {
                continue;
            };
            let csi = format!("/{seg}");
            let mut rsp = Response::new(Rsc::OK, req.rqi).with_pc(serde_json::json!({
                "m2m:cb": {"csi": csi, "ri": "cse", "rn": "cse", "ty": 5}
            }));
            rsp.rvi = req.rvi;
            rsp.to = req.fr;
            rsp.fr = Some(csi);
            let bytes = Format::Json.encode(&rsp).expect("answer");
            raw.publish(format!("/oneM2M/resp/id-in/{seg}/json"), bytes)
                .await;
            answered.fetch_add(1, Ordering::Relaxed);
        }
    })
}

fn main() {
    let quick = quick();
    let n: usize = env_or("M2M_LIVENESS_CSES", if quick { 50 } else { 10_000 });
    let secs: u64 = env_or("M2M_LIVENESS_SECS", if quick { 3 } else { 300 });
    let check: String = env_or(
        "M2M_LIVENESS_CHECK",
        if quick { "1s" } else { "30s" }.to_owned(),
    );
    let round: usize = env_or("M2M_LIVENESS_ROUND", if quick { 20 } else { 1000 });
    let window = 64;
    let limit = Duration::from_secs(300);

    let broker = Mosquitto::start();
    let node = NodeProc::start(
        "liveness-in",
        &node_config("/id-in", "cse-in", "IN", &broker.url(), None, None, &check),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let probes = Arc::new(AtomicU64::new(0));
        let answering = responder(broker.port, probes.clone()).await;
        let mut raw = Raw::connect(broker.port, "liveness", &["/oneM2M/resp/+/id-in/json"]).await;
        let csi = |i: usize| format!("/id-s{i}");
        let reg = pipeline(&mut raw, n, window, "c", Rsc::CREATED, limit, |i| {
            (csi(i), csr_create(&csi(i), &format!("c{i}")))
        })
        .await;
        assert_eq!(reg.answered, n, "registration: {reg:?}");
        assert_eq!(reg.non_2xxx + reg.unexpected, 0, "registration: {reg:?}");
        println!(
            "liveness: {n} registrees registered in {:.2} s; check_interval {check}; load for {secs} s",
            reg.elapsed.as_secs_f64()
        );

        // Load: rounds of CREATE, RETRIEVE, DELETE of other CSEs.
        let start = Instant::now();
        let (mut rounds, mut load_reqs, mut load_bad) = (0usize, 0usize, 0usize);
        while start.elapsed() < Duration::from_secs(secs) {
            let r = rounds;
            let x = move |i: usize| format!("/id-x{r}-{i}");
            let c = pipeline(&mut raw, round, window, &format!("lc{r}-"), Rsc::CREATED, limit, |i| {
                (x(i), csr_create(&x(i), &format!("lc{r}-{i}")))
            })
            .await;
            let g = pipeline(&mut raw, round, window, &format!("lr{r}-"), Rsc::OK, limit, |i| {
                (x(i), csr_request(Operation::Retrieve, &x(i), &x(i), &format!("lr{r}-{i}")))
            })
            .await;
            let d = pipeline(&mut raw, round, window, &format!("ld{r}-"), Rsc::DELETED, limit, |i| {
                (x(i), csr_request(Operation::Delete, &x(i), &x(i), &format!("ld{r}-{i}")))
            })
            .await;
            for p in [&c, &g, &d] {
                load_reqs += p.answered;
                load_bad += p.non_2xxx + p.unexpected + (round - p.answered);
            }
            rounds += 1;
        }
        let loaded = start.elapsed();

        // Who survived: RETRIEVE every registree's CSR.
        let check = pipeline(&mut raw, n, window, "s", Rsc::OK, limit, |i| {
            (csi(i), csr_request(Operation::Retrieve, &csi(i), &csi(i), &format!("s{i}")))
        })
        .await;
        let survivors = check.answered - check.non_2xxx - check.unexpected;
        let log = node.log();
        let removed = log.matches("registree is gone").count();
        println!(
            "  load: {rounds} rounds, {load_reqs} requests in {:.1} s ({:.0} req/s), {load_bad} failed",
            loaded.as_secs_f64(),
            load_reqs as f64 / loaded.as_secs_f64()
        );
        println!(
            "  liveness probes answered: {} ({:.1} per registree)",
            probes.load(Ordering::Relaxed),
            probes.load(Ordering::Relaxed) as f64 / n as f64
        );
        println!("  survivors: {survivors} of {n} CSRs; removed as unresponsive (log): {removed}");
        println!("  node resident memory: {} KiB", node.rss() / 1024);
        answering.abort();
        raw.close().await;
        assert_eq!(survivors, n, "registrees were lost: {check:?}");
        assert_eq!(load_bad, 0, "load requests failed");
    });
}
