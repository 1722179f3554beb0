//! Criterion benches of the sans-IO engine's per-request cost at 10 and at
//! 10,000 registrees: CSR CREATE, RETRIEVE, DELETE, and a RETRIEVE routed to
//! a registree's descendant (forward + relayed answer). Bytes in, bytes out,
//! simulated time, no broker. Non-durable engine.
//!
//! Every measured iteration leaves the store at the size it found it: a
//! CREATE is undone by an untimed DELETE of the same CSE and a DELETE is
//! prepared by an untimed CREATE (`iter_custom` times only the one call).
//! Each request carries a fresh rqi, so the duplicate-delivery cache never
//! answers in the engine's place.
//!
//! The point is that the cost is flat: after criterion's figures, a summary
//! prints each operation at both sizes and their ratio (target: < 2).
//!
//! cargo bench --bench engine          (M2M_ENGINE_LARGE=10000 to change the big size)

use criterion::{BenchmarkId, Criterion};
use m2mnode::config::Config;
use m2mnode::engine::{Engine, Transmit};
use m2mnode::id::to_topic_segment;
use m2mnode::primitive::{Format, Operation, Request, ResourceType, Response, Rsc};
use m2mnode::time::{Now, Timestamp};
use m2mnode::topic::{self, Route};
use serde_json::json;
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

const T0: u64 = 1_800_000_000;
const OWN: &str = "/id-in";

fn quick() -> bool {
    std::env::args().any(|a| a == "--test") || !std::env::args().any(|a| a == "--bench")
}

/// The route of a request from `hop` to this node.
fn from(hop: &str) -> Route {
    topic::parse(&format!(
        "/oneM2M/req/{}/{}/json",
        to_topic_segment(hop),
        to_topic_segment(OWN)
    ))
    .expect("route")
}

/// The route of an answer from `peer` to this node.
fn answer_from(peer: &str) -> Route {
    topic::parse(&format!(
        "/oneM2M/resp/{}/{}/json",
        to_topic_segment(OWN),
        to_topic_segment(peer)
    ))
    .expect("route")
}

fn csr_create(csi: &str, rqi: &str) -> Vec<u8> {
    let mut r = Request::new(Operation::Create, "/id-in/cse-in", csi, rqi);
    r.ty = Some(ResourceType::REMOTE_CSE);
    r.rvi = Some("3".into());
    // Each registree has one descendant, so routing has something to find.
    let d = descendant_of(csi);
    r.pc = Some(json!({"m2m:csr": {
        "csi": csi, "cb": format!("{csi}/cse"), "rr": true, "srv": ["3"],
        "poa": ["mqtt://127.0.0.1:1883"], "dcse": [d],
    }}));
    serde_json::to_vec(&r).expect("json")
}

fn descendant_of(csi: &str) -> String {
    format!("/id-d{}", csi.trim_start_matches("/id-"))
}

fn request(op: Operation, to: &str, fr: &str, rqi: &str) -> Vec<u8> {
    let mut r = Request::new(op, to, fr, rqi);
    r.rvi = Some("3".into());
    serde_json::to_vec(&r).expect("json")
}

/// Pops everything the engine has to say, without decoding it; returns the
/// last transmit (the answer or the forward) for the bench to check.
fn drain(e: &mut Engine) -> Option<Transmit> {
    while e.poll_store().is_some() {}
    let mut last = None;
    while let Some(t) = e.poll_transmit() {
        last = Some(t);
    }
    while e.poll_event().is_some() {}
    last
}

fn rsc_of(t: Option<Transmit>) -> Rsc {
    match t {
        Some(Transmit::Response { payload, .. }) => {
            Format::Json.decode_response(&payload).expect("answer").rsc
        }
        other => panic!("expected an answer, got {other:?}"),
    }
}

/// A connected, non-durable IN-CSE engine with `n` registrees `/id-s0..`,
/// each with one descendant `/id-ds0..`.
struct Bench {
    e: Engine,
    now: Now,
    n: usize,
    rqi: u64,
}

