//! Vhost limits (`max-connections`, `max-queues`) and user limits
//! (`max-connections`, `max-channels`), as RabbitMQ 3.10 keeps them: a map
//! of limit name → integer per vhost / user, where a negative value means
//! "no limit" and 0 allows nothing. They live in the access database
//! ([`Users`](super::Users)) and so in `DATA/access`.
//!
//! The refusal texts are RabbitMQ's (the front end adds the reply code):
//! connection.open 530 NOT_ALLOWED, channel.open 530 NOT_ALLOWED (a
//! connection error), queue.declare 406 PRECONDITION_FAILED.

use serde_json::Value;
use std::collections::BTreeMap;

/// A vhost's or user's limits: name → value (negative = no limit).
pub type Limits = BTreeMap<String, i64>;

/// The names a vhost limit may have.
pub const VHOST_LIMITS: [&str; 2] = ["max-connections", "max-queues"];
/// The names a user limit may have.
pub const USER_LIMITS: [&str; 2] = ["max-connections", "max-channels"];

/// Whose limit: RabbitMQ words the validation errors differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitScope {
    /// `/api/vhost-limits`.
    Vhost,
    /// `/api/user-limits`.
    User,
}

impl LimitScope {
    fn names(self) -> &'static [&'static str] {
        match self {
            Self::Vhost => &VHOST_LIMITS,
            Self::User => &USER_LIMITS,
        }
    }
}

/// Checks one limit as RabbitMQ's validation does; the error is the
/// management API's 400 reason, e.g. `Validation failed\n\nmax-connections
/// should be a number, actually was <<"5">>\n` (vhost) or `max-channels
/// should be a number, actually was <<"x">>` (user).
pub fn validate(scope: LimitScope, name: &str, value: &Value) -> Result<i64, String> {
    let wrap = |text: String| match scope {
        LimitScope::Vhost => format!("Validation failed\n\n{text}\n"),
        LimitScope::User => text,
    };
    if !scope.names().contains(&name) {
        let what = match scope {
            LimitScope::Vhost => "limits",
            LimitScope::User => "user-limits",
        };
        return Err(wrap(format!(
            "Unrecognised terms [{{<<\"{}\">>,{}}}] in {what}",
            escape(name),
            erlang_term(value)
        )));
    }
    match value.as_i64() {
        Some(n) => Ok(n),
        None => Err(wrap(format!(
            "{name} should be a number, actually was {}",
            erlang_term(value)
        ))),
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// A JSON value as RabbitMQ prints the Erlang term it decoded it to.
fn erlang_term(v: &Value) -> String {
    match v {
        Value::String(s) => format!("<<\"{}\">>", escape(s)),
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(erlang_term).collect::<Vec<_>>().join(",")
        ),
        Value::Object(o) => format!(
            "#{{{}}}",
            o.iter()
                .map(|(k, v)| format!("<<\"{}\">> => {}", escape(k), erlang_term(v)))
                .collect::<Vec<_>>()
                .join(",")
        ),
    }
}

/// Limits as RabbitMQ shows them in JSON: an object, or `[]` for an
/// empty set (the runtime parameter once its last limit was cleared).
pub fn value_json(limits: &Limits) -> Value {
    if limits.is_empty() {
        return Value::Array(Vec::new());
    }
    Value::Object(
        limits
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(*v)))
            .collect(),
    )
}

/// Whether `current` more objects would pass `limit`: RabbitMQ refuses a
/// new connection / channel / queue when `current >= limit` for a limit
/// of 0 or more.
pub fn is_reached(limit: Option<i64>, current: usize) -> Option<i64> {
    let l = limit.filter(|l| *l >= 0)?;
    (i64::try_from(current).unwrap_or(i64::MAX) >= l).then_some(l)
}

/// connection.open refused by the vhost's `max-connections`.
pub fn vhost_connections_text(vhost: &str, user: &str, limit: i64) -> String {
    format!("access to vhost '{vhost}' refused for user '{user}': connection limit ({limit}) is reached")
}

/// connection.open refused by the user's `max-connections`.
pub fn user_connections_text(user: &str, limit: i64) -> String {
    format!("connection refused for user '{user}': user connection limit ({limit}) is reached")
}

/// channel.open refused by the user's `max-channels`.
pub fn user_channels_text(user: &str, limit: i64) -> String {
    format!("number of channels opened for user '{user}' has reached the maximum allowed user limit of ({limit})")
}

/// queue.declare refused by the vhost's `max-queues`.
pub fn queues_text(queue: &str, vhost: &str, limit: i64) -> String {
    format!("cannot declare queue '{queue}': queue limit in vhost '{vhost}' ({limit}) is reached")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn validation_answers_as_rabbitmq() {
        assert_eq!(
            validate(LimitScope::Vhost, "max-queues", &json!(-1)),
            Ok(-1)
        );
        assert_eq!(validate(LimitScope::User, "max-channels", &json!(0)), Ok(0));
        assert_eq!(
            validate(LimitScope::Vhost, "max-foo", &json!(5)).unwrap_err(),
            "Validation failed\n\nUnrecognised terms [{<<\"max-foo\">>,5}] in limits\n"
        );
        assert_eq!(
            validate(LimitScope::User, "max-queues", &json!(10)).unwrap_err(),
            "Unrecognised terms [{<<\"max-queues\">>,10}] in user-limits"
        );
        assert_eq!(
            validate(LimitScope::Vhost, "max-connections", &json!("5")).unwrap_err(),
            "Validation failed\n\nmax-connections should be a number, actually was <<\"5\">>\n"
        );
        assert_eq!(
            validate(LimitScope::Vhost, "max-connections", &json!(1.5)).unwrap_err(),
            "Validation failed\n\nmax-connections should be a number, actually was 1.5\n"
        );
        assert_eq!(
            validate(LimitScope::User, "max-channels", &json!("x")).unwrap_err(),
            "max-channels should be a number, actually was <<\"x\">>"
        );
    }

    #[test]
    fn zero_allows_nothing_and_negative_everything() {
        assert_eq!(is_reached(Some(0), 0), Some(0));
        assert_eq!(is_reached(Some(2), 1), None);
        assert_eq!(is_reached(Some(2), 2), Some(2));
        assert_eq!(is_reached(Some(-1), 1_000_000), None);
        assert_eq!(is_reached(None, 5), None);
    }
}
