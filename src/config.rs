//! The TOML configuration (docs/operations.md, "Configuration"), validated with
//! errors that name the setting at fault.

use crate::engine::{EngineSettings, Limits, RegistrarSettings, UpstreamSettings};
use crate::id::CseId;
use crate::primitive::{Format, ResourceType, SUPPORTED_RELEASES};
use crate::resource::{CseBase, CseType, CSZ};
use serde::{Deserialize, Deserializer};
use std::path::{Path, PathBuf};
use std::time::Duration;

mod intersp;
pub use intersp::SpRegistrarConfig;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub cse: CseConfig,
    pub mqtt: MqttConfig,
    #[serde(default)]
    pub registrar: Option<RegistrarConfig>,
    #[serde(default)]
    pub registrees: RegistreesConfig,
    #[serde(default)]
    pub security: SecurityConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub metrics: Option<MetricsConfig>,
    /// `[sp_registrar.<name>]`: IN-CSEs of other SPs (config/intersp.rs).
    #[serde(default)]
    pub sp_registrar: std::collections::BTreeMap<String, SpRegistrarConfig>,
}

/// `[metrics]`: Prometheus metrics over HTTP (docs/operations.md
/// "Metrics"); without the section nothing listens.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Where `GET /metrics` is served, e.g. "127.0.0.1:9464".
    pub listen: std::net::SocketAddr,
}

/// Bounds on what requests can make the node hold (docs/protocol.md
/// §12); every key is optional and defaults to [`Limits::default`].
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    pub list_entries: Option<usize>,
    pub dcse_entries: Option<usize>,
    pub value_length: Option<usize>,
    pub name_length: Option<usize>,
    pub answer_cache_bytes: Option<usize>,
    pub forwards_in_flight: Option<usize>,
    pub forwards_per_hop: Option<usize>,
    pub memory_bytes: Option<usize>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityConfig {
    /// An originator allowed to do anything (as ACME's `admin`), when it
    /// speaks for itself on its own topic. Default: none.
    #[serde(default)]
    pub admin: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CseConfig {
    pub id: CseId,
    pub name: String,
    #[serde(rename = "type")]
    pub cse_type: CseType,
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// SP-ID without slashes, advertised as `spi`. Unset: no `spi` is
    /// advertised and absolute IDs of any SP are taken as this one's (a
    /// single-SP deployment). Set it to the peers' SP-ID or not at all: ACME
    /// adopts its registrar's `spi` and stops reaching it if they differ.
    #[serde(default)]
    pub sp_id: Option<String>,
    /// pointOfAccess advertised in the CSEBase and the own CSR; defaults to
    /// the broker URL (without credentials), which is how ACME picks MQTT.
    #[serde(default)]
    pub poa: Option<Vec<String>>,
    #[serde(default)]
    pub labels: Vec<String>,
    #[serde(default)]
    pub node_link: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    pub url: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// A file whose content (without its final line break) is the password,
    /// read by `run`, `status` and `check-config`. Relative: looked up in
    /// `$CREDENTIALS_DIRECTORY` first (systemd `LoadCredential=`), then in
    /// the config file's directory (docs/operations.md "The MQTT password").
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    #[serde(default = "default_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    #[serde(default = "default_qos")]
    pub qos: u8,
    #[serde(default = "default_keep_alive", deserialize_with = "duration")]
    pub keep_alive: Duration,
    #[serde(default = "default_max_payload")]
    pub max_payload: usize,
    /// Put in front of `/oneM2M/...` in every topic this connection
    /// subscribes or publishes (ACME's `topicPrefix`). Default: none.
    #[serde(default)]
    pub topic_prefix: String,
    /// `password` came from `M2MNODE_MQTT_PASSWORD` (set by [`Config::load`]).
    #[serde(skip)]
    pub password_from_env: bool,
    /// Why `password_file` could not be read (set by [`Config::load`]).
    #[serde(skip)]
    pub password_file_error: Option<String>,
    /// `password` came from `password_file` (set by [`Config::load`]).
    #[serde(skip)]
    pub password_from_file: bool,
}

impl MqttConfig {
    fn password_from_file(&self) -> bool {
        self.password_from_file
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrarConfig {
    pub id: CseId,
    pub name: String,
    #[serde(default = "default_check_interval", deserialize_with = "duration")]
    pub check_interval: Duration,
    /// The broker toward the registrar, when it is not `[mqtt]` (a gateway
    /// between a local broker and the operator's): the own registration and
    /// everything to and from the registrar go there; registrees stay on
    /// `[mqtt]`.
    #[serde(default)]
    pub mqtt: Option<MqttConfig>,
    /// `"json"` or `"cbor"`: what requests forwarded to the registrar are
    /// sent in when its `<CSEBase>` declares no `csz` (JSON if unset;
    /// docs/protocol.md §4.4). A declared `csz` wins.
    #[serde(default, deserialize_with = "serialization")]
    pub serialization: Option<Format>,
}

fn serialization<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Format>, D::Error> {
    let s = String::deserialize(d)?;
    Format::from_suffix(&s).map(Some).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "{s:?} is not a serialization: \"json\" or \"cbor\""
        ))
    })
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistreesConfig {
    /// Glob patterns (`*`, `?`) of CSE-IDs allowed to register here.
    #[serde(default = "default_allowed")]
    pub allowed: Vec<String>,
    /// How often each registree's CSEBase is retrieved to see it is alive.
    #[serde(default = "default_check_interval", deserialize_with = "duration")]
    pub check_interval: Duration,
    /// Registrees at most; beyond, a CREATE is refused (5000, with the reason).
    #[serde(default = "default_max_registrees")]
    pub max: usize,
}

impl Default for RegistreesConfig {
    fn default() -> Self {
        RegistreesConfig {
            allowed: default_allowed(),
            check_interval: default_check_interval(),
            max: default_max_registrees(),
        }
    }
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_qos() -> u8 {
    1
}
fn default_keep_alive() -> Duration {
    Duration::from_secs(30)
}
/// Large enough for the `dcse` of an MN with 100,000 descendants (about
/// 1.7 MB at 17 bytes a CSE-ID; issue 20), within the brokers'
/// `message_size_limit` of 4 MiB (mosquitto/).
fn default_max_payload() -> usize {
    2 << 20
}
fn default_check_interval() -> Duration {
    Duration::from_secs(60)
}
fn default_max_registrees() -> usize {
    Limits::default().max_registrees
}
fn default_allowed() -> Vec<String> {
    vec!["*".into()]
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| {
        serde::de::Error::custom(format!("{s:?} is not a duration like \"10s\" ({e})"))
    })
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("{0}: {1}")]
    Parse(PathBuf, String),
    #[error("{path}: {problems}", problems = .1.join("; "), path = .0.display())]
    Invalid(PathBuf, Vec<String>),
}

