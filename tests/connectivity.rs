//! Issue 13, connectivity: a broker per side (`[registrar.mqtt]`), MQTT
//! over WebSocket (`ws://`, `wss://`), and the core registration and
//! forwarding tests on a second broker implementation (rumqttd).

mod common;
#[path = "common/rumqttd.rs"]
mod rumqttd;
#[path = "common/ws.rs"]
mod ws;

use common::*;
use m2mnode::primitive::{Operation, Rsc};
use serde_json::{json, Value};
use std::time::Duration;

const S10: Duration = Duration::from_secs(10);

fn get(c: &Client, to: &str, receiver: &str) -> (Rsc, Value) {
    let r = c.send(&c.req(Operation::Retrieve, to), receiver);
    (r.rsc, r.pc.unwrap_or(Value::Null))
}

fn in_node(url: &str) -> Node {
    let n = Node::start(
        "in",
        &node_config("/id-in", "cse-in", "IN", url, None, None, "1s"),
    );
    n.wait_connected(S10);
    n
}

/// An MN on `local` for its registrees, registered at /id-in over `upstream`.
fn split_mn(local: &str, upstream: &str) -> Node {
    let data = scratch("mn-data");
    let cfg = node_config(
        "/id-mn",
        "cse-mn",
        "MN",
        local,
        Some(&data),
        Some(("/id-in", "cse-in")),
        "1s",
    ) + &format!("\n[registrar.mqtt]\nurl = \"{upstream}\"\ntimeout = \"2s\"\n");
    Node::start("mn", &cfg)
}

#[test]
fn two_brokers_an_mn_between_the_in_and_an_asn_survives_each_restart() {
    let mut up = Mosquitto::start();
    let mut local = Mosquitto::start();
    let _in = in_node(&up.url());
    let mn = split_mn(&local.url(), &up.url());
    mn.wait_registered(S10);
    let asn = Node::start(
        "asn",
        &node_config(
            "/id-asn",
            "cse-asn",
            "ASN",
            &local.url(),
            None,
            Some(("/id-mn", "cse-mn")),
            "1s",
        ),
    );
    asn.wait_registered(S10);

    // The own CSR at the IN names the upstream broker; the CSEBase that
    // registrees see names the local one.
    let x = Client::connect(&up, "/id-x");
    wait_until(S10, "/id-asn in dcse of /id-mn's CSR at /id-in", || {
        let (_, pc) = get(&x, "/id-in/cse-in/id-mn", "/id-in");
        pc["m2m:csr"]["dcse"] == json!(["/id-asn"])
    });
    let (_, pc) = get(&x, "/id-in/cse-in/id-mn", "/id-in");
    assert_eq!(pc["m2m:csr"]["poa"], json!([up.url()]));
    let y = Client::connect(&local, "/id-y");
    // The status is answered only to `m2mnode status`'s originator (issue 20).
    let status = Client::connect(&local, "Cm2mnode-status");
    let (rsc, pc) = get(&y, "/id-asn/cse-asn/id-mn", "/id-asn");
    assert_eq!(rsc, Rsc::OK);
    assert_eq!(pc["m2m:csr"]["poa"], json!([local.url()]));
    let (rsc, pc) = get(&y, "/id-mn/cse-mn", "/id-mn");
    assert_eq!(rsc, Rsc::OK);
    assert_eq!(pc["m2m:cb"]["poa"], json!([local.url()]));

    // IN -> MN (upstream broker) -> ASN (local broker), and back.
    let (rsc, pc) = get(&x, "/id-asn/cse-asn", "/id-in");
    assert_eq!(rsc, Rsc::OK, "{pc}");
    assert_eq!(pc["m2m:cb"]["csi"], "/id-asn");
    // And upward: the MN forwards to the IN on the upstream broker (which
    // refuses /id-y, registered nowhere: the answer still comes back down).
    let (rsc, pc) = get(&y, "/id-in/cse-in", "/id-mn");
    assert_eq!(rsc, Rsc::ORIGINATOR_HAS_NO_PRIVILEGE, "{pc}");
    // The status shows both connections.
    let (rsc, pc) = get(&status, "/id-mn/cse-mn/m2mnode-status", "/id-mn");
    assert_eq!(rsc, Rsc::OK);
    assert_eq!(
        pc["m2mnode:status"]["links"],
        json!({"local": true, "upstream": true})
    );
    drop(x);

    // The upstream broker goes away: registrees are still served and
    // checked, and what needs the registrar fails fast.
    up.stop();
    mn.wait_status(S10, "the MN to notice the upstream broker is gone", |s| {
        s["links"] == json!({"local": true, "upstream": false})
    });
    let (rsc, _) = get(&y, "/id-asn/cse-asn", "/id-mn");
    assert_eq!(rsc, Rsc::OK, "local forwarding without the upstream broker");
    let (rsc, _) = get(&y, "/id-in/cse-in", "/id-mn");
    assert_eq!(rsc, Rsc::TARGET_NOT_REACHABLE);
    let (_, pc) = get(&status, "/id-mn/cse-mn/m2mnode-status", "/id-mn");
    assert_eq!(
        pc["m2mnode:status"]["links"],
        json!({"local": true, "upstream": false})
    );
    // Several registree check intervals (1 s) pass with answers.
    mn.wait_probes("/id-asn", 3, S10);
    let s = mn.status_now();
    assert_eq!(registree(&s, "/id-asn")["misses"], json!(0), "{s}");
    assert_eq!(count_of(&s, "probes_missed"), 0, "{s}");
    up.restart();
    mn.wait_status(S10, "the MN back on the upstream broker", |s| {
        count_of(s, "connects/upstream") >= 2 && s["links"]["upstream"] == true
    });
    let x = Client::connect(&up, "/id-x");
    wait_until(S10, "IN -> MN -> ASN again", || {
        get(&x, "/id-asn/cse-asn", "/id-in").0 == Rsc::OK
    });

    // The local broker goes away: the own registration is untouched, the
    // registrees' silence is not held against them.
    local.stop();
    let st = Client::connect(&up, "Cm2mnode-status");
    wait_until(S10, "the MN to notice the local broker is gone", || {
        st.status_of("/id-mn", "cse-mn")
            .is_some_and(|s| s["links"] == json!({"local": false, "upstream": true}))
    });
    let (rsc, _) = get(&x, "/id-mn/cse-mn", "/id-in");
    assert_eq!(
        rsc,
        Rsc::OK,
        "the MN answers upstream without its local broker"
    );
    let (rsc, _) = get(&x, "/id-asn/cse-asn", "/id-in");
    assert_eq!(rsc, Rsc::TARGET_NOT_REACHABLE);
    // Check intervals pass without the local broker (the registrar still
    // answers the own checks over the upstream one).
    wait_new_values(
        S10,
        "answered checks of the own registration",
        3,
        || st.status_of("/id-mn", "cse-mn"),
        |s| s["registrar"]["last_check"].clone(),
    );
    local.restart();
    mn.wait_status(S10, "the MN back on the local broker", |s| {
        count_of(s, "connects/local") >= 2 && s["links"]["local"] == true
    });
    wait_until(S10, "IN -> MN -> ASN after the local restart", || {
        get(&x, "/id-asn/cse-asn", "/id-in").0 == Rsc::OK
    });
    let s = mn.wait_registered(S10);
    assert_eq!(count_of(&s, "registered"), 1, "{s}");
    assert_eq!(count_of(&s, "registration_lost"), 0, "{s}");
    assert_eq!(count_of(&s, "registrees_unresponsive"), 0, "{s}");
    assert_eq!(registree(&s, "/id-asn")["csi"], "/id-asn", "{s}");
    let s = asn.wait_registered(S10);
    assert_eq!(count_of(&s, "registered"), 1, "{s}");
}

