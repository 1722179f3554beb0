//! Issue 18, inter-SP registrars (Mcc'): two m2mnode IN-CSEs of two SPs,
//! the first registered at the second through `[sp_registrar.*]`, an MN
//! below the first reaching the second's CSEBase through it, and the CSR
//! at the peer gone after SIGTERM. On the real Mosquitto.

mod common;

use common::*;
use m2mnode::primitive::{Operation, Rsc};
use serde_json::Value;
use std::time::Duration;

const S10: Duration = Duration::from_secs(10);

fn get(c: &Client, to: &str, receiver: &str) -> (Rsc, Value) {
    let r = c.send(&c.req(Operation::Retrieve, to), receiver);
    (r.rsc, r.pc.unwrap_or(Value::Null))
}

/// The status resource of an IN, read over the broker.
fn status(c: &Client, id: &str, name: &str) -> Value {
    let (rsc, pc) = get(c, &format!("{id}/{name}/m2mnode-status"), id);
    assert_eq!(rsc, Rsc::OK, "{pc}");
    pc["m2mnode:status"].clone()
}

fn in_b(url: &str) -> Node {
    let cfg = format!(
        "[cse]\nid = \"/id-in-b\"\nname = \"cse-in-b\"\ntype = \"IN\"\nsp_id = \"sp-b.example\"\n\
         [mqtt]\nurl = \"{url}\"\ntimeout = \"2s\"\n\
         [registrees]\ncheck_interval = \"1s\"\nallowed = [\"/id-*\", \"//sp-a.example/*\"]\n"
    );
    let n = Node::start("in-b", &cfg);
    n.wait_log("connected to the MQTT broker", S10);
    n
}

fn in_a(url: &str, peer_url: Option<&str>) -> Node {
    let mut cfg = format!(
        "[cse]\nid = \"/id-in-a\"\nname = \"cse-in-a\"\ntype = \"IN\"\nsp_id = \"sp-a.example\"\n\
         [mqtt]\nurl = \"{url}\"\ntimeout = \"2s\"\n\
         [registrees]\ncheck_interval = \"1s\"\n\
         [sp_registrar.b]\nsp_id = \"sp-b.example\"\nid = \"/id-in-b\"\nname = \"cse-in-b\"\ncheck_interval = \"1s\"\n"
    );
    if let Some(p) = peer_url {
        cfg += &format!("[sp_registrar.b.mqtt]\nurl = \"{p}\"\ntimeout = \"2s\"\n");
    }
    Node::start("in-a", &cfg)
}

fn mn(url: &str) -> Node {
    Node::start(
        "mn",
        &node_config(
            "/id-mn",
            "cse-mn",
            "MN",
            url,
            None,
            Some(("/id-in-a", "cse-in-a")),
            "1s",
        ),
    )
}

/// A registered at B (B's registrees, A's peer status), the MN at A.
fn wait_registered(b_side: &Client, a_side: &Client) {
    wait_until(S10, "A's CSR at B", || {
        status(b_side, "/id-in-b", "cse-in-b")["registrees"]
            .as_array()
            .is_some_and(|r| r.iter().any(|x| x["csi"] == "//sp-a.example/id-in-a"))
    });
    wait_until(S10, "A registered at B, as A sees it", || {
        status(a_side, "/id-in-a", "cse-in-a")["peer_sps"][0]["registered"] == true
    });
    wait_until(S10, "the MN at A", || {
        status(a_side, "/id-in-a", "cse-in-a")["registrees"]
            .as_array()
            .is_some_and(|r| r.iter().any(|x| x["csi"] == "/id-mn"))
    });
}