/// A broker address taken apart (TS-0010 6.6: no port means 1883/8883;
/// `ws://` and `wss://`, MQTT over WebSocket, default to 80/443).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerUrl {
    /// TLS: `mqtts://` or `wss://`.
    pub tls: bool,
    /// MQTT over WebSocket: `ws://` or `wss://`.
    pub ws: bool,
    pub host: String,
    pub port: u16,
    /// The WebSocket path (`/mqtt`, say), with its leading `/`; empty for
    /// plain MQTT and for a WebSocket URL without one.
    pub path: String,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl BrokerUrl {
    pub fn parse(url: &str) -> Result<BrokerUrl, String> {
        let schemes = [
            ("mqtt://", false, false),
            ("mqtts://", true, false),
            ("ws://", false, true),
            ("wss://", true, true),
        ];
        let Some((tls, ws, rest)) = schemes
            .iter()
            .find_map(|(p, tls, ws)| url.strip_prefix(p).map(|r| (*tls, *ws, r)))
        else {
            return Err(format!(
                "{url:?} must start with mqtt://, mqtts://, ws:// or wss://"
            ));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let path = if ws && path != "/" {
            path.to_owned()
        } else {
            String::new()
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (username, password) = match userinfo {
            Some(u) => match u.split_once(':') {
                Some((n, p)) => (Some(n.to_owned()), Some(p.to_owned())),
                None => (Some(u.to_owned()), None),
            },
            None => (None, None),
        };
        let default_port = match (ws, tls) {
            (false, false) => 1883,
            (false, true) => 8883,
            (true, false) => 80,
            (true, true) => 443,
        };
        let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
            let (h, after) = h
                .split_once(']')
                .ok_or_else(|| format!("{url:?}: unclosed '['"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| format!("{url:?}: bad port {p:?}"))?,
                None => default_port,
            };
            (h.to_owned(), port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (
                    h.to_owned(),
                    p.parse().map_err(|_| format!("{url:?}: bad port {p:?}"))?,
                ),
                None => (hostport.to_owned(), default_port),
            }
        };
        if host.is_empty() {
            return Err(format!("{url:?} has no host"));
        }
        Ok(BrokerUrl {
            tls,
            ws,
            host,
            port,
            path,
            username,
            password,
        })
    }

    /// The URL as advertised in `poa`: no credentials.
    pub fn poa(&self) -> String {
        let scheme = match (self.ws, self.tls) {
            (false, false) => "mqtt",
            (false, true) => "mqtts",
            (true, false) => "ws",
            (true, true) => "wss",
        };
        if self.host.contains(':') {
            format!("{scheme}://[{}]:{}{}", self.host, self.port, self.path)
        } else {
            format!("{scheme}://{}:{}{}", self.host, self.port, self.path)
        }
    }
}

/// The environment variable that fills `mqtt.password` when the file has none.
pub const PASSWORD_ENV: &str = "M2MNODE_MQTT_PASSWORD";
/// Where systemd puts the credentials of `LoadCredential=` (systemd.exec(5)).
pub const CREDENTIALS_ENV: &str = "CREDENTIALS_DIRECTORY";

/// What a config takes from the process environment.
#[derive(Clone, Debug, Default)]
pub struct Env {
    /// `M2MNODE_MQTT_PASSWORD`, when set and not empty.
    pub password: Option<String>,
    /// `$CREDENTIALS_DIRECTORY`, when set.
    pub credentials_dir: Option<PathBuf>,
}

impl Env {
    pub fn current() -> Env {
        Env {
            password: std::env::var(PASSWORD_ENV).ok().filter(|p| !p.is_empty()),
            credentials_dir: std::env::var_os(CREDENTIALS_ENV)
                .filter(|d| !d.is_empty())
                .map(PathBuf::from),
        }
    }
}

/// One thing wrong with a config: the key it concerns (`mqtt.url`, or a
/// section such as `registrar`), what is wrong, and where (1-based line).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
    pub line: Option<usize>,
}