/// An MN whose only broker URL is `url` (a WebSocket one) registers at an
/// IN on the same Mosquitto over plain TCP, and answers through it.
fn registers_over(url: &str, broker: &Mosquitto, extra: &str) {
    let _in = in_node(&broker.url());
    let cfg = node_config(
        "/id-mn",
        "cse-mn",
        "MN",
        url,
        None,
        Some(("/id-in", "cse-in")),
        "1s",
    )
    .replace("[mqtt]\n", &format!("[mqtt]\n{extra}"));
    let mn = Node::start("mn-ws", &cfg);
    mn.wait_registered(S10);
    let x = Client::connect(broker, "/id-x");
    let (rsc, pc) = get(&x, "/id-in/cse-in/id-mn", "/id-in");
    assert_eq!(rsc, Rsc::OK);
    assert_eq!(pc["m2m:csr"]["poa"], json!([url]));
    // IN -> MN over the WebSocket, and the answer back.
    let (rsc, pc) = get(&x, "/id-mn/cse-mn", "/id-in");
    assert_eq!(rsc, Rsc::OK);
    assert_eq!(pc["m2m:cb"]["csi"], "/id-mn");
}

#[test]
fn ws_url() {
    let broker = Mosquitto::start();
    let proxy = ws::WsProxy::start(broker.port, None);
    registers_over(&format!("ws://127.0.0.1:{}/mqtt", proxy.port), &broker, "");
}

#[test]
fn wss_url() {
    let dir = scratch("wss");
    assert!(
        make_certificates(&dir),
        "openssl could not make certificates"
    );
    let broker = Mosquitto::start();
    let proxy = ws::WsProxy::start(
        broker.port,
        Some((&dir.join("server.crt"), &dir.join("server.key"))),
    );
    registers_over(
        &format!("wss://127.0.0.1:{}/mqtt", proxy.port),
        &broker,
        &format!("ca_file = \"{}\"\n", dir.join("ca.crt").display()),
    );
}

