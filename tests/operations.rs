//! Issue "Operate it", the node side: reload on SIGHUP, check now on
//! SIGUSR1, status and registree lists over a real Mosquitto.

mod common;

use common::*;
use m2mnode::primitive::{Operation, ResourceType, Response, Rsc};
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn in_config(broker: &Mosquitto, allowed: &str, check: &str) -> String {
    format!(
        "{}allowed = {allowed}\n",
        node_config("/id-in", "cse-in", "IN", &broker.url(), None, None, check)
    )
}

fn register(c: &Client) -> Response {
    let mut r = c.req(Operation::Create, "/id-in/cse-in");
    r.ty = Some(ResourceType::REMOTE_CSE);
    r.pc = Some(json!({"m2m:csr": {
        "csi": c.own, "cb": format!("{}/cb", c.own), "rr": true, "srv": ["3"],
        "poa": ["mqtt://127.0.0.1:1883"]}}));
    c.send(&r, "/id-in")
}

#[test]
fn sighup_changes_the_allowed_registrees_and_a_bad_config_is_refused() {
    let broker = Mosquitto::start();
    let node = Node::start("reload", &in_config(&broker, r#"["/id-a"]"#, "60s"));
    node.wait_connected(Duration::from_secs(10));
    let b = Client::connect(&broker, "/id-b");
    assert_eq!(register(&b).rsc, Rsc::SECURITY_ASSOCIATION_REQUIRED);
    // A broken file is refused; the running config stays.
    node.rewrite_config("[cse]\nid = \"/id-in\"\n");
    node.signal("HUP");
    // The refusal is what the operator sees: its log line is the feature.
    node.wait_log("reload refused", Duration::from_secs(10));
    assert_eq!(register(&b).rsc, Rsc::SECURITY_ASSOCIATION_REQUIRED);
    node.rewrite_config(&in_config(&broker, r#"["/id-*"]"#, "60s"));
    node.signal("HUP");
    wait_until(Duration::from_secs(10), "the new allowed list", || {
        let rsc = register(&b).rsc;
        assert!(
            matches!(rsc, Rsc::CREATED | Rsc::SECURITY_ASSOCIATION_REQUIRED),
            "{rsc:?}"
        );
        rsc == Rsc::CREATED
    });
    // Narrowed again: the log names who no longer matches (and keeps it).
    let mark = node.mark();
    node.rewrite_config(&in_config(&broker, r#"["/id-a"]"#, "60s"));
    node.signal("HUP");
    wait_until(Duration::from_secs(10), "the reload to name /id-b", || {
        node.count_since(mark, "no longer matches 1 registree(s): /id-b") == 1
    });
}

#[test]
fn sigusr1_checks_the_registrees_now() {
    let broker = Mosquitto::start();
    let node = Node::start("check-now", &in_config(&broker, r#"["/id-*"]"#, "1h"));
    node.wait_connected(Duration::from_secs(10));
    let mn = Client::connect(&broker, "/id-mn");
    assert_eq!(register(&mn).rsc, Rsc::CREATED);
    drop(mn);
    // The registree answers its liveness probes and counts them.
    let seen = Arc::new(AtomicUsize::new(0));
    let _r = responder_counting(&broker, "/id-mn", "cb", seen.clone());
    // The node answers its status, so it is running; it has not probed.
    let s = node.status_now();
    assert_eq!(registree(&s, "/id-mn")["csi"], json!("/id-mn"), "{s}");
    assert_eq!(registree(&s, "/id-mn")["last_ok"], json!(null), "{s}");
    assert_eq!(seen.load(Ordering::SeqCst), 0, "no probe before an hour");
    node.signal("USR1");
    wait_until(Duration::from_secs(10), "a probe after SIGUSR1", || {
        seen.load(Ordering::SeqCst) >= 1
    });
    node.wait_status(Duration::from_secs(10), "the answered probe", |s| {
        !registree(s, "/id-mn")["last_ok"].is_null()
    });
}

#[test]
fn status_and_discovery_list_the_registrees_over_mqtt() {
    let broker = Mosquitto::start();
    // Status and listings are answered to the admin (issue 20).
    let node = Node::start(
        "status",
        &(in_config(&broker, r#"["/id-*"]"#, "60s") + "[security]\nadmin = \"/Cadmin\"\n"),
    );
    node.wait_connected(Duration::from_secs(10));
    for id in ["/id-a", "/id-b"] {
        assert_eq!(register(&Client::connect(&broker, id)).rsc, Rsc::CREATED);
    }
    let admin = Client::connect(&broker, "/Cadmin");
    let st = admin.send(
        &admin.req(Operation::Retrieve, "/id-in/cse-in/m2mnode-status"),
        "/id-in",
    );
    assert_eq!(st.rsc, Rsc::OK, "{st:?}");
    let st = &st.pc.expect("pc")["m2mnode:status"];
    assert_eq!(st["connected"], json!(true));
    let csis: Vec<&str> = st["registrees"]
        .as_array()
        .expect("registrees")
        .iter()
        .filter_map(|r| r["csi"].as_str())
        .collect();
    assert_eq!(csis, ["/id-a", "/id-b"]);
    let mut d = admin.req(Operation::Retrieve, "/id-in/cse-in");
    d.other.insert("fc".into(), json!({"fu": 1, "ty": 16}));
    let rsp = admin.send(&d, "/id-in");
    assert_eq!(
        rsp.pc.expect("pc")["m2m:uril"],
        json!(["cse-in/id-a", "cse-in/id-b"])
    );
    // Registrees come and go at INFO on the registrar side (the log line
    // is the feature).
    node.wait_log("registree /id-a registered", Duration::from_secs(5));
}

/// `m2mnode status` against a real node: an IN lists its registrees, an MN
/// reports its registration; exit codes make it a health check.
#[test]
fn m2mnode_status_reports_a_registered_mn_and_an_in_with_registrees() {
    let broker = Mosquitto::start();
    let inn = Node::start("status-in", &in_config(&broker, r#"["/id-*"]"#, "60s"));
    inn.wait_connected(Duration::from_secs(10));
    let mn = Node::start(
        "status-mn",
        &node_config(
            "/id-mn",
            "cse-mn",
            "MN",
            &broker.url(),
            None,
            Some(("/id-in", "cse-in")),
            "60s",
        ),
    );
    mn.wait_registered(Duration::from_secs(10));
    let status = |node: &Node| {
        let out = std::process::Command::new(BIN)
            .args(["status", "--json", "--config"])
            .arg(node.config_path())
            .output()
            .expect("status");
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        (out.status.code(), v)
    };
    let (code, v) = status(&mn);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["registrar"]["registered"], json!(true), "{v}");
    assert_eq!(v["registrar"]["id"], json!("/id-in"));
    let (code, v) = status(&inn);
    assert_eq!(code, Some(0), "{v}");
    let list: Vec<&str> = v["registrees"]
        .as_array()
        .map(|a| a.iter().filter_map(|r| r["csi"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(list, ["/id-mn"], "{v}");
    // Not answering: non-zero.
    drop(inn);
    let mut mn = mn;
    assert!(mn.terminate(Duration::from_secs(10)));
    let (code, _) = status(&mn);
    assert_ne!(code, Some(0));
}

/// The log is the feature here: what an operator sees at WARN when
/// something is broken (issue "Operate it", the "Seen" list).
fn warn_lines(node: &Node) -> Vec<String> {
    node.log()
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .map(str::to_owned)
        .collect()
}

#[test]
fn an_unreachable_broker_is_a_warning_with_the_reason() {
    let port = free_port();
    let node = Node::start(
        "no-broker",
        &node_config(
            "/id-in",
            "cse-in",
            "IN",
            &format!("mqtt://127.0.0.1:{port}"),
            None,
            None,
            "60s",
        ),
    );
    wait_until(Duration::from_secs(10), "a warning", || {
        warn_lines(&node)
            .iter()
            .any(|l| l.contains("cannot reach the MQTT broker") && l.contains("refused"))
    });
}

#[test]
fn a_refusing_registrar_is_named_with_its_status_and_a_hint() {
    let broker = Mosquitto::start();
    let inn = Node::start("typo-in", &in_config(&broker, r#"["/id-*"]"#, "60s"));
    inn.wait_connected(Duration::from_secs(10));
    let mut mn = Node::start(
        "typo-mn",
        &node_config(
            "/id-mn",
            "cse-mn",
            "MN",
            &broker.url(),
            None,
            Some(("/id-in", "cse-typo")),
            "60s",
        ),
    );
    wait_until(Duration::from_secs(15), "a refusal warning", || {
        warn_lines(&mn).iter().any(|l| {
            l.contains("the registrar refused creating the own <remoteCSE>")
                && l.contains("4004")
                && l.contains("[registrar] name")
        })
    });
    // It answered, every time.
    let s = mn.status_now();
    assert_eq!(s["counts"]["last_refusal"]["rsc"], json!(4004), "{s}");
    assert_eq!(count_of(&s, "registration_unanswered"), 0, "{s}");
    // The name corrected and reloaded, as the troubleshooting guide says:
    // it registers without a restart.
    mn.rewrite_config(&node_config(
        "/id-mn",
        "cse-mn",
        "MN",
        &broker.url(),
        None,
        Some(("/id-in", "cse-in")),
        "60s",
    ));
    mn.signal("HUP");
    mn.wait_registered(Duration::from_secs(15));
    assert!(mn.running(), "no restart");
    let x = Client::connect(&broker, "/id-x");
    let r = x.send(&x.req(Operation::Retrieve, "/id-in/cse-in/id-mn"), "/id-in");
    assert_eq!(r.rsc, Rsc::OK, "the CSR is at the registrar: {r:?}");
}

#[test]
fn deregistration_is_only_claimed_when_confirmed_and_lost_checks_are_warned() {
    let mut broker = Mosquitto::start();
    let mut inn = Node::start("dereg-in", &in_config(&broker, r#"["/id-*"]"#, "60s"));
    inn.wait_connected(Duration::from_secs(10));
    let mut mn = Node::start(
        "dereg-mn",
        &node_config(
            "/id-mn",
            "cse-mn",
            "MN",
            &broker.url(),
            None,
            Some(("/id-in", "cse-in")),
            "2s",
        ),
    );
    mn.wait_registered(Duration::from_secs(10));
    // The registrar goes away: its silence on the checks is a warning.
    assert!(inn.terminate(Duration::from_secs(10)));
    wait_until(Duration::from_secs(20), "a check warning", || {
        warn_lines(&mn)
            .iter()
            .any(|l| l.contains("did not answer the check of the own <remoteCSE>"))
    });
    let s = mn.status_now();
    assert!(count_of(&s, "checks_unanswered") >= 1, "{s}");
    // The broker goes too; SIGTERM cannot deregister, and says so.
    broker.stop();
    assert!(mn.terminate(Duration::from_secs(15)));
    assert!(
        mn.log().contains("could not deregister from /id-in"),
        "{}",
        mn.log()
    );
    // The claim of a confirmed one (asserted in tests/registration.rs) is
    // not made.
    assert!(!mn.log().contains("deregistered from /id-in"));
}