impl Problem {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            key: key.into(),
            message: message.into(),
            line: None,
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

impl Config {
    /// Parses and validates `text` as is (no environment, no path resolution).
    pub fn from_str(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let cfg: Config =
            toml::from_str(text).map_err(|e| ConfigError::Parse(path.to_owned(), e.to_string()))?;
        let problems = cfg.problems();
        if problems.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigError::Invalid(path.to_owned(), problems))
        }
    }

    /// Reads the config file `path`: relative paths in it (`data_dir`,
    /// `ca_file`, `client_cert`, `client_key`) are taken relative to the
    /// file's directory, and `M2MNODE_MQTT_PASSWORD` fills `mqtt.password`
    /// when the file sets none.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| ConfigError::Read(path.to_owned(), e))?;
        let mut cfg: Config = toml::from_str(&text)
            .map_err(|e| ConfigError::Parse(path.to_owned(), e.to_string()))?;
        cfg.resolve(path, &Env::current());
        let problems = cfg.problems();
        if problems.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigError::Invalid(path.to_owned(), problems))
        }
    }

    /// What [`Config::load`] does after parsing: paths relative to the
    /// config file's directory, the passwords from `password_file` (or the
    /// environment).
    pub fn resolve(&mut self, path: &Path, env: &Env) {
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        let base = std::fs::canonicalize(&parent).unwrap_or(parent);
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(d) = &mut self.cse.data_dir {
            fix(d);
        }
        let up = self.registrar.as_mut().and_then(|r| r.mqtt.as_mut());
        let mut files = vec![
            &mut self.mqtt.ca_file,
            &mut self.mqtt.client_cert,
            &mut self.mqtt.client_key,
        ];
        if let Some(m) = up {
            files.extend([&mut m.ca_file, &mut m.client_cert, &mut m.client_key]);
        }
        for f in files.into_iter().flatten() {
            fix(f);
        }
        read_password_file(&mut self.mqtt, &base, env);
        if let Some(m) = self.registrar.as_mut().and_then(|r| r.mqtt.as_mut()) {
            read_password_file(m, &base, env);
        }
        let url_password = self.broker().ok().and_then(|b| b.password);
        if self.mqtt.password.is_none()
            && self.mqtt.password_file.is_none()
            && url_password.is_none()
        {
            if let Some(p) = env.password.clone() {
                self.mqtt.password = Some(p);
                self.mqtt.password_from_env = true;
            }
        }
    }

    /// What `check-config` reports but `run` tolerates: a user name with no
    /// password from anywhere (a broker that takes it is rare; `status` from
    /// a shell failing where the unit works is not).
    pub fn advisories(&self) -> Vec<Problem> {
        let mut p = Vec::new();
        let mut sections = vec![("mqtt", &self.mqtt)];
        if let Some(m) = self.upstream_mqtt() {
            sections.push(("registrar.mqtt", m));
        }
        for (sec, m) in sections {
            let url = BrokerUrl::parse(&m.url).ok();
            let user = m
                .username
                .clone()
                .or_else(|| url.as_ref().and_then(|u| u.username.clone()));
            let has_password = m.password.is_some()
                || m.password_file.is_some()
                || url.as_ref().is_some_and(|u| u.password.is_some());
            if let (Some(user), false) = (user, has_password) {
                let env = if sec == "mqtt" {
                    format!(
                        ", or {PASSWORD_ENV} (not set here: `m2mnode status` from a shell or a timer does not see the unit's EnvironmentFile)"
                    )
                } else {
                    String::new()
                };
                p.push(Problem::new(
                    format!("{sec}.username"),
                    format!(
                        "{user:?} has no password: set {sec}.password_file (read by run, status and check-config), {sec}.password{env}"
                    ),
                ));
            }
        }
        p
    }

    /// The `<CSEBase>` this config describes (created at `now`).
    pub fn cse_base(&self, now: crate::time::Timestamp) -> CseBase {
        let ts = now.to_onem2m();
        CseBase {
            ri: self.cse.id.bare().to_owned(),
            rn: self.cse.name.clone(),
            ty: ResourceType::CSE_BASE,
            pi: String::new(),
            csi: self.cse.id.clone(),
            cst: self.cse.cse_type.code(),
            srv: SUPPORTED_RELEASES.iter().map(|s| s.to_string()).collect(),
            poa: self.poa(),
            csz: CSZ.iter().map(|s| s.to_string()).collect(),
            srt: vec![ResourceType::CSE_BASE.0, ResourceType::REMOTE_CSE.0],
            ct: ts.clone(),
            lt: ts,
            spi: self.cse.sp_id.as_ref().map(|sp| format!("//{sp}")),
            ici: None,
            lbl: self.cse.labels.clone(),
            nl: self.cse.node_link.clone(),
        }
    }

    /// What the hosting side needs to know.
    pub fn registrar_settings(&self, now: crate::time::Timestamp) -> RegistrarSettings {
        RegistrarSettings {
            cse_base: self.cse_base(now),
            cse_type: self.cse.cse_type,
            sp_id: self.cse.sp_id.clone(),
            allowed: self.registrees.allowed.clone(),
            upstream: self.registrar.as_ref().map(|r| r.id.clone()),
            admin: self.security.admin.clone(),
            limits: self.limits(),
            peers: self
                .sp_registrar
                .values()
                .map(|p| (p.sp_id.clone(), p.id.clone()))
                .collect(),
        }
    }

    pub fn limits(&self) -> Limits {
        let d = Limits::default();
        let l = &self.limits;
        Limits {
            max_registrees: self.registrees.max,
            list_entries: l.list_entries.unwrap_or(d.list_entries),
            dcse_entries: l.dcse_entries.unwrap_or(d.dcse_entries),
            value_length: l.value_length.unwrap_or(d.value_length),
            name_length: l.name_length.unwrap_or(d.name_length),
            answer_cache_bytes: l.answer_cache_bytes.unwrap_or(d.answer_cache_bytes),
            forwards_in_flight: l.forwards_in_flight.unwrap_or(d.forwards_in_flight),
            forwards_per_hop: l.forwards_per_hop.unwrap_or(d.forwards_per_hop),
            memory_bytes: l.memory_bytes.unwrap_or(d.memory_bytes),
        }
    }

    /// Everything the engine needs, typed; `seed` makes its rqis and jitter
    /// unique per start.
    pub fn engine_settings(&self, now: crate::time::Timestamp, seed: u64) -> EngineSettings {
        EngineSettings {
            registrar: self.registrar_settings(now),
            registration: self.registrar.as_ref().map(|r| UpstreamSettings {
                registrar_rn: r.name.clone(),
                check_interval: r.check_interval,
                poa: self.upstream_poa(),
                link: if self.upstream_mqtt().is_some() {
                    crate::topic::Link::UPSTREAM
                } else {
                    crate::topic::Link::LOCAL
                },
                serialization: r.serialization,
            }),
            registree_check_interval: self.registrees.check_interval,
            request_timeout: self.mqtt.timeout,
            durable: self.cse.data_dir.is_some(),
            max_payload: self.mqtt.max_payload,
            seed,
            peers: self.peer_settings(),
        }
    }

    pub fn broker(&self) -> Result<BrokerUrl, String> {
        BrokerUrl::parse(&self.mqtt.url)
    }

    /// The CSEBase's `poa`, toward registrees: `cse.poa`, else the
    /// `[mqtt]` broker.
    pub fn poa(&self) -> Vec<String> {
        match (&self.cse.poa, self.broker()) {
            (Some(p), _) => p.clone(),
            (None, Ok(b)) => vec![b.poa()],
            (None, Err(_)) => Vec::new(),
        }
    }

    /// The broker toward the registrar, when `[registrar.mqtt]` sets one.
    pub fn upstream_mqtt(&self) -> Option<&MqttConfig> {
        self.registrar.as_ref().and_then(|r| r.mqtt.as_ref())
    }

    /// The `poa` of the own `<remoteCSE>` at the registrar when it differs
    /// from the CSEBase's: the `[registrar.mqtt]` broker (unless `cse.poa`
    /// says otherwise).
    pub fn upstream_poa(&self) -> Option<Vec<String>> {
        if self.cse.poa.is_some() {
            return None;
        }
        let up = self.upstream_mqtt()?;
        BrokerUrl::parse(&up.url).ok().map(|b| vec![b.poa()])
    }

    /// Every semantic problem, not just the first, as `key: what`.
    pub fn problems(&self) -> Vec<String> {
        self.problem_list().iter().map(Problem::to_string).collect()
    }

    /// Every semantic problem with the key it concerns (no line numbers:
    /// [`check_file`] adds them).
    pub fn problem_list(&self) -> Vec<Problem> {
        let mut p = Vec::new();
        let mut push = |k: &str, m: String| p.push(Problem::new(k, m));
        let broker = self.broker();
        if let Err(e) = &broker {
            push("mqtt.url", e.clone());
        }
        if self.cse.name.is_empty() || self.cse.name.contains('/') {
            push(
                "cse.name",
                format!("{:?} must be a non-empty name without '/'", self.cse.name),
            );
        }
        if let Some(sp) = &self.cse.sp_id {
            if sp.is_empty() || sp.contains('/') {
                push(
                    "cse.sp_id",
                    format!("{sp:?} must be a domain name without '/' (e.g. \"acme.example.com\")"),
                );
            }
        }
        mqtt_problems(&self.mqtt, "mqtt", &mut push);
        let limits = self.limits();
        if limits.forwards_per_hop == 0 {
            push(
                "limits.forwards_per_hop",
                "must be at least 1 (0 forwards nothing)".into(),
            );
        }
        // The answer cache and forwards are counted at their bounds: a
        // budget they fill alone would refuse every registration.
        let reserved = limits.answer_cache_bytes
            + limits
                .forwards_in_flight
                .saturating_mul(crate::engine::FORWARD_BYTES);
        if limits.memory_bytes <= reserved.saturating_add(1 << 20) {
            push(
                "limits.memory_bytes",
                format!(
                    "{} leaves no room for registrees: answer_cache_bytes and forwards_in_flight take {reserved} bytes of it; give at least 1 MiB more",
                    limits.memory_bytes
                ),
            );
        }
        if let Some(m) = self.upstream_mqtt() {
            if let Err(e) = BrokerUrl::parse(&m.url) {
                push("registrar.mqtt.url", e);
            }
            mqtt_problems(m, "registrar.mqtt", &mut push);
        }
        if let Some(r) = &self.registrar {
            if r.id == self.cse.id {
                push("registrar.id", "is this CSE's own id".into());
            }
            if self.cse.cse_type == CseType::IN {
                push(
                    "registrar",
                    "an IN-CSE registers nowhere: remove [registrar] or set cse.type = \"MN\""
                        .into(),
                );
            }
            if r.check_interval < Duration::from_secs(1) {
                push("registrar.check_interval", "must be at least 1s".into());
            }
            if r.name.is_empty() || r.name.contains('/') {
                push(
                    "registrar.name",
                    format!("{:?} must be a non-empty name without '/'", r.name),
                );
            }
        } else if self.cse.cse_type != CseType::IN {
            push(
                "cse.type",
                format!(
                    "a {:?}-CSE needs a [registrar] section (only an IN-CSE registers nowhere)",
                    self.cse.cse_type
                ),
            );
        }
        if self.registrees.check_interval < Duration::from_secs(1) {
            push("registrees.check_interval", "must be at least 1s".into());
        }
        for a in &self.registrees.allowed {
            if !a.starts_with(['/', '*', '?']) {
                push(
                    "registrees.allowed",
                    format!("{a:?} can never match: CSE-IDs start with '/' (write \"/{a}\")"),
                );
            }
        }
        p.extend(self.intersp_problems());
        p
    }
}

