//! Issue "Registree": `m2mnode run` registrees at `m2mnode run` registrars,
//! through a real Mosquitto.

mod common;

use common::*;
use m2mnode::primitive::{Operation, Rsc};
use serde_json::Value;
use std::time::Duration;

const CREATED_AT_IN: &str = "request handled op=\"create\" to=/id-in/cse-in fr=/id-mn";

fn in_node(broker: &Mosquitto, data: Option<&std::path::Path>) -> Node {
    let n = Node::start(
        "in",
        &node_config("/id-in", "cse-in", "IN", &broker.url(), data, None, "1s"),
    );
    n.wait_log("connected to the MQTT broker", Duration::from_secs(10));
    n
}

fn mn_node(broker: &Mosquitto, id: &str, name: &str, registrar: (&str, &str)) -> Node {
    let data = scratch(&format!("{}-data", &id[1..]));
    Node::start(
        &id[1..],
        &node_config(
            id,
            name,
            "MN",
            &broker.url(),
            Some(&data),
            Some(registrar),
            "1s",
        ),
    )
}

fn get(c: &Client, to: &str, receiver: &str) -> (Rsc, Value) {
    let r = c.send(&c.req(Operation::Retrieve, to), receiver);
    (r.rsc, r.pc.unwrap_or(Value::Null))
}

#[test]
fn a_registree_registers_and_both_csrs_exist() {
    let broker = Mosquitto::start();
    let _in = in_node(&broker, None);
    let mn = mn_node(&broker, "/id-mn", "cse-mn", ("/id-in", "cse-in"));
    mn.wait_log("registered at /id-in", Duration::from_secs(10));
    let x = Client::connect(&broker, "/id-x");
    let (rsc, pc) = get(&x, "/id-in/cse-in/id-mn", "/id-in");
    assert_eq!(rsc, Rsc::OK);
    let csr = &pc["m2m:csr"];
    assert_eq!(csr["csi"], "/id-mn");
    assert_eq!(csr["cb"], "/id-mn/cse-mn");
    assert_eq!(csr["rr"], true);
    assert_eq!(csr["cst"], 2);
    assert_eq!(csr["poa"][0], broker.url());
    let (rsc, pc) = get(&x, "/id-mn/cse-mn/id-in", "/id-mn");
    assert_eq!(rsc, Rsc::OK);
    assert_eq!(pc["m2m:csr"]["csi"], "/id-in");
    assert_eq!(pc["m2m:csr"]["cb"], "/id-in/cse-in");
}

#[test]
fn a_registrar_reset_is_noticed_and_the_registree_registers_again() {
    let broker = Mosquitto::start();
    let mut registrar = in_node(&broker, None);
    let mn = mn_node(&broker, "/id-mn", "cse-mn", ("/id-in", "cse-in"));
    mn.wait_log("registered at /id-in", Duration::from_secs(10));
    // No data_dir: the restarted registrar knows nothing.
    let mark = registrar.mark();
    registrar.restart();
    // A warning, not "deregistered": the node did not leave, it was dropped.
    mn.wait_log(
        "no longer has this CSE's <remoteCSE>",
        Duration::from_secs(10),
    );
    wait_until(Duration::from_secs(10), "a second registration", || {
        mn.count_in_log("registered at /id-in") >= 2
    });
    let x = Client::connect(&broker, "/id-x");
    assert_eq!(get(&x, "/id-in/cse-in/id-mn", "/id-in").0, Rsc::OK);
    assert_eq!(
        registrar.count_since(mark, CREATED_AT_IN),
        1,
        "exactly one CSR created at the new registrar"
    );
}

#[test]
fn a_broker_restart_keeps_the_registration_without_a_new_create() {
    let mut broker = Mosquitto::start();
    let registrar = in_node(&broker, None);
    let mn = mn_node(&broker, "/id-mn", "cse-mn", ("/id-in", "cse-in"));
    mn.wait_log("registered at /id-in", Duration::from_secs(10));
    broker.restart();
    wait_until(Duration::from_secs(15), "both nodes to reconnect", || {
        mn.count_in_log("connected to the MQTT broker") >= 2
            && registrar.count_in_log("connected to the MQTT broker") >= 2
    });
    // A few check intervals pass with answers.
    std::thread::sleep(Duration::from_secs(3));
    let x = Client::connect(&broker, "/id-x");
    assert_eq!(get(&x, "/id-in/cse-in/id-mn", "/id-in").0, Rsc::OK);
    assert_eq!(registrar.count_in_log(CREATED_AT_IN), 1, "no second CREATE");
    assert_eq!(mn.count_in_log("registered at /id-in"), 1);
    assert_eq!(mn.count_in_log("deregistered"), 0);
}

