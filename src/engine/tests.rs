//! Simulated-time tests of the whole engine: requests in as bytes, answers
//! and probes out as bytes, time as a value. No broker, no clock.

use super::*;
use crate::config::Config;
use crate::engine::store::StoreChange;
use crate::primitive::{Format, Operation, Request, ResourceType, Response};
use crate::time::Timestamp;
use crate::topic;
use serde_json::{json, Value};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

const T0: u64 = 1_800_000_000;

fn settings(text: &str, durable: bool) -> EngineSettings {
    let cfg = Config::from_str(text, std::path::Path::new("t.toml")).expect("config");
    let mut s = cfg.engine_settings(Timestamp::from_secs(T0), 42);
    s.durable = durable;
    s
}

fn in_cse(check: &str, durable: bool) -> EngineSettings {
    settings(
        &format!(
            "[cse]\nid = \"/id-in\"\nname = \"cse-in\"\ntype = \"IN\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\ntimeout = \"5s\"\n[registrees]\ncheck_interval = \"{check}\"\n"
        ),
        durable,
    )
}

fn mn_cse() -> EngineSettings {
    settings(
        "[cse]\nid = \"/id-mn\"\nname = \"cse-mn\"\ntype = \"MN\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\ntimeout = \"5s\"\n[registrar]\nid = \"/id-in\"\nname = \"cse-in\"\ncheck_interval = \"60s\"\n",
        false,
    )
}

fn start() -> Now {
    Now::at(Timestamp::from_secs(T0))
}

/// The route of a request from `hop` to `own`.
fn from(hop: &str, own: &str) -> Route {
    let t = format!(
        "/oneM2M/req/{}/{}/json",
        crate::id::to_topic_segment(hop),
        crate::id::to_topic_segment(own)
    );
    topic::parse(&t).expect("route")
}

/// The route of an answer from `peer` to `own`.
fn answer_from(peer: &str, own: &str) -> Route {
    let t = format!(
        "/oneM2M/resp/{}/{}/json",
        crate::id::to_topic_segment(own),
        crate::id::to_topic_segment(peer)
    );
    topic::parse(&t).expect("route")
}

fn csr_create(csi: &str, rqi: &str) -> Vec<u8> {
    let mut r = Request::new(Operation::Create, "/id-in/cse-in", csi, rqi);
    r.ty = Some(ResourceType::REMOTE_CSE);
    r.rvi = Some("3".into());
    r.pc = Some(json!({"m2m:csr": {
        "csi": csi, "cb": format!("{csi}/cse"), "rr": true, "srv": ["3"],
        "poa": ["mqtt://127.0.0.1:1883"],
    }}));
    serde_json::to_vec(&r).expect("json")
}

fn request(op: Operation, to: &str, fr: &str, rqi: &str) -> Vec<u8> {
    let mut r = Request::new(op, to, fr, rqi);
    r.rvi = Some("3".into());
    serde_json::to_vec(&r).expect("json")
}

fn decode_rsp(payload: &[u8]) -> Response {
    Format::Json.decode_response(payload).expect("response")
}

fn decode_req(payload: &[u8]) -> Request {
    Format::Json.decode_request(payload).expect("request")
}

/// Everything the engine said, drained.
#[derive(Default)]
struct Out {
    requests: Vec<(CseId, Request, Option<Ack>)>,
    responses: Vec<(Route, Response, Option<Ack>)>,
    acks: Vec<Ack>,
    events: Vec<Event>,
    batches: Vec<StoreBatch>,
}

fn drain(e: &mut Engine) -> Out {
    let mut out = Out::default();
    while let Some(b) = e.poll_store() {
        out.batches.push(b);
    }
    while let Some(t) = e.poll_transmit() {
        match t {
            Transmit::Request {
                to, payload, ack, ..
            } => out.requests.push((to, decode_req(&payload), ack)),
            Transmit::Response { to, payload, ack } => {
                let rsp = match to.format {
                    Ok(Format::Cbor) => Format::Cbor.decode_response(&payload).expect("cbor"),
                    _ => decode_rsp(&payload),
                };
                out.responses.push((to, rsp, ack))
            }
            Transmit::Ack(a) => out.acks.push(a),
        }
    }
    while let Some(ev) = e.poll_event() {
        out.events.push(ev);
    }
    out
}

fn connected(s: EngineSettings) -> (Engine, Now) {
    let now = start();
    let mut e = Engine::new(s, now);
    e.connection(true, now);
    (e, now)
}

fn register(e: &mut Engine, csi: &str, now: Now) -> Response {
    e.handle_request(
        from(csi, "/id-in"),
        &csr_create(csi, &format!("c-{csi}")),
        None,
        now,
    );
    let mut out = drain(e);
    assert_eq!(out.responses.len(), 1, "one answer to a CREATE");
    out.responses.remove(0).1
}

// ----- liveness -----

/// Runs `e` for `span` of simulated time; every registree answers each
/// probe after a delay drawn from `delay` (or never, if it is in `silent`).
/// Returns the removals.
fn run_liveness(
    e: &mut Engine,
    mut now: Now,
    span: Duration,
    delay: impl Fn(u64) -> Duration,
    silent: &[&str],
) -> (Now, Vec<String>, usize) {
    let end = now.mono + span;
    let mut answers: BinaryHeap<Reverse<(Instant, u64, String, String)>> = BinaryHeap::new();
    let mut n = 0u64;
    let mut removed = Vec::new();
    let mut probes = 0;
    loop {
        let out = drain(e);
        for ev in out.events {
            if let Event::RegistreeRemoved { csi, .. } = ev {
                removed.push(csi);
            }
        }
        for (to, req, _) in out.requests {
            probes += 1;
            assert_eq!(req.op, Operation::Retrieve);
            if silent.contains(&to.as_str()) {
                continue;
            }
            n += 1;
            answers.push(Reverse((now.mono + delay(n), n, to.to_string(), req.rqi)));
        }
        let next_answer = answers.peek().map(|Reverse((t, ..))| *t);
        let next = match (next_answer, e.poll_timeout()) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => match a.or(b) {
                Some(t) => t,
                None => break,
            },
        };
        if next > end {
            break;
        }
        now = now.advance_to(next);
        if next_answer == Some(next) {
            if let Some(Reverse((_, _, peer, rqi))) = answers.pop() {
                let mut rsp = Response::new(Rsc::OK, rqi);
                rsp.pc = Some(json!({"m2m:cb": {"csi": peer, "rn": "cse"}}));
                let payload = serde_json::to_vec(&rsp).expect("json");
                e.handle_response(&answer_from(&peer, "/id-in"), &payload, now);
            }
        } else {
            e.handle_timeout(now);
        }
    }
    (now, removed, probes)
}

#[test]
fn ten_thousand_live_registrees_keep_their_csrs() {
    let (mut e, now) = connected(in_cse("30s", false));
    for i in 0..10_000 {
        let csi = format!("/id-r{i}");
        assert_eq!(register(&mut e, &csi, now).rsc, Rsc::CREATED);
    }
    // Answers take up to 4.5 s of a 5 s timeout; five minutes of checks.
    let (_, removed, probes) = run_liveness(
        &mut e,
        now,
        Duration::from_secs(300),
        |n| Duration::from_millis(200 + (n * 7919) % 4300),
        &[],
    );
    assert!(removed.is_empty(), "removed: {}", removed.len());
    assert_eq!(e.registree_count(), 10_000);
    assert!(
        probes >= 90_000,
        "each registree probed about every 30 s: {probes}"
    );
}

#[test]
fn a_week_of_checks_removes_nobody_who_answers() {
    let (mut e, now) = connected(in_cse("1h", false));
    for i in 0..50 {
        register(&mut e, &format!("/id-r{i}"), now);
    }
    let (_, removed, probes) = run_liveness(
        &mut e,
        now,
        Duration::from_secs(7 * 24 * 3600),
        |n| Duration::from_millis(10 + n % 4900),
        &[],
    );
    assert!(removed.is_empty());
    assert!(probes >= 50 * 160, "{probes}");
}

#[test]
fn a_silent_registree_is_removed_after_exactly_the_documented_misses() {
    let (mut e, now) = connected(in_cse("10s", false));
    register(&mut e, "/id-live", now);
    register(&mut e, "/id-dead", now);
    let mut probes_of_dead = 0;
    let mut now = now;
    let mut removed_at_probe = None;
    for _ in 0..2000 {
        let out = drain(&mut e);
        for (to, req, _) in out.requests {
            if to.as_str() == "/id-dead" {
                probes_of_dead += 1;
            } else {
                let rsp = serde_json::to_vec(&Response::new(Rsc::OK, req.rqi)).expect("json");
                e.handle_response(&answer_from(to.as_str(), "/id-in"), &rsp, now);
            }
        }
        if out
            .events
            .iter()
            .any(|ev| matches!(ev, Event::RegistreeRemoved { csi, .. } if csi == "/id-dead"))
        {
            removed_at_probe = Some(probes_of_dead);
            break;
        }
        let Some(t) = e.poll_timeout() else { break };
        now = now.advance_to(t);
        e.handle_timeout(now);
    }
    assert_eq!(removed_at_probe, Some(LIVENESS_MISSES as usize));
    assert_eq!(e.registree_count(), 1);
    assert_eq!(
        e.liveness_misses("/id-dead"),
        None,
        "its counter went with it"
    );
}

#[test]
fn one_success_between_misses_resets_the_count() {
    let (mut e, now) = connected(in_cse("10s", false));
    register(&mut e, "/id-flaky", now);
    let mut now = now;
    // Pattern: miss, answer, miss, answer, ... never two misses in a row.
    let mut k = 0;
    for _ in 0..400 {
        let out = drain(&mut e);
        assert!(
            !out.events
                .iter()
                .any(|ev| matches!(ev, Event::RegistreeRemoved { .. })),
            "a registree that answers every other probe was removed"
        );
        for (to, req, _) in out.requests {
            k += 1;
            if k % 2 == 0 {
                let rsp = serde_json::to_vec(&Response::new(Rsc::OK, req.rqi)).expect("json");
                e.handle_response(&answer_from(to.as_str(), "/id-in"), &rsp, now);
            }
        }
        let Some(t) = e.poll_timeout() else { break };
        now = now.advance_to(t);
        e.handle_timeout(now);
    }
    assert!(k > 20, "{k}");
    assert_eq!(e.registree_count(), 1);
}

