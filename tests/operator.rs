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
            use common::mqtt::{Incoming, MqttClient, Options};
            let mut opts = Options::new(&url, format!("fake-{own}-{}", free_port()), own);
            opts.login = credentials.map(|(u, p)| (u.to_owned(), p.to_owned()));
            let (t, mut rx) = MqttClient::connect(opts, Duration::from_secs(10))
                .await
                .expect("fake node connects");
            let _ = ready_tx.send(());
            let end = tokio::time::Instant::now() + Duration::from_secs(60);
            while let Ok(Some(ev)) = tokio::time::timeout_at(end, rx.recv()).await {
                let Incoming::Request { route, payload } = ev else {
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
                t.answer(&route, fmt, &rsp).await;
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

    // A data_dir that cannot be created (below a file).
    std::fs::write(dir.join("a-file"), "x").expect("file");
    let text = mn_config("mqtt://127.0.0.1:1883").replace(
        "type = \"MN\"\n",
        &format!(
            "type = \"MN\"\ndata_dir = \"{}\"\n",
            dir.join("a-file/data").display()
        ),
    );
    let cfg = write_config(&dir, &text);
    let (code, _, err) = check(&cfg, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("node.toml:5: cse.data_dir:"), "{err}");
    assert!(err.contains("is not a directory"), "{err}");

    // A relative data_dir is the config file's directory's, not the cwd's;
    // check-config creates nothing (the note names where run would).
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
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("{} does not exist", dir.join("state").display())),
        "{stdout}"
    );
    assert!(!dir.join("state").exists(), "check-config created data_dir");
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

fn password_broker() -> (OwnBroker, u16) {
    let dir = scratch("passwd");
    open_dir(&dir);
    let passwd = dir.join("passwd");
    let made = Command::new("mosquitto_passwd")
        .args(["-c", "-b"])
        .arg(&passwd)
        .args(["cse-mn", "s3cret"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        made,
        "mosquitto_passwd could not make a password file: it comes with the mosquitto package"
    );
    let added = Command::new("mosquitto_passwd")
        .arg("-b")
        .arg(&passwd)
        .args(["cse-in", "in-pass"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(added, "mosquitto_passwd could not add a second user");
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
    (OwnBroker::start(&conf, port), port)
}

#[test]
fn request_with_credentials_and_a_fast_failure_on_bad_ones() {
    let (_broker, port) = password_broker();
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
        "max_packet_size 4194304",
        "password_file /etc/mosquitto/m2mnode.passwd",
        "acl_file /etc/mosquitto/m2mnode.acl",
    ] {
        assert!(snippet.contains(kept), "the snippet lacks {kept:?}");
    }
    assert!(
        !snippet.contains("\nmessage_size_limit"),
        "deprecated in Mosquitto 2.0"
    );
    let (passwd, acl) = passwd_and_acl(&dir);
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
    let broker = OwnBroker::start(&main_conf, port);
    // It takes a user made with mosquitto_passwd, as the docs say.
    let c = Client::connect_url(
        &format!("mqtt://127.0.0.1:{port}"),
        "/id-mn",
        Some(("cse-mn", "mn-pass")),
        "",
    );
    drop(c);
    let log = std::fs::read_to_string(&broker.1).unwrap_or_default();
    assert!(!log.contains("deprecated"), "{log}");
}

/// The users the docs add, made with mosquitto_passwd, and
/// mosquitto/acl.example, both readable by the broker's user.
const USERS: [(&str, &str); 3] = [
    ("cse-in", "in-pass"),
    ("cse-mn", "mn-pass"),
    ("m2mnode-status", "status-pass"),
];

fn passwd_and_acl(dir: &Path) -> (PathBuf, PathBuf) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("mosquitto");
    let passwd = dir.join("m2mnode.passwd");
    let acl = dir.join("m2mnode.acl");
    for (i, (user, pass)) in USERS.iter().enumerate() {
        let mut cmd = Command::new("/usr/bin/mosquitto_passwd");
        if i == 0 {
            cmd.arg("-c");
        }
        let ok = cmd
            .arg("-b")
            .arg(&passwd)
            .args([user, pass])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "mosquitto_passwd (from the mosquitto package) failed");
    }
    let text = std::fs::read_to_string(repo.join("acl.example")).expect("acl");
    for (user, _) in USERS {
        assert!(
            text.contains(&format!("\nuser {user}\n")),
            "acl.example lacks {user}"
        );
    }
    std::fs::write(&acl, text).expect("acl");
    for f in [&passwd, &acl] {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644));
    }
    (passwd, acl)
}

