//! Issue 19: an `m2mnode run` MN registers at a stand-in for Mobius (IN) on
//! the harness's real Mosquitto, keeps the registration without churn,
//! forwards an AE's CBOR request up as JSON, and deregisters, also when the
//! deregistration had to wait for the next start. The stand-in behaves as
//! Mobius 2.4.36 does on the wire (docs/mobius.md): it refuses a `<remoteCSE>`
//! with `csz` or `dcse` with 4000 "attribute is not defined", stores only
//! the attributes it knows, uses QoS 0 and a random client id, answers every
//! request twice (once on a topic without the type level) with only `rsc`,
//! `rqi` and `pc`, has no liveness check of its registrees, declares no `csz`
//! in its `m2m:cb`, and dies on binary CBOR (here: counts it and stops
//! answering anything, as a crashed Mobius would).

mod common;

use common::standin::StandIn;
use common::*;
use m2mnode::primitive::{Format, Operation, Rsc};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The `<remoteCSE>` attributes Mobius knows; anything else in a CREATE or
/// UPDATE is "not defined".
const KNOWN: &[&str] = &[
    "rn", "ty", "pi", "ri", "ct", "lt", "et", "lbl", "acpi", "at", "aa", "cr", "cst", "csi", "cb",
    "poa", "nl", "rr", "srv",
];

/// What Mobius has, kept across a restart of the stand-in (Mobius keeps it
/// in MariaDB).
#[derive(Default)]
struct State {
    /// (op, to, fr, csr attribute names) of every request, in order.
    requests: Vec<(u64, String, String, Vec<String>)>,
    /// Binary CBOR requests: the first one crashes Mobius.
    cbor_requests: usize,
    crashed: bool,
    /// The CSRs registered here, by rn.
    csrs: HashMap<String, Map<String, Value>>,
    /// CSRs actually deleted.
    deleted: usize,
    counter: u64,
}

/// The stand-in: one MQTT client answering like Mobius's IN-CSE `/Mobius2`.
struct Mobius {
    peer: StandIn,
    state: Arc<Mutex<State>>,
}