#[test]
fn probes_without_a_broker_are_not_misses() {
    let (mut e, now) = connected(in_cse("10s", false));
    register(&mut e, "/id-a", now);
    let mut now = now;
    let mut lost = 0;
    for _ in 0..50 {
        let Some(t) = e.poll_timeout() else { break };
        now = now.advance_to(t);
        e.handle_timeout(now);
        let out = drain(&mut e);
        assert!(!out
            .events
            .iter()
            .any(|ev| matches!(ev, Event::RegistreeRemoved { .. })));
        if !out.requests.is_empty() {
            // Every probe is cut off by the link going down.
            lost += 1;
            e.connection(false, now);
            e.connection(true, now);
        }
    }
    assert!(lost >= 10, "{lost}");
    assert_eq!(e.liveness_misses("/id-a"), Some(0));
    assert_eq!(e.registree_count(), 1);
}

#[test]
fn a_wall_clock_step_moves_no_timer() {
    let (mut e, now) = connected(in_cse("60s", false));
    register(&mut e, "/id-a", now);
    drain(&mut e);
    let before = e.poll_timeout().expect("probe armed");
    // NTP steps the wall clock five hours forward at gateway boot.
    let stepped = Now {
        mono: now.mono + Duration::from_millis(1),
        wall: Timestamp(now.wall.0 + 5 * 3600 * 1_000_000),
    };
    e.handle_timeout(stepped);
    let out = drain(&mut e);
    assert!(out.requests.is_empty(), "no probe fired early");
    assert_eq!(e.poll_timeout(), Some(before));
    // ...and the wall time still goes where it belongs: on the wire.
    let rsp = register(&mut e, "/id-b", stepped);
    let ct = rsp
        .pc
        .as_ref()
        .and_then(|pc| pc["m2m:csr"]["ct"].as_str().map(str::to_owned));
    assert_eq!(ct, Some(stepped.wall.to_onem2m()));
}

// ----- durability -----

#[test]
fn a_change_is_answered_only_once_durable() {
    let (mut e, now) = connected(in_cse("60s", true));
    e.handle_request(
        from("/id-a", "/id-in"),
        &csr_create("/id-a", "c1"),
        Some(Ack(7)),
        now,
    );
    let out = drain(&mut e);
    assert!(
        out.responses.is_empty() && out.acks.is_empty(),
        "no answer before the write"
    );
    assert_eq!(out.batches.len(), 1);
    let batch = &out.batches[0];
    assert!(
        matches!(&batch.changes[..], [StoreChange::Put { ri, .. }, StoreChange::Answered(a)] if ri == "id-a" && a.rqi == "c1"),
        "the change and its answer, in one batch: {:?}",
        batch.changes
    );
    // A duplicate delivery meanwhile is neither executed nor answered.
    e.handle_request(
        from("/id-a", "/id-in"),
        &csr_create("/id-a", "c1"),
        Some(Ack(8)),
        now,
    );
    let out = drain(&mut e);
    assert!(out.responses.is_empty());
    assert_eq!(out.acks, [Ack(8)]);
    e.store_committed(batch.seq, now);
    let out = drain(&mut e);
    assert_eq!(out.responses.len(), 1);
    assert_eq!(out.responses[0].1.rsc, Rsc::CREATED);
    assert_eq!(
        out.responses[0].2,
        Some(Ack(7)),
        "acknowledged with its answer"
    );
}

#[test]
fn a_redelivery_after_a_crash_gets_the_answer_that_was_written() {
    let (mut e, now) = connected(in_cse("60s", true));
    e.handle_request(
        from("/id-a", "/id-in"),
        &csr_create("/id-a", "c1"),
        None,
        now,
    );
    let batch = drain(&mut e).batches.remove(0);
    // The node dies after the commit, before the 2001 went out; it restarts
    // from what the persister kept.
    let mut snapshot = Snapshot::default();
    for c in &batch.changes {
        match c {
            StoreChange::Put { ri, csr } => snapshot.csrs.push((ri.clone(), csr.clone())),
            StoreChange::Answered(a) => snapshot.answered.push(a.clone()),
            _ => {}
        }
    }
    let mut e = Engine::restore(in_cse("60s", true), snapshot, now).expect("valid store");
    e.connection(true, now);
    e.handle_request(
        from("/id-a", "/id-in"),
        &csr_create("/id-a", "c1"),
        None,
        now,
    );
    let out = drain(&mut e);
    assert_eq!(out.responses.len(), 1);
    assert_eq!(out.responses[0].1.rsc, Rsc::CREATED, "not 4105");
    assert!(
        out.batches
            .iter()
            .flat_map(|b| &b.changes)
            .all(|c| matches!(c, StoreChange::ForgetAnswer { .. })),
        "not executed again: {:?}",
        out.batches
    );
}

#[test]
fn an_answer_is_kept_durable_until_its_request_is_acknowledged() {
    let (mut e, now) = connected(in_cse("60s", true));
    e.handle_request(
        from("/id-a", "/id-in"),
        &csr_create("/id-a", "c1"),
        Some(Ack(9)),
        now,
    );
    let batch = drain(&mut e).batches.remove(0);
    e.store_committed(batch.seq, now);
    let out = drain(&mut e);
    assert_eq!(out.responses[0].2, Some(Ack(9)));
    assert!(
        out.batches.is_empty(),
        "nothing to forget before the PUBACK is out"
    );
    e.acked(Ack(9));
    let out = drain(&mut e);
    assert!(
        matches!(&out.batches[0].changes[..], [StoreChange::ForgetAnswer { rqi, .. }] if rqi == "c1"),
        "{:?}",
        out.batches
    );
}

#[test]
fn changes_wait_for_one_write_at_a_time_and_share_the_next() {
    let (mut e, now) = connected(in_cse("60s", true));
    e.handle_request(
        from("/id-a", "/id-in"),
        &csr_create("/id-a", "c1"),
        None,
        now,
    );
    let first = drain(&mut e).batches;
    assert_eq!(first.len(), 1);
    for i in 0..10 {
        let csi = format!("/id-b{i}");
        e.handle_request(from(&csi, "/id-in"), &csr_create(&csi, "c"), None, now);
    }
    assert!(
        drain(&mut e).batches.is_empty(),
        "one batch in flight at a time"
    );
    e.store_committed(first[0].seq, now);
    let out = drain(&mut e);
    assert_eq!(out.responses.len(), 1);
    assert_eq!(out.batches.len(), 1);
    assert_eq!(
        out.batches[0].changes.len(),
        20,
        "group commit: ten changes and their answers"
    );
    e.store_committed(out.batches[0].seq, now);
    assert_eq!(drain(&mut e).responses.len(), 10);
}

#[test]
fn a_failed_write_is_5000_and_changes_nothing() {
    let (mut e, now) = connected(in_cse("60s", true));
    e.handle_request(
        from("/id-a", "/id-in"),
        &csr_create("/id-a", "c1"),
        None,
        now,
    );
    let b = drain(&mut e).batches.remove(0);
    e.store_committed(b.seq, now);
    drain(&mut e);
    // Disk full: a DELETE of /id-a and a CREATE of /id-b are refused.
    e.handle_request(
        from("/id-a", "/id-in"),
        &request(Operation::Delete, "/id-in/cse-in/id-a", "/id-a", "d1"),
        None,
        now,
    );
    e.handle_request(
        from("/id-b", "/id-in"),
        &csr_create("/id-b", "c2"),
        None,
        now,
    );
    let out = drain(&mut e);
    assert_eq!(out.batches.len(), 1);
    e.store_failed(out.batches[0].seq, "database or disk is full", now);
    let out = drain(&mut e);
    let rscs: Vec<Rsc> = out.responses.iter().map(|(_, r, _)| r.rsc).collect();
    assert_eq!(rscs, [Rsc::INTERNAL_SERVER_ERROR; 2]);
    let why = out.responses[0]
        .1
        .debug_text()
        .unwrap_or_default()
        .to_owned();
    assert!(why.contains("disk is full"), "{why}");
    assert!(out
        .events
        .iter()
        .any(|ev| matches!(ev, Event::StoreFailed { .. })));
    assert!(
        e.registrar().store().by_csi("/id-a").is_some(),
        "the DELETE was undone"
    );
    assert!(
        e.registrar().store().by_csi("/id-b").is_none(),
        "the CREATE was undone"
    );
    assert!(drain(&mut e).batches.is_empty(), "nothing left to write");
    // A retry with the same rqi is executed, not answered from the cache.
    e.handle_request(
        from("/id-b", "/id-in"),
        &csr_create("/id-b", "c2"),
        None,
        now,
    );
    assert_eq!(drain(&mut e).batches.len(), 1);
}

// ----- forwarding -----