/// `mosquitto/production.conf` as it is, its paths moved to a scratch
/// directory: a complete configuration that starts on its own.
#[test]
fn the_complete_production_conf_starts_on_its_own() {
    let dir = scratch("production");
    open_dir(&dir);
    let persist = dir.join("persist");
    std::fs::create_dir_all(&persist).expect("dir");
    open_dir(&persist);
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("mosquitto");
    let text = std::fs::read_to_string(repo.join("production.conf")).expect("production.conf");
    assert!(text.starts_with("# A COMPLETE mosquitto.conf"), "{text}");
    assert!(!text.contains("\nmessage_size_limit"), "deprecated");
    let (passwd, acl) = passwd_and_acl(&dir);
    let port = free_port();
    let text = text
        .replace(
            "listener 1883 127.0.0.1",
            &format!("listener {port} 127.0.0.1"),
        )
        .replace(
            "pid_file /run/mosquitto/mosquitto.pid",
            &format!("pid_file {}", dir.join("mosquitto.pid").display()),
        )
        .replace(
            "persistence_location /var/lib/mosquitto/",
            &format!("persistence_location {}/", persist.display()),
        )
        .replace(
            "log_dest file /var/log/mosquitto/mosquitto.log",
            "log_dest stderr",
        )
        .replace(
            "/etc/mosquitto/m2mnode.passwd",
            &passwd.display().to_string(),
        )
        .replace("/etc/mosquitto/m2mnode.acl", &acl.display().to_string());
    let live = |l: &&str| !l.trim_start().starts_with('#');
    assert!(
        !text
            .lines()
            .filter(live)
            .any(|l| l.contains("/etc/") || l.contains("/var/") || l.contains("/run/")),
        "{text}"
    );
    let conf = dir.join("mosquitto.conf");
    std::fs::write(&conf, text).expect("conf");
    let broker = OwnBroker::start(&conf, port);
    let c = Client::connect_url(
        &format!("mqtt://127.0.0.1:{port}"),
        "Cm2mnode-status",
        Some(("m2mnode-status", "status-pass")),
        "",
    );
    drop(c);
    let log = std::fs::read_to_string(&broker.1).unwrap_or_default();
    assert!(!log.contains("deprecated"), "{log}");
}

// ---- Issue "Operate it, round two" ----

