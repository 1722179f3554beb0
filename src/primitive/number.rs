//! The one tolerant reader for integer-valued parameters and attributes.
//!
//! TS-0004 §8.4.2 only says that integers are serialized as JSON numbers, and
//! JSON has a single number type: `4004.0` is the number 4004. tinyIoT prints
//! every integer that way (`"rsc":4004.0`, `"cst":1.0`, `"srt":[1.0,2.0]`, see
//! `proto/fixtures/tinyiot-registration.txt` and docs/tinyiot.md), and CBOR
//! peers may send a float where an integer is meant just as well. Some peers
//! send a numeric string instead (docs/protocol.md §8.6), which was already accepted.
//!
//! So every integer field accepts an integer, a whole-valued float or a
//! numeric string. A value with a fraction (`4004.5`), a negative or too large
//! one, or any other type is an error that names the field. The node itself
//! always writes integers: these functions only read.

use serde::de::{self, DeserializeSeed, Deserializer, SeqAccess, Visitor};
use std::fmt;
use std::marker::PhantomData;

/// Reads the integer field `field` into `T` (u8, u16, u32, u64).
pub fn integer<'de, D, T>(d: D, field: &'static str) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64>,
{
    Whole::<T>::new(field).deserialize(d)
}

/// Reads an optional integer field: an absent field (serde `default`) and
/// `null` are `None`.
pub fn optional<'de, D, T>(d: D, field: &'static str) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64>,
{
    d.deserialize_option(Optional(Whole::<T>::new(field)))
}

/// Reads a list of integers such as `srt`; an element that is not a whole
/// number in range fails the whole list, naming the field.
pub fn list<'de, D, T>(d: D, field: &'static str) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64>,
{
    d.deserialize_seq(List(Whole::<T>::new(field)))
}

/// Reads a parameter that the spec defines as a string but that holds a
/// number, such as `rvi` ("3"): a string is kept, a whole number (integer,
/// whole float) becomes its decimal string.
pub fn numeric_string<'de, D>(d: D, field: &'static str) -> Result<String, D::Error>
where
    D: Deserializer<'de>,
{
    struct V(&'static str);
    impl Visitor<'_> for V {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "a string or a whole number for `{}`", self.0)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
            Ok(v)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
            whole_from_i64(self.0, v).map(|n| n.to_string())
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
            whole_from_f64(self.0, v).map(|n| n.to_string())
        }
    }
    d.deserialize_any(V(field))
}

/// Like [`numeric_string`], for an optional parameter.
pub fn optional_numeric_string<'de, D>(
    d: D,
    field: &'static str,
) -> Result<Option<String>, D::Error>
where
    D: Deserializer<'de>,
{
    struct V(&'static str);
    impl<'de> Visitor<'de> for V {
        type Value = Option<String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "a string or a whole number for `{}`", self.0)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            numeric_string(d, self.0).map(Some)
        }
    }
    d.deserialize_option(V(field))
}

fn whole_from_i64<E: de::Error>(field: &str, v: i64) -> Result<u64, E> {
    u64::try_from(v).map_err(|_| E::custom(format!("`{field}` {v} is out of range")))
}

/// The heart of the tolerance: a float is accepted only if it is finite,
/// has no fraction and fits in a u64. Every u64 below 2^53 is exact in an f64,
/// so no integer a peer means is changed by the round trip through a float.
fn whole_from_f64<E: de::Error>(field: &str, v: f64) -> Result<u64, E> {
    if !v.is_finite() || v.fract() != 0.0 {
        return Err(E::custom(format!("`{field}` {v} is not a whole number")));
    }
    // 2^64 as f64; `as` saturates, so compare before converting.
    if !(0.0..18_446_744_073_709_551_616.0).contains(&v) {
        return Err(E::custom(format!("`{field}` {v} is out of range")));
    }
    Ok(v as u64)
}

/// A DeserializeSeed for one integer of type `T`, carrying the field name
/// for the error text.
struct Whole<T> {
    field: &'static str,
    ty: PhantomData<fn() -> T>,
}

impl<T> Whole<T> {
    fn new(field: &'static str) -> Self {
        Whole {
            field,
            ty: PhantomData,
        }
    }
}

impl<T> Clone for Whole<T> {
    fn clone(&self) -> Self {
        Whole::new(self.field)
    }
}

impl<T: TryFrom<u64>> Whole<T> {
    fn narrow<E: de::Error>(&self, n: u64) -> Result<T, E> {
        T::try_from(n).map_err(|_| E::custom(format!("`{}` {n} is out of range", self.field)))
    }
}

