//! `[sp_registrar.<name>]`: the IN-CSEs of other service providers this
//! IN-CSE registers at over Mcc' (docs/protocol.md §13), and the absolute
//! patterns `[registrees] allowed` takes for peers that register here.

use super::{mqtt_problems, BrokerUrl, Config, MqttConfig, Problem};
use crate::engine::{PeerSettings, TopicIds};
use crate::id::CseId;
use crate::resource::CseType;
use serde::{Deserialize, Deserializer};
use std::time::Duration;

/// One peer SP's IN-CSE.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpRegistrarConfig {
    /// The peer's SP-ID without slashes (`sp-b.example`).
    pub sp_id: String,
    /// The peer IN-CSE's SP-relative CSE-ID (`/id-in-b`).
    pub id: CseId,
    /// Its CSEBase resourceName.
    pub name: String,
    #[serde(
        default = "super::default_check_interval",
        deserialize_with = "super::duration"
    )]
    pub check_interval: Duration,
    #[serde(default, deserialize_with = "topic_ids")]
    pub topic_ids: TopicIds,
    /// That SP's broker, when it is not `[mqtt]`.
    #[serde(default)]
    pub mqtt: Option<MqttConfig>,
}

fn topic_ids<'de, D: Deserializer<'de>>(d: D) -> Result<TopicIds, D::Error> {
    let s = String::deserialize(d)?;
    match s.as_str() {
        "absolute" => Ok(TopicIds::Absolute),
        "sp-relative" => Ok(TopicIds::SpRelative),
        _ => Err(serde::de::Error::custom(format!(
            "{s:?} is not a topic ID form: \"absolute\" (TS-0010, :sp:id) or \"sp-relative\" (what ACME listens on)"
        ))),
    }
}

/// Whether `sp` is an SP-ID as configured (a lowercase domain name
/// without slashes; TS-0001 7.2: the FQDN part is lowercase).
fn valid_sp_id(sp: &str) -> bool {
    !sp.is_empty()
        && !sp.contains('/')
        && sp
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.'))
}

impl Config {
    /// The peers, in name order, each with the [`crate::topic::Link`] it
    /// is reached on: `[mqtt]` unless it has a broker of its own, then
    /// one link each, after `[registrar.mqtt]`'s.
    pub fn peer_settings(&self) -> Vec<PeerSettings> {
        let mut next = 2u8;
        self.sp_registrar
            .iter()
            .map(|(name, p)| {
                let link = match &p.mqtt {
                    Some(_) => {
                        let l = crate::topic::Link(next);
                        next = next.saturating_add(1);
                        l
                    }
                    None => crate::topic::Link::LOCAL,
                };
                let poa = (self.cse.poa.is_none())
                    .then_some(p.mqtt.as_ref())
                    .flatten()
                    .and_then(|m| BrokerUrl::parse(&m.url).ok())
                    .map(|b| vec![b.poa()]);
                PeerSettings {
                    name: name.clone(),
                    sp_id: p.sp_id.clone(),
                    id: p.id.clone(),
                    rn: p.name.clone(),
                    check_interval: p.check_interval,
                    topic_ids: p.topic_ids,
                    link,
                    poa,
                }
            })
            .collect()
    }

    /// The broker sections of the peers that have one: (section, config).
    pub fn peer_mqtt(&self) -> Vec<(String, &MqttConfig)> {
        self.sp_registrar
            .iter()
            .filter_map(|(n, p)| {
                p.mqtt
                    .as_ref()
                    .map(|m| (format!("sp_registrar.{n}.mqtt"), m))
            })
            .collect()
    }

