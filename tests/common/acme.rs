//! Harness for running the ACME oneM2M CSE (PyPI `acmecse`) as a subprocess
//! against a local MQTT broker, for integration tests. std only.
//!
//! ```ignore
//! let cfg = AcmeConfig::in_cse("/id-in", "cse-in", mqtt_port, http_port);
//! let mut acme = Acme::start(&cfg, &workdir)?;
//! acme.wait_ready(Duration::from_secs(30))?;
//! // ... talk to it over MQTT ...
//! acme.stop();
//! ```
//!
//! See tests/acme/README.md for what the configuration does and for ACME's
//! observed behaviour on the wire.
#![allow(dead_code)]

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::thread::sleep;
use std::time::{Duration, Instant};

/// The config template (placeholders `${NAME}`, filled by plain replacement).
const TEMPLATE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/acme/acme.ini.template"
));

/// Python launcher for ACME. Instead of `python -m acmecse` it
/// - restores the default SIGINT handler (a parent that ignores SIGINT, e.g. a
///   non-interactive shell's `&`, would otherwise make ACME ignore it too, and
///   SIGINT is ACME's only graceful shutdown path),
/// - turns SIGTERM into the same graceful shutdown (ACME itself dies on SIGTERM
///   without deregistering),
/// - exits hard when its parent process goes away, so a crashed or killed test
///   does not leave ACME running.
const LAUNCHER: &str = r#"
import os, runpy, signal, sys, threading, time
def _term(*_): raise KeyboardInterrupt()
signal.signal(signal.SIGINT, signal.default_int_handler)
signal.signal(signal.SIGTERM, _term)
_ppid = os.getppid()
def _watch():
    while True:
        time.sleep(0.5)
        if os.getppid() != _ppid:
            os._exit(3)
threading.Thread(target=_watch, name="parentWatch", daemon=True).start()
sys.argv[0] = "acmecse"
runpy.run_module("acmecse", run_name="__main__", alter_sys=True)
"#;

/// Line ACME prints on stdout (and logs) ~2 s after start-up succeeded.
pub const READY_LINE: &str = "CSE started";
/// Log line of an MN/ASN after a successful registration at its registrar.
pub const REGISTERED_LINE: &str = "Registered to registrar CSE:";

/// Default grace period for [`Acme::stop`] before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(15);

/// Settings for one ACME CSE. Everything goes over MQTT on 127.0.0.1.
#[derive(Clone, Debug)]
pub struct AcmeConfig {
    /// CSE-ID with leading slash, e.g. "/id-in".
    pub cse_id: String,
    /// CSEBase resource name, e.g. "cse-in".
    pub rn: String,
    /// "IN" or "MN" (ACME also knows "ASN").
    pub cse_type: &'static str,
    /// Broker port on 127.0.0.1 (no TLS, anonymous).
    pub mqtt_port: u16,
    /// HTTP binding port on 127.0.0.1 (readiness check, inspection).
    pub http_port: u16,
    /// MN/ASN: registrar (CSE-ID with slash, CSEBase rn), reached over MQTT.
    pub registrar: Option<(String, String)>,
    /// Registration / liveness check interval (s). ACME's default is 60.
    pub check_interval_secs: u64,
    /// ACP checks. false (default of the constructors): any originator may do
    /// anything, e.g. a foreign CSE may RETRIEVE CSRs. With true a foreign CSE
    /// still may CREATE a CSR and RETRIEVE the CSEBase (allowedCSROriginators
    /// is "/*"), but gets 4103 on other CSRs.
    pub acp_checks: bool,
    /// ACME's `[mqtt] topicPrefix`: in front of `/oneM2M/...`. Default none.
    pub topic_prefix: String,
    /// `serviceProviderID`, with its slashes. Default `//acme.example.com`.
    pub sp_id: String,
    /// More ini text appended as is (e.g. `[cse.sp.registrar.<name>]`).
    pub extra_ini: String,
}