/// Reads `m.password_file` into `m.password` (docs/operations.md "The MQTT
/// password"): absolute as is; relative, in `$CREDENTIALS_DIRECTORY` when
/// the file is there, else in the config file's directory `base`. The
/// resolved path is kept in `password_file` for messages.
fn read_password_file(m: &mut MqttConfig, base: &Path, env: &Env) {
    let Some(name) = m.password_file.clone() else {
        return;
    };
    let path = if name.is_absolute() {
        name
    } else {
        env.credentials_dir
            .as_ref()
            .map(|d| d.join(&name))
            .filter(|p| p.exists())
            .unwrap_or_else(|| base.join(&name))
    };
    m.password_file = Some(path.clone());
    match read_secret(&path) {
        Ok(pw) if m.password.is_none() => {
            m.password = Some(pw);
            m.password_from_file = true;
        }
        Ok(_) => {}
        Err(e) => m.password_file_error = Some(e),
    }
}

/// A password kept in a file: its content without the one line break an
/// editor or `echo` leaves at the end.
pub fn read_secret(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let pw = text.strip_suffix('\n').unwrap_or(&text);
    let pw = pw.strip_suffix('\r').unwrap_or(pw);
    if pw.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(pw.to_owned())
}

/// The checks of one broker section (`[mqtt]` or `[registrar.mqtt]`).
fn mqtt_problems(m: &MqttConfig, sec: &str, push: &mut impl FnMut(&str, String)) {
    let broker = BrokerUrl::parse(&m.url);
    if let Err(e) = crate::topic::check_prefix(&m.topic_prefix) {
        push(&format!("{sec}.topic_prefix"), e);
    }
    if !matches!(m.qos, 0 | 1) {
        push(
            &format!("{sec}.qos"),
            format!(
                "{} must be 0 or 1 (TS-0010: QoS 2 should not be used)",
                m.qos
            ),
        );
    }
    if m.timeout.is_zero() {
        push(&format!("{sec}.timeout"), "must be more than 0".into());
    }
    if m.keep_alive < Duration::from_secs(1) {
        push(&format!("{sec}.keep_alive"), "must be at least 1s".into());
    }
    if m.max_payload < 1024 {
        push(
            &format!("{sec}.max_payload"),
            "must be at least 1024 bytes".into(),
        );
    }
    if let Some(e) = &m.password_file_error {
        push(&format!("{sec}.password_file"), e.clone());
    }
    let url_password = broker.as_ref().ok().is_some_and(|b| b.password.is_some());
    if m.password_file.is_some()
        && (m.password.as_ref().is_some_and(|_| !m.password_from_file()) || url_password)
    {
        push(
            &format!("{sec}.password_file"),
            format!("set either {sec}.password_file or a password (in {sec}.password or the url), not both"),
        );
    }
    let url_user = broker.as_ref().ok().and_then(|b| b.username.clone());
    if m.password.is_some() && m.username.is_none() && url_user.is_none() {
        if m.password_from_env {
            push(
                &format!("{sec}.username"),
                format!("{PASSWORD_ENV} is set, so mqtt.username must be set too"),
            );
        } else {
            push(&format!("{sec}.password"), format!("needs {sec}.username"));
        }
    }
    if m.client_cert.is_some() != m.client_key.is_some() {
        let k = if m.client_cert.is_some() {
            "client_cert"
        } else {
            "client_key"
        };
        push(
            &format!("{sec}.{k}"),
            format!("{sec}.client_cert and {sec}.client_key go together"),
        );
    }
    if let Ok(b) = &broker {
        if !b.tls {
            for (k, f) in [("ca_file", &m.ca_file), ("client_cert", &m.client_cert)] {
                if f.is_some() {
                    push(
                        &format!("{sec}.{k}"),
                        "needs an mqtts:// or wss:// url".into(),
                    );
                }
            }
        } else if m.ca_file.is_none() {
            push(&format!("{sec}.ca_file"),
                    "an mqtts:// or wss:// url needs the CA certificates to trust (e.g. \"/etc/ssl/certs/ca-certificates.crt\" for public CAs)".into(),
                );
        }
    }
    for (k, f, what) in [
        ("ca_file", &m.ca_file, Pem::Certificates),
        ("client_cert", &m.client_cert, Pem::Certificates),
        ("client_key", &m.client_key, Pem::PrivateKey),
    ] {
        if let Some(f) = f {
            if let Err(e) = check_pem(f, what) {
                push(&format!("{sec}.{k}"), e);
            }
        }
    }
}

/// What a PEM file given for TLS must hold.
#[derive(Clone, Copy)]
pub enum Pem {
    Certificates,
    PrivateKey,
}

/// Whether `path` holds what TLS will load from it.
pub fn check_pem(path: &Path, what: Pem) -> Result<(), String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    match what {
        Pem::Certificates => {
            let mut n = 0;
            for c in CertificateDer::pem_slice_iter(&bytes) {
                c.map_err(|e| format!("{}: not PEM ({e:?})", path.display()))?;
                n += 1;
            }
            if n == 0 {
                let key = PrivateKeyDer::from_pem_slice(&bytes).is_ok();
                return Err(format!(
                    "{} holds no PEM certificate{}",
                    path.display(),
                    if key { " (it is a private key)" } else { "" }
                ));
            }
        }
        Pem::PrivateKey => {
            PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
                format!(
                    "{} holds no PEM private key ({})",
                    path.display(),
                    match e {
                        rustls::pki_types::pem::Error::NoItemsFound => "none found".to_owned(),
                        e => format!("{e:?}"),
                    }
                )
            })?;
        }
    }
    Ok(())
}

const SECTIONS: [&str; 8] = [
    "cse",
    "mqtt",
    "registrar",
    "registrees",
    "security",
    "limits",
    "metrics",
    "sp_registrar",
];

/// Values put in place of a required key that is missing or bad, so that
/// the rest of the file is still checked (they are never reported).
fn placeholder(key: &str, has_registrar: bool) -> Option<&'static str> {
    Some(match key {
        "cse.id" => "\"/id-check-config\"",
        "cse.name" | "registrar.name" => "\"check-config\"",
        "cse.type" if has_registrar => "\"MN\"",
        "cse.type" => "\"IN\"",
        "mqtt.url" | "registrar.mqtt.url" => "\"mqtt://check-config.invalid\"",
        "registrar.id" => "\"/id-check-config-registrar\"",
        _ => return None,
    })
}

