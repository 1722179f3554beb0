//! Simulated-time tests of registration, forwarding and trust across SPs.

use super::*;
use crate::config::Config;
use crate::engine::{EngineSettings, Transmit};
use crate::primitive::{Operation, Request, ResourceType};
use crate::time::Timestamp;
use crate::topic;

const T0: u64 = 1_800_000_000;
const A: &str = "[cse]\nid = \"/id-in-a\"\nname = \"cse-in-a\"\ntype = \"IN\"\nsp_id = \"sp-a.example\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\ntimeout = \"5s\"\n[registrees]\nallowed = [\"/id-mn*\", \"//sp-c.example/*\"]\n";
const PEER_B: &str = "[sp_registrar.b]\nsp_id = \"sp-b.example\"\nid = \"/id-in-b\"\nname = \"cse-in-b\"\ncheck_interval = \"60s\"\n";

fn settings(text: &str) -> EngineSettings {
    let cfg = Config::from_str(text, std::path::Path::new("t.toml")).expect("config");
    cfg.engine_settings(Timestamp::from_secs(T0), 7)
}

fn start() -> Now {
    Now::at(Timestamp::from_secs(T0))
}

#[derive(Default)]
struct Out {
    requests: Vec<(Link, Option<HopIds>, Request)>,
    responses: Vec<(Route, Response)>,
    events: Vec<Event>,
}

fn drain(e: &mut Engine) -> Out {
    let mut out = Out::default();
    while e.poll_store().is_some() {}
    while let Some(t) = e.poll_transmit() {
        match t {
            Transmit::Request {
                link,
                hop,
                payload,
                format,
                ..
            } => out
                .requests
                .push((link, hop, format.decode_request(&payload).expect("req"))),
            Transmit::Response { to, payload, .. } => out
                .responses
                .push((to, Format::Json.decode_response(&payload).expect("rsp"))),
            Transmit::Ack(_) => {}
        }
    }
    while let Some(ev) = e.poll_event() {
        out.events.push(ev);
    }
    out
}

fn route(topic: &str, link: Link) -> Route {
    topic::parse(topic).expect("route").on(link)
}

fn req(op: Operation, to: &str, fr: &str, rqi: &str) -> Vec<u8> {
    let mut r = Request::new(op, to, fr, rqi);
    r.rvi = Some("3".into());
    serde_json::to_vec(&r).expect("json")
}

fn answer(rsp: Response) -> Vec<u8> {
    serde_json::to_vec(&rsp).expect("json")
}

/// An IN of SP A with peer B (`extra` adds to the config), connected.
fn in_a(extra: &str) -> (Engine, Now) {
    let now = start();
    let mut e = Engine::new(settings(&format!("{A}{PEER_B}{extra}")), now);
    e.connection(true, now);
    (e, now)
}

/// Takes A through registration at B: DELETE (4004), CREATE, RETRIEVE.
fn register_at_b(e: &mut Engine, now: Now) -> Vec<Request> {
    let resp_route = route(
        "/oneM2M/resp/:sp-a.example:id-in-a/:sp-b.example:id-in-b/json",
        Link::LOCAL,
    );
    let mut seen = Vec::new();
    for _ in 0..3 {
        let out = drain(e);
        assert_eq!(out.requests.len(), 1, "one request at a time");
        let (link, hop, r) = out.requests.into_iter().next().expect("request");
        assert_eq!(link, Link::LOCAL);
        assert_eq!(
            hop,
            Some(HopIds {
                from: "//sp-a.example/id-in-a".into(),
                to: "//sp-b.example/id-in-b".into()
            })
        );
        let mut rsp = match r.op {
            Operation::Delete => Response::new(Rsc::NOT_FOUND, &r.rqi),
            Operation::Create => Response::new(Rsc::CREATED, &r.rqi).with_pc(json!({"m2m:csr": {
                "rn": "sp-a.example_id-in-a", "csi": "//sp-a.example/id-in-a",
                "cb": "//sp-a.example/id-in-a/cse-in-a", "rr": true, "srv": ["3"]}})),
            _ => Response::new(Rsc::OK, &r.rqi).with_pc(json!({"m2m:cb": {
                "rn": "cse-in-b", "ri": "id-in-b", "csi": "//sp-b.example/id-in-b",
                "cst": 1, "srv": ["3"], "poa": ["mqtt://b.example"]}})),
        };
        // ACME answers with `to` absolute and `fr` SP-relative.
        rsp.to = Some("//sp-a.example/id-in-a".into());
        rsp.fr = Some("/id-in-b".into());
        e.handle_response(&resp_route, &answer(rsp), now);
        seen.push(r);
    }
    seen
}

