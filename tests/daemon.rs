//! Issue "Ship it as a gateway daemon": the node under a notify-aware
//! supervisor (`$NOTIFY_SOCKET`, `$WATCHDOG_USEC`), and the Prometheus
//! metrics of `[metrics]` read by an independent parser.

mod common;

use common::*;
use m2mnode::primitive::{Operation, ResourceType, Rsc};
use serde_json::json;
use std::collections::HashSet;
use std::io::{Read, Write};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `m2mnode run` with extra environment; killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(dir: &Path, config: &str, env: &[(&str, &str)]) -> Proc {
    let cfg = dir.join("node.toml");
    std::fs::write(&cfg, config).expect("config");
    let log = std::fs::File::create(dir.join("node.log")).expect("log");
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "m2mnode=debug")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Proc(cmd.spawn().expect("start m2mnode"))
}

/// The datagrams on `sock` until `done` says so, or panics after `within`.
fn collect_until(
    sock: &UnixDatagram,
    seen: &mut Vec<String>,
    within: Duration,
    what: &str,
    done: impl Fn(&[String]) -> bool,
) {
    let end = Instant::now() + within;
    let mut buf = [0u8; 4096];
    while !done(seen) {
        assert!(
            Instant::now() < end,
            "no {what} within {within:?}: {seen:?}"
        );
        if let Ok(n) = sock.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
}

fn count(seen: &[String], line: &str) -> usize {
    seen.iter().filter(|m| m.lines().any(|l| l == line)).count()
}

#[test]
fn ready_is_notified_only_once_connected_and_registered_status_follows() {
    let port = free_port();
    let url = format!("mqtt://127.0.0.1:{port}");
    let dir = scratch("sdnotify");
    let path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&path).expect("bind the notify socket");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let notify = path.to_str().expect("utf-8 path");
    let in_dir = scratch("sdnotify-in");
    let _in = spawn(
        &in_dir,
        &node_config("/id-in", "cse-in", "IN", &url, None, None, "60s"),
        &[],
    );
    let mn_cfg = node_config(
        "/id-mn",
        "cse-mn",
        "MN",
        &url,
        None,
        Some(("/id-in", "cse-in")),
        "60s",
    );
    // The watchdog at 400 ms: WATCHDOG=1 every 200 ms from the node's loop.
    let mut mn = spawn(
        &dir,
        &mn_cfg,
        &[("NOTIFY_SOCKET", notify), ("WATCHDOG_USEC", "400000")],
    );

    // No broker yet: the node says it waits and feeds the watchdog, and is
    // not ready.
    let mut seen = Vec::new();
    collect_until(
        &sock,
        &mut seen,
        Duration::from_secs(10),
        "a status and three watchdog pings",
        |s| {
            count(s, "WATCHDOG=1") >= 3
                && s.iter()
                    .any(|m| m.contains("STATUS=waiting for the MQTT broker"))
        },
    );
    assert_eq!(
        count(&seen, "READY=1"),
        0,
        "ready without a broker: {seen:?}"
    );

    let _broker = Mosquitto::start_on(port);
    collect_until(&sock, &mut seen, Duration::from_secs(20), "READY=1", |s| {
        count(s, "READY=1") > 0
    });
    let ready = seen
        .iter()
        .find(|m| m.lines().any(|l| l == "READY=1"))
        .expect("ready");
    assert!(ready.contains("STATUS=connected"), "{ready}");
    // What READY promised is what `m2mnode status` sees.
    let out = Command::new(BIN)
        .args(["status", "--json", "--config"])
        .arg(dir.join("node.toml"))
        .output()
        .expect("status");
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert_eq!(st["connected"], json!(true), "{st}");
    collect_until(
        &sock,
        &mut seen,
        Duration::from_secs(20),
        "STATUS with the registration",
        |s| {
            s.iter()
                .any(|m| m.contains("STATUS=connected; registration: registered"))
        },
    );
    assert_eq!(count(&seen, "READY=1"), 1, "READY once: {seen:?}");

    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(mn.0.id().to_string())
        .status();
    collect_until(
        &sock,
        &mut seen,
        Duration::from_secs(10),
        "STOPPING=1",
        |s| count(s, "STOPPING=1") > 0,
    );
    let status = mn.0.wait().expect("exit");
    assert!(status.success(), "{status}");
}