impl Mobius {
    fn start(broker: &Mosquitto, state: Arc<Mutex<State>>) -> Mobius {
        // Mobius connects with a random client id and a clean session.
        let id = format!("mobius_{:x}", free_port() as u64 * 7919);
        let s = state.clone();
        let peer = StandIn::start(
            broker.port,
            &id,
            true,
            &["/oneM2M/req/+/Mobius2/+", "/oneM2M/reg_req/+/Mobius2/+"],
            move |topic, payload| on_publish(&s, topic, payload),
        );
        Mobius { peer, state }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn count(&self, op: u64, to: &str) -> usize {
        self.state()
            .requests
            .iter()
            .filter(|(o, t, ..)| *o == op && t == to)
            .count()
    }

    /// Mobius goes away (its state stays, as in its database).
    fn stop(self) -> Arc<Mutex<State>> {
        drop(self.peer);
        self.state
    }
}

/// Mobius's answer: only rsc, rqi and pc.
fn answer(rsc: u16, rqi: &Value, pc: Option<Value>) -> Vec<u8> {
    let mut a = json!({"rsc": rsc, "rqi": rqi});
    if let Some(pc) = pc {
        a["pc"] = pc;
    }
    serde_json::to_vec(&a).unwrap_or_default()
}

fn dbg(text: &str) -> Option<Value> {
    Some(json!({ "m2m:dbg": text }))
}

/// Mobius's `m2m:cb`, as captured: no `csz`, an HTTP-only `poa`.
fn cse_base() -> Value {
    json!({"m2m:cb": {"pi": null, "ri": "5-20261129071523205451", "ty": 5,
        "ct": "20261129T071523", "rn": "Mobius", "lt": "20261129T071523", "lbl": ["Mobius"],
        "cst": 1, "csi": "/Mobius2", "srt": [1, 2, 3, 4, 5, 9, 10, 13, 14, 16, 17, 23],
        "poa": ["http://127.0.0.1:7579"], "srv": ["1", "2", "2a"]}})
}

/// One publish to Mobius: the answers to publish (each twice).
fn on_publish(state: &Mutex<State>, topic: &str, payload: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
    if st.crashed {
        return vec![];
    }
    let levels: Vec<&str> = topic.split('/').collect();
    // ["", "oneM2M", "req"|"reg_req", originator, "Mobius2", format]
    let [_, _, _, orig, _, format] = levels[..] else {
        return vec![];
    };
    let twice = |body: Vec<u8>| {
        vec![
            (format!("/oneM2M/resp/{orig}/Mobius2"), body.clone()),
            (format!("/oneM2M/resp/{orig}/Mobius2/json"), body),
        ]
    };
    if format == "cbor" {
        // Mobius's "cbor" is hex text; binary CBOR takes the process down.
        st.cbor_requests += 1;
        st.crashed = true;
        return vec![];
    }
    let Ok(msg) = serde_json::from_slice::<Value>(payload) else {
        return vec![];
    };
    let op = msg["op"].as_u64().unwrap_or_default();
    let to = msg["to"].as_str().unwrap_or_default().to_owned();
    let fr = msg["fr"].as_str().unwrap_or_default().to_owned();
    let rqi = msg["rqi"].clone();
    let body = msg["pc"]["m2m:csr"].as_object().cloned();
    let keys = body
        .as_ref()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    st.requests.push((op, to.clone(), fr.clone(), keys));
    let undefined = body
        .as_ref()
        .is_some_and(|m| m.keys().any(|k| !KNOWN.contains(&k.as_str())));
    let path: Vec<&str> = to
        .trim_start_matches("/Mobius2/")
        .trim_end_matches('/')
        .split('/')
        .collect();
    let gone = dbg("resource does not exist (get_target_url)");
    let (rsc, pc) = match (op, &path[..]) {
        (2, ["Mobius"]) => (2000, Some(cse_base())),
        (1 | 3, ["Mobius", ..]) if undefined => {
            (4000, dbg("BAD REQUEST: attribute is not defined"))
        }
        (1, ["Mobius"]) => {
            let mut csr = body.unwrap_or_default();
            let rn = csr
                .get("rn")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            if st.csrs.contains_key(&rn) {
                (4105, dbg("resource is already exist"))
            } else {
                st.counter += 1;
                let ts = format!("20261129T0716{:02}", st.counter % 60);
                for (k, v) in [
                    ("ty", json!(16)),
                    ("pi", json!("5-20261129071523205451")),
                    ("ri", json!(format!("16-2026112907160{}", st.counter))),
                    ("ct", json!(ts)),
                    ("lt", json!(ts)),
                    ("et", json!("20281129T071605")),
                ] {
                    csr.insert(k.into(), v);
                }
                st.csrs.insert(rn, csr.clone());
                (2001, Some(json!({ "m2m:csr": csr })))
            }
        }
        (2, ["Mobius", rn]) => match st.csrs.get(*rn) {
            Some(csr) => (2000, Some(json!({ "m2m:csr": csr }))),
            None => (4004, gone),
        },
        (3, ["Mobius", rn]) => match st.csrs.get_mut(*rn) {
            Some(csr) => {
                csr.extend(body.unwrap_or_default());
                (2004, Some(json!({ "m2m:csr": csr })))
            }
            None => (4004, gone),
        },
        (4, ["Mobius", rn]) => match st.csrs.get(*rn) {
            // Only the registree itself (or Mobius's superuser) may.
            Some(csr) if csr.get("csi").and_then(Value::as_str) != Some(fr.as_str()) => {
                (4103, dbg("[check_acp] ACCESS DENIED"))
            }
            Some(_) => {
                st.csrs.remove(*rn);
                st.deleted += 1;
                (2002, None)
            }
            None => (4004, gone),
        },
        _ => (4005, dbg("forwarding with mqtt is not supported")),
    };
    twice(answer(rsc, &rqi, pc))
}

const CSR: &str = "/Mobius2/Mobius/id-mn";

/// The topics of everything published on `filter`, as a bystander sees them.
struct Watcher {
    _peer: StandIn,
    topics: Arc<Mutex<Vec<String>>>,
}

impl Watcher {
    fn start(broker: &Mosquitto, filter: &str) -> Watcher {
        let topics = Arc::new(Mutex::new(Vec::new()));
        let t = topics.clone();
        let peer = StandIn::start(
            broker.port,
            &format!("watcher-{}", free_port()),
            true,
            &[filter],
            move |topic, _| {
                t.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(topic.to_owned());
                Vec::new()
            },
        );
        Watcher {
            _peer: peer,
            topics,
        }
    }