impl AcmeConfig {
    pub fn in_cse(cse_id: &str, rn: &str, mqtt_port: u16, http_port: u16) -> Self {
        AcmeConfig {
            cse_id: cse_id.to_string(),
            rn: rn.to_string(),
            cse_type: "IN",
            mqtt_port,
            http_port,
            registrar: None,
            check_interval_secs: 3,
            acp_checks: false,
            topic_prefix: String::new(),
            sp_id: "//acme.example.com".into(),
            extra_ini: String::new(),
        }
    }

    pub fn mn_cse(
        cse_id: &str,
        rn: &str,
        mqtt_port: u16,
        http_port: u16,
        registrar_csi: &str,
        registrar_rn: &str,
    ) -> Self {
        AcmeConfig {
            cse_type: "MN",
            registrar: Some((registrar_csi.to_string(), registrar_rn.to_string())),
            ..Self::in_cse(cse_id, rn, mqtt_port, http_port)
        }
    }

    /// CSE-ID without the leading slash ("id-in"), which is also the CSEBase ri.
    pub fn ri(&self) -> &str {
        self.cse_id.trim_start_matches('/')
    }

    /// Fill the template. `log_dir` must be absolute.
    pub fn render(&self, log_dir: &Path) -> Result<String, String> {
        if !self.cse_id.starts_with('/') || self.ri().is_empty() || self.ri().contains('/') {
            return Err(format!("cse_id must look like /id-x: {:?}", self.cse_id));
        }
        if !matches!(self.cse_type, "IN" | "MN" | "ASN") {
            return Err(format!(
                "cse_type must be IN, MN or ASN: {:?}",
                self.cse_type
            ));
        }
        let (reg_csi, reg_rn, in_csi) = match (&self.registrar, self.cse_type) {
            (None, "IN") => ("/".to_string(), String::new(), self.cse_id.clone()),
            (Some((csi, rn)), "MN" | "ASN") => {
                if !csi.starts_with('/') || rn.is_empty() {
                    return Err(format!("bad registrar ({csi:?}, {rn:?})"));
                }
                (csi.clone(), rn.clone(), csi.clone())
            }
            (None, t) => return Err(format!("a {t} CSE needs a registrar")),
            (Some(_), t) => return Err(format!("a {t} CSE cannot have a registrar")),
        };
        let subst: [(&str, String); 13] = [
            ("SP_ID", self.sp_id.clone()),
            ("TOPIC_PREFIX", self.topic_prefix.clone()),
            ("CSE_TYPE", self.cse_type.to_string()),
            ("CSE_RI", self.ri().to_string()),
            ("CSE_RN", self.rn.clone()),
            ("HTTP_PORT", self.http_port.to_string()),
            ("MQTT_PORT", self.mqtt_port.to_string()),
            ("REGISTRAR_CSI", reg_csi),
            ("REGISTRAR_RN", reg_rn),
            ("IN_CSI", in_csi),
            (
                "CHECK_INTERVAL",
                self.check_interval_secs.max(1).to_string(),
            ),
            ("ACP_CHECKS", self.acp_checks.to_string()),
            ("LOG_DIR", log_dir.display().to_string()),
        ];
        let mut ini = TEMPLATE.to_string() + "\n" + &self.extra_ini;
        for (k, v) in &subst {
            ini = ini.replace(&format!("${{{k}}}"), v);
        }
        // Anything like ${UPPER_CASE} left outside comments is a template bug
        // (ACME's own ${section:key} references contain a colon / lower case).
        for line in ini.lines().filter(|l| !l.trim_start().starts_with(';')) {
            let mut rest = line;
            while let Some(i) = rest.find("${") {
                let tail = &rest[i + 2..];
                let end = tail.find('}').unwrap_or(tail.len());
                let name = &tail[..end];
                if !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                {
                    return Err(format!(
                        "unfilled placeholder ${{{name}}} in acme.ini.template"
                    ));
                }
                rest = &tail[end.min(tail.len())..];
            }
        }
        Ok(ini)
    }
}

