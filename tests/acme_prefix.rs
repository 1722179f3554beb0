//! Issue 13: `mqtt.topic_prefix` against ACME's `[mqtt] topicPrefix`, the
//! same prefix on both sides.

mod common;

use common::acme::{Acme, AcmeConfig};
use common::*;
use m2mnode::primitive::{Operation, Rsc};
use serde_json::{json, Value};
use std::time::Duration;

const PREFIX: &str = "site/gw1";

fn get(c: &Client, to: &str, receiver: &str) -> (Rsc, Value) {
    let r = c.send(&c.req(Operation::Retrieve, to), receiver);
    (r.rsc, r.pc.unwrap_or(Value::Null))
}

#[test]
fn m2mnode_mn_registers_at_acme_in_under_a_topic_prefix() {
    let broker = Mosquitto::start();
    let mut cfg = AcmeConfig::in_cse("/id-in", "cse-in", broker.port, free_port());
    cfg.check_interval_secs = 2;
    cfg.topic_prefix = PREFIX.into();
    let mut acme = Acme::start(&cfg, &scratch("acme-prefix")).expect("ACME starts");
    if let Err(e) = acme.wait_ready(Duration::from_secs(40)) {
        panic!("ACME not ready: {e}\n{}", acme.log_tail(40));
    }
    let node_cfg = node_config(
        "/id-mn",
        "cse-mn",
        "MN",
        &broker.url(),
        None,
        Some(("/id-in", "cse-in")),
        "1s",
    )
    .replace("[cse]\n", "[cse]\nsp_id = \"acme.example.com\"\n")
    .replace(
        "[mqtt]\n",
        &format!("[mqtt]\ntopic_prefix = \"{PREFIX}\"\n"),
    );
    let mn = Node::start("mn-prefix", &node_cfg);
    if !wait_for(Duration::from_secs(20), || {
        mn.status()
            .is_some_and(|s| s["registrar"]["registered"] == true)
    }) {
        panic!(
            "no registration under the prefix\n--- node:\n{}\n--- ACME:\n{}",
            mn.log(),
            acme.log_tail(60)
        );
    }
    // Everything is under the prefix: a client there reaches both.
    let x = Client::connect_url(&broker.url(), "/id-x", None, PREFIX);
    let (rsc, pc) = get(&x, "/id-in/cse-in/id-mn", "/id-in");
    assert_eq!(rsc, Rsc::OK, "{pc}");
    assert_eq!(pc["m2m:csr"]["csi"], json!("/id-mn"));
    // Not tested: ACME forwarding to the node. The pinned ACME publishes
    // the requests it originates (MQTTClient.sendMqttRequest) on
    // `/oneM2M/req/...` without its topicPrefix, so they never reach a
    // prefixed node (docs/acme.md, deviation 12).
    // The node's checks of its CSR at ACME keep being answered.
    mn.wait_checks(3, Duration::from_secs(15));
    let s = mn.wait_registered(Duration::from_secs(5));
    assert_eq!(count_of(&s, "checks_unanswered"), 0, "{s}");
    assert_eq!(count_of(&s, "registered"), 1, "{s}");
    let (status, hrsc, body) = acme
        .http_retrieve("/id-in/cse-in/id-mn", "CAdmin")
        .expect("HTTP");
    assert!(
        status == 200 && hrsc == Some(2000),
        "{status} {hrsc:?} {body}"
    );
    // Nothing is heard without the prefix.
    let plain = Client::connect_url(&broker.url(), "/id-z", None, "");
    let r = plain.raw(
        "/id-mn",
        "tz-1",
        m2mnode::primitive::Format::Json,
        serde_json::to_vec(
            &json!({"op": 2, "to": "/id-mn/cse-mn", "fr": "/id-z", "rqi": "tz-1", "rvi": "3"}),
        )
        .expect("json"),
        Duration::from_secs(1),
    );
    assert_eq!(r.rsc, Rsc::REQUEST_TIMEOUT);
}

fn wait_for(timeout: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < end {
        if ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}
