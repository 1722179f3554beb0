//! Issue "Registree": `m2mnode run` registrees at `m2mnode run` registrars,
//! through a real Mosquitto.

mod common;

use common::*;
use m2mnode::primitive::{Operation, Rsc};
use serde_json::Value;
use std::time::Duration;

fn in_node(broker: &Mosquitto, data: Option<&std::path::Path>) -> Node {
    let n = Node::start(
        "in",
        &node_config("/id-in", "cse-in", "IN", &broker.url(), data, None, "1s"),
    );
    n.wait_connected(Duration::from_secs(10));
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
    mn.wait_registered(Duration::from_secs(10));
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
    mn.wait_registered(Duration::from_secs(10));
    // No data_dir: the restarted registrar knows nothing.
    registrar.restart();
    // Lost, then registered again: the node did not leave, it was dropped.
    let s = mn.wait_status(Duration::from_secs(20), "a second registration", |s| {
        count_of(s, "registration_lost") >= 1
            && count_of(s, "registered") >= 2
            && s["registrar"]["registered"] == true
    });
    assert_eq!(count_of(&s, "deregistered"), 0, "{s}");
    let x = Client::connect(&broker, "/id-x");
    assert_eq!(get(&x, "/id-in/cse-in/id-mn", "/id-in").0, Rsc::OK);
    // Counts of the new registrar process.
    let s = registrar.wait_connected(Duration::from_secs(10));
    assert_eq!(
        count_of(&s, "handled/create"),
        1,
        "exactly one CREATE at the new registrar: {s}"
    );
    assert_eq!(count_of(&s, "registrees_added"), 1, "{s}");
}

#[test]
fn a_broker_restart_keeps_the_registration_without_a_new_create() {
    let mut broker = Mosquitto::start();
    let registrar = in_node(&broker, None);
    let mn = mn_node(&broker, "/id-mn", "cse-mn", ("/id-in", "cse-in"));
    mn.wait_registered(Duration::from_secs(10));
    broker.restart();
    let reconnected = |s: &serde_json::Value| count_of(s, "connects/local") >= 2;
    mn.wait_status(Duration::from_secs(15), "mn to reconnect", reconnected);
    registrar.wait_status(Duration::from_secs(15), "in to reconnect", reconnected);
    // A few check intervals pass with answers.
    mn.wait_checks(3, Duration::from_secs(10));
    let x = Client::connect(&broker, "/id-x");
    assert_eq!(get(&x, "/id-in/cse-in/id-mn", "/id-in").0, Rsc::OK);
    assert_eq!(registrar.count("handled/create"), 1, "no second CREATE");
    let s = mn.wait_registered(Duration::from_secs(5));
    assert_eq!(count_of(&s, "registered"), 1, "{s}");
    assert_eq!(count_of(&s, "registration_lost"), 0, "{s}");
    assert_eq!(count_of(&s, "deregistered"), 0, "{s}");
}

#[test]
fn sigterm_deregisters() {
    let broker = Mosquitto::start();
    let inn = in_node(&broker, None);
    let mut mn = mn_node(&broker, "/id-mn", "cse-mn", ("/id-in", "cse-in"));
    mn.wait_registered(Duration::from_secs(10));
    // mqtt.timeout is 2 s; shutdown is bounded by it plus 2 s.
    assert!(
        mn.terminate(Duration::from_secs(5)),
        "the node exits within the shutdown bound"
    );
    let x = Client::connect(&broker, "/id-x");
    assert_eq!(get(&x, "/id-in/cse-in/id-mn", "/id-in").0, Rsc::NOT_FOUND);
    // The claim an operator reads (tests/operations.rs checks that it is
    // not made when the registrar could not confirm).
    assert!(
        mn.log().contains("deregistered from /id-in"),
        "{}",
        mn.log()
    );
    // Deleted by its owner, not removed for failed checks.
    let s = inn.wait_connected(Duration::from_secs(5));
    assert_eq!(count_of(&s, "registrees_deleted"), 1, "{s}");
    assert_eq!(count_of(&s, "registrees_unresponsive"), 0, "{s}");
}

#[test]
fn a_restart_with_data_adopts_the_csr() {
    let broker = Mosquitto::start();
    let registrar = in_node(&broker, None);
    let mut mn = mn_node(&broker, "/id-mn", "cse-mn", ("/id-in", "cse-in"));
    mn.wait_registered(Duration::from_secs(10));
    let deletes = registrar.count("handled/delete");
    mn.kill();
    mn.restart();
    // A new process: registered again from its own start.
    mn.wait_registered(Duration::from_secs(10));
    let s = registrar.wait_connected(Duration::from_secs(5));
    assert_eq!(
        count_of(&s, "handled/create"),
        1,
        "adopted, not deleted and recreated: {s}"
    );
    assert_eq!(count_of(&s, "handled/delete"), deletes, "{s}");
}

#[test]
fn three_levels_carry_dcse_up_and_forward_down() {
    let broker = Mosquitto::start();
    let _in = in_node(&broker, None);
    let mn1 = mn_node(&broker, "/id-mn1", "cse-mn1", ("/id-in", "cse-in"));
    mn1.wait_registered(Duration::from_secs(10));
    let mut mn2 = mn_node(&broker, "/id-mn2", "cse-mn2", ("/id-mn1", "cse-mn1"));
    mn2.wait_registered(Duration::from_secs(10));
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
    mn.wait_registered(Duration::from_secs(10));
    broker.stop();
    // With the broker gone nothing but the log tells that the node noticed.
    mn.wait_log("lost the MQTT broker", Duration::from_secs(10));
    // The DELETE cannot go out (5103 at once); the node still exits promptly.
    assert!(mn.terminate(Duration::from_secs(5)), "{}", mn.log());
}