#[test]
fn forwards_of_two_originators_with_one_rqi_do_not_collide() {
    let (mut e, now) = connected(in_cse("60s", false));
    register(&mut e, "/id-mn", now);
    for hop in ["/id-x", "/id-y"] {
        e.handle_request(
            from(hop, "/id-in"),
            &request(Operation::Retrieve, "/id-mn/cse-mn", hop, "SAME"),
            Some(Ack(1)),
            now,
        );
    }
    let out = drain(&mut e);
    assert_eq!(out.requests.len(), 2);
    let rqis: Vec<&str> = out
        .requests
        .iter()
        .map(|(_, r, _)| r.rqi.as_str())
        .collect();
    assert_ne!(rqis[0], rqis[1], "hop-local rqis");
    assert!(out
        .requests
        .iter()
        .all(|(to, _, ack)| to.as_str() == "/id-mn" && ack.is_some()));
    // The registree answers the second first.
    for (i, (_, req, _)) in out.requests.iter().enumerate().rev() {
        let mut rsp = Response::new(Rsc::OK, req.rqi.clone());
        rsp.pc = Some(json!({"m2m:cb": {"rn": format!("answer-{i}")}}));
        e.handle_response(
            &answer_from("/id-mn", "/id-in"),
            &serde_json::to_vec(&rsp).expect("json"),
            now,
        );
    }
    let out = drain(&mut e);
    assert_eq!(out.responses.len(), 2);
    for (route, rsp, _) in &out.responses {
        assert_eq!(rsp.rqi, "SAME");
        let which = if route.originator == "/id-x" { 0 } else { 1 };
        assert_eq!(
            rsp.pc.as_ref().map(|pc| pc["m2m:cb"]["rn"].clone()),
            Some(json!(format!("answer-{which}")))
        );
    }
}

#[test]
fn an_answer_from_another_peer_is_not_taken() {
    let (mut e, now) = connected(in_cse("60s", false));
    register(&mut e, "/id-mn", now);
    e.handle_request(
        from("/id-x", "/id-in"),
        &request(Operation::Retrieve, "/id-mn/cse-mn", "/id-x", "r1"),
        None,
        now,
    );
    let (_, req, _) = drain(&mut e).requests.remove(0);
    let forged = serde_json::to_vec(&Response::new(Rsc::OK, req.rqi.clone())).expect("json");
    e.handle_response(&answer_from("/id-evil", "/id-in"), &forged, now);
    assert!(drain(&mut e).responses.is_empty());
    // Silence ends in 4008 with the original rqi.
    let later = now.plus(Duration::from_secs(6));
    e.handle_timeout(later);
    let out = drain(&mut e);
    assert_eq!(out.responses.len(), 1);
    assert_eq!(out.responses[0].1.rsc, Rsc::REQUEST_TIMEOUT);
    assert_eq!(out.responses[0].1.rqi, "r1");
}

// ----- decisions that used to live in the driver -----

#[test]
fn garbage_is_answered_4000_when_it_has_an_rqi_and_dropped_otherwise() {
    let (mut e, now) = connected(in_cse("60s", false));
    e.handle_request(
        from("/id-x", "/id-in"),
        br#"{"rqi":"r9","op":"nonsense"}"#,
        Some(Ack(1)),
        now,
    );
    let out = drain(&mut e);
    assert_eq!(out.responses.len(), 1);
    assert_eq!(out.responses[0].1.rsc, Rsc::BAD_REQUEST);
    assert_eq!(out.responses[0].1.rqi, "r9");
    e.handle_request(
        from("/id-x", "/id-in"),
        b"\x00\x01 not json",
        Some(Ack(2)),
        now,
    );
    let out = drain(&mut e);
    assert!(out.responses.is_empty());
    assert_eq!(out.acks, [Ack(2)], "dropped, but acknowledged");
    assert!(out
        .events
        .iter()
        .any(|ev| matches!(ev, Event::Dropped { .. })));
}

#[test]
fn xml_is_refused_in_xml() {
    let (mut e, now) = connected(in_cse("60s", false));
    let route = topic::parse("/oneM2M/req/id-x/id-in/xml").expect("route");
    e.handle_request(route, b"<m2m:rqp><rqi>x1</rqi></m2m:rqp>", None, now);
    let t = e.poll_transmit();
    let Some(Transmit::Response { payload, .. }) = t else {
        panic!("no answer: {t:?}")
    };
    let text = String::from_utf8(payload).expect("utf8");
    assert!(
        text.contains("<rsc>4015</rsc>") && text.contains("<rqi>x1</rqi>"),
        "{text}"
    );
}

#[test]
fn the_registrar_csr_is_completed_and_stored_by_the_engine() {
    let now = start();
    let mut e = Engine::new(mn_cse(), now);
    assert!(
        drain(&mut e).requests.is_empty(),
        "nothing before the broker is there"
    );
    e.connection(true, now);
    let mut now = now;
    let mut registrar = upstream_registrar(now);
    for _ in 0..10 {
        let out = drain(&mut e);
        for (to, req, _) in out.requests {
            assert_eq!(to.as_str(), "/id-in");
            answer_upstream(&mut e, &mut registrar, &req, now);
        }
        now = now.plus(Duration::from_millis(10));
    }
    assert!(e.is_registered());
    let local = e
        .registrar()
        .store()
        .by_csi("/id-in")
        .map(|(_, c)| c.clone())
        .expect("registrar CSR");
    assert_eq!(local.ty, Some(ResourceType::REMOTE_CSE));
    assert_eq!(local.pi.as_deref(), Some("id-mn"));
    assert!(local.ct.is_some() && local.lt.is_some());
}

#[test]
fn a_storm_of_registrations_is_carried_up_in_few_updates() {
    let now = start();
    let mut e = Engine::new(mn_cse(), now);
    e.connection(true, now);
    let mut registrar = upstream_registrar(now);
    let mut updates = 0;
    let mut pending: Vec<Request> = Vec::new();
    let step = |e: &mut Engine, pending: &mut Vec<Request>, updates: &mut usize| {
        let out = drain(e);
        for (_, req, _) in out.requests {
            if req.op == Operation::Update {
                *updates += 1;
            }
            pending.push(req);
        }
    };
    step(&mut e, &mut pending, &mut updates);
    // Registration completes, one request at a time.
    while let Some(req) = pending.pop() {
        answer_upstream(&mut e, &mut registrar, &req, now);
        step(&mut e, &mut pending, &mut updates);
    }
    assert!(e.is_registered());
    // 500 ASNs register at the MN while one UPDATE is in flight at a time.
    for i in 0..500 {
        let csi = format!("/id-asn{i}");
        let mut r = Request::new(Operation::Create, "/id-mn/cse-mn", &csi, "c");
        r.ty = Some(ResourceType::REMOTE_CSE);
        r.rvi = Some("3".into());
        r.pc = Some(
            json!({"m2m:csr": {"csi": csi, "cb": format!("{csi}/cb"), "rr": true, "srv": ["3"]}}),
        );
        e.handle_request(
            from(&csi, "/id-mn"),
            &serde_json::to_vec(&r).expect("json"),
            None,
            now,
        );
        step(&mut e, &mut pending, &mut updates);
        if i % 100 == 99 {
            while let Some(req) = pending.pop() {
                answer_upstream(&mut e, &mut registrar, &req, now);
                step(&mut e, &mut pending, &mut updates);
            }
        }
    }
    assert!(updates <= 10, "{updates} UPDATEs for 500 registrations");
    let (_, own) = registrar.store().by_csi("/id-mn").expect("own CSR");
    assert_eq!(own.dcse().len(), 500, "every descendant is carried up");
}

/// The real registrar core, as the MN's registrar `/id-in`.
fn upstream_registrar(now: Now) -> Registrar {
    Registrar::new(
        Config::from_str(
            "[cse]\nid = \"/id-in\"\nname = \"cse-in\"\ntype = \"IN\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n",
            std::path::Path::new("in.toml"),
        )
        .expect("config")
        .registrar_settings(now.wall),
    )
}

/// `registrar` answers the MN's request `req`, and the answer goes in.
fn answer_upstream(e: &mut Engine, registrar: &mut Registrar, req: &Request, now: Now) {
    let Outcome::Respond { response, .. } = registrar.handle(req, "/id-mn", now.wall) else {
        panic!("the registrar forwarded a registration request")
    };
    e.handle_response(
        &answer_from("/id-in", "/id-mn"),
        &serde_json::to_vec(&response).expect("json"),
        now,
    );
}

// ----- trust and limits -----

/// Sends `req` as the hop `hop`, returns the answer.
fn ask(e: &mut Engine, hop: &str, req: &Request, now: Now) -> Response {
    e.handle_request(
        from(hop, "/id-in"),
        &serde_json::to_vec(req).expect("json"),
        None,
        now,
    );
    let mut out = drain(e);
    assert_eq!(out.responses.len(), 1, "one answer");
    out.responses.remove(0).1
}

fn csr_req(op: Operation, to: &str, fr: &str, rqi: &str, body: Value) -> Request {
    let mut r = Request::new(op, to, fr, rqi);
    r.rvi = Some("3".into());
    if op == Operation::Create {
        r.ty = Some(ResourceType::REMOTE_CSE);
    }
    r.pc = Some(json!({ "m2m:csr": body }));
    r
}

fn base_csr(csi: &str) -> Value {
    json!({"csi": csi, "cb": format!("{csi}/cb"), "rr": true, "srv": ["3"]})
}

#[test]
fn nobody_acts_in_another_cses_name() {
    let (mut e, now) = connected(in_cse("60s", false));
    register(&mut e, "/id-b", now);
    let evil = json!({"poa": ["mqtt://evil:1"]});
    // UPDATE and DELETE of /id-b's CSR from the hop /id-a, with fr /id-b.
    let upd = csr_req(
        Operation::Update,
        "/id-in/cse-in/id-b",
        "/id-b",
        "u1",
        evil.clone(),
    );
    assert_eq!(
        ask(&mut e, "/id-a", &upd, now).rsc,
        Rsc::ORIGINATOR_HAS_NO_PRIVILEGE
    );
    let del = Request::new(Operation::Delete, "/id-in/cse-in/id-b", "/id-b", "d1");
    let mut del = del;
    del.rvi = Some("3".into());
    assert_eq!(
        ask(&mut e, "/id-a", &del, now).rsc,
        Rsc::ORIGINATOR_HAS_NO_PRIVILEGE
    );
    // A CREATE "in the name of" /id-victim.
    let c = csr_req(
        Operation::Create,
        "/id-in/cse-in",
        "/id-victim",
        "c1",
        base_csr("/id-victim"),
    );
    assert_eq!(
        ask(&mut e, "/id-a", &c, now).rsc,
        Rsc::ORIGINATOR_HAS_NO_PRIVILEGE
    );
    assert!(e.registrar().store().by_csi("/id-victim").is_none());
    let b = e
        .registrar()
        .store()
        .by_csi("/id-b")
        .map(|(_, c)| c.poa.clone());
    assert_eq!(
        b,
        Some(Some(vec!["mqtt://127.0.0.1:1883".to_owned()])),
        "untouched"
    );
    // The owner itself still can.
    assert_eq!(ask(&mut e, "/id-b", &upd, now).rsc, Rsc::UPDATED);
}

