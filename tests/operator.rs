//! Issue "Operate it": `status`, `check-config`, `request` against real
//! brokers, the logs, and the shipped Mosquitto snippet.

mod common;

use common::*;
use m2mnode::primitive::{Response, Rsc};
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// `m2mnode <args>` with optional stdin and environment: (code, stdout, stderr).
fn run(args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("RUST_LOG")
        .env_remove("M2MNODE_MQTT_PASSWORD")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("run m2mnode");
    if let Some(input) = stdin {
        let mut i = child.stdin.take().expect("stdin");
        i.write_all(input.as_bytes()).expect("write stdin");
    }
    let out = child.wait_with_output().expect("wait");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A stand-in for a node on the broker at `url` as `own` (CSEBase `cb_rn`):
/// answers the status RETRIEVE of `m2mnode status` with `status`, echoes the
/// content of any other request to `own` with 2000, or answers 4004.
fn fake_node(
    url: String,
    own: &'static str,
    cb_rn: &'static str,
    status: serde_json::Value,
    credentials: Option<(&'static str, &'static str)>,
) {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        rt.block_on(async move {
            use m2mnode::transport::mqtt::{Incoming, Settings, Transport};
            let broker = m2mnode::config::BrokerUrl::parse(&url).expect("url");
            let mut settings = Settings::client(
                broker,
                format!("fake-{own}-{}", free_port()),
                own,
                Duration::from_secs(5),
            );
            if let Some((u, p)) = credentials {
                settings.username = Some(u.into());
                settings.password = Some(p.into());
            }
            let (t, mut rx) = Transport::connect(settings, Duration::from_secs(10))
                .await
                .expect("fake node connects");
            let _ = ready_tx.send(());
            let end = tokio::time::Instant::now() + Duration::from_secs(60);
            while let Ok(Some(ev)) = tokio::time::timeout_at(end, rx.recv()).await {
                let Incoming::Request { route, payload, .. } = ev else {
                    continue;
                };
                let Ok(fmt) = route.format else { continue };
                let Ok(req) = fmt.decode_request(&payload) else {
                    continue;
                };
                let rsp = if req.to == format!("{own}/{cb_rn}/m2mnode-status") {
                    // The status client speaks as itself, on its own topic.
                    assert_eq!(req.fr.as_deref(), Some("Cm2mnode-status"), "{req:?}");
                    assert!(
                        route
                            .response_topic()
                            .starts_with("/oneM2M/resp/Cm2mnode-status/"),
                        "{route:?}"
                    );
                    Response::new(Rsc::OK, req.rqi).with_pc(json!({ "m2mnode:status": status }))
                } else if req.to == format!("{own}/{cb_rn}") {
                    let mut r = Response::new(Rsc::OK, req.rqi);
                    if let Some(pc) = req.pc {
                        r = r.with_pc(pc);
                    }
                    r
                } else {
                    Response::error(Rsc::NOT_FOUND, req.rqi, "nothing here")
                };
                t.publish(route.response_topic(), fmt.encode(&rsp).expect("encode"));
            }
        });
    });
    ready_rx
        .recv_timeout(Duration::from_secs(15))
        .expect("fake node ready");
}