#[test]
fn registers_at_a_peer_sp_with_absolute_ids() {
    let (mut e, now) = in_a("");
    let seen = register_at_b(&mut e, now);
    let (del, create, fetch) = (&seen[0], &seen[1], &seen[2]);
    assert_eq!(del.op, Operation::Delete);
    assert_eq!(
        del.to,
        "//sp-b.example/id-in-b/cse-in-b/sp-a.example_id-in-a"
    );
    assert_eq!(del.fr.as_deref(), Some("//sp-a.example/id-in-a"));
    assert_eq!(create.op, Operation::Create);
    assert_eq!(create.to, "//sp-b.example/id-in-b/cse-in-b");
    assert_eq!(create.ty, Some(ResourceType::REMOTE_CSE));
    let csr = &create.pc.as_ref().expect("pc")["m2m:csr"];
    assert_eq!(csr["rn"], "sp-a.example_id-in-a");
    assert_eq!(csr["csi"], "//sp-a.example/id-in-a");
    assert_eq!(csr["cb"], "//sp-a.example/id-in-a/cse-in-a");
    assert_eq!(csr["spi"], "//sp-a.example");
    assert_eq!(csr["ici"], "/id-in-a");
    assert_eq!(fetch.op, Operation::Retrieve);
    assert_eq!(fetch.to, "//sp-b.example/id-in-b/cse-in-b");
    let out = drain(&mut e);
    assert!(
        out.events
            .iter()
            .any(|ev| matches!(ev, Event::PeerSp { sp, event }
            if sp == "sp-b.example" && matches!(**event, Event::Registered { .. }))),
        "{:?}",
        out.events
    );
    // The local <remoteCSE> of B: absolute csi, not a registree.
    let store = e.registrar().store();
    let (ri, b) = store
        .by_csi("//sp-b.example/id-in-b")
        .expect("local CSR of B");
    assert_eq!(ri, "sp-b.example_id-in-b");
    assert_eq!(b.cb.as_deref(), Some("//sp-b.example/id-in-b/cse-in-b"));
    assert_eq!(e.registree_count(), 0);
    let st = e.status();
    let peer = &st["m2mnode:status"]["peer_sps"][0];
    assert_eq!(peer["registered"], true);
    assert_eq!(peer["id"], "//sp-b.example/id-in-b");
    assert_eq!(peer["connected"], true);
    assert!(peer["since"].is_string() && peer["last_check"].is_string());
}

