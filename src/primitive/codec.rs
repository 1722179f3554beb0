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
    /// A payload that is not even well-formed (truncated, a trailing
    /// comma) is scanned up to where it breaks: an rqi before that point
    /// still gets its 4000 (docs/protocol.md §2.2).
    fn loose_field(self, bytes: &[u8], key: &str) -> Option<String> {
        match self {
            Format::Json => match serde_json::from_slice::<Value>(bytes) {
                Ok(v) => v.get(key)?.as_str().map(str::to_owned),
                Err(_) => json_scan_field(bytes, key),
            },
            Format::Cbor => match serde_cbor::from_slice(bytes) {
                Ok(serde_cbor::Value::Map(m)) => {
                    match m.get(&serde_cbor::Value::Text(key.to_owned()))? {
                        serde_cbor::Value::Text(t) => Some(t.clone()),
                        _ => None,
                    }
                }
                Ok(_) => None,
                Err(_) => cbor_scan_field(bytes, key),
            },
        }
    }
}

/// A top-level text member `key` of a JSON object that may be broken
/// further on: the bytes are scanned (strings, nesting) up to the member,
/// never parsed whole.
fn json_scan_field(bytes: &[u8], key: &str) -> Option<String> {
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace())?;
    if bytes[start] != b'{' {
        return None;
    }
    let mut depth = 0usize;
    // At depth 1: the last string seen (a key, once ':' follows) and the
    // key whose value comes next.
    let mut last: Option<&[u8]> = None;
    let mut member: Option<String> = None;
    let mut i = start;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                let open = i;
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                let token = bytes.get(open..=i)?;
                if depth == 1 {
                    match member.take() {
                        Some(k) if k == key => return serde_json::from_slice(token).ok(),
                        Some(_) => {}
                        None => last = Some(token),
                    }
                }
            }
            b':' if depth == 1 => {
                member = last.take().and_then(|t| serde_json::from_slice(t).ok());
            }
            b',' if depth == 1 => {
                last = None;
                member = None;
            }
            b'{' | b'[' => {
                depth += 1;
                if depth > 1 {
                    member = None;
                }
            }
            b'}' | b']' => depth = depth.checked_sub(1)?,
            _ => {}
        }
        i += 1;
    }
    None
}

/// Nesting a broken CBOR payload is followed into, at most.
const CBOR_DEPTH: usize = 32;

/// A top-level text member `key` of a CBOR map that may be broken (e.g.
/// truncated) after it: the items before it are skipped one by one.
fn cbor_scan_field(bytes: &[u8], key: &str) -> Option<String> {
    let mut r = CborReader { bytes, at: 0 };
    let (major, arg) = r.head()?;
    if major != 5 {
        return None;
    }
    let count = arg.unwrap_or(u64::MAX);
    for _ in 0..count {
        if arg.is_none() && r.peek()? == 0xff {
            return None;
        }
        let k = r.text()?;
        if k.as_deref() == Some(key) {
            return r.text()?;
        }
        r.skip(0)?;
    }
    None
}

/// Just enough of RFC 8949 to walk items of a payload that may end early.
struct CborReader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl CborReader<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn take(&mut self, n: u64) -> Option<&[u8]> {
        let n = usize::try_from(n).ok()?;
        let end = self.at.checked_add(n)?;
        let s = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(s)
    }

    /// An item's major type and argument (`None`: indefinite length).
    fn head(&mut self) -> Option<(u8, Option<u64>)> {
        let b = *self.take(1)?.first()?;
        let (major, info) = (b >> 5, b & 0x1f);
        let arg = match info {
            0..=23 => Some(u64::from(info)),
            24..=27 => {
                let n = 1u64 << (info - 24);
                Some(
                    self.take(n)?
                        .iter()
                        .fold(0u64, |a, &x| (a << 8) | u64::from(x)),
                )
            }
            31 if matches!(major, 2..=5 | 7) => None,
            _ => return None,
        };
        Some((major, arg))
    }

    /// A definite text string (`Some(None)`: another item, skipped).
    fn text(&mut self) -> Option<Option<String>> {
        let at = self.at;
        let (major, arg) = self.head()?;
        if let (3, Some(n)) = (major, arg) {
            return Some(String::from_utf8(self.take(n)?.to_vec()).ok());
        }
        self.at = at;
        self.skip(0)?;
        Some(None)
    }

    fn skip(&mut self, depth: usize) -> Option<()> {
        if depth > CBOR_DEPTH {
            return None;
        }
        let (major, arg) = self.head()?;
        match (major, arg) {
            (0 | 1 | 7, _) => {}
            (2 | 3, Some(n)) => {
                self.take(n)?;
            }
            (6, _) => self.skip(depth + 1)?,
            (4 | 5, Some(n)) => {
                let items = if major == 5 { n.checked_mul(2)? } else { n };
                for _ in 0..items {
                    self.skip(depth + 1)?;
                }
            }
            (_, None) => {
                while self.peek()? != 0xff {
                    self.skip(depth + 1)?;
                }
                self.at += 1;
            }
            _ => return None,
        }
        Some(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn salvaged(format: Format, bytes: &[u8]) -> (Option<String>, Option<String>) {
        let e = format.decode_request(bytes).expect_err("broken");
        (e.rqi, e.fr)
    }

    #[test]
    fn the_rqi_of_broken_json_is_read_up_to_the_break() {
        let cases: &[&[u8]] = &[
            br#"{"op":2,"to":"/id-in/cse-in","fr":"/id-a","rqi":"r1","pc":{"m2m:csr":{"lbl":["a","#,
            br#"{"op":2,"fr":"/id-a","rqi":"r1","to":"/id-in",}"#,
            br#" {"pc":{"rqi":"inner","x":[1,{"fr":"no"}]},"fr":"/id-a","rqi":"r1"#,
        ];
        for c in &cases[..2] {
            assert_eq!(
                salvaged(Format::Json, c),
                (Some("r1".into()), Some("/id-a".into())),
                "{}",
                String::from_utf8_lossy(c)
            );
        }
        // A nested rqi is not the request's; a truncated one is not read.
        assert_eq!(
            salvaged(Format::Json, cases[2]),
            (None, Some("/id-a".into()))
        );
        assert_eq!(
            salvaged(Format::Json, br#"{"rqi":"a\"b","op":"#)
                .0
                .as_deref(),
            Some("a\"b")
        );
        assert_eq!(salvaged(Format::Json, br#"["rqi","x"]"#).0, None);
    }

    #[test]
    fn the_rqi_of_truncated_cbor_is_read_up_to_the_break() {
        let mut req = Request::new(
            super::super::Operation::Retrieve,
            "/id-in/cse-in",
            "/id-a",
            "r1",
        );
        req.pc = Some(serde_json::json!({"m2m:csr": {"lbl": vec!["a"; 40]}}));
        let full = Format::Cbor.encode(&req).expect("cbor");
        for cut in [full.len() - 1, full.len() - 30, full.len() / 2 + 10] {
            let (rqi, fr) = salvaged(Format::Cbor, &full[..cut]);
            assert_eq!(rqi.as_deref(), Some("r1"), "cut at {cut}");
            assert_eq!(fr.as_deref(), Some("/id-a"), "cut at {cut}");
        }
        assert_eq!(salvaged(Format::Cbor, &[0xa2, 0x63, b'r', b'q']).0, None);
        assert_eq!(salvaged(Format::Cbor, &[0xbf, 0xff]).0, None);
    }
}