/// Who `check-config` checks `data_dir` for: the user running it, or the
/// service user given with `--user`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gids: Vec<u32>,
}

impl Account {
    /// The user running this process (Linux `/proc/self/status`).
    pub fn current() -> Option<Account> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|v| {
                    v.split_whitespace()
                        .filter_map(|n| n.parse::<u32>().ok())
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        };
        let uid = *field("Uid:").get(1)?;
        let mut gids = field("Gid:")
            .get(1)
            .copied()
            .into_iter()
            .collect::<Vec<_>>();
        gids.extend(field("Groups:"));
        let name = passwd_entries()
            .into_iter()
            .find(|(_, u, _)| *u == uid)
            .map_or_else(|| uid.to_string(), |(n, _, _)| n);
        Some(Account { name, uid, gids })
    }

    /// The user `name` from `/etc/passwd` and `/etc/group`.
    pub fn named(name: &str) -> Option<Account> {
        let (_, uid, gid) = passwd_entries().into_iter().find(|(n, _, _)| n == name)?;
        let mut gids = vec![gid];
        if let Ok(groups) = std::fs::read_to_string("/etc/group") {
            for l in groups.lines() {
                let f: Vec<&str> = l.split(':').collect();
                if f.len() >= 4 && f[3].split(',').any(|m| m == name) {
                    if let Ok(g) = f[2].parse() {
                        gids.push(g);
                    }
                }
            }
        }
        Some(Account {
            name: name.to_owned(),
            uid,
            gids,
        })
    }

    /// Whether this account may write `path` (directories: create in it).
    /// For the user running this, the kernel decides (access(2): read-only
    /// mounts, ACLs); for another, the mode bits.
    fn may_write_path(&self, path: &Path, meta: &std::fs::Metadata) -> bool {
        use std::os::unix::ffi::OsStrExt;
        if Account::current().is_some_and(|me| me.uid == self.uid) {
            let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
                return false;
            };
            let mode = if meta.is_dir() {
                libc::W_OK | libc::X_OK
            } else {
                libc::W_OK
            };
            // SAFETY: `c` is a NUL-terminated path that outlives the call.
            return unsafe { libc::access(c.as_ptr(), mode) } == 0;
        }
        self.may_write(meta)
    }

    /// Whether this account may write `meta` by its mode bits.
    fn may_write(&self, meta: &std::fs::Metadata) -> bool {
        use std::os::unix::fs::MetadataExt;
        let need = if meta.is_dir() { 0o3 } else { 0o2 };
        let mode = meta.mode();
        let bits = if self.uid == 0 {
            return true;
        } else if meta.uid() == self.uid {
            mode >> 6
        } else if self.gids.contains(&meta.gid()) {
            mode >> 3
        } else {
            mode
        };
        bits & need == need
    }
}

/// (name, uid, gid) of every `/etc/passwd` entry.
fn passwd_entries() -> Vec<(String, u32, u32)> {
    std::fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some((
                f.first()?.to_string(),
                f.get(2)?.parse().ok()?,
                f.get(3)?.parse().ok()?,
            ))
        })
        .collect()
}

fn owner_name(uid: u32) -> String {
    passwd_entries()
        .into_iter()
        .find(|(_, u, _)| *u == uid)
        .map_or_else(|| format!("uid {uid}"), |(n, _, _)| n)
}

/// What `check-config` found: problems (exit 2) and notes worth knowing.
#[derive(Debug, Default)]
pub struct Report {
    pub problems: Vec<Problem>,
    pub notes: Vec<Problem>,
}

/// Everything `m2mnode run` would refuse or trip on in the config file
/// `path`, each with the key and, where it can be found, the line: every
/// TOML syntax error, every bad value or unknown key, every semantic
/// problem, TLS and password files that do not load and a `data_dir` that
/// cannot be written. Empty: the config is good. Nothing is created or
/// written.
pub fn check_file(path: &Path) -> Vec<Problem> {
    check(path, None).problems
}

/// [`check_file`] for the service user `user` (default: who runs it), with
/// notes.
pub fn check(path: &Path, user: Option<&Account>) -> Report {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            return Report {
                problems: vec![Problem::new("", format!("cannot read it: {e}"))],
                notes: Vec::new(),
            }
        }
    };
    check_text_as(&text, path, &Env::current(), user)
}

/// [`check_file`] on `text` as read from `path`.
pub fn check_text(text: &str, path: &Path, env: &Env) -> Vec<Problem> {
    check_text_as(text, path, env, None).problems
}