#[test]
fn the_own_csr_at_the_peer_is_checked_and_deleted_at_shutdown() {
    let (mut e, mut now) = in_a("");
    register_at_b(&mut e, now);
    drain(&mut e);
    let resp_route = route(
        "/oneM2M/resp/:sp-a.example:id-in-a/:sp-b.example:id-in-b/json",
        Link::LOCAL,
    );
    // The check at the interval: a RETRIEVE of the own CSR there.
    let t = e.poll_timeout().expect("a timer");
    now = now.advance_to(t);
    e.handle_timeout(now);
    let out = drain(&mut e);
    let (_, _, check) = out.requests.first().expect("a check");
    assert_eq!(check.op, Operation::Retrieve);
    assert_eq!(
        check.to,
        "//sp-b.example/id-in-b/cse-in-b/sp-a.example_id-in-a"
    );
    let rsp = Response::new(Rsc::OK, &check.rqi).with_pc(json!({"m2m:csr": {
        "rn": "sp-a.example_id-in-a", "csi": "//sp-a.example/id-in-a",
        "cb": "//sp-a.example/id-in-a/cse-in-a", "rr": true, "srv": ["3"]}}));
    e.handle_response(&resp_route, &answer(rsp), now);
    let out = drain(&mut e);
    assert!(
        !out.events
            .iter()
            .any(|ev| matches!(ev, Event::PeerSp { event, .. }
            if matches!(**event, Event::Squatted { .. }))),
        "the own CSR is recognised by its absolute csi: {:?}",
        out.events
    );
    assert!(e.status()["m2mnode:status"]["peer_sps"][0]["registered"] == true);
    // SIGTERM: the own CSR at B goes, then the node stops.
    e.shutdown(now);
    let out = drain(&mut e);
    let (_, _, del) = out.requests.first().expect("a DELETE");
    assert_eq!(del.op, Operation::Delete);
    assert_eq!(
        del.to,
        "//sp-b.example/id-in-b/cse-in-b/sp-a.example_id-in-a"
    );
    assert!(!e.is_stopped());
    e.handle_response(
        &resp_route,
        &answer(Response::new(Rsc::DELETED, &del.rqi)),
        now,
    );
    let out = drain(&mut e);
    assert!(out.events.iter().any(|ev| matches!(ev, Event::Stopped)));
    assert!(e.is_stopped());
    assert!(e
        .registrar()
        .store()
        .by_csi("//sp-b.example/id-in-b")
        .is_none());
}

#[test]
fn sp_relative_topics_and_a_link_of_its_own() {
    let now = start();
    let text = format!(
        "{A}{PEER_B}topic_ids = \"sp-relative\"\n[sp_registrar.b.mqtt]\nurl = \"mqtt://127.0.0.1:1884\"\n"
    );
    let mut e = Engine::new(settings(&text), now);
    e.link_connection(Link::LOCAL, true, now);
    assert!(drain(&mut e).requests.is_empty(), "B's link is down");
    e.link_connection(Link(2), true, now);
    let out = drain(&mut e);
    let (link, hop, r) = out.requests.first().expect("the first request");
    assert_eq!(*link, Link(2));
    assert_eq!(
        hop.as_ref(),
        Some(&HopIds {
            from: "/id-in-a".into(),
            to: "/id-in-b".into()
        })
    );
    assert_eq!(r.fr.as_deref(), Some("//sp-a.example/id-in-a"));
}

/// A registered MN below A.
fn with_mn(e: &mut Engine, now: Now) {
    let mut r = Request::new(Operation::Create, "/id-in-a/cse-in-a", "/id-mn", "c1");
    r.ty = Some(ResourceType::REMOTE_CSE);
    r.rvi = Some("3".into());
    r.pc = Some(
        json!({"m2m:csr": {"csi": "/id-mn", "cb": "/id-mn/cse-mn", "rr": true,
        "srv": ["3"], "poa": ["mqtt://127.0.0.1:1883"]}}),
    );
    e.handle_request(
        route("/oneM2M/req/id-mn/id-in-a/json", Link::LOCAL),
        &serde_json::to_vec(&r).expect("json"),
        None,
        now,
    );
    let out = drain(e);
    assert_eq!(out.responses[0].1.rsc, Rsc::CREATED, "{:?}", out.responses);
}

