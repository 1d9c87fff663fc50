//! Temporary bridge: the message-properties paths (`HeaderEdit::headers`,
//! x-death building, held and released messages) still carry amq-protocol
//! header tables, while routing (headers exchanges, consistent hashing,
//! `CC` / `BCC`, `x-delay`) reads `ferry_model` tables. Where the two meet
//! inside the core, headers are converted here, the same way
//! `ferry_amqp::model::table_from_amqp` converts them at the edge. Goes
//! away when message properties move onto the model (issue 11).

use amq_protocol_types::{AMQPValue, FieldTable};
use bytes::Bytes;
use ferry_model::{Table, Value};

/// An amq-protocol value as a model value (a short string becomes a
/// string, as at the edge).
pub(crate) fn value(v: &AMQPValue) -> Value {
    use AMQPValue as V;
    match v {
        V::Boolean(b) => Value::Bool(*b),
        V::ShortShortInt(x) => Value::I8(*x),
        V::ShortShortUInt(x) => Value::U8(*x),
        V::ShortInt(x) => Value::I16(*x),
        V::ShortUInt(x) => Value::U16(*x),
        V::LongInt(x) => Value::I32(*x),
        V::LongUInt(x) => Value::U32(*x),
        V::LongLongInt(x) => Value::I64(*x),
        V::Float(x) => Value::F32(*x),
        V::Double(x) => Value::F64(*x),
        V::DecimalValue(d) => Value::Decimal {
            scale: d.scale,
            value: d.value,
        },
        V::ShortString(s) => Value::str(s.as_str()),
        V::LongString(s) => Value::Str(Bytes::copy_from_slice(s.as_bytes())),
        V::FieldArray(a) => Value::Array(a.as_slice().iter().map(value).collect()),
        V::Timestamp(t) => Value::Timestamp(*t),
        V::FieldTable(t) => Value::Table(table(t)),
        V::ByteArray(b) => Value::Bytes(Bytes::copy_from_slice(b.as_slice())),
        V::Void => Value::Void,
    }
}

/// An amq-protocol table as a model table (its key order).
pub(crate) fn table(t: &FieldTable) -> Table {
    t.inner()
        .iter()
        .map(|(k, v)| (k.as_str(), value(v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol_types::{DecimalValue, LongString};

    #[test]
    fn converts_like_the_edge() {
        let mut inner = FieldTable::default();
        inner.insert("z".into(), AMQPValue::LongLongInt(-1));
        let mut t = FieldTable::default();
        t.insert("b".into(), AMQPValue::LongString(LongString::from("x")));
        t.insert("a".into(), AMQPValue::ShortString("s".into()));
        t.insert(
            "d".into(),
            AMQPValue::DecimalValue(DecimalValue { scale: 1, value: 5 }),
        );
        t.insert("n".into(), AMQPValue::FieldTable(inner));
        let m = table(&t);
        let keys: Vec<&str> = m.iter().map(|(k, _)| &**k).collect();
        assert_eq!(keys, ["a", "b", "d", "n"]);
        assert_eq!(m.get("a"), Some(&Value::str("s")));
        assert_eq!(m.get("b"), Some(&Value::str("x")));
        assert_eq!(m.get("d"), Some(&Value::Decimal { scale: 1, value: 5 }));
        let nested: Table = [("z", Value::I64(-1))].into_iter().collect();
        assert_eq!(m.get("n"), Some(&Value::Table(nested)));
    }
}
