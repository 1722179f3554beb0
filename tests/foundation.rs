//! Issue "Foundation": two processes talk through a real Mosquitto.

mod common;

use common::*;
use m2mnode::primitive::{Format, Operation, Rsc};
use std::time::Duration;

fn in_node(broker: &Mosquitto) -> Node {
    let n = Node::start(
        "in",
        &node_config("/id-in", "cse-in", "IN", &broker.url(), None, None, "60s"),
    );
    n.wait_connected(Duration::from_secs(10));
    n
}

#[test]
fn retrieve_cse_base_over_mqtt_in_json_and_cbor() {
    let broker = Mosquitto::start();
    let _node = in_node(&broker);
    for format in ["json", "cbor"] {
        let (code, out, err) = cli(&[
            "--broker",
            &broker.url(),
            "--from",
            "/id-x",
            "--to",
            "/id-in/cse-in",
            "--op",
            "retrieve",
            "--format",
            format,
        ]);
        assert_eq!(code, 0, "{format}: {err}");
        let v: serde_json::Value = serde_json::from_str(&out).expect("JSON on stdout");
        assert_eq!(v["rsc"], 2000);
        let cb = &v["pc"]["m2m:cb"];
        for k in [
            "ri", "rn", "ty", "csi", "cst", "srv", "poa", "csz", "ct", "lt",
        ] {
            assert!(!cb[k].is_null(), "{format}: m2m:cb lacks {k}: {cb}");
        }
        assert_eq!(cb["csi"], "/id-in");
        assert_eq!(cb["ty"], 5);
        assert_eq!(cb["poa"][0], broker.url());
    }
}

#[test]
fn unsupported_operations_get_status_codes_not_silence() {
    let broker = Mosquitto::start();
    let _node = in_node(&broker);
    let c = Client::connect(&broker, "/id-x");
    let r = c.send(&c.req(Operation::Update, "/id-in/cse-in"), "/id-in");
    assert_eq!(r.rsc, Rsc::OPERATION_NOT_ALLOWED);
    let r = c.send(
        &c.req(Operation::Retrieve, "/id-in/cse-in/nothing"),
        "/id-in",
    );
    assert_eq!(r.rsc, Rsc::NOT_FOUND);
    let mut n = c.req(Operation::Notify, "/id-in/cse-in");
    n.pc = Some(serde_json::json!({"m2m:sgn": {}}));
    assert_eq!(c.send(&n, "/id-in").rsc, Rsc::NOT_IMPLEMENTED);
    let mut ae = c.req(Operation::Create, "/id-in/cse-in");
    ae.ty = Some(m2mnode::primitive::ResourceType::AE);
    ae.pc = Some(serde_json::json!({"m2m:ae": {"api": "Nx", "rr": true, "srv": ["3"]}}));
    assert_eq!(c.send(&ae, "/id-in").rsc, Rsc::NOT_IMPLEMENTED);
    let mut old = c.req(Operation::Retrieve, "/id-in/cse-in");
    old.rvi = Some("1".into());
    assert_eq!(
        c.send(&old, "/id-in").rsc,
        Rsc::RELEASE_VERSION_NOT_SUPPORTED
    );
}

#[test]
fn garbage_gets_4000_or_is_dropped_and_the_node_keeps_answering() {
    let broker = Mosquitto::start();
    let node = in_node(&broker);
    let c = Client::connect(&broker, "/id-x");
    // Valid JSON, not a primitive, rqi recoverable: 4000 with that rqi.
    let r = c.raw(
        "/id-in",
        "g1",
        Format::Json,
        br#"{"rqi":"g1","fr":"/id-x","op":"nine"}"#.to_vec(),
        Duration::from_secs(5),
    );
    assert_eq!(r.rsc, Rsc::BAD_REQUEST, "{r:?}");
    assert!(r.debug_text().is_some_and(|t| t.contains("op")), "{r:?}");
    // A primitive without rqi: 4000 with an empty rqi (nothing to correlate).
    let r = c.raw(
        "/id-in",
        "",
        Format::Json,
        br#"{"op":2,"to":"/id-in/cse-in","fr":"/id-x"}"#.to_vec(),
        Duration::from_secs(5),
    );
    assert_eq!(r.rsc, Rsc::BAD_REQUEST, "{r:?}");
    // Broken CBOR with a recoverable rqi is not possible; bytes that are no
    // CBOR at all are dropped with a log line.
    c.publish("/oneM2M/req/id-x/id-in/cbor", vec![0xff, 0x00, 0x13]);
    c.publish("/oneM2M/req/id-x/id-in/json", b"{not json".to_vec());
    node.wait_status(Duration::from_secs(5), "two payloads dropped", |s| {
        count_of(s, "dropped") == 2
    });
    // Unknown topics are ignored; oversize payloads do not kill anything.
    c.publish("/oneM2M/req/id-x/id-in/json/extra", b"{}".to_vec());
    // Above mqtt.max_payload (2 MiB), below the broker's limit: read and dropped.
    c.publish("/oneM2M/req/id-x/id-in/json", vec![b' '; 3 << 20]);
    node.wait_log("dropping an oversize payload", Duration::from_secs(5));
    let r = c.send(&c.req(Operation::Retrieve, "/id-in/cse-in"), "/id-in");
    assert_eq!(r.rsc, Rsc::OK, "the node still answers: {r:?}");
    // A session purge would reconnect.
    let s = node.status_now();
    assert_eq!(count_of(&s, "connects/local"), 1, "no session purge: {s}");
}