fn status_json(registered: bool) -> serde_json::Value {
    json!({
        "cse": "/id-mn",
        "connected": true,
        "registrar": {
            "id": "/id-in",
            "registered": registered,
            "since": if registered { json!("20250101T120000,000000") } else { json!(null) },
            "last_check": "20250101T120100,000000",
        },
        "registrees": [
            {"csi": "/id-asn", "misses": 0, "last_ok": "20250101T120030,000000"},
            {"csi": "/id-asn2", "misses": 1, "last_ok": null},
        ],
        "descendants": ["/id-asn", "/id-asn2", "/id-deep"],
        "store": {"durable": true, "unwritten": 0},
    })
}

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("node.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

fn mn_config(url: &str) -> String {
    node_config(
        "/id-mn",
        "cse-mn",
        "MN",
        url,
        None,
        Some(("/id-in", "cse-in")),
        "60s",
    )
}

#[test]
fn status_reports_a_registered_node_and_exits_0() {
    let broker = Mosquitto::start();
    fake_node(broker.url(), "/id-mn", "cse-mn", status_json(true), None);
    let dir = scratch("status-ok");
    let cfg = write_config(&dir, &mn_config(&broker.url()));
    let cfg = cfg.to_str().expect("utf-8");

    let (code, out, err) = run(&["status", "--config", cfg], None, &[]);
    assert_eq!(code, 0, "{out}{err}");
    for needle in [
        "/id-mn: connected",
        "registered at /id-in since 20250101T120000",
        "last check: 20250101T120100",
        "registrees: 2",
        "/id-asn: last alive 20250101T120030",
        "/id-asn2: last alive never, 1 missed check",
        "descendants: 3",
    ] {
        assert!(out.contains(needle), "no {needle:?} in:\n{out}");
    }

    let (code, out, err) = run(&["status", "--config", cfg, "--json"], None, &[]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["registrar"]["registered"], true);
    assert_eq!(v["registrees"][0]["csi"], "/id-asn");
    assert_eq!(v["descendants"].as_array().map(Vec::len), Some(3));
}

#[test]
fn status_exits_1_when_not_registered_and_0_for_an_in_cse() {
    let broker = Mosquitto::start();
    fake_node(broker.url(), "/id-mn", "cse-mn", status_json(false), None);
    let mut in_status = status_json(true);
    in_status["cse"] = json!("/id-in");
    in_status["registrar"] = json!(null);
    fake_node(broker.url(), "/id-in", "cse-in", in_status, None);
    let dir = scratch("status-not");
    let cfg = write_config(&dir, &mn_config(&broker.url()));
    let (code, out, err) = run(
        &["status", "--config", cfg.to_str().expect("utf-8")],
        None,
        &[],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("NOT registered at /id-in"), "{out}");
    let (code, out, _) = run(
        &["status", "--config", cfg.to_str().expect("utf-8"), "--json"],
        None,
        &[],
    );
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["registrar"]["registered"], false);

    let dir = scratch("status-in");
    let cfg = write_config(
        &dir,
        &node_config("/id-in", "cse-in", "IN", &broker.url(), None, None, "60s"),
    );
    let (code, out, err) = run(
        &["status", "--config", cfg.to_str().expect("utf-8")],
        None,
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("registrar: none"), "{out}");
}

#[test]
fn status_exits_3_without_an_answer_and_2_for_a_bad_config() {
    let broker = Mosquitto::start();
    let dir = scratch("status-silent");
    let cfg = write_config(&dir, &mn_config(&broker.url()));
    let (code, _, err) = run(
        &[
            "status",
            "--config",
            cfg.to_str().expect("utf-8"),
            "--timeout",
            "1s",
        ],
        None,
        &[],
    );
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("no response from /id-mn"), "{err}");

    let nobody = format!("mqtt://127.0.0.1:{}", free_port());
    let cfg = write_config(&dir, &mn_config(&nobody));
    let (code, _, err) = run(
        &["status", "--config", cfg.to_str().expect("utf-8")],
        None,
        &[],
    );
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("cannot reach the MQTT broker"), "{err}");

    let cfg = write_config(&dir, &mn_config("http://x"));
    let (code, _, err) = run(
        &["status", "--config", cfg.to_str().expect("utf-8")],
        None,
        &[],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("mqtt.url"), "{err}");
}

fn check(path: &Path, env: &[(&str, &str)]) -> (i32, String, String) {
    run(
        &["check-config", "--config", path.to_str().expect("utf-8")],
        None,
        env,
    )
}

