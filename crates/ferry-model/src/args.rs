//! x-argument values as RabbitMQ reads and checks them, shared by every
//! argument family (queue, delayed retry, stream, exchange, delayed
//! exchange) so the accepted types and the 406 texts cannot drift apart.
//! RabbitMQ's names for value types ([`type_name`]) are AMQP's field type
//! names, as its error texts print them (a model `Str` is `longstr`): they
//! are part of the broker's texts, whichever protocol carried the value.
//!
//! The `check_*` errors are the reason term as RabbitMQ prints it with
//! `~p`; [`invalid_arg`] wraps one into the whole reply text after
//! `PRECONDITION_FAILED - `.

use crate::{Table, Value};
use std::sync::Arc;

/// An integer of one of RabbitMQ's `?INTEGER_ARG_TYPES` (every AMQP
/// integer type but the 64-bit unsigned timestamp).
pub fn int(v: &Value) -> Option<i128> {
    v.as_i64().map(i128::from)
}

/// A non-negative integer argument (absent when negative or not one).
pub fn non_negative(v: &Value) -> Option<u64> {
    int(v).and_then(|n| u64::try_from(n).ok())
}

/// The value's text if it is a string holding UTF-8.
pub fn text(v: &Value) -> Option<&str> {
    v.as_text()
}

/// Whether the value is a string (RabbitMQ's `longstr`).
pub fn is_string(v: &Value) -> bool {
    matches!(v, Value::Str(_))
}

/// `{unacceptable_type,T}`.
pub fn unacceptable(v: &Value) -> String {
    format!("{{unacceptable_type,{}}}", type_name(v))
}

/// RabbitMQ's `check_int_arg`.
pub fn check_int(v: &Value) -> Result<i128, String> {
    int(v).ok_or_else(|| format!("\"expected integer, got {}\"", type_name(v)))
}

/// RabbitMQ's `check_non_neg_int_arg`.
pub fn check_non_neg(v: &Value) -> Result<(), String> {
    match check_int(v)? {
        n if n < 0 => Err(format!("{{value_negative,{n}}}")),
        _ => Ok(()),
    }
}

/// RabbitMQ's `check_bool_arg`.
pub fn check_bool(v: &Value) -> Result<(), String> {
    match v {
        Value::Bool(_) => Ok(()),
        _ => Err(unacceptable(v)),
    }
}

/// The reply text of a refused argument; `rs` names the resource
/// (`queue 'q' in vhost '/'`).
pub fn invalid_arg(key: &str, rs: &str, why: &str) -> String {
    format!("invalid arg '{key}' for {rs}: {why}")
}

/// The characters of a string inside Erlang's `~p` of a binary
/// (`<<"...">>`): `"` and `\` escaped, and the control characters `~p`
/// prints as escapes (newline, tab, carriage return).
pub fn erlang_escaped(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

/// RabbitMQ's name for the value's AMQP field type (as in its error
/// texts).
pub fn type_name(v: &Value) -> &'static str {
    use Value as V;
    match v {
        V::Bool(_) => "bool",
        V::I8(_) => "byte",
        V::U8(_) => "unsignedbyte",
        V::I16(_) => "short",
        V::U16(_) => "unsignedshort",
        V::I32(_) => "signedint",
        V::U32(_) => "unsignedint",
        V::I64(_) => "long",
        V::F32(_) => "float",
        V::F64(_) => "double",
        V::Decimal { .. } => "decimal",
        V::Str(_) => "longstr",
        V::Array(_) => "array",
        V::Timestamp(_) => "timestamp",
        V::Table(_) => "table",
        V::Bytes(_) => "binary",
        V::Void => "void",
    }
}

/// A table's entries in key order, the first entry of a repeated key kept
/// (the table RabbitMQ / amq-protocol would hold after parsing it).
pub fn sorted(t: &Table) -> Vec<(&Arc<str>, &Value)> {
    let mut v: Vec<(&Arc<str>, &Value)> = t.iter().collect();
    // Stable: the first of equal keys stays first.
    v.sort_by(|a, b| a.0.cmp(b.0));
    v.dedup_by(|later, earlier| later.0 == earlier.0);
    v
}