/// A message over the broker's limit (mosquitto/test.conf, as production.conf:
/// max_packet_size 4 MiB) never reaches the node, and the requests queued
/// around it while the node was away are all answered: the session is kept.
#[test]
fn an_oversize_message_costs_no_other_message() {
    use common::mqtt::{Incoming, MqttClient, Options};
    let broker = Mosquitto::start();
    let mut node = in_node(&broker);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    // A client that sees every answer to /id-x (the responses no request of
    // its own waits for come out of its receiver).
    let mut opts = Options::new(&broker.url(), "oversize-x", "/id-x");
    opts.persistent_session = true;
    let (t, mut rx) = rt
        .block_on(MqttClient::connect(opts, Duration::from_secs(10)))
        .expect("connect");
    assert!(node.terminate(Duration::from_secs(10)));
    let req = |rqi: &str| {
        format!(r#"{{"op":2,"to":"/id-in/cse-in","fr":"/id-x","rqi":"{rqi}","rvi":"3"}}"#)
            .into_bytes()
    };
    let topic = "/oneM2M/req/id-x/id-in/json".to_owned();
    rt.block_on(async {
        for i in 0..10 {
            t.publish(topic.clone(), req(&format!("before-{i}"))).await;
        }
        // On a client of its own: the broker may close its connection.
        let big = vec![b' '; 4200 * 1024];
        let raw = rumqttc::AsyncClient::new(
            rumqttc::MqttOptions::new("oversize-raw", "127.0.0.1", broker.port),
            10,
        );
        let (client, mut ev) = raw;
        let _ = client
            .publish(&topic, rumqttc::QoS::AtLeastOnce, false, big)
            .await;
        // The broker refuses it (PUBACK, or a disconnect): either is fine.
        let end = tokio::time::Instant::now() + Duration::from_secs(3);
        while let Ok(polled) = tokio::time::timeout_at(end, ev.poll()).await {
            match polled {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) | Err(_) => break,
                Ok(_) => {}
            }
        }
        for i in 0..10 {
            t.publish(topic.clone(), req(&format!("after-{i}"))).await;
        }
    });
    node.restart();
    let mut answered = std::collections::BTreeSet::new();
    rt.block_on(async {
        let end = tokio::time::Instant::now() + Duration::from_secs(30);
        while answered.len() < 20 {
            match tokio::time::timeout_at(end, rx.recv()).await {
                Ok(Some(Incoming::Response { payload, .. })) => {
                    let rsp = Format::Json.decode_response(&payload).expect("response");
                    assert_eq!(rsp.rsc, Rsc::OK, "{rsp:?}");
                    answered.insert(rsp.rqi);
                }
                Ok(Some(_)) => {}
                _ => break,
            }
        }
    });
    assert_eq!(answered.len(), 20, "answered: {answered:?}");
    // A session purge would reconnect.
    let s = node.status_now();
    assert_eq!(count_of(&s, "connects/local"), 1, "no session purge: {s}");
}

#[test]
fn node_answers_again_after_a_broker_restart() {
    let mut broker = Mosquitto::start();
    let node = in_node(&broker);
    broker.restart();
    // The node reconnects on its own (backoff ≤ 5 s) and resubscribes.
    node.wait_status(Duration::from_secs(15), "the node to reconnect", |s| {
        count_of(s, "connects/local") >= 2
    });
    let c = Client::connect(&broker, "/id-x");
    let r = c.send(&c.req(Operation::Retrieve, "/id-in/cse-in"), "/id-in");
    assert_eq!(r.rsc, Rsc::OK, "{r:?}");
}

