//! A serde format for [`FieldTable`] that is lossless and readable in JSON.
//!
//! amq-protocol-types derives serde for its types, but that format is the
//! crate's internal layout (strings become arrays of byte numbers) and, in
//! JSON, a NaN or infinite float becomes `null` and then fails to load — one
//! odd header would make a whole definitions file unreadable. This format
//! is ours, so a dependency upgrade cannot change what is on disk:
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
//! Use with `#[serde(with = "crate::exchange::table_serde")]`. Meant for
//! self-describing formats (JSON); floats need that.

use super::args;
use amq_protocol_types::{
    AMQPValue, DecimalValue, FieldArray, FieldTable, LongString, ShortString,
};
use serde::de::Error as _;
use serde::ser::{SerializeMap, SerializeSeq, SerializeStructVariant};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;

/// Serializes a table (for `#[serde(with)]`).
pub fn serialize<S: Serializer>(table: &FieldTable, s: S) -> Result<S::Ok, S::Error> {
    TableRef(table).serialize(s)
}

/// Deserializes a table (for `#[serde(with)]`).
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<FieldTable, D::Error> {
    let wire = BTreeMap::<String, Wire>::deserialize(d)?;
    wire_table(wire).map_err(D::Error::custom)
}

/// A borrowed table that serializes in this format.
pub(crate) struct TableRef<'a>(pub(crate) &'a FieldTable);

impl Serialize for TableRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.inner().len()))?;
        for (k, v) in self.0 {
            map.serialize_entry(k.as_str(), &ValueRef(v))?;
        }
        map.end()
    }
}

struct ValueRef<'a>(&'a AMQPValue);