impl Bench {
    fn new(n: usize) -> Bench {
        let cfg = Config::from_str(
            "[cse]\nid = \"/id-in\"\nname = \"cse-in\"\ntype = \"IN\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\ntimeout = \"5s\"\n[registrees]\ncheck_interval = \"1h\"\n",
            Path::new("bench.toml"),
        )
        .expect("config");
        let settings = cfg.engine_settings(Timestamp::from_secs(T0), 42);
        assert!(!settings.durable);
        // Time stands still: no liveness probe ever becomes due.
        let now = Now::at(Timestamp::from_secs(T0));
        let mut e = Engine::new(settings, now);
        e.connection(true, now);
        drain(&mut e);
        let mut b = Bench { e, now, n, rqi: 0 };
        for i in 0..n {
            let csi = format!("/id-s{i}");
            b.create(&csi);
        }
        assert_eq!(b.e.registree_count(), n);
        b
    }

    fn rqi(&mut self) -> String {
        self.rqi += 1;
        format!("b{}", self.rqi)
    }

    fn create(&mut self, csi: &str) {
        let bytes = csr_create(csi, &self.rqi());
        self.e.handle_request(from(csi), &bytes, None, self.now);
        assert_eq!(rsc_of(drain(&mut self.e)), Rsc::CREATED);
    }

    fn delete(&mut self, csi: &str) {
        let bytes = request(
            Operation::Delete,
            &format!("/id-in/cse-in/{}", csi.trim_start_matches('/')),
            csi,
            &self.rqi(),
        );
        self.e.handle_request(from(csi), &bytes, None, self.now);
        assert_eq!(rsc_of(drain(&mut self.e)), Rsc::DELETED);
    }

    /// One timed CREATE of an extra CSE (undone untimed).
    fn time_create(&mut self) -> Duration {
        let csi = "/id-extra";
        let (route, bytes) = (from(csi), csr_create(csi, &self.rqi()));
        let t0 = Instant::now();
        self.e.handle_request(route, &bytes, None, self.now);
        let out = drain(&mut self.e);
        let d = t0.elapsed();
        debug_assert_eq!(rsc_of(out), Rsc::CREATED);
        self.delete(csi);
        d
    }

    /// One timed DELETE of an extra CSE (created untimed).
    fn time_delete(&mut self) -> Duration {
        let csi = "/id-extra";
        self.create(csi);
        let bytes = request(
            Operation::Delete,
            "/id-in/cse-in/id-extra",
            csi,
            &self.rqi(),
        );
        let route = from(csi);
        let t0 = Instant::now();
        self.e.handle_request(route, &bytes, None, self.now);
        let out = drain(&mut self.e);
        let d = t0.elapsed();
        debug_assert_eq!(rsc_of(out), Rsc::DELETED);
        d
    }

    /// One timed RETRIEVE of registree `k`'s CSR.
    fn time_retrieve(&mut self, k: usize) -> Duration {
        let k = k % self.n;
        let bytes = request(
            Operation::Retrieve,
            &format!("/id-in/cse-in/id-s{k}"),
            "/id-load",
            &self.rqi(),
        );
        let route = from("/id-load");
        let t0 = Instant::now();
        self.e.handle_request(route, &bytes, None, self.now);
        let out = drain(&mut self.e);
        let d = t0.elapsed();
        debug_assert_eq!(rsc_of(out), Rsc::OK);
        d
    }

