//! Argument values in the model's terms: the bridge from argument tables
//! (still amq-protocol types until the argument half of issue 11 lands)
//! to `ferry_model` values, which message headers are. Headers bindings
//! compile their arguments through it to match message headers.

use amq_protocol_types::{AMQPValue, FieldTable};
use bytes::Bytes;
use ferry_model::{Table, Value};

/// The model value of an argument value (every AMQP type maps one to one;
/// short strings become strings).
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
        V::ByteArray(b) => Value::Bytes(Bytes::copy_from_slice(b.as_slice())),
        V::Timestamp(t) => Value::Timestamp(*t),
        V::FieldArray(a) => Value::Array(a.as_slice().iter().map(value).collect()),
        V::FieldTable(t) => Value::Table(table(t)),
        V::Void => Value::Void,
    }
}

/// The model table of an argument table (its key order).
pub(crate) fn table(t: &FieldTable) -> Table {
    t.inner()
        .iter()
        .map(|(k, v)| (k.as_str(), value(v)))
        .collect()
}