#[test]
fn request_cli_reports_problems_clearly() {
    let port = free_port();
    let url = format!("mqtt://127.0.0.1:{port}");
    let (code, _, err) = cli(&[
        "--broker",
        &url,
        "--from",
        "/id-x",
        "--to",
        "/id-in/cse-in",
        "--op",
        "retrieve",
        "--timeout",
        "1s",
    ]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("cannot reach the MQTT broker"), "{err}");

    let broker = Mosquitto::start();
    let (code, _, err) = cli(&[
        "--broker",
        &broker.url(),
        "--from",
        "/id-x",
        "--to",
        "/id-nobody/cse",
        "--op",
        "retrieve",
        "--timeout",
        "1s",
    ]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("no response from /id-nobody"), "{err}");

    let (code, _, err) = cli(&[
        "--broker",
        &broker.url(),
        "--from",
        "/id-x",
        "--to",
        "/id-in/cse-in",
        "--op",
        "create",
        "--ty",
        "16",
        "--content",
        "{oops",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--content is not valid JSON"), "{err}");

    let (code, _, err) = cli(&[
        "--broker",
        &broker.url(),
        "--from",
        "/id-x",
        "--to",
        "cse-in",
        "--op",
        "retrieve",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--receiver"), "{err}");

    let (code, _, err) = cli(&[
        "--broker",
        "http://x",
        "--from",
        "/id-x",
        "--to",
        "/id-in/cse-in",
        "--op",
        "retrieve",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("mqtt://"), "{err}");
}

#[test]
fn request_cli_exits_non_zero_on_an_error_status() {
    let broker = Mosquitto::start();
    let _node = in_node(&broker);
    let (code, out, _) = cli(&[
        "--broker",
        &broker.url(),
        "--from",
        "/id-x",
        "--to",
        "/id-in/cse-in/nope",
        "--op",
        "retrieve",
    ]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["rsc"], 4004);
}

#[test]
fn check_config_names_the_problem() {
    let dir = scratch("check-config");
    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        node_config(
            "/id-in",
            "cse-in",
            "IN",
            "mqtt://127.0.0.1:1883",
            None,
            None,
            "60s",
        ),
    )
    .expect("write");
    let out = std::process::Command::new(BIN)
        .arg("check-config")
        .arg(&good)
        .output()
        .expect("run");
    assert!(out.status.success());
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        node_config(
            "/id-mn",
            "cse-mn",
            "MN",
            "mqtt://127.0.0.1:1883",
            None,
            None,
            "5 parsecs",
        ),
    )
    .expect("write");
    let out = std::process::Command::new(BIN)
        .arg("check-config")
        .arg(&bad)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("parsecs"), "{err}");
}

#[test]
fn demo_runs_a_registration_life_on_its_in_process_broker() {
    let out = std::process::Command::new(BIN)
        .arg("demo")
        .env_remove("RUST_LOG")
        .output()
        .expect("run demo");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("RETRIEVE /id-in/cse-in/id-mn -> 2000"),
        "{text}"
    );
    assert!(
        text.contains("RETRIEVE /id-mn/cse-mn/id-in -> 2000"),
        "{text}"
    );
    assert!(
        text.contains("RETRIEVE /id-mn/cse-mn (sent to /id-in) -> 2000"),
        "{text}"
    );
    assert!(text.contains("-> 4004"), "deregistered: {text}");
}

#[test]
fn xml_requests_get_4015_in_xml() {
    let broker = Mosquitto::start();
    let _node = in_node(&broker);
    let rt = tokio::runtime::Runtime::new().expect("rt");
    rt.block_on(async {
        let mut opts = rumqttc::MqttOptions::new("xml-test", "127.0.0.1", broker.port);
        opts.set_keep_alive(Duration::from_secs(30));
        let (client, mut events) = rumqttc::AsyncClient::new(opts, 10);
        client
            .subscribe("/oneM2M/resp/id-y/+/#", rumqttc::QoS::AtLeastOnce)
            .await
            .expect("subscribe");
        let body = r#"<m2m:rqp xmlns:m2m="http://www.onem2m.org/xml/protocols"><op>2</op><to>/id-in/cse-in</to><fr>/id-y</fr><rqi>x-1</rqi><rvi>3</rvi></m2m:rqp>"#;
        let mut sent = false;
        let answer = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match events.poll().await.expect("mqtt") {
                    rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)) if !sent => {
                        sent = true;
                        client
                            .publish("/oneM2M/req/id-y/id-in/xml", rumqttc::QoS::AtLeastOnce, false, body)
                            .await
                            .expect("publish");
                    }
                    rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) => return p,
                    _ => {}
                }
            }
        })
        .await
        .expect("an answer");
        assert_eq!(answer.topic, "/oneM2M/resp/id-y/id-in/xml");
        let text = String::from_utf8_lossy(&answer.payload);
        assert!(text.contains("<rsc>4015</rsc>") && text.contains("<rqi>x-1</rqi>"), "{text}");
    });
}