fn across(url_a: &str, url_b: &str, peer_url: Option<&str>) {
    let mut b = in_b(url_b);
    let mut a = in_a(url_a, peer_url);
    let _mn = mn(url_a);
    let b_side = Client::connect_url(url_b, "Cm2mnode-status", None, "");
    let a_side = Client::connect_url(url_a, "Cm2mnode-status", None, "");
    wait_registered(&b_side, &a_side);
    // A's local <remoteCSE> for B, with B's absolute CSE-ID.
    let (rsc, csr) = get(
        &a_side,
        "/id-in-a/cse-in-a/sp-b.example_id-in-b",
        "/id-in-a",
    );
    assert_eq!(rsc, Rsc::OK, "{csr}");
    assert_eq!(csr["m2m:csr"]["csi"], "//sp-b.example/id-in-b");
    // An AE of the MN reaches B's CSEBase through the MN and A.
    let ae = Client::connect_url(url_a, "Cae1", None, "");
    let r = ae.send(
        &ae.req(Operation::Retrieve, "//sp-b.example/id-in-b/cse-in-b"),
        "/id-mn",
    );
    assert_eq!(r.rsc, Rsc::OK, "{r:?}");
    let pc = r.pc.expect("pc");
    assert_eq!(pc["m2m:cb"]["rn"], "cse-in-b", "{pc}");
    // `to` as the MN sent it up (SP-relative), not as it left the SP.
    assert_eq!(r.to.as_deref(), Some("/id-mn/Cae1"));
    assert_eq!(r.fr.as_deref(), Some("//sp-b.example/id-in-b"));
    // An AE on B's side reaches the MN's CSEBase through both INs.
    let ae_b = Client::connect_url(url_b, "Cae2", None, "");
    let r = ae_b.send(
        &ae_b.req(Operation::Retrieve, "//sp-a.example/id-mn/cse-mn"),
        "/id-in-b",
    );
    assert_eq!(r.rsc, Rsc::OK, "{r:?}");
    assert_eq!(r.pc.expect("pc")["m2m:cb"]["csi"], "/id-mn");
    // B's liveness checks of A are answered: A stays registered there.
    wait_until(S10, "a liveness check of A answered", || {
        status(&b_side, "/id-in-b", "cse-in-b")["registrees"]
            .as_array()
            .is_some_and(|r| {
                r.iter().any(|x| {
                    x["csi"] == "//sp-a.example/id-in-a"
                        && x["misses"] == 0
                        && x["last_ok"].is_string()
                })
            })
    });
    // SIGTERM: A's CSR at B goes.
    assert!(a.terminate(S10), "A exits in time");
    wait_until(S10, "A's CSR at B deleted", || {
        status(&b_side, "/id-in-b", "cse-in-b")["registrees"]
            .as_array()
            .is_some_and(|r| r.is_empty())
    });
    assert!(b.terminate(S10));
}

#[test]
fn two_sps_on_one_broker() {
    let broker = Mosquitto::start();
    across(&broker.url(), &broker.url(), None);
}

#[test]
fn two_sps_each_on_its_own_broker() {
    let broker_a = Mosquitto::start();
    let broker_b = Mosquitto::start();
    across(&broker_a.url(), &broker_b.url(), Some(&broker_b.url()));
}

#[test]
fn spoofing_a_peer_sp_on_the_local_broker_is_refused() {
    let broker = Mosquitto::start();
    let _b = in_b(&broker.url());
    let a = in_a(&broker.url(), None);
    a.wait_log("connected to the MQTT broker", S10);
    // A CSE of A's SP claims to be B's IN: refused.
    let c = Client::connect(&broker, "/id-mn");
    let mut r = c.req(Operation::Retrieve, "/id-in-a/cse-in-a");
    r.fr = Some("//sp-b.example/id-in-b".into());
    assert_eq!(c.send(&r, "/id-in-a").rsc, Rsc::ORIGINATOR_HAS_NO_PRIVILEGE);
    // B's hop speaking as a CSE of A's SP: refused.
    let b = Client::connect(&broker, "//sp-b.example/id-in-b");
    let mut r = b.req(Operation::Retrieve, "/id-in-a/cse-in-a");
    r.fr = Some("/id-mn".into());
    assert_eq!(
        b.send(&r, "//sp-a.example/id-in-a").rsc,
        Rsc::ORIGINATOR_HAS_NO_PRIVILEGE
    );
    r.fr = Some("//sp-b.example/id-in-b".into());
    r.rqi = b.rqi();
    assert_eq!(b.send(&r, "//sp-a.example/id-in-a").rsc, Rsc::OK);
}