/// The examples from the issue: each file's problems all come out in one
/// run, with key and line, and nothing is created.
#[test]
fn check_config_finds_every_problem_in_one_run_and_writes_nothing() {
    let dir = scratch("check-all");
    let text = mn_config("http://127.0.0.1:1883").replace(
        "check_interval = \"60s\"\n\n[registrees]",
        "check_interval = \"soon\"\n\n[registrees]",
    );
    let cfg = write_config(&dir, &text);
    let (code, _, err) = check(&cfg, &[]);
    assert_eq!(code, 2, "{err}");
    let line = |text: &str, needle: &str| {
        text.lines()
            .position(|l| l.starts_with(needle))
            .map(|i| i + 1)
            .expect("in text")
    };
    assert!(
        err.contains(&format!("node.toml:{}: mqtt.url:", line(&text, "url ="))),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "node.toml:{}: registrar.check_interval:",
            line(&text, "check_interval = \"soon\"")
        )),
        "{err}"
    );

    let data = dir.join("not-yet/data");
    let text = format!(
        "[cse]\nid = \"id-mn\"\nname = \"cse-mn\"\ntype = \"MN\"\ndata_dir = \"{}\"\n\n[mqtt]\nurl = \"mqtts://127.0.0.1:8883\"\n",
        data.display()
    );
    let cfg = write_config(&dir, &text);
    let (code, _, err) = check(&cfg, &[]);
    assert_eq!(code, 2, "{err}");
    // A missing key is reported at its section's header.
    for (key, at) in [("cse.id", 2), ("mqtt.ca_file", 7), ("cse.type", 4)] {
        assert!(
            err.contains(&format!("node.toml:{at}: {key}:")),
            "{key}: {err}"
        );
    }
    assert!(err.contains("3 problems"), "{err}");
    assert!(
        !dir.join("not-yet").exists(),
        "check-config created data_dir"
    );

    // As the service user: a store file it cannot write is named, with the fix.
    let state = dir.join("state");
    std::fs::create_dir_all(&state).expect("state");
    std::fs::write(state.join("m2mnode.lock"), "").expect("lock");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        state.join("m2mnode.lock"),
        std::fs::Permissions::from_mode(0o600),
    )
    .expect("chmod");
    let text = mn_config("mqtt://127.0.0.1:1883").replace(
        "type = \"MN\"\n",
        &format!("type = \"MN\"\ndata_dir = \"{}\"\n", state.display()),
    );
    let cfg = write_config(&dir, &text);
    let (code, _, err) = run(
        &[
            "check-config",
            "--config",
            cfg.to_str().expect("utf-8"),
            "--user",
            "nobody",
        ],
        None,
        &[],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("cse.data_dir:") && err.contains("nobody"),
        "{err}"
    );
    let (code, _, err) = run(
        &[
            "check-config",
            "--config",
            cfg.to_str().expect("utf-8"),
            "--user",
            "no-such-user-x",
        ],
        None,
        &[],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no such user"), "{err}");
}

/// Every shipped example passes check-config as it is (its password files
/// in the credentials directory, as systemd's LoadCredential= puts them).
#[test]
fn every_shipped_example_passes_check_config() {
    let creds = scratch("creds");
    for f in ["mqtt-password", "operator-password"] {
        std::fs::write(creds.join(f), "secret\n").expect("credential");
    }
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut n = 0;
    for entry in std::fs::read_dir(&examples).expect("examples/") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        n += 1;
        let (code, out, err) = run(
            &[
                "check-config",
                "--config",
                path.to_str().expect("utf-8"),
                "--user",
                "root",
            ],
            None,
            &[("CREDENTIALS_DIRECTORY", creds.to_str().expect("utf-8"))],
        );
        assert_eq!(code, 0, "{}: {err}", path.display());
        assert!(out.contains(": ok"), "{out}");
    }
    assert_eq!(n, 3, "gateway MN, registrar IN, two brokers");
}

