//! The TOML configuration (README "Running a node" and "Operating m2mnode"), validated with
//! errors that name the setting at fault.

use crate::engine::{EngineSettings, Limits, RegistrarSettings, UpstreamSettings};
use crate::id::CseId;
use crate::primitive::{ResourceType, SUPPORTED_RELEASES};
use crate::resource::{CseBase, CseType, CSZ};
use serde::{Deserialize, Deserializer};
use std::path::{Path, PathBuf};
use std::time::Duration;

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
}

/// `[metrics]`: Prometheus metrics over HTTP (docs/operations.md
/// "Metrics"); without the section nothing listens.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Where `GET /metrics` is served, e.g. "127.0.0.1:9464".
    pub listen: std::net::SocketAddr,
}

/// Bounds on what requests can make the node hold (README "Security
/// model"); every key is optional and defaults to [`Limits::default`].
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    pub list_entries: Option<usize>,
    pub dcse_entries: Option<usize>,
    pub value_length: Option<usize>,
    pub name_length: Option<usize>,
    pub answer_cache_bytes: Option<usize>,
    pub forwards_in_flight: Option<usize>,
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
fn default_max_payload() -> usize {
    256 * 1024
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
        cfg.resolve(path, std::env::var(PASSWORD_ENV).ok());
        let problems = cfg.problems();
        if problems.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigError::Invalid(path.to_owned(), problems))
        }
    }

    /// What [`Config::load`] does after parsing: paths relative to the
    /// config file's directory, the password from the environment.
    pub fn resolve(&mut self, path: &Path, env_password: Option<String>) {
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
        let url_password = self.broker().ok().and_then(|b| b.password);
        if self.mqtt.password.is_none() && url_password.is_none() {
            if let Some(p) = env_password.filter(|p| !p.is_empty()) {
                self.mqtt.password = Some(p);
                self.mqtt.password_from_env = true;
            }
        }
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
            }),
            registree_check_interval: self.registrees.check_interval,
            request_timeout: self.mqtt.timeout,
            durable: self.cse.data_dir.is_some(),
            max_payload: self.mqtt.max_payload,
            seed,
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
        p
    }
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

#[derive(Clone, Copy)]
enum Pem {
    Certificates,
    PrivateKey,
}

/// Whether `path` holds what TLS will load from it.
fn check_pem(path: &Path, what: Pem) -> Result<(), String> {
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

const SECTIONS: [&str; 7] = [
    "cse",
    "mqtt",
    "registrar",
    "registrees",
    "security",
    "limits",
    "metrics",
];

/// One section deserialized on its own, so that an error in one does not
/// hide the errors in the others (the rest of the document is ignored).
macro_rules! section {
    ($text:expr, $field:ident, $ty:ty) => {{
        #[derive(Deserialize)]
        struct Only {
            #[serde(default)]
            #[allow(dead_code)]
            $field: Option<$ty>,
        }
        toml::from_str::<Only>($text).err()
    }};
}

/// Everything `m2mnode run` would refuse or trip on in the config file
/// `path`, each with the key and, where it can be found, the line: every
/// TOML syntax error, every bad value or unknown key (the first per
/// section), every semantic problem, TLS files that do not load and a
/// `data_dir` that cannot be written. Empty: the config is good.
pub fn check_file(path: &Path) -> Vec<Problem> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return vec![Problem::new("", format!("cannot read it: {e}"))],
    };
    check_text(&text, path, std::env::var(PASSWORD_ENV).ok())
}

/// [`check_file`] on `text` as read from `path`.
pub fn check_text(text: &str, path: &Path, env_password: Option<String>) -> Vec<Problem> {
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let (_, syntax) = toml::de::DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        let mut found: Vec<Problem> = syntax
            .iter()
            .map(|e| Problem {
                key: String::new(),
                message: e.message().trim().to_owned(),
                line: e.span().map(|s| line_of(s.start)),
            })
            .collect();
        found.sort_by_key(|p| p.line);
        return found;
    }
    let mut found = Vec::new();
    // The key on the line a value error points at, else the section.
    let locate = |section: &str, e: toml::de::Error| {
        let line = e.span().map(|s| line_of(s.start));
        let key = line
            .and_then(|l| text.lines().nth(l - 1))
            .and_then(|l| l.split_once('='))
            .map(|(k, _)| k.trim())
            .filter(|k| !k.is_empty() && !k.starts_with('['))
            .map_or_else(|| section.to_owned(), |k| format!("{section}.{k}"));
        Problem {
            key,
            message: e.message().trim().to_owned(),
            line,
        }
    };
    let errors = [
        ("cse", section!(text, cse, CseConfig)),
        ("mqtt", section!(text, mqtt, MqttConfig)),
        ("registrar", section!(text, registrar, RegistrarConfig)),
        ("registrees", section!(text, registrees, RegistreesConfig)),
        ("security", section!(text, security, SecurityConfig)),
        ("limits", section!(text, limits, LimitsConfig)),
        ("metrics", section!(text, metrics, MetricsConfig)),
    ];
    for (name, e) in errors {
        if let Some(e) = e {
            found.push(locate(name, e));
        }
    }
    if let Ok(table) = toml::from_str::<toml::Table>(text) {
        for k in table.keys() {
            if !SECTIONS.contains(&k.as_str()) {
                found.push(Problem {
                    key: k.clone(),
                    message: format!("unknown section or key (known: {})", SECTIONS.join(", ")),
                    line: key_line(text, k),
                });
            }
        }
        for k in ["cse", "mqtt"] {
            if !table.contains_key(k) {
                found.push(Problem::new(k, format!("the [{k}] section is missing")));
            }
        }
    }
    if !found.is_empty() {
        return found;
    }
    let mut cfg: Config = match toml::from_str(text) {
        Ok(c) => c,
        Err(e) => return vec![locate("", e)],
    };
    cfg.resolve(path, env_password);
    for mut p in cfg.problem_list() {
        p.line = key_line(text, &p.key);
        found.push(p);
    }
    if let Some(dir) = &cfg.cse.data_dir {
        if let Err(e) = probe_dir(dir) {
            found.push(Problem {
                key: "cse.data_dir".into(),
                message: e,
                line: key_line(text, "cse.data_dir"),
            });
        }
    }
    found
}

/// Creates `dir` if missing and writes (and removes) a file in it.
fn probe_dir(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let probe = dir.join(format!(".m2mnode-probe-{}", std::process::id()));
    std::fs::write(&probe, b"probe")
        .map_err(|e| format!("cannot write in {}: {e}", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
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
        let p = check_text(&bad, Path::new("x.toml"), None);
        assert!(
            p.iter()
                .any(|p| p.key == "metrics.listen" && p.line == Some(14)),
            "{p:?}"
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
    fn globs() {
        assert!(glob_match("/id-*", "/id-mn"));
        assert!(glob_match("*", "/x"));
        assert!(glob_match("/id-??", "/id-mn"));
        assert!(!glob_match("/id-*", "/other"));
        assert!(!glob_match("/id-?", "/id-mn"));
    }
}