    /// The problems of `[sp_registrar.*]`, `cse.sp_id` for them, and the
    /// absolute patterns of `[registrees] allowed`.
    pub(super) fn intersp_problems(&self) -> Vec<Problem> {
        let mut p = Vec::new();
        let mut push = |k: &str, m: String| p.push(Problem::new(k, m));
        if !self.sp_registrar.is_empty() {
            if self.cse.cse_type != CseType::IN {
                let first = self.sp_registrar.keys().next().cloned().unwrap_or_default();
                push(
                    &format!("sp_registrar.{first}"),
                    format!(
                        "only an IN-CSE registers at other service providers (Mcc'); this is an {:?}-CSE: remove [sp_registrar.*] or set cse.type = \"IN\"",
                        self.cse.cse_type
                    ),
                );
            }
            if self.cse.sp_id.is_none() {
                push(
                    "cse.sp_id",
                    "is required with [sp_registrar.*]: the own SP-ID makes this CSE's ID absolute across SPs (e.g. sp_id = \"sp-a.example\")".into(),
                );
            }
        }
        // An sp_id with '/' is reported by the general check already.
        if let (Some(sp), false) = (&self.cse.sp_id, self.sp_registrar.is_empty()) {
            if !sp.is_empty() && !sp.contains('/') && !valid_sp_id(sp) {
                push(
                    "cse.sp_id",
                    format!("{sp:?} must be a lowercase domain name without '/'"),
                );
            }
        }
        let mut seen: Vec<(&str, &CseId)> = Vec::new();
        for (name, r) in &self.sp_registrar {
            let key = |leaf: &str| format!("sp_registrar.{name}.{leaf}");
            if !valid_sp_id(&r.sp_id) {
                push(
                    &key("sp_id"),
                    format!(
                        "{:?} must be a lowercase domain name without '/' (e.g. \"sp-b.example\")",
                        r.sp_id
                    ),
                );
            } else if self.cse.sp_id.as_deref() == Some(r.sp_id.as_str()) {
                push(
                    &key("sp_id"),
                    "is this CSE's own SP-ID: a registrar in the own SP goes in [registrar]".into(),
                );
            }
            if seen.contains(&(r.sp_id.as_str(), &r.id)) {
                push(
                    &key("id"),
                    format!("//{}{} is configured twice", r.sp_id, r.id),
                );
            }
            seen.push((r.sp_id.as_str(), &r.id));
            if r.name.is_empty() || r.name.contains('/') {
                push(
                    &key("name"),
                    format!("{:?} must be a non-empty name without '/'", r.name),
                );
            }
            if r.check_interval < Duration::from_secs(1) {
                push(&key("check_interval"), "must be at least 1s".into());
            }
            if let Some(m) = &r.mqtt {
                let sec = format!("sp_registrar.{name}.mqtt");
                if let Err(e) = BrokerUrl::parse(&m.url) {
                    push(&format!("{sec}.url"), e);
                }
                mqtt_problems(m, &sec, &mut push);
            }
        }
        if self.sp_registrar.len() > 200 {
            push(
                "sp_registrar",
                "at most 200 peer SPs (one link each at most)".into(),
            );
        }
        for a in &self.registrees.allowed {
            if let Some(rest) = a.strip_prefix("//") {
                let sp = rest.split('/').next().unwrap_or_default();
                if !rest.contains('/') || (!valid_sp_id(sp) && !sp.contains(['*', '?'])) {
                    push(
                        "registrees.allowed",
                        format!("{a:?} is not an absolute CSE-ID pattern (e.g. \"//sp-b.example/id-in-b\" or \"//sp-b.example/*\")"),
                    );
                }
            }
        }
        p
    }
}