#[test]
fn a_request_for_the_peer_sp_goes_to_its_in_with_ids_made_absolute() {
    let (mut e, now) = in_a("");
    register_at_b(&mut e, now);
    with_mn(&mut e, now);
    for (fr, abs) in [
        ("/id-mn", "//sp-a.example/id-mn"),
        ("/id-mn/Cae1", "//sp-a.example/id-mn/Cae1"),
    ] {
        e.handle_request(
            route("/oneM2M/req/id-mn/id-in-a/json", Link::LOCAL),
            &req(
                Operation::Retrieve,
                "//sp-b.example/id-in-b/cse-in-b",
                fr,
                "x1",
            ),
            None,
            now,
        );
        let out = drain(&mut e);
        let (link, hop, fwd) = out.requests.first().expect("forwarded");
        assert_eq!(*link, Link::LOCAL);
        assert_eq!(
            hop.as_ref().map(|h| h.to.as_str()),
            Some("//sp-b.example/id-in-b")
        );
        assert_eq!(fwd.to, "//sp-b.example/id-in-b/cse-in-b");
        assert_eq!(fwd.fr.as_deref(), Some(abs));
        // B answers as ACME does: `to` absolute, `fr` SP-relative.
        let mut rsp =
            Response::new(Rsc::OK, &fwd.rqi).with_pc(json!({"m2m:cb": {"rn": "cse-in-b"}}));
        rsp.to = Some(abs.into());
        rsp.fr = Some("/id-in-b".into());
        e.handle_response(
            &route(
                "/oneM2M/resp/:sp-a.example:id-in-a/:sp-b.example:id-in-b/json",
                Link::LOCAL,
            ),
            &answer(rsp),
            now,
        );
        let out = drain(&mut e);
        let (to, rsp) = out.responses.first().expect("relayed");
        assert_eq!(to.originator, "/id-mn");
        assert_eq!(rsp.rsc, Rsc::OK);
        assert_eq!(rsp.rqi, "x1");
        assert_eq!(rsp.to.as_deref(), Some(fr), "mapped back");
        assert_eq!(rsp.fr.as_deref(), Some("//sp-b.example/id-in-b"));
    }
    // An SP nobody knows: 4004, as before.
    e.handle_request(
        route("/oneM2M/req/id-mn/id-in-a/json", Link::LOCAL),
        &req(
            Operation::Retrieve,
            "//sp-x.example/id-in-x/cse",
            "/id-mn",
            "x2",
        ),
        None,
        now,
    );
    assert_eq!(drain(&mut e).responses[0].1.rsc, Rsc::NOT_FOUND);
}

#[test]
fn an_mn_sends_requests_for_other_sps_up() {
    let now = start();
    let mn = "[cse]\nid = \"/id-mn\"\nname = \"cse-mn\"\ntype = \"MN\"\nsp_id = \"sp-a.example\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n[registrar]\nid = \"/id-in-a\"\nname = \"cse-in-a\"\n";
    let mut e = Engine::new(settings(mn), now);
    e.connection(true, now);
    drain(&mut e);
    e.handle_request(
        route("/oneM2M/req/Cae1/id-mn/json", Link::LOCAL),
        &req(
            Operation::Retrieve,
            "//sp-b.example/id-in-b/cse-in-b",
            "Cae1",
            "m1",
        ),
        None,
        now,
    );
    let out = drain(&mut e);
    let fwd = out
        .requests
        .iter()
        .find(|(_, _, r)| r.to == "//sp-b.example/id-in-b/cse-in-b")
        .expect("forwarded up");
    assert_eq!(fwd.2.fr.as_deref(), Some("/id-mn/Cae1"));
    assert_eq!(fwd.1, None);
}