/// A running ACME CSE.
pub struct Acme {
    child: Child,
    /// ACME's debug log file (includes MQTT client debug output).
    pub log_path: PathBuf,
    /// stdout + stderr of the process (banner, "CSE started", config errors).
    pub out_path: PathBuf,
    pub workdir: PathBuf,
    pub cfg: AcmeConfig,
    exit: Option<std::process::ExitStatus>,
}

/// Path of the venv python with acmecse installed. Runs tests/acme/install.sh
/// once per test binary. `M2M_ACME_PYTHON` overrides (no install then).
pub fn acme_python() -> Result<PathBuf, String> {
    static PY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PY.get_or_init(|| {
        if let Some(p) = std::env::var_os("M2M_ACME_PYTHON") {
            return Ok(PathBuf::from(p));
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/acme/install.sh");
        let out = Command::new("bash")
            .arg(&script)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running {}: {e}", script.display()))?;
        if !out.status.success() {
            return Err(format!(
                "{} failed ({}):\n{}{}",
                script.display(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let py = stdout
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim();
        let py = PathBuf::from(py);
        if py.is_file() {
            Ok(py)
        } else {
            Err(format!("install.sh printed no python path: {stdout:?}"))
        }
    })
    .clone()
}

impl Acme {
    /// Write `<workdir>/acme.ini` and start ACME in `workdir` (created if
    /// missing; use a fresh one per CSE). Does not wait for readiness.
    pub fn start(cfg: &AcmeConfig, workdir: &Path) -> Result<Acme, String> {
        let py = acme_python()?;
        fs::create_dir_all(workdir).map_err(|e| format!("mkdir {}: {e}", workdir.display()))?;
        let workdir = workdir
            .canonicalize()
            .map_err(|e| format!("canonicalize {}: {e}", workdir.display()))?;
        let log_dir = workdir.join("logs");
        fs::create_dir_all(&log_dir).map_err(|e| format!("mkdir {}: {e}", log_dir.display()))?;
        // ACME names its log after SP-ID and CSE-ID; the SP-ID is fixed in the template.
        let log_path = log_dir.join(format!(
            "cse-{}-{}.log",
            cfg.sp_id.trim_start_matches('/'),
            cfg.ri()
        ));
        let _ = fs::remove_file(&log_path);
        let ini = cfg.render(&log_dir)?;
        // ACME takes a bare file name and looks for it in --base-directory.
        fs::write(workdir.join("acme.ini"), ini).map_err(|e| format!("write acme.ini: {e}"))?;

        let out_path = workdir.join("acme.out");
        let out =
            File::create(&out_path).map_err(|e| format!("create {}: {e}", out_path.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(&py)
            .arg("-c")
            .arg(LAUNCHER)
            .args(["--config", "acme.ini", "--base-directory"])
            .arg(&workdir)
            .arg("--headless")
            .current_dir(&workdir)
            .env("PYTHONUNBUFFERED", "1")
            .env("NO_COLOR", "1")
            .env("TERM", "dumb")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", py.display()))?;
        Ok(Acme {
            child,
            log_path,
            out_path,
            workdir,
            cfg: cfg.clone(),
            exit: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        if self.exit.is_some() {
            return false;
        }
        match self.child.try_wait() {
            Ok(Some(st)) => {
                self.exit = Some(st);
                false
            }
            Ok(None) => true,
            Err(_) => false,
        }
    }

    /// Ready = stdout shows "CSE started" (ACME's status is RUNNING, MQTT is
    /// connected and subscribed) and the CSEBase answers 2000 over HTTP.
    /// An MN is not yet registered then: use [`Acme::wait_registered`].
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let to = format!("{}/{}", self.cfg.cse_id, self.cfg.rn);
        loop {
            if !self.is_running() {
                return Err(format!(
                    "ACME exited ({:?}) before ready:\n{}",
                    self.exit,
                    self.log_tail(60)
                ));
            }
            if read_lossy(&self.out_path).contains(READY_LINE) {
                if let Ok((200, _, _)) = self.http_retrieve(&to, "CAdmin") {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "ACME not ready after {timeout:?}:\n{}",
                    self.log_tail(60)
                ));
            }
            sleep(Duration::from_millis(200));
        }
    }

    /// Wait until the log contains `needle` (searching the whole log).
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if read_lossy(&self.log_path).contains(needle) {
                return Ok(());
            }
            if !self.is_running() {
                return Err(format!(
                    "ACME exited ({:?}) while waiting for {needle:?}:\n{}",
                    self.exit,
                    self.log_tail(60)
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{needle:?} not in ACME log after {timeout:?}:\n{}",
                    self.log_tail(60)
                ));
            }
            sleep(Duration::from_millis(200));
        }
    }

    /// MN/ASN: wait until registration at the registrar succeeded.
    pub fn wait_registered(&mut self, timeout: Duration) -> Result<(), String> {
        self.wait_for_log(REGISTERED_LINE, timeout)
    }

    /// Graceful stop with [`STOP_GRACE`]; see [`Acme::stop_with`].
    pub fn stop(&mut self) {
        self.stop_with(STOP_GRACE)
    }

    /// SIGINT (ACME deregisters: an MN DELETEs its CSR at the registrar), wait
    /// up to `grace`, then SIGKILL. ACME 2026.5.3 sometimes hangs forever in
    /// its MQTT shutdown (UNSUBACK race); that happens after deregistration,
    /// so once the MQTT unsubscribes show up in the log we give it 1 s more.
    pub fn stop_with(&mut self, grace: Duration) {
        if !self.is_running() {
            return;
        }
        let log_len_before = fs::metadata(&self.log_path).map(|m| m.len()).unwrap_or(0) as usize;
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + grace;
        let mut unsub_seen: Option<Instant> = None;
        while Instant::now() < deadline {
            if !self.is_running() {
                return;
            }
            if unsub_seen.is_none() {
                let log = read_lossy(&self.log_path);
                if log
                    .get(log_len_before..)
                    .is_some_and(|s| s.contains("Sending UNSUBSCRIBE"))
                {
                    unsub_seen = Some(Instant::now());
                }
            }
            if unsub_seen.is_some_and(|t| t.elapsed() > Duration::from_secs(1)) {
                break;
            }
            sleep(Duration::from_millis(100));
        }
        self.kill();
    }

    /// SIGKILL (no deregistration) and reap.
    pub fn kill(&mut self) {
        if self.is_running() {
            let _ = self.child.kill();
        }
        if self.exit.is_none() {
            self.exit = self.child.wait().ok();
        }
    }

    /// stdout/stderr followed by the debug log.
    pub fn log(&self) -> String {
        format!(
            "==== {} ====\n{}\n==== {} ====\n{}",
            self.out_path.display(),
            read_lossy(&self.out_path),
            self.log_path.display(),
            read_lossy(&self.log_path)
        )
    }

    /// Last `n` lines of [`Acme::log`], for error messages.
    pub fn log_tail(&self, n: usize) -> String {
        let all = self.log();
        let lines: Vec<&str> = all.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// oneM2M RETRIEVE over ACME's HTTP binding. `to` is SP-relative
    /// ("/id-in/cse-in/id-mn"). Returns (HTTP status, X-M2M-RSC, body).
    pub fn http_retrieve(
        &self,
        to: &str,
        originator: &str,
    ) -> Result<(u16, Option<u32>, String), String> {
        let mut s =
            TcpStream::connect(("127.0.0.1", self.cfg.http_port)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(15))).ok();
        let path = format!("/~{to}");
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nX-M2M-Origin: {originator}\r\n\
             X-M2M-RI: harness\r\nX-M2M-RVI: 3\r\nAccept: application/json\r\nConnection: close\r\n\r\n",
            self.cfg.http_port
        );
        s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).map_err(|e| e.to_string())?;
        let _ = s.shutdown(Shutdown::Both);
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("bad HTTP response: {head:?}"))?;
        let rsc = head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("X-M2M-RSC")
                .then(|| v.trim().parse().ok())?
        });
        Ok((status, rsc, body.to_string()))
    }
}

impl Drop for Acme {
    fn drop(&mut self) {
        self.kill();
    }
}

fn read_lossy(p: &Path) -> String {
    fs::read(p)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}
