//! Issue 14: an `m2mnode run` MN registers at a stand-in for tinyIoT (IN) on
//! the harness's real Mosquitto, passes liveness checks both ways and
//! deregisters. The stand-in answers exactly as tinyIoT does
//! (proto/fixtures/tinyiot-registration.txt, docs/tinyiot.md): every integer
//! as a whole float, `fr` echoing the originator, `csi` twice in a `m2m:csr`,
//! `dcse` inside its `m2m:cb`, QoS 0, the fixed client id `TinyIoT`, answers
//! always on `.../json`, and no answer at all to CBOR.

mod common;

use common::standin::StandIn;
use common::*;
use m2mnode::primitive::{Operation, Rsc};
use serde_json::{json, Map, Value};
use std::collections::hash_map::{Entry, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// tinyIoT prints every integer as a whole float: `2000` -> `2000.0`.
fn floaty(v: &Value) -> Value {
    match v {
        Value::Number(n) if n.is_u64() || n.is_i64() => n
            .as_f64()
            .and_then(serde_json::Number::from_f64)
            .map_or_else(|| v.clone(), Value::Number),
        Value::Array(a) => Value::Array(a.iter().map(floaty).collect()),
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), floaty(v))).collect()),
        other => other.clone(),
    }
}

/// A `m2m:csr` as tinyIoT prints it: floats, and `csi` a second time at the end.
fn csr_text(csr: &Value) -> String {
    let body = serde_json::to_string(&floaty(csr)).unwrap_or_default();
    let csi = serde_json::to_string(&csr["csi"]).unwrap_or_default();
    let open = body.strip_suffix('}').unwrap_or(&body);
    format!("{{\"m2m:csr\":{open},\"csi\":{csi}}}}}")
}

#[derive(Default)]
struct State {
    /// (op, to) of every request tinyIoT got, in order.
    requests: Vec<(u64, String)>,
    /// CBOR requests: tinyIoT answers none.
    cbor_requests: usize,
    /// The CSRs registered here, by rn.
    csrs: HashMap<String, Value>,
    /// Answers to tinyIoT's own requests, by rqi: (rsc, pc).
    answers: HashMap<String, (Value, Value)>,
}

/// The stand-in: one MQTT client, answering like tinyIoT's IN-CSE `/id-in`.
struct TinyIot {
    peer: StandIn,
    state: Arc<Mutex<State>>,
}

