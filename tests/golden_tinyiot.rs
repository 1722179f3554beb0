//! tinyIoT's real traffic (proto/fixtures/tinyiot-registration.txt): every
//! message decodes, in JSON as captured and re-encoded as CBOR, with its
//! whole floats read as the integers they are and written back as integers
//! (TS-0004 §8.4.2; docs/tinyiot.md).

use m2mnode::primitive::{Format, Operation, Request, ResourceType, Response, Rsc};
use m2mnode::resource::RemoteCse;
use m2mnode::topic::{self, Kind};
use serde_json::Value;
use std::path::Path;

/// (topic, raw payload) of every line of the fixture: `TOPIC PAYLOAD`.
fn fixture() -> Vec<(String, String)> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("proto/fixtures/tinyiot-registration.txt");
    let text = std::fs::read_to_string(&path).expect("fixture");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (t, p) = l.split_once(' ').expect("TOPIC PAYLOAD");
            (t.to_owned(), p.to_owned())
        })
        .collect()
}

/// The captured value with the parameters the node types as integers made
/// integers: what a lossless decode and re-encode must give back. `pc` and
/// the untyped parameters are relayed verbatim, floats and all.
fn canonical(mut v: Value, typed: &[&str]) -> Value {
    for k in typed {
        if let Some(n) = v.get(*k).and_then(Value::as_f64) {
            v[*k] = Value::from(n as u64);
        }
    }
    v
}

fn check_content(t: &str, pc: Option<&Value>) {
    let Some(pc) = pc else { return };
    if pc.get("m2m:cb").is_some() {
        let csr = RemoteCse::from_cse_base(pc).unwrap_or_else(|e| panic!("{t}: {e}"));
        let cst = pc["m2m:cb"]["cst"].as_f64().expect("cst");
        assert_eq!(csr.cst.map(f64::from), Some(cst), "{t}: cst kept");
        assert!(csr.poa.is_some() && csr.srv.is_some(), "{t}");
    }
    if pc.get("m2m:csr").is_some() {
        let csr = RemoteCse::from_content(pc).unwrap_or_else(|e| panic!("{t}: {e}"));
        // The duplicated csi collapses to its (identical) value.
        assert_eq!(csr.csi.as_deref(), pc["m2m:csr"]["csi"].as_str(), "{t}");
        assert_eq!(csr.cst, Some(2), "{t}");
        if pc["m2m:csr"].get("ty").is_some() {
            assert_eq!(csr.ty, Some(ResourceType::REMOTE_CSE), "{t}");
        }
        // Written back canonical: integers.
        let back = csr.to_content();
        assert!(back["m2m:csr"]["cst"].is_u64(), "{t}");
    }
}

#[test]
fn every_tinyiot_message_decodes_in_json_and_cbor() {
    let msgs = fixture();
    assert_eq!(msgs.len(), 23);
    let (mut requests, mut responses) = (0, 0);
    for (t, payload) in &msgs {
        let route = topic::parse(t).unwrap_or_else(|| panic!("{t}: not a oneM2M topic"));
        let captured: Value = serde_json::from_str(payload).expect("payload JSON");
        let cbor = Format::Cbor.encode(&captured).expect("cbor");
        match route.kind {
            Kind::Request => {
                requests += 1;
                let r: Request = Format::Json
                    .decode_request(payload.as_bytes())
                    .unwrap_or_else(|e| panic!("{t}: {e}"));
                let from_cbor = Format::Cbor.decode_request(&cbor).expect("cbor");
                assert_eq!(from_cbor, r, "{t}");
                let again = serde_json::to_value(&r).expect("json");
                assert_eq!(again, canonical(captured, &["op", "ty"]), "{t}");
                check_content(t, r.pc.as_ref());
            }
            Kind::Response => {
                responses += 1;
                let r: Response = Format::Json
                    .decode_response(payload.as_bytes())
                    .unwrap_or_else(|e| panic!("{t}: {e}"));
                let from_cbor = Format::Cbor.decode_response(&cbor).expect("cbor");
                assert_eq!(from_cbor, r, "{t}");
                assert_eq!(
                    f64::from(r.rsc.code()),
                    captured["rsc"].as_f64().expect("rsc"),
                    "{t}"
                );
                let again = serde_json::to_value(&r).expect("json");
                assert!(again["rsc"].is_u64(), "{t}: rsc written as an integer");
                assert_eq!(again, canonical(captured, &["rsc"]), "{t}");
                check_content(t, r.pc.as_ref());
            }
        }
    }
    assert_eq!((requests, responses), (9, 14));
}

#[test]
fn the_float_answers_of_the_fixture_are_the_codes_they_mean() {
    let msgs = fixture();
    let rsc = |i: usize| {
        Format::Json
            .decode_response(msgs[i].1.as_bytes())
            .expect("response")
            .rsc
    };
    assert_eq!(rsc(1), Rsc::ORIGINATOR_HAS_NO_PRIVILEGE); // 4103.0
    assert_eq!(rsc(3), Rsc::OK); // 2000.0
    assert_eq!(rsc(5), Rsc::NOT_FOUND); // 4004.0
    assert_eq!(rsc(6), Rsc::NOT_FOUND); // 4004
                                        // tinyIoT's broken forwarding answers rsc 0: decoded, kept as an unknown code.
    assert_eq!(rsc(14), Rsc::Other(0));
    let cb = Format::Json
        .decode_response(msgs[3].1.as_bytes())
        .expect("response")
        .pc
        .expect("pc");
    let csr = RemoteCse::from_cse_base(&cb).expect("m2m:cb");
    assert_eq!(csr.cst, Some(1));
    assert_eq!(csr.csi.as_deref(), Some("/id-in"));
    assert_eq!(csr.cb.as_deref(), Some("/id-in/cse-in"));
    let req = Format::Json
        .decode_request(msgs[7].1.as_bytes())
        .expect("request");
    assert_eq!(req.op, Operation::Create);
}
