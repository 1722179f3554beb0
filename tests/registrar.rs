//! Issue "Registrar": CSR requests against an IN-CSE. Test names follow the
//! ETSI ATS case IDs (docs/protocol.md §7.1) and ACME's testRemote cases. The request
//! handling cases run against the engine in this process (the same
//! primitives as bytes on the same routes, no broker: milliseconds); those
//! about the node as a process (duplicates, forwarding, persistence,
//! liveness, the broker's URL as poa) run over a real Mosquitto against
//! `m2mnode run`.

mod common;

use common::*;
use m2mnode::primitive::{Format, Operation, Request, ResourceType, Response, Rsc};
use serde_json::{json, Value};
use std::time::Duration;

fn config(ty: &str, url: &str, extra: &str) -> String {
    let mut cfg = node_config("/id-in", "cse-in", ty, url, None, None, "60s");
    if ty != "IN" {
        cfg = cfg.replace(
            "[registrees]",
            "[registrar]\nid = \"/id-up\"\nname = \"cse-up\"\n\n[registrees]",
        );
    }
    cfg + extra
}

/// The engine of an IN-CSE (or `ty`) in this process.
struct Setup {
    host: InProcess,
}

impl Setup {
    fn connect(&self, own: &str) -> Client {
        self.host.connect(own)
    }
}

fn setup_with(ty: &str, extra: &str) -> Setup {
    Setup {
        host: InProcess::new(&config(ty, "mqtt://127.0.0.1:1883", extra)),
    }
}

fn setup() -> Setup {
    setup_with("IN", "")
}

/// An `m2mnode run` IN-CSE on a real Mosquitto.
struct Live {
    broker: Mosquitto,
    node: Node,
}

impl Live {
    fn connect(&self, own: &str) -> Client {
        Client::connect(&self.broker, own)
    }
}

fn live() -> Live {
    let broker = Mosquitto::start();
    let node = Node::start("registrar", &config("IN", &broker.url(), ""));
    node.wait_connected(Duration::from_secs(10));
    Live { broker, node }
}

fn create(c: &Client, body: Value) -> Response {
    let mut r = c.req(Operation::Create, "/id-in/cse-in");
    r.ty = Some(ResourceType::REMOTE_CSE);
    r.pc = Some(body);
    c.send(&r, "/id-in")
}

fn register(c: &Client, extra: Value) -> Response {
    let rsp = create(c, csr_body(&c.own, extra));
    assert_eq!(rsp.rsc, Rsc::CREATED, "{rsp:?}");
    rsp
}

fn csr(rsp: &Response) -> &Value {
    &rsp.pc.as_ref().expect("pc")["m2m:csr"]
}

fn update(c: &Client, to: &str, body: Value) -> Response {
    let mut r = c.req(Operation::Update, to);
    r.pc = Some(json!({ "m2m:csr": body }));
    c.send(&r, "/id-in")
}

fn retrieve(c: &Client, to: &str) -> Response {
    c.send(&c.req(Operation::Retrieve, to), "/id-in")
}

#[test]
fn registree_lifecycle_create_retrieve_update_delete() {
    let s = setup();
    let c = s.connect("/id-mn");
    let rsp = register(
        &c,
        json!({"rn": "id-mn", "cst": 2, "poa": ["mqtt://127.0.0.1:1"]}),
    );
    let body = csr(&rsp);
    assert_eq!(body["csi"], "/id-mn");
    assert_eq!(body["ty"], 16);
    assert_eq!(body["ri"], "id-mn");
    assert_eq!(body["pi"], "id-in");
    assert!(body["ct"].is_string() && body["lt"].is_string());

    let got = retrieve(&c, "/id-in/cse-in/id-mn");
    assert_eq!(got.rsc, Rsc::OK);
    assert_eq!(csr(&got)["cb"], "/id-mn/cse");

    let upd = update(
        &c,
        "/id-in/cse-in/id-mn",
        json!({"lbl": ["a"], "poa": ["mqtt://x:1"], "nl": "/id-mn/node", "rr": false, "dcse": ["/id-asn"]}),
    );
    assert_eq!(upd.rsc, Rsc::UPDATED, "{upd:?}");
    let b = csr(&upd);
    assert_eq!(b["lbl"], json!(["a"]));
    assert_eq!(b["poa"], json!(["mqtt://x:1"]));
    assert_eq!(b["nl"], "/id-mn/node");
    assert_eq!(b["rr"], false);
    assert_eq!(b["dcse"], json!(["/id-asn"]));

    let del = c.send(&c.req(Operation::Delete, "/id-in/cse-in/id-mn"), "/id-in");
    assert_eq!(del.rsc, Rsc::DELETED);
    assert_eq!(retrieve(&c, "/id-in/cse-in/id-mn").rsc, Rsc::NOT_FOUND);
}

