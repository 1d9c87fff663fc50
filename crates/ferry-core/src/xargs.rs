//! x-argument values as RabbitMQ reads and checks them, shared by every
//! argument family (queue, delayed retry, stream, delayed exchange) so the
//! accepted types and the 406 texts cannot drift apart.
//!
//! The `check_*` errors are the reason term as RabbitMQ prints it with
//! `~p`; [`invalid_arg`] wraps one into the whole reply text after
//! `PRECONDITION_FAILED - `.

use crate::exchange::type_name;
use ferry_model::Value;

/// An integer of one of RabbitMQ's `?INTEGER_ARG_TYPES` (every AMQP
/// integer type but the 64-bit unsigned timestamp).
pub(crate) fn int(v: &Value) -> Option<i128> {
    v.as_i64().map(i128::from)
}

/// A non-negative integer argument (absent when negative or not one).
pub(crate) fn non_negative(v: &Value) -> Option<u64> {
    int(v).and_then(|n| u64::try_from(n).ok())
}

/// The value's text if it is a string holding UTF-8.
pub(crate) fn text(v: &Value) -> Option<&str> {
    v.as_text()
}

/// Whether the value is a string (RabbitMQ's `longstr`).
pub(crate) fn is_string(v: &Value) -> bool {
    matches!(v, Value::Str(_))
}

/// `{unacceptable_type,T}`.
pub(crate) fn unacceptable(v: &Value) -> String {
    format!("{{unacceptable_type,{}}}", type_name(v))
}

/// RabbitMQ's `check_int_arg`.
pub(crate) fn check_int(v: &Value) -> Result<i128, String> {
    int(v).ok_or_else(|| format!("\"expected integer, got {}\"", type_name(v)))
}

/// RabbitMQ's `check_non_neg_int_arg`.
pub(crate) fn check_non_neg(v: &Value) -> Result<(), String> {
    match check_int(v)? {
        n if n < 0 => Err(format!("{{value_negative,{n}}}")),
        _ => Ok(()),
    }
}

/// RabbitMQ's `check_bool_arg`.
pub(crate) fn check_bool(v: &Value) -> Result<(), String> {
    match v {
        Value::Bool(_) => Ok(()),
        _ => Err(unacceptable(v)),
    }
}

/// The reply text of a refused argument; `rs` names the resource
/// (`queue 'q' in vhost '/'`).
pub(crate) fn invalid_arg(key: &str, rs: &str, why: &str) -> String {
    format!("invalid arg '{key}' for {rs}: {why}")
}

/// The characters of a string inside Erlang's `~p` of a binary
/// (`<<"...">>`): `"` and `\` escaped, and the control characters `~p`
/// prints as escapes (newline, tab, carriage return).
pub(crate) fn erlang_escaped(s: &str) -> String {
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