#[test]
fn the_peer_sp_reaches_this_sp_in_every_form() {
    let (mut e, now) = in_a("");
    register_at_b(&mut e, now);
    with_mn(&mut e, now);
    for (topic, to) in [
        // TS-0010's absolute form.
        (
            "/oneM2M/req/:sp-b.example:id-in-b/:sp-a.example:id-in-a/json",
            "//sp-a.example/id-in-a/cse-in-a",
        ),
        // ACME's: the SP-ID as receiver, SP-relative originator.
        (
            "/oneM2M/req/id-in-b/sp-a.example/json",
            "//sp-a.example/id-in-a/cse-in-a",
        ),
        // The SP-relative form (a liveness check of A as B's registree).
        (
            "/oneM2M/req/id-in-b/id-in-a/json",
            "//sp-a.example/id-in-a/cse-in-a",
        ),
    ] {
        e.handle_request(
            route(topic, Link::LOCAL),
            &req(Operation::Retrieve, to, "//sp-b.example/id-in-b", "b1"),
            None,
            now,
        );
        let out = drain(&mut e);
        let (back, rsp) = out.responses.first().expect("answered");
        assert_eq!(rsp.rsc, Rsc::OK, "{topic}: {rsp:?}");
        assert_eq!(back.response_topic(), topic.replace("/req/", "/resp/"));
        // ACME (the SP-ID receiver) drops answers with an absolute `to`.
        let want_to = if topic.contains("/sp-a.example/") {
            "/id-in-b"
        } else {
            "//sp-b.example/id-in-b"
        };
        assert_eq!(rsp.to.as_deref(), Some(want_to), "{topic}");
    }
    // For a CSE below: routed down, `fr` stays absolute.
    e.handle_request(
        route(
            "/oneM2M/req/:sp-b.example:id-in-b/:sp-a.example:id-in-a/json",
            Link::LOCAL,
        ),
        &req(
            Operation::Retrieve,
            "//sp-a.example/id-mn/cse-mn",
            "//sp-b.example/id-in-b",
            "b2",
        ),
        None,
        now,
    );
    let out = drain(&mut e);
    let (_, hop, fwd) = out.requests.first().expect("routed down");
    assert_eq!(*hop, None);
    assert_eq!(fwd.to, "//sp-a.example/id-mn/cse-mn");
    assert_eq!(fwd.fr.as_deref(), Some("//sp-b.example/id-in-b"));
}

fn refused(e: &mut Engine, r: Route, fr: &str, to: &str, now: Now) -> Response {
    e.handle_request(r, &req(Operation::Retrieve, to, fr, "s1"), None, now);
    let out = drain(e);
    assert!(
        out.requests.is_empty(),
        "nothing forwarded: {:?}",
        out.requests
    );
    out.responses.into_iter().next().expect("an answer").1
}

#[test]
fn spoofing_across_the_sp_boundary_is_refused() {
    let (mut e, now) = in_a("");
    with_mn(&mut e, now);
    let b_abs = "/oneM2M/req/:sp-b.example:id-in-b/:sp-a.example:id-in-a/json";
    let cases = [
        // A peer SP's hop speaking as one of ours, SP-relative or absolute.
        (route(b_abs, Link::LOCAL), "/id-mn", "/id-mn/cse-mn"),
        (
            route(b_abs, Link::LOCAL),
            "//sp-a.example/id-mn",
            "/id-mn/cse-mn",
        ),
        (
            route(b_abs, Link::LOCAL),
            "//sp-c.example/id-in-c",
            "/id-in-a/cse-in-a",
        ),
        // A local hop speaking as a peer SP's CSE.
        (
            route("/oneM2M/req/id-mn/id-in-a/json", Link::LOCAL),
            "//sp-b.example/id-in-b",
            "/id-in-a/cse-in-a",
        ),
        // An SP that is no peer.
        (
            route(
                "/oneM2M/req/:sp-x.example:id-in-x/:sp-a.example:id-in-a/json",
                Link::LOCAL,
            ),
            "//sp-x.example/id-in-x",
            "/id-in-a/cse-in-a",
        ),
        // The SP-ID receiver form, used by a CSE of this SP.
        (
            route("/oneM2M/req/id-mn/sp-a.example/json", Link::LOCAL),
            "//sp-a.example/id-mn",
            "/id-in-a/cse-in-a",
        ),
        (
            route("/oneM2M/req/id-mn/sp-a.example/json", Link::LOCAL),
            "//sp-b.example/id-in-b",
            "/id-in-a/cse-in-a",
        ),
    ];
    for (r, fr, to) in cases {
        let rsp = refused(&mut e, r.clone(), fr, to, now);
        assert_eq!(
            rsp.rsc,
            Rsc::ORIGINATOR_HAS_NO_PRIVILEGE,
            "{} as {fr}: {rsp:?}",
            r.originator
        );
    }
}

