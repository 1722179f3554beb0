//! The SP identity learned from the registrar and handed down.

use super::*;
use crate::config::Config;
use crate::engine::registrar::{Outcome, Registrar};
use crate::engine::Severity;
use crate::primitive::ResourceType;
use crate::time::Timestamp;
use crate::topic::{self, Route};

const T0: u64 = 1_800_000_000;
const MN: &str = "[cse]\nid = \"/id-mn\"\nname = \"cse-mn\"\ntype = \"MN\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n[registrar]\nid = \"/id-in\"\nname = \"cse-in\"\n";

fn cfg(text: &str) -> Config {
    Config::from_str(text, std::path::Path::new("t.toml")).expect("config")
}

fn route(t: &str) -> Route {
    topic::parse(t).expect("route")
}

/// (requests, answers, events) the engine put out.
#[allow(clippy::type_complexity)]
fn drain(e: &mut Engine) -> (Vec<(CseId, Request)>, Vec<Response>, Vec<Event>) {
    let (mut q, mut a, mut ev) = (vec![], vec![], vec![]);
    while e.poll_store().is_some() {}
    while let Some(t) = e.poll_transmit() {
        match t {
            Transmit::Request { to, payload, .. } => {
                q.push((to, Format::Json.decode_request(&payload).expect("req")))
            }
            Transmit::Response { payload, .. } => {
                a.push(Format::Json.decode_response(&payload).expect("rsp"))
            }
            Transmit::Ack(_) => {}
        }
    }
    while let Some(x) = e.poll_event() {
        ev.push(x);
    }
    (q, a, ev)
}

/// An MN (`mn_text`) with an ASN registered, then registered at an IN of
/// SP `sp-a.example`; returns what the MN sent besides its registration.
fn mn_below_an_in_of_sp_a(mn_text: &str) -> (Engine, Now, Vec<(CseId, Request)>, Vec<Event>) {
    let now = Now::at(Timestamp::from_secs(T0));
    let mut e = Engine::new(cfg(mn_text).engine_settings(now.wall, 3), now);
    e.connection(true, now);
    let mut r = Request::new(Operation::Create, "/id-mn/cse-mn", "/id-asn", "c1");
    r.ty = Some(ResourceType::REMOTE_CSE);
    r.rvi = Some("3".into());
    r.pc = Some(
        json!({"m2m:csr": {"csi": "/id-asn", "cb": "/id-asn/cse-asn", "rr": true, "srv": ["3"]}}),
    );
    e.handle_request(
        route("/oneM2M/req/id-asn/id-mn/json"),
        &serde_json::to_vec(&r).expect("json"),
        None,
        now,
    );
    let in_text = "[cse]\nid = \"/id-in\"\nname = \"cse-in\"\ntype = \"IN\"\nsp_id = \"sp-a.example\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n";
    let mut registrar = Registrar::new(cfg(in_text).registrar_settings(now.wall));
    let (mut other, mut events) = (Vec::new(), Vec::new());
    let mut pending: Vec<Request> = Vec::new();
    for _ in 0..20 {
        let (reqs, _, ev) = drain(&mut e);
        events.extend(ev);
        for (to, q) in reqs {
            if to.as_str() == "/id-in" {
                pending.push(q);
            } else {
                other.push((to, q));
            }
        }
        let Some(q) = pending.pop() else { break };
        let Outcome::Respond { response, .. } = registrar.handle(&q, "/id-mn", now.wall) else {
            panic!("forwarded")
        };
        e.handle_response(
            &route("/oneM2M/resp/id-mn/id-in/json"),
            &serde_json::to_vec(&response).expect("json"),
            now,
        );
    }
    assert!(e.is_registered());
    (e, now, other, events)
}

