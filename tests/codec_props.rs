//! Property tests: the codec round-trips any primitive in both formats, and
//! the ID <-> topic-segment mapping round-trips any ID (docs/protocol.md §1.2).

use m2mnode::id::{from_topic_segment, to_topic_segment};
use m2mnode::primitive::{Format, Operation, Request, ResourceType, Response, Rsc};
use m2mnode::topic;
use proptest::prelude::*;
use serde_json::{json, Map, Value};

fn segment() -> impl Strategy<Value = String> {
    "[A-Za-z0-9][A-Za-z0-9._~-]{0,11}"
}

fn sp_relative() -> impl Strategy<Value = String> {
    prop::collection::vec(segment(), 1..4).prop_map(|s| format!("/{}", s.join("/")))
}

fn absolute() -> impl Strategy<Value = String> {
    (
        "[a-z][a-z0-9.-]{0,10}",
        prop::collection::vec(segment(), 1..3),
    )
        .prop_map(|(sp, s)| format!("//{sp}/{}", s.join("/")))
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<bool>().prop_map(Value::Bool),
        any::<i32>().prop_map(|n| json!(n)),
        any::<u32>().prop_map(|n| json!(n)),
        "[ -~]{0,16}".prop_map(Value::String),
        Just(Value::Null),
    ]
}

fn content() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,4}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn request() -> impl Strategy<Value = Request> {
    (
        1u64..=5,
        sp_relative(),
        proptest::option::of(sp_relative()),
        "[A-Za-z0-9-]{1,12}",
        proptest::option::of(prop_oneof![Just("2a"), Just("3"), Just("4"), Just("5")]),
        proptest::option::of(1u32..70_000),
        proptest::option::of(content().prop_map(|c| json!({ "m2m:csr": c }))),
        proptest::option::of(0u8..12),
    )
        .prop_map(|(op, to, fr, rqi, rvi, ty, pc, rcn)| {
            let mut r = Request::new(Operation::from_code(op).expect("op"), to, "", rqi);
            r.fr = fr;
            r.rvi = rvi.map(Into::into);
            r.ty = ty.map(ResourceType);
            r.pc = pc;
            r.rcn = rcn;
            r
        })
}

fn response() -> impl Strategy<Value = Response> {
    (
        1000u16..7000,
        "[A-Za-z0-9-]{0,12}",
        proptest::option::of(content()),
        proptest::option::of(sp_relative()),
    )
        .prop_map(|(rsc, rqi, pc, to)| {
            let mut r = Response::new(Rsc::from_code(rsc), rqi);
            r.pc = pc.map(|c| json!({ "m2m:dbg": c }));
            r.to = to;
            r
        })
}

proptest! {
    #[test]
    fn requests_round_trip(req in request()) {
        for f in [Format::Json, Format::Cbor] {
            let bytes = f.encode(&req).expect("encode");
            prop_assert_eq!(f.decode_request(&bytes).expect("decode"), req.clone());
        }
    }

    #[test]
    fn responses_round_trip(rsp in response()) {
        for f in [Format::Json, Format::Cbor] {
            let bytes = f.encode(&rsp).expect("encode");
            prop_assert_eq!(f.decode_response(&bytes).expect("decode"), rsp.clone());
        }
    }

    #[test]
    fn ids_round_trip_through_topic_segments(id in prop_oneof![sp_relative(), absolute()]) {
        let seg = to_topic_segment(&id);
        prop_assert!(!seg.contains('/'));
        prop_assert_eq!(from_topic_segment(&seg), id.clone());
        let t = topic::request_topic(&id, "/id-in", Format::Json);
        let route = topic::parse(&t).expect("route");
        prop_assert_eq!(route.originator, id);
    }

    #[test]
    fn any_bytes_decode_to_a_value_or_an_error_never_a_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        for f in [Format::Json, Format::Cbor] {
            let _ = f.decode_request(&bytes);
            let _ = f.decode_response(&bytes);
        }
    }

    #[test]
    fn any_topic_parses_or_is_rejected_never_a_panic(t in "[/a-zA-Z0-9:+#-]{0,40}") {
        let _ = topic::parse(&t);
        let _ = topic::parse(&format!("/oneM2M/req{t}"));
    }
}

#[test]
fn rsc_is_accepted_as_number_or_string() {
    let a = Format::Json
        .decode_response(br#"{"rsc":2000,"rqi":"x"}"#)
        .expect("number");
    let b = Format::Json
        .decode_response(br#"{"rsc":"2000","rqi":"x"}"#)
        .expect("string");
    assert_eq!(a, b);
    assert!(Format::Json
        .decode_response(br#"{"rsc":"ok","rqi":"x"}"#)
        .is_err());
    for code in Rsc::ALL {
        assert_eq!(Rsc::from_code(code.code()), *code);
        assert_ne!(code.name(), "UNKNOWN");
    }
}

#[test]
fn csz_accepts_tokens_and_mime_strings() {
    for (s, f) in [
        ("json", Format::Json),
        ("application/json", Format::Json),
        ("application/vnd.onem2m-res+json", Format::Json),
        ("cbor", Format::Cbor),
        ("application/cbor", Format::Cbor),
        ("application/vnd.onem2m-res+cbor", Format::Cbor),
    ] {
        assert_eq!(Format::from_csz(s), Some(f), "{s}");
    }
    assert_eq!(Format::from_csz("xml"), None);
}

#[test]
fn unknown_parameters_are_kept_verbatim() {
    let bytes = br#"{"op":2,"to":"/a/b","fr":"/c","rqi":"1","rvi":"3","drt":1,"vsi":"v","xyz":{"k":[1,2]}}"#;
    let r = Format::Json.decode_request(bytes).expect("decode");
    assert_eq!(r.other["vsi"], "v");
    let again: Value =
        serde_json::from_slice(&Format::Json.encode(&r).expect("encode")).expect("json");
    let orig: Value = serde_json::from_slice(bytes).expect("json");
    assert_eq!(again, orig);
}
