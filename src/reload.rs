//! What a reload (SIGHUP) changes: a pure function of the configuration
//! in force and the one just read (docs/operations.md, "Reload"). The
//! driver applies the plan to the engine and prints it; what cannot change
//! while running is listed, and stays as it runs until a restart.

use crate::config::Config;
use crate::engine::{Limits, Severity, UpstreamSettings};
use crate::id::CseId;
use std::time::Duration;

/// What changed, as the engine takes it.
#[derive(Debug, Default)]
pub struct ReloadPlan {
    pub allowed: Option<Vec<String>>,
    pub registree_check_interval: Option<Duration>,
    pub limits: Option<Limits>,
    pub registrar_check_interval: Option<Duration>,
    /// Another registrar (or none): deregister, then register there.
    pub registrar: Option<Option<(CseId, UpstreamSettings)>>,
    /// Other peer SPs (`[sp_registrar.*]` without brokers of their own
    /// changed): registered at, changed or deregistered from live.
    pub peers: Option<Vec<crate::engine::PeerSettings>>,
    /// Sections whose change needs a restart (`cse`, `mqtt`, ...).
    pub restart: Vec<&'static str>,
}

impl ReloadPlan {
    /// The one line a reload of `path` is told in, and its level: a change
    /// that waits for a restart is a warning.
    pub fn outcome(&self, path: &std::path::Path) -> (Severity, String) {
        let applied = self.applied();
        let applied = if applied.is_empty() {
            "nothing changed".to_owned()
        } else {
            applied.join(", ")
        };
        let mut line = format!(
            "reloaded the configuration {}: applied {applied}",
            path.display()
        );
        if self.restart.is_empty() {
            return (Severity::Info, line);
        }
        line.push_str(&format!(
            "; {} take effect only after a restart",
            self.restart.join(", ")
        ));
        (Severity::Warn, line)
    }

    /// The one line a reload refused because of `why` is told in.
    pub fn refused(path: &std::path::Path, why: &str) -> (Severity, String) {
        let why: Vec<&str> = why
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        (
            Severity::Error,
            format!(
                "reload refused ({}), the running configuration stays: {}",
                path.display(),
                why.join(" | ")
            ),
        )
    }

    /// The settings this plan applies, by config key.
    pub fn applied(&self) -> Vec<&'static str> {
        let mut a = Vec::new();
        if self.allowed.is_some() {
            a.push("registrees.allowed");
        }
        if self.registree_check_interval.is_some() {
            a.push("registrees.check_interval");
        }
        if self.limits.is_some() {
            a.push("limits");
        }
        if self.registrar_check_interval.is_some() {
            a.push("registrar.check_interval");
        }
        if self.registrar.is_some() {
            a.push("registrar");
        }
        if self.peers.is_some() {
            a.push("sp_registrar");
        }
        a
    }
}

impl Config {
    /// What changes from `self` (in force) to `new`, and what needs a
    /// restart. A changed `[registrar]` id or name is applied (deregister
    /// there, register at the new one); a changed broker of its own
    /// (`[registrar.mqtt]`) needs a restart, as do `[cse]`, `[mqtt]` and
    /// `[security]`.
    pub fn reload_plan(&self, new: &Config) -> ReloadPlan {
        let mut plan = ReloadPlan::default();
        // Peer SPs change live; a broker of its own (a link) needs a
        // restart to be opened or closed.
        if new.sp_registrar != self.sp_registrar {
            let brokers = |c: &Config| {
                c.sp_registrar
                    .iter()
                    .filter_map(|(n, p)| p.mqtt.as_ref().map(|m| (n.clone(), m.clone())))
                    .collect::<Vec<_>>()
            };
            if brokers(new) != brokers(self) {
                plan.restart.push("sp_registrar");
            } else {
                plan.peers = Some(new.peer_settings());
            }
        }
        if new.registrees.allowed != self.registrees.allowed {
            plan.allowed = Some(new.registrees.allowed.clone());
        }
        if new.registrees.check_interval != self.registrees.check_interval {
            plan.registree_check_interval = Some(new.registrees.check_interval);
        }
        if new.limits() != self.limits() {
            plan.limits = Some(new.limits());
        }
        match (&self.registrar, &new.registrar) {
            (Some(old), Some(n)) if old.mqtt != n.mqtt => plan.restart.push("registrar.mqtt"),
            (Some(old), Some(n))
                if old.id == n.id && old.name == n.name && old.serialization == n.serialization =>
            {
                if n.check_interval != old.check_interval {
                    plan.registrar_check_interval = Some(n.check_interval);
                }
            }
            (None, None) => {}
            // An IN that gets a registrar, or an MN that loses its own broker
            // toward it, changes links: only a restart opens or closes one.
            (None, Some(n)) | (Some(_), Some(n)) if n.mqtt.is_some() => {
                plan.restart.push("registrar.mqtt")
            }
            (Some(old), None) if old.mqtt.is_some() => plan.restart.push("registrar.mqtt"),
            _ => {
                let settings = new.engine_settings(crate::time::Timestamp::from_secs(0), 0);
                plan.registrar = Some(
                    new.registrar
                        .as_ref()
                        .zip(settings.registration)
                        .map(|(r, s)| (r.id.clone(), s)),
                );
            }
        }
        if new.cse != self.cse {
            plan.restart.push("cse");
        }
        if new.mqtt != self.mqtt {
            plan.restart.push("mqtt");
        }
        if new.security.admin != self.security.admin {
            plan.restart.push("security");
        }
        plan
    }