#[test]
fn the_answer_cache_cannot_be_hijacked() {
    let (mut e, now) = connected(in_cse("60s", false));
    register(&mut e, "/id-b", now);
    // The attacker claims /id-b's next rqi, in /id-b's name and in its own.
    let mut r = Request::new(Operation::Retrieve, "/id-in/cse-in", "/id-b", "b-upd-1");
    r.rvi = Some("3".into());
    assert_eq!(
        ask(&mut e, "/id-a", &r, now).rsc,
        Rsc::ORIGINATOR_HAS_NO_PRIVILEGE
    );
    r.fr = Some("/id-a".into());
    assert_eq!(ask(&mut e, "/id-a", &r, now).rsc, Rsc::OK);
    let upd = csr_req(
        Operation::Update,
        "/id-in/cse-in/id-b",
        "/id-b",
        "b-upd-1",
        json!({"lbl": ["x"]}),
    );
    let rsp = ask(&mut e, "/id-b", &upd, now);
    assert_eq!(
        rsp.rsc,
        Rsc::UPDATED,
        "executed, not answered from the cache"
    );
}

#[test]
fn a_registrar_cannot_speak_for_cses_below_this_one() {
    let now = start();
    let mut e = Engine::new(mn_cse(), now);
    e.connection(true, now);
    drain(&mut e);
    let mut r = csr_req(
        Operation::Create,
        "/id-mn/cse-mn",
        "/id-asn",
        "c",
        base_csr("/id-asn"),
    );
    r.pc = Some(json!({"m2m:csr": base_csr("/id-asn")}));
    e.handle_request(
        from("/id-asn", "/id-mn"),
        &serde_json::to_vec(&r).expect("json"),
        None,
        now,
    );
    assert_eq!(drain(&mut e).responses[0].1.rsc, Rsc::CREATED);
    let mut get = Request::new(Operation::Retrieve, "/id-mn/cse-mn", "/id-asn", "g");
    get.rvi = Some("3".into());
    e.handle_request(
        from("/id-in", "/id-mn"),
        &serde_json::to_vec(&get).expect("json"),
        None,
        now,
    );
    assert_eq!(
        drain(&mut e).responses[0].1.rsc,
        Rsc::ORIGINATOR_HAS_NO_PRIVILEGE
    );
    get.fr = Some("/id-other-mn/Cae".into());
    e.handle_request(
        from("/id-in", "/id-mn"),
        &serde_json::to_vec(&get).expect("json"),
        None,
        now,
    );
    assert_eq!(
        drain(&mut e).responses[0].1.rsc,
        Rsc::OK,
        "from elsewhere in the tree, via the registrar"
    );
}

#[test]
fn names_ids_and_lists_are_bounded() {
    let (mut e, now) = connected(in_cse("60s", false));
    for (i, rn) in [".", "..", &"a".repeat(10_000)].into_iter().enumerate() {
        let csi = format!("/id-n{i}");
        let mut body = base_csr(&csi);
        body["rn"] = json!(rn);
        let c = csr_req(Operation::Create, "/id-in/cse-in", &csi, "c", body);
        let rsp = ask(&mut e, &csi, &c, now);
        assert_eq!(rsp.rsc, Rsc::BAD_REQUEST, "rn {:.10}", rn);
        assert!(
            rsp.debug_text().unwrap_or_default().len() < 300,
            "no echo of a huge value"
        );
    }
    // 62k one-letter labels: one CSR that would be answered a thousand times.
    let mut body = base_csr("/id-fat");
    body["lbl"] = json!(vec!["a"; 62_000]);
    let c = csr_req(Operation::Create, "/id-in/cse-in", "/id-fat", "c", body);
    let rsp = ask(&mut e, "/id-fat", &c, now);
    assert_eq!(rsp.rsc, Rsc::BAD_REQUEST);
    assert!(rsp.debug_text().unwrap_or_default().contains("lbl"));
    assert_eq!(e.registree_count(), 0);
}

#[test]
fn dcse_is_checked_against_the_tree() {
    let (mut e, now) = connected(in_cse("60s", false));
    let mut body = base_csr("/id-mn1");
    body["dcse"] = json!(["/id-asn1"]);
    let c = csr_req(Operation::Create, "/id-in/cse-in", "/id-mn1", "c", body);
    assert_eq!(ask(&mut e, "/id-mn1", &c, now).rsc, Rsc::CREATED);
    for (bad, rsc) in [
        ("/id-in", Rsc::BAD_REQUEST),
        ("/id-mn2", Rsc::BAD_REQUEST),
        ("/id-asn1", Rsc::CONFLICT),
    ] {
        let mut body = base_csr("/id-mn2");
        body["dcse"] = json!([bad]);
        let c = csr_req(Operation::Create, "/id-in/cse-in", "/id-mn2", bad, body);
        let rsp = ask(&mut e, "/id-mn2", &c, now);
        assert_eq!(rsp.rsc, rsc, "dcse {bad}: {:?}", rsp.debug_text());
    }
}

#[test]
fn registrees_and_forwards_are_bounded() {
    let mut s = in_cse("60s", false);
    s.registrar.limits.max_registrees = 2;
    s.registrar.limits.forwards_in_flight = 1;
    let (mut e, now) = connected(s);
    register(&mut e, "/id-a", now);
    register(&mut e, "/id-b", now);
    let rsp = register(&mut e, "/id-c", now);
    assert_eq!(rsp.rsc, Rsc::INTERNAL_SERVER_ERROR);
    assert!(rsp
        .debug_text()
        .unwrap_or_default()
        .contains("[registrees] max"));
    let mut get = Request::new(Operation::Retrieve, "/id-a/cb", "/id-x", "f1");
    get.rvi = Some("3".into());
    e.handle_request(
        from("/id-x", "/id-in"),
        &serde_json::to_vec(&get).expect("json"),
        None,
        now,
    );
    assert_eq!(drain(&mut e).requests.len(), 1, "the first is forwarded");
    get.rqi = "f2".into();
    let rsp = ask(&mut e, "/id-x", &get, now);
    assert_eq!(rsp.rsc, Rsc::TARGET_NOT_REACHABLE);
    assert!(rsp
        .debug_text()
        .unwrap_or_default()
        .contains("forwards_in_flight"));
}

#[test]
fn cbor_with_byte_strings_or_integer_keys_is_4000_when_its_rqi_is_readable() {
    let (mut e, now) = connected(in_cse("60s", false));
    // {"rqi": "cb1", "op": 2, "pc": h'01', 1: "x"}
    let payload = [
        0xa4, 0x63, b'r', b'q', b'i', 0x63, b'c', b'b', b'1', 0x62, b'o', b'p', 0x02, 0x62, b'p',
        b'c', 0x41, 0x01, 0x01, 0x61, b'x',
    ];
    let route = topic::parse("/oneM2M/req/id-x/id-in/cbor").expect("route");
    e.handle_request(route, &payload, None, now);
    let Some(Transmit::Response { payload, .. }) = e.poll_transmit() else {
        panic!("no answer")
    };
    let rsp = Format::Cbor.decode_response(&payload).expect("cbor answer");
    assert_eq!(rsp.rsc, Rsc::BAD_REQUEST);
    assert_eq!(rsp.rqi, "cb1");
}

#[test]
fn an_own_update_over_the_payload_limit_is_reported_and_keeps_the_registration() {
    let now = start();
    let mut s = mn_cse();
    s.max_payload = 4096;
    let mut e = Engine::new(s, now);
    e.connection(true, now);
    let mut registrar = upstream_registrar(now);
    let mut events = Vec::new();
    let pump = |e: &mut Engine, registrar: &mut Registrar, events: &mut Vec<Event>| {
        for _ in 0..20 {
            let out = drain(e);
            events.extend(out.events);
            if out.requests.is_empty() {
                break;
            }
            for (_, req, _) in out.requests {
                answer_upstream(e, registrar, &req, now);
            }
        }
    };
    pump(&mut e, &mut registrar, &mut events);
    assert!(e.is_registered());
    for i in 0..300 {
        let csi = format!("/id-asn-with-a-long-name-{i}");
        let mut r = Request::new(Operation::Create, "/id-mn/cse-mn", &csi, "c");
        r.ty = Some(ResourceType::REMOTE_CSE);
        r.rvi = Some("3".into());
        r.pc = Some(json!({"m2m:csr": base_csr(&csi)}));
        e.handle_request(
            from(&csi, "/id-mn"),
            &serde_json::to_vec(&r).expect("json"),
            None,
            now,
        );
    }
    pump(&mut e, &mut registrar, &mut events);
    assert!(events.iter().any(|ev| matches!(
        ev,
        Event::OwnRequestTooLarge {
            op: Operation::Update,
            ..
        }
    )));
    assert!(e.is_registered(), "a local limit is not a lost CSR");
    assert!(!events
        .iter()
        .any(|ev| matches!(ev, Event::Deregistered { .. })));
}

// ----- what an operator can see -----