#[test]
fn sigterm_deregisters() {
    let broker = Mosquitto::start();
    let _in = in_node(&broker, None);
    let mut mn = mn_node(&broker, "/id-mn", "cse-mn", ("/id-in", "cse-in"));
    mn.wait_log("registered at /id-in", Duration::from_secs(10));
    // mqtt.timeout is 2 s; shutdown is bounded by it plus 2 s.
    assert!(
        mn.terminate(Duration::from_secs(5)),
        "the node exits within the shutdown bound"
    );
    assert!(
        mn.log().contains("deregistered from /id-in"),
        "{}",
        mn.log()
    );
    let x = Client::connect(&broker, "/id-x");
    assert_eq!(get(&x, "/id-in/cse-in/id-mn", "/id-in").0, Rsc::NOT_FOUND);
}

#[test]
fn a_restart_with_data_adopts_the_csr() {
    let broker = Mosquitto::start();
    let registrar = in_node(&broker, None);
    let mut mn = mn_node(&broker, "/id-mn", "cse-mn", ("/id-in", "cse-in"));
    mn.wait_log("registered at /id-in", Duration::from_secs(10));
    let mark = registrar.mark();
    mn.kill();
    mn.restart();
    wait_until(
        Duration::from_secs(10),
        "the restarted node to register",
        || mn.count_in_log("registered at /id-in") >= 2,
    );
    assert_eq!(
        registrar.count_in_log(CREATED_AT_IN),
        1,
        "adopted, not deleted and recreated"
    );
    assert_eq!(registrar.count_since(mark, "op=\"delete\""), 0);
}

#[test]
fn three_levels_carry_dcse_up_and_forward_down() {
    let broker = Mosquitto::start();
    let _in = in_node(&broker, None);
    let mn1 = mn_node(&broker, "/id-mn1", "cse-mn1", ("/id-in", "cse-in"));
    mn1.wait_log("registered at /id-in", Duration::from_secs(10));
    let mut mn2 = mn_node(&broker, "/id-mn2", "cse-mn2", ("/id-mn1", "cse-mn1"));
    mn2.wait_log("registered at /id-mn1", Duration::from_secs(10));
    let x = Client::connect(&broker, "/id-x");
    wait_until(
        Duration::from_secs(10),
        "/id-mn2 in dcse of /id-mn1's CSR at /id-in",
        || {
            let (_, pc) = get(&x, "/id-in/cse-in/id-mn1", "/id-in");
            pc["m2m:csr"]["dcse"] == serde_json::json!(["/id-mn2"])
        },
    );
    // IN -> MN1 -> MN2: a RETRIEVE of MN2's CSEBase sent to the IN.
    let (rsc, pc) = get(&x, "/id-mn2/cse-mn2", "/id-in");
    assert_eq!(rsc, Rsc::OK);
    assert_eq!(pc["m2m:cb"]["csi"], "/id-mn2");
    assert!(mn2.terminate(Duration::from_secs(5)));
    wait_until(Duration::from_secs(10), "/id-mn2 gone from dcse", || {
        let (_, pc) = get(&x, "/id-in/cse-in/id-mn1", "/id-in");
        pc["m2m:csr"]["dcse"] == serde_json::json!([])
    });
}

#[test]
fn shutdown_without_a_broker_is_bounded() {
    let mut broker = Mosquitto::start();
    let _in = in_node(&broker, None);
    let mut mn = mn_node(&broker, "/id-mn", "cse-mn", ("/id-in", "cse-in"));
    mn.wait_log("registered at /id-in", Duration::from_secs(10));
    broker.stop();
    mn.wait_log("lost the MQTT broker", Duration::from_secs(10));
    // The DELETE cannot go out (5103 at once); the node still exits promptly.
    assert!(mn.terminate(Duration::from_secs(5)), "{}", mn.log());
}