#[test]
fn a_csr_is_addressed_in_every_id_form() {
    let s = setup();
    let c = s.connect("/id-mn");
    register(&c, json!({}));
    for to in [
        "/id-in/cse-in/id-mn",
        "cse-in/id-mn",
        "/id-in/id-mn",
        "-/id-mn",
        "/id-in/-/id-mn",
        "id-mn",
        "//m2mnode.example/id-in/cse-in/id-mn",
    ] {
        let mut r = c.req(Operation::Retrieve, to);
        r.to = to.into();
        let rsp = c.send(&r, "/id-in");
        assert_eq!(rsp.rsc, Rsc::OK, "{to}: {rsp:?}");
    }
}

#[test]
fn tc_cse_reg_cre_013_optional_attributes_are_echoed() {
    let s = setup();
    for (i, (k, v)) in [
        ("lbl", json!(["l1"])),
        ("cst", json!(1)),
        ("poa", json!(["mqtt://h:1"])),
        ("nl", json!("/x/n")),
    ]
    .into_iter()
    .enumerate()
    {
        let c = s.connect(&format!("/id-o{i}"));
        let rsp = register(&c, json!({ k: v.clone() }));
        assert_eq!(csr(&rsp)[k], v, "{k}");
    }
}

#[test]
fn tc_cse_reg_cre_018_multiplicity_one_attributes_only() {
    let s = setup();
    let c = s.connect("/id-mn");
    let rsp = create(
        &c,
        json!({"m2m:csr": {"rn": "id-mn", "cb": "/id-mn/cse-mn", "csi": "/id-mn", "rr": true, "srv": ["3"]}}),
    );
    assert_eq!(rsp.rsc, Rsc::CREATED);
}

#[test]
fn tc_cse_reg_cre_019_without_preconfigured_cse_id() {
    let s = setup();
    let c = s.connect("/id-new");
    let rsp = create(
        &c,
        json!({"m2m:csr": {"cb": "/id-new/cse", "csi": "/id-new", "rr": true, "srv": ["3"]}}),
    );
    assert!(rsp.rsc.is_success(), "{rsp:?}");
    assert_eq!(csr(&rsp)["rn"], "id-new");
}

#[test]
fn tc_cse_reg_cre_021_ae_creating_a_cse_base_is_not_allowed() {
    let s = setup();
    let c = s.connect("Cae01");
    let mut r = c.req(Operation::Create, "/id-in/cse-in");
    r.ty = Some(ResourceType::CSE_BASE);
    r.pc = Some(json!({"m2m:cb": {"csi": "/x", "rn": "x"}}));
    assert_eq!(c.send(&r, "/id-in").rsc, Rsc::OPERATION_NOT_ALLOWED);
}

#[test]
fn tc_cse_reg_cre_025_mandatory_attributes() {
    let s = setup();
    let c = s.connect("/id-mn");
    assert!(create(&c, csr_body("/id-mn", json!({}))).rsc.is_success());
}

#[test]
fn tc_cse_reg_cre_027_cst_mn_is_kept() {
    let s = setup();
    let c = s.connect("/id-mn");
    let rsp = register(&c, json!({"cst": 2}));
    assert_eq!(csr(&rsp)["cst"], 2);
    assert_eq!(csr(&retrieve(&c, "/id-in/cse-in/id-mn"))["cst"], 2);
}

#[test]
fn tc_cse_reg_cre_028_optional_attributes_are_kept() {
    let s = setup();
    let et = m2mnode::time::Timestamp::now()
        .plus(Duration::from_secs(86_400))
        .to_onem2m();
    for (i, (k, v)) in [
        ("lbl", json!(["k"])),
        ("poa", json!(["mqtt://h:2"])),
        ("nl", json!("/x/nl")),
        ("rn", json!("my-name")),
        ("et", json!(et)),
    ]
    .into_iter()
    .enumerate()
    {
        let c = s.connect(&format!("/id-k{i}"));
        let rsp = register(&c, json!({ k: v.clone() }));
        let rn = csr(&rsp)["rn"].as_str().expect("rn").to_owned();
        let got = retrieve(&c, &format!("/id-in/cse-in/{rn}"));
        assert_eq!(csr(&got)[k], v, "{k}");
    }
}