/// The 1-based line of byte `offset` in `text`.
fn line_at(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The table (`registrar.mqtt`, or "" at the top) whose body holds `offset`.
fn table_at(text: &str, offset: usize) -> String {
    let mut current = String::new();
    for line in text[..offset.min(text.len())].lines() {
        let t = line.trim();
        if let Some(h) = t.strip_prefix('[') {
            current = h
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned();
        }
    }
    current
}

fn join_key(section: &str, leaf: &str) -> String {
    if section.is_empty() {
        leaf.to_owned()
    } else {
        format!("{section}.{leaf}")
    }
}

/// The text of a config being repaired for checking: bad values replaced by
/// placeholders, unknown keys removed, missing required keys added, so that
/// deserializing goes on past each error. Lines are tracked back to the
/// file's.
struct Repair {
    work: String,
    /// The file's line of each work line (None: added here).
    origin: Vec<Option<usize>>,
}

impl Repair {
    fn new(text: &str) -> Repair {
        let n = text.matches('\n').count() + 1;
        Repair {
            work: text.to_owned(),
            origin: (1..=n).map(Some).collect(),
        }
    }

    fn file_line(&self, work_line: usize) -> Option<usize> {
        self.origin
            .get(work_line.checked_sub(1)?)
            .copied()
            .flatten()
    }

    fn parses(&self) -> bool {
        toml::de::DeTable::parse_recoverable(&self.work)
            .1
            .is_empty()
    }

    /// Replaces `range` keeping its line breaks (the lines stay put).
    fn replace(&mut self, range: std::ops::Range<usize>, with: &str) {
        let breaks = self.work[range.clone()].matches('\n').count();
        self.work
            .replace_range(range, &format!("{with}{}", "\n".repeat(breaks)));
    }

    /// Blanks the whole line `line` (1-based work line).
    fn blank_line(&mut self, line: usize) {
        let start: usize = self
            .work
            .split_inclusive('\n')
            .take(line - 1)
            .map(str::len)
            .sum();
        let end = self.work[start..]
            .find('\n')
            .map_or(self.work.len(), |i| start + i);
        self.replace(start..end, "");
    }

    /// Adds `lines` after the work line `after` (0: at the top).
    fn insert(&mut self, after: usize, lines: &[String]) {
        let at: usize = self
            .work
            .split_inclusive('\n')
            .take(after)
            .map(str::len)
            .sum();
        let mut add: String = lines.iter().map(|l| format!("{l}\n")).collect();
        if at > 0 && !self.work[..at].ends_with('\n') {
            add.insert(0, '\n');
        }
        self.work.insert_str(at, &add);
        for _ in lines {
            self.origin.insert(after.min(self.origin.len()), None);
        }
    }

    /// The work line of the header of table `section`.
    fn header_line(&self, section: &str) -> Option<usize> {
        self.work
            .lines()
            .position(|l| {
                let t = l.trim();
                t.starts_with('[')
                    && t.trim_start_matches('[')
                        .split(']')
                        .next()
                        .is_some_and(|h| h.trim() == section)
            })
            .map(|i| i + 1)
    }
}

/// [`check`] on `text`.
pub fn check_text_as(text: &str, path: &Path, env: &Env, user: Option<&Account>) -> Report {
    let mut report = Report::default();
    let (_, syntax) = toml::de::DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        let mut found: Vec<Problem> = syntax
            .iter()
            .map(|e| Problem {
                key: String::new(),
                message: e.message().trim().to_owned(),
                line: e.span().map(|s| line_at(text, s.start)),
            })
            .collect();
        found.sort_by_key(|p| p.line);
        report.problems = found;
        return report;
    }
    let mut repair = Repair::new(text);
    // Keys already reported (or sections added): their semantic checks
    // would only repeat the report, or judge a placeholder.
    let mut reported: Vec<String> = Vec::new();
    let mut seen: Vec<(usize, String)> = Vec::new();
    let mut cfg = None;
    for _ in 0..200 {
        let e = match toml::from_str::<Config>(&repair.work) {
            Ok(c) => {
                cfg = Some(c);
                break;
            }
            Err(e) => e,
        };
        let message = e.message().trim().to_owned();
        let has_registrar =
            toml::from_str::<toml::Table>(&repair.work).is_ok_and(|t| t.contains_key("registrar"));
        let Some(span) = e.span() else {
            report.problems.push(Problem::new("", message));
            break;
        };
        let work_line = line_at(&repair.work, span.start);
        if seen.contains(&(work_line, message.clone())) {
            // The repair did not take: stop rather than repeat it.
            break;
        }
        seen.push((work_line, message.clone()));
        let section = table_at(&repair.work, span.start);
        let line_text = repair
            .work
            .lines()
            .nth(work_line - 1)
            .unwrap_or_default()
            .to_owned();
        if let Some(field) = message
            .strip_prefix("missing field `")
            .and_then(|m| m.split('`').next())
        {
            // Which table lacks it: the span does not always say.
            let doc = toml::from_str::<toml::Table>(&repair.work).unwrap_or_default();
            let lacks = |path: &str| {
                let mut t = Some(&doc);
                for part in path.split('.') {
                    t = t.and_then(|t| t.get(part)).and_then(toml::Value::as_table);
                }
                t.is_some_and(|t| !t.contains_key(field))
            };
            let table = if SECTIONS.contains(&field) {
                String::new()
            } else {
                ["cse", "mqtt", "registrar", "registrar.mqtt"]
                    .into_iter()
                    .find(|t| placeholder(&join_key(t, field), has_registrar).is_some() && lacks(t))
                    .map_or_else(|| section.clone(), str::to_owned)
            };
            let key = join_key(&table, field);
            if SECTIONS.contains(&key.as_str()) {
                // A whole required section: add it with placeholders.
                report.problems.push(Problem::new(
                    key.clone(),
                    format!("the [{key}] section is missing"),
                ));
                reported.push(key.clone());
                let mut lines = vec![format!("[{key}]")];
                for leaf in ["id", "name", "type", "url"] {
                    if let Some(v) = placeholder(&join_key(&key, leaf), has_registrar) {
                        lines.push(format!("{leaf} = {v}"));
                    }
                }
                let end = repair.origin.len();
                repair.insert(end, &lines);
                continue;
            }
            let Some(v) = placeholder(&key, has_registrar) else {
                report.problems.push(Problem::new(key, message));
                break;
            };
            if !reported.iter().any(|r| key.starts_with(&format!("{r}."))) {
                report.problems.push(Problem {
                    key: key.clone(),
                    message: "is missing (it is required)".into(),
                    line: repair.header_line(&table).and_then(|l| repair.file_line(l)),
                });
            }
            reported.push(key.clone());
            let Some(after) = repair.header_line(&table) else {
                break;
            };
            repair.insert(after, &[format!("{field} = {v}")]);
            continue;
        }
        let line = repair.file_line(work_line);
        if let Some(field) = message
            .strip_prefix("unknown field `")
            .and_then(|m| m.split('`').next())
        {
            let key = join_key(&section, field);
            report.problems.push(Problem {
                key: key.clone(),
                message: if section.is_empty() {
                    format!("unknown section or key (known: {})", SECTIONS.join(", "))
                } else {
                    message.clone()
                },
                line,
            });
            reported.push(key);
            // A table header: the table goes, up to the next header.
            let mut l = work_line;
            let is_header = line_text.trim_start().starts_with('[');
            repair.blank_line(l);
            loop {
                let next = repair.work.lines().nth(l).map(str::trim_start);
                let more = match next {
                    None => false,
                    Some(n) if is_header => !n.starts_with('['),
                    Some(_) => !repair.parses(),
                };
                if !more {
                    break;
                }
                l += 1;
                repair.blank_line(l);
            }
            if !repair.parses() {
                break;
            }
            continue;
        }
        // A bad value: the key on its line.
        let leaf = line_text
            .split_once('=')
            .map(|(k, _)| k.trim().trim_matches('"').to_owned())
            .filter(|k| !k.is_empty() && !k.starts_with('['));
        let key = leaf
            .as_deref()
            .map_or_else(|| section.clone(), |k| join_key(&section, k));
        report.problems.push(Problem {
            key: key.clone(),
            message,
            line,
        });
        reported.push(key.clone());
        match placeholder(&key, has_registrar) {
            Some(v) => repair.replace(span.clone(), v),
            None => {
                let start = repair.work[..span.start].rfind('\n').map_or(0, |i| i + 1);
                repair.replace(start..span.end, "");
            }
        }
        if !repair.parses() {
            break;
        }
    }
    report
        .problems
        .sort_by_key(|p| p.line.unwrap_or(usize::MAX));
    let Some(mut cfg) = cfg else {
        return report;
    };
    cfg.resolve(path, env);
    let fresh = |k: &str| {
        !reported
            .iter()
            .any(|r| k == r || k.starts_with(&format!("{r}.")))
    };
    let mut semantic = Vec::new();
    for mut p in cfg.problem_list().into_iter().chain(cfg.advisories()) {
        if fresh(&p.key) {
            p.line = key_line(text, &p.key).or_else(|| intersp::table_key_line(text, &p.key));
            semantic.push(p);
        }
    }
    if let (Some(dir), true) = (&cfg.cse.data_dir, fresh("cse.data_dir")) {
        let me = Account::current();
        let who = user.or(me.as_ref());
        let line = key_line(text, "cse.data_dir");
        let (problems, notes) = check_data_dir(dir, who, user.is_some());
        for message in problems {
            semantic.push(Problem {
                key: "cse.data_dir".into(),
                message,
                line,
            });
        }
        for message in notes {
            report.notes.push(Problem {
                key: "cse.data_dir".into(),
                message,
                line,
            });
        }
    }
    report.problems.extend(semantic);
    report
        .problems
        .sort_by_key(|p| p.line.unwrap_or(usize::MAX));
    report
}