#[test]
fn a_node_started_before_its_broker_connects_when_the_broker_comes() {
    let port = free_port();
    let url = format!("mqtt://127.0.0.1:{port}");
    let mut node = Node::start(
        "early",
        &node_config("/id-in", "cse-in", "IN", &url, None, None, "60s"),
    );
    // It keeps trying rather than giving up.
    std::thread::sleep(Duration::from_secs(2));
    assert!(node.running(), "the node exited without a broker");
    let broker = Mosquitto::start_on(port);
    let s = node.wait_connected(Duration::from_secs(10));
    assert_eq!(count_of(&s, "connects/local"), 1, "{s}");
    let c = Client::connect(&broker, "/id-x");
    assert_eq!(
        c.send(&c.req(Operation::Retrieve, "/id-in/cse-in"), "/id-in")
            .rsc,
        Rsc::OK
    );
}

#[test]
fn mqtts_with_a_private_ca_and_a_client_certificate() {
    let dir = scratch("tls");
    assert!(
        make_certificates(&dir),
        "openssl could not make the test certificates"
    );
    let path = |f: &str| dir.join(f).display().to_string();
    let port = free_port();
    let _broker = Mosquitto::start_with(
        port,
        "test-tls.conf",
        vec![
            ("CAFILE".into(), path("ca.crt")),
            ("CERTFILE".into(), path("server.crt")),
            ("KEYFILE".into(), path("server.key")),
        ],
    );
    let url = format!("mqtts://127.0.0.1:{port}");
    let cfg = node_config("/id-in", "cse-in", "IN", &url, None, None, "60s").replace(
        "[mqtt]\n",
        &format!(
            "[mqtt]\nca_file = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\n",
            path("ca.crt"),
            path("client.crt"),
            path("client.key")
        ),
    );
    let node = Node::start("tls", &cfg);
    // Its status comes over the same TLS listener, the only one.
    node.wait_connected(Duration::from_secs(10));
    // A plain-TCP client cannot even talk to this listener; the node can.
    let (code, _, err) = cli(&[
        "--broker",
        &format!("mqtt://127.0.0.1:{port}"),
        "--from",
        "/id-x",
        "--to",
        "/id-in/cse-in",
        "--op",
        "retrieve",
        "--timeout",
        "2s",
    ]);
    assert_eq!(code, 3, "{err}");
}

/// A session left at the broker under the node's client id, without the
/// node's subscriptions (the CSE it replaces, a takeover that unsubscribed),
/// must not deafen it: it subscribes on every CONNACK.
#[test]
fn a_foreign_session_under_the_node_client_id_does_not_deafen_it() {
    let broker = Mosquitto::start();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut opts = rumqttc::MqttOptions::new("C::id-in", "127.0.0.1", broker.port);
        opts.set_clean_session(false);
        let (client, mut ev) = rumqttc::AsyncClient::new(opts, 10);
        let _ = client
            .subscribe("/something/else", rumqttc::QoS::AtLeastOnce)
            .await;
        let end = tokio::time::Instant::now() + Duration::from_secs(5);
        while let Ok(Ok(e)) = tokio::time::timeout_at(end, ev.poll()).await {
            if matches!(e, rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) {
                break;
            }
        }
        let _ = client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(1), ev.poll()).await;
    });
    let node = in_node(&broker);
    // Only the node's log says whether the broker kept a session.
    node.wait_log("session_present=true", Duration::from_secs(5));
    let c = Client::connect(&broker, "/id-x");
    let r = c.send(&c.req(Operation::Retrieve, "/id-in/cse-in"), "/id-in");
    assert_eq!(r.rsc, Rsc::OK, "{r:?}");
}

/// Two nodes with one CSE-ID kick each other off the broker; each says why,
/// at ERROR, instead of flapping in silence (the log is the feature here).
#[test]
fn two_nodes_with_one_cse_id_are_told_apart_in_the_log() {
    let broker = Mosquitto::start();
    let a = in_node(&broker);
    let b = Node::start(
        "in-twin",
        &node_config("/id-in", "cse-in", "IN", &broker.url(), None, None, "60s"),
    );
    wait_until(Duration::from_secs(30), "a takeover error", || {
        a.log()
            .contains("another client uses the client id C::id-in")
            || b.log()
                .contains("another client uses the client id C::id-in")
    });
}