#[test]
fn tc_cse_reg_ret_001_cse_base_with_all_mandatory_attributes() {
    let s = setup();
    let c = s.connect("/id-x");
    let rsp = retrieve(&c, "/id-in/cse-in");
    assert_eq!(rsp.rsc, Rsc::OK);
    let cb = &rsp.pc.as_ref().expect("pc")["m2m:cb"];
    for k in [
        "ty", "ri", "rn", "pi", "ct", "lt", "cst", "csi", "srt", "poa", "srv", "csz",
    ] {
        assert!(!cb[k].is_null(), "m2m:cb lacks {k}");
    }
}

#[test]
fn tc_cse_reg_ret_002_cse_base_contains_cst_and_nl() {
    let s = setup_with("IN", "");
    let c = s.connect("/id-x");
    let cb = retrieve(&c, "/id-in/cse-in").pc.expect("pc");
    assert_eq!(cb["m2m:cb"]["cst"], 1);
    drop(s);
    let broker = Mosquitto::start();
    let cfg = node_config("/id-in", "cse-in", "IN", &broker.url(), None, None, "60s").replace(
        "type = \"IN\"",
        "type = \"IN\"\nnode_link = \"/id-in/node1\"",
    );
    let node = Node::start("ret002", &cfg);
    node.wait_connected(Duration::from_secs(10));
    let c = Client::connect(&broker, "/id-x");
    let cb = retrieve(&c, "/id-in/cse-in").pc.expect("pc");
    assert_eq!(cb["m2m:cb"]["nl"], "/id-in/node1");
}

#[test]
fn tc_cse_reg_ret_005_cse_base_contains_cst() {
    let s = setup();
    let c = s.connect("/id-x");
    assert_eq!(
        retrieve(&c, "/id-in/cse-in").pc.expect("pc")["m2m:cb"]["cst"],
        1
    );
}

#[test]
fn tc_cse_reg_ret_008_cse_base_srt_and_poa() {
    let s = live();
    let c = s.connect("/id-x");
    let cb = retrieve(&c, "/id-in/cse-in").pc.expect("pc");
    assert_eq!(cb["m2m:cb"]["srt"], json!([5, 16]));
    assert_eq!(cb["m2m:cb"]["poa"], json!([s.broker.url()]));
}

#[test]
fn tc_cse_reg_ret_006_registered_cse_retrieves_its_csr() {
    let s = setup();
    let c = s.connect("/id-mn");
    register(&c, json!({}));
    let rsp = retrieve(&c, "/id-in/cse-in/id-mn");
    assert_eq!(rsp.rsc, Rsc::OK);
    assert_eq!(csr(&rsp)["csi"], "/id-mn");
}

#[test]
fn tc_cse_reg_ret_007_retrieved_csr_contains_the_attribute() {
    let s = setup();
    for (i, (k, v)) in [
        ("lbl", json!(["z"])),
        ("cst", json!(3)),
        ("poa", json!(["mqtt://q:3"])),
        ("nl", json!("/n/l")),
    ]
    .into_iter()
    .enumerate()
    {
        let c = s.connect(&format!("/id-r{i}"));
        register(&c, json!({ k: v.clone() }));
        let got = retrieve(&c, &format!("/id-in/cse-in/id-r{i}"));
        assert_eq!(csr(&got)[k], v, "{k}");
    }
}

#[test]
fn tc_cse_reg_ret_010_another_cse_retrieves_the_csr() {
    let s = setup();
    let mn = s.connect("/id-mn");
    register(&mn, json!({}));
    let other = s.connect("/id-other");
    assert_eq!(retrieve(&other, "/id-in/cse-in/id-mn").rsc, Rsc::OK);
}

#[test]
fn tc_cse_reg_upd_001_update_of_cse_base_is_not_allowed() {
    let s = setup();
    let c = s.connect("/id-x");
    let mut r = c.req(Operation::Update, "/id-in/cse-in");
    r.pc = Some(json!({"m2m:cb": {"lbl": ["x"]}}));
    assert_eq!(c.send(&r, "/id-in").rsc, Rsc::OPERATION_NOT_ALLOWED);
}

