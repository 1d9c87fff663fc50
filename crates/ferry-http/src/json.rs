//! Tables (x-arguments, headers) to and from the JSON RabbitMQ's
//! management API uses: plain JSON values, types inferred (integer → long,
//! float → double, string → longstr, list → array, object → table).
//!
//! Works on `ferry_model` tables (what the core keeps arguments as);
//! amq-protocol tables (message headers, client properties) convert with
//! [`amqp_table_to_json`] / `ferry_amqp::model`.

use ferry_amqp::FieldTable;
use ferry_model::{Table, Value as Arg};
use serde_json::{Map, Number, Value};

/// A table as JSON (a JSON object: keys in order, the first entry of a
/// repeated key).
pub fn table_to_json(t: &Table) -> Value {
    let mut m = Map::new();
    for (k, v) in t.iter() {
        m.entry(k.to_string()).or_insert_with(|| value_to_json(v));
    }
    Value::Object(m)
}

/// An amq-protocol table (message headers, client properties) as JSON.
pub fn amqp_table_to_json(t: &FieldTable) -> Value {
    table_to_json(&ferry_amqp::model::table_from_amqp(t))
}

fn float(x: f64) -> Value {
    Number::from_f64(x).map_or_else(|| Value::String(x.to_string()), Value::Number)
}

/// One field value as JSON.
pub fn value_to_json(v: &Arg) -> Value {
    match v {
        Arg::Bool(b) => Value::Bool(*b),
        Arg::I8(n) => Value::from(*n),
        Arg::U8(n) => Value::from(*n),
        Arg::I16(n) => Value::from(*n),
        Arg::U16(n) => Value::from(*n),
        Arg::I32(n) => Value::from(*n),
        Arg::U32(n) => Value::from(*n),
        Arg::I64(n) => Value::from(*n),
        Arg::F32(x) => float(f64::from(*x)),
        Arg::F64(x) => float(*x),
        Arg::Decimal { scale, value } => float(f64::from(*value) / 10f64.powi(i32::from(*scale))),
        Arg::Str(s) => Value::String(String::from_utf8_lossy(s).into()),
        Arg::Array(a) => Value::Array(a.iter().map(value_to_json).collect()),
        Arg::Timestamp(t) => Value::from(*t),
        Arg::Table(t) => table_to_json(t),
        Arg::Bytes(b) => Value::String(String::from_utf8_lossy(b).into()),
        Arg::Void => Value::Null,
    }
}

/// A JSON object as a table (in key order); None (or null) is the empty
/// table.
pub fn json_to_table(v: Option<&Value>) -> Result<Table, String> {
    let mut t = Table::new();
    match v {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                t.push(k.as_str(), json_to_value(v)?);
            }
        }
        Some(other) => return Err(format!("not a JSON object: {other}")),
    }
    Ok(t)
}

fn json_to_value(v: &Value) -> Result<Arg, String> {
    Ok(match v {
        Value::Null => Arg::Void,
        Value::Bool(b) => Arg::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Arg::I64(i),
            (None, Some(x)) if n.is_u64() => {
                return Err(format!("integer out of range: {x}"));
            }
            (None, Some(x)) => Arg::F64(x),
            (None, None) => return Err(format!("bad number: {n}")),
        },
        Value::String(s) => Arg::str(s),
        Value::Array(a) => Arg::Array(a.iter().map(json_to_value).collect::<Result<_, _>>()?),
        Value::Object(_) => Arg::Table(json_to_table(Some(v))?),
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
        assert_eq!(t.get("x-max-length"), Some(&Arg::I64(10)));
        assert_eq!(t.get("s"), Some(&Arg::str("a")));
        assert!(json_to_table(Some(&serde_json::json!([1]))).is_err());
        assert!(json_to_table(Some(&serde_json::json!({"n": u64::MAX}))).is_err());
    }

    #[test]
    fn repeated_keys_show_their_first_entry() {
        let t: Table = [("a", Arg::I64(1)), ("a", Arg::I64(2))]
            .into_iter()
            .collect();
        assert_eq!(table_to_json(&t), serde_json::json!({"a": 1}));
    }
}
