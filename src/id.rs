//! Identifiers (docs/protocol.md §4.1, §4.2) and their MQTT topic form (docs/protocol.md §1.2).

use serde::{Deserialize, Serialize};
use std::fmt;

/// An SP-relative CSE-ID such as `/id-in`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CseId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("CSE-ID {0:?} must start with a single '/' followed by a name, e.g. \"/id-in\"")]
    NotSpRelative(String),
    #[error(
        "{0:?} contains {1:?}, which is not allowed in an ID (letters, digits, '-', '.', '_', '~')"
    )]
    BadChar(String, char),
    #[error("resource ID {0:?} is malformed: {1}")]
    BadTarget(String, &'static str),
}

/// Characters of a single ID segment. ':' and the MQTT wildcards must stay out
/// because IDs become topic levels.
fn valid_segment(s: &str) -> Result<(), char> {
    match s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~')))
    {
        Some(c) => Err(c),
        None => Ok(()),
    }
}

impl CseId {
    pub fn new(s: impl Into<String>) -> Result<CseId, IdError> {
        let s = s.into();
        let name = match s.strip_prefix('/') {
            Some(n) if !n.is_empty() && !n.starts_with('/') => n,
            _ => return Err(IdError::NotSpRelative(s)),
        };
        valid_segment(name).map_err(|c| IdError::BadChar(s.clone(), c))?;
        Ok(CseId(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The ID without its leading '/': ACME and tinyIoT name resources and
    /// MQTT client ids after it (`id-mn`, `C::id-mn`).
    pub fn bare(&self) -> &str {
        &self.0[1..]
    }

    /// The MQTT client identifier of TS-0010 6.3.3.
    pub fn client_id(&self) -> String {
        format!("C::{}", self.bare())
    }
}

impl TryFrom<String> for CseId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        CseId::new(s)
    }
}

impl From<CseId> for String {
    fn from(c: CseId) -> String {
        c.0
    }
}

impl fmt::Display for CseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for CseId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        CseId::new(s)
    }
}

/// An ID as a topic level (TS-0010 6.4.2/6.4.3): SP-relative and CSE-relative
/// IDs lose their leading '/', absolute ones turn '//' into ':', and every
/// remaining '/' becomes ':'.
pub fn to_topic_segment(id: &str) -> String {
    if let Some(rest) = id.strip_prefix("//") {
        format!(":{}", rest.replace('/', ":"))
    } else {
        id.strip_prefix('/').unwrap_or(id).replace('/', ":")
    }
}

/// The inverse of [`to_topic_segment`] for SP-relative and absolute IDs, the
/// only kinds that appear as originator or receiver on Mcc.
pub fn from_topic_segment(seg: &str) -> String {
    match seg.strip_prefix(':') {
        Some(rest) => format!("//{}", rest.replace(':', "/")),
        None => format!("/{}", seg.replace(':', "/")),
    }
}

/// Where the `to` of a request points, seen from one CSE (docs/protocol.md §4.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target<'a> {
    /// Hosted here; the CSE-relative rest (may be empty: the CSEBase).
    Local(&'a str),
    /// Hosted by another CSE; `csi` is its SP-relative CSE-ID.
    Remote { csi: String },
    /// Hosted in another service provider's domain.
    OtherSp { sp: &'a str },
}

/// Splits `to` by its scope. `own_sp` is this CSE's SP-ID without slashes;
/// `None` takes every absolute ID as one of this SP.
pub fn resolve<'a>(to: &'a str, own: &CseId, own_sp: Option<&str>) -> Result<Target<'a>, IdError> {
    let bad = |why| IdError::BadTarget(to.to_owned(), why);
    if to.is_empty() {
        return Err(bad("empty"));
    }
    if to.starts_with("///") {
        return Err(bad("more than two leading '/'"));
    }
    if to.len() > 1 && to.ends_with('/') {
        return Err(bad("empty last segment"));
    }
    // Absolute `//sp/csi/...`: our SP collapses to the SP-relative form.
    let sp_relative = match to.strip_prefix("//") {
        Some(rest) => {
            let (sp, _) = rest
                .split_once('/')
                .ok_or_else(|| bad("no CSE-ID after the SP-ID"))?;
            if own_sp.is_some_and(|own_sp| own_sp != sp) {
                return Ok(Target::OtherSp { sp });
            }
            &to[2 + sp.len()..]
        }
        None if to.starts_with('/') => to,
        None => return Ok(Target::Local(to)),
    };
    let rest = &sp_relative[1..];
    let (csi, path) = rest.split_once('/').unwrap_or((rest, ""));
    if csi.is_empty() {
        return Err(bad("empty CSE-ID"));
    }
    if csi == own.bare() {
        Ok(Target::Local(path))
    } else {
        Ok(Target::Remote {
            csi: format!("/{csi}"),
        })
    }
}

