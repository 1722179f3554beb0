//! Issue "Trust and limits": the attacks of the hostile test run, against
//! Mosquitto with passwords and the topic ACL of mosquitto/acl.example, and
//! without. Every one must be refused; asserted on the wire.

mod common;

use common::*;
use m2mnode::primitive::{Format, Operation, Request, ResourceType, Response, Rsc};
use serde_json::json;
use std::process::Command;
use std::time::Duration;

const USERS: [(&str, &str); 3] = [("cse-in", "pw-in"), ("cse-a", "pw-a"), ("cse-b", "pw-b")];

/// Mosquitto with a password file and the ACL of acl.example for /id-in,
/// /id-a and /id-b.
fn secured_broker() -> Mosquitto {
    let dir = scratch("acl");
    let passwd = dir.join("passwd");
    std::fs::write(&passwd, "").expect("passwd");
    for (u, p) in USERS {
        let ok = Command::new("mosquitto_passwd")
            .arg("-b")
            .arg(&passwd)
            .args([u, p])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "mosquitto_passwd (from the mosquitto package) failed");
    }
    let mut acl = String::new();
    for id in ["id-in", "id-a", "id-b"] {
        let user = id.replace("id-", "cse-");
        acl += &format!(
            "user {user}\ntopic write /oneM2M/req/{id}/#\ntopic read  /oneM2M/req/+/{id}/#\ntopic write /oneM2M/resp/+/{id}/#\ntopic read  /oneM2M/resp/{id}/#\n\n"
        );
    }
    let acl_path = dir.join("acl");
    std::fs::write(&acl_path, acl).expect("acl");
    Mosquitto::start_with(
        free_port(),
        "test-acl.conf",
        vec![
            ("PASSWD".into(), passwd.display().to_string()),
            ("ACL".into(), acl_path.display().to_string()),
        ],
    )
}

fn in_node(broker: &Mosquitto, login: bool) -> Node {
    let mut cfg = node_config("/id-in", "cse-in", "IN", &broker.url(), None, None, "60s");
    if login {
        cfg = cfg.replace(
            "[mqtt]\n",
            "[mqtt]\nusername = \"cse-in\"\npassword = \"pw-in\"\n",
        );
    }
    let n = Node::start("secured-in", &cfg);
    if login {
        // The ACL keeps `m2mnode status` (an anonymous originator) out, and
        // the node answers its status to nobody else: the CSEBase answered
        // to a registree says it is connected and subscribed.
        let a = Client::connect_as(broker, "/id-a", Some(("cse-a", "pw-a")));
        wait_until(Duration::from_secs(20), "the node to answer", || {
            a.send(&a.req(Operation::Retrieve, "/id-in/cse-in"), "/id-in")
                .rsc
                == Rsc::OK
        });
    } else {
        n.wait_connected(Duration::from_secs(10));
    }
    n
}

fn csr_body(csi: &str) -> serde_json::Value {
    json!({"m2m:csr": {"csi": csi, "cb": format!("{csi}/cb"), "rr": true, "srv": ["3"],
        "poa": ["mqtt://127.0.0.1:1883"]}})
}

fn create(c: &Client, fr: &str) -> Response {
    let mut r = c.req(Operation::Create, "/id-in/cse-in");
    r.fr = Some(fr.into());
    r.ty = Some(ResourceType::REMOTE_CSE);
    r.pc = Some(csr_body(fr));
    c.send(&r, "/id-in")
}

/// The attacks, by a client that is /id-a on the broker, on /id-b's CSR.
fn attacks(a: &Client, b: &Client) {
    assert_eq!(create(b, "/id-b").rsc, Rsc::CREATED);
    // 1. UPDATE and DELETE of /id-b's CSR with fr /id-b on /id-a's topic.
    let mut upd = a.req(Operation::Update, "/id-in/cse-in/id-b");
    upd.fr = Some("/id-b".into());
    upd.pc = Some(json!({"m2m:csr": {"poa": ["mqtt://evil:1"]}}));
    assert_eq!(a.send(&upd, "/id-in").rsc, Rsc::ORIGINATOR_HAS_NO_PRIVILEGE);
    let mut del = a.req(Operation::Delete, "/id-in/cse-in/id-b");
    del.fr = Some("/id-b".into());
    assert_eq!(a.send(&del, "/id-in").rsc, Rsc::ORIGINATOR_HAS_NO_PRIVILEGE);
    // 2. A CREATE in the name of another CSE.
    assert_eq!(
        create(a, "/id-victim").rsc,
        Rsc::ORIGINATOR_HAS_NO_PRIVILEGE
    );
    // 3. The answer cache: /id-a claims /id-b's next rqi.
    let mut grab = a.req(Operation::Retrieve, "/id-in/cse-in");
    grab.fr = Some("/id-b".into());
    grab.rqi = "b-upd-1".into();
    assert_eq!(
        a.send(&grab, "/id-in").rsc,
        Rsc::ORIGINATOR_HAS_NO_PRIVILEGE
    );
    grab.fr = Some("/id-a".into());
    assert_eq!(a.send(&grab, "/id-in").rsc, Rsc::OK);
    let mut mine = b.req(Operation::Update, "/id-in/cse-in/id-b");
    mine.rqi = "b-upd-1".into();
    mine.pc = Some(json!({"m2m:csr": {"lbl": ["mine"]}}));
    assert_eq!(
        b.send(&mine, "/id-in").rsc,
        Rsc::UPDATED,
        "executed, not replayed"
    );
    // /id-b's CSR is as /id-b left it.
    let got = b.send(&b.req(Operation::Retrieve, "/id-in/cse-in/id-b"), "/id-in");
    assert_eq!(got.rsc, Rsc::OK);
    let csr = &got.pc.expect("pc")["m2m:csr"];
    assert_eq!(csr["poa"], json!(["mqtt://127.0.0.1:1883"]));
    assert_eq!(csr["lbl"], json!(["mine"]));
}