#[test]
fn an_mn_without_sp_id_learns_it_and_hands_it_down() {
    let (mut e, now, pushed, events) = mn_below_an_in_of_sp_a(MN);
    assert!(events
        .iter()
        .any(|ev| matches!(ev, Event::SpLearned { spi, ici }
        if spi == "//sp-a.example" && ici.as_deref() == Some("/id-in"))));
    assert_eq!(
        e.registrar().cse_base().spi.as_deref(),
        Some("//sp-a.example")
    );
    assert_eq!(e.registrar().cse_base().ici.as_deref(), Some("/id-in"));
    // Its registree is told: an UPDATE of the CSR it holds for the MN.
    let (to, up) = pushed.first().expect("an UPDATE to the ASN");
    assert_eq!(to.as_str(), "/id-asn");
    assert_eq!(up.op, Operation::Update);
    assert_eq!(up.to, "/id-asn/cse-asn/id-mn");
    assert_eq!(
        up.pc.as_ref().expect("pc")["m2m:csr"]["spi"],
        "//sp-a.example"
    );
    e.handle_response(
        &route("/oneM2M/resp/id-mn/id-asn/json"),
        &serde_json::to_vec(&Response::new(Rsc::UPDATED, &up.rqi)).expect("json"),
        now,
    );
    drain(&mut e);
    // The registrar hands another SP down: learned and passed on.
    let mut u = Request::new(Operation::Update, "/id-mn/cse-mn/id-in", "/id-in", "u1");
    u.rvi = Some("3".into());
    u.pc = Some(json!({"m2m:csr": {"spi": "//sp-z.example", "ici": "/id-in"}}));
    e.handle_request(
        route("/oneM2M/req/id-in/id-mn/json"),
        &serde_json::to_vec(&u).expect("json"),
        None,
        now,
    );
    let (reqs, answers, events) = drain(&mut e);
    assert_eq!(answers[0].rsc, Rsc::UPDATED, "{answers:?}");
    assert!(events
        .iter()
        .any(|ev| matches!(ev, Event::SpLearned { spi, .. } if spi == "//sp-z.example")));
    assert!(reqs.iter().any(|(to, r)| to.as_str() == "/id-asn"
        && r.pc
            .as_ref()
            .is_some_and(|pc| pc["m2m:csr"]["spi"] == "//sp-z.example")));
    // Anybody else's UPDATE teaches nothing.
    let mut u = Request::new(Operation::Update, "/id-mn/cse-mn/id-asn", "/id-asn", "u2");
    u.rvi = Some("3".into());
    u.pc = Some(json!({"m2m:csr": {"spi": "//evil.example"}}));
    e.handle_request(
        route("/oneM2M/req/id-asn/id-mn/json"),
        &serde_json::to_vec(&u).expect("json"),
        None,
        now,
    );
    drain(&mut e);
    assert_eq!(
        e.registrar().cse_base().spi.as_deref(),
        Some("//sp-z.example")
    );
}

#[test]
fn a_configured_sp_id_that_differs_is_told_once_and_kept() {
    let text = MN.replace(
        "type = \"MN\"\n",
        "type = \"MN\"\nsp_id = \"other.example\"\n",
    );
    let (mut e, now, pushed, events) = mn_below_an_in_of_sp_a(&text);
    let told: Vec<&Event> = events
        .iter()
        .filter(|ev| matches!(ev, Event::SpMismatch { .. }))
        .collect();
    assert_eq!(told.len(), 1, "{events:?}");
    assert_eq!(told[0].severity(), Severity::Warn);
    let text = told[0].to_string();
    assert!(
        text.contains("//other.example") && text.contains("//sp-a.example"),
        "{text}"
    );
    assert!(pushed.is_empty(), "nothing handed down");
    assert_eq!(
        e.registrar().cse_base().spi.as_deref(),
        Some("//other.example")
    );
    // Told once: the next word of the registrar is not told again.
    let mut u = Request::new(Operation::Update, "/id-mn/cse-mn/id-in", "/id-in", "u1");
    u.rvi = Some("3".into());
    u.pc = Some(json!({"m2m:csr": {"spi": "//sp-a.example"}}));
    e.handle_request(
        route("/oneM2M/req/id-in/id-mn/json"),
        &serde_json::to_vec(&u).expect("json"),
        None,
        now,
    );
    let (_, _, events) = drain(&mut e);
    assert!(!events
        .iter()
        .any(|ev| matches!(ev, Event::SpMismatch { .. })));
}
