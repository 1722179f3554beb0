//! Golden vectors (proto/golden) and the reference peer's real traffic
//! (proto/fixtures): the codec and the node's answers must fit both.

use m2mnode::config::Config;
use m2mnode::engine::{Action, Input, OwnCsr, Registration, RegistreeConfig};
use m2mnode::engine::{Outcome, Registrar};
use m2mnode::id::CseId;
use m2mnode::primitive::{Format, Request, Response, Rsc};
use m2mnode::time::{Now, Timestamp};
use m2mnode::topic::{self, Kind};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn proto() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("proto")
}

fn now() -> Timestamp {
    Timestamp::parse("20261125T120000,000000").expect("timestamp")
}

/// The simulated clock's start: one monotonic origin for the whole run.
fn start() -> Now {
    static START: std::sync::OnceLock<Now> = std::sync::OnceLock::new();
    *START.get_or_init(|| Now::at(now()))
}

fn config(id: &str, name: &str, ty: &str, registrar: bool) -> Config {
    let mut text = format!(
        "[cse]\nid = \"{id}\"\nname = \"{name}\"\ntype = \"{ty}\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n"
    );
    if registrar {
        text += "[registrar]\nid = \"/id-in\"\nname = \"cse-in\"\n";
    }
    Config::from_str(&text, Path::new("golden.toml")).expect("config")
}

fn registrar_for(cfg: &Config) -> Registrar {
    Registrar::new(cfg.registrar_settings(now()))
}

fn respond(r: &mut Registrar, req: &Request, hop: &str) -> Response {
    match r.handle(req, hop, now()) {
        Outcome::Respond { response, .. } => response,
        Outcome::Forward { .. } => panic!("unexpected forward of {req:?}"),
    }
}

/// Every primitive of a registration's life, as the real machine and the
/// real registrar produce them.
fn conversation() -> Vec<(String, Value)> {
    let mn = config("/id-mn", "cse-mn", "MN", true);
    let base = mn.cse_base(now());
    let want = OwnCsr::from_cse_base(&base, vec![]);
    let mut machine = Registration::new(
        RegistreeConfig {
            own: CseId::new("/id-mn").expect("id"),
            registrar: CseId::new("/id-in").expect("id"),
            registrar_rn: "cse-in".into(),
            check_interval: Duration::from_secs(60),
            request_timeout: Duration::from_secs(10),
            seed: 0xc0ffee,
        },
        want.clone(),
    );
    let mut registrar = registrar_for(&config("/id-in", "cse-in", "IN", false));
    let mut out = Vec::new();
    let names = [
        "01-csr-delete-stale",
        "02-csr-create",
        "03-cse-base-retrieve",
        "04-csr-retrieve",
        "05-csr-update",
        "06-csr-delete",
    ];
    let mut step = 0;
    let mut run =
        |machine: &mut Registration, input: Input, at: Now, out: &mut Vec<(String, Value)>| {
            machine.handle(input, at);
            while let Some(a) = machine.poll_action() {
                if let Action::Send(req) = a {
                    let rsp = respond(&mut registrar, &req, "/id-mn");
                    out.push((
                        format!("{}.req", names[step]),
                        serde_json::to_value(&req).expect("json"),
                    ));
                    out.push((
                        format!("{}.rsp", names[step]),
                        serde_json::to_value(&rsp).expect("json"),
                    ));
                    step += 1;
                    machine.handle(Input::Response(rsp), start());
                }
            }
        };
    run(
        &mut machine,
        Input::Start {
            adopt: false,
            remote_rn: None,
        },
        start(),
        &mut out,
    );
    // The check is due one interval later; the clock here stands still, so
    // the machine's timer is fired at its own time.
    let t = machine.poll_timeout().expect("check armed");
    run(&mut machine, Input::Timer, start().advance_to(t), &mut out);
    let mut more = want;
    more.dcse = vec!["/id-asn".into()];
    more.lbl = vec!["gateway".into()];
    run(&mut machine, Input::OwnCsrChanged(more), start(), &mut out);
    run(&mut machine, Input::Shutdown, start(), &mut out);

    // Error answers the registrar gives.
    let x = |op, to: &str| {
        let mut r = Request::new(op, to, "/id-x", "err-1");
        r.rvi = Some("3".into());
        r.ot = Some(now().to_onem2m());
        r
    };
    use m2mnode::primitive::{Operation, ResourceType};
    let mut bad = x(Operation::Create, "/id-in/cse-in");
    bad.ty = Some(ResourceType::REMOTE_CSE);
    bad.pc = Some(json!({"m2m:csr": {"csi": "/id-x", "rr": true, "srv": ["3"]}}));
    let mut dup = x(Operation::Create, "/id-in/cse-in");
    dup.fr = Some("/id-dup".into());
    dup.ty = Some(ResourceType::REMOTE_CSE);
    dup.pc =
        Some(json!({"m2m:csr": {"csi": "/id-dup", "cb": "/id-dup/cse", "rr": true, "srv": ["3"]}}));
    let _ = respond(&mut registrar, &dup, "/id-dup");
    let mut old = x(Operation::Retrieve, "/id-in/cse-in");
    old.rvi = Some("9".into());
    let cases = [
        ("10-error-4000-missing-cb", bad),
        ("11-error-4001-release", old),
        (
            "12-error-4004-not-found",
            x(Operation::Retrieve, "/id-in/cse-in/nothing"),
        ),
        (
            "13-error-4005-update-cse-base",
            x(Operation::Update, "/id-in/cse-in"),
        ),
        ("14-error-4105-duplicate", dup),
    ];
    for (name, req) in cases {
        let hop = req.fr.clone().unwrap_or_default();
        let rsp = respond(&mut registrar, &req, &hop);
        out.push((
            format!("{name}.rsp"),
            serde_json::to_value(&rsp).expect("json"),
        ));
    }
    out
}

