//! Issue 18 with ACME (acmecse 2026.5.3) as the other SP's IN-CSE, both
//! directions, over a real Mosquitto: m2mnode registers at an ACME IN of
//! another SP (`topic_ids = "sp-relative"`, ACME's liveness checks arrive
//! on the SP-ID receiver topic), and an ACME IN with a
//! `[cse.sp.registrar.*]` section registers at m2mnode (DELETE first, then
//! CREATE on every check). docs/acme.md, "Across SPs", lists ACME's faults.

mod common;

use common::acme::{Acme, AcmeConfig};
use common::*;
use m2mnode::primitive::{Operation, Rsc};
use serde_json::Value;
use std::time::Duration;

const ACME_READY: Duration = Duration::from_secs(40);
const S20: Duration = Duration::from_secs(20);

fn get(c: &Client, to: &str, receiver: &str) -> (Rsc, Value) {
    let r = c.send(&c.req(Operation::Retrieve, to), receiver);
    (r.rsc, r.pc.unwrap_or(Value::Null))
}

/// The status resource of a node (null while it does not answer).
fn status(c: &Client, id: &str, name: &str) -> Value {
    let (_, pc) = get(c, &format!("{id}/{name}/m2mnode-status"), id);
    pc["m2mnode:status"].clone()
}

fn start_acme(cfg: &AcmeConfig) -> Acme {
    let dir = scratch(&format!("acme-{}", cfg.ri()));
    let mut a = Acme::start(cfg, &dir).unwrap_or_else(|e| panic!("{e}"));
    if let Err(e) = a.wait_ready(ACME_READY) {
        panic!("{e}");
    }
    a
}

/// Panics with both logs.
fn fail(what: &str, acme: &Acme, node: &Node) -> ! {
    let tail = |p: &std::path::Path| {
        let t = std::fs::read_to_string(p).unwrap_or_default();
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    };
    panic!(
        "{what}\n==== ACME log ====\n{}\n==== node log ====\n{}",
        tail(&acme.log_path),
        tail(&node.log_path)
    )
}