/// `mqtt.password_file`: read by status, check-config and run, relative to
/// the config's directory or in $CREDENTIALS_DIRECTORY; a username without
/// any password is reported; a refused login is a WARN with the reason.
#[test]
fn the_password_file_serves_status_check_config_and_run() {
    let (_broker, port) = password_broker();
    let url = format!("mqtt://127.0.0.1:{port}");
    fake_node(
        url.clone(),
        "/id-mn",
        "cse-mn",
        status_json(true),
        Some(("cse-in", "in-pass")),
    );
    let dir = scratch("pwfile");
    std::fs::write(dir.join("pw"), "s3cret\n").expect("pw");
    let with = |file: &str| {
        mn_config(&url).replace(
            "[mqtt]\n",
            &format!("[mqtt]\nusername = \"cse-mn\"\npassword_file = \"{file}\"\n"),
        )
    };
    let cfg = write_config(&dir, &with("pw"));
    let c = cfg.to_str().expect("utf-8");
    let (code, out, err) = run(&["status", "--config", c], None, &[]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = check(&cfg, &[]);
    assert_eq!(code, 0, "{err}");

    // Only in the credentials directory.
    let creds = scratch("pwcreds");
    std::fs::write(creds.join("mqtt-password"), "s3cret").expect("credential");
    let cfg = write_config(&dir, &with("mqtt-password"));
    let c = cfg.to_str().expect("utf-8");
    let env = [("CREDENTIALS_DIRECTORY", creds.to_str().expect("utf-8"))];
    let (code, out, err) = run(&["status", "--config", c], None, &env);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = check(&cfg, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("mqtt.password_file: cannot read"), "{err}");

    // A username and no password anywhere.
    let cfg = write_config(
        &dir,
        &mn_config(&url).replace("[mqtt]\n", "[mqtt]\nusername = \"cse-mn\"\n"),
    );
    let (code, _, err) = check(&cfg, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("mqtt.username: \"cse-mn\" has no password"),
        "{err}"
    );

    // run: logs in with it; a wrong one is a WARN with the broker's reason.
    let node = Node::start("pw-run", &with(dir.join("pw").to_str().expect("utf-8")));
    node.wait_connected(Duration::from_secs(10));
    std::fs::write(dir.join("wrong"), "nope").expect("pw");
    let node = Node::start(
        "pw-wrong",
        &with(dir.join("wrong").to_str().expect("utf-8")),
    );
    // Mosquitto 2.0 answers a wrong password with CONNACK 5 (not authorized).
    node.wait_log("refused the login as \"cse-mn\": ", Duration::from_secs(10));
    let log = node.log();
    assert!(
        log.lines().any(|l| l.contains(" WARN ")
            && l.contains("refused the login")
            && l.contains("(CONNACK return code")),
        "{log}"
    );
}

#[test]
fn status_json_prints_an_error_object_when_it_fails() {
    let dir = scratch("status-json-err");
    let cfg = write_config(
        &dir,
        &mn_config(&format!("mqtt://127.0.0.1:{}", free_port())),
    );
    let (code, out, err) = run(
        &["status", "--config", cfg.to_str().expect("utf-8"), "--json"],
        None,
        &[],
    );
    assert_eq!(code, 3, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("a JSON error object");
    assert_eq!(v["kind"], "no_broker", "{v}");
    assert_eq!(v["exit_code"], 3, "{v}");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot reach")),
        "{v}"
    );
}

/// A responder that answers with `rsc`, `rqi` and `pc` only, as a node
/// relays a 4008: `request` prints it and exits 1; silence is exit 3.
#[test]
fn request_prints_any_answer_and_only_silence_is_exit_3() {
    let broker = Mosquitto::start();
    let url = broker.url();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let u = url.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        rt.block_on(async move {
            let opts = common::mqtt::Options::new(&u, "bare-responder", "/id-in");
            let (t, mut rx) = common::mqtt::MqttClient::connect(opts, Duration::from_secs(10))
                .await
                .expect("connect");
            let _ = ready_tx.send(());
            let end = tokio::time::Instant::now() + Duration::from_secs(30);
            while let Ok(Some(ev)) = tokio::time::timeout_at(end, rx.recv()).await {
                let common::mqtt::Incoming::Request { route, payload } = ev else {
                    continue;
                };
                let v: serde_json::Value = serde_json::from_slice(&payload).expect("json");
                let bare =
                    json!({"rsc": 4008, "rqi": v["rqi"], "pc": {"m2m:dbg": "relayed: no answer"}});
                t.publish(route.response_topic(), bare.to_string().into_bytes())
                    .await;
            }
        });
    });
    ready_rx
        .recv_timeout(Duration::from_secs(15))
        .expect("ready");
    let base = [
        "request", "--broker", &url, "--from", "/id-x", "--op", "retrieve",
    ];
    let (code, out, err) = run(
        &[
            &base[..],
            &["--to", "/id-in/cse-in/id-mn", "--timeout", "5s"],
        ]
        .concat(),
        None,
        &[],
    );
    assert_eq!(code, 1, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("the answer");
    assert_eq!(v["rsc"], 4008, "{v}");
    assert_eq!(v["pc"]["m2m:dbg"], "relayed: no answer", "{v}");
    // Nobody on /id-nobody: silence, with the topics and the ACL hint.
    let (code, _, err) = run(
        &[&base[..], &["--to", "/id-nobody/cse", "--timeout", "1s"]].concat(),
        None,
        &[],
    );
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("no response from /id-nobody"), "{err}");
    assert!(
        err.contains("/oneM2M/req/id-x/id-nobody/json") && err.contains("ACL"),
        "{err}"
    );
}

