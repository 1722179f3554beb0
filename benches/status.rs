//! `m2mnode status` at scale (issue 20): an IN-CSE restored with N plain
//! registrees (default 100,000; 2,000 under `cargo test`), written to its
//! store before it starts. `m2mnode status` must exit 0 with the counts and
//! the first page, `--all` must page through every registree, and 20 status
//! requests at once must not hold up a CSEBase RETRIEVE.
//!
//! cargo bench --bench status    (M2M_STATUS_REGISTREES=100000)

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use common::{
    cse_base_behind_status_requests, node_config, scratch, store_with_registrees, Mosquitto, BIN,
};
use std::time::{Duration, Instant};
use support::{env_or, quick, NodeProc};

fn main() {
    let n: usize = env_or(
        "M2M_STATUS_REGISTREES",
        if quick() { 2_000 } else { 100_000 },
    );
    let broker = Mosquitto::start();
    let data = scratch("bench-status-data");
    let t = Instant::now();
    store_with_registrees(&data, n, 0);
    println!("store with {n} registrees written in {:?}", t.elapsed());
    let cfg = node_config(
        "/id-in",
        "cse-in",
        "IN",
        &broker.url(),
        Some(&data),
        None,
        "3600s",
    ) + &format!("max = {}\n", n.max(50_000));
    let node = NodeProc::start("bench-status", &cfg);
    let config = node.dir.join("node.toml");
    let status = |all: bool| {
        let t = Instant::now();
        let mut cmd = std::process::Command::new(BIN);
        cmd.args(["status", "--json", "--timeout", "30s", "--config"])
            .arg(&config);
        if all {
            cmd.arg("--all");
        }
        let out = cmd.output().expect("m2mnode status");
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (t.elapsed(), v)
    };
    let (took, v) = status(false);
    assert_eq!(v["registree_count"], serde_json::json!(n));
    let first = v["registrees"].as_array().map_or(0, Vec::len);
    println!("m2mnode status: exit 0 in {took:?}, {n} registrees counted, first {first} listed");
    let (took, v) = status(true);
    let listed = v["registrees"].as_array().map_or(0, Vec::len);
    assert_eq!(listed, n, "--all lists every registree");
    println!("m2mnode status --all: exit 0 in {took:?}, {listed} listed");
    let (quiet, busy) = cse_base_behind_status_requests(&broker, 20);
    println!(
        "CSEBase RETRIEVE: {quiet:?} quiet, {busy:?} behind 20 status requests; node RSS {} MiB",
        node.rss() >> 20
    );
    // A figure, not a test: `cargo test` runs this once in a debug build on
    // a shared machine, where time proves nothing.
    if !quick() && busy >= Duration::from_secs(1) {
        println!("WARNING: the CSEBase RETRIEVE waited {busy:?} behind the status requests (goal: well under 1 s)");
    }
}