fn decode_both(name: &str, v: &Value) -> Value {
    // Typed decode and re-encode in both formats must give the same value.
    if name.ends_with(".req") {
        let r: Request = serde_json::from_value(v.clone()).expect("request");
        let cbor = Format::Cbor.encode(&r).expect("cbor");
        let back = Format::Cbor.decode_request(&cbor).expect("cbor back");
        assert_eq!(back, r, "{name}: CBOR round trip");
        serde_json::to_value(&r).expect("json")
    } else {
        let r: Response = serde_json::from_value(v.clone()).expect("response");
        let cbor = Format::Cbor.encode(&r).expect("cbor");
        let back = Format::Cbor.decode_response(&cbor).expect("cbor back");
        assert_eq!(back, r, "{name}: CBOR round trip");
        serde_json::to_value(&r).expect("json")
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn golden_primitives_are_what_the_node_sends_and_answers() {
    let dir = proto().join("golden");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let convo = conversation();
    assert!(convo.len() >= 17, "{} primitives", convo.len());
    for (name, value) in &convo {
        let json_path = dir.join(format!("{name}.json"));
        let cbor_path = dir.join(format!("{name}.cbor.hex"));
        let cbor = hex(&Format::Cbor.encode(value).expect("cbor"));
        if update {
            std::fs::write(
                &json_path,
                serde_json::to_string_pretty(value).expect("json") + "\n",
            )
            .expect("write");
            std::fs::write(&cbor_path, cbor.clone() + "\n").expect("write");
        }
        let golden: Value = serde_json::from_str(
            &std::fs::read_to_string(&json_path)
                .unwrap_or_else(|e| panic!("{}: {e}", json_path.display())),
        )
        .expect("golden JSON");
        assert_eq!(
            value,
            &golden,
            "{name} differs from {}",
            json_path.display()
        );
        assert_eq!(
            decode_both(name, &golden),
            golden,
            "{name}: JSON round trip"
        );
        let golden_cbor = std::fs::read_to_string(&cbor_path).expect("golden CBOR");
        assert_eq!(cbor, golden_cbor.trim(), "{name}: CBOR bytes differ");
    }
    // No stale files.
    let names: BTreeSet<String> = convo.iter().map(|(n, _)| n.clone()).collect();
    for entry in std::fs::read_dir(&dir).expect("golden dir") {
        let file = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        let stem = file.trim_end_matches(".cbor.hex").trim_end_matches(".json");
        assert!(names.contains(stem), "stale golden file {file}");
    }
}

fn keys(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                out.insert(k.clone());
                keys(v, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|v| keys(v, out)),
        _ => {}
    }
}

#[test]
fn every_key_the_node_emits_is_in_the_short_name_table() {
    let table: Value = serde_json::from_str(
        &std::fs::read_to_string(proto().join("short-names.json")).expect("table"),
    )
    .expect("json");
    let mut known = BTreeSet::new();
    for section in ["primitive", "resource", "wrapper"] {
        for k in table[section].as_object().expect("section").keys() {
            known.insert(k.clone());
        }
    }
    let mut used = BTreeSet::new();
    for (_, v) in conversation() {
        keys(&v, &mut used);
    }
    let unknown: Vec<_> = used.difference(&known).collect();
    assert!(
        unknown.is_empty(),
        "keys not in proto/short-names.json: {unknown:?}"
    );
}

/// (topic, payload) of every message in the fixture.
fn fixture() -> Vec<(String, Value)> {
    let text = std::fs::read_to_string(proto().join("fixtures/acme-mn-registration.txt"))
        .expect("fixture");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut parts = l.splitn(5, ' ');
            let (_, _, _) = (parts.next(), parts.next(), parts.next());
            let topic = parts.next().expect("topic").to_owned();
            let payload: Value =
                serde_json::from_str(parts.next().expect("payload")).expect("payload JSON");
            (topic, payload)
        })
        .collect()
}