#[test]
fn tc_cse_reg_upd_002_attributes_are_updated() {
    let s = setup();
    let c = s.connect("/id-mn");
    register(&c, json!({}));
    let et = m2mnode::time::Timestamp::now()
        .plus(Duration::from_secs(3600))
        .to_onem2m();
    for (k, v) in [
        ("lbl", json!(["u"])),
        ("poa", json!(["mqtt://u:1"])),
        ("nl", json!("/u/n")),
        ("et", json!(et)),
        ("rr", json!(false)),
    ] {
        let rsp = update(&c, "/id-in/cse-in/id-mn", json!({ k: v.clone() }));
        assert_eq!(rsp.rsc, Rsc::UPDATED, "{k}: {rsp:?}");
        assert_eq!(csr(&rsp)[k], v, "{k}");
    }
}

#[test]
fn tc_cse_reg_del_001_delete_of_cse_base_is_not_allowed() {
    let s = setup();
    let c = s.connect("/id-x");
    assert_eq!(
        c.send(&c.req(Operation::Delete, "/id-in/cse-in"), "/id-in")
            .rsc,
        Rsc::OPERATION_NOT_ALLOWED
    );
}

#[test]
fn tc_cse_reg_del_002_registered_cse_deletes_its_csr() {
    let s = setup();
    let c = s.connect("/id-mn");
    register(&c, json!({}));
    assert_eq!(
        c.send(&c.req(Operation::Delete, "/id-in/cse-in/id-mn"), "/id-in")
            .rsc,
        Rsc::DELETED
    );
}

// ACME tests/testRemote.py

#[test]
fn acme_create_csr_with_ae_originator_is_not_allowed() {
    let s = setup();
    let c = s.connect("Cmyself");
    assert_eq!(
        create(&c, csr_body("/id-mn", json!({}))).rsc,
        Rsc::OPERATION_NOT_ALLOWED
    );
}

#[test]
fn acme_create_csr_missing_csi_is_a_bad_request() {
    let s = setup();
    let c = s.connect("/id-mn");
    assert_eq!(
        create(&c, csr_body("/id-mn", json!({"csi": null}))).rsc,
        Rsc::BAD_REQUEST
    );
}

#[test]
fn acme_create_csr_missing_cb_is_a_bad_request() {
    let s = setup();
    let c = s.connect("/id-mn");
    assert_eq!(
        create(&c, csr_body("/id-mn", json!({"cb": null}))).rsc,
        Rsc::BAD_REQUEST
    );
}

#[test]
fn acme_create_csr_with_a_taken_rn_is_a_conflict() {
    let s = setup();
    let a = s.connect("/id-a");
    register(&a, json!({"rn": "taken"}));
    let b = s.connect("/id-b");
    assert_eq!(
        create(&b, csr_body("/id-b", json!({"rn": "taken"}))).rsc,
        Rsc::CONFLICT
    );
    // The CSEBase's own name is taken too.
    assert_eq!(
        create(&b, csr_body("/id-b", json!({"rn": "cse-in"}))).rsc,
        Rsc::CONFLICT
    );
}

#[test]
fn acme_retrieve_local_csr_has_the_expected_csi() {
    let s = setup();
    let c = s.connect("/id-mn");
    register(&c, json!({}));
    assert_eq!(csr(&retrieve(&c, "cse-in/id-mn"))["csi"], "/id-mn");
}

// The checks of docs/protocol.md §5.2, each with its own code.

#[test]
fn missing_fr_ty_or_rqi_is_a_bad_request() {
    let s = setup();
    let c = s.connect("/id-mn");
    let no_fr = br#"{"op":2,"to":"/id-in/cse-in","rqi":"nofr","rvi":"3"}"#.to_vec();
    assert_eq!(
        c.raw(
            "/id-in",
            "nofr",
            Format::Json,
            no_fr,
            Duration::from_secs(5)
        )
        .rsc,
        Rsc::BAD_REQUEST
    );
    let no_ty = br#"{"op":1,"to":"/id-in/cse-in","fr":"/id-mn","rqi":"noty","rvi":"3","pc":{"m2m:csr":{}}}"#.to_vec();
    assert_eq!(
        c.raw(
            "/id-in",
            "noty",
            Format::Json,
            no_ty,
            Duration::from_secs(5)
        )
        .rsc,
        Rsc::BAD_REQUEST
    );
    let no_rqi = br#"{"op":2,"to":"/id-in/cse-in","fr":"/id-mn","rvi":"3"}"#.to_vec();
    assert_eq!(
        c.raw("/id-in", "", Format::Json, no_rqi, Duration::from_secs(5))
            .rsc,
        Rsc::BAD_REQUEST
    );
}

