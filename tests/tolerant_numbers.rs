//! Issue 14: integers are read tolerantly in JSON and CBOR (a whole float
//! such as tinyIoT's `4004.0` is the integer, TS-0004 §8.4.2), a non-whole or
//! out-of-range one is refused naming the field, the node writes integers,
//! and no attribute of a stored representation (`m2m:csr`, the registrar's
//! `m2m:cb`) is dropped without a trace. docs/tinyiot.md.

use m2mnode::config::Config;
use m2mnode::engine::{Outcome, Registrar};
use m2mnode::primitive::{Format, Request, ResourceType, Response, Rsc};
use m2mnode::resource::RemoteCse;
use m2mnode::time::Timestamp;
use proptest::prelude::*;
use serde_json::{json, Value};
use std::path::Path;

const FORMATS: [Format; 2] = [Format::Json, Format::Cbor];

fn response(format: Format, v: &Value) -> Result<Response, String> {
    let bytes = format.encode(v).expect("encode");
    format.decode_response(&bytes).map_err(|e| e.reason)
}

fn request(format: Format, v: &Value) -> Result<Request, String> {
    let bytes = format.encode(v).expect("encode");
    format.decode_request(&bytes).map_err(|e| e.reason)
}

/// `pc` as the node gets it from a primitive in `format`.
fn content(format: Format, pc: Value) -> Value {
    response(format, &json!({"rsc": 2000, "rqi": "r", "pc": pc}))
        .expect("response")
        .pc
        .expect("pc")
}

fn assert_names(e: &str, field: &str, why: &str) {
    assert!(
        e.contains(&format!("`{field}`")) && e.contains(why),
        "error {e:?} should name `{field}` and say {why:?}"
    );
}

proptest! {
    #[test]
    fn a_whole_float_rsc_is_the_code(code in 0u16..=u16::MAX) {
        for f in FORMATS {
            let r = response(f, &json!({"rsc": f64::from(code), "rqi": "r"})).expect("decodes");
            prop_assert_eq!(r.rsc, Rsc::from_code(code));
            // Written back as an integer.
            let out = serde_json::to_value(&r).expect("json");
            prop_assert_eq!(out["rsc"].as_u64(), Some(u64::from(code)));
        }
    }

    #[test]
    fn a_non_whole_rsc_is_refused_naming_it(code in 0u16..u16::MAX, frac in 0.001f64..0.999) {
        for f in FORMATS {
            let e = response(f, &json!({"rsc": f64::from(code) + frac, "rqi": "r"}))
                .expect_err("refused");
            assert_names(&e, "rsc", "not a whole number");
        }
    }

    #[test]
    fn whole_float_op_ty_rcn_drt_and_rvi_are_read(
        op in 1u8..=5, ty in 0u32..100_000, rcn in 0u8..=u8::MAX, drt in 0u8..=u8::MAX, rvi in 1u8..=5,
    ) {
        let v = json!({
            "op": f64::from(op), "to": "/id-in/cse-in", "fr": "/id-mn", "rqi": "r",
            "rvi": f64::from(rvi), "ty": f64::from(ty), "rcn": f64::from(rcn), "drt": f64::from(drt),
        });
        for f in FORMATS {
            let r = request(f, &v).expect("decodes");
            prop_assert_eq!(r.op.code(), op);
            prop_assert_eq!(r.ty, Some(ResourceType(ty)));
            prop_assert_eq!(r.rcn, Some(rcn));
            prop_assert_eq!(r.drt, Some(drt));
            prop_assert_eq!(r.rvi.clone(), Some(rvi.to_string()));
            let out = serde_json::to_value(&r).expect("json");
            prop_assert!(out["op"].is_u64() && out["ty"].is_u64() && out["rcn"].is_u64());
            prop_assert!(out["rvi"].is_string());
        }
    }

    #[test]
    fn cst_of_a_csr_and_of_the_registrars_cb_accepts_whole_floats(cst in 1u8..=3) {
        for f in FORMATS {
            let pc = content(f, json!({"m2m:csr": {"csi": "/id-mn", "cst": f64::from(cst)}}));
            prop_assert_eq!(RemoteCse::from_content(&pc).expect("csr").cst, Some(cst));
            let pc = content(f, json!({"m2m:cb": {"csi": "/id-in", "rn": "cse-in", "cst": f64::from(cst)}}));
            let csr = RemoteCse::from_cse_base(&pc).expect("cb");
            prop_assert_eq!(csr.cst, Some(cst));
            prop_assert_eq!(csr.to_content()["m2m:csr"]["cst"].as_u64(), Some(u64::from(cst)));
        }
    }
}