#[test]
fn every_primitive_of_the_reference_peer_decodes_and_re_encodes_losslessly() {
    let msgs = fixture();
    assert_eq!(msgs.len(), 28);
    for (t, payload) in msgs {
        let route = topic::parse(&t).expect("a oneM2M topic");
        let bytes = serde_json::to_vec(&payload).expect("bytes");
        let again = match route.kind {
            Kind::Request => {
                let r = Format::Json
                    .decode_request(&bytes)
                    .expect("request decodes");
                let cbor = Format::Cbor.encode(&r).expect("cbor");
                assert_eq!(Format::Cbor.decode_request(&cbor).expect("cbor"), r);
                serde_json::to_value(&r).expect("json")
            }
            Kind::Response => {
                let r = Format::Json
                    .decode_response(&bytes)
                    .expect("response decodes");
                let cbor = Format::Cbor.encode(&r).expect("cbor");
                assert_eq!(Format::Cbor.decode_response(&cbor).expect("cbor"), r);
                serde_json::to_value(&r).expect("json")
            }
        };
        assert_eq!(again, payload, "{t}: a field was lost or changed");
    }
}

#[test]
fn the_node_answers_the_reference_peers_requests_as_the_peer_does() {
    // Our IN answers what ACME's MN sent to ACME's IN, and our MN what ACME's
    // IN sent to ACME's MN: same status, same resource wrapper.
    let mut as_in = registrar_for(&config("/id-in", "cse-in", "IN", false));
    let mut as_mn = registrar_for(&config("/id-mn", "cse-mn", "MN", true));
    let msgs = fixture();
    let mut checked = 0;
    for pair in msgs.windows(2) {
        let [(req_topic, req), (rsp_topic, acme_rsp)] = pair else {
            continue;
        };
        let (Some(rq), Some(rs)) = (topic::parse(req_topic), topic::parse(rsp_topic)) else {
            continue;
        };
        if rq.kind != Kind::Request || rs.kind != Kind::Response {
            continue;
        }
        assert_eq!(
            rq.response_topic(),
            *rsp_topic,
            "ACME answers on the request's topic"
        );
        let req: Request = serde_json::from_value(req.clone()).expect("request");
        let target = if rq.receiver == "/id-in" {
            &mut as_in
        } else {
            &mut as_mn
        };
        let ours = respond(target, &req, &rq.originator);
        let ours = serde_json::to_value(&ours).expect("json");
        assert_eq!(ours["rsc"], acme_rsp["rsc"], "{req_topic} {req:?}");
        assert_eq!(ours["rqi"], acme_rsp["rqi"]);
        assert_eq!(ours["rvi"], acme_rsp["rvi"]);
        let wrapper = |v: &Value| v["pc"].as_object().and_then(|m| m.keys().next().cloned());
        assert_eq!(wrapper(&ours), wrapper(acme_rsp), "{req_topic}");
        if ours["rsc"] == 2000 || ours["rsc"] == 2001 {
            let key = wrapper(&ours).expect("pc");
            for k in [
                "ri", "rn", "csi", "ty", "ct", "lt", "pi", "poa", "srv", "csz",
            ] {
                let ours_has = !ours["pc"][&key][k].is_null();
                let acme_has = !acme_rsp["pc"][&key][k].is_null();
                assert_eq!(ours_has, acme_has, "{key}.{k} in {req_topic}");
            }
        }
        checked += 1;
    }
    assert_eq!(checked, 14);
    assert_eq!(Rsc::from_code(4004), Rsc::NOT_FOUND);
}
