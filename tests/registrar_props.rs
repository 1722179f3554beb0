//! Property test of the registrar core: any sequence of requests, however
//! malformed, gets an answer that echoes its rqi, never a panic, and leaves
//! a store in which every CSR stands for the CSE that created it.

use m2mnode::config::Config;
use m2mnode::engine::{Outcome, Registrar};
use m2mnode::primitive::{Operation, Request, ResourceType};
use m2mnode::time::Timestamp;
use proptest::prelude::*;
use serde_json::{json, Value};
use std::path::Path;

fn registrar() -> Registrar {
    let cfg = Config::from_str(
        "[cse]\nid = \"/id-in\"\nname = \"cse-in\"\ntype = \"MN\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n[registrar]\nid = \"/id-up\"\nname = \"cse-up\"\n",
        Path::new("props.toml"),
    )
    .expect("config");
    Registrar::new(cfg.registrar_settings(Timestamp::from_secs(1_800_000_000)))
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-3i64..100_000).prop_map(|n| json!(n)),
        prop_oneof![
            Just("/id-a"),
            Just("x"),
            Just(""),
            Just("20200101T000000"),
            Just("//sp/id"),
            Just("a/b")
        ]
        .prop_map(|s| json!(s)),
        prop::collection::vec(
            prop_oneof![Just("/id-a"), Just("3"), Just("json"), Just("")],
            0..3
        )
        .prop_map(|v| json!(v)),
    ]
}

fn attr() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("rn"),
        Just("csi"),
        Just("cb"),
        Just("rr"),
        Just("srv"),
        Just("cst"),
        Just("poa"),
        Just("dcse"),
        Just("lbl"),
        Just("nl"),
        Just("et"),
        Just("ri"),
        Just("ty"),
        Just("csz"),
        Just("zzz"),
        Just("acpi"),
    ]
    .prop_map(String::from)
}

fn request() -> impl Strategy<Value = Request> {
    let who = prop_oneof![
        Just("/id-a"),
        Just("/id-b"),
        Just("Cae"),
        Just("/id-in"),
        Just("/id-up"),
        Just("/S1"),
        Just("bad id")
    ];
    let to = prop_oneof![
        Just("/id-in/cse-in"),
        Just("cse-in"),
        Just("-"),
        Just("/id-in/cse-in/id-a"),
        Just("id-a"),
        Just("/id-in/-/id-b"),
        Just("/id-a/cse"),
        Just("/id-zz/x"),
        Just("///x"),
        Just("cse-in/"),
        Just("/id-in/cse-in/id-a/child"),
        Just("//sp/id-in/cse-in"),
        Just("cse-in/id-a#lbl"),
        Just(""),
    ];
    (
        1u64..=5,
        to,
        proptest::option::of(who),
        proptest::option::of(prop_oneof![Just(16u32), Just(2), Just(5), Just(3)]),
        proptest::option::of(prop_oneof![Just("3"), Just("5"), Just("1"), Just("x")]),
        proptest::option::of(prop::collection::btree_map(attr(), value(), 0..8)),
        proptest::option::of(0u8..12),
        proptest::option::of(prop_oneof![
            Just("20200101T000000"),
            Just("999999999"),
            Just("garbage")
        ]),
        "[a-z0-9]{1,6}",
    )
        .prop_map(|(op, to, fr, ty, rvi, body, rcn, rqet, rqi)| {
            let mut r = Request::new(Operation::from_code(op).expect("op"), to, "", rqi);
            r.fr = fr.map(String::from);
            r.ty = ty.map(ResourceType);
            r.rvi = rvi.map(String::from);
            r.pc = body
                .map(|b| json!({ "m2m:csr": b.into_iter().collect::<serde_json::Map<_, _>>() }));
            r.rcn = rcn;
            r.rqet = rqet.map(String::from);
            r
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_request_sequence_is_answered_and_keeps_the_store_sound(reqs in prop::collection::vec(request(), 1..40)) {
        let mut r = registrar();
        let now = Timestamp::from_secs(1_800_000_000);
        for req in reqs {
            let hop = req.fr.clone().unwrap_or_default();
            match r.handle(&req, &hop, now) {
                Outcome::Respond { response, .. } => prop_assert_eq!(&response.rqi, &req.rqi),
                Outcome::Forward { next_hop, request } => {
                    prop_assert_ne!(next_hop.as_str(), "/id-in");
                    prop_assert_eq!(request.rqi, req.rqi);
                }
            }
        }
        for (ri, csr) in r.store().iter() {
            let csi = csr.csi().expect("every CSR has a csi");
            prop_assert_eq!(ri.as_str(), &csi[1..], "ri is the CSE-ID");
            prop_assert!(!m2mnode::id::is_ae_id(csi));
            prop_assert!(csi != "/id-in" && csi != "/id-up", "no registration loop: {}", csi);
            prop_assert_eq!(r.store().iter().filter(|(_, c)| c.csi() == Some(csi)).count(), 1);
        }
    }
}

fn hop() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("/id-a"),
        Just("/id-b"),
        Just("/id-c"),
        Just("/id-up"),
        Just("/Cae"),
        Just("//sp/id-a"),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The hop is the identity: whatever `fr` says, a CSR is created,
    /// changed or deleted only by the CSE it describes, speaking through its
    /// own topic (issue: trust and limits).
    #[test]
    fn no_hop_changes_another_hops_csr(
        steps in prop::collection::vec((hop(), request()), 1..60)
    ) {
        let mut r = registrar();
        let now = Timestamp::from_secs(1_800_000_000);
        // Registrations that succeed: each CSE registers itself first.
        for me in ["/id-a", "/id-b", "/id-c"] {
            let mut req = Request::new(Operation::Create, "/id-in/cse-in", me, "reg");
            req.ty = Some(ResourceType(16));
            req.rvi = Some("3".into());
            req.pc = Some(json!({"m2m:csr": {"csi": me, "cb": format!("{me}/cb"), "rr": true, "srv": ["3"], "dcse": []}}));
            r.handle(&req, me, now);
        }
        for (hop, mut req) in steps {
            // Attacks name the victims in every field they can.
            if req.fr.is_none() {
                req.fr = Some("/id-b".into());
            }
            let before: std::collections::BTreeMap<String, String> = r
                .store()
                .iter()
                .map(|(_, c)| (c.csi().unwrap_or_default().to_owned(), serde_json::to_string(c).unwrap_or_default()))
                .collect();
            let _ = r.handle(&req, hop, now);
            let after: std::collections::BTreeMap<String, String> = r
                .store()
                .iter()
                .map(|(_, c)| (c.csi().unwrap_or_default().to_owned(), serde_json::to_string(c).unwrap_or_default()))
                .collect();
            let speaker = m2mnode::id::speaker_cse(hop);
            for csi in before.keys().chain(after.keys()) {
                if before.get(csi) != after.get(csi) {
                    prop_assert_eq!(
                        Some(csi.as_str()), speaker,
                        "{} changed the CSR of {} with fr {:?}", hop, csi, req.fr
                    );
                }
            }
        }
    }
}