/// Whether `who` can use `dir` as data_dir, without creating or writing
/// anything: an existing directory and the store files in it must be
/// writable; a missing one must be creatable in its nearest existing
/// parent. Returns (problems, notes); `asked`: `who` was given with `--user`.
fn check_data_dir(dir: &Path, who: Option<&Account>, asked: bool) -> (Vec<String>, Vec<String>) {
    use std::os::unix::fs::MetadataExt;
    let (mut problems, mut notes) = (Vec::new(), Vec::new());
    let Some(who) = who else {
        return (problems, notes);
    };
    let hint = if asked {
        String::new()
    } else {
        " (give --user NAME to check for the service user)".to_owned()
    };
    let mut existing = dir.to_path_buf();
    while std::fs::symlink_metadata(&existing).is_err() {
        match existing.parent() {
            Some(p) => existing = p.to_path_buf(),
            None => break,
        }
    }
    let meta = match std::fs::metadata(&existing) {
        Ok(m) => m,
        Err(e) => {
            problems.push(format!("cannot look at {}: {e}", existing.display()));
            return (problems, notes);
        }
    };
    if !meta.is_dir() {
        problems.push(format!("{} is not a directory", existing.display()));
        return (problems, notes);
    }
    let owner = owner_name(meta.uid());
    if existing != dir {
        if who.may_write_path(&existing, &meta) {
            notes.push(format!(
                "{} does not exist; `run` creates it in {} (owned by {owner}) as the user it runs as",
                dir.display(),
                existing.display()
            ));
        } else {
            // Not a problem in itself: systemd's StateDirectory= makes it
            // for the unit's user before `run` starts.
            notes.push(format!(
                "{} does not exist and {} cannot create it in {} (owned by {owner}, mode {:o}): it must be made before `run`, as systemd's StateDirectory= does (systemd/m2mnode.service)",
                dir.display(),
                who.name,
                existing.display(),
                meta.mode() & 0o7777,
            ));
        }
        return (problems, notes);
    }
    if !who.may_write_path(dir, &meta) {
        problems.push(format!(
            "{} (owned by {owner}, mode {:o}) is not writable by {}",
            dir.display(),
            meta.mode() & 0o7777,
            who.name
        ));
    } else if meta.uid() != who.uid {
        notes.push(format!(
            "{} is owned by {owner}, not {}{hint}",
            dir.display(),
            who.name
        ));
    }
    for f in [crate::persist::DB_FILE, crate::persist::LOCK_FILE] {
        let file = dir.join(f);
        if let Ok(m) = std::fs::metadata(&file) {
            if !who.may_write_path(&file, &m) {
                problems.push(format!(
                    "{} is owned by {} and not writable by {} (chown -R {} {})",
                    file.display(),
                    owner_name(m.uid()),
                    who.name,
                    who.name,
                    dir.display()
                ));
            }
        }
    }
    (problems, notes)
}

/// The line of `key` (`section.leaf`, or a section) in `text`; for a leaf
/// that is not there, the line of its section's header.
fn key_line(text: &str, key: &str) -> Option<usize> {
    let (section, leaf) = match key.split_once('.') {
        Some((s, l)) => (s, Some(l)),
        None => (key, None),
    };
    let mut current = String::new();
    let mut header = None;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if let Some(h) = t.strip_prefix('[') {
            current = h
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned();
            if current == section {
                header = Some(i + 1);
                if leaf.is_none() {
                    return header;
                }
            }
            continue;
        }
        let Some((k, _)) = t.split_once('=') else {
            continue;
        };
        let k = k.trim().trim_matches('"');
        let hit = match leaf {
            Some(l) => (current == section && k == l) || (current.is_empty() && k == key),
            None => current.is_empty() && (k == section || k.starts_with(&format!("{section}."))),
        };
        if hit {
            return Some(i + 1);
        }
    }
    header
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::glob_match;

    const GOOD: &str = r#"