#[test]
fn a_peer_with_its_own_broker_is_believed_only_there() {
    let now = start();
    let text = format!("{A}{PEER_B}[sp_registrar.b.mqtt]\nurl = \"mqtt://127.0.0.1:1884\"\n");
    let mut e = Engine::new(settings(&text), now);
    e.link_connection(Link::LOCAL, true, now);
    e.link_connection(Link(2), true, now);
    drain(&mut e);
    let b = "/oneM2M/req/:sp-b.example:id-in-b/:sp-a.example:id-in-a/json";
    // B's hop on the local broker: not B.
    let rsp = refused(
        &mut e,
        route(b, Link::LOCAL),
        "//sp-b.example/id-in-b",
        "/id-in-a/cse-in-a",
        now,
    );
    assert_eq!(rsp.rsc, Rsc::ORIGINATOR_HAS_NO_PRIVILEGE);
    // On B's broker, a hop naming a CSE of this SP: refused.
    let rsp = refused(
        &mut e,
        route(
            "/oneM2M/req/:sp-a.example:id-mn/:sp-a.example:id-in-a/json",
            Link(2),
        ),
        "//sp-a.example/id-mn",
        "/id-in-a/cse-in-a",
        now,
    );
    assert_eq!(rsp.rsc, Rsc::ORIGINATOR_HAS_NO_PRIVILEGE);
    // On B's broker, B's bare ID (ACME) is B: answered.
    e.handle_request(
        route("/oneM2M/req/id-in-b/sp-a.example/json", Link(2)),
        &req(
            Operation::Retrieve,
            "//sp-a.example/id-in-a/cse-in-a",
            "//sp-b.example/id-in-b",
            "ok",
        ),
        None,
        now,
    );
    assert_eq!(drain(&mut e).responses[0].1.rsc, Rsc::OK);
    // And a bare ID there cannot speak for this SP.
    let rsp = refused(
        &mut e,
        route("/oneM2M/req/id-mn/id-in-a/json", Link(2)),
        "/id-mn",
        "/id-in-a/cse-in-a",
        now,
    );
    assert_eq!(rsp.rsc, Rsc::ORIGINATOR_HAS_NO_PRIVILEGE);
}

#[test]
fn an_in_of_another_sp_registers_here_as_acme_does() {
    // C is allowed by an absolute pattern; ACME's topic forms.
    let (mut e, now) = in_a("");
    drain(&mut e);
    let topic = "/oneM2M/req/id-in-c/sp-a.example/json";
    let own_csr = "//sp-a.example/id-in-a/cse-in-a/sp-c.example_id-in-c";
    for round in 0..3 {
        e.handle_request(
            route(topic, Link::LOCAL),
            &req(
                Operation::Delete,
                own_csr,
                "//sp-c.example/id-in-c",
                &format!("d{round}"),
            ),
            None,
            now,
        );
        let rsc = drain(&mut e).responses[0].1.rsc;
        assert_eq!(
            rsc,
            if round == 0 {
                Rsc::NOT_FOUND
            } else {
                Rsc::DELETED
            }
        );
        let mut r = Request::new(
            Operation::Create,
            "//sp-a.example/id-in-a/cse-in-a",
            "//sp-c.example/id-in-c",
            format!("c{round}"),
        );
        r.ty = Some(ResourceType::REMOTE_CSE);
        r.rvi = Some("5".into());
        r.pc = Some(json!({"m2m:csr": {
            "rn": "sp-c.example_id-in-c", "csi": "//sp-c.example/id-in-c",
            "cb": "//sp-c.example/id-in-c/cse-in-c", "rr": true, "srv": ["3", "4", "5"],
            "spi": "//sp-c.example", "ici": "/id-in-c", "poa": ["mqtt://127.0.0.1:1883"],
            "dcse": ["/id-mn"]}}));
        e.handle_request(
            route(topic, Link::LOCAL),
            &serde_json::to_vec(&r).expect("json"),
            None,
            now,
        );
        let out = drain(&mut e);
        let (_, rsp) = &out.responses[0];
        assert_eq!(rsp.rsc, Rsc::CREATED, "{rsp:?}");
        assert_eq!(e.registree_count(), 1);
        // C's dcse is of its SP: not taken into this tree.
        assert!(e.registrar().store().descendant("/id-mn").is_none());
    }
    // Its liveness probe: to C's SP-relative ID, from A's absolute one.
    let mut now = now;
    while let Some(t) = e.poll_timeout() {
        now = now.advance_to(t);
        e.handle_timeout(now);
        let out = drain(&mut e);
        if let Some((_, hop, probe)) = out
            .requests
            .iter()
            .find(|(_, _, r)| r.to.starts_with("//sp-c.example/"))
        {
            assert_eq!(*hop, None, "C is reached as ACME listens");
            assert_eq!(probe.to, "//sp-c.example/id-in-c/cse-in-c");
            assert_eq!(probe.fr.as_deref(), Some("//sp-a.example/id-in-a"));
            return;
        }
    }
    panic!("no probe of C");
}