/// `GET path` on `addr`: (status line, body).
fn http_get(addr: &str, path: &str) -> std::io::Result<(String, String)> {
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Ok((
        head.lines().next().unwrap_or("").to_owned(),
        body.to_owned(),
    ))
}

/// The venv python with `prometheus_client`, the reference parser of the
/// Prometheus text format.
fn parser_python() -> PathBuf {
    let py = common::acme::acme_python().expect("the test venv (tests/acme/install.sh)");
    let has = |py: &Path| {
        Command::new(py)
            .args(["-c", "import prometheus_client.parser"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !has(&py) {
        let ok = Command::new(&py)
            .args(["-m", "pip", "install", "-q", "prometheus-client>=0.20,<1"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok && has(&py),
            "cannot install prometheus-client into the venv"
        );
    }
    py
}

/// Every sample of a scrape, as parsed by `prometheus_client`.
#[derive(Debug)]
struct Scrape(Vec<(String, serde_json::Map<String, serde_json::Value>, f64)>);

impl Scrape {
    fn parse(py: &Path, text: &str) -> Scrape {
        let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        out.append([s.name, s.labels, s.value])
print(json.dumps(out))
"#;
        let mut child = Command::new(py)
            .args(["-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write");
        let out = child.wait_with_output().expect("parser");
        assert!(
            out.status.success(),
            "the parser refused the scrape: {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        Scrape(serde_json::from_slice(&out.stdout).expect("parser output"))
    }

    /// The value of the sample `name` whose labels include `labels`.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.0
            .iter()
            .find(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).and_then(|x| x.as_str()) == Some(*v))
            })
            .map(|(_, _, v)| *v)
    }

    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(0.0)
    }
}

/// The TCP ports process `pid` listens on (its sockets in LISTEN state).
fn listening_ports(pid: u32) -> HashSet<u16> {
    let inodes: HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().into_owned();
                    l.strip_prefix("socket:[")
                        .and_then(|r| r.strip_suffix(']'))
                        .map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default();
    let mut ports = HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address, st (0A: LISTEN), inode
            if f.len() > 9 && f[3] == "0A" && inodes.contains(f[9]) {
                if let Some(port) = f[1]
                    .rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok())
                {
                    ports.insert(port);
                }
            }
        }
    }
    ports
}