impl<'de, T: TryFrom<u64>> DeserializeSeed<'de> for Whole<T> {
    type Value = T;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        d.deserialize_any(self)
    }
}

impl<T: TryFrom<u64>> Visitor<'_> for Whole<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a whole number for `{}`", self.field)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        self.narrow(v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        self.narrow(whole_from_i64(self.field, v)?)
    }
    // CBOR half and single floats arrive here too (serde's default visit_f32
    // forwards to visit_f64).
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        self.narrow(whole_from_f64(self.field, v)?)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        let t = v.trim();
        let n = match t.parse::<u64>() {
            Ok(n) => n,
            // "4004.0" as a string: the same number, printed as a float.
            Err(_) => match t.parse::<f64>() {
                Ok(f) => whole_from_f64(self.field, f)?,
                Err(_) => return Err(E::custom(format!("`{}` {v:?} is not a number", self.field))),
            },
        };
        self.narrow(n)
    }
}

struct Optional<T>(Whole<T>);

impl<'de, T: TryFrom<u64>> Visitor<'de> for Optional<T> {
    type Value = Option<T>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.0.expecting(f)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.0.deserialize(d).map(Some)
    }
}

struct List<T>(Whole<T>);

impl<'de, T: TryFrom<u64>> Visitor<'de> for List<T> {
    type Value = Vec<T>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a list of whole numbers for `{}`", self.0.field)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(n) = seq.next_element_seed(self.0.clone())? {
            out.push(n);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::Format;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Deserialize, PartialEq)]
    struct T {
        #[serde(deserialize_with = "n")]
        n: u16,
        #[serde(default, deserialize_with = "o")]
        o: Option<u8>,
        #[serde(default, deserialize_with = "l")]
        l: Vec<u32>,
    }
    fn n<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
        super::integer(d, "n")
    }
    fn o<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u8>, D::Error> {
        super::optional(d, "o")
    }
    fn l<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u32>, D::Error> {
        super::list(d, "l")
    }

    fn both(v: serde_json::Value) -> [Result<T, String>; 2] {
        let json = Format::Json.encode(&v).expect("json");
        let cbor = Format::Cbor.encode(&v).expect("cbor");
        [
            serde_json::from_slice(&json).map_err(|e| e.to_string()),
            // Through the codec's value model, as pc is decoded from CBOR.
            Format::Cbor
                .decode_value(&cbor)
                .map_err(|e| e.to_string())
                .and_then(|v| T::deserialize(v).map_err(|e| e.to_string())),
        ]
    }

    #[test]
    fn whole_floats_integers_and_numeric_strings_are_read() {
        let want = T {
            n: 4004,
            o: Some(1),
            l: vec![1, 2, 10001],
        };
        for v in [
            json!({"n": 4004, "o": 1, "l": [1, 2, 10001]}),
            json!({"n": 4004.0, "o": 1.0, "l": [1.0, 2.0, 10001.0]}),
            json!({"n": "4004", "o": " 1 ", "l": ["1", 2.0, 10001]}),
            json!({"n": "4004.0", "o": 1, "l": [1, 2, 10001]}),
        ] {
            for got in both(v.clone()) {
                assert_eq!(got.as_ref(), Ok(&want), "{v}");
            }
        }
        for got in both(json!({"n": 1, "o": null})) {
            assert_eq!(got.map(|t| t.o), Ok(None));
        }
    }

    #[test]
    fn fractions_negatives_and_out_of_range_values_name_the_field() {
        for (v, field, why) in [
            (json!({"n": 4004.5}), "`n`", "not a whole number"),
            (json!({"n": -1}), "`n`", "out of range"),
            (json!({"n": -1.0}), "`n`", "out of range"),
            (json!({"n": 70000}), "`n`", "out of range"),
            (json!({"n": 70000.0}), "`n`", "out of range"),
            (json!({"n": 1e300}), "`n`", "out of range"),
            (json!({"n": "four"}), "`n`", "not a number"),
            (json!({"n": true}), "`n`", "whole number"),
            (json!({"n": 1, "o": 256.0}), "`o`", "out of range"),
            (json!({"n": 1, "o": 0.5}), "`o`", "not a whole number"),
            (
                json!({"n": 1, "l": [1.0, 2.5]}),
                "`l`",
                "not a whole number",
            ),
            (json!({"n": 1, "l": 3}), "`l`", "list of whole numbers"),
        ] {
            for got in both(v.clone()) {
                let e = got.expect_err(&v.to_string());
                assert!(e.contains(field) && e.contains(why), "{v}: {e}");
            }
        }
    }
}
