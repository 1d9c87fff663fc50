//! A serde format for argument tables ([`Table`]) that is lossless and
//! readable in JSON.
//!
//! In JSON a NaN or infinite float would become `null` and then fail to
//! load — one odd argument would make a whole definitions file unreadable.
//! This format is ours (written for amq-protocol's tables first, kept byte
//! for byte since), so a dependency upgrade cannot change what is on disk:
//!
//! ```json
//! {"x-match": {"longstr": "any"}, "n": {"long": 5}, "f": {"double": "NaN"},
//!  "d": {"decimal": {"scale": 2, "value": 1234}}, "v": "void",
//!  "l": {"array": [{"bool": true}]}, "t": {"table": {}}}
//! ```
//! Type names are RabbitMQ's. A long string that is not UTF-8 is written as
//! `{"longbytes": [..]}`. `float` values are widened to f64 on the way out
//! so they read back bit-exact; non-finite floats are written as the strings
//! `"NaN"`, `"Infinity"`, `"-Infinity"`.
//!
//! A table is written in key order, the first entry of a repeated key only
//! (a JSON object cannot repeat keys; RabbitMQ's tables are sorted), and
//! read back in key order. `{"shortstr": ..}` (which Ferry wrote for
//! amq-protocol short strings, never for tables read off the wire) reads
//! as a string. Keys longer than 255 bytes are refused, as before: AMQP
//! could not send them back.
//!
//! Use with `#[serde(with = "crate::table_serde")]`. Meant for
//! self-describing formats (JSON); floats need that.

use super::args;
use bytes::Bytes;
use ferry_model::{Table, Value};
use serde::de::Error as _;
use serde::ser::{SerializeMap, SerializeSeq, SerializeStructVariant};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;

/// Serializes a table (for `#[serde(with)]`).
pub fn serialize<S: Serializer>(table: &Table, s: S) -> Result<S::Ok, S::Error> {
    TableRef(table).serialize(s)
}

/// Deserializes a table (for `#[serde(with)]`).
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Table, D::Error> {
    let wire = BTreeMap::<String, Wire>::deserialize(d)?;
    wire_table(wire).map_err(D::Error::custom)
}

/// A borrowed table that serializes in this format.
pub(crate) struct TableRef<'a>(pub(crate) &'a Table);

impl Serialize for TableRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let entries = args::sorted(self.0);
        let mut map = s.serialize_map(Some(entries.len()))?;
        for (k, v) in entries {
            map.serialize_entry(&**k, &ValueRef(v))?;
        }
        map.end()
    }
}

struct ValueRef<'a>(&'a Value);

struct ArrayRef<'a>(&'a [Value]);

impl Serialize for ArrayRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for v in self.0 {
            seq.serialize_element(&ValueRef(v))?;
        }
        seq.end()
    }
}

/// A float, or its name when JSON has no number for it.
struct FloatOut(f64);

impl Serialize for FloatOut {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let x = self.0;
        if x.is_finite() {
            s.serialize_f64(x)
        } else if x.is_nan() {
            s.serialize_str("NaN")
        } else if x > 0.0 {
            s.serialize_str("Infinity")
        } else {
            s.serialize_str("-Infinity")
        }
    }
}

// The variant indexes must match the order of `Wire`'s variants.
const NAME: &str = "AMQPValue";