struct ArrayRef<'a>(&'a [AMQPValue]);

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
        use AMQPValue as V;
        let name = args::type_name(self.0);
        match self.0 {
            V::Boolean(x) => s.serialize_newtype_variant(NAME, 0, name, x),
            V::ShortShortInt(x) => s.serialize_newtype_variant(NAME, 1, name, x),
            V::ShortShortUInt(x) => s.serialize_newtype_variant(NAME, 2, name, x),
            V::ShortInt(x) => s.serialize_newtype_variant(NAME, 3, name, x),
            V::ShortUInt(x) => s.serialize_newtype_variant(NAME, 4, name, x),
            V::LongInt(x) => s.serialize_newtype_variant(NAME, 5, name, x),
            V::LongUInt(x) => s.serialize_newtype_variant(NAME, 6, name, x),
            V::LongLongInt(x) => s.serialize_newtype_variant(NAME, 7, name, x),
            V::Float(x) => s.serialize_newtype_variant(NAME, 8, name, &FloatOut((*x).into())),
            V::Double(x) => s.serialize_newtype_variant(NAME, 9, name, &FloatOut(*x)),
            V::DecimalValue(d) => {
                let mut sv = s.serialize_struct_variant(NAME, 10, name, 2)?;
                sv.serialize_field("scale", &d.scale)?;
                sv.serialize_field("value", &d.value)?;
                sv.end()
            }
            V::ShortString(x) => s.serialize_newtype_variant(NAME, 11, name, x.as_str()),
            V::LongString(x) => match std::str::from_utf8(x.as_bytes()) {
                Ok(text) => s.serialize_newtype_variant(NAME, 12, name, text),
                Err(_) => s.serialize_newtype_variant(NAME, 13, "longbytes", x.as_bytes()),
            },
            V::FieldArray(a) => {
                s.serialize_newtype_variant(NAME, 14, name, &ArrayRef(a.as_slice()))
            }
            V::Timestamp(x) => s.serialize_newtype_variant(NAME, 15, name, x),
            V::FieldTable(t) => s.serialize_newtype_variant(NAME, 16, name, &TableRef(t)),
            V::ByteArray(b) => s.serialize_newtype_variant(NAME, 17, name, b.as_slice()),
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

fn short(s: String) -> Result<ShortString, String> {
    ShortString::try_new(s).map_err(|e| e.to_string())
}

fn wire_table(wire: BTreeMap<String, Wire>) -> Result<FieldTable, String> {
    let mut t = FieldTable::default();
    for (k, v) in wire {
        t.insert(short(k)?, wire_value(v)?);
    }
    Ok(t)
}

fn wire_value(w: Wire) -> Result<AMQPValue, String> {
    use AMQPValue as V;
    Ok(match w {
        Wire::Bool(x) => V::Boolean(x),
        Wire::Byte(x) => V::ShortShortInt(x),
        Wire::UnsignedByte(x) => V::ShortShortUInt(x),
        Wire::Short(x) => V::ShortInt(x),
        Wire::UnsignedShort(x) => V::ShortUInt(x),
        Wire::SignedInt(x) => V::LongInt(x),
        Wire::UnsignedInt(x) => V::LongUInt(x),
        Wire::Long(x) => V::LongLongInt(x),
        // Written widened from an f32, so narrowing is exact.
        Wire::Float(x) => V::Float(x.value()? as f32),
        Wire::Double(x) => V::Double(x.value()?),
        Wire::Decimal { scale, value } => V::DecimalValue(DecimalValue { scale, value }),
        Wire::ShortStr(x) => V::ShortString(short(x)?),
        Wire::LongStr(x) => V::LongString(LongString::from(x)),
        Wire::LongBytes(x) => V::LongString(LongString::from(x)),
        Wire::Array(xs) => V::FieldArray(FieldArray::from(
            xs.into_iter()
                .map(wire_value)
                .collect::<Result<Vec<_>, _>>()?,
        )),
        Wire::Timestamp(x) => V::Timestamp(x),
        Wire::Table(t) => V::FieldTable(wire_table(t)?),
        Wire::Binary(x) => V::ByteArray(x.into()),
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
        t: FieldTable,
    }

    fn every_type() -> FieldTable {
        use AMQPValue as V;
        let mut inner = FieldTable::default();
        inner.insert("deep".into(), V::LongString("x".into()));
        let mut t = FieldTable::default();
        for (k, v) in [
            ("bool", V::Boolean(true)),
            ("i8", V::ShortShortInt(-8)),
            ("u8", V::ShortShortUInt(8)),
            ("i16", V::ShortInt(-16)),
            ("u16", V::ShortUInt(16)),
            ("i32", V::LongInt(-32)),
            ("u32", V::LongUInt(u32::MAX)),
            ("i64", V::LongLongInt(i64::MIN)),
            ("f32", V::Float(0.1)),
            ("f32max", V::Float(f32::MAX)),
            ("f64", V::Double(-2.5e300)),
            (
                "dec",
                V::DecimalValue(DecimalValue {
                    scale: 2,
                    value: 1234,
                }),
            ),
            ("sstr", V::ShortString("short".into())),
            ("lstr", V::LongString("long ✓".into())),
            ("lbytes", V::LongString(vec![0xff, 0x00, 0xfe].into())),
            (
                "arr",
                V::FieldArray(vec![V::Void, V::LongLongInt(1)].into()),
            ),
            ("ts", V::Timestamp(u64::MAX)),
            ("tbl", V::FieldTable(inner)),
            ("bin", V::ByteArray(vec![1, 2, 3].into())),
            ("void", V::Void),
        ] {
            t.insert(k.into(), v);
        }
        t
    }

    fn round_trip(t: &FieldTable) -> FieldTable {
        let json = serde_json::to_string(&Holder { t: t.clone() }).unwrap();
        serde_json::from_str::<Holder>(&json).unwrap().t
    }

    #[test]
    fn every_type_round_trips_exactly() {
        let t = every_type();
        assert_eq!(
            args::cmp_table(&round_trip(&t), &t),
            std::cmp::Ordering::Equal
        );
    }

    #[test]
    fn non_finite_floats_survive() {
        let mut t = FieldTable::default();
        t.insert("nan".into(), AMQPValue::Double(f64::NAN));
        t.insert("inf".into(), AMQPValue::Float(f32::INFINITY));
        t.insert("ninf".into(), AMQPValue::Double(f64::NEG_INFINITY));
        let back = round_trip(&t);
        let get = |k: &str| back.inner().get(k).cloned();
        assert!(matches!(get("nan"), Some(AMQPValue::Double(x)) if x.is_nan()));
        assert_eq!(get("inf"), Some(AMQPValue::Float(f32::INFINITY)));
        assert_eq!(get("ninf"), Some(AMQPValue::Double(f64::NEG_INFINITY)));
    }

    #[test]
    fn format_is_readable() {
        let mut t = FieldTable::default();
        t.insert("x-match".into(), AMQPValue::LongString("any".into()));
        t.insert("n".into(), AMQPValue::LongLongInt(5));
        t.insert("v".into(), AMQPValue::Void);
        let json = serde_json::to_string(&Holder { t }).unwrap();
        assert_eq!(
            json,
            r#"{"t":{"n":{"long":5},"v":"void","x-match":{"longstr":"any"}}}"#
        );
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