#[test]
fn metrics_follow_the_requests_and_parse_with_an_independent_parser() {
    let py = parser_python();
    let broker = Mosquitto::start();
    let dir = scratch("metrics");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let cfg = node_config(
        "/id-in",
        "cse-in",
        "IN",
        &broker.url(),
        Some(&dir.join("data")),
        None,
        "60s",
    ) + &format!("\n[metrics]\nlisten = \"{addr}\"\n");
    let node = spawn(&dir, &cfg, &[]);
    let scrape = || -> Option<String> {
        match http_get(&addr, "/metrics") {
            Ok((status, body)) if status.contains(" 200 ") => Some(body),
            _ => None,
        }
    };
    wait_until(Duration::from_secs(10), "/metrics answers", || {
        scrape().is_some()
    });
    wait_until(Duration::from_secs(10), "the broker link up", || {
        scrape().is_some_and(|t| t.contains("m2mnode_broker_link_up{link=\"local\"} 1"))
    });
    let before = Scrape::parse(&py, &scrape().expect("scrape"));
    assert_eq!(
        before.get("m2mnode_registrees", &[]),
        Some(0.0),
        "{before:?}"
    );
    let created = || {
        before.value(
            "m2mnode_requests_total",
            &[("operation", "create"), ("class", "2xxx")],
        )
    };
    assert_eq!(created(), 0.0);

    // Requests: a registration (a write), a good and a bad RETRIEVE.
    let client = Client::connect(&broker, "/id-a");
    let mut create = client.req(Operation::Create, "/id-in/cse-in");
    create.ty = Some(ResourceType::REMOTE_CSE);
    create.pc = Some(csr_body("/id-a", json!({})));
    assert_eq!(client.send(&create, "/id-in").rsc, Rsc::CREATED);
    let rsp = client.send(
        &client.req(Operation::Retrieve, "/id-in/cse-in/id-a"),
        "/id-in",
    );
    assert_eq!(rsp.rsc, Rsc::OK, "{rsp:?}");
    let rsp = client.send(
        &client.req(Operation::Retrieve, "/id-in/cse-in/nothing-here"),
        "/id-in",
    );
    assert_eq!(rsp.rsc, Rsc::NOT_FOUND);
    // A payload that is no primitive at all is dropped, and counted.
    client.publish("/oneM2M/req/id-a/id-in/json", b"not a primitive".to_vec());
    wait_until(Duration::from_secs(5), "the drop counted", || {
        scrape().is_some_and(|t| {
            t.contains("m2mnode_dropped_payloads_total{reason=\"undecodable_request\"} 1")
        })
    });

    let after = Scrape::parse(&py, &scrape().expect("scrape"));
    let delta = |name: &str, labels: &[(&str, &str)]| {
        after.value(name, labels) - before.value(name, labels)
    };
    assert_eq!(
        delta(
            "m2mnode_requests_total",
            &[("operation", "create"), ("class", "2xxx")]
        ),
        1.0,
        "{after:?}"
    );
    assert_eq!(
        delta(
            "m2mnode_requests_total",
            &[("operation", "retrieve"), ("class", "2xxx")]
        ),
        1.0
    );
    assert_eq!(
        delta(
            "m2mnode_requests_total",
            &[("operation", "retrieve"), ("class", "4xxx")]
        ),
        1.0
    );
    assert_eq!(after.get("m2mnode_registrees", &[]), Some(1.0));
    assert_eq!(after.get("m2mnode_descendants", &[]), Some(1.0));
    assert_eq!(delta("m2mnode_registrees_added_total", &[]), 1.0);
    assert!(delta("m2mnode_store_commits_total", &[("result", "ok")]) >= 1.0);
    assert!(delta("m2mnode_store_commit_seconds_count", &[]) >= 1.0);
    assert_eq!(
        after.get("m2mnode_answers_awaiting_durability", &[]),
        Some(0.0)
    );
    assert_eq!(after.get("m2mnode_forwards_in_flight", &[]), Some(0.0));
    assert_eq!(
        after.get("m2mnode_broker_reconnects_total", &[("link", "local")]),
        Some(0.0)
    );

    // The registree leaves: counted by reason.
    let del = client.req(Operation::Delete, "/id-in/cse-in/id-a");
    assert_eq!(client.send(&del, "/id-in").rsc, Rsc::DELETED);
    wait_until(Duration::from_secs(5), "the removal counted", || {
        scrape().is_some_and(|t| {
            let s = Scrape::parse(&py, &t);
            s.value("m2mnode_registrees_removed_total", &[("reason", "deleted")]) == 1.0
                && s.get("m2mnode_registrees", &[]) == Some(0.0)
        })
    });

    // Anything but GET /metrics is refused, and the node goes on.
    let (status, _) = http_get(&addr, "/").expect("get /");
    assert!(status.contains(" 404 "), "{status}");
    let (status, _) = http_get(&addr, &format!("/metrics?{}", "x".repeat(10_000))).expect("long");
    assert!(
        status.contains(" 431 "),
        "a request head over 8 KiB: {status}"
    );
    assert!(scrape().is_some(), "still serving");
    assert!(listening_ports(node.0.id()).contains(&port));

    // Without [metrics], nothing listens.
    let plain_dir = scratch("metrics-off");
    let plain = spawn(
        &plain_dir,
        &node_config("/id-in2", "cse-in2", "IN", &broker.url(), None, None, "60s"),
        &[],
    );
    let log = plain_dir.join("node.log");
    wait_until(Duration::from_secs(10), "the second node connected", || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("connected to the MQTT broker"))
    });
    assert_eq!(listening_ports(plain.0.id()), HashSet::new());
}