#[test]
fn a_reload_adds_changes_and_removes_peers() {
    let (mut e, now) = in_a("");
    register_at_b(&mut e, now);
    drain(&mut e);
    let resp_b = route(
        "/oneM2M/resp/:sp-a.example:id-in-a/:sp-b.example:id-in-b/json",
        Link::LOCAL,
    );
    // B goes, C comes (SP-relative topics).
    let c = Config::from_str(
        &format!("{A}[sp_registrar.c]\nsp_id = \"sp-c.example\"\nid = \"/id-in-c\"\nname = \"cse-in-c\"\ntopic_ids = \"sp-relative\"\n"),
        std::path::Path::new("t.toml"),
    )
    .expect("config")
    .peer_settings();
    e.set_peers(c, now);
    let out = drain(&mut e);
    let del = out
        .requests
        .iter()
        .find(|(_, _, r)| r.op == Operation::Delete && r.to.starts_with("//sp-b.example/"))
        .expect("B is deregistered from");
    assert_eq!(
        del.2.to,
        "//sp-b.example/id-in-b/cse-in-b/sp-a.example_id-in-a"
    );
    assert!(
        out.requests
            .iter()
            .any(|(_, hop, r)| r.to.starts_with("//sp-c.example/")
                && hop.as_ref().is_some_and(|h| h.to == "/id-in-c")),
        "C is registered at: {:?}",
        out.requests
    );
    e.handle_response(
        &resp_b,
        &answer(Response::new(Rsc::DELETED, &del.2.rqi)),
        now,
    );
    drain(&mut e);
    let st = e.status();
    let peers = st["m2mnode:status"]["peer_sps"]
        .as_array()
        .expect("peers")
        .clone();
    assert_eq!(peers.len(), 1, "{peers:?}");
    assert_eq!(peers[0]["id"], "//sp-c.example/id-in-c");
    assert!(e
        .registrar()
        .store()
        .by_csi("//sp-b.example/id-in-b")
        .is_none());
    // A request for B's SP is no longer routed.
    e.handle_request(
        route("/oneM2M/req/id-mn/id-in-a/json", Link::LOCAL),
        &req(
            Operation::Retrieve,
            "//sp-b.example/id-in-b/cse-in-b",
            "/id-mn",
            "gone",
        ),
        None,
        now,
    );
    let out = drain(&mut e);
    assert!(out.requests.is_empty());
    assert_ne!(out.responses[0].1.rsc, Rsc::OK);
    assert!(!e.is_stopped());
}