[cse]
id = "/id-mn"
name = "cse-mn"
type = "MN"
[mqtt]
url = "mqtt://127.0.0.1:1883"
timeout = "3s"
[registrar]
id = "/id-in"
name = "cse-in"
check_interval = "5s"
"#;

    #[test]
    fn the_registrar_serialization_is_json_or_cbor() {
        let c = Config::from_str(GOOD, Path::new("x.toml")).expect("valid");
        assert_eq!(c.registrar.as_ref().and_then(|r| r.serialization), None);
        let cbor = format!("{GOOD}serialization = \"cbor\"\n");
        let c = Config::from_str(&cbor, Path::new("x.toml")).expect("valid");
        assert_eq!(
            c.registrar.as_ref().and_then(|r| r.serialization),
            Some(Format::Cbor)
        );
        let xml = format!("{GOOD}serialization = \"xml\"\n");
        let problems = check_text(&xml, Path::new("x.toml"), &Env::default());
        assert!(
            problems
                .iter()
                .any(|p| p.key == "registrar.serialization" && p.message.contains("\"xml\"")),
            "{problems:?}"
        );
    }

    #[test]
    fn a_good_config_loads_with_defaults() {
        let c = Config::from_str(GOOD, Path::new("x.toml")).expect("valid");
        assert_eq!(c.mqtt.timeout, Duration::from_secs(3));
        assert_eq!(c.mqtt.qos, 1);
        assert_eq!(c.registrees.allowed, vec!["*"]);
        assert_eq!(c.poa(), vec!["mqtt://127.0.0.1:1883"]);
    }

    #[test]
    fn every_problem_is_named() {
        let bad = GOOD
            .replace("mqtt://127.0.0.1:1883", "http://x")
            .replace("\"3s\"", "\"soon\"");
        let e = Config::from_str(&bad, Path::new("x.toml"))
            .expect_err("invalid")
            .to_string();
        assert!(e.contains("soon"), "{e}");
        let bad = GOOD
            .replace("mqtt://127.0.0.1:1883", "http://x")
            .replace("MN", "IN");
        let e = Config::from_str(&bad, Path::new("x.toml"))
            .expect_err("invalid")
            .to_string();
        assert!(
            e.contains("mqtt.url") && e.contains("IN-CSE registers nowhere"),
            "{e}"
        );
        let bad = GOOD.replace("timeout", "timeuot");
        let e = Config::from_str(&bad, Path::new("x.toml"))
            .expect_err("invalid")
            .to_string();
        assert!(e.contains("timeuot"), "{e}");
    }

    #[test]
    fn limits_that_would_refuse_everything_are_named() {
        let c = Config::from_str(
            &format!("{GOOD}[limits]\nforwards_per_hop = 16\nmemory_bytes = 67108864\n"),
            Path::new("x.toml"),
        )
        .expect("valid");
        let l = c.limits();
        assert_eq!((l.forwards_per_hop, l.memory_bytes), (16, 64 << 20));
        let e = Config::from_str(
            &format!("{GOOD}[limits]\nforwards_per_hop = 0\nmemory_bytes = 1048576\n"),
            Path::new("x.toml"),
        )
        .expect_err("invalid")
        .to_string();
        assert!(
            e.contains("limits.forwards_per_hop") && e.contains("limits.memory_bytes"),
            "{e}"
        );
    }

    #[test]
    fn broker_urls() {
        let b = BrokerUrl::parse("mqtts://u:p@broker.example").expect("ok");
        assert_eq!(
            (b.tls, b.port, b.username.as_deref()),
            (true, 8883, Some("u"))
        );
        assert_eq!(b.poa(), "mqtts://broker.example:8883");
        assert!(BrokerUrl::parse("mqtt://:1883").is_err());
        assert!(BrokerUrl::parse("mqtt://h:x").is_err());
    }

    #[test]
    fn websocket_urls() {
        let b = BrokerUrl::parse("ws://broker.example/mqtt").expect("ok");
        assert_eq!(
            (b.ws, b.tls, b.port, b.path.as_str()),
            (true, false, 80, "/mqtt")
        );
        assert_eq!(b.poa(), "ws://broker.example:80/mqtt");
        let b = BrokerUrl::parse("wss://u:p@broker.example:8443").expect("ok");
        assert_eq!(
            (b.ws, b.tls, b.port, b.path.as_str()),
            (true, true, 8443, "")
        );
        assert_eq!(b.poa(), "wss://broker.example:8443");
        assert!(BrokerUrl::parse("http://x").is_err());
    }

    #[test]
    fn a_registrar_broker_of_its_own() {
        let two = format!(
            "{GOOD}[registrar.mqtt]\nurl = \"mqtts://up.example\"\ntopic_prefix = \"op/\"\n"
        );
        let e = Config::from_str(&two, Path::new("x.toml"))
            .expect_err("invalid")
            .to_string();
        assert!(
            e.contains("registrar.mqtt.ca_file") && e.contains("registrar.mqtt.topic_prefix"),
            "{e}"
        );
        let two = format!(
            "{GOOD}[registrar.mqtt]\nurl = \"mqtt://up.example:1884\"\ntopic_prefix = \"op\"\n"
        );
        let c = Config::from_str(&two, Path::new("x.toml")).expect("valid");
        assert_eq!(c.poa(), vec!["mqtt://127.0.0.1:1883"]);
        assert_eq!(
            c.upstream_poa(),
            Some(vec!["mqtt://up.example:1884".to_string()])
        );
        assert_eq!(
            c.upstream_mqtt().map(|m| m.topic_prefix.as_str()),
            Some("op")
        );
        let one = Config::from_str(GOOD, Path::new("x.toml")).expect("valid");
        assert_eq!(one.upstream_poa(), None);
    }

    #[test]
    fn a_password_file_is_found_in_the_credentials_directory_first() {
        let dir = std::env::temp_dir().join(format!("m2mnode-pwfile-{}", std::process::id()));
        let creds = dir.join("creds");
        std::fs::create_dir_all(&creds).expect("dirs");
        std::fs::write(dir.join("pw"), "beside\n").expect("pw");
        std::fs::write(creds.join("pw"), "from-systemd\r\n").expect("pw");
        let text = GOOD.replace(
            "timeout = \"3s\"",
            "timeout = \"3s\"\nusername = \"u\"\npassword_file = \"pw\"",
        );
        let path = dir.join("node.toml");
        let load = |env: &Env| {
            let mut c: Config = toml::from_str(&text).expect("toml");
            c.resolve(&path, env);
            c
        };
        let with = Env {
            password: Some("from-env".into()),
            credentials_dir: Some(creds.clone()),
        };
        let c = load(&with);
        assert_eq!(c.mqtt.password.as_deref(), Some("from-systemd"));
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        let c = load(&Env::default());
        assert_eq!(c.mqtt.password.as_deref(), Some("beside"));
        std::fs::remove_file(dir.join("pw")).expect("rm");
        let c = load(&Env::default());
        assert_eq!(c.mqtt.password, None);
        assert!(
            c.problems()
                .iter()
                .any(|p| p.starts_with("mqtt.password_file: cannot read")),
            "{:?}",
            c.problems()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn check_text_reports_every_bad_value_once_with_its_line() {
        let text = "[cse]\nid = \"id-mn\"\nname = \"x\"\ntype = \"MN\"\n[mqtt]\nurl = \"mqtt://h\"\ntimeout = 5\nfoo = 1\n\
                    [registrar]\nid = \"/id-in\"\ncheck_interval = 5\n[registrar.mqtt]\nurl = 3\ntimeout = 5\n";
        let found = check_text(text, Path::new("x.toml"), &Env::default());
        let got: Vec<(String, Option<usize>)> =
            found.iter().map(|p| (p.key.clone(), p.line)).collect();
        let want: Vec<(String, Option<usize>)> = [
            ("cse.id", 2),
            ("mqtt.timeout", 7),
            ("mqtt.foo", 8),
            ("registrar.name", 9),
            ("registrar.check_interval", 11),
            ("registrar.mqtt.url", 13),
            ("registrar.mqtt.timeout", 14),
        ]
        .iter()
        .map(|(k, l)| (k.to_string(), Some(*l)))
        .collect();
        assert_eq!(got, want, "{found:#?}");
    }

    /// A documented configuration block with every commented-out setting
    /// switched on is still a config (one setting per line, valid TOML).
    fn uncommented_block(doc: &str, heading: &str) -> Result<Config, String> {
        let start = doc.find(heading).ok_or("heading")?;
        let start = start + doc[start..].find("```toml\n").ok_or("block")? + "```toml\n".len();
        let end = start + doc[start..].find("```").ok_or("end of block")?;
        let text: String = doc[start..end]
            .lines()
            .map(|l| match l.trim_start().strip_prefix("# ") {
                Some(rest) if rest.starts_with('[') || rest.contains(" = ") => rest.to_owned(),
                _ => l.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        toml::from_str(&text).map_err(|e| format!("{e}\n{text}"))
    }

    #[test]
    fn the_documented_configs_are_valid_with_everything_uncommented() {
        let readme = include_str!("../README.md");
        let cfg = uncommented_block(readme, "## Running a node");
        assert!(cfg.is_ok(), "README: {cfg:?}");
        let ops = include_str!("../docs/operations.md");
        let cfg = uncommented_block(ops, "## Configuration");
        assert!(cfg.is_ok(), "docs/operations.md: {cfg:?}");
    }

    #[test]
    fn globs() {
        assert!(glob_match("/id-*", "/id-mn"));
        assert!(glob_match("*", "/x"));
        assert!(glob_match("/id-??", "/id-mn"));
        assert!(!glob_match("/id-*", "/other"));
        assert!(!glob_match("/id-?", "/id-mn"));
    }

    #[test]
    fn metrics_is_an_optional_section_with_an_address() {
        let c = Config::from_str(GOOD, Path::new("x.toml")).expect("valid");
        assert_eq!(c.metrics, None);
        let text = format!("{GOOD}[metrics]\nlisten = \"127.0.0.1:9464\"\n");
        let c = Config::from_str(&text, Path::new("x.toml")).expect("valid");
        assert_eq!(
            c.metrics.map(|m| m.listen.to_string()).as_deref(),
            Some("127.0.0.1:9464")
        );
        let bad = format!("{GOOD}[metrics]\nlisten = \"localhost\"\n");
        let p = check_text(&bad, Path::new("x.toml"), &Env::default());
        assert!(
            p.iter()
                .any(|p| p.key == "metrics.listen" && p.line == Some(14)),
            "{p:?}"
        );
    }
}