#[test]
fn check_config_reports_every_problem_with_its_key_and_line() {
    let dir = scratch("check-many");
    // Syntax: all errors at once, with their lines.
    let cfg = write_config(
        &dir,
        "[cse]\nid = \"/id-mn\nname = = \"x\"\n[mqtt]\nurl = \"mqtt://h\"\nqos = ]\n",
    );
    let (code, _, err) = check(&cfg, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("node.toml:2:"), "{err}");
    assert!(err.contains("node.toml:6:"), "{err}");

    // Value errors in several sections at once.
    let text = mn_config("mqtt://127.0.0.1:1883")
        .replace("timeout = \"2s\"", "timeout = \"soon\"")
        .replace("type = \"MN\"", "type = \"XX\"")
        .replace(
            "check_interval = \"60s\"\n\n[registrees]",
            "check_interval = \"60s\"\nfoo = 1\n\n[registrees]",
        );
    let cfg = write_config(&dir, &text);
    let (code, _, err) = check(&cfg, &[]);
    assert_eq!(code, 2, "{err}");
    let line = |key: &str| {
        text.lines()
            .position(|l| l.starts_with(key))
            .map(|i| i + 1)
            .expect("key in text")
    };
    assert!(
        err.contains(&format!("node.toml:{}: mqtt.timeout:", line("timeout")))
            && err.contains("soon"),
        "{err}"
    );
    assert!(
        err.contains(&format!("node.toml:{}: registrar.foo:", line("foo"))),
        "{err}"
    );
    assert!(
        err.contains(&format!("node.toml:{}: cse.type:", line("type"))),
        "{err}"
    );

    // Semantic problems: each on its own line, with key and line.
    let text = mn_config("mqtt://127.0.0.1:1883")
        .replace("name = \"cse-mn\"", "name = \"cse/mn\"")
        .replace("name = \"cse-in\"", "name = \"\"")
        .replace(
            "[registrees]\n",
            "[registrees]\nallowed = [\"id-*\", \"/id-x*\"]\n",
        );
    let cfg = write_config(&dir, &text);
    let (code, _, err) = check(&cfg, &[]);
    assert_eq!(code, 2, "{err}");
    let lines: Vec<&str> = err.lines().collect();
    for (key, needle) in [
        ("cse.name", "name = \"cse/mn\""),
        ("registrar.name", "name = \"\""),
        ("registrees.allowed", "allowed ="),
    ] {
        let n = text
            .lines()
            .position(|l| l.starts_with(needle))
            .expect("in text")
            + 1;
        assert!(
            lines
                .iter()
                .any(|l| l.contains(&format!("node.toml:{n}: {key}:"))),
            "no {key} at line {n}:\n{err}"
        );
    }
    assert!(err.contains("\"id-*\" can never match"), "{err}");
    assert!(!err.contains("/id-x*"), "a good pattern is fine: {err}");
    assert!(err.contains("3 problems"), "{err}");

    // The positional form still works.
    let good = write_config(&dir, &mn_config("mqtt://127.0.0.1:1883"));
    let (code, out, err) = run(&["check-config", good.to_str().expect("utf-8")], None, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(": ok"), "{out}");
}

#[test]
fn check_config_checks_tls_files_and_the_data_dir() {
    let dir = scratch("check-files");
    let key = dir.join("a.key");
    // A PKCS#8 private key in PEM, as a ca_file by mistake.
    std::fs::write(
        &key,
        "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIOzHFKuc2dt5HBD0E6E2rR3mZMlbNdhyyGyTMGBBN5Jz\n-----END PRIVATE KEY-----\n",
    )
    .expect("key");
    let text = mn_config("mqtts://127.0.0.1:8883").replace(
        "[mqtt]\n",
        &format!("[mqtt]\nca_file = \"{}\"\n", key.display()),
    );
    let cfg = write_config(&dir, &text);
    let (code, _, err) = check(&cfg, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("mqtt.ca_file:"), "{err}");
    assert!(
        err.contains("no PEM certificate (it is a private key)"),
        "{err}"
    );

    // mqtts:// without a ca_file.
    let cfg = write_config(&dir, &mn_config("mqtts://127.0.0.1:8883"));
    let (code, _, err) = check(&cfg, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("mqtt.ca_file:"), "{err}");

    // A data_dir that cannot be created.
    let text = mn_config("mqtt://127.0.0.1:1883").replace(
        "type = \"MN\"\n",
        "type = \"MN\"\ndata_dir = \"/proc/m2mnode/data\"\n",
    );
    let cfg = write_config(&dir, &text);
    let (code, _, err) = check(&cfg, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("node.toml:5: cse.data_dir:"), "{err}");

    // A relative data_dir is the config file's directory's, not the cwd's.
    let text = mn_config("mqtt://127.0.0.1:1883")
        .replace("type = \"MN\"\n", "type = \"MN\"\ndata_dir = \"state\"\n");
    let cfg = write_config(&dir, &text);
    let elsewhere = scratch("check-cwd");
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&cfg)
        .current_dir(&elsewhere)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(dir.join("state").is_dir());
    assert!(!elsewhere.join("state").exists());

    // A password from the environment needs a user name.
    let cfg = write_config(&dir, &mn_config("mqtt://127.0.0.1:1883"));
    let (code, _, err) = check(&cfg, &[("M2MNODE_MQTT_PASSWORD", "secret")]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("mqtt.username: M2MNODE_MQTT_PASSWORD"),
        "{err}"
    );
    let text = mn_config("mqtt://127.0.0.1:1883").replace("[mqtt]\n", "[mqtt]\nusername = \"u\"\n");
    let cfg = write_config(&dir, &text);
    let (code, _, err) = check(&cfg, &[("M2MNODE_MQTT_PASSWORD", "secret")]);
    assert_eq!(code, 0, "{err}");
}

/// A Mosquitto started on a config file of ours; killed on drop.
struct OwnBroker(Child, PathBuf);

