//! Typed values and tables: what message headers, queue / exchange /
//! binding / consumer arguments are made of, whichever protocol carried
//! them.
//!
//! The types are the union of what the protocols Ferry speaks can say, so
//! converting into this model never loses anything: AMQP 0-9-1 field values
//! (RabbitMQ's dialect: every integer width, floats, decimals, timestamps,
//! nested tables and arrays, byte arrays, void) map one to one; a Kafka
//! header is a key with a byte string. Converting *out* of the model is the
//! edge's business and may have to choose (docs/message-model.md).

use bytes::Bytes;
use std::sync::Arc;

/// One typed value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// true / false.
    Bool(bool),
    /// Signed 8-bit integer.
    I8(i8),
    /// Unsigned 8-bit integer.
    U8(u8),
    /// Signed 16-bit integer.
    I16(i16),
    /// Unsigned 16-bit integer.
    U16(u16),
    /// Signed 32-bit integer.
    I32(i32),
    /// Unsigned 32-bit integer.
    U32(u32),
    /// Signed 64-bit integer.
    I64(i64),
    /// 32-bit float.
    F32(f32),
    /// 64-bit float.
    F64(f64),
    /// `value × 10^-scale`.
    Decimal {
        /// Digits after the point.
        scale: u8,
        /// The unscaled value.
        value: u32,
    },
    /// A string: bytes, normally UTF-8 but not required to be (AMQP's long
    /// strings are binary-safe; what arrived is kept as it was).
    Str(Bytes),
    /// Seconds since the Unix epoch.
    Timestamp(u64),
    /// A nested table.
    Table(Table),
    /// An ordered list.
    Array(Vec<Value>),
    /// Opaque bytes (AMQP byte array; distinct from `Str` so that a round
    /// trip keeps the type).
    Bytes(Bytes),
    /// No value.
    Void,
}

impl Value {
    /// A string value from text.
    pub fn str(s: impl AsRef<str>) -> Value {
        Value::Str(Bytes::copy_from_slice(s.as_ref().as_bytes()))
    }

    /// The value as an i64 if it is an integer of any width that fits.
    pub fn as_i64(&self) -> Option<i64> {
        Some(match *self {
            Value::I8(v) => v.into(),
            Value::U8(v) => v.into(),
            Value::I16(v) => v.into(),
            Value::U16(v) => v.into(),
            Value::I32(v) => v.into(),
            Value::U32(v) => v.into(),
            Value::I64(v) => v,
            _ => return None,
        })
    }

    /// The bytes of a `Str` value.
    pub fn as_str_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Str(b) => Some(b),
            _ => None,
        }
    }

    /// The text of a `Str` value that is valid UTF-8.
    pub fn as_text(&self) -> Option<&str> {
        self.as_str_bytes()
            .and_then(|b| std::str::from_utf8(b).ok())
    }

    /// The nested table of a `Table` value.
    pub fn as_table(&self) -> Option<&Table> {
        match self {
            Value::Table(t) => Some(t),
            _ => None,
        }
    }
}

/// A table: keys (any length, UTF-8) to values, in the order they were
/// given, as on the wire.
///
/// Order and repeated keys are kept because AMQP tables keep them (RabbitMQ
/// hands a consumer the publisher's table as it was) and a Kafka record may
/// repeat a header key; lookups see the first entry of a key, as
/// RabbitMQ's `table_lookup` does.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Table {
    entries: Vec<(Arc<str>, Value)>,
}

impl Table {
    /// An empty table.
    pub fn new() -> Self {
        Table::default()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The value of the first entry with `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.entries
            .iter()
            .find(|(k, _)| &**k == key)
            .map(|(_, v)| v)
    }

    /// Appends an entry (even if `key` is there already).
    pub fn push(&mut self, key: impl Into<Arc<str>>, value: Value) {
        self.entries.push((key.into(), value));
    }

    /// Sets the first entry with `key` to `value`, or appends one; returns
    /// the value it replaced.
    pub fn insert(&mut self, key: impl Into<Arc<str>>, value: Value) -> Option<Value> {
        let key = key.into();
        match self.entries.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => Some(std::mem::replace(v, value)),
            None => {
                self.entries.push((key, value));
                None
            }
        }
    }

    /// Removes every entry with `key`; returns the first one's value.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let first = self
            .entries
            .iter()
            .position(|(k, _)| &**k == key)
            .map(|i| self.entries.remove(i).1);
        self.entries.retain(|(k, _)| &**k != key);
        first
    }

    /// Entries in order.
    pub fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &Value)> {
        self.entries.iter().map(|(k, v)| (k, v))
    }
}

impl<K: Into<Arc<str>>> FromIterator<(K, Value)> for Table {
    /// Entries in the iterator's order, repeated keys kept.
    fn from_iter<I: IntoIterator<Item = (K, Value)>>(iter: I) -> Self {
        Table {
            entries: iter.into_iter().map(|(k, v)| (k.into(), v)).collect(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tables_keep_order_and_repeats_and_look_up_the_first() {
        let mut t: Table = [
            ("b", Value::I32(2)),
            ("a", Value::I32(1)),
            ("b", Value::I32(3)),
        ]
        .into_iter()
        .collect();
        assert_eq!(t.len(), 3);
        let keys: Vec<&str> = t.iter().map(|(k, _)| &**k).collect();
        assert_eq!(keys, ["b", "a", "b"]);
        assert_eq!(t.get("b"), Some(&Value::I32(2)));
        assert_eq!(t.insert("a", Value::Void), Some(Value::I32(1)));
        assert_eq!(t.remove("b"), Some(Value::I32(2)));
        assert_eq!(t.len(), 1);
        assert_eq!(t.insert("c", Value::Void), None);
        assert_eq!(t.get("c"), Some(&Value::Void));
    }

    #[test]
    fn integers_of_every_width_read_as_i64() {
        for v in [
            Value::I8(-1),
            Value::U8(1),
            Value::I16(-1),
            Value::U16(1),
            Value::I32(-1),
            Value::U32(1),
            Value::I64(-1),
        ] {
            assert_eq!(v.as_i64().map(i64::abs), Some(1));
        }
        assert_eq!(Value::str("x").as_i64(), None);
        assert_eq!(Value::str("é").as_text(), Some("é"));
    }
}