fn wait(what: &str, acme: &Acme, node: &Node, mut ok: impl FnMut() -> bool) {
    let end = std::time::Instant::now() + S20;
    while !ok() {
        if std::time::Instant::now() > end {
            fail(&format!("timed out waiting for {what}"), acme, node);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn m2mnode_registers_at_an_acme_in_of_another_sp() {
    let broker = Mosquitto::start();
    let mut cfg = AcmeConfig::in_cse("/id-in-b", "cse-in-b", broker.port, free_port());
    cfg.sp_id = "//sp-b.example".into();
    cfg.check_interval_secs = 2;
    let acme = start_acme(&cfg);
    let mut a = Node::start(
        "in-a",
        &format!(
            "[cse]\nid = \"/id-in-a\"\nname = \"cse-in-a\"\ntype = \"IN\"\nsp_id = \"sp-a.example\"\n\
             [mqtt]\nurl = \"{}\"\ntimeout = \"3s\"\n\
             [sp_registrar.b]\nsp_id = \"sp-b.example\"\nid = \"/id-in-b\"\nname = \"cse-in-b\"\n\
             check_interval = \"2s\"\ntopic_ids = \"sp-relative\"\n",
            broker.url()
        ),
    );
    a.wait_log("connected to the MQTT broker", S20);
    let x = Client::connect(&broker, "Cm2mnode-status");
    wait("registered at ACME", &acme, &a, || {
        status(&x, "/id-in-a", "cse-in-a")["peer_sps"][0]["registered"] == true
    });
    let csr_at_acme = "/id-in-b/cse-in-b/sp-a.example_id-in-a";
    match acme.http_retrieve(csr_at_acme, "CAdmin") {
        Ok((200, _, body)) => {
            let v: Value = serde_json::from_str(&body).unwrap_or_default();
            assert_eq!(v["m2m:csr"]["csi"], "//sp-a.example/id-in-a", "{body}");
            assert_eq!(
                v["m2m:csr"]["cb"], "//sp-a.example/id-in-a/cse-in-a",
                "{body}"
            );
        }
        other => fail(&format!("our CSR at ACME: {other:?}"), &acme, &a),
    }
    // ACME checks our CSEBase on its SP-ID receiver topic; answered, the
    // CSR stays through several of its checks.
    wait("three liveness checks by ACME", &acme, &a, || {
        a.count_in_log("from //sp-b.example/id-in-b: 2000") >= 3
    });
    if !matches!(acme.http_retrieve(csr_at_acme, "CAdmin"), Ok((200, _, _))) {
        fail("our CSR at ACME went after its checks", &acme, &a);
    }
    // A request for ACME's SP goes across and is answered.
    let ae = Client::connect(&broker, "Cae1");
    let r = ae.send(
        &ae.req(Operation::Retrieve, "//sp-b.example/id-in-b/cse-in-b"),
        "/id-in-a",
    );
    if r.rsc != Rsc::OK {
        fail(&format!("RETRIEVE across: {r:?}"), &acme, &a);
    }
    assert_eq!(r.pc.expect("pc")["m2m:cb"]["rn"], "cse-in-b");
    assert_eq!(r.fr.as_deref(), Some("//sp-b.example/id-in-b"));
    // SIGTERM: our CSR at ACME goes.
    assert!(a.terminate(S20));
    wait("our CSR at ACME deleted", &acme, &a, || {
        matches!(acme.http_retrieve(csr_at_acme, "CAdmin"), Ok((404, _, _)))
    });
}

#[test]
fn an_acme_in_of_another_sp_registers_at_m2mnode() {
    let broker = Mosquitto::start();
    let b = Node::start(
        "in-b",
        &format!(
            "[cse]\nid = \"/id-in-b\"\nname = \"cse-in-b\"\ntype = \"IN\"\nsp_id = \"sp-b.example\"\n\
             [mqtt]\nurl = \"{}\"\ntimeout = \"3s\"\n\
             [registrees]\ncheck_interval = \"1s\"\nallowed = [\"//sp-a.example/*\"]\n",
            broker.url()
        ),
    );
    b.wait_log("connected to the MQTT broker", S20);
    let mut cfg = AcmeConfig::in_cse("/id-in-a", "cse-in-a", broker.port, free_port());
    cfg.sp_id = "//sp-a.example".into();
    cfg.check_interval_secs = 2;
    cfg.extra_ini = format!(
        "[cse.sp.registrar.b]\nspID=//sp-b.example\naddress=mqtt://127.0.0.1:{}\ncseID=/id-in-b\nresourceName=cse-in-b\nserialization=json\n",
        broker.port
    );
    let acme = start_acme(&cfg);
    let x = Client::connect(&broker, "Cm2mnode-status");
    let registered = || {
        status(&x, "/id-in-b", "cse-in-b")["registrees"]
            .as_array()
            .is_some_and(|r| r.iter().any(|c| c["csi"] == "//sp-a.example/id-in-a"))
    };
    wait("ACME's CSR at m2mnode", &acme, &b, registered);
    // ACME deletes and re-creates its CSR at every check (it never keeps a
    // local CSR for us): each answered, nothing piles up.
    wait("three re-creations", &acme, &b, || {
        b.count_in_log("registree //sp-a.example/id-in-a registered") >= 3
    });
    wait("registered again after the last", &acme, &b, registered);
    let st = status(&x, "/id-in-b", "cse-in-b");
    assert!(
        st["registrees"].as_array().is_some_and(|r| r.len() == 1),
        "{st}"
    );
    if b.count_in_log(" WARN ") > 0 {
        fail("warnings at m2mnode", &acme, &b);
    }
    // A request for ACME's SP reaches it through its registration here.
    let ae = Client::connect(&broker, "Cae2");
    let r = ae.send(
        &ae.req(Operation::Retrieve, "//sp-a.example/id-in-a/cse-in-a"),
        "/id-in-b",
    );
    if r.rsc != Rsc::OK {
        fail(&format!("RETRIEVE across: {r:?}"), &acme, &b);
    }
    assert_eq!(r.pc.expect("pc")["m2m:cb"]["rn"], "cse-in-a");
}