#[test]
fn unsupported_release_version_is_4001() {
    let s = setup();
    let c = s.connect("/id-mn");
    for rvi in [Some("9"), Some("1"), None] {
        let mut r = c.req(Operation::Retrieve, "/id-in/cse-in");
        r.rvi = rvi.map(Into::into);
        assert_eq!(
            c.send(&r, "/id-in").rsc,
            Rsc::RELEASE_VERSION_NOT_SUPPORTED,
            "{rvi:?}"
        );
    }
    for rvi in ["2a", "3", "4", "5"] {
        let mut r = c.req(Operation::Retrieve, "/id-in/cse-in");
        r.rvi = Some(rvi.into());
        let rsp = c.send(&r, "/id-in");
        assert_eq!(rsp.rsc, Rsc::OK, "{rvi}");
        assert_eq!(rsp.rvi.as_deref(), Some(rvi), "rvi is echoed");
    }
}

#[test]
fn an_expired_request_is_4008_and_not_executed() {
    let s = setup();
    let c = s.connect("/id-mn");
    let mut r = c.req(Operation::Create, "/id-in/cse-in");
    r.ty = Some(ResourceType::REMOTE_CSE);
    r.pc = Some(csr_body("/id-mn", json!({})));
    r.rqet = Some("20200101T000000".into());
    assert_eq!(c.send(&r, "/id-in").rsc, Rsc::REQUEST_TIMEOUT);
    assert_eq!(retrieve(&c, "/id-in/cse-in/id-mn").rsc, Rsc::NOT_FOUND);
}

#[test]
fn an_asn_cse_refuses_registrations() {
    let s = setup_with("ASN", "");
    let c = s.connect("/id-mn");
    assert_eq!(
        create(&c, csr_body("/id-mn", json!({}))).rsc,
        Rsc::OPERATION_NOT_ALLOWED
    );
}

#[test]
fn originators_outside_the_allow_list() {
    let s = setup_with("IN", "allowed = [\"/id-ok*\"]\n");
    let bad = s.connect("/id-bad");
    assert_eq!(
        create(&bad, csr_body("/id-bad", json!({}))).rsc,
        Rsc::SECURITY_ASSOCIATION_REQUIRED
    );
    let ok = s.connect("/id-ok1");
    register(&ok, json!({}));
    // Someone else's CSR: 4103 for update and delete.
    let other = s.connect("/id-ok2");
    assert_eq!(
        update(&other, "/id-in/cse-in/id-ok1", json!({"lbl": ["x"]})).rsc,
        Rsc::ORIGINATOR_HAS_NO_PRIVILEGE
    );
    assert_eq!(
        other
            .send(
                &other.req(Operation::Delete, "/id-in/cse-in/id-ok1"),
                "/id-in"
            )
            .rsc,
        Rsc::ORIGINATOR_HAS_NO_PRIVILEGE
    );
}

#[test]
fn invalid_content_is_a_bad_request() {
    let s = setup();
    let c = s.connect("/id-mn");
    for (what, extra) in [
        ("missing rr", json!({"rr": null})),
        ("missing srv", json!({"srv": null})),
        ("rr not a bool", json!({"rr": "yes"})),
        ("cst out of range", json!({"cst": 7})),
        ("unknown attribute", json!({"xyz": 1})),
        ("registrar-assigned ri", json!({"ri": "mine"})),
        ("dcse not CSE-IDs", json!({"dcse": ["no-slash"]})),
        ("et in the past", json!({"et": "20200101T000000"})),
        ("empty srv", json!({"srv": []})),
        ("bad rn", json!({"rn": "a/b"})),
    ] {
        let rsp = create(&c, csr_body("/id-mn", extra));
        assert_eq!(rsp.rsc, Rsc::BAD_REQUEST, "{what}: {rsp:?}");
        assert!(rsp.debug_text().is_some(), "{what}: a reason is given");
    }
    let mut r = c.req(Operation::Create, "/id-in/cse-in");
    r.ty = Some(ResourceType::REMOTE_CSE);
    r.pc = Some(json!({"m2m:ae": {}}));
    assert_eq!(c.send(&r, "/id-in").rsc, Rsc::BAD_REQUEST);
}