    fn topics(&self) -> Vec<String> {
        self.topics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

fn mn(broker: &Mosquitto, data: &std::path::Path) -> Node {
    Node::start(
        "mn-mobius",
        &node_config(
            "/id-mn",
            "cse-mn",
            "MN",
            &broker.url(),
            Some(data),
            Some(("/Mobius2", "Mobius")),
            "1s",
        ),
    )
}

#[test]
fn the_stand_in_answers_like_the_captured_mobius() {
    let state = Mutex::new(State::default());
    let create = br#"{"op":1,"to":"/Mobius2/Mobius","fr":"/id-mn","rqi":"id-mn-730ead-2","rvi":"3","ty":16,"pc":{"m2m:csr":{"rn":"id-mn","csi":"/id-mn","cb":"/id-mn/cse-mn","cst":2,"rr":true,"srv":["2a","3","4","5"],"poa":["mqtt://127.0.0.1:18831"],"csz":["application/json","application/cbor"],"dcse":[]}}}"#;
    let out = on_publish(&state, "/oneM2M/req/id-mn/Mobius2/json", create);
    // As captured (traffic section 1): twice, the first without the type.
    assert_eq!(
        out.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(),
        [
            "/oneM2M/resp/id-mn/Mobius2",
            "/oneM2M/resp/id-mn/Mobius2/json"
        ]
    );
    assert_eq!(
        String::from_utf8_lossy(&out[1].1),
        r#"{"rsc":4000,"rqi":"id-mn-730ead-2","pc":{"m2m:dbg":"BAD REQUEST: attribute is not defined"}}"#
    );
    let base =
        br#"{"op":2,"to":"/Mobius2/Mobius","fr":"/id-mn","rqi":"m2m-661650f19fedf","rvi":"3"}"#;
    let out = on_publish(&state, "/oneM2M/req/id-mn/Mobius2/json", base);
    let cb: Value = serde_json::from_slice(&out[0].1).expect("json");
    assert_eq!(cb["pc"]["m2m:cb"]["csi"], "/Mobius2");
    assert!(cb["pc"]["m2m:cb"].get("csz").is_none());
    assert!(cb.get("rvi").is_none() && cb.get("fr").is_none() && cb.get("to").is_none());
}

#[test]
fn an_mn_registers_at_mobius_as_it_is_stays_quiet_forwards_json_and_deregisters() {
    let broker = Mosquitto::start();
    let mobius = Mobius::start(&broker, Arc::default());
    let data = scratch("mn-mobius-data");
    let mut mn = mn(&broker, &data);
    mn.wait_registered(Duration::from_secs(15));

    // The first CREATE carried csz and dcse and was refused; the second,
    // without them, was taken. The node says what it left out.
    assert_eq!(mobius.count(1, "/Mobius2/Mobius"), 2, "one trial, no loop");
    {
        let st = mobius.state();
        let creates: Vec<&Vec<String>> = st
            .requests
            .iter()
            .filter(|(op, ..)| *op == 1)
            .map(|(.., keys)| keys)
            .collect();
        assert!(creates[0].iter().any(|k| k == "csz"));
        for k in ["cb", "csi", "rr", "srv", "poa", "cst"] {
            assert!(creates[1].iter().any(|c| c == k), "the CREATE lacks {k}");
        }
        assert!(!creates[1].iter().any(|k| k == "csz" || k == "dcse"));
        assert!(st.csrs.contains_key("id-mn"));
    }
    assert_eq!(
        mn.count_in_log("refused the optional attributes csz, dcse"),
        1,
        "{}",
        mn.log()
    );

    // Five of the MN's liveness checks of its CSR: at most one UPDATE.
    let checks = mobius.count(2, CSR);
    wait_until(
        Duration::from_secs(15),
        "five checks of the own CSR",
        || mobius.count(2, CSR) >= checks + 5,
    );
    assert!(
        mobius.count(3, CSR) <= 1,
        "UPDATEs: {}",
        mobius.count(3, CSR)
    );

    // An AE below the MN sends a CBOR RETRIEVE for Mobius's CSEBase: it
    // goes up as JSON (Mobius declares no csz) and comes back in CBOR.
    let forwarded = mobius.count(2, "/Mobius2/Mobius");
    let watcher = Watcher::start(&broker, "/oneM2M/+/+/+/+");
    let ae = Client::connect(&broker, "Cae1");
    let rsp = ae.send_as(
        &ae.req(Operation::Retrieve, "/Mobius2/Mobius"),
        "/id-mn",
        Format::Cbor,
    );
    assert_eq!(rsp.rsc, Rsc::OK, "{rsp:?}");
    assert_eq!(rsp.pc.as_ref().expect("pc")["m2m:cb"]["csi"], "/Mobius2");
    assert_eq!(mobius.count(2, "/Mobius2/Mobius"), forwarded + 1);
    assert!(mobius
        .state()
        .requests
        .iter()
        .any(|(op, to, fr, _)| *op == 2 && to == "/Mobius2/Mobius" && fr == "/id-mn/Cae1"));
    assert_eq!(mobius.state().cbor_requests, 0, "Mobius got no CBOR");
    // On the wire: the AE's request and answer in CBOR, the hop to Mobius
    // in JSON.
    let seen = [
        "/oneM2M/req/Cae1/id-mn/cbor",
        "/oneM2M/resp/Cae1/id-mn/cbor",
        "/oneM2M/req/id-mn/Mobius2/json",
    ];
    wait_until(
        Duration::from_secs(5),
        "the bystander sees the exchange",
        || {
            let topics = watcher.topics();
            seen.iter().all(|t| topics.iter().any(|x| x == t))
        },
    );
    let topics = watcher.topics();
    assert!(
        !topics
            .iter()
            .any(|x| x == "/oneM2M/req/id-mn/Mobius2/cbor" || x == "/oneM2M/resp/Cae1/id-mn/json"),
        "{topics:?}"
    );
    assert!(!mobius.state().crashed);

    let log = mn.log();
    assert!(!log.contains("undecodable"), "{log}");
    assert_eq!(count_of(&mn.status_now(), "registered"), 1, "{log}");

    // SIGTERM: the DELETE reaches Mobius and the CSR is gone.
    let deletes = mobius.count(4, CSR);
    assert!(mn.terminate(Duration::from_secs(5)), "{}", mn.log());
    assert!(
        mn.log().contains("deregistered from /Mobius2"),
        "{}",
        mn.log()
    );
    assert_eq!(mobius.count(4, CSR), deletes + 1);
    assert!(mobius.state().csrs.is_empty(), "nothing left at Mobius");
}

#[test]
fn a_deregistration_that_failed_while_mobius_was_down_is_completed_at_the_next_start() {
    let broker = Mosquitto::start();
    let mobius = Mobius::start(&broker, Arc::default());
    let data = scratch("mn-mobius-down-data");
    let mut mn = mn(&broker, &data);
    mn.wait_registered(Duration::from_secs(15));

    // Mobius goes away; the MN is stopped and its DELETE goes unanswered.
    let state = mobius.stop();
    let deletes = {
        let st = state.lock().unwrap_or_else(|e| e.into_inner());
        assert!(st.csrs.contains_key("id-mn"));
        st.deleted
    };
    assert!(mn.terminate(Duration::from_secs(10)), "{}", mn.log());
    // The line that says what happens to the CSR left behind is the
    // feature here: it must not promise a liveness check Mobius lacks.
    assert!(
        mn.log()
            .contains("/Mobius2/Mobius/id-mn is deleted at the next start"),
        "{}",
        mn.log()
    );
    assert!(!mn.log().contains("liveness check will remove"));

    // Mobius is back, still holding the CSR; the MN starts again.
    let mobius = Mobius::start(&broker, state);
    let before = mobius.state().requests.len();
    let mark = mn.mark();
    mn.restart();
    wait_until(Duration::from_secs(15), "registered again", || {
        mn.count_since(mark, "registered at /Mobius2") >= 1
    });
    let st = mobius.state();
    let after: Vec<(u64, &str)> = st.requests[before..]
        .iter()
        .map(|(op, to, ..)| (*op, to.as_str()))
        .collect();
    // First the DELETE that was owed (and it deleted), then one CREATE:
    // the store kept that Mobius refuses csz and dcse.
    assert_eq!(after[0], (4, CSR), "{after:?}");
    assert_eq!(st.deleted, deletes + 1);
    assert_eq!(
        after.iter().filter(|(op, _)| *op == 1).count(),
        1,
        "{after:?}"
    );
    assert!(st.csrs.contains_key("id-mn"));
}
