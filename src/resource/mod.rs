//! The resources this node hosts: its `<CSEBase>` and the `<remoteCSE>`s of
//! its registrar and registrees (notes §3).

use crate::id::CseId;
use crate::primitive::{Content, ResourceType};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// cseType (notes §2.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CseType {
    IN,
    MN,
    ASN,
}

impl CseType {
    pub fn code(self) -> u8 {
        match self {
            CseType::IN => 1,
            CseType::MN => 2,
            CseType::ASN => 3,
        }
    }
}

/// `m2m:cb`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CseBase {
    pub ri: String,
    pub rn: String,
    pub ty: ResourceType,
    pub pi: String,
    pub csi: CseId,
    pub cst: u8,
    pub srv: Vec<String>,
    pub poa: Vec<String>,
    pub csz: Vec<String>,
    pub srt: Vec<u32>,
    pub ct: String,
    pub lt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spi: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lbl: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nl: Option<String>,
}

/// The serializations this node reads and writes, most preferred first, as
/// MIME strings: ACME reads those, and notes §8.4 asks to accept both.
pub const CSZ: &[&str] = &["application/json", "application/cbor"];

impl CseBase {
    /// The representation answered to a RETRIEVE, with `ctm` (currentTime).
    pub fn to_content(&self, now: &str) -> Content {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Value::Object(m) = &mut v {
            m.insert("ctm".into(), Value::String(now.to_owned()));
        }
        crate::primitive::wrap("m2m:cb", v)
    }

    /// Its structured address, `/id-mn/cse-mn`.
    pub fn address(&self) -> String {
        format!("{}/{}", self.csi, self.rn)
    }
}

/// `m2m:csr`. Typed where this node reads an attribute; everything else a
/// peer sent is kept in `other` and given back unchanged. Whether an unknown
/// attribute is acceptable is decided by the registrar, not silently here.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RemoteCse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pi: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ty: Option<ResourceType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ct: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub et: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lbl: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cst: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csi: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cb: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poa: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nl: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rr: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csz: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub srv: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dcse: Option<Vec<String>>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// Every attribute a `<remoteCSE>` may carry (notes §3.1, with ACME's R4+
/// `spi`/`ici`).
pub const CSR_ATTRIBUTES: &[&str] = &[
    "rn", "ty", "ri", "pi", "ct", "lt", "et", "lbl", "acpi", "daci", "at", "aa", "cst", "csi",
    "cb", "poa", "nl", "mei", "tri", "trn", "rr", "csz", "esi", "dcse", "srv", "mtcc", "egid",
    "tren", "ape", "spi", "ici", "cr", "st",
];

/// Attributes a registree may not set in an UPDATE (NP in TS-0004 7.4.4.1-3).
pub const CSR_NOT_UPDATABLE: &[&str] = &[
    "rn", "ty", "ri", "pi", "ct", "lt", "cst", "csi", "cb", "st", "cr",
];

/// Attributes a registree may not set in a CREATE: the registrar assigns them.
pub const CSR_NOT_CREATABLE: &[&str] = &["ty", "ri", "pi", "ct", "lt", "st", "cr"];

impl RemoteCse {
    pub fn to_content(&self) -> Content {
        crate::primitive::wrap("m2m:csr", serde_json::to_value(self).unwrap_or(Value::Null))
    }

    /// Reads `{"m2m:csr": {...}}`.
    pub fn from_content(pc: &Content) -> Result<RemoteCse, String> {
        let body = pc
            .get("m2m:csr")
            .ok_or_else(|| "content is not an m2m:csr".to_string())?;
        serde_json::from_value(body.clone()).map_err(|e| format!("invalid m2m:csr: {e}"))
    }

    pub fn csi(&self) -> Option<&str> {
        self.csi.as_deref()
    }

    pub fn dcse(&self) -> &[String] {
        self.dcse.as_deref().unwrap_or(&[])
    }

    /// The local CSR that represents a registrar, made from its `<CSEBase>`
    /// (ACME `_copyCSE2CSR`): the registrar's identity and reachability, and
    /// `cb` as `<csi>/<rn>`. A registrar CSR never carries `dcse`.
    pub fn from_cse_base(cb: &Value) -> Result<RemoteCse, String> {
        let cb = cb.get("m2m:cb").ok_or("content is not an m2m:cb")?;
        let s = |k: &str| cb.get(k).and_then(Value::as_str).map(str::to_owned);
        let list = |k: &str| {
            cb.get(k).and_then(Value::as_array).map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect::<Vec<_>>()
            })
        };
        let csi = s("csi").ok_or("m2m:cb has no csi")?;
        let rn = s("rn").ok_or("m2m:cb has no rn")?;
        CseId::new(csi.clone()).map_err(|e| e.to_string())?;
        Ok(RemoteCse {
            cb: Some(format!("{csi}/{rn}")),
            cst: cb.get("cst").and_then(Value::as_u64).map(|c| c as u8),
            csi: Some(csi),
            poa: list("poa"),
            csz: list("csz"),
            srv: list("srv"),
            lbl: list("lbl"),
            nl: s("nl"),
            rr: Some(true),
            ..RemoteCse::default()
        })
    }
}