impl Serialize for ValueRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use Value as V;
        let name = args::type_name(self.0);
        match self.0 {
            V::Bool(x) => s.serialize_newtype_variant(NAME, 0, name, x),
            V::I8(x) => s.serialize_newtype_variant(NAME, 1, name, x),
            V::U8(x) => s.serialize_newtype_variant(NAME, 2, name, x),
            V::I16(x) => s.serialize_newtype_variant(NAME, 3, name, x),
            V::U16(x) => s.serialize_newtype_variant(NAME, 4, name, x),
            V::I32(x) => s.serialize_newtype_variant(NAME, 5, name, x),
            V::U32(x) => s.serialize_newtype_variant(NAME, 6, name, x),
            V::I64(x) => s.serialize_newtype_variant(NAME, 7, name, x),
            V::F32(x) => s.serialize_newtype_variant(NAME, 8, name, &FloatOut((*x).into())),
            V::F64(x) => s.serialize_newtype_variant(NAME, 9, name, &FloatOut(*x)),
            V::Decimal { scale, value } => {
                let mut sv = s.serialize_struct_variant(NAME, 10, name, 2)?;
                sv.serialize_field("scale", scale)?;
                sv.serialize_field("value", value)?;
                sv.end()
            }
            V::Str(x) => match std::str::from_utf8(x) {
                Ok(text) => s.serialize_newtype_variant(NAME, 12, name, text),
                Err(_) => s.serialize_newtype_variant(NAME, 13, "longbytes", x.as_ref()),
            },
            V::Array(a) => s.serialize_newtype_variant(NAME, 14, name, &ArrayRef(a)),
            V::Timestamp(x) => s.serialize_newtype_variant(NAME, 15, name, x),
            V::Table(t) => s.serialize_newtype_variant(NAME, 16, name, &TableRef(t)),
            V::Bytes(b) => s.serialize_newtype_variant(NAME, 17, name, b.as_ref()),
            V::Void => s.serialize_unit_variant(NAME, 18, name),
        }
    }
}

/// The owned mirror of a value, as read back.
#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum Wire {
    Bool(bool),
    Byte(i8),
    UnsignedByte(u8),
    Short(i16),
    UnsignedShort(u16),
    SignedInt(i32),
    UnsignedInt(u32),
    Long(i64),
    Float(WireFloat),
    Double(WireFloat),
    Decimal { scale: u8, value: u32 },
    ShortStr(String),
    LongStr(String),
    LongBytes(Vec<u8>),
    Array(Vec<Wire>),
    Timestamp(u64),
    Table(BTreeMap<String, Wire>),
    Binary(Vec<u8>),
    Void,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum WireFloat {
    Num(f64),
    Name(String),
}

impl WireFloat {
    fn value(self) -> Result<f64, String> {
        match self {
            WireFloat::Num(x) => Ok(x),
            WireFloat::Name(n) => match n.as_str() {
                "NaN" => Ok(f64::NAN),
                "Infinity" => Ok(f64::INFINITY),
                "-Infinity" => Ok(f64::NEG_INFINITY),
                _ => Err(format!("not a float: '{n}'")),
            },
        }
    }
}

/// AMQP's limit on a table key (Ferry's tables keep it: what cannot be
/// sent back to an AMQP client is not stored).
const MAX_KEY: usize = 255;

fn wire_table(wire: BTreeMap<String, Wire>) -> Result<Table, String> {
    let mut t = Table::new();
    for (k, v) in wire {
        if k.len() > MAX_KEY {
            return Err(format!(
                "table key of {} bytes (at most {MAX_KEY})",
                k.len()
            ));
        }
        t.push(k, wire_value(v)?);
    }
    Ok(t)
}