#[test]
fn the_sp_is_handed_down_the_tree() {
    let broker = Mosquitto::start();
    let url = broker.url();
    let inn = Node::start(
        "in-sp",
        &format!(
            "[cse]\nid = \"/id-in\"\nname = \"cse-in\"\ntype = \"IN\"\nsp_id = \"sp-a.example\"\n\
             [mqtt]\nurl = \"{url}\"\ntimeout = \"2s\"\n[registrees]\ncheck_interval = \"1s\"\n"
        ),
    );
    inn.wait_log("connected to the MQTT broker", S10);
    // An ASN registered at the MN before the MN knows its SP, and the MN
    // without cse.sp_id: both learn it.
    let _mn = Node::start(
        "mn-sp",
        &node_config(
            "/id-mn",
            "cse-mn",
            "MN",
            &url,
            None,
            Some(("/id-in", "cse-in")),
            "1s",
        ),
    );
    let _asn = Node::start(
        "asn-sp",
        &node_config(
            "/id-asn",
            "cse-asn",
            "ASN",
            &url,
            None,
            Some(("/id-mn", "cse-mn")),
            "1s",
        ),
    );
    let x = Client::connect(&broker, "Cm2mnode-status");
    for (id, name) in [("/id-mn", "cse-mn"), ("/id-asn", "cse-asn")] {
        wait_until(S10, &format!("{id} shows the SP"), || {
            let (rsc, cb) = get(&x, &format!("{id}/{name}"), id);
            rsc == Rsc::OK
                && cb["m2m:cb"]["spi"] == "//sp-a.example"
                && cb["m2m:cb"]["ici"] == "/id-in"
        });
    }
}

#[test]
fn two_sps_register_with_each_other() {
    let broker = Mosquitto::start();
    let url = broker.url();
    let b = Node::start(
        "in-b-mutual",
        &format!(
            "[cse]\nid = \"/id-in-b\"\nname = \"cse-in-b\"\ntype = \"IN\"\nsp_id = \"sp-b.example\"\n\
             [mqtt]\nurl = \"{url}\"\ntimeout = \"2s\"\n\
             [registrees]\ncheck_interval = \"1s\"\nallowed = [\"//sp-a.example/*\"]\n\
             [sp_registrar.a]\nsp_id = \"sp-a.example\"\nid = \"/id-in-a\"\nname = \"cse-in-a\"\ncheck_interval = \"1s\"\n"
        ),
    );
    b.wait_log("connected to the MQTT broker", S10);
    let a = in_a(&url, None);
    a.wait_log("connected to the MQTT broker", S10);
    let x = Client::connect(&broker, "Cm2mnode-status");
    for (id, name) in [("/id-in-a", "cse-in-a"), ("/id-in-b", "cse-in-b")] {
        wait_until(S10, &format!("{id} registered at the other"), || {
            status(&x, id, name)["peer_sps"][0]["registered"] == true
        });
    }
    // Both stay registered through several checks of each side.
    let since = |id: &str, name: &str| status(&x, id, name)["peer_sps"][0]["since"].clone();
    let (sa, sb) = (since("/id-in-a", "cse-in-a"), since("/id-in-b", "cse-in-b"));
    wait_until(S10, "three checks of A's CSR at B", || {
        a.count_in_log("registered at /id-in-b") == 1
            && status(&x, "/id-in-a", "cse-in-a")["peer_sps"][0]["last_check"]
                .as_str()
                .is_some_and(|t| sa.as_str().is_some_and(|s| t > s))
    });
    assert_eq!(
        since("/id-in-a", "cse-in-a"),
        sa,
        "A was not registered anew"
    );
    assert_eq!(
        since("/id-in-b", "cse-in-b"),
        sb,
        "B was not registered anew"
    );
    let ae = Client::connect(&broker, "Cae3");
    let r = ae.send(
        &ae.req(Operation::Retrieve, "//sp-a.example/id-in-a/cse-in-a"),
        "/id-in-b",
    );
    assert_eq!(r.rsc, Rsc::OK, "{r:?}");
}