#[test]
fn duplicate_cse_id_is_a_conflict_and_csi_is_forced_to_fr() {
    let s = setup();
    let c = s.connect("/id-mn");
    let rsp = register(&c, json!({"csi": "/id-liar"}));
    assert_eq!(csr(&rsp)["csi"], "/id-mn", "csi is the originator");
    assert_eq!(
        create(&c, csr_body("/id-mn", json!({"rn": "other-name"}))).rsc,
        Rsc::CONFLICT
    );
}

#[test]
fn read_only_attributes_in_an_update_are_a_bad_request() {
    let s = setup();
    let c = s.connect("/id-mn");
    register(&c, json!({}));
    for (k, v) in [
        ("csi", json!("/id-x")),
        ("cb", json!("/x/y")),
        ("cst", json!(1)),
        ("rn", json!("n")),
        ("ty", json!(16)),
    ] {
        assert_eq!(
            update(&c, "/id-in/cse-in/id-mn", json!({ k: v })).rsc,
            Rsc::BAD_REQUEST,
            "{k}"
        );
    }
    let ae = s.connect("Cae");
    assert_eq!(
        update(&ae, "/id-in/cse-in/id-mn", json!({"lbl": []})).rsc,
        Rsc::OPERATION_NOT_ALLOWED
    );
}

#[test]
fn a_duplicate_delivery_is_executed_once_and_answered_twice() {
    let s = live();
    let c = s.connect("/id-mn");
    let mut r: Request = c.req(Operation::Create, "/id-in/cse-in");
    r.ty = Some(ResourceType::REMOTE_CSE);
    r.pc = Some(csr_body("/id-mn", json!({})));
    let first = c.send(&r, "/id-in");
    let second = c.send(&r, "/id-in");
    assert_eq!(first.rsc, Rsc::CREATED);
    assert_eq!(second, first, "the same answer, not a 4105");
    let st = s.node.status_now();
    assert_eq!(count_of(&st, "handled/create"), 1, "executed once: {st}");
    assert_eq!(count_of(&st, "registrees_added"), 1, "{st}");
}

#[test]
fn the_store_survives_a_restart() {
    let broker = Mosquitto::start();
    let data = scratch("registrar-data");
    let cfg = node_config(
        "/id-in",
        "cse-in",
        "IN",
        &broker.url(),
        Some(&data),
        None,
        "60s",
    );
    let mut node = Node::start("persist", &cfg);
    node.wait_connected(Duration::from_secs(10));
    let c = Client::connect(&broker, "/id-mn");
    register(&c, json!({"lbl": ["kept"]}));
    node.restart();
    node.wait_status(Duration::from_secs(10), "the restored registree", |s| {
        registree(s, "/id-mn")["csi"] == "/id-mn"
    });
    let got = retrieve(&c, "/id-in/cse-in/id-mn");
    assert_eq!(got.rsc, Rsc::OK, "{got:?}");
    assert_eq!(csr(&got)["lbl"], json!(["kept"]));
}

#[test]
fn a_corrupt_store_is_a_clear_error_not_an_empty_store() {
    let data = scratch("corrupt-data");
    std::fs::write(
        data.join("m2mnode-store.json"),
        b"{\"version\":1,\"csrs\":{\"x\"",
    )
    .expect("write");
    let cfg = node_config(
        "/id-in",
        "cse-in",
        "IN",
        "mqtt://127.0.0.1:1",
        Some(&data),
        None,
        "60s",
    );
    let dir = scratch("corrupt");
    let path = dir.join("node.toml");
    std::fs::write(&path, cfg).expect("write");
    let out = std::process::Command::new(BIN)
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("corrupt"), "{err}");
}

