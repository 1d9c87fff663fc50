//! How an effective policy definition combines with an object's own
//! arguments, RabbitMQ's per-key rules ("Combining policy definitions
//! with optional arguments"):
//! * queues (`rabbit_amqqueue_process`, `rabbit_quorum_queue`): for
//!   `expires`, `message-ttl`, `max-length`, `max-length-bytes` and
//!   `delivery-limit` the lower of the two applies; for the others
//!   (`dead-letter-exchange`, `dead-letter-routing-key`, `overflow`, and
//!   Ferry's `retry-*`) the x-argument wins;
//! * streams (`rabbit_stream_queue`): the policy wins for `max-age`,
//!   `max-length-bytes` and `stream-max-segment-size-bytes`;
//! * exchanges: the `alternate-exchange` argument wins over the policy.
//!
//! The result is the argument table the queue then acts on, so one parser
//! ([`QueueArgs::parse`](ferry_queue::queue::QueueArgs::parse)) serves both.

use ferry_model::{Table, Value as Arg};
use serde_json::{Map, Value};

/// Keys where the lower of policy and argument applies.
const LOWER_WINS: [&str; 5] = [
    "expires",
    "message-ttl",
    "max-length",
    "max-length-bytes",
    "delivery-limit",
];

/// Keys a classic or quorum queue takes from a policy.
const QUEUE_KEYS: [&str; 12] = [
    "expires",
    "message-ttl",
    "max-length",
    "max-length-bytes",
    "delivery-limit",
    "dead-letter-exchange",
    "dead-letter-routing-key",
    "overflow",
    "retry-delay",
    "retry-backoff",
    "retry-multiplier",
    "retry-max-delay",
];

/// Keys a stream takes from a policy.
const STREAM_KEYS: [&str; 3] = [
    "max-age",
    "max-length-bytes",
    "stream-max-segment-size-bytes",
];

/// A policy value as an argument value (a string, or a 64-bit integer).
fn arg(v: &Value) -> Option<Arg> {
    match v {
        Value::String(s) => Some(Arg::str(s)),
        Value::Number(n) => n.as_i64().map(Arg::I64),
        _ => None,
    }
}

/// A queue's arguments with the policy's keys added by RabbitMQ's rules.
pub fn effective_queue_args(args: &Table, def: &Map<String, Value>) -> Table {
    let mut out = args.clone();
    for key in QUEUE_KEYS {
        let Some(pv) = def.get(key).and_then(arg) else {
            continue;
        };
        let x = format!("x-{key}");
        let merged = match args.get(x.as_str()) {
            None => pv,
            Some(av) if LOWER_WINS.contains(&key) => {
                match (ferry_model::args::int(av), ferry_model::args::int(&pv)) {
                    (Some(a), Some(p)) if p < a => pv,
                    _ => av.clone(),
                }
            }
            Some(av) => av.clone(),
        };
        out.insert(x, merged);
    }
    out
}

/// A stream's arguments with the policy's retention keys (the policy wins).
pub fn effective_stream_args(args: &Table, def: &Map<String, Value>) -> Table {
    let mut out = args.clone();
    for key in STREAM_KEYS {
        if let Some(pv) = def.get(key).and_then(arg) {
            out.insert(format!("x-{key}"), pv);
        }
    }
    out
}

/// The alternate exchange a policy names (used when the exchange has no
/// `alternate-exchange` argument).
pub fn policy_alternate_exchange(def: &Map<String, Value>) -> Option<&str> {
    def.get("alternate-exchange").and_then(Value::as_str)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::test_support::{ms as s, mtable as table};
    use ferry_queue::queue::{Overflow, QueueArgs};
    use serde_json::json;

    fn def(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn numeric_limits_take_the_lower_and_arguments_win_the_rest() {
        let args = table(&[
            ("x-message-ttl", Arg::I32(100)),
            ("x-max-length", Arg::I32(5)),
            ("x-overflow", s("reject-publish")),
            ("x-dead-letter-exchange", s("mine")),
        ]);
        let d = def(
            json!({"message-ttl": 50, "max-length": 10, "overflow": "drop-head",
            "dead-letter-exchange": "theirs", "dead-letter-routing-key": "rk", "expires": 1000,
            "alternate-exchange": "ignored-by-queues", "retry-delay": 7}),
        );
        let a = QueueArgs::parse(&effective_queue_args(&args, &d), None);
        assert_eq!(a.message_ttl, Some(50));
        assert_eq!(a.max_length, Some(5));
        assert_eq!(a.overflow, Overflow::RejectPublish);
        assert_eq!(a.dead_letter_exchange.as_deref(), Some("mine"));
        assert_eq!(a.dead_letter_routing_key.as_deref(), Some("rk"));
        assert_eq!(a.expires, Some(1000));
        assert!(a.retry.is_some());
        let plain = QueueArgs::parse(&effective_queue_args(&Table::new(), &Map::new()), None);
        assert!(plain.is_plain());
    }

    #[test]
    fn stream_retention_takes_the_policy() {
        let args = table(&[("x-max-age", s("1D")), ("x-queue-type", s("stream"))]);
        let out = effective_stream_args(&args, &def(json!({"max-age": "2h", "message-ttl": 5})));
        assert_eq!(out.get("x-max-age"), Some(&s("2h")));
        assert!(out.get("x-message-ttl").is_none());
        assert_eq!(
            policy_alternate_exchange(&def(json!({"alternate-exchange": "ae"}))),
            Some("ae")
        );
    }
}
