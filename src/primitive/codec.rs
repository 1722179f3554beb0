//! The one codec: primitives to and from JSON (serde_json) and CBOR
//! (serde_cbor). serde_cbor is unmaintained; it is named only in this file so
//! that moving to ciborium stays a one-file change.

use super::{Request, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::fmt;

/// The serialization named by the topic's last level (TS-0010 6.5.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    Json,
    Cbor,
}

impl Format {
    /// The topic suffix.
    pub fn suffix(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Cbor => "cbor",
        }
    }

    pub fn from_suffix(s: &str) -> Option<Format> {
        match s {
            "json" => Some(Format::Json),
            "cbor" => Some(Format::Cbor),
            _ => None,
        }
    }

    /// Reads a `csz` entry: spec tokens ("json") or MIME strings as ACME sends
    /// them ("application/json", "application/vnd.onem2m-res+cbor").
    pub fn from_csz(s: &str) -> Option<Format> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "json" | "application/json" | "application/vnd.onem2m-res+json" => Some(Format::Json),
            "cbor" | "application/cbor" | "application/vnd.onem2m-res+cbor" => Some(Format::Cbor),
            _ => None,
        }
    }

    /// Encodes any serde value (a primitive, a resource) in this format.
    pub fn encode<T: Serialize>(self, v: &T) -> Result<Vec<u8>, EncodeError> {
        match self {
            Format::Json => serde_json::to_vec(v).map_err(|e| EncodeError(e.to_string())),
            Format::Cbor => serde_cbor::to_vec(v).map_err(|e| EncodeError(e.to_string())),
        }
    }

    fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, String> {
        match self {
            Format::Json => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
            Format::Cbor => serde_cbor::from_slice(bytes).map_err(|e| e.to_string()),
        }
    }

    pub fn decode_request(self, bytes: &[u8]) -> Result<Request, DecodeError> {
        self.decode_primitive(bytes)
    }

    pub fn decode_response(self, bytes: &[u8]) -> Result<Response, DecodeError> {
        self.decode_primitive(bytes)
    }

    /// Decodes any payload into the shared value model, e.g. for printing.
    pub fn decode_value(self, bytes: &[u8]) -> Result<Value, DecodeError> {
        self.decode(bytes).map_err(|reason| DecodeError {
            reason,
            rqi: None,
            fr: None,
            rvi: None,
        })
    }

    /// Decodes strictly; when that fails, still tries to recover `rqi`, `fr`
    /// and `rvi` so that the sender can be told what was wrong (docs/protocol.md §2.2:
    /// "an unparsable payload gets a 4000 response when its rqi and
    /// originator can be recovered").
    fn decode_primitive<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, DecodeError> {
        self.decode(bytes).map_err(|reason| {
            let field = |k: &str| self.loose_field(bytes, k);
            DecodeError {
                reason,
                rqi: field("rqi"),
                fr: field("fr"),
                rvi: field("rvi"),
            }
        })
    }

    /// A top-level text field of a map, read as loosely as the format
    /// allows: a CBOR map may hold byte strings or integer keys elsewhere,
    /// which the JSON value model cannot, and the rqi is still readable.
    fn loose_field(self, bytes: &[u8], key: &str) -> Option<String> {
        match self {
            Format::Json => serde_json::from_slice::<Value>(bytes)
                .ok()?
                .get(key)?
                .as_str()
                .map(str::to_owned),
            Format::Cbor => {
                let serde_cbor::Value::Map(m) = serde_cbor::from_slice(bytes).ok()? else {
                    return None;
                };
                match m.get(&serde_cbor::Value::Text(key.to_owned()))? {
                    serde_cbor::Value::Text(t) => Some(t.clone()),
                    _ => None,
                }
            }
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.suffix())
    }
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Format::from_suffix(&s.to_ascii_lowercase())
            .ok_or_else(|| format!("unknown format {s:?} (expected json or cbor)"))
    }
}

/// A payload that is not a valid primitive, with what could be salvaged.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("malformed primitive: {reason}")]
pub struct DecodeError {
    pub reason: String,
    pub rqi: Option<String>,
    pub fr: Option<String>,
    pub rvi: Option<String>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("cannot encode primitive: {0}")]
pub struct EncodeError(pub String);