/// TLS and connection errors name the file or the likely fix.
#[test]
fn request_errors_name_the_file_or_the_fix() {
    let dir = scratch("hints");
    assert!(make_certificates(&dir), "openssl failed");
    let other = scratch("hints-other-ca");
    assert!(make_certificates(&other), "openssl failed");
    let vars = |d: &Path| {
        vec![
            ("CAFILE".to_string(), d.join("ca.crt").display().to_string()),
            (
                "CERTFILE".to_string(),
                d.join("server.crt").display().to_string(),
            ),
            (
                "KEYFILE".to_string(),
                d.join("server.key").display().to_string(),
            ),
        ]
    };
    open_dir(&dir);
    let broker = Mosquitto::start_with(free_port(), "test-tls.conf", vars(&dir));
    let base = |url: String| {
        vec![
            "request".to_string(),
            "--broker".into(),
            url,
            "--from".into(),
            "/id-x".into(),
            "--to".into(),
            "/id-in/cse-in".into(),
            "--op".into(),
            "retrieve".into(),
        ]
    };
    let go = |args: Vec<String>| {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&a, None, &[])
    };
    let tls = format!("mqtts://127.0.0.1:{}", broker.port);
    // A key given as the CA file: named before connecting.
    let mut a = base(tls.clone());
    a.extend([
        "--ca-file".into(),
        dir.join("client.key").display().to_string(),
    ]);
    let (code, _, err) = go(a);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--ca-file") && err.contains("private key"),
        "{err}"
    );
    // The wrong CA: --ca-file is the fix.
    let mut a = base(tls.clone());
    a.extend([
        "--ca-file".into(),
        other.join("ca.crt").display().to_string(),
        "--cert".into(),
        dir.join("client.crt").display().to_string(),
        "--key".into(),
        dir.join("client.key").display().to_string(),
    ]);
    let (code, _, err) = go(a);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("--ca-file") && err.contains("not signed by a CA in"),
        "{err}"
    );
    // mqtt:// to the TLS port: mqtts:// is the fix.
    let (code, _, err) = go(base(format!("mqtt://127.0.0.1:{}", broker.port)));
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("mqtts://"), "{err}");
    // --broker help lists every scheme.
    let (_, out, _) = run(&["request", "--help"], None, &[]);
    for scheme in ["mqtt://", "mqtts://", "ws://", "wss://"] {
        assert!(out.contains(scheme), "{scheme}: {out}");
    }
}

/// SIGTERM of an MN (deregistering) and of an IN (nothing to deregister):
/// nothing at WARN or above, and each stops within a second.
#[test]
fn a_clean_stop_is_quiet_and_quick() {
    let broker = Mosquitto::start();
    let mut inn = Node::start(
        "quiet-in",
        &node_config("/id-in", "cse-in", "IN", &broker.url(), None, None, "60s"),
    );
    inn.wait_connected(Duration::from_secs(10));
    let mut mn = Node::start("quiet-mn", &mn_config(&broker.url()));
    mn.wait_registered(Duration::from_secs(15));
    for (name, node) in [("MN", &mut mn), ("IN", &mut inn)] {
        let t = std::time::Instant::now();
        assert!(
            node.terminate(Duration::from_secs(10)),
            "{name} did not stop"
        );
        let took = t.elapsed();
        assert!(took < Duration::from_secs(1), "{name} took {took:?}");
        let log = node.log();
        let loud: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .collect();
        assert!(loud.is_empty(), "{name}: {loud:#?}");
    }
    assert!(
        mn.log().contains("deregistered from /id-in"),
        "{}",
        mn.log()
    );
}