impl OwnBroker {
    fn start(conf: &Path, port: u16) -> OwnBroker {
        let log = conf.with_extension("log");
        let child = Command::new(mosquitto())
            .arg("-c")
            .arg(conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("start mosquitto");
        let mut b = OwnBroker(child, log);
        let end = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < end {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return b;
            }
            if let Ok(Some(status)) = b.0.try_wait() {
                panic!(
                    "mosquitto exited ({status}):\n{}",
                    std::fs::read_to_string(&b.1).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "mosquitto does not listen on {port}:\n{}",
            std::fs::read_to_string(&b.1).unwrap_or_default()
        );
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn mosquitto() -> PathBuf {
    ["/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("mosquitto"))
}

fn open_dir(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    // Mosquitto started as root drops to its own user.
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777));
}

fn password_broker() -> Option<(OwnBroker, u16)> {
    let dir = scratch("passwd");
    open_dir(&dir);
    let passwd = dir.join("passwd");
    let made = Command::new("mosquitto_passwd")
        .args(["-c", "-b"])
        .arg(&passwd)
        .args(["cse-mn", "s3cret"])
        .status()
        .is_ok_and(|s| s.success());
    if !made {
        eprintln!("skipped: mosquitto_passwd is not installed");
        return None;
    }
    let _ = Command::new("mosquitto_passwd")
        .arg("-b")
        .arg(&passwd)
        .args(["cse-in", "in-pass"])
        .status();
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(&passwd, std::fs::Permissions::from_mode(0o644));
    let port = free_port();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\nlog_dest stderr\n",
            passwd.display()
        ),
    )
    .expect("conf");
    Some((OwnBroker::start(&conf, port), port))
}

#[test]
fn request_with_credentials_and_a_fast_failure_on_bad_ones() {
    let Some((_broker, port)) = password_broker() else {
        return;
    };
    let url = format!("mqtt://127.0.0.1:{port}");
    fake_node(
        url.clone(),
        "/id-in",
        "cse-in",
        json!({}),
        Some(("cse-in", "in-pass")),
    );
    let base = [
        "request",
        "--broker",
        &url,
        "--from",
        "/id-mn",
        "--to",
        "/id-in/cse-in",
        "--op",
        "retrieve",
    ];
    let (code, _, err) = run(
        &[&base[..], &["--username", "cse-mn", "--password", "s3cret"]].concat(),
        None,
        &[],
    );
    assert_eq!(code, 0, "{err}");
    // The password from the environment.
    let (code, _, err) = run(
        &[&base[..], &["--username", "cse-mn"]].concat(),
        None,
        &[("M2MNODE_MQTT_PASSWORD", "s3cret")],
    );
    assert_eq!(code, 0, "{err}");
    // Wrong password: refused at once, with the reason.
    let (code, _, err) = run(
        &[
            &base[..],
            &[
                "--username",
                "cse-mn",
                "--password",
                "wrong",
                "--timeout",
                "60s",
            ],
        ]
        .concat(),
        None,
        &[],
    );
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("refused the credentials"), "{err}");
}

#[test]
fn request_fails_fast_on_a_refused_connection() {
    let url = format!("mqtt://127.0.0.1:{}", free_port());
    let (code, _, err) = run(
        &[
            "request",
            "--broker",
            &url,
            "--from",
            "/id-x",
            "--to",
            "/id-in/cse-in",
            "--op",
            "retrieve",
            "--timeout",
            "60s",
        ],
        None,
        &[],
    );
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("cannot reach the MQTT broker"), "{err}");
}

