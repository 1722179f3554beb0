//! The resources this node hosts: its `<CSEBase>` and the `<remoteCSE>`s of
//! its registrar and registrees (docs/protocol.md §3).

use crate::id::CseId;
use crate::primitive::{number, Content, ResourceType};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// cseType (docs/protocol.md §2.3).
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
    #[serde(deserialize_with = "cst")]
    pub cst: u8,
    pub srv: Vec<String>,
    pub poa: Vec<String>,
    pub csz: Vec<String>,
    #[serde(deserialize_with = "srt")]
    pub srt: Vec<u32>,
    pub ct: String,
    pub lt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spi: Option<String>,
    /// The CSE-ID of the IN-CSE at the root of the tree, when known
    /// (learned from the registrar, docs/protocol.md §13.4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ici: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lbl: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nl: Option<String>,
}

// Integer attributes go through the one tolerant reader (primitive::number):
// tinyIoT sends `"cst":1.0` and `"srt":[1.0,...]` (docs/tinyiot.md).
fn cst<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    number::integer(d, "cst")
}

fn srt<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u32>, D::Error> {
    number::list(d, "srt")
}

/// The serializations this node reads and writes, most preferred first, as
/// MIME strings: ACME reads those, and docs/protocol.md §8.4 asks to accept both.
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
///
/// Read through `RemoteCse::from_attributes`: a typed attribute that does
/// not fit its type makes the whole representation an error naming it, so no
/// attribute is ever lost without a trace (whichever format it came in).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Map<String, Value>")]
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

/// Every attribute a `<remoteCSE>` may carry (docs/protocol.md §3.1, with ACME's R4+
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

    /// The typed attributes taken out of `m`, the rest kept verbatim in
    /// `other`. `null` counts as absent, as it did with serde's `Option`.
    fn from_attributes(mut m: Map<String, Value>) -> Result<RemoteCse, String> {
        Ok(RemoteCse {
            rn: take(&mut m, "rn")?,
            ri: take(&mut m, "ri")?,
            pi: take(&mut m, "pi")?,
            ty: take(&mut m, "ty")?,
            ct: take(&mut m, "ct")?,
            lt: take(&mut m, "lt")?,
            et: take(&mut m, "et")?,
            lbl: take(&mut m, "lbl")?,
            cst: take_cst(&mut m)?,
            csi: take(&mut m, "csi")?,
            cb: take(&mut m, "cb")?,
            poa: take(&mut m, "poa")?,
            nl: take(&mut m, "nl")?,
            rr: take(&mut m, "rr")?,
            csz: take(&mut m, "csz")?,
            srv: take(&mut m, "srv")?,
            dcse: take(&mut m, "dcse")?,
            // What is left is usually nothing; the emptied map would keep the
            // capacity of every attribute (728 bytes per stored CSR).
            other: if m.is_empty() {
                Map::new()
            } else {
                m.into_iter().collect()
            },
        })
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
    ///
    /// Every attribute copied is read typed: one that does not fit (a `poa`
    /// entry that is not a string, `cst` 1.5) makes the whole `m2m:cb` an
    /// error naming it instead of being left out. `cst` may be a whole float
    /// (tinyIoT, docs/tinyiot.md). Attributes not copied are not read.
    pub fn from_cse_base(cb: &Value) -> Result<RemoteCse, String> {
        let mut m = match cb.get("m2m:cb") {
            Some(Value::Object(m)) => m.clone(),
            Some(_) => return Err("m2m:cb is not an object".into()),
            None => return Err("content is not an m2m:cb".into()),
        };
        let in_cb = |e: String| format!("invalid m2m:cb: {e}");
        let csi: String = take(&mut m, "csi")
            .map_err(in_cb)?
            .ok_or("m2m:cb has no csi")?;
        let rn: String = take(&mut m, "rn")
            .map_err(in_cb)?
            .ok_or("m2m:cb has no rn")?;
        CseId::new(csi.clone()).map_err(|e| e.to_string())?;
        Ok(RemoteCse {
            cb: Some(format!("{csi}/{rn}")),
            cst: take_cst(&mut m).map_err(in_cb)?,
            csi: Some(csi),
            poa: take(&mut m, "poa").map_err(in_cb)?,
            csz: take(&mut m, "csz").map_err(in_cb)?,
            srv: take(&mut m, "srv").map_err(in_cb)?,
            lbl: take(&mut m, "lbl").map_err(in_cb)?,
            nl: take(&mut m, "nl").map_err(in_cb)?,
            rr: Some(true),
            ..RemoteCse::default()
        })
    }
}

impl TryFrom<Map<String, Value>> for RemoteCse {
    type Error = String;
    fn try_from(m: Map<String, Value>) -> Result<RemoteCse, String> {
        RemoteCse::from_attributes(m)
    }
}

/// Takes attribute `k` out of a representation as a `T`; the error names it.
fn take<T: DeserializeOwned>(m: &mut Map<String, Value>, k: &str) -> Result<Option<T>, String> {
    match m.remove(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => T::deserialize(v)
            .map(Some)
            .map_err(|e| format!("attribute `{k}`: {e}")),
    }
}

/// `cst` through the tolerant integer reader (whole floats, numeric strings).
fn take_cst(m: &mut Map<String, Value>) -> Result<Option<u8>, String> {
    match m.remove("cst") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => cst(v)
            .map(Some)
            .map_err(|e| format!("attribute `cst`: {e}")),
    }
}