#[test]
fn non_whole_and_out_of_range_parameters_are_refused_naming_them() {
    let base = json!({"op": 2, "to": "/id-in/cse-in", "fr": "/id-mn", "rqi": "r", "rvi": "3"});
    for (k, v, why) in [
        ("op", json!(2.5), "not a whole number"),
        ("ty", json!(16.25), "not a whole number"),
        ("ty", json!(-16.0), "out of range"),
        ("ty", json!(5e12), "out of range"),
        ("rcn", json!(1.5), "not a whole number"),
        ("rcn", json!(256.0), "out of range"),
        ("drt", json!(2.5), "not a whole number"),
        ("rvi", json!(3.5), "not a whole number"),
    ] {
        let mut req = base.clone();
        req[k] = v;
        for f in FORMATS {
            let e = request(f, &req).expect_err(k);
            assert_names(&e, k, why);
        }
    }
    for f in FORMATS {
        let e = response(f, &json!({"rsc": 65536.0, "rqi": "r"})).expect_err("rsc");
        assert_names(&e, "rsc", "out of range");
        // The rqi is still recovered, so a sender can be told.
        let bytes = f
            .encode(&json!({"rsc": 4004.5, "rqi": "r"}))
            .expect("encode");
        assert_eq!(
            f.decode_response(&bytes)
                .expect_err("refused")
                .rqi
                .as_deref(),
            Some("r")
        );
    }
}

#[test]
fn a_csr_attribute_that_does_not_fit_its_type_makes_the_csr_an_error_naming_it() {
    for (k, v, why) in [
        ("cst", json!(2.5), "not a whole number"),
        ("cst", json!(300), "out of range"),
        ("ty", json!(16.5), "not a whole number"),
        ("rr", json!("yes"), "boolean"),
        ("poa", json!(["mqtt://h:1883", 7]), "string"),
        ("srv", json!(3), "sequence"),
        ("dcse", json!([{"csi": "/x"}]), "string"),
        ("csi", json!(16), "string"),
        ("nl", json!(["/id-mn/node"]), "string"),
    ] {
        for f in FORMATS {
            let pc = content(
                f,
                json!({"m2m:csr": {"csi": "/id-mn", "rr": true, k: v.clone()}}),
            );
            let e = RemoteCse::from_content(&pc).expect_err(k);
            assert_names(&e, k, why);
        }
    }
}

#[test]
fn untyped_csr_attributes_are_kept_verbatim() {
    let body = json!({
        "csi": "/id-mn", "cst": 2.0, "rr": true,
        "acpi": ["acp1"], "mtcc": 1.0, "esi": {"x": [1.5, "y"]},
    });
    for f in FORMATS {
        let pc = content(f, json!({ "m2m:csr": body }));
        let csr = RemoteCse::from_content(&pc).expect("csr");
        let out = &csr.to_content()["m2m:csr"];
        assert_eq!(out["cst"], json!(2));
        for k in ["acpi", "mtcc", "esi"] {
            assert_eq!(out[k], body[k], "{k} relayed as it came");
        }
    }
}

#[test]
fn an_attribute_of_the_registrars_cb_that_does_not_fit_is_an_error_naming_it() {
    for (k, v, why) in [
        ("cst", json!(1.5), "not a whole number"),
        ("cst", json!("IN"), "not a number"),
        ("poa", json!(["mqtt://h:1883", 7]), "string"),
        ("srv", json!(["3", 4]), "string"),
        ("csz", json!("application/json"), "sequence"),
        ("lbl", json!([true]), "string"),
        ("nl", json!(5), "string"),
        ("csi", json!(5), "string"),
    ] {
        for f in FORMATS {
            let mut cb =
                json!({"csi": "/id-in", "rn": "cse-in", "cst": 1.0, "poa": ["mqtt://h:1883"]});
            cb[k] = v.clone();
            let pc = content(f, json!({ "m2m:cb": cb }));
            let e = RemoteCse::from_cse_base(&pc).expect_err(k);
            assert!(e.contains("m2m:cb"), "{e}");
            assert_names(&e, k, why);
        }
    }
}

