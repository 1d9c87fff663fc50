//! Field tables (x-arguments, headers) to and from the JSON RabbitMQ's
//! management API uses: plain JSON values, types inferred (integer → long,
//! float → double, string → longstr, list → array, object → table).

use ferry_amqp::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use serde_json::{Map, Number, Value};

/// A table as JSON.
pub fn table_to_json(t: &FieldTable) -> Value {
    let mut m = Map::new();
    for (k, v) in t {
        m.insert(k.as_str().to_string(), value_to_json(v));
    }
    Value::Object(m)
}

fn float(x: f64) -> Value {
    Number::from_f64(x).map_or_else(|| Value::String(x.to_string()), Value::Number)
}

/// One field value as JSON.
pub fn value_to_json(v: &AMQPValue) -> Value {
    match v {
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::ShortShortInt(n) => Value::from(*n),
        AMQPValue::ShortShortUInt(n) => Value::from(*n),
        AMQPValue::ShortInt(n) => Value::from(*n),
        AMQPValue::ShortUInt(n) => Value::from(*n),
        AMQPValue::LongInt(n) => Value::from(*n),
        AMQPValue::LongUInt(n) => Value::from(*n),
        AMQPValue::LongLongInt(n) => Value::from(*n),
        AMQPValue::Float(x) => float(f64::from(*x)),
        AMQPValue::Double(x) => float(*x),
        AMQPValue::DecimalValue(d) => float(f64::from(d.value) / 10f64.powi(i32::from(d.scale))),
        AMQPValue::ShortString(s) => Value::String(s.as_str().to_string()),
        AMQPValue::LongString(s) => Value::String(String::from_utf8_lossy(s.as_bytes()).into()),
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(value_to_json).collect()),
        AMQPValue::Timestamp(t) => Value::from(*t),
        AMQPValue::FieldTable(t) => table_to_json(t),
        AMQPValue::ByteArray(b) => Value::String(String::from_utf8_lossy(b.as_slice()).into()),
        AMQPValue::Void => Value::Null,
    }
}

/// A JSON object as a table; None (or null) is the empty table.
pub fn json_to_table(v: Option<&Value>) -> Result<FieldTable, String> {
    let mut t = FieldTable::default();
    match v {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                t.insert(ShortString::from(k.as_str()), json_to_value(v)?);
            }
        }
        Some(other) => return Err(format!("not a JSON object: {other}")),
    }
    Ok(t)
}

fn json_to_value(v: &Value) -> Result<AMQPValue, String> {
    Ok(match v {
        Value::Null => AMQPValue::Void,
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => AMQPValue::LongLongInt(i),
            (None, Some(x)) if n.is_u64() => {
                return Err(format!("integer out of range: {x}"));
            }
            (None, Some(x)) => AMQPValue::Double(x),
            (None, None) => return Err(format!("bad number: {n}")),
        },
        Value::String(s) => AMQPValue::LongString(LongString::from(s.as_bytes().to_vec())),
        Value::Array(a) => {
            let items: Result<Vec<AMQPValue>, String> = a.iter().map(json_to_value).collect();
            AMQPValue::FieldArray(FieldArray::from(items?))
        }
        Value::Object(_) => AMQPValue::FieldTable(json_to_table(Some(v))?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_plain_json() {
        let v = serde_json::json!({"x-max-length": 10, "s": "a", "b": true,
            "f": 1.5, "l": [1, "x"], "t": {"k": null}});
        let t = json_to_table(Some(&v)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(table_to_json(&t), v);
        assert!(json_to_table(Some(&serde_json::json!([1]))).is_err());
        assert!(json_to_table(Some(&serde_json::json!({"n": u64::MAX}))).is_err());
    }
}