#[test]
fn status_discovery_and_rcn_list_the_registrees() {
    // Listings are answered to the admin (and the tree); see
    // listings_and_status_are_answered_only_to_whom_they_belong.
    let mut s = in_cse("60s", false);
    s.registrar.admin = Some("Cadmin".into());
    let (mut e, now) = connected(s);
    register(&mut e, "/id-a", now);
    register(&mut e, "/id-b", now);
    let get = |to: &str, extra: Value| {
        let mut r = Request::new(Operation::Retrieve, to, "Cadmin", format!("{to}{extra}"));
        r.rvi = Some("3".into());
        if let Value::Object(m) = extra {
            for (k, v) in m {
                if k == "rcn" {
                    r.rcn = v.as_u64().map(|n| n as u8);
                } else {
                    r.other.insert(k, v);
                }
            }
        }
        r
    };
    let st = ask(
        &mut e,
        "/Cadmin",
        &get("/id-in/cse-in/m2mnode-status", json!({})),
        now,
    );
    assert_eq!(st.rsc, Rsc::OK);
    let st = &st.pc.expect("pc")["m2mnode:status"];
    assert_eq!(st["connected"], json!(true));
    assert_eq!(st["registrar"], Value::Null);
    let csis: Vec<&str> = st["registrees"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|r| r["csi"].as_str())
        .collect();
    assert_eq!(csis, ["/id-a", "/id-b"]);
    let d = ask(
        &mut e,
        "/Cadmin",
        &get("/id-in/cse-in", json!({"fc": {"fu": 1, "ty": 16}})),
        now,
    );
    assert_eq!(
        d.pc.expect("pc")["m2m:uril"],
        json!(["cse-in/id-a", "cse-in/id-b"])
    );
    let d = ask(
        &mut e,
        "/Cadmin",
        &get("/id-in/cse-in", json!({"fc": {"fu": 1, "ty": [2]}})),
        now,
    );
    assert_eq!(d.pc.expect("pc")["m2m:uril"], json!([]));
    let r4 = ask(&mut e, "/Cadmin", &get("-", json!({"rcn": 4})), now);
    let pc = r4.pc.expect("pc");
    assert_eq!(pc["m2m:cb"]["csi"], json!("/id-in"));
    assert_eq!(pc["m2m:cb"]["m2m:csr"].as_array().map(Vec::len), Some(2));
    let r6 = ask(&mut e, "/Cadmin", &get("-", json!({"rcn": 6})), now);
    assert_eq!(
        r6.pc.expect("pc")["m2m:rrl"]["rrf"][1]["val"],
        json!("cse-in/id-b")
    );
}

