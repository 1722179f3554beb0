//! oneM2M request and response primitives (TS-0004 7.2.1, 8.2.2; docs/protocol.md §2).
//!
//! Field names are the oneM2M short names, so the serde model *is* the wire
//! model for both JSON and CBOR (TS-0004 8.4/8.5). Parameters this node does not
//! interpret are kept in `other` and re-encoded unchanged: a transit CSE must
//! not mangle what it relays.

pub mod codec;
pub mod number;
mod rsc;

pub use codec::{DecodeError, Format};
pub use rsc::Rsc;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// The content of `pc` and of resource representations: the serde model both
/// formats share.
pub type Content = Value;

/// `op` (docs/protocol.md §2.3). There is no op 6 on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    Create,
    Retrieve,
    Update,
    Delete,
    Notify,
}

impl Operation {
    pub fn code(self) -> u8 {
        match self {
            Operation::Create => 1,
            Operation::Retrieve => 2,
            Operation::Update => 3,
            Operation::Delete => 4,
            Operation::Notify => 5,
        }
    }

    pub fn from_code(code: u64) -> Option<Operation> {
        Some(match code {
            1 => Operation::Create,
            2 => Operation::Retrieve,
            3 => Operation::Update,
            4 => Operation::Delete,
            5 => Operation::Notify,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Operation::Create => "create",
            Operation::Retrieve => "retrieve",
            Operation::Update => "update",
            Operation::Delete => "delete",
            Operation::Notify => "notify",
        }
    }
}

impl std::str::FromStr for Operation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "create" | "c" | "1" => Ok(Operation::Create),
            "retrieve" | "r" | "2" => Ok(Operation::Retrieve),
            "update" | "u" | "3" => Ok(Operation::Update),
            "delete" | "d" | "4" => Ok(Operation::Delete),
            "notify" | "n" | "5" => Ok(Operation::Notify),
            _ => Err(format!(
                "unknown operation {s:?} (expected create, retrieve, update, delete or notify)"
            )),
        }
    }
}

impl Serialize for Operation {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(self.code())
    }
}

impl<'de> Deserialize<'de> for Operation {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n: u64 = number::integer(d, "op")?;
        Operation::from_code(n).ok_or_else(|| de::Error::custom(format!("op {n} is not 1..5")))
    }
}

/// `ty`: a resource type number. Only a few are handled here; the rest pass through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct ResourceType(pub u32);

impl ResourceType {
    pub const ACP: ResourceType = ResourceType(1);
    pub const AE: ResourceType = ResourceType(2);
    pub const CSE_BASE: ResourceType = ResourceType(5);
    pub const POLLING_CHANNEL: ResourceType = ResourceType(15);
    pub const REMOTE_CSE: ResourceType = ResourceType(16);
}

impl<'de> Deserialize<'de> for ResourceType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        number::integer(d, "ty").map(ResourceType)
    }
}

// The integer parameters go through the one tolerant reader (`number`):
// integer, whole float or numeric string; a fraction is an error naming the
// parameter (TS-0004 §8.4.2, docs/tinyiot.md).

fn opt_rcn<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u8>, D::Error> {
    number::optional(d, "rcn")
}

fn opt_drt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u8>, D::Error> {
    number::optional(d, "drt")
}

/// `rvi` is a string ("3") in TS-0004 R3+; a peer that prints it as a number
/// is read as the same version, and the node writes it back as a string.
fn opt_rvi<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    number::optional_numeric_string(d, "rvi")
}

/// A request primitive. `op`, `to` and `rqi` are needed to even answer it;
/// everything else is checked by whoever handles the request, in the order
/// the spec gives (docs/protocol.md §5.2), so that each check yields its own code.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub op: Operation,
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fr: Option<String>,
    pub rqi: String,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "opt_rvi"
    )]
    pub rvi: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ty: Option<ResourceType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pc: Option<Content>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ot: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rqet: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rset: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oet: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "opt_rcn"
    )]
    pub rcn: Option<u8>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "opt_drt"
    )]
    pub drt: Option<u8>,
    /// All other parameters (rt, ec, fc, vsi, rids, ...), kept verbatim.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl Request {
    pub fn new(
        op: Operation,
        to: impl Into<String>,
        fr: impl Into<String>,
        rqi: impl Into<String>,
    ) -> Self {
        Request {
            op,
            to: to.into(),
            fr: Some(fr.into()),
            rqi: rqi.into(),
            rvi: None,
            ty: None,
            pc: None,
            ot: None,
            rqet: None,
            rset: None,
            oet: None,
            rcn: None,
            drt: None,
            other: Map::new(),
        }
    }
}

/// A response primitive.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub rsc: Rsc,
    pub rqi: String,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "opt_rvi"
    )]
    pub rvi: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pc: Option<Content>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ot: Option<String>,
    /// All other parameters (rset, ec, vsi, drt, cnst, ...), kept verbatim.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl Response {
    pub fn new(rsc: Rsc, rqi: impl Into<String>) -> Self {
        Response {
            rsc,
            rqi: rqi.into(),
            rvi: None,
            pc: None,
            to: None,
            fr: None,
            ot: None,
            other: Map::new(),
        }
    }

    /// An error answer with the `m2m:dbg` text peers expect (docs/protocol.md §3.1).
    pub fn error(rsc: Rsc, rqi: impl Into<String>, why: impl Into<String>) -> Self {
        let mut r = Response::new(rsc, rqi);
        r.pc = Some(debug_content(why));
        r
    }

    pub fn with_pc(mut self, pc: Content) -> Self {
        self.pc = Some(pc);
        self
    }

    /// The `m2m:dbg` text of an error answer, if any.
    pub fn debug_text(&self) -> Option<&str> {
        self.pc.as_ref()?.get("m2m:dbg")?.as_str()
    }
}

pub fn debug_content(why: impl Into<String>) -> Content {
    let mut m = Map::new();
    m.insert("m2m:dbg".into(), Value::String(why.into()));
    Value::Object(m)
}

/// Wraps a resource representation in its `m2m:<type>` member.
pub fn wrap(key: &str, body: Value) -> Content {
    let mut m = Map::new();
    m.insert(key.to_owned(), body);
    Value::Object(m)
}

/// Release versions this node speaks (docs/protocol.md §2.2: 2a, 3, 4, 5).
pub const SUPPORTED_RELEASES: &[&str] = &["2a", "3", "4", "5"];

/// The release version this node puts in the requests it originates.
pub const OWN_RVI: &str = "3";

pub fn release_supported(rvi: &str) -> bool {
    SUPPORTED_RELEASES.contains(&rvi)
}