/// `*` and `?` globs, as ACME's `allowedCSROriginators`.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// The SP-relative CSE-ID an ID speaks for: the CSE itself for a CSE-ID,
/// the hosting CSE for an ID below one (`/id-mn/Cae` → `/id-mn`); `None`
/// for an AE-ID that names no CSE (`Cae`, `/Sae`).
pub fn speaker_cse(id: &str) -> Option<&str> {
    let sp_relative = match id.strip_prefix("//") {
        Some(rest) => &rest[rest.find('/')?..],
        None if id.starts_with('/') => id,
        None => return None,
    };
    let first_len = sp_relative[1..]
        .find('/')
        .map_or(sp_relative.len(), |i| i + 1);
    let cse = &sp_relative[..first_len];
    if cse.len() < 2 || (first_len == sp_relative.len() && cse[1..].starts_with('S')) {
        return None;
    }
    Some(cse)
}

/// AE-IDs: CSE-relative `C…`/`S…`, SP-relative `/S…`, or an ID below a CSE
/// (`/id-mn/Cae`). CSE-IDs are a single SP-relative segment.
pub fn is_ae_id(id: &str) -> bool {
    match id.strip_prefix('/') {
        None => id.starts_with('C') || id.starts_with('S'),
        Some(rest) if rest.starts_with('/') => rest[1..].split('/').count() > 2,
        Some(rest) => rest.contains('/') || rest.starts_with('S'),
    }
}

/// The resourceName a CSE of SP `sp` gets in another SP (ACME's
/// `sp-a.example_id-in-a`).
pub fn foreign_rn(sp: &str, csi: &CseId) -> String {
    format!("{sp}_{}", csi.bare())
}

/// (SP-ID, SP-relative rest) of an absolute ID `//sp/rest`.
pub fn split_absolute(id: &str) -> Option<(&str, &str)> {
    let rest = id.strip_prefix("//")?;
    let i = rest.find('/')?;
    Some((&rest[..i], &rest[i..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own() -> CseId {
        CseId::new("/id-in").expect("valid")
    }

    #[test]
    fn cse_ids_are_validated() {
        assert!(CseId::new("/id-in").is_ok());
        assert!(matches!(
            CseId::new("id-in"),
            Err(IdError::NotSpRelative(_))
        ));
        assert!(matches!(
            CseId::new("//sp/id"),
            Err(IdError::NotSpRelative(_))
        ));
        assert!(matches!(CseId::new("/"), Err(IdError::NotSpRelative(_))));
        assert!(matches!(CseId::new("/a/b"), Err(IdError::BadChar(_, '/'))));
        assert!(matches!(CseId::new("/a+"), Err(IdError::BadChar(_, '+'))));
        assert_eq!(own().client_id(), "C::id-in");
    }

    #[test]
    fn topic_segments_follow_ts_0010() {
        assert_eq!(to_topic_segment("/id-mn"), "id-mn");
        assert_eq!(to_topic_segment("/id-mn/Cae01"), "id-mn:Cae01");
        assert_eq!(to_topic_segment("/Sae02"), "Sae02");
        assert_eq!(
            to_topic_segment("//sp.example.com/id-in"),
            ":sp.example.com:id-in"
        );
        assert_eq!(
            from_topic_segment(":sp.example.com:id-in"),
            "//sp.example.com/id-in"
        );
        assert_eq!(from_topic_segment("id-mn:Cae01"), "/id-mn/Cae01");
    }

    #[test]
    fn targets_resolve_by_scope() {
        let sp = Some("m2m.example");
        assert_eq!(
            resolve("cse-in/id-mn", &own(), sp),
            Ok(Target::Local("cse-in/id-mn"))
        );
        assert_eq!(
            resolve("/id-in/cse-in", &own(), sp),
            Ok(Target::Local("cse-in"))
        );
        assert_eq!(resolve("/id-in", &own(), sp), Ok(Target::Local("")));
        assert_eq!(
            resolve("//m2m.example/id-in/cse-in", &own(), sp),
            Ok(Target::Local("cse-in"))
        );
        assert_eq!(
            resolve("/id-mn/cse-mn", &own(), sp),
            Ok(Target::Remote {
                csi: "/id-mn".into()
            })
        );
        assert_eq!(
            resolve("//other/id-in/x", &own(), sp),
            Ok(Target::OtherSp { sp: "other" })
        );
        assert!(resolve("///x", &own(), sp).is_err());
        assert!(resolve("cse-in/", &own(), sp).is_err());
        assert!(resolve("", &own(), sp).is_err());
        assert!(resolve("//", &own(), sp).is_err());
        assert_eq!(
            resolve("//any/id-in/cse-in", &own(), None),
            Ok(Target::Local("cse-in"))
        );
    }

    #[test]
    fn speakers_of_ids() {
        assert_eq!(speaker_cse("/id-mn"), Some("/id-mn"));
        assert_eq!(speaker_cse("/id-mn/Cae"), Some("/id-mn"));
        assert_eq!(speaker_cse("//sp/id-mn/Cae"), Some("/id-mn"));
        assert_eq!(speaker_cse("Cae"), None);
        assert_eq!(speaker_cse("/Sae"), None);
        assert_eq!(speaker_cse("/"), None);
        assert_eq!(speaker_cse("//sp"), None);
    }

    #[test]
    fn ae_ids_are_told_from_cse_ids() {
        for ae in ["Cae", "Sae", "/Sae", "/id-mn/Cae", "//sp/id-mn/Cae"] {
            assert!(is_ae_id(ae), "{ae}");
        }
        for cse in ["/id-mn", "/cse1", "//sp/id-mn"] {
            assert!(!is_ae_id(cse), "{cse}");
        }
    }
}
