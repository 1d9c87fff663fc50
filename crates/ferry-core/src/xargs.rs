//! x-argument values as RabbitMQ reads and checks them, shared by every
//! argument family (queue, delayed retry, stream, delayed exchange) so the
//! accepted types and the 406 texts cannot drift apart.
//!
//! The `check_*` errors are the reason term as RabbitMQ prints it with
//! `~p`; [`invalid_arg`] wraps one into the whole reply text after
//! `PRECONDITION_FAILED - `.

use crate::exchange::type_name;
use amq_protocol_types::AMQPValue;

/// An integer of one of RabbitMQ's `?INTEGER_ARG_TYPES` (every AMQP
/// integer type but the 64-bit unsigned timestamp).
pub(crate) fn int(v: &AMQPValue) -> Option<i128> {
    use AMQPValue as V;
    Some(match v {
        V::ShortShortInt(x) => i128::from(*x),
        V::ShortShortUInt(x) => i128::from(*x),
        V::ShortInt(x) => i128::from(*x),
        V::ShortUInt(x) => i128::from(*x),
        V::LongInt(x) => i128::from(*x),
        V::LongUInt(x) => i128::from(*x),
        V::LongLongInt(x) => i128::from(*x),
        _ => return None,
    })
}

/// A non-negative integer argument (absent when negative or not one).
pub(crate) fn non_negative(v: &AMQPValue) -> Option<u64> {
    int(v).and_then(|n| u64::try_from(n).ok())
}

/// The value's text if it is a string (long or short) holding UTF-8.
pub(crate) fn text(v: &AMQPValue) -> Option<&str> {
    match v {
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
        AMQPValue::ShortString(s) => Some(s.as_str()),
        _ => None,
    }
}

/// Whether the value is a string (RabbitMQ's `longstr`).
pub(crate) fn is_string(v: &AMQPValue) -> bool {
    matches!(v, AMQPValue::LongString(_) | AMQPValue::ShortString(_))
}

/// `{unacceptable_type,T}`.
pub(crate) fn unacceptable(v: &AMQPValue) -> String {
    format!("{{unacceptable_type,{}}}", type_name(v))
}

/// RabbitMQ's `check_int_arg`.
pub(crate) fn check_int(v: &AMQPValue) -> Result<i128, String> {
    int(v).ok_or_else(|| format!("\"expected integer, got {}\"", type_name(v)))
}

/// RabbitMQ's `check_non_neg_int_arg`.
pub(crate) fn check_non_neg(v: &AMQPValue) -> Result<(), String> {
    match check_int(v)? {
        n if n < 0 => Err(format!("{{value_negative,{n}}}")),
        _ => Ok(()),
    }
}

/// RabbitMQ's `check_bool_arg`.
pub(crate) fn check_bool(v: &AMQPValue) -> Result<(), String> {
    match v {
        AMQPValue::Boolean(_) => Ok(()),
        _ => Err(unacceptable(v)),
    }
}

/// The reply text of a refused argument; `rs` names the resource
/// (`queue 'q' in vhost '/'`).
pub(crate) fn invalid_arg(key: &str, rs: &str, why: &str) -> String {
    format!("invalid arg '{key}' for {rs}: {why}")
}

/// What a replicated queue type (quorum, stream) demands of a declaration:
/// durable, not exclusive, not auto-delete (RabbitMQ 3.10's texts and
/// order).
pub(crate) fn check_replicated_declaration(
    queue: &str,
    vhost: &str,
    durable: bool,
    exclusive: bool,
    auto_delete: bool,
) -> Result<(), String> {
    let bad = if auto_delete {
        "auto-delete"
    } else if exclusive {
        "exclusive-owner"
    } else if !durable {
        "non-durable"
    } else {
        return Ok(());
    };
    Err(format!(
        "invalid property '{bad}' for queue '{queue}' in vhost '{vhost}'"
    ))
}
