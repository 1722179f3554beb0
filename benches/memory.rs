//! Heap held per registree by the engine (in-process, counted by a global
//! allocator, so no allocator fragmentation, no MQTT buffers): N CSRs are
//! CREATEd through a non-durable engine with the storm bench's content, and
//! the live heap is compared before and after. The figure is split into the
//! CSR itself (a clone of every stored `RemoteCse`) and the rest (maps,
//! indexes, liveness schedule). Complements the storm bench's VmRSS figure.
//!
//! cargo bench --bench memory    (M2M_MEMORY_CSES=10000)
//!
//! Where each byte comes from: M2M_MEMORY_EXIT_AFTER_FILL=1 heaptrack <bench binary> --bench,
//! then heaptrack_print --print-leaks (what is live at exit is what the engine holds).

use m2mnode::config::Config;
use m2mnode::engine::{Engine, Transmit};
use m2mnode::id::to_topic_segment;
use m2mnode::primitive::{Format, Operation, Request, ResourceType, Rsc};
use m2mnode::resource::RemoteCse;
use m2mnode::time::{Now, Timestamp};
use m2mnode::topic;
use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicIsize, Ordering};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

fn main() {
    let quick =
        std::env::args().any(|a| a == "--test") || !std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::var("M2M_MEMORY_CSES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 200 } else { 10_000 });
    let cfg = Config::from_str(
        "[cse]\nid = \"/id-in\"\nname = \"cse-in\"\ntype = \"IN\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n[registrees]\ncheck_interval = \"30s\"\n",
        Path::new("bench.toml"),
    )
    .expect("config");
    let now = Now::at(Timestamp::from_secs(1_800_000_000));
    let mut e = Engine::new(cfg.engine_settings(now.wall, 42), now);
    e.connection(true, now);
    // Fill the duplicate-delivery cache first (it is bounded), so that it
    // does not count as per-registree memory.
    let fill = |e: &mut Engine, i: usize, rqi: &str| {
        let csi = format!("/id-s{i}");
        let mut r = Request::new(Operation::Create, "/id-in/cse-in", csi.as_str(), rqi);
        r.ty = Some(ResourceType::REMOTE_CSE);
        r.rvi = Some("3".into());
        r.pc = Some(serde_json::json!({"m2m:csr": {
            "csi": csi, "cb": format!("{csi}/cse"), "rr": true, "srv": ["3"],
        }}));
        let bytes = Format::Json.encode(&r).expect("json");
        let route = topic::parse(&format!(
            "/oneM2M/req/{}/id-in/json",
            to_topic_segment(&csi)
        ))
        .expect("route");
        e.handle_request(route, &bytes, None, now);
        let mut rsc = None;
        while let Some(t) = e.poll_transmit() {
            if let Transmit::Response { payload, .. } = t {
                rsc = Some(Format::Json.decode_response(&payload).expect("rsp").rsc);
            }
        }
        while e.poll_event().is_some() {}
        rsc
    };
    let del = |e: &mut Engine, i: usize, rqi: &str| {
        let csi = format!("/id-s{i}");
        let mut d = Request::new(
            Operation::Delete,
            format!("/id-in/cse-in/{}", csi.trim_start_matches('/')),
            csi.as_str(),
            rqi,
        );
        d.rvi = Some("3".into());
        let route = topic::parse(&format!(
            "/oneM2M/req/{}/id-in/json",
            to_topic_segment(&csi)
        ))
        .expect("route");
        e.handle_request(route, &Format::Json.encode(&d).expect("json"), None, now);
        let mut rsc = None;
        while let Some(t) = e.poll_transmit() {
            if let Transmit::Response { payload, .. } = t {
                rsc = Some(Format::Json.decode_response(&payload).expect("rsp").rsc);
            }
        }
        while e.poll_event().is_some() {}
        rsc
    };
    for i in 0..2048 {
        let rsc = fill(&mut e, 1_000_000 + i, &format!("warm{i}"));
        assert_eq!(rsc, Some(Rsc::CREATED));
        assert_eq!(
            del(&mut e, 1_000_000 + i, &format!("warmd{i}")),
            Some(Rsc::DELETED)
        );
    }
    let before = live();
    for i in 0..n {
        assert_eq!(fill(&mut e, i, &format!("c{i}")), Some(Rsc::CREATED));
    }
    let after = live();
    if std::env::var_os("M2M_MEMORY_EXIT_AFTER_FILL").is_some() {
        // For `heaptrack --print-leaks`: what is live now is what the engine holds.
        std::process::exit(0);
    }
    assert_eq!(e.registree_count(), n);
    let csrs: Vec<RemoteCse> = e
        .registrar()
        .store()
        .iter()
        .map(|(_, c)| c.clone())
        .collect();
    let with_clones = live();
    // The stored CSRs' own heap, by capacity (a clone shrinks to length).
    let cap = |s: &Option<String>| s.as_ref().map_or(0, String::capacity);
    let caps = |v: &Option<Vec<String>>| {
        v.as_ref().map_or(0, |v| {
            v.capacity() * std::mem::size_of::<String>()
                + v.iter().map(String::capacity).sum::<usize>()
        })
    };
    let stored: usize = e
        .registrar()
        .store()
        .iter()
        .map(|(_, c)| {
            cap(&c.rn)
                + cap(&c.ri)
                + cap(&c.pi)
                + cap(&c.ct)
                + cap(&c.lt)
                + cap(&c.et)
                + cap(&c.csi)
                + cap(&c.cb)
                + cap(&c.nl)
                + caps(&c.lbl)
                + caps(&c.poa)
                + caps(&c.csz)
                + caps(&c.srv)
                + caps(&c.dcse)
        })
        .sum();
    let cloned: usize = csrs
        .iter()
        .map(|c| {
            cap(&c.rn)
                + cap(&c.ri)
                + cap(&c.pi)
                + cap(&c.ct)
                + cap(&c.lt)
                + cap(&c.et)
                + cap(&c.csi)
                + cap(&c.cb)
                + cap(&c.nl)
                + caps(&c.lbl)
                + caps(&c.poa)
                + caps(&c.csz)
                + caps(&c.srv)
                + caps(&c.dcse)
        })
        .sum();
    println!(
        "  typed attributes' heap per CSR: stored {:.0} bytes, a clone {:.0} bytes; other attributes stored: {}",
        stored as f64 / n as f64,
        cloned as f64 / n as f64,
        csrs.iter().map(|c| c.other.len()).sum::<usize>()
    );
    let per = (after - before) as f64 / n as f64;
    let csr = (with_clones - after) as f64 / n as f64;
    println!("memory: {n} registrees through the engine (non-durable), live heap by a counting allocator");
    println!("  engine heap per registree:        {per:>7.0} bytes");
    println!(
        "    of which the RemoteCse itself:  {csr:>7.0} bytes (size_of {} inline + its strings)",
        std::mem::size_of::<RemoteCse>()
    );
    println!(
        "    maps, indexes, liveness:        {:>7.0} bytes",
        per - csr
    );
    // A model of the engine's per-registree structures, built from the same
    // CSRs, to see where the bytes go.
    let model = |what: &str, f: &mut dyn FnMut() -> Box<dyn std::any::Any>| {
        let b = live();
        let kept = f();
        let bytes = (live() - b) as f64 / n as f64;
        drop(kept);
        println!("    model: {what:<44} {bytes:>7.0} bytes");
    };
    let keyed: Vec<(String, RemoteCse)> = e
        .registrar()
        .store()
        .iter()
        .map(|(k, c)| (k.clone(), c.clone()))
        .collect();
    model("BTreeMap<ri, RemoteCse> (CSRs by ri)", &mut || {
        Box::new(
            keyed
                .iter()
                .cloned()
                .collect::<std::collections::BTreeMap<_, _>>(),
        )
    });
    let mut numeric = keyed.clone();
    numeric.sort_by_key(|(k, _)| k.trim_start_matches("id-s").parse::<u64>().unwrap_or(0));
    model("  the same, inserted one by one as CREATEd", &mut || {
        let mut m = std::collections::BTreeMap::new();
        for (k, c) in &numeric {
            m.insert(k.clone(), c.clone());
        }
        Box::new(m)
    });
    model("  ... with Box<RemoteCse> values", &mut || {
        let mut m = std::collections::BTreeMap::new();
        for (k, c) in &numeric {
            m.insert(k.clone(), Box::new(c.clone()));
        }
        Box::new(m)
    });
    model("descendants: BTreeMap<csi, (via_ri, at)>", &mut || {
        let mut m = std::collections::BTreeMap::new();
        for (k, c) in &numeric {
            m.insert(
                c.csi.clone().unwrap_or_default(),
                (k.clone(), "/id-in".to_owned()),
            );
        }
        Box::new(m)
    });
    drop(numeric);
    model("HashMap<String, String> (by_csi or by_rn)", &mut || {
        Box::new(
            keyed
                .iter()
                .map(|(k, c)| (c.csi.clone().unwrap_or_default(), k.clone()))
                .collect::<std::collections::HashMap<_, _>>(),
        )
    });
    model(
        "liveness: HashMap<csi, (Option<Instant>, u32)>",
        &mut || {
            Box::new(
                keyed
                    .iter()
                    .map(|(k, _)| (k.clone(), (Some(std::time::Instant::now()), 0u32)))
                    .collect::<std::collections::HashMap<_, _>>(),
            )
        },
    );
    model("liveness: BTreeSet<(Instant, csi)>", &mut || {
        let t = std::time::Instant::now();
        Box::new(
            keyed
                .iter()
                .enumerate()
                .map(|(i, (k, _))| {
                    (
                        t + std::time::Duration::from_micros(i as u64 * 7919 % 30_000_000),
                        k.clone(),
                    )
                })
                .collect::<std::collections::BTreeSet<_>>(),
        )
    });
    drop(keyed);
    let sample = serde_json::to_string(&csrs[0]).unwrap_or_default();
    println!("  a stored CSR: {sample}");
    drop(csrs);
    for i in 0..n {
        assert_eq!(del(&mut e, i, &format!("d{i}")), Some(Rsc::DELETED));
    }
    assert_eq!(e.registree_count(), 0);
    println!(
        "  after DELETE of all: {:.0} bytes per registree still held",
        (live() - before) as f64 / n as f64
    );
}