/// The line of `key` when its table is nested (`sp_registrar.b.mqtt.qos`
/// in `[sp_registrar.b.mqtt]`), else of the table's header.
pub(super) fn table_key_line(text: &str, key: &str) -> Option<usize> {
    let (table, leaf) = key.rsplit_once('.')?;
    let mut current = String::new();
    let mut header = None;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if let Some(h) = t.strip_prefix('[') {
            current = h.split(']').next().unwrap_or_default().trim().to_owned();
            if current == table || current == key {
                header = header.or(Some(i + 1));
            }
            continue;
        }
        if current == table
            && t.split_once('=')
                .is_some_and(|(k, _)| k.trim().trim_matches('"') == leaf)
        {
            return Some(i + 1);
        }
    }
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    const IN: &str = "[cse]\nid = \"/id-in-a\"\nname = \"cse-in-a\"\ntype = \"IN\"\nsp_id = \"sp-a.example\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n";
    const PEER: &str =
        "[sp_registrar.b]\nsp_id = \"sp-b.example\"\nid = \"/id-in-b\"\nname = \"cse-in-b\"\n";

    fn parse(text: &str) -> Result<Config, String> {
        Config::from_str(text, std::path::Path::new("t.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn a_peer_sp_with_defaults() {
        let c = parse(&format!("{IN}{PEER}")).expect("config");
        let p = c.peer_settings();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].sp_id, "sp-b.example");
        assert_eq!(p[0].id.as_str(), "/id-in-b");
        assert_eq!(p[0].topic_ids, TopicIds::Absolute);
        assert_eq!(p[0].link, crate::topic::Link::LOCAL);
        assert_eq!(p[0].check_interval, Duration::from_secs(60));
        let s = c.engine_settings(crate::time::Timestamp::from_secs(0), 1);
        assert_eq!(s.peers.len(), 1);
    }

    #[test]
    fn a_peer_with_a_broker_of_its_own_gets_a_link() {
        let c = parse(&format!(
            "{IN}{PEER}topic_ids = \"sp-relative\"\ncheck_interval = \"5s\"\n[sp_registrar.b.mqtt]\nurl = \"mqtt://127.0.0.1:1884\"\n[sp_registrar.c]\nsp_id = \"sp-c.example\"\nid = \"/id-in-c\"\nname = \"cse-in-c\"\n"
        ))
        .expect("config");
        let p = c.peer_settings();
        assert_eq!(p[0].link, crate::topic::Link(2));
        assert_eq!(p[0].topic_ids, TopicIds::SpRelative);
        assert_eq!(
            p[0].poa.as_deref(),
            Some(&["mqtt://127.0.0.1:1884".to_owned()][..])
        );
        assert_eq!(p[1].link, crate::topic::Link::LOCAL);
        assert_eq!(c.peer_mqtt().len(), 1);
    }

    #[test]
    fn only_an_in_cse_with_an_sp_id() {
        let mn = IN.replace("\"IN\"", "\"MN\"")
            + "[registrar]\nid = \"/id-in-a\"\nname = \"cse-in-a\"\n";
        let mn = mn.replace(
            "id = \"/id-in-a\"\nname = \"cse-in-a\"\ntype",
            "id = \"/id-mn\"\nname = \"cse-mn\"\ntype",
        );
        let e = parse(&format!("{mn}{PEER}")).expect_err("an MN");
        assert!(e.contains("sp_registrar.b") && e.contains("IN-CSE"), "{e}");
        let no_sp = IN.replace("sp_id = \"sp-a.example\"\n", "");
        let e = parse(&format!("{no_sp}{PEER}")).expect_err("no sp_id");
        assert!(e.contains("cse.sp_id") && e.contains("required"), "{e}");
    }

    #[test]
    fn bad_peer_values_name_their_key() {
        let e = parse(&format!("{IN}{PEER}topic_ids = \"both\"\n")).expect_err("topic ids");
        assert!(e.contains("sp-relative"), "{e}");
        let e = parse(&format!(
            "{IN}[sp_registrar.b]\nsp_id = \"sp-a.example\"\nid = \"/id-in-b\"\nname = \"x/y\"\ncheck_interval = \"0s\"\n[sp_registrar.b.mqtt]\nurl = \"ftp://x\"\n"
        ))
        .expect_err("bad");
        for k in [
            "sp_registrar.b.sp_id",
            "sp_registrar.b.name",
            "sp_registrar.b.check_interval",
            "sp_registrar.b.mqtt.url",
        ] {
            assert!(e.contains(k), "{k} in {e}");
        }
    }

    #[test]
    fn absolute_patterns_in_allowed() {
        let ok = parse(&format!(
            "{IN}[registrees]\nallowed = [\"/id-mn*\", \"//sp-b.example/id-in-b\", \"//sp-c.example/*\"]\n"
        ));
        assert!(ok.is_ok(), "{ok:?}");
        let e = parse(&format!(
            "{IN}[registrees]\nallowed = [\"//sp-b.example\"]\n"
        ))
        .expect_err("no CSE-ID");
        assert!(e.contains("registrees.allowed"), "{e}");
    }

    #[test]
    fn check_config_knows_the_sections() {
        let dir = std::env::temp_dir().join(format!("m2mnode-intersp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("m.toml");
        std::fs::write(
            &path,
            format!("{IN}{PEER}check_interval = \"0s\"\n[sp_registrar.b.mqtt]\nurl = \"mqtt://127.0.0.1:1884\"\nqos = 2\n"),
        )
        .expect("write");
        let problems = super::super::check_file(&path);
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert!(
            keys.contains(&"sp_registrar.b.check_interval")
                && keys.contains(&"sp_registrar.b.mqtt.qos"),
            "{problems:?}"
        );
        let line = |k: &str| problems.iter().find(|p| p.key == k).and_then(|p| p.line);
        assert_eq!(
            line("sp_registrar.b.check_interval"),
            Some(12),
            "{problems:?}"
        );
        assert_eq!(line("sp_registrar.b.mqtt.qos"), Some(15), "{problems:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_reload_changes_peers_live_unless_a_broker_changes() {
        let a = parse(&format!("{IN}{PEER}")).expect("config");
        let b = parse(&format!("{IN}{PEER}check_interval = \"5s\"\n")).expect("config");
        let plan = a.reload_plan(&b);
        assert!(plan.restart.is_empty(), "{plan:?}");
        assert_eq!(plan.peers.as_ref().map(Vec::len), Some(1));
        assert!(plan.applied().contains(&"sp_registrar"));
        let none = parse(IN).expect("config");
        assert_eq!(a.reload_plan(&none).peers, Some(Vec::new()));
        let own = parse(&format!(
            "{IN}{PEER}[sp_registrar.b.mqtt]\nurl = \"mqtt://127.0.0.1:1884\"\n"
        ))
        .expect("config");
        let plan = a.reload_plan(&own);
        assert!(plan.restart.contains(&"sp_registrar") && plan.peers.is_none());
        assert_eq!(a.after_reload(own, &plan).sp_registrar, a.sp_registrar);
    }
}