    /// One RETRIEVE of registree `k`'s descendant: the forward to `/id-sk`
    /// and the relay of its answer are timed, building the answer is not.
    fn time_forward(&mut self, k: usize) -> Duration {
        let k = k % self.n;
        let via = format!("/id-s{k}");
        let target = format!("{}/cse", descendant_of(&via));
        let bytes = request(Operation::Retrieve, &target, "/id-load", &self.rqi());
        let route = from("/id-load");
        let t0 = Instant::now();
        self.e.handle_request(route, &bytes, None, self.now);
        let out = drain(&mut self.e);
        let leg1 = t0.elapsed();
        let Some(Transmit::Request { to, payload, .. }) = out else {
            panic!("expected a forward, got {out:?}");
        };
        debug_assert_eq!(to.as_str(), via);
        let fwd = Format::Json.decode_request(&payload).expect("forward");
        let rsp = Response::new(Rsc::OK, fwd.rqi)
            .with_pc(json!({"m2m:cb": {"csi": descendant_of(&via)}}));
        let rsp = Format::Json.encode(&rsp).expect("answer");
        let back = answer_from(&via);
        let t1 = Instant::now();
        self.e.handle_response(&back, &rsp, self.now);
        let out = drain(&mut self.e);
        let leg2 = t1.elapsed();
        debug_assert_eq!(rsc_of(out), Rsc::OK);
        assert_eq!(self.e.pending_requests(), 0);
        leg1 + leg2
    }
}

type Op = fn(&mut Bench, usize) -> Duration;

const OPS: [(&str, Op); 4] = [
    ("csr create", |b, _| b.time_create()),
    ("csr retrieve", |b, k| b.time_retrieve(k)),
    ("csr delete", |b, _| b.time_delete()),
    ("forwarded retrieve (descendant)", |b, k| b.time_forward(k)),
];

fn sizes() -> [usize; 2] {
    let large = std::env::var("M2M_ENGINE_LARGE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick() { 500 } else { 10_000 });
    [10, large]
}

fn criterion_benches(c: &mut Criterion, benches: &mut [Bench]) {
    for (name, op) in OPS {
        let mut g = c.benchmark_group(format!("engine {name}"));
        for b in benches.iter_mut() {
            let n = b.n;
            g.bench_function(BenchmarkId::new("registrees", n), |bch| {
                let mut k = 0usize;
                bch.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        k = k.wrapping_add(7919);
                        total += black_box(op(b, k));
                    }
                    total
                })
            });
            assert_eq!(b.e.registree_count(), n, "the store kept its size");
        }
        g.finish();
    }
}

/// The mean of the best of `rounds` rounds of `per_round` calls.
fn best_mean(b: &mut Bench, op: Op, rounds: usize, per_round: usize) -> Duration {
    let mut best = Duration::MAX;
    let mut k = 0usize;
    for _ in 0..rounds {
        let mut total = Duration::ZERO;
        for _ in 0..per_round {
            k = k.wrapping_add(7919);
            total += op(b, k);
        }
        best = best.min(total / per_round as u32);
    }
    best
}

fn summary(benches: &mut [Bench]) {
    let (rounds, per_round) = if quick() { (1, 20) } else { (7, 5000) };
    let [small, large] = [benches[0].n, benches[1].n];
    println!();
    println!("engine per-request cost (best mean of {rounds} rounds of {per_round}; non-durable)");
    println!(
        "  {:<34} {:>12} {:>12} {:>8}",
        "operation",
        format!("{small} reg."),
        format!("{large} reg."),
        "ratio"
    );
    for (name, op) in OPS {
        let a = best_mean(&mut benches[0], op, rounds, per_round);
        let z = best_mean(&mut benches[1], op, rounds, per_round);
        let ratio = z.as_secs_f64() / a.as_secs_f64();
        println!(
            "  {name:<34} {:>9.2} µs {:>9.2} µs {:>8.2}{}",
            a.as_secs_f64() * 1e6,
            z.as_secs_f64() * 1e6,
            ratio,
            if ratio > 2.0 { "  (> 2: not flat)" } else { "" }
        );
    }
}

fn main() {
    let t0 = Instant::now();
    let mut benches: Vec<Bench> = sizes().into_iter().map(Bench::new).collect();
    println!(
        "engine: prefilled {:?} registrees in {:.2} s",
        benches.iter().map(|b| b.n).collect::<Vec<_>>(),
        t0.elapsed().as_secs_f64()
    );
    let mut c = Criterion::default().configure_from_args();
    criterion_benches(&mut c, &mut benches);
    c.final_summary();
    summary(&mut benches);
}