    /// The configuration in force once `plan` (made from `self` to `new`)
    /// is applied: what needs a restart stays as it runs, so a later
    /// reload compares against what is really in force.
    pub fn after_reload(&self, mut new: Config, plan: &ReloadPlan) -> Config {
        if plan.restart.contains(&"registrar.mqtt") {
            new.registrar = self.registrar.clone();
        }
        if plan.restart.contains(&"sp_registrar") {
            new.sp_registrar = self.sp_registrar.clone();
        }
        new.security = self.security.clone();
        new.cse = self.cse.clone();
        new.mqtt = self.mqtt.clone();
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MN: &str = "[cse]\nid = \"/id-mn\"\nname = \"cse-mn\"\ntype = \"MN\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n";

    fn cfg(extra: &str) -> Config {
        Config::from_str(&format!("{MN}{extra}"), std::path::Path::new("t.toml")).expect("config")
    }

    #[test]
    fn nothing_changed_is_an_empty_plan() {
        let a = cfg("[registrar]\nid = \"/id-in\"\nname = \"cse-in\"\n");
        let plan = a.reload_plan(&a.clone());
        assert!(
            plan.applied().is_empty() && plan.restart.is_empty(),
            "{plan:?}"
        );
    }

    #[test]
    fn a_corrected_registrar_name_is_applied() {
        let a = cfg("[registrar]\nid = \"/id-in\"\nname = \"cse-typo\"\n");
        let b = cfg("[registrar]\nid = \"/id-in\"\nname = \"cse-in\"\n");
        let plan = a.reload_plan(&b);
        assert_eq!(plan.applied(), vec!["registrar"]);
        let Some(Some((id, s))) = &plan.registrar else {
            panic!("a new registrar: {plan:?}");
        };
        assert_eq!(id.as_str(), "/id-in");
        assert_eq!(s.registrar_rn, "cse-in");
        assert!(plan.restart.is_empty());
    }

    #[test]
    fn a_check_interval_alone_keeps_the_registration() {
        let a = cfg("[registrar]\nid = \"/id-in\"\nname = \"cse-in\"\ncheck_interval = \"60s\"\n");
        let b = cfg("[registrar]\nid = \"/id-in\"\nname = \"cse-in\"\ncheck_interval = \"5s\"\n");
        let plan = a.reload_plan(&b);
        assert_eq!(plan.applied(), vec!["registrar.check_interval"]);
        assert!(plan.registrar.is_none());
    }

    #[test]
    fn a_registrar_broker_and_the_cse_need_a_restart() {
        let a = cfg("[registrar]\nid = \"/id-in\"\nname = \"cse-in\"\n");
        let b = Config::from_str(
            &format!(
                "{}[registrar]\nid = \"/id-in\"\nname = \"cse-in\"\n[registrar.mqtt]\nurl = \"mqtt://127.0.0.1:1884\"\n",
                MN.replace("cse-mn", "cse-mn2")
            ),
            std::path::Path::new("t.toml"),
        )
        .expect("config");
        let plan = a.reload_plan(&b);
        assert_eq!(plan.restart, vec!["registrar.mqtt", "cse"]);
        let kept = a.after_reload(b, &plan);
        assert_eq!(kept.cse.name, "cse-mn");
        assert!(kept.registrar.as_ref().is_some_and(|r| r.mqtt.is_none()));
    }

    #[test]
    fn a_reload_is_one_line_at_the_level_it_deserves() {
        let a = cfg("[registrar]\nid = \"/id-in\"\nname = \"cse-in\"\n");
        let path = std::path::Path::new("/etc/m2mnode/m2mnode.toml");
        let (sev, line) = a.reload_plan(&a.clone()).outcome(path);
        assert_eq!(sev, Severity::Info);
        assert!(line.ends_with("applied nothing changed"), "{line}");
        let mut b = a.clone();
        b.cse.name = "other".into();
        let (sev, line) = a.reload_plan(&b).outcome(path);
        assert_eq!(sev, Severity::Warn);
        assert!(
            line.contains("cse take effect only after a restart"),
            "{line}"
        );
        let (sev, line) = ReloadPlan::refused(path, "x.toml:3: cse.id: bad\n  more\n");
        assert_eq!(sev, Severity::Error);
        assert!(
            !line.contains('\n') && line.contains("cse.id: bad | more"),
            "{line}"
        );
    }

    #[test]
    fn allowed_and_limits_apply_live() {
        let reg = "[registrar]\nid = \"/id-in\"\nname = \"cse-in\"\n";
        let a = cfg(reg);
        let b = cfg(&format!(
            "{reg}[registrees]\nallowed = [\"/id-a*\"]\n[limits]\nforwards_in_flight = 8\n"
        ));
        let plan = a.reload_plan(&b);
        assert_eq!(plan.applied(), vec!["registrees.allowed", "limits"]);
        assert_eq!(plan.limits.map(|l| l.forwards_in_flight), Some(8));
    }
}