#[test]
fn completions_and_man_pages_come_from_the_clap_definitions() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef m2mnode"),
        ("fish", "complete -c m2mnode"),
    ] {
        let out = Command::new(BIN)
            .args(["completions", shell])
            .output()
            .expect("completions");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{shell}");
        assert!(
            text.contains(marker) && text.contains("check-config"),
            "{shell}: {text}"
        );
    }
    let out = Command::new(BIN).arg("man").output().expect("man");
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(page.contains(".TH m2mnode 1"), "{page}");
    for section in [
        ".SH SYNOPSIS",
        ".SH FILES",
        ".SH SIGNALS",
        ".SH EXIT STATUS",
    ] {
        assert!(page.contains(section), "{section} missing");
    }
    assert!(!page.contains("m2mnode\\-help"), "no page for help");
    let dir = scratch("man");
    let out = Command::new(BIN)
        .args(["man", "--dir"])
        .arg(&dir)
        .output()
        .expect("man --dir");
    assert!(out.status.success());
    for page in ["m2mnode.1", "m2mnode-run.1", "m2mnode-check-config.1"] {
        assert!(dir.join(page).is_file(), "{page}");
    }
}

#[test]
fn a_metrics_port_that_is_taken_stops_the_node_with_exit_2() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let dir = scratch("metrics-taken");
    let cfg = node_config(
        "/id-in",
        "cse-in",
        "IN",
        "mqtt://127.0.0.1:1",
        None,
        None,
        "60s",
    ) + &format!("\n[metrics]\nlisten = \"{addr}\"\n");
    let mut node = spawn(&dir, &cfg, &[]);
    let mut code = None;
    wait_until(Duration::from_secs(10), "the node exits", || {
        code = node.0.try_wait().ok().flatten().and_then(|s| s.code());
        code.is_some()
    });
    assert_eq!(code, Some(2));
    let log = std::fs::read_to_string(dir.join("node.log")).unwrap_or_default();
    assert!(log.contains(&format!("metrics.listen {addr}")), "{log}");
}

/// The packaged config runs as is, and its commented gateway settings make a
/// valid MN once uncommented.
#[test]
fn the_packaged_config_and_its_gateway_variant_pass_check_config() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/m2mnode.toml"),
    )
    .expect("packaging/m2mnode.toml");
    assert!(text.contains("data_dir = \"/var/lib/m2mnode\""));
    // The store elsewhere: checking must not create /var/lib/m2mnode here.
    let data = scratch("packaged-config");
    let text = text.replace("/var/lib/m2mnode", &data.display().to_string());
    let path = Path::new("/etc/m2mnode/m2mnode.toml");
    let problems = m2mnode::config::check_text(&text, path, &m2mnode::config::Env::default());
    assert!(problems.is_empty(), "{problems:?}");

    let gateway: String = text
        .lines()
        .map(|l| {
            let l = l.replace("type = \"IN\"", "type = \"MN\"");
            let l = l.replace("id = \"/id-in\"              #", "id = \"/id-gw-1\" #");
            match l.strip_prefix("# ") {
                Some(rest)
                    if [
                        "[registrar]",
                        "id =",
                        "name =",
                        "check_interval =",
                        "[metrics]",
                        "listen =",
                    ]
                    .iter()
                    .any(|k| rest.starts_with(k)) =>
                {
                    rest.to_owned()
                }
                _ => l,
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let cfg = m2mnode::config::Config::from_str(&gateway, path).expect("the gateway variant");
    assert_eq!(cfg.cse.id.as_str(), "/id-gw-1");
    assert_eq!(
        cfg.registrar.map(|r| r.id.to_string()).as_deref(),
        Some("/id-in")
    );
    assert!(cfg.metrics.is_some());
    let problems = m2mnode::config::check_text(&gateway, path, &m2mnode::config::Env::default());
    assert!(problems.is_empty(), "{problems:?}\n{gateway}");
}
