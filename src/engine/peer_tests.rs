//! Simulated-time tests of per-hop serialization (docs/protocol.md §4.4):
//! an MN below a registrar that answers like Mobius (docs/mobius.md).

use super::*;
use crate::config::Config;
use crate::engine::Transmit;
use crate::primitive::{Operation, Request, ResourceType, Response};
use crate::time::Now;
use crate::time::Timestamp;
use crate::topic;
use crate::topic::Route;
use serde_json::json;

fn mn(serialization: Option<&str>) -> (Engine, Now) {
    let extra = serialization.map_or_else(String::new, |s| format!("serialization = \"{s}\"\n"));
    let text = format!(
        "[cse]\nid = \"/id-mn\"\nname = \"cse-mn\"\ntype = \"MN\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\ntimeout = \"5s\"\n[registrar]\nid = \"/Mobius2\"\nname = \"Mobius\"\ncheck_interval = \"60s\"\n{extra}"
    );
    let cfg = Config::from_str(&text, std::path::Path::new("t.toml")).expect("config");
    let now = Now::at(Timestamp::from_secs(1_800_000_000));
    let mut e = Engine::new(cfg.engine_settings(now.wall, 7), now);
    e.connection(true, now);
    (e, now)
}

fn route(kind: &str, a: &str, b: &str, format: &str) -> Route {
    topic::parse(&format!("/oneM2M/{kind}/{a}/{b}/{format}")).expect("route")
}

/// Everything sent: (to, format, request) and (route, answer).
#[allow(clippy::type_complexity)]
fn drain(e: &mut Engine) -> (Vec<(CseId, Format, Request)>, Vec<(Route, Response)>) {
    let (mut reqs, mut rsps) = (vec![], vec![]);
    while let Some(t) = e.poll_transmit() {
        match t {
            Transmit::Request {
                to,
                format,
                payload,
                ..
            } => {
                let req = format.decode_request(&payload).expect("request");
                reqs.push((to, format, req));
            }
            Transmit::Response { to, payload, .. } => {
                let f = to.format.clone().expect("format");
                rsps.push((to, f.decode_response(&payload).expect("response")));
            }
            Transmit::Ack(_) => {}
        }
    }
    (reqs, rsps)
}

/// Registers the MN, answering as Mobius does: only rsc, rqi and pc, and
/// a `m2m:cb` with `cb` as given (Mobius's has no `csz`).
fn register(e: &mut Engine, now: Now, cb: serde_json::Value) {
    for _ in 0..10 {
        let (reqs, _) = drain(e);
        for (to, format, req) in reqs {
            assert_eq!(to.as_str(), "/Mobius2");
            assert_eq!(format, Format::Json, "registration is JSON");
            let mut rsp = Response::new(Rsc::NOT_FOUND, req.rqi.clone());
            match (req.op, req.to.as_str()) {
                (Operation::Create, _) => {
                    rsp.rsc = Rsc::CREATED;
                    rsp.pc = req.pc.clone();
                }
                (Operation::Retrieve, "/Mobius2/Mobius") => {
                    rsp.rsc = Rsc::OK;
                    rsp.pc = Some(json!({ "m2m:cb": cb.clone() }));
                }
                _ => {}
            }
            let payload = serde_json::to_vec(&json!({
                "rsc": rsp.rsc.code(), "rqi": rsp.rqi, "pc": rsp.pc,
            }))
            .expect("json");
            e.handle_response(&route("resp", "id-mn", "Mobius2", "json"), &payload, now);
        }
        if e.is_registered() {
            return;
        }
    }
    panic!("not registered");
}

fn mobius_cb() -> serde_json::Value {
    json!({"pi": null, "ri": "5-20261129071523205451", "ty": 5, "rn": "Mobius",
        "cst": 1, "csi": "/Mobius2", "srt": [1, 2, 3, 4, 5, 9, 10, 13, 14, 16, 17, 23],
        "poa": ["http://127.0.0.1:7579"], "srv": ["1", "2", "2a"]})
}

/// An AE below the MN sends `to` a CBOR RETRIEVE: what goes up, in what.
fn ae_cbor_request(e: &mut Engine, now: Now, to: &str) -> (Format, Request) {
    let mut r = Request::new(Operation::Retrieve, to, "Cae1", "ae-1");
    r.rvi = Some("3".into());
    let payload = Format::Cbor.encode(&r).expect("cbor");
    e.handle_request(route("req", "Cae1", "id-mn", "cbor"), &payload, None, now);
    let (mut reqs, rsps) = drain(e);
    assert!(rsps.is_empty(), "{rsps:?}");
    assert_eq!(reqs.len(), 1);
    let (to, format, req) = reqs.remove(0);
    assert_eq!(to.as_str(), "/Mobius2");
    (format, req)
}

