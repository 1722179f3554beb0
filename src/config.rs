//! The TOML configuration (design.md, interface contract), validated with
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

#[derive(Clone, Debug, Deserialize)]
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

#[derive(Clone, Debug, Deserialize)]
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
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrarConfig {
    pub id: CseId,
    pub name: String,
    #[serde(default = "default_check_interval", deserialize_with = "duration")]
    pub check_interval: Duration,
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

/// A broker address taken apart (TS-0010 6.6: no port means 1883/8883).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl BrokerUrl {
    pub fn parse(url: &str) -> Result<BrokerUrl, String> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("mqtt://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("mqtts://") {
            (true, r)
        } else {
            return Err(format!("{url:?} must start with mqtt:// or mqtts://"));
        };
        let authority = rest.split('/').next().unwrap_or_default();
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
        let default_port = if tls { 8883 } else { 1883 };
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
            host,
            port,
            username,
            password,
        })
    }

    /// The URL as advertised in `poa`: no credentials.
    pub fn poa(&self) -> String {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            format!("{scheme}://[{}]:{}", self.host, self.port)
        } else {
            format!("{scheme}://{}:{}", self.host, self.port)
        }
    }
}

impl Config {
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

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| ConfigError::Read(path.to_owned(), e))?;
        Config::from_str(&text, path)
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

    pub fn poa(&self) -> Vec<String> {
        match (&self.cse.poa, self.broker()) {
            (Some(p), _) => p.clone(),
            (None, Ok(b)) => vec![b.poa()],
            (None, Err(_)) => Vec::new(),
        }
    }

    /// Every semantic problem, not just the first.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if let Err(e) = self.broker() {
            p.push(format!("mqtt.url: {e}"));
        }
        if self.cse.name.is_empty() || self.cse.name.contains('/') {
            p.push(format!(
                "cse.name {:?} must be a non-empty name without '/'",
                self.cse.name
            ));
        }
        if let Some(sp) = &self.cse.sp_id {
            if sp.is_empty() || sp.contains('/') {
                p.push(format!("cse.sp_id {sp:?} must be a domain name without '/' (e.g. \"acme.example.com\")"));
            }
        }
        if !matches!(self.mqtt.qos, 0 | 1) {
            p.push(format!(
                "mqtt.qos {} must be 0 or 1 (TS-0010: QoS 2 should not be used)",
                self.mqtt.qos
            ));
        }
        if self.mqtt.timeout.is_zero() {
            p.push("mqtt.timeout must be more than 0".into());
        }
        if self.mqtt.keep_alive < Duration::from_secs(1) {
            p.push("mqtt.keep_alive must be at least 1s".into());
        }
        if self.mqtt.max_payload < 1024 {
            p.push("mqtt.max_payload must be at least 1024 bytes".into());
        }
        if self.mqtt.password.is_some() && self.mqtt.username.is_none() {
            p.push("mqtt.password needs mqtt.username".into());
        }
        if self.mqtt.client_cert.is_some() != self.mqtt.client_key.is_some() {
            p.push("mqtt.client_cert and mqtt.client_key go together".into());
        }
        if let Ok(b) = self.broker() {
            if !b.tls && (self.mqtt.ca_file.is_some() || self.mqtt.client_cert.is_some()) {
                p.push("mqtt.ca_file/client_cert need an mqtts:// url".into());
            }
        }
        for f in [
            &self.mqtt.ca_file,
            &self.mqtt.client_cert,
            &self.mqtt.client_key,
        ]
        .into_iter()
        .flatten()
        {
            if !f.is_file() {
                p.push(format!("{} does not exist", f.display()));
            }
        }
        if let Some(r) = &self.registrar {
            if r.id == self.cse.id {
                p.push("registrar.id is this CSE's own id".into());
            }
            if self.cse.cse_type == CseType::IN {
                p.push(
                    "an IN-CSE registers nowhere: remove [registrar] or set cse.type = \"MN\""
                        .into(),
                );
            }
            if r.check_interval < Duration::from_secs(1) {
                p.push("registrar.check_interval must be at least 1s".into());
            }
            if r.name.is_empty() || r.name.contains('/') {
                p.push(format!(
                    "registrar.name {:?} must be a non-empty name without '/'",
                    r.name
                ));
            }
        } else if self.cse.cse_type != CseType::IN {
            p.push(format!(
                "a {:?}-CSE needs a [registrar] section (only an IN-CSE registers nowhere)",
                self.cse.cse_type
            ));
        }
        if self.registrees.check_interval < Duration::from_secs(1) {
            p.push("registrees.check_interval must be at least 1s".into());
        }
        p
    }
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
    fn globs() {
        assert!(glob_match("/id-*", "/id-mn"));
        assert!(glob_match("*", "/x"));
        assert!(glob_match("/id-??", "/id-mn"));
        assert!(!glob_match("/id-*", "/other"));
        assert!(!glob_match("/id-?", "/id-mn"));
    }
}