/// A listing larger than `mqtt.max_payload` used to be a 5000 (issue 20:
/// answers are bounded before they are built): it is now cut into pages,
/// each marked partial with the offset that continues it.
#[test]
fn a_listing_over_the_payload_limit_comes_in_pages() {
    let mut s = in_cse("60s", false);
    s.max_payload = 2048;
    s.registrar.admin = Some("Cadmin".into());
    let (mut e, now) = connected(s);
    for i in 0..20 {
        register(&mut e, &format!("/id-r{i:02}"), now);
    }
    let mut seen = Vec::new();
    let mut ofst = None;
    for page in 0.. {
        assert!(page < 20, "pages end");
        let mut r = Request::new(Operation::Retrieve, "-", "Cadmin", format!("big{page}"));
        r.rvi = Some("3".into());
        r.rcn = Some(4);
        if let Some(o) = ofst {
            r.other.insert("fc".into(), json!({ "ofst": o }));
        }
        let rsp = ask(&mut e, "/Cadmin", &r, now);
        assert_eq!(rsp.rsc, Rsc::OK);
        let csrs = rsp.pc.as_ref().expect("pc")["m2m:cb"]["m2m:csr"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        seen.extend(
            csrs.iter()
                .filter_map(|c| c["csi"].as_str().map(str::to_owned)),
        );
        match rsp.other.get("cnst") {
            Some(cnst) => {
                assert_eq!(cnst, &json!(registrar::CONTENT_PARTIAL));
                assert!(!csrs.is_empty(), "every page moves on");
                ofst = rsp.other.get("cnot").and_then(Value::as_u64);
                assert!(ofst.is_some(), "a partial answer says where it goes on");
            }
            None => break,
        }
    }
    let all: Vec<String> = (0..20).map(|i| format!("/id-r{i:02}")).collect();
    assert_eq!(seen, all, "every registree once, in order");
    // lim and ofst of the filter criteria.
    let mut d = Request::new(Operation::Retrieve, "-", "Cadmin", "d");
    d.rvi = Some("3".into());
    d.other
        .insert("fc".into(), json!({"fu": 1, "ty": 16, "lim": 3, "ofst": 5}));
    let rsp = ask(&mut e, "/Cadmin", &d, now);
    assert_eq!(
        rsp.pc.expect("pc")["m2m:uril"],
        json!(["cse-in/id-r04", "cse-in/id-r05", "cse-in/id-r06"])
    );
    assert_eq!(rsp.other.get("cnot"), Some(&json!(8)));
}

// ----- limits that hold for the whole node (issue 20) -----

fn forward_from(hop: &str, to: &str, rqi: &str) -> Vec<u8> {
    request(Operation::Retrieve, to, hop, rqi)
}

#[test]
fn an_honest_registree_is_reached_while_a_silent_one_holds_300_forwards() {
    let (mut e, mut now) = connected(in_cse("60s", false));
    register(&mut e, "/id-silent", now);
    register(&mut e, "/id-honest", now);
    let per_hop = Limits::default().forwards_per_hop;
    let mut refused = Vec::new();
    let mut sent = 0;
    // 300 forwards to the silent one, from 300 originators and from one.
    for i in 0..300 {
        for hop in [format!("/id-x{i}"), "/id-flood".to_owned()] {
            e.handle_request(
                from(&hop, "/id-in"),
                &forward_from(&hop, "/id-silent/cse", &format!("s{i}")),
                None,
                now,
            );
            let out = drain(&mut e);
            sent += out.requests.len();
            refused.extend(out.responses.into_iter().map(|(_, r, _)| r));
        }
        now = now.plus(Duration::from_millis(10));
    }
    assert_eq!(sent, per_hop, "the silent hop holds its share, no more");
    assert_eq!(refused.len(), 600 - per_hop);
    for r in &refused {
        assert_eq!(r.rsc, Rsc::TARGET_NOT_REACHABLE);
        let why = r.debug_text().unwrap_or_default();
        assert!(why.contains("forwards_per_hop"), "{why}");
        assert!(
            why.contains("/id-silent") || why.contains("/id-flood"),
            "{why}"
        );
        // An answer of this node: rvi, to and fr like any other.
        assert_eq!(r.rvi.as_deref(), Some("3"));
        assert_eq!(r.fr.as_deref(), Some("/id-in"));
        assert!(r.to.as_deref().is_some_and(|t| t.starts_with("/id-")));
    }
    // Meanwhile the honest one is reached and its answer relayed.
    e.handle_request(
        from("/id-y", "/id-in"),
        &forward_from("/id-y", "/id-honest/cse", "h1"),
        None,
        now,
    );
    let out = drain(&mut e);
    assert_eq!(out.requests.len(), 1, "forwarded: {:?}", out.responses);
    let (to, req, _) = &out.requests[0];
    assert_eq!(to.as_str(), "/id-honest");
    let ok = serde_json::to_vec(&Response::new(Rsc::OK, req.rqi.clone())).expect("json");
    e.handle_response(&answer_from("/id-honest", "/id-in"), &ok, now);
    let out = drain(&mut e);
    assert_eq!(out.responses.len(), 1);
    assert_eq!(out.responses[0].1.rsc, Rsc::OK);
    assert_eq!(out.responses[0].1.rqi, "h1");
    // The silent hop's forwards end in 4008s of this node, each with the
    // request's rvi, its originator as to and this CSE as fr.
    let later = now.plus(Duration::from_secs(6));
    e.handle_timeout(later);
    let out = drain(&mut e);
    assert_eq!(out.responses.len(), per_hop);
    for (route, r, _) in &out.responses {
        assert_eq!(r.rsc, Rsc::REQUEST_TIMEOUT);
        assert_eq!(r.rvi.as_deref(), Some("3"));
        assert_eq!(r.to.as_deref(), Some(route.originator.as_str()));
        assert_eq!(r.fr.as_deref(), Some("/id-in"));
    }
}

#[test]
fn listings_and_status_are_answered_only_to_whom_they_belong() {
    let mut s = in_cse("60s", false);
    s.registrar.admin = Some("Cadmin".into());
    let (mut e, now) = connected(s);
    register(&mut e, "/id-a1", now);
    let mut with_desc = Request::new(Operation::Create, "/id-in/cse-in", "/id-mn", "c");
    with_desc.ty = Some(ResourceType::REMOTE_CSE);
    with_desc.rvi = Some("3".into());
    let mut body = base_csr("/id-mn");
    body["dcse"] = json!(["/id-asn"]);
    with_desc.pc = Some(json!({ "m2m:csr": body }));
    assert_eq!(ask(&mut e, "/id-mn", &with_desc, now).rsc, Rsc::CREATED);
    let get = |fr: &str, to: &str, extra: Value| {
        let mut r = Request::new(Operation::Retrieve, to, fr, "q");
        r.rvi = Some("3".into());
        if let Value::Object(m) = extra {
            for (k, v) in m {
                if k == "rcn" {
                    r.rcn = v.as_u64().map(|n| n as u8);
                } else {
                    r.other.insert(k, v);
                }
            }
        }
        r
    };
    let status = "/id-in/cse-in/m2mnode-status";
    for (hop, fr, rsc) in [
        ("id-evil", "/id-a1", Rsc::ORIGINATOR_HAS_NO_PRIVILEGE),
        ("/id-a1", "/id-a1", Rsc::ORIGINATOR_HAS_NO_PRIVILEGE),
        ("Cother", "Cother", Rsc::ORIGINATOR_HAS_NO_PRIVILEGE),
        (
            "Cother",
            STATUS_ORIGINATOR,
            Rsc::ORIGINATOR_HAS_NO_PRIVILEGE,
        ),
        (STATUS_ORIGINATOR, STATUS_ORIGINATOR, Rsc::OK),
        ("Cadmin", "Cadmin", Rsc::OK),
    ] {
        let rsp = ask(&mut e, hop, &get(fr, status, json!({})), now);
        assert_eq!(rsp.rsc, rsc, "status as {fr} on {hop}");
        assert_eq!(rsp.fr.as_deref(), Some("/id-in"));
    }
    let st = ask(&mut e, "Cadmin", &get("Cadmin", status, json!({})), now);
    let st = &st.pc.expect("pc")["m2mnode:status"];
    assert_eq!(st["registree_count"], json!(2));
    assert_eq!(st["descendant_count"], json!(3));
    assert!(st["registrees"][0]["since"].is_string(), "registered at");
    for extra in [
        json!({"rcn": 4}),
        json!({"rcn": 6}),
        json!({"rcn": 8}),
        json!({"fc": {"fu": 1, "ty": 16}}),
    ] {
        for (hop, rsc) in [
            ("/id-z", Rsc::ORIGINATOR_HAS_NO_PRIVILEGE),
            ("Cae", Rsc::ORIGINATOR_HAS_NO_PRIVILEGE),
            ("/id-a1", Rsc::OK),
            ("/id-mn", Rsc::OK),
            ("Cadmin", Rsc::OK),
        ] {
            let rsp = ask(&mut e, hop, &get(hop, "/id-in/cse-in", extra.clone()), now);
            assert_eq!(rsp.rsc, rsc, "{extra} as {hop}");
        }
        // A descendant, speaking through its registree, may list too.
        let rsp = ask(
            &mut e,
            "/id-mn",
            &get("/id-asn", "/id-in/cse-in", extra.clone()),
            now,
        );
        assert_eq!(rsp.rsc, Rsc::OK, "{extra} as a descendant");
    }
    // The CSEBase itself stays readable by anyone.
    let rsp = ask(
        &mut e,
        "/id-z",
        &get("/id-z", "/id-in/cse-in", json!({})),
        now,
    );
    assert_eq!(rsp.rsc, Rsc::OK);
}

#[test]
fn a_truncated_json_request_with_a_readable_rqi_gets_4000_from_this_cse() {
    let (mut e, now) = connected(in_cse("60s", false));
    for payload in [
        &br#"{"op":2,"to":"/id-in/cse-in","fr":"/id-x","rqi":"t1","rvi":"3","pc":{"m2m:csr":{"#[..],
        &br#"{"op":2,"to":"/id-in/cse-in","fr":"/id-x","rqi":"t1","rvi":"3",}"#[..],
    ] {
        e.handle_request(from("/id-x", "/id-in"), payload, Some(Ack(5)), now);
        let out = drain(&mut e);
        assert_eq!(out.responses.len(), 1, "answered");
        let (route, r, ack) = &out.responses[0];
        assert_eq!(route.originator, "/id-x");
        assert_eq!(*ack, Some(Ack(5)));
        assert_eq!(r.rsc, Rsc::BAD_REQUEST);
        assert_eq!(r.rqi, "t1");
        assert_eq!(r.rvi.as_deref(), Some("3"));
        assert_eq!(r.to.as_deref(), Some("/id-x"));
        assert_eq!(r.fr.as_deref(), Some("/id-in"));
        assert!(r.debug_text().unwrap_or_default().contains("malformed"));
    }
    // Noise is dropped, and the log names the topic it came on.
    e.handle_request(from("/id-x", "/id-in"), b"\x00garbage", None, now);
    let out = drain(&mut e);
    assert!(out.events.iter().any(|ev| matches!(ev,
        Event::Dropped { why, .. } if why.contains("/oneM2M/req/id-x/id-in/json"))));
}

#[test]
fn the_memory_budget_refuses_changes_and_keeps_what_is_stored() {
    let mut s = in_cse("60s", false);
    let fixed = s.registrar.limits.answer_cache_bytes
        + s.registrar.limits.forwards_in_flight * registrar::FORWARD_BYTES;
    s.registrar.limits.memory_bytes = fixed + 64 * 1024;
    let (mut e, now) = connected(s);
    let big = |csi: &str| {
        let mut b = base_csr(csi);
        b["lbl"] = json!(vec!["x".repeat(500); 20]);
        b
    };
    let mut created = Vec::new();
    for i in 0..10 {
        let csi = format!("/id-b{i}");
        let rsp = ask(
            &mut e,
            &csi,
            &csr_req(Operation::Create, "/id-in/cse-in", &csi, "c", big(&csi)),
            now,
        );
        match rsp.rsc {
            Rsc::CREATED => created.push(csi),
            Rsc::INTERNAL_SERVER_ERROR => {
                let why = rsp.debug_text().unwrap_or_default();
                assert!(why.contains("[limits] memory_bytes"), "{why}");
            }
            other => panic!("{other:?}"),
        }
    }
    assert!((2..10).contains(&created.len()), "{created:?}");
    let store = e.registrar().store();
    assert!(store.bytes() + fixed <= e.registrar().limits().memory_bytes);
    // An UPDATE that grows beyond is refused; the CSR stays as it was.
    let csi = &created[0];
    let before = store.by_csi(csi).map(|(_, c)| c.clone());
    let grow = json!({"poa": vec!["p".repeat(500); 60]});
    let to = format!("/id-in/cse-in/{}", &csi[1..]);
    let rsp = ask(
        &mut e,
        csi,
        &csr_req(Operation::Update, &to, csi, "u", grow),
        now,
    );
    assert_eq!(rsp.rsc, Rsc::INTERNAL_SERVER_ERROR);
    assert_eq!(
        e.registrar().store().by_csi(csi).map(|(_, c)| c.clone()),
        before
    );
    assert_eq!(e.registree_count(), created.len());
}

#[test]
fn a_subtree_beyond_the_registrars_limit_keeps_the_registration_and_does_not_loop() {
    // An MN with 12,000 descendants below an IN that accepts 10,000.
    let outcome = run_subtree(12_000, Some(10_000));
    assert!(outcome.registered, "the registration stands");
    assert!(outcome.csr_at_registrar, "the CSR too");
    let refused: Vec<&Event> = outcome
        .events
        .iter()
        .filter(|ev| matches!(ev, Event::OwnUpdateRefused { .. }))
        .collect();
    assert_eq!(refused.len(), 1, "reported once: {refused:?}");
    let Event::OwnUpdateRefused { dcse, answer, .. } = refused[0] else {
        unreachable!()
    };
    assert_eq!(*dcse, 12_000);
    let (rsc, why) = answer.clone().expect("the registrar's answer");
    assert_eq!(rsc, Rsc::INTERNAL_SERVER_ERROR);
    assert!(why.contains("[limits] dcse_entries"), "{why}");
    assert!(!outcome
        .events
        .iter()
        .any(|ev| matches!(ev, Event::RegistrationLost { .. })));
    let creates = outcome
        .sent
        .iter()
        .filter(|op| **op == Operation::Create)
        .count();
    assert_eq!(creates, 1, "never re-CREATEd");
    // Ten check intervals: a check and an UPDATE in each, no more.
    assert!(outcome.sent.len() <= 4 + 2 * 10, "{:?}", outcome.sent);
}

#[test]
fn the_defaults_let_an_mn_with_100000_descendants_register() {
    let outcome = run_subtree(100_000, None);
    assert!(outcome.registered);
    assert_eq!(outcome.announced, 100_000, "every descendant announced");
    // Within the default mqtt.max_payload, so no broker or node drops it.
    assert!(
        outcome.largest <= mn_cse().max_payload,
        "{} bytes",
        outcome.largest
    );
    assert!(
        !outcome.events.iter().any(|ev| matches!(
            ev,
            Event::OwnUpdateRefused { .. } | Event::OwnRequestTooLarge { .. }
        )),
        "{:?}",
        outcome.events
    );
}

struct SubtreeRun {
    registered: bool,
    csr_at_registrar: bool,
    /// The `dcse` of the MN's CSR at the registrar.
    announced: usize,
    events: Vec<Event>,
    sent: Vec<Operation>,
    /// The largest request the MN sent its registrar, in bytes.
    largest: usize,
}

/// An MN (default limits) with one registree whose `dcse` makes
/// `descendants` CSEs below the MN, registered at an IN whose
/// `dcse_entries` is `limit` (default: its own), run for ten check
/// intervals.
fn run_subtree(descendants: usize, limit: Option<usize>) -> SubtreeRun {
    let mut now = start();
    let mut e = Engine::new(mn_cse(), now);
    e.connection(true, now);
    let mut registrar = upstream_registrar(now);
    if let Some(limit) = limit {
        let mut limits = registrar.limits().clone();
        limits.dcse_entries = limit;
        registrar.set_limits(limits);
    }
    let mut run = SubtreeRun {
        registered: false,
        csr_at_registrar: false,
        announced: 0,
        events: Vec::new(),
        sent: Vec::new(),
        largest: 0,
    };
    let pump = |e: &mut Engine, registrar: &mut Registrar, now: Now, run: &mut SubtreeRun| {
        for _ in 0..20 {
            let out = drain(e);
            run.events.extend(out.events);
            if out.requests.is_empty() {
                break;
            }
            for (to, req, _) in out.requests {
                if to.as_str() != "/id-in" {
                    // A liveness probe of the registree: alive.
                    let rsp = Response::new(Rsc::OK, req.rqi.clone());
                    let payload = serde_json::to_vec(&rsp).expect("json");
                    e.handle_response(&answer_from(to.as_str(), "/id-mn"), &payload, now);
                    continue;
                }
                run.sent.push(req.op);
                let size = serde_json::to_vec(&req).map_or(0, |b| b.len());
                run.largest = run.largest.max(size);
                answer_upstream(e, registrar, &req, now);
            }
        }
    };
    pump(&mut e, &mut registrar, now, &mut run);
    assert!(e.is_registered());
    let mut body = base_csr("/id-asn");
    body["dcse"] = json!((1..descendants)
        .map(|i| format!("/id-d{i:06}"))
        .collect::<Vec<_>>());
    let r = csr_req(Operation::Create, "/id-mn/cse-mn", "/id-asn", "c", body);
    let rsp = {
        e.handle_request(
            from("/id-asn", "/id-mn"),
            &serde_json::to_vec(&r).expect("json"),
            None,
            now,
        );
        let out = drain(&mut e);
        let answer = out.responses.first().map(|(_, r, _)| r.rsc);
        run.events.extend(out.events);
        for (to, req, _) in out.requests {
            assert_eq!(to.as_str(), "/id-in");
            run.sent.push(req.op);
            answer_upstream(&mut e, &mut registrar, &req, now);
        }
        answer
    };
    assert_eq!(rsp, Some(Rsc::CREATED));
    pump(&mut e, &mut registrar, now, &mut run);
    for _ in 0..600 {
        now = now.plus(Duration::from_secs(1));
        e.handle_timeout(now);
        pump(&mut e, &mut registrar, now, &mut run);
    }
    run.registered = e.is_registered();
    let csr = registrar.store().by_csi("/id-mn").map(|(_, c)| c.clone());
    run.csr_at_registrar = csr.is_some();
    run.announced = csr.map_or(0, |c| c.dcse().len());
    run
}

#[test]
fn a_narrowing_reload_names_the_registrees_it_no_longer_allows() {
    let (mut e, now) = connected(in_cse("60s", false));
    register(&mut e, "/id-a", now);
    register(&mut e, "/id-b", now);
    drain(&mut e);
    assert_eq!(e.set_allowed(vec!["/id-a".into()], now), ["/id-b"]);
    assert!(drain(&mut e).events.contains(&Event::NoLongerAllowed {
        csis: vec!["/id-b".into()]
    }));
    assert_eq!(e.registree_count(), 2, "they stay until they go");
    assert!(e.set_allowed(vec!["/id-*".into()], now).is_empty());
}

// ----- a hostile corpus -----

/// CBOR that lies about itself: lengths far beyond the payload, deep
/// nesting, tags, indefinite lengths, byte strings where text belongs.
const HOSTILE_CBOR: &[&[u8]] = &[
    &[0xbb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
    &[0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00],
    &[0x7b, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, b'a'],
    &[0xbf, 0x63, b'r', b'q', b'i', 0x5f, 0x41, b'x', 0xff, 0xff],
    &[0xa1, 0x63, b'r', b'q', b'i', 0xc1, 0x1a, 0, 0, 0, 1],
    &[
        0xa2, 0x63, b'r', b'q', b'i', 0x62, b'h', b'1', 0x62, b'o', b'p', 0xfb, 0x7f, 0xf8, 0, 0,
        0, 0, 0, 0,
    ],
    &[0xa1, 0x63, b'r', b'q', b'i', 0x43, b'r', b'q', b'1'],
    &[0xf7],
    &[],
];

#[test]
fn hostile_cbor_is_answered_or_dropped_never_a_panic() {
    let (mut e, now) = connected(in_cse("60s", false));
    let mut nested = vec![0x81u8; 100_000];
    nested.push(0x00);
    for (i, payload) in HOSTILE_CBOR
        .iter()
        .copied()
        .chain([nested.as_slice()])
        .enumerate()
    {
        let route = topic::parse("/oneM2M/req/id-x/id-in/cbor").expect("route");
        e.handle_request(route, payload, Some(Ack(i as u64)), now);
        let out = drain(&mut e);
        let answered = out.responses.len() + out.acks.len();
        assert_eq!(answered, 1, "case {i}: answered or dropped, with its ack");
    }
    // And the node still answers.
    assert_eq!(register(&mut e, "/id-a", now).rsc, Rsc::CREATED);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_in_either_format_never_panic(
        bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
        cbor in proptest::prelude::any::<bool>(),
    ) {
        let (mut e, now) = connected(in_cse("60s", false));
        let t = if cbor { "/oneM2M/req/id-x/id-in/cbor" } else { "/oneM2M/req/id-x/id-in/json" };
        e.handle_request(topic::parse(t).expect("route"), &bytes, Some(Ack(1)), now);
        let out = drain(&mut e);
        let acked = out.acks.len() + out.responses.iter().filter(|(_, _, a)| a.is_some()).count();
        proptest::prop_assert_eq!(acked, 1);
    }
}

#[test]
fn two_links_each_pause_only_what_needs_them() {
    let mut s = mn_cse();
    if let Some(u) = &mut s.registration {
        u.poa = Some(vec!["mqtt://upstream:1883".into()]);
        u.link = Link::UPSTREAM;
    }
    let now = start();
    let mut e = Engine::new(s, now);
    e.link_connection(Link::LOCAL, true, now);
    assert!(
        drain(&mut e).requests.is_empty(),
        "the registration waits for the upstream link"
    );
    e.link_connection(Link::UPSTREAM, true, now);
    let out = drain(&mut e);
    assert_eq!(out.requests.len(), 1);
    assert_eq!(e.link_to(out.requests[0].0.as_str()), Link::UPSTREAM);
    assert_eq!(e.link_to("/id-asn"), Link::LOCAL);
    let st = e.status();
    assert_eq!(
        st["m2mnode:status"]["links"],
        json!({"local": true, "upstream": true})
    );

    // Upstream away: a forward toward the registrar is refused at once,
    // the node still answers locally.
    e.link_connection(Link::UPSTREAM, false, now);
    e.handle_request(
        from("/id-x", "/id-mn"),
        &request(Operation::Retrieve, "/id-in/cse-in", "/id-x", "f1"),
        None,
        now,
    );
    e.handle_request(
        from("/id-x", "/id-mn"),
        &request(Operation::Retrieve, "/id-mn/cse-mn", "/id-x", "l1"),
        None,
        now,
    );
    let out = drain(&mut e);
    assert!(out.requests.is_empty());
    let rscs: Vec<Rsc> = out.responses.iter().map(|(_, r, _)| r.rsc).collect();
    assert_eq!(rscs, vec![Rsc::TARGET_NOT_REACHABLE, Rsc::OK]);
    assert_eq!(
        e.status()["m2mnode:status"]["links"],
        json!({"local": true, "upstream": false})
    );
    // The answer goes back on the link its request came in on.
    let up_route = from("/id-in", "/id-mn").on(Link::UPSTREAM);
    e.link_connection(Link::UPSTREAM, true, now);
    e.handle_request(
        up_route,
        &request(Operation::Retrieve, "/id-mn/cse-mn", "/id-in", "u1"),
        None,
        now,
    );
    let out = drain(&mut e);
    assert_eq!(out.responses.len(), 1);
    assert_eq!(out.responses[0].0.link, Link::UPSTREAM);
}

#[test]
fn with_two_brokers_each_hop_is_believed_only_on_its_own() {
    let now = start();
    let mut s = mn_cse();
    if let Some(u) = &mut s.registration {
        u.link = Link::UPSTREAM;
    }
    let mut e = Engine::new(s, now);
    e.link_connection(Link::LOCAL, true, now);
    e.link_connection(Link::UPSTREAM, true, now);
    drain(&mut e);
    // /id-asn registers on the local broker.
    let mut r = Request::new(Operation::Create, "/id-mn/cse-mn", "/id-asn", "c");
    r.ty = Some(ResourceType::REMOTE_CSE);
    r.rvi = Some("3".into());
    r.pc = Some(json!({"m2m:csr": base_csr("/id-asn")}));
    e.handle_request(
        from("/id-asn", "/id-mn"),
        &serde_json::to_vec(&r).expect("json"),
        None,
        now,
    );
    assert_eq!(drain(&mut e).responses[0].1.rsc, Rsc::CREATED);
    // Someone on the registrar's broker claims to be /id-asn: refused.
    let del = request(Operation::Delete, "/id-mn/cse-mn/id-asn", "/id-asn", "d");
    e.handle_request(
        from("/id-asn", "/id-mn").on(Link::UPSTREAM),
        &del,
        None,
        now,
    );
    assert_eq!(
        drain(&mut e).responses[0].1.rsc,
        Rsc::ORIGINATOR_HAS_NO_PRIVILEGE
    );
    // Someone on the local broker claims to be the registrar: refused.
    let get = request(Operation::Retrieve, "/id-mn/cse-mn", "/id-in", "g");
    e.handle_request(from("/id-in", "/id-mn"), &get, None, now);
    assert_eq!(
        drain(&mut e).responses[0].1.rsc,
        Rsc::ORIGINATOR_HAS_NO_PRIVILEGE
    );
    // Each on its own broker is served.
    e.handle_request(from("/id-in", "/id-mn").on(Link::UPSTREAM), &get, None, now);
    assert_eq!(drain(&mut e).responses[0].1.rsc, Rsc::OK);
    assert!(e.registrar().store().by_csi("/id-asn").is_some());
}

// ----- events, reload -----

/// Runs the MN against `registrar` for `rounds` exchanges; returns the events.
fn exchange(e: &mut Engine, registrar: &mut Registrar, now: &mut Now, rounds: usize) -> Vec<Event> {
    let mut events = Vec::new();
    for _ in 0..rounds {
        let out = drain(e);
        events.extend(out.events);
        for (_, req, _) in out.requests {
            answer_upstream(e, registrar, &req, *now);
        }
        *now = now.plus(Duration::from_millis(10));
        e.handle_timeout(*now);
    }
    events.extend(drain(e).events);
    events
}

#[test]
fn a_reload_with_the_right_registrar_name_registers_without_a_restart() {
    let mut s = mn_cse();
    if let Some(u) = &mut s.registration {
        u.registrar_rn = "cse-typo".into();
    }
    let mut now = start();
    let mut e = Engine::new(s, now);
    e.connection(true, now);
    let mut registrar = upstream_registrar(now);
    let events = exchange(&mut e, &mut registrar, &mut now, 5);
    assert!(!e.is_registered());
    let refusal = events
        .iter()
        .find(|ev| matches!(ev, Event::RegistrationRetry { .. }))
        .expect("the 4004 is told");
    assert_eq!(refusal.severity(), Severity::Warn);
    assert!(
        refusal.to_string().contains("[registrar] name"),
        "{refusal}"
    );

    let fixed = mn_cse().registration.expect("upstream settings");
    e.set_registrar(Some((CseId::new("/id-in").expect("id"), fixed)), now);
    let events = exchange(&mut e, &mut registrar, &mut now, 10);
    assert!(e.is_registered(), "{events:?}");
    assert!(events
        .iter()
        .any(|ev| matches!(ev, Event::RegistrarChanged { .. })));
    assert!(events
        .iter()
        .any(|ev| matches!(ev, Event::Registered { .. })));
    assert!(!e.is_stopped(), "a switch is not a stop");
    assert!(registrar.store().by_csi("/id-mn").is_some());
}

#[test]
fn a_reload_to_another_registrar_deregisters_from_the_old_one_first() {
    let mut now = start();
    let mut e = Engine::new(mn_cse(), now);
    e.connection(true, now);
    let mut registrar = upstream_registrar(now);
    exchange(&mut e, &mut registrar, &mut now, 10);
    assert!(e.is_registered());
    let mut same = mn_cse().registration.expect("upstream settings");
    same.registrar_rn = "cse-in".into();
    // The same registrar under its (unchanged) name: deregister, register.
    e.set_registrar(Some((CseId::new("/id-in").expect("id"), same)), now);
    let out = drain(&mut e);
    assert_eq!(out.requests.len(), 1);
    assert_eq!(out.requests[0].1.op, Operation::Delete, "first the DELETE");
    for (_, req, _) in out.requests {
        answer_upstream(&mut e, &mut registrar, &req, now);
    }
    assert!(registrar.store().by_csi("/id-mn").is_none());
    exchange(&mut e, &mut registrar, &mut now, 10);
    assert!(e.is_registered());
    assert!(registrar.store().by_csi("/id-mn").is_some());
}

#[test]
fn sigusr1_tells_the_result_once_the_checks_are_over() {
    let now = start();
    let mut e = Engine::new(in_cse("60s", false), now);
    e.connection(true, now);
    for i in 0..3 {
        let csi = format!("/id-a{i}");
        e.handle_request(from(&csi, "/id-in"), &csr_create(&csi, "c"), None, now);
    }
    drain(&mut e);
    e.check_now(now);
    let out = drain(&mut e);
    assert_eq!(out.requests.len(), 3, "every registree is probed now");
    assert!(!out.events.iter().any(|ev| matches!(ev, Event::Summary(_))));
    // Two answer, one does not.
    for (to, req, _) in out.requests.iter().take(2) {
        let rsp = Response::new(Rsc::OK, &req.rqi);
        e.handle_response(
            &answer_from(to.as_str(), "/id-in"),
            &serde_json::to_vec(&rsp).expect("json"),
            now,
        );
    }
    assert!(!drain(&mut e)
        .events
        .iter()
        .any(|ev| matches!(ev, Event::Summary(_))));
    let later = now.plus(Duration::from_secs(6));
    e.handle_timeout(later);
    let summaries: Vec<Event> = drain(&mut e)
        .events
        .into_iter()
        .filter(|ev| matches!(ev, Event::Summary(_)))
        .collect();
    let [Event::Summary(s)] = summaries.as_slice() else {
        panic!("one summary: {summaries:?}");
    };
    assert!(s.checked_now);
    assert_eq!((s.registrees, s.registrees_missing), (3, 1));
    assert_eq!(summaries[0].severity(), Severity::Info);
}

#[test]
fn an_hourly_summary_counts_what_was_handled_since_the_last() {
    let now = start();
    let mut e = Engine::new(in_cse("60s", false), now);
    e.connection(true, now);
    e.handle_request(
        from("/id-a", "/id-in"),
        &csr_create("/id-a", "c"),
        None,
        now,
    );
    e.handle_request(
        from("/id-b", "/id-in"),
        &csr_create("/id-a", "c2"),
        None,
        now,
    );
    drain(&mut e);
    assert!(e
        .poll_timeout()
        .is_some_and(|t| t <= now.mono + Duration::from_secs(3600)));
    e.handle_timeout(now.plus(Duration::from_secs(3600)));
    let Some(Event::Summary(s)) = drain(&mut e)
        .events
        .into_iter()
        .find(|ev| matches!(ev, Event::Summary(_)))
    else {
        panic!("a summary after an hour");
    };
    assert!(!s.checked_now);
    assert_eq!((s.handled, s.refused, s.registrees), (2, 1, 1));
    assert_eq!(e.status()["m2mnode:status"]["counts"]["refused"], 1);
}

#[test]
fn a_flood_of_refusals_is_one_warning_and_debug_lines() {
    let now = start();
    let mut e = Engine::new(in_cse("60s", false), now);
    e.connection(true, now);
    let mut warnings = 0;
    for i in 0..300 {
        let mut r = Request::new(Operation::Update, "/id-in/cse-in", "/id-x", format!("u{i}"));
        r.rvi = Some("3".into());
        e.handle_request(
            from("/id-x", "/id-in"),
            &serde_json::to_vec(&r).expect("json"),
            None,
            now,
        );
        let out = drain(&mut e);
        for ev in &out.events {
            match ev {
                Event::Handled { .. } => assert_eq!(ev.severity(), Severity::Debug),
                Event::RefusalsSpiking { .. } => warnings += 1,
                _ => {}
            }
        }
    }
    assert_eq!(warnings, 1);
}
// ----- inspection for monitoring -----

#[test]
fn counters_follow_probes_links_and_durability() {
    let (mut e, now) = connected(in_cse("10s", true));
    assert_eq!(e.counters().local_connects, 1);
    assert!(e.link_up(Link::LOCAL));
    e.handle_request(
        from("/id-live", "/id-in"),
        &csr_create("/id-live", "c-live"),
        None,
        now,
    );
    let batch = drain(&mut e).batches.pop().expect("a batch");
    assert_eq!(e.answers_awaiting_durability(), 1, "answered once durable");
    e.store_committed(batch.seq, now);
    assert_eq!(e.answers_awaiting_durability(), 0);
    e.handle_request(
        from("/id-dead", "/id-in"),
        &csr_create("/id-dead", "c-dead"),
        None,
        now,
    );
    let batch = drain(&mut e).batches.pop().expect("a batch");
    e.store_committed(batch.seq, now);
    drain(&mut e);
    assert_eq!(e.registree_count(), 2);
    assert_eq!(e.descendant_count(), 2);
    let mut now = now;
    let mut dead_gone = false;
    for _ in 0..2000 {
        let out = drain(&mut e);
        for b in out.batches {
            e.store_committed(b.seq, now);
        }
        for (to, req, _) in out.requests {
            if to.as_str() == "/id-live" {
                let rsp = serde_json::to_vec(&Response::new(Rsc::OK, req.rqi)).expect("json");
                e.handle_response(&answer_from(to.as_str(), "/id-in"), &rsp, now);
            }
        }
        dead_gone |= out
            .events
            .iter()
            .any(|ev| matches!(ev, Event::RegistreeRemoved { csi, .. } if csi == "/id-dead"));
        if dead_gone && e.pending_requests() == 0 {
            break;
        }
        let Some(t) = e.poll_timeout() else { break };
        now = now.advance_to(t);
        e.handle_timeout(now);
    }
    assert!(dead_gone);
    let c = e.counters();
    assert_eq!(c.probes_missed, u64::from(LIVENESS_MISSES));
    assert!(c.probes_answered >= 1, "{c:?}");
    assert_eq!(
        c.probes_sent,
        c.probes_answered + c.probes_missed,
        "every probe ended one way or the other: {c:?}"
    );
    assert_eq!(e.descendant_count(), 1);
    e.connection(false, now);
    assert!(!e.link_up(Link::LOCAL));
    e.connection(true, now);
    e.connection(true, now);
    assert_eq!(
        e.counters().local_connects,
        2,
        "a repeated up is no new connect"
    );
    assert_eq!(e.counters().upstream_connects, 0);
}

#[test]
fn a_forward_that_times_out_is_counted_and_leaves_the_flight() {
    let (mut e, now) = connected(in_cse("1h", false));
    register(&mut e, "/id-mn", now);
    drain(&mut e);
    e.handle_request(
        from("/id-x", "/id-in"),
        &request(Operation::Retrieve, "/id-mn/cse-mn", "/id-x", "f1"),
        Some(Ack(1)),
        now,
    );
    let out = drain(&mut e);
    assert_eq!(out.requests.len(), 1);
    assert_eq!(e.forwards_in_flight(), 1);
    assert_eq!(e.counters().forwards_timed_out, 0);
    // Timers until the forward's deadline (a probe may come first).
    let mut now = now;
    let mut answered = false;
    for _ in 0..10 {
        let Some(t) = e.poll_timeout() else { break };
        now = now.advance_to(t);
        e.handle_timeout(now);
        answered |= drain(&mut e)
            .responses
            .iter()
            .any(|(_, r, _)| r.rqi == "f1" && r.rsc == Rsc::REQUEST_TIMEOUT);
        if answered {
            break;
        }
    }
    assert!(answered, "the forward was answered 4008");
    assert_eq!(e.forwards_in_flight(), 0);
    assert_eq!(e.counters().forwards_timed_out, 1);
}

#[test]
fn a_thousand_registrations_are_a_thousand_lines_at_info() {
    let (mut e, now) = connected(in_cse("60s", false));
    let mut info = 0;
    for i in 0..1000 {
        let csi = format!("/id-h{i}");
        e.handle_request(from(&csi, "/id-in"), &csr_create(&csi, "c"), None, now);
        info += drain(&mut e)
            .events
            .iter()
            .filter(|ev| ev.severity() >= Severity::Info)
            .count();
    }
    assert_eq!(e.registree_count(), 1000);
    assert_eq!(
        info, 1000,
        "one line per registration, the request itself at debug"
    );
}