#[test]
fn a_request_for_a_registree_is_forwarded_and_the_answer_relayed() {
    let s = live();
    let mn = s.connect("/id-mn");
    register(&mn, json!({"cb": "/id-mn/cse-mn", "dcse": ["/id-deep"]}));
    drop(mn);
    let _r = responder(&s.broker, "/id-mn", "cse-mn");
    let x = s.connect("/id-x");
    let mut r = x.req(Operation::Retrieve, "/id-mn/cse-mn");
    r.rqi = "fwd-1".into();
    // Sent to the registrar, which knows the way.
    let rsp = x.send(&r, "/id-in");
    assert_eq!(rsp.rsc, Rsc::OK, "{rsp:?}");
    assert_eq!(rsp.rqi, "fwd-1");
    assert_eq!(rsp.pc.expect("pc")["m2m:cb"]["csi"], "/id-mn");
    // A 4004 from the target stays a 4004.
    let rsp = x.send(&x.req(Operation::Retrieve, "/id-mn/cse-mn/none"), "/id-in");
    assert_eq!(rsp.rsc, Rsc::NOT_FOUND);
    // A descendant is reached through the registree below which it sits.
    let rsp = x.send(&x.req(Operation::Retrieve, "/id-deep/cse"), "/id-in");
    assert_eq!(
        rsp.rsc,
        Rsc::NOT_FOUND,
        "forwarded to /id-mn, which has no such resource: {rsp:?}"
    );
    // An unknown CSE: 4004 from the registrar itself.
    let rsp = x.send(&x.req(Operation::Retrieve, "/id-unknown/cse"), "/id-in");
    assert_eq!(rsp.rsc, Rsc::NOT_FOUND);
    assert_eq!(rsp.fr.as_deref(), Some("/id-in"));
}

#[test]
fn a_duplicate_of_a_forwarded_request_is_forwarded_once() {
    let s = live();
    let mn = s.connect("/id-mn");
    register(&mn, json!({"cb": "/id-mn/cse-mn"}));
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let _r = responder_counting(&s.broker, "/id-mn", "cse-mn", seen.clone());
    let x = s.connect("/id-x");
    let req = x.req(Operation::Retrieve, "/id-mn/cse-mn");
    let first = x.send(&req, "/id-in");
    let again = x.send(&req, "/id-in");
    assert_eq!(first.rsc, Rsc::OK, "{first:?}");
    assert_eq!(again, first, "the same answer again");
    assert_eq!(
        seen.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "forwarded once"
    );
}

#[test]
fn a_forward_to_a_silent_registree_ends_in_4008() {
    let s = live();
    let mn = s.connect("/id-mute");
    register(&mn, json!({}));
    let rsp = mn.send(&mn.req(Operation::Retrieve, "/id-mute/cse"), "/id-in");
    // The node's own MQTT timeout (2 s) ends the forward; the client's is 5 s.
    // Like every answer the node originates, it carries rvi, to and fr
    // (issue 20; it used to carry none of them).
    assert_eq!(rsp.rsc, Rsc::REQUEST_TIMEOUT, "{rsp:?}");
    assert_eq!(rsp.fr.as_deref(), Some("/id-in"));
    assert_eq!(rsp.to.as_deref(), Some("/id-mute"));
    assert_eq!(rsp.rvi.as_deref(), Some("3"));
}

#[test]
fn a_registree_that_stops_answering_liveness_checks_is_removed() {
    let broker = Mosquitto::start();
    let cfg = node_config("/id-in", "cse-in", "IN", &broker.url(), None, None, "1s");
    let node = Node::start("liveness", &cfg);
    node.wait_connected(Duration::from_secs(10));
    let c = Client::connect(&broker, "/id-mn");
    register(&c, json!({"cb": "/id-mn/cse-mn", "dcse": ["/id-below"]}));
    let live = responder(&broker, "/id-mn", "cse-mn");
    node.wait_probes("/id-mn", 3, Duration::from_secs(10));
    let st = node.status_now();
    assert_eq!(registree(&st, "/id-mn")["misses"], json!(0), "{st}");
    assert_eq!(
        retrieve(&c, "/id-in/cse-in/id-mn").rsc,
        Rsc::OK,
        "alive while it answers"
    );
    // /id-mn keeps answering (its responder runs on); /id-gone never does.
    let _live = live;
    let c2 = Client::connect(&broker, "/id-gone");
    register(&c2, json!({}));
    let st = node.wait_status(Duration::from_secs(10), "/id-gone removed", |s| {
        registree(s, "/id-gone").is_null() && count_of(s, "registrees_unresponsive") == 1
    });
    assert_eq!(registree(&st, "/id-mn")["csi"], "/id-mn", "{st}");
    assert_eq!(retrieve(&c, "/id-in/cse-in/id-gone").rsc, Rsc::NOT_FOUND);
}