impl TinyIot {
    fn start(broker: &Mosquitto) -> TinyIot {
        let state = Arc::new(Mutex::new(State::default()));
        let s = state.clone();
        let peer = StandIn::start(
            broker.port,
            "TinyIoT",
            false,
            &[
                "/oneM2M/req/+/id-in/json",
                "/oneM2M/req/+/id-in/cbor",
                "/oneM2M/resp/id-in/+/json",
            ],
            move |topic, payload| on_publish(&s, topic, payload).into_iter().collect(),
        );
        TinyIot { peer, state }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn count(&self, op: u64, to: &str) -> usize {
        self.state()
            .requests
            .iter()
            .filter(|(o, t)| *o == op && t == to)
            .count()
    }

    /// tinyIoT's liveness check of a registree: RETRIEVE of its CSEBase
    /// (captured with integers, as here).
    fn check_mn(&self, rqi: &str) -> (Value, Value) {
        let req = format!(
            r#"{{"op": 2, "to": "/id-mn/cse-mn", "fr": "/id-in", "rqi": "{rqi}", "rvi": "3"}}"#
        );
        self.peer
            .publish("/oneM2M/req/id-in/id-mn/json", req.into_bytes());
        let mut got = None;
        wait_until(Duration::from_secs(10), "the MN's answer", || {
            got = self.state().answers.get(rqi).cloned();
            got.is_some()
        });
        got.unwrap_or_default()
    }
}

/// One publish to tinyIoT: the answer to publish, if any.
fn on_publish(state: &Mutex<State>, topic: &str, payload: &[u8]) -> Option<(String, Vec<u8>)> {
    let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
    let levels: Vec<&str> = topic.split('/').collect();
    // ["", "oneM2M", "req"|"resp", originator, receiver, format]
    let [_, _, kind, orig, _, format] = levels[..] else {
        return None;
    };
    if format == "cbor" {
        st.cbor_requests += 1;
        return None;
    }
    let msg: Value = serde_json::from_slice(payload).ok()?;
    if kind == "resp" {
        let rqi = msg["rqi"].as_str()?.to_owned();
        st.answers
            .insert(rqi, (msg["rsc"].clone(), msg["pc"].clone()));
        return None;
    }
    let op = msg["op"].as_u64()?;
    let to = msg["to"].as_str()?.to_owned();
    st.requests.push((op, to.clone()));
    let rel = to
        .strip_prefix("/id-in/")
        .unwrap_or(&to)
        .trim_end_matches('/');
    let path: Vec<&str> = rel.split('/').collect();
    let not_found = (4004, Some(r#"{"m2m:dbg":"URI is invalid"}"#.to_owned()));
    let (rsc, pc): (u16, Option<String>) = match (op, &path[..]) {
        (2, ["cse-in"]) => {
            let dcse: Vec<Value> = st.csrs.values().map(|c| c["csi"].clone()).collect();
            let cb = json!({"m2m:cb": {
                "ct": "20261126T065002,202", "ri": "id-in", "lt": "20261126T065002,202",
                "rn": "cse-in", "cst": 1,
                "srt": [1, 2, 3, 4, 5, 9, 16, 23, 29, 30, 10001, 10002, 10003, 10004, 10005, 28, 58],
                "acpi": ["cse-in/defaultACP"], "srv": ["3", "4"], "pi": "", "ty": 5,
                "csi": "/id-in", "rr": true,
                "poa": ["http://127.0.0.1:23080", "mqtt://127.0.0.1:28883"], "dcse": dcse,
            }});
            (2000, serde_json::to_string(&floaty(&cb)).ok())
        }
        (1, ["cse-in"]) => {
            let mut csr = msg["pc"]["m2m:csr"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            let rn = csr
                .get("rn")
                .and_then(Value::as_str)
                .or_else(|| {
                    csr.get("csi")
                        .and_then(Value::as_str)
                        .map(|c| c.trim_start_matches('/'))
                })
                .unwrap_or_default()
                .to_owned();
            match st.csrs.entry(rn.clone()) {
                Entry::Occupied(_) => (
                    4105,
                    Some(r#"{"m2m:dbg":"attribute `rn` is duplicated"}"#.to_owned()),
                ),
                Entry::Vacant(slot) => {
                    let ts = "20261126T065004,204";
                    for (k, v) in [
                        ("rn", json!(rn)),
                        ("ty", json!(16)),
                        ("ct", json!(ts)),
                        ("ri", json!(rn)),
                        ("lt", json!(ts)),
                        ("pi", json!("id-in")),
                        ("et", json!("20281125T065004,204")),
                    ] {
                        csr.insert(k.into(), v);
                    }
                    let text = csr_text(slot.insert(Value::Object(csr)));
                    (2001, Some(text))
                }
            }
        }
        (2, ["cse-in", rn]) => match st.csrs.get(*rn) {
            Some(csr) => (2000, Some(csr_text(csr))),
            None => not_found,
        },
        (3, ["cse-in", rn]) => match st.csrs.get_mut(*rn) {
            Some(Value::Object(csr)) => {
                let upd: Map<String, Value> = msg["pc"]["m2m:csr"]
                    .as_object()
                    .cloned()
                    .unwrap_or_default();
                csr.extend(upd);
                (2004, Some(csr_text(&Value::Object(csr.clone()))))
            }
            _ => not_found,
        },
        (4, ["cse-in", rn]) => match st.csrs.remove(*rn) {
            Some(_) => (2002, None),
            None => not_found,
        },
        _ => not_found,
    };
    // tinyIoT's answer: rsc as a float, `fr` echoing the originator.
    let mut text = format!(
        r#"{{"rsc":{rsc}.0,"rqi":{},"to":{},"fr":{},"rvi":"3""#,
        msg["rqi"], msg["to"], msg["fr"]
    );
    if let Some(pc) = pc {
        text += &format!(r#","pc":{pc}"#);
    }
    text += "}";
    Some((format!("/oneM2M/resp/{orig}/id-in/json"), text.into_bytes()))
}

#[test]
fn the_stand_in_answers_like_the_captured_tinyiot() {
    let csr = json!({"rn": "id-mn", "csi": "/id-mn", "cst": 2, "srv": ["3"]});
    assert_eq!(
        csr_text(&csr),
        r#"{"m2m:csr":{"rn":"id-mn","csi":"/id-mn","cst":2.0,"srv":["3"],"csi":"/id-mn"}}"#
    );
}

#[test]
fn an_mn_registers_at_tinyiot_stays_alive_and_deregisters() {
    let broker = Mosquitto::start();
    let tiny = TinyIot::start(&broker);
    let data = scratch("mn-tinyiot-data");
    let mut mn = Node::start(
        "mn-tinyiot",
        &node_config(
            "/id-mn",
            "cse-mn",
            "MN",
            &broker.url(),
            Some(&data),
            Some(("/id-in", "cse-in")),
            "1s",
        ),
    );
    mn.wait_registered(Duration::from_secs(15));
    assert_eq!(tiny.count(1, "/id-in/cse-in"), 1, "one CREATE");
    assert!(tiny.state().csrs.contains_key("id-mn"));

    // The MN's liveness checks of its CSR at tinyIoT: a few intervals pass,
    // every answer (floats, csi twice) decoded, nothing lost.
    wait_until(
        Duration::from_secs(10),
        "three checks of the own CSR",
        || tiny.count(2, "/id-in/cse-in/id-mn") >= 3,
    );
    // tinyIoT's liveness check of the MN.
    let (rsc, pc) = tiny.check_mn("tiny-check-1");
    assert_eq!(rsc, json!(2000));
    assert_eq!(pc["m2m:cb"]["csi"], "/id-mn");

    // The MN's CSR of tinyIoT was made from tinyIoT's float-laden m2m:cb,
    // with every attribute copied, written back as integers.
    let x = Client::connect(&broker, "/id-x");
    let rsp = x.send(&x.req(Operation::Retrieve, "/id-mn/cse-mn/id-in"), "/id-mn");
    assert_eq!(rsp.rsc, Rsc::OK);
    let local = &rsp.pc.as_ref().expect("pc")["m2m:csr"];
    assert_eq!(local["cst"], json!(1));
    assert_eq!(local["csi"], "/id-in");
    assert_eq!(local["cb"], "/id-in/cse-in");
    assert_eq!(local["srv"], json!(["3", "4"]));
    assert_eq!(
        local["poa"],
        json!(["http://127.0.0.1:23080", "mqtt://127.0.0.1:28883"])
    );

    // Every answer decoded (an undecodable one is dropped and counted).
    let s = mn.wait_registered(Duration::from_secs(5));
    assert_eq!(count_of(&s, "dropped"), 0, "{s}");
    assert_eq!(count_of(&s, "registered"), 1, "{s}");
    assert_eq!(count_of(&s, "registration_lost"), 0, "{s}");
    assert_eq!(count_of(&s, "deregistered"), 0, "{s}");
    assert_eq!(tiny.state().cbor_requests, 0, "the MN spoke JSON");

    // SIGTERM: the MN DELETEs its CSR at tinyIoT and takes 2002.0 for done.
    let deletes = tiny.count(4, "/id-in/cse-in/id-mn");
    assert!(mn.terminate(Duration::from_secs(5)), "{}", mn.log());
    // Taken as confirmed: the claim the operator reads.
    assert!(
        mn.log().contains("deregistered from /id-in"),
        "{}",
        mn.log()
    );
    assert_eq!(tiny.count(4, "/id-in/cse-in/id-mn"), deletes + 1);
    assert!(tiny.state().csrs.is_empty(), "the CSR is gone at tinyIoT");
}