#[test]
fn request_reads_stdin_prints_the_body_and_checks_its_arguments() {
    let broker = Mosquitto::start();
    let url = broker.url();
    fake_node(url.clone(), "/id-in", "cse-in", json!({}), None);
    let base = [
        "request",
        "--broker",
        &url,
        "--from",
        "/id-x",
        "--to",
        "/id-in/cse-in",
        "--op",
        "update",
    ];
    let content = r#"{"m2m:csr":{"lbl":["from-stdin"]}}"#;
    for arg in ["-", "@-"] {
        let (code, out, err) = run(
            &[&base[..], &["--content", arg, "--body"]].concat(),
            Some(content),
            &[],
        );
        assert_eq!(code, 0, "{arg}: {err}");
        let v: serde_json::Value = serde_json::from_str(&out).expect("pc as JSON");
        assert_eq!(v["m2m:csr"]["lbl"][0], "from-stdin", "{out}");
    }
    // -v: topics and the request primitive on stderr.
    let (code, out, err) = run(&[&base[..], &["-v"]].concat(), None, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("/oneM2M/req/id-x/id-in/json"), "{err}");
    assert!(err.contains("/oneM2M/resp/id-x/id-in/json"), "{err}");
    assert!(err.contains("\"to\": \"/id-in/cse-in\""), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("response");
    assert_eq!(v["rsc"], 2000);
    // --qos 2 is refused by the argument parser.
    let (code, _, err) = run(&[&base[..], &["--qos", "2"]].concat(), None, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--qos"), "{err}");
    // A CSE-relative --to starting with '-' is a value, not an option.
    let (code, out, err) = run(
        &[
            "request",
            "--broker",
            &url,
            "--from",
            "/id-x",
            "--to",
            "-/id-mn",
            "--receiver",
            "/id-in",
            "--op",
            "retrieve",
        ],
        None,
        &[],
    );
    assert_eq!(code, 1, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("response");
    assert_eq!(v["rsc"], 4004);
}

#[test]
fn logs_have_no_colour_codes_when_not_on_a_terminal() {
    let broker = Mosquitto::start();
    let dir = scratch("nocolor");
    let cfg = write_config(
        &dir,
        &node_config("/id-in", "cse-in", "IN", &broker.url(), None, None, "60s"),
    );
    let log = dir.join("node.log");
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&cfg)
        .env_remove("NO_COLOR")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("run");
    wait_until(Duration::from_secs(10), "the node to connect", || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("connected to the MQTT broker"))
    });
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(
        !text.contains('\u{1b}'),
        "ANSI escapes in a file:\n{text:?}"
    );
}

/// `mosquitto/conf.d/m2mnode.conf` dropped into a Debian-like set-up: the
/// stock main config (persistence on, include_dir) plus the snippet.
#[test]
fn the_mosquitto_snippet_starts_with_the_stock_main_config() {
    let dir = scratch("snippet");
    open_dir(&dir);
    let confd = dir.join("conf.d");
    let persist = dir.join("persist");
    for d in [&confd, &persist] {
        std::fs::create_dir_all(d).expect("dir");
        open_dir(d);
    }
    let stock = std::fs::read_to_string("/etc/mosquitto/mosquitto.conf").unwrap_or_else(|_| {
        "pid_file /run/mosquitto/mosquitto.pid\npersistence true\n\
         persistence_location /var/lib/mosquitto/\n\
         log_dest file /var/log/mosquitto/mosquitto.log\ninclude_dir /etc/mosquitto/conf.d\n"
            .into()
    });
    assert!(stock.contains("persistence_location"), "{stock}");
    let main: String = stock
        .lines()
        .map(|l| {
            let t = l.trim_start();
            if t.starts_with("pid_file") {
                format!("pid_file {}", dir.join("mosquitto.pid").display())
            } else if t.starts_with("persistence_location") {
                format!("persistence_location {}/", persist.display())
            } else if t.starts_with("log_dest") {
                "log_dest stderr".into()
            } else if t.starts_with("include_dir") {
                format!("include_dir {}", confd.display())
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let main_conf = dir.join("mosquitto.conf");
    std::fs::write(&main_conf, main + "\n").expect("main conf");

    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("mosquitto");
    let snippet = std::fs::read_to_string(repo.join("conf.d/m2mnode.conf")).expect("snippet");
    for forbidden in ["persistence ", "persistence_location"] {
        assert!(
            !snippet
                .lines()
                .any(|l| l.trim_start().starts_with(forbidden)),
            "the snippet repeats the stock config's {forbidden}"
        );
    }
    for kept in [
        "set_tcp_nodelay true",
        "max_queued_messages 100000",
        "max_inflight_messages 256",
        "message_size_limit 4194304",
        "password_file /etc/mosquitto/m2mnode.passwd",
        "acl_file /etc/mosquitto/m2mnode.acl",
    ] {
        assert!(snippet.contains(kept), "the snippet lacks {kept:?}");
    }
    let passwd = dir.join("m2mnode.passwd");
    let acl = dir.join("m2mnode.acl");
    std::fs::copy(repo.join("passwd.example"), &passwd).expect("passwd");
    std::fs::copy(repo.join("acl.example"), &acl).expect("acl");
    for f in [&passwd, &acl] {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644));
    }
    let port = free_port();
    let snippet = snippet
        .replace(
            "listener 1883 127.0.0.1",
            &format!("listener {port} 127.0.0.1"),
        )
        .replace(
            "/etc/mosquitto/m2mnode.passwd",
            &passwd.display().to_string(),
        )
        .replace("/etc/mosquitto/m2mnode.acl", &acl.display().to_string());
    std::fs::write(confd.join("m2mnode.conf"), snippet).expect("snippet");
    let _broker = OwnBroker::start(&main_conf, port);
}