#[test]
fn a_cbor_request_goes_up_as_json_to_a_registrar_that_declares_nothing_and_comes_back_in_cbor() {
    let (mut e, now) = mn(None);
    register(&mut e, now, mobius_cb());
    let (format, req) = ae_cbor_request(&mut e, now, "/Mobius2/Mobius");
    assert_eq!(format, Format::Json, "no CBOR to a CSE that declared none");
    assert_eq!(req.to, "/Mobius2/Mobius");
    // Mobius answers (JSON, no rvi/fr/to); the AE gets it in CBOR.
    let answer = serde_json::to_vec(&json!({
        "rsc": 2000, "rqi": req.rqi, "pc": {"m2m:cb": mobius_cb()},
    }))
    .expect("json");
    e.handle_response(&route("resp", "id-mn", "Mobius2", "json"), &answer, now);
    let (reqs, mut rsps) = drain(&mut e);
    assert!(reqs.is_empty());
    assert_eq!(rsps.len(), 1);
    let (back, rsp) = rsps.remove(0);
    assert_eq!(back.format, Ok(Format::Cbor), "in the originator's format");
    assert_eq!(back.response_topic(), "/oneM2M/resp/Cae1/id-mn/cbor");
    assert_eq!(rsp.rqi, "ae-1");
    assert_eq!(rsp.rsc, Rsc::OK);
    assert_eq!(
        rsp.pc.as_ref().map(|pc| pc["m2m:cb"]["csi"].clone()),
        Some(json!("/Mobius2"))
    );
}

#[test]
fn the_configured_serialization_is_for_a_registrar_that_declares_nothing() {
    let (mut e, now) = mn(Some("cbor"));
    register(&mut e, now, mobius_cb());
    let (format, _) = ae_cbor_request(&mut e, now, "/Mobius2/Mobius");
    assert_eq!(format, Format::Cbor, "[registrar] serialization = \"cbor\"");

    // A declared csz wins over the setting.
    let (mut e, now) = mn(Some("cbor"));
    let mut cb = mobius_cb();
    cb["csz"] = json!(["application/json"]);
    register(&mut e, now, cb);
    let (format, _) = ae_cbor_request(&mut e, now, "/Mobius2/Mobius");
    assert_eq!(format, Format::Json);
}

#[test]
fn a_registrar_that_declares_cbor_gets_cbor_as_it_came() {
    let (mut e, now) = mn(None);
    let mut cb = mobius_cb();
    cb["csz"] = json!(["application/json", "application/cbor"]);
    register(&mut e, now, cb);
    let (format, _) = ae_cbor_request(&mut e, now, "/Mobius2/Mobius");
    assert_eq!(format, Format::Cbor, "declared: no re-encoding");
}

#[test]
fn a_registree_gets_what_its_csr_declares() {
    let (mut e, now) = mn(None);
    register(&mut e, now, mobius_cb());
    for (csi, csz, want) in [
        ("/id-asn1", None, Format::Json),
        ("/id-asn2", Some(json!(["application/json"])), Format::Json),
        (
            "/id-asn3",
            Some(json!(["application/cbor", "application/json"])),
            Format::Cbor,
        ),
    ] {
        let mut r = Request::new(Operation::Create, "/id-mn/cse-mn", csi, "c");
        r.ty = Some(ResourceType::REMOTE_CSE);
        r.rvi = Some("3".into());
        let mut csr = json!({"csi": csi, "cb": format!("{csi}/cb"), "rr": true, "srv": ["3"]});
        if let Some(csz) = csz {
            csr["csz"] = csz;
        }
        r.pc = Some(json!({ "m2m:csr": csr }));
        let payload = serde_json::to_vec(&r).expect("json");
        e.handle_request(
            route("req", &csi[1..], "id-mn", "json"),
            &payload,
            None,
            now,
        );
        let (_, rsps) = drain(&mut e);
        assert_eq!(rsps[0].1.rsc, Rsc::CREATED, "{:?}", rsps[0].1);
        let mut get = Request::new(Operation::Retrieve, format!("{csi}/cb"), "Cae1", csi);
        get.rvi = Some("3".into());
        let payload = Format::Cbor.encode(&get).expect("cbor");
        e.handle_request(route("req", "Cae1", "id-mn", "cbor"), &payload, None, now);
        let (reqs, rsps) = drain(&mut e);
        assert_eq!(reqs.len(), 1, "{rsps:?}");
        assert_eq!(reqs[0].0.as_str(), csi);
        assert_eq!(reqs[0].1, want, "to {csi}");
    }
}