#[test]
fn a_peer_registration_is_a_metric() {
    use std::io::{Read, Write};
    let broker = Mosquitto::start();
    let url = broker.url();
    let _b = in_b(&url);
    let port = free_port();
    let a = Node::start(
        "in-a-metrics",
        &format!(
            "[cse]\nid = \"/id-in-a\"\nname = \"cse-in-a\"\ntype = \"IN\"\nsp_id = \"sp-a.example\"\n\
             [mqtt]\nurl = \"{url}\"\ntimeout = \"2s\"\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n\
             [sp_registrar.b]\nsp_id = \"sp-b.example\"\nid = \"/id-in-b\"\nname = \"cse-in-b\"\n"
        ),
    );
    a.wait_status(S10, "registered at B", |s| {
        s["peer_sps"][0]["registered"] == true
    });
    let scrape = || {
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .ok()?;
        let mut body = String::new();
        c.read_to_string(&mut body).ok()?;
        Some(body)
    };
    wait_until(S10, "the peer gauge at 1", || {
        scrape().is_some_and(|b| {
            b.lines()
                .any(|l| l == "m2mnode_peer_sp_registered{peer=\"//sp-b.example/id-in-b\"} 1")
        })
    });
}

#[test]
fn a_restart_with_data_adopts_the_csr_at_the_peer() {
    let broker = Mosquitto::start();
    let url = broker.url();
    let b = in_b(&url);
    let data = scratch("in-a-data");
    let mut a = Node::start(
        "in-a-data",
        &format!(
            "[cse]\nid = \"/id-in-a\"\nname = \"cse-in-a\"\ntype = \"IN\"\nsp_id = \"sp-a.example\"\n\
             data_dir = \"{}\"\n[mqtt]\nurl = \"{url}\"\ntimeout = \"2s\"\n\
             [sp_registrar.b]\nsp_id = \"sp-b.example\"\nid = \"/id-in-b\"\nname = \"cse-in-b\"\ncheck_interval = \"1s\"\n",
            data.display()
        ),
    );
    let a_at_b = |s: &Value| {
        s["registrees"]
            .as_array()
            .and_then(|r| r.iter().find(|x| x["csi"] == "//sp-a.example/id-in-a"))
            .map(|x| x["since"].clone())
    };
    let before = b.wait_status(S10, "A at B", |s| a_at_b(s).is_some());
    let since = a_at_b(&before);
    assert!(since.as_ref().is_some_and(Value::is_string), "{before}");
    // Killed (no DELETE), started again from its store: the CSR at B is
    // adopted, not deleted and created anew.
    a.restart();
    a.wait_status(S10, "A registered at B again", |s| {
        s["peer_sps"][0]["registered"] == true
    });
    let after = b.status_now();
    assert_eq!(a_at_b(&after), since, "the same CSR at B: {after}");
    let local = a.status_now();
    assert_eq!(local["registree_count"], 0, "B's CSR at A is no registree");
}

#[test]
fn a_reload_removes_and_adds_peer_sps() {
    let broker = Mosquitto::start();
    let url = broker.url();
    let b = in_b(&url);
    let base = format!(
        "[cse]\nid = \"/id-in-a\"\nname = \"cse-in-a\"\ntype = \"IN\"\nsp_id = \"sp-a.example\"\n\
         [mqtt]\nurl = \"{url}\"\ntimeout = \"2s\"\n"
    );
    let peer_b =
        "[sp_registrar.b]\nsp_id = \"sp-b.example\"\nid = \"/id-in-b\"\nname = \"cse-in-b\"\n";
    let a = Node::start("in-a-reload", &format!("{base}{peer_b}"));
    let at_b = |s: &Value| {
        s["registrees"]
            .as_array()
            .is_some_and(|r| r.iter().any(|x| x["csi"] == "//sp-a.example/id-in-a"))
    };
    b.wait_status(S10, "A at B", at_b);
    // B removed: deregistered there, without a restart.
    a.rewrite_config(&base);
    a.signal("HUP");
    b.wait_status(S10, "A's CSR at B deleted", |s| !at_b(s));
    a.wait_status(S10, "no peer SP", |s| {
        s["peer_sps"].as_array().is_some_and(Vec::is_empty)
    });
    // And added again.
    a.rewrite_config(&format!("{base}{peer_b}"));
    a.signal("HUP");
    b.wait_status(S10, "A at B again", at_b);
}