/// An empty RUST_LOG logs at info (and says so); a typo too, with a warning.
#[test]
fn an_empty_or_bad_rust_log_falls_back_to_info() {
    let broker = Mosquitto::start();
    let dir = scratch("rust-log");
    let cfg = write_config(
        &dir,
        &node_config("/id-in", "cse-in", "IN", &broker.url(), None, None, "60s"),
    );
    for (value, said) in [
        ("", "RUST_LOG is empty; logging at info"),
        ("debugg", "\"debugg\" is neither a level"),
    ] {
        let log = dir.join("node.log");
        let mut child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(&cfg)
            .env("RUST_LOG", value)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("run");
        wait_until(Duration::from_secs(10), "an INFO line", || {
            std::fs::read_to_string(&log).is_ok_and(|l| l.contains("connected to the MQTT broker"))
        });
        let _ = child.kill();
        let _ = child.wait();
        let text = std::fs::read_to_string(&log).expect("log");
        assert_eq!(text.matches(said).count(), 1, "{value:?}: {text}");
    }
}

/// The command lines of a Markdown file's fenced blocks that run `m2mnode`
/// (continuations joined, `$ ` prompts, shell redirections and comments
/// dropped), except `run` and `demo`, which do not end.
fn doc_commands(file: &str) -> Vec<String> {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file)).expect("doc");
    let mut out = Vec::new();
    let mut fenced = false;
    let mut current: Option<String> = None;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            continue;
        }
        let l = line.trim();
        let l = l.strip_prefix("$ ").unwrap_or(l);
        let joined = match current.take() {
            Some(mut c) => {
                c.push(' ');
                c.push_str(l);
                c
            }
            None if l.starts_with("m2mnode ") => l.to_owned(),
            None => continue,
        };
        if let Some(head) = joined.strip_suffix('\\') {
            current = Some(head.trim_end().to_owned());
            continue;
        }
        let mut cmd = joined;
        for cut in [" #", " >", " |", " &&", ";"] {
            if let Some(i) = cmd.find(cut) {
                cmd.truncate(i);
            }
        }
        // A synopsis's optional parts ([--ty 16]) are left out.
        while let (Some(a), Some(b)) = (cmd.find('['), cmd.find(']')) {
            if b < a {
                break;
            }
            cmd.replace_range(a..=b, "");
        }
        if !["m2mnode run", "m2mnode demo"]
            .iter()
            .any(|s| cmd.starts_with(s))
        {
            out.push(cmd.split_whitespace().collect::<Vec<_>>().join(" "));
        }
    }
    out
}

/// Splits a command line as a shell would (quotes, no expansions).
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut w = String::new();
    let mut quote = None;
    let mut any = false;
    for c in line.chars() {
        match (quote, c) {
            (None, '"' | '\'') => {
                quote = Some(c);
                any = true;
            }
            (Some(q), c) if c == q => quote = None,
            (None, c) if c.is_whitespace() => {
                if any {
                    words.push(std::mem::take(&mut w));
                    any = false;
                }
            }
            (_, c) => {
                w.push(c);
                any = true;
            }
        }
    }
    if any {
        words.push(w);
    }
    words
}

/// Runs every doc command once against a live IN and MN on `url`, with
/// paths and the broker moved to the test's: each must exit 0.
fn run_doc_commands(
    file: &str,
    url: &str,
    node_toml: &Path,
    dir: &Path,
    env: &[(&str, &str)],
) -> usize {
    let me = m2mnode::config::Account::current()
        .expect("current user")
        .name;
    let commands = doc_commands(file);
    for cmd in &commands {
        let line = cmd
            .replace("mqtt://127.0.0.1:1883", url)
            .replace("/etc/m2mnode/node.toml", &node_toml.display().to_string())
            .replace(
                "/etc/m2mnode/m2mnode.toml",
                &node_toml.display().to_string(),
            )
            .replace(" node.toml", &format!(" {}", node_toml.display()))
            .replace("/etc/m2mnode/", &format!("{}/", dir.display()))
            .replace("--user m2mnode", &format!("--user {me}"));
        let words = shell_words(&line);
        assert_eq!(words.first().map(String::as_str), Some("m2mnode"), "{line}");
        let args: Vec<&str> = words[1..].iter().map(String::as_str).collect();
        let (code, out, err) = run(&args, None, env);
        assert_eq!(code, 0, "{file}: {cmd}\nran: {line}\n{out}{err}");
    }
    commands.len()
}