fn wire_value(w: Wire) -> Result<Value, String> {
    use Value as V;
    Ok(match w {
        Wire::Bool(x) => V::Bool(x),
        Wire::Byte(x) => V::I8(x),
        Wire::UnsignedByte(x) => V::U8(x),
        Wire::Short(x) => V::I16(x),
        Wire::UnsignedShort(x) => V::U16(x),
        Wire::SignedInt(x) => V::I32(x),
        Wire::UnsignedInt(x) => V::U32(x),
        Wire::Long(x) => V::I64(x),
        // Written widened from an f32, so narrowing is exact.
        Wire::Float(x) => V::F32(x.value()? as f32),
        Wire::Double(x) => V::F64(x.value()?),
        Wire::Decimal { scale, value } => V::Decimal { scale, value },
        Wire::ShortStr(x) => {
            if x.len() > MAX_KEY {
                return Err(format!("short string of {} bytes", x.len()));
            }
            V::Str(Bytes::from(x))
        }
        Wire::LongStr(x) => V::Str(Bytes::from(x)),
        Wire::LongBytes(x) => V::Str(Bytes::from(x)),
        Wire::Array(xs) => V::Array(
            xs.into_iter()
                .map(wire_value)
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Wire::Timestamp(x) => V::Timestamp(x),
        Wire::Table(t) => V::Table(wire_table(t)?),
        Wire::Binary(x) => V::Bytes(Bytes::from(x)),
        Wire::Void => V::Void,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, Debug)]
    struct Holder {
        #[serde(with = "super")]
        t: Table,
    }

    fn every_type() -> Table {
        use Value as V;
        let inner: Table = [("deep", V::str("x"))].into_iter().collect();
        [
            ("bool", V::Bool(true)),
            ("i8", V::I8(-8)),
            ("u8", V::U8(8)),
            ("i16", V::I16(-16)),
            ("u16", V::U16(16)),
            ("i32", V::I32(-32)),
            ("u32", V::U32(u32::MAX)),
            ("i64", V::I64(i64::MIN)),
            ("f32", V::F32(0.1)),
            ("f32max", V::F32(f32::MAX)),
            ("f64", V::F64(-2.5e300)),
            (
                "dec",
                V::Decimal {
                    scale: 2,
                    value: 1234,
                },
            ),
            ("lstr", V::str("long ✓")),
            ("lbytes", V::Str(Bytes::from_static(&[0xff, 0x00, 0xfe]))),
            ("arr", V::Array(vec![V::Void, V::I64(1)])),
            ("ts", V::Timestamp(u64::MAX)),
            ("tbl", V::Table(inner)),
            ("bin", V::Bytes(Bytes::from_static(&[1, 2, 3]))),
            ("void", V::Void),
        ]
        .into_iter()
        .collect()
    }

    fn round_trip(t: &Table) -> Table {
        let json = serde_json::to_string(&Holder { t: t.clone() }).unwrap();
        serde_json::from_str::<Holder>(&json).unwrap().t
    }

    #[test]
    fn every_type_round_trips_exactly() {
        let t = every_type();
        let back = round_trip(&t);
        assert_eq!(args::cmp_table(&back, &t), std::cmp::Ordering::Equal);
        // Read back in key order.
        let keys: Vec<&str> = back.iter().map(|(k, _)| &**k).collect();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        assert_eq!(keys, sorted);
    }

    #[test]
    fn non_finite_floats_survive() {
        let t: Table = [
            ("nan", Value::F64(f64::NAN)),
            ("inf", Value::F32(f32::INFINITY)),
            ("ninf", Value::F64(f64::NEG_INFINITY)),
        ]
        .into_iter()
        .collect();
        let back = round_trip(&t);
        let get = |k: &str| back.get(k).cloned();
        assert!(matches!(get("nan"), Some(Value::F64(x)) if x.is_nan()));
        assert_eq!(get("inf"), Some(Value::F32(f32::INFINITY)));
        assert_eq!(get("ninf"), Some(Value::F64(f64::NEG_INFINITY)));
    }

    #[test]
    fn format_is_readable_sorted_and_first_entry_wins() {
        // Given out of order, with a repeated key: written in key order,
        // the first entry of "n" only (as the table would read).
        let t: Table = [
            ("x-match", Value::str("any")),
            ("n", Value::I64(5)),
            ("v", Value::Void),
            ("n", Value::I64(6)),
        ]
        .into_iter()
        .collect();
        let json = serde_json::to_string(&Holder { t }).unwrap();
        assert_eq!(
            json,
            r#"{"t":{"n":{"long":5},"v":"void","x-match":{"longstr":"any"}}}"#
        );
    }

    #[test]
    fn short_strings_written_before_read_as_strings() {
        let back: Holder =
            serde_json::from_str(r#"{"t":{"a":{"shortstr":"ae"},"b":{"longstr":"x"}}}"#).unwrap();
        assert_eq!(back.t.get("a"), Some(&Value::str("ae")));
        let json = serde_json::to_string(&back).unwrap();
        assert_eq!(json, r#"{"t":{"a":{"longstr":"ae"},"b":{"longstr":"x"}}}"#);
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let long_key = format!(r#"{{"t":{{"{}":"void"}}}}"#, "k".repeat(300));
        assert!(serde_json::from_str::<Holder>(&long_key).is_err());
        assert!(serde_json::from_str::<Holder>(r#"{"t":{"f":{"double":"huge"}}}"#).is_err());
        assert!(serde_json::from_str::<Holder>(r#"{"t":{"f":{"nosuch":1}}}"#).is_err());
        assert!(serde_json::from_str::<Holder>(r#"{"t":{"b":{"byte":300}}}"#).is_err());
    }
}