#[test]
fn an_mn_with_an_sp_id_takes_other_sps_from_its_registrar_only() {
    let now = start();
    let mn = "[cse]\nid = \"/id-mn\"\nname = \"cse-mn\"\ntype = \"MN\"\nsp_id = \"sp-a.example\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n[registrar]\nid = \"/id-in-a\"\nname = \"cse-in-a\"\n";
    let mut e = Engine::new(settings(mn), now);
    e.connection(true, now);
    drain(&mut e);
    e.handle_request(
        route("/oneM2M/req/id-in-a/id-mn/json", Link::LOCAL),
        &req(
            Operation::Retrieve,
            "/id-mn/cse-mn",
            "//sp-b.example/id-in-b",
            "r1",
        ),
        None,
        now,
    );
    assert_eq!(drain(&mut e).responses[0].1.rsc, Rsc::OK);
    let rsp = refused(
        &mut e,
        route("/oneM2M/req/id-asn/id-mn/json", Link::LOCAL),
        "//sp-b.example/id-in-b",
        "/id-mn/cse-mn",
        now,
    );
    assert_eq!(rsp.rsc, Rsc::ORIGINATOR_HAS_NO_PRIVILEGE);
}

#[test]
fn a_request_for_an_sp_whose_in_registered_here_goes_to_it() {
    // C registers here (allowed by //sp-c.example/*), no [sp_registrar.c].
    let (mut e, now) = in_a("");
    drain(&mut e);
    let mut r = Request::new(
        Operation::Create,
        "/id-in-a/cse-in-a",
        "//sp-c.example/id-in-c",
        "c1",
    );
    r.ty = Some(ResourceType::REMOTE_CSE);
    r.rvi = Some("3".into());
    r.pc = Some(json!({"m2m:csr": {"csi": "//sp-c.example/id-in-c",
        "cb": "//sp-c.example/id-in-c/cse-in-c", "rr": true, "srv": ["3"]}}));
    e.handle_request(
        route(
            "/oneM2M/req/:sp-c.example:id-in-c/:sp-a.example:id-in-a/json",
            Link::LOCAL,
        ),
        &serde_json::to_vec(&r).expect("json"),
        None,
        now,
    );
    assert_eq!(drain(&mut e).responses[0].1.rsc, Rsc::CREATED);
    with_mn(&mut e, now);
    e.handle_request(
        route("/oneM2M/req/id-mn/id-in-a/json", Link::LOCAL),
        &req(
            Operation::Retrieve,
            "//sp-c.example/id-in-c/cse-in-c",
            "/id-mn",
            "x",
        ),
        None,
        now,
    );
    let out = drain(&mut e);
    let (link, hop, fwd) = out.requests.first().expect("forwarded to C");
    assert_eq!((*link, hop.clone()), (Link::LOCAL, None));
    assert_eq!(fwd.fr.as_deref(), Some("//sp-a.example/id-mn"));
    // A CSE of this SP cannot register as if it were C's.
    let mut r = Request::new(
        Operation::Create,
        "/id-in-a/cse-in-a",
        "//sp-c.example/id-mn",
        "c2",
    );
    r.ty = Some(ResourceType::REMOTE_CSE);
    r.rvi = Some("3".into());
    r.pc = Some(json!({"m2m:csr": {"csi": "//sp-c.example/id-mn",
        "cb": "//sp-c.example/id-mn/cse-mn", "rr": true, "srv": ["3"]}}));
    e.handle_request(
        route("/oneM2M/req/id-mn/id-in-a/json", Link::LOCAL),
        &serde_json::to_vec(&r).expect("json"),
        None,
        now,
    );
    assert_eq!(
        drain(&mut e).responses[0].1.rsc,
        Rsc::ORIGINATOR_HAS_NO_PRIVILEGE,
        "a local hop claiming another SP"
    );
}

#[test]
fn a_refusal_by_the_peer_names_the_peer_settings() {
    let e = Event::PeerSp {
        sp: "sp-b.example".into(),
        event: Box::new(Event::RegistrationRetry {
            step: crate::engine::Step::Create,
            retry_in: std::time::Duration::from_secs(1),
            answer: Some((Rsc::NOT_FOUND, "no such CSEBase".into())),
        }),
    };
    let text = e.to_string();
    assert!(
        text.starts_with("SP //sp-b.example: ") && !text.contains("[registrar]"),
        "{text}"
    );
    assert_eq!(e.severity(), crate::engine::Severity::Warn);
}