/// Every command line of README.md that talks to a node, run once against
/// an IN and an MN on a test broker.
#[test]
fn the_readme_commands_work() {
    let broker = Mosquitto::start();
    let _inn = Node::start(
        "readme-in",
        &node_config("/id-in", "cse-in", "IN", &broker.url(), None, None, "60s"),
    );
    let mn = Node::start("readme-mn", &mn_config(&broker.url()));
    mn.wait_registered(Duration::from_secs(15));
    let dir = scratch("readme-cmds");
    let n = run_doc_commands("README.md", &broker.url(), mn.config_path(), &dir, &[]);
    assert!(n >= 2, "{n} commands");
}

/// Every command line of docs/operations.md that talks to a node, run once
/// against the set-up it describes: Debian's stock mosquitto.conf with the
/// conf.d snippet, users made with mosquitto_passwd, acl.example, an IN and
/// an MN from examples/ with their passwords in password files.
#[test]
fn the_operations_guide_commands_work() {
    let dir = scratch("ops-cmds");
    open_dir(&dir);
    let (passwd, acl) = passwd_and_acl(&dir);
    let port = free_port();
    let snippet = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("mosquitto/conf.d/m2mnode.conf"),
    )
    .expect("snippet")
    .replace(
        "listener 1883 127.0.0.1",
        &format!("listener {port} 127.0.0.1"),
    )
    .replace(
        "/etc/mosquitto/m2mnode.passwd",
        &passwd.display().to_string(),
    )
    .replace("/etc/mosquitto/m2mnode.acl", &acl.display().to_string());
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("persistence false\nlog_dest stderr\n{snippet}\n"),
    )
    .expect("conf");
    let _broker = OwnBroker::start(&conf, port);
    let url = format!("mqtt://127.0.0.1:{port}");
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let example = |name: &str, user: &str| {
        let (_, pass) = USERS.iter().find(|(u, _)| *u == user).expect("user");
        let pw = dir.join(format!("{user}-password"));
        std::fs::write(&pw, format!("{pass}\n")).expect("password file");
        let data = scratch(&format!("ops-{user}-data"));
        std::fs::read_to_string(examples.join(name))
            .expect("example")
            .replace("mqtt://127.0.0.1:1883", &url)
            .replace("\"/var/lib/m2mnode\"", &format!("\"{}\"", data.display()))
            .replace("\"mqtt-password\"", &format!("\"{}\"", pw.display()))
    };
    let _inn = Node::start("ops-in", &example("registrar-in.toml", "cse-in"));
    let mn = Node::start("ops-mn", &example("gateway-mn.toml", "cse-mn"));
    // Behind the ACL only the health-check user reads the status: the log.
    mn.wait_log("registered at /id-in", Duration::from_secs(15));
    std::fs::write(dir.join("status-password"), "status-pass\n").expect("status password");
    let n = run_doc_commands(
        "docs/operations.md",
        &url,
        mn.config_path(),
        &dir,
        &[("M2MNODE_MQTT_PASSWORD", "mn-pass")],
    );
    assert!(n >= 5, "{n} commands");
    // The ACL drops a publish outside the user's topics without a word: the
    // CLI says that this may be why nothing came back.
    let (code, _, err) = run(
        &[
            "request",
            "--broker",
            &url,
            "--username",
            "cse-mn",
            "--password",
            "mn-pass",
            "--from",
            "/id-x",
            "--to",
            "/id-in/cse-in",
            "--op",
            "retrieve",
            "--timeout",
            "1s",
        ],
        None,
        &[],
    );
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("ACL drops a publish"), "{err}");
}