#[test]
fn tinyiots_registrar_cb_is_stored_whole() {
    // The m2m:cb tinyIoT answers (proto/fixtures/tinyiot-registration.txt, line 4).
    let pc = json!({"m2m:cb": {
        "ct": "20261126T064900,988", "ri": "id-in", "lt": "20261126T064900,988", "rn": "cse-in",
        "cst": 1.0, "srt": [1.0, 2.0, 5.0, 16.0], "acpi": ["cse-in/defaultACP"], "srv": ["3", "4"],
        "pi": "", "ty": 5.0, "csi": "/id-in", "rr": true,
        "poa": ["http://127.0.0.1:23080", "mqtt://127.0.0.1:28883"], "dcse": ["/id-mn"],
    }});
    for f in FORMATS {
        let csr = RemoteCse::from_cse_base(&content(f, pc.clone())).expect("cb");
        assert_eq!(csr.cst, Some(1));
        assert_eq!(csr.csi.as_deref(), Some("/id-in"));
        assert_eq!(csr.cb.as_deref(), Some("/id-in/cse-in"));
        assert_eq!(csr.srv, Some(vec!["3".to_string(), "4".to_string()]));
        assert_eq!(csr.poa.as_ref().map(Vec::len), Some(2));
        // A registrar CSR never carries dcse (ACME _copyCSE2CSR).
        assert_eq!(csr.dcse, None);
    }
}

fn now() -> Timestamp {
    Timestamp::parse("20261126T065004,204000").expect("timestamp")
}

fn registrar() -> Registrar {
    let cfg = Config::from_str(
        "[cse]\nid = \"/id-in\"\nname = \"cse-in\"\ntype = \"IN\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n",
        Path::new("tolerant.toml"),
    )
    .expect("config");
    Registrar::new(cfg.registrar_settings(now()))
}

fn handle(r: &mut Registrar, format: Format, v: &Value) -> Response {
    let req = request(format, v).expect("request decodes");
    match r.handle(&req, "/id-mn", now()) {
        Outcome::Respond { response, .. } => response,
        Outcome::Forward { .. } => panic!("unexpected forward"),
    }
}

fn csr_create(cst: Value) -> Value {
    json!({
        "op": 1.0, "to": "/id-in/cse-in", "fr": "/id-mn", "rqi": "c1", "rvi": "3", "ty": 16.0,
        "pc": {"m2m:csr": {"csi": "/id-mn", "cb": "/id-mn/cse-mn", "rr": true, "srv": ["3"],
                           "cst": cst, "poa": ["mqtt://127.0.0.1:1883"]}},
    })
}

#[test]
fn the_registrar_takes_a_float_cst_and_answers_integers() {
    for f in FORMATS {
        let mut r = registrar();
        let rsp = handle(&mut r, f, &csr_create(json!(2.0)));
        assert_eq!(rsp.rsc, Rsc::CREATED, "{rsp:?}");
        let out = serde_json::to_value(&rsp).expect("json");
        assert_eq!(out["rsc"], json!(2001));
        assert_eq!(out["pc"]["m2m:csr"]["cst"], json!(2));
        assert_eq!(out["pc"]["m2m:csr"]["ty"], json!(16));
        let get = json!({"op": 2.0, "to": "/id-in/cse-in/id-mn", "fr": "/id-mn", "rqi": "c2", "rvi": "3"});
        let rsp = handle(&mut r, f, &get);
        assert_eq!(rsp.rsc, Rsc::OK);
        assert_eq!(rsp.pc.expect("pc")["m2m:csr"]["cst"], json!(2));
    }
}

#[test]
fn the_registrar_refuses_a_non_whole_cst_naming_it() {
    for f in FORMATS {
        let mut r = registrar();
        let rsp = handle(&mut r, f, &csr_create(json!(2.5)));
        assert_eq!(rsp.rsc, Rsc::BAD_REQUEST, "{rsp:?}");
        let why = rsp.debug_text().unwrap_or_default();
        assert_names(why, "cst", "not a whole number");
        let get =
            json!({"op": 2, "to": "/id-in/cse-in/id-mn", "fr": "/id-mn", "rqi": "c2", "rvi": "3"});
        assert_eq!(
            handle(&mut r, f, &get).rsc,
            Rsc::NOT_FOUND,
            "nothing stored"
        );
    }
    // The op itself is a request parameter: a non-whole one is no primitive.
    let e = request(
        Format::Json,
        &json!({"op": 1.5, "to": "/id-in/cse-in", "rqi": "c3"}),
    )
    .expect_err("refused");
    assert_names(&e, "op", "not a whole number");
}