/// The core of tests/registration.rs on rumqttd: three levels register,
/// dcse goes up, a request is forwarded down two hops, a registree that
/// leaves is removed.
#[test]
fn core_registration_and_forwarding_on_rumqttd() {
    let broker = rumqttd::Rumqttd::start();
    let url = broker.url();
    let _in = in_node(&url);
    let mn = |id: &str, name: &str, registrar: (&str, &str)| {
        let data = scratch(&format!("{}-data", &id[1..]));
        Node::start(
            &id[1..],
            &node_config(id, name, "MN", &url, Some(&data), Some(registrar), "1s"),
        )
    };
    let mn1 = mn("/id-mn1", "cse-mn1", ("/id-in", "cse-in"));
    mn1.wait_registered(S10);
    let mut mn2 = mn("/id-mn2", "cse-mn2", ("/id-mn1", "cse-mn1"));
    mn2.wait_registered(S10);
    let x = Client::connect_url(&url, "/id-x", None, "");
    let (rsc, pc) = get(&x, "/id-in/cse-in/id-mn1", "/id-in");
    assert_eq!(rsc, Rsc::OK);
    assert_eq!(pc["m2m:csr"]["csi"], "/id-mn1");
    assert_eq!(pc["m2m:csr"]["poa"], json!([url]));
    wait_until(S10, "/id-mn2 in dcse at /id-in", || {
        let (_, pc) = get(&x, "/id-in/cse-in/id-mn1", "/id-in");
        pc["m2m:csr"]["dcse"] == json!(["/id-mn2"])
    });
    let (rsc, pc) = get(&x, "/id-mn2/cse-mn2", "/id-in");
    assert_eq!(rsc, Rsc::OK);
    assert_eq!(pc["m2m:cb"]["csi"], "/id-mn2");
    // Liveness checks run for a few intervals without a miss.
    mn1.wait_probes("/id-mn2", 3, S10);
    let s = mn1.wait_connected(S10);
    assert_eq!(count_of(&s, "probes_missed"), 0, "{s}");
    assert_eq!(count_of(&s, "registrees_unresponsive"), 0, "{s}");
    assert!(mn2.terminate(Duration::from_secs(5)));
    wait_until(S10, "/id-mn2 gone from dcse", || {
        let (_, pc) = get(&x, "/id-in/cse-in/id-mn1", "/id-in");
        pc["m2m:csr"]["dcse"] == json!([])
    });
}

/// MQTT 3.1.1 §4.6 [MQTT-4.6.0-2]: PUBACKs go out in the order their
/// publishes came in, and rumqttd closes the connection of a client that
/// breaks it. An UPDATE (answered once durable) followed at once by a
/// RETRIEVE (answered at once) makes the node finish them out of order;
/// its PUBACKs must still leave in order: the node keeps its connection.
#[test]
fn pubacks_leave_in_the_order_the_requests_came_in_on_rumqttd() {
    let broker = rumqttd::Rumqttd::start();
    let url = broker.url();
    let data = scratch("ack-order-data");
    let node = Node::start(
        "in",
        &node_config("/id-in", "cse-in", "IN", &url, Some(&data), None, "1h"),
    );
    node.wait_connected(S10);
    let y = Client::connect_url(&url, "/id-y", None, "");
    let mut create = y.req(Operation::Create, "/id-in/cse-in");
    create.ty = Some(m2mnode::primitive::ResourceType::REMOTE_CSE);
    create.pc =
        Some(json!({"m2m:csr": {"csi": "/id-y", "cb": "/id-y/cse", "rr": true, "srv": ["3"]}}));
    assert_eq!(y.send(&create, "/id-in").rsc, Rsc::CREATED);
    let topic = "/oneM2M/req/id-y/id-in/json";
    const BURSTS: usize = 20;
    for n in 0..BURSTS {
        let update = json!({"op": 3, "to": "/id-in/cse-in/id-y", "fr": "/id-y", "rqi": format!("u{n}"), "rvi": "3",
            "pc": {"m2m:csr": {"lbl": [format!("burst-{n}")]}}});
        let retrieve = json!({"op": 2, "to": "/id-in/cse-in", "fr": "/id-y", "rqi": format!("r{n}"), "rvi": "3"});
        y.publish(topic, update.to_string().into_bytes());
        y.publish(topic, retrieve.to_string().into_bytes());
    }
    // Every UPDATE was carried out: the last one's label is there.
    wait_until(S10, "the last UPDATE", || {
        let (_, pc) = get(&y, "/id-in/cse-in/id-y", "/id-in");
        pc["m2m:csr"]["lbl"] == json!([format!("burst-{}", BURSTS - 1)])
    });
    let s = node.wait_connected(S10);
    assert_eq!(
        count_of(&s, "handled/update"),
        BURSTS as u64,
        "every UPDATE handled once: {s}"
    );
    assert_eq!(
        count_of(&s, "connects/local"),
        1,
        "rumqttd closed the node's connection (a PUBACK out of order): {s}"
    );
}