#[test]
fn spoofing_is_refused_without_an_acl() {
    let broker = Mosquitto::start();
    let _node = in_node(&broker, false);
    let a = Client::connect(&broker, "/id-a");
    let b = Client::connect(&broker, "/id-b");
    attacks(&a, &b);
}

#[test]
fn spoofing_is_refused_with_passwords_and_the_acl() {
    let broker = secured_broker();
    let _node = in_node(&broker, true);
    let a = Client::connect_as(&broker, "/id-a", Some(("cse-a", "pw-a")));
    let b = Client::connect_as(&broker, "/id-b", Some(("cse-b", "pw-b")));
    attacks(&a, &b);
    // The ACL stops the rest: /id-a publishing on /id-b's topic never
    // reaches the node (no answer), and the CSR stays.
    let mut del = Request::new(Operation::Delete, "/id-in/cse-in/id-b", "/id-b", "spoof-1");
    del.rvi = Some("3".into());
    let payload = Format::Json.encode(&del).expect("json");
    a.publish("/oneM2M/req/id-b/id-in/json", payload);
    // A marker: the broker hands one client's publishes on in order and the
    // node handles them in order, so once /id-a's next request is answered
    // the spoofed DELETE would have been handled too.
    let marker = a.send(&a.req(Operation::Retrieve, "/id-in/cse-in"), "/id-in");
    assert_eq!(marker.rsc, Rsc::OK, "{marker:?}");
    let got = b.send(&b.req(Operation::Retrieve, "/id-in/cse-in/id-b"), "/id-in");
    assert_eq!(got.rsc, Rsc::OK, "the ACL kept the spoofed DELETE away");
}

/// Large but legal payloads: fat CSRs, many RETRIEVEs of them, forwards of
/// big requests to a registree that never answers. Every request gets an
/// answer (possibly a refusal) and the node stays under 200 MB.
#[test]
fn memory_stays_bounded_under_large_legal_payloads() {
    use common::mqtt::{Incoming, MqttClient, Options};
    let broker = Mosquitto::start();
    let data = scratch("fat-data");
    let node = Node::start(
        "fat",
        &node_config(
            "/id-in",
            "cse-in",
            "IN",
            &broker.url(),
            Some(&data),
            None,
            "60s",
        ),
    );
    node.wait_connected(Duration::from_secs(10));
    // 40 CSRs near the payload limit: 9,000 descendants each.
    for i in 0..40 {
        let me = format!("/id-fat{i}");
        let c = Client::connect(&broker, &me);
        let mut body = csr_body(&me);
        let dcse: Vec<String> = (0..9_000).map(|j| format!("/id-d{i}-{j}")).collect();
        body["m2m:csr"]["dcse"] = json!(dcse);
        body["m2m:csr"]["lbl"] = json!(vec!["x".repeat(500); 64]);
        let mut r = c.req(Operation::Create, "/id-in/cse-in");
        r.ty = Some(ResourceType::REMOTE_CSE);
        r.pc = Some(body);
        let rsp = c.send(&r, "/id-in");
        assert_eq!(rsp.rsc, Rsc::CREATED, "fat CSR {i}: {:?}", rsp.debug_text());
    }
    // 300 RETRIEVEs of a fat CSR.
    let x = Client::connect(&broker, "/id-x");
    for _ in 0..300 {
        let rsp = x.send(
            &x.req(Operation::Retrieve, "/id-in/cse-in/id-fat0"),
            "/id-in",
        );
        assert_eq!(rsp.rsc, Rsc::OK);
    }
    // 100 forwards of ~250 KB requests to a registree that never answers,
    // all at once; every one is answered (4008 or 5103).
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    // Collects every answer to /id-y (no request of its own waits for them).
    let (t, mut rx) = rt
        .block_on(MqttClient::connect(
            Options::new(&broker.url(), "fat-collector", "/id-y"),
            Duration::from_secs(10),
        ))
        .expect("connect");
    let big = "y".repeat(250 * 1024);
    let mut answered = 0;
    rt.block_on(async {
        for i in 0..100 {
            let mut r = Request::new(Operation::Update, "/id-fat1/cb", "/id-y", format!("f{i}"));
            r.rvi = Some("3".into());
            r.pc = Some(json!({"m2m:cb": {"lbl": [big.clone()]}}));
            let payload = Format::Json.encode(&r).expect("json");
            t.publish("/oneM2M/req/id-y/id-in/json", payload).await;
        }
        let end = tokio::time::Instant::now() + Duration::from_secs(60);
        while answered < 100 {
            match tokio::time::timeout_at(end, rx.recv()).await {
                Ok(Some(Incoming::Response { payload, .. })) => {
                    let rsp = Format::Json.decode_response(&payload).expect("answer");
                    assert!(
                        matches!(rsp.rsc, Rsc::REQUEST_TIMEOUT | Rsc::TARGET_NOT_REACHABLE),
                        "{rsp:?}"
                    );
                    answered += 1;
                }
                Ok(Some(_)) => {}
                _ => break,
            }
        }
    });
    assert_eq!(answered, 100, "every forward is answered");
    let rss = node.rss().expect("rss");
    assert!(rss < 200 << 20, "node RSS {} MB", rss >> 20);
    eprintln!("node RSS after the memory attacks: {} MB", rss >> 20);
}
