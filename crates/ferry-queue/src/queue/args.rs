//! The `x-…` queue arguments a queue acts on: message TTL, length limits
//! with their overflow behaviour, the dead-letter target, priorities, queue
//! expiry, single active consumer, the delivery limit and the queue type.
//! Checked at declaration with RabbitMQ 3.10's rules and error texts;
//! parsed when the queue opens, and again when a policy changes them
//! (`Queue::apply_arguments`, `crate::policy`).

use super::QueueSpec;
use ferry_model::args::{
    check_bool, check_int, check_non_neg, int, invalid_arg, is_string, non_negative, text,
    unacceptable,
};
use ferry_model::{Table, Value};
use std::sync::Arc;

pub use ferry_model::message::MAX_EXPIRY_MS;

/// The highest `x-max-priority` RabbitMQ accepts.
pub const MAX_PRIORITY: u8 = 255;

/// The delivery limit of a quorum queue declared without `x-delivery-limit`
/// (RabbitMQ 4's default; RabbitMQ 3.10 has none). The broker's
/// `quorum_delivery_limit` setting overrides it (`QueueEnv`).
pub const QUORUM_DELIVERY_LIMIT: u64 = 20;

/// What a queue at its length limit does with a new message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// Accept it and drop (dead-letter) the oldest ready messages.
    #[default]
    DropHead,
    /// Refuse it (basic.nack to a confirming publisher).
    RejectPublish,
    /// Refuse it and dead-letter it.
    RejectPublishDlx,
}

/// The arguments a queue acts on (others are stored and compared only).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueArgs {
    /// `x-message-ttl`, ms.
    pub message_ttl: Option<u64>,
    /// `x-max-length`: ready messages.
    pub max_length: Option<u64>,
    /// `x-max-length-bytes`: body bytes of ready messages.
    pub max_length_bytes: Option<u64>,
    /// `x-overflow`.
    pub overflow: Overflow,
    /// `x-dead-letter-exchange` ("" is the default exchange).
    pub dead_letter_exchange: Option<Arc<str>>,
    /// `x-dead-letter-routing-key`.
    pub dead_letter_routing_key: Option<Arc<str>>,
    /// `x-max-priority`: the highest priority level (a priority queue has
    /// this plus one levels).
    pub max_priority: Option<u8>,
    /// `x-expires`: ms a queue may stay unused before it is deleted.
    pub expires: Option<u64>,
    /// `x-single-active-consumer`.
    pub single_active_consumer: bool,
    /// How often a message may be returned to the queue before it is
    /// dead-lettered (`x-delivery-limit`; 20 for quorum queues by default;
    /// None = unlimited).
    pub delivery_limit: Option<u64>,
    /// `x-queue-type` is `quorum`: deliveries carry `x-delivery-count`.
    pub quorum: bool,
    /// Delayed retry (`x-retry-*`, Ferry's): returns wait before they are
    /// ready again.
    pub retry: Option<super::retry::RetryPolicy>,
    /// The hidden queue of a delayed exchange (`HOLD_ARG`): each message
    /// is held for its `x-delay` header's ms.
    pub hold: bool,
}

/// The argument that makes a queue a delayed exchange's hidden store (its
/// value is the exchange's name). Set only by the vhost; a client's
/// queue.declare with it is refused.
pub const HOLD_ARG: &str = "x-ferry-delayed-exchange";

fn check_ttl(v: &Value) -> Result<(), String> {
    match check_int(v)? {
        n if n > i128::from(MAX_EXPIRY_MS) => Err(format!("{{value_too_large,{n}}}")),
        n if n < 0 => Err(format!("{{value_negative,{n}}}")),
        _ => Ok(()),
    }
}

fn check_overflow(v: &Value) -> Result<(), String> {
    match text(v) {
        Some("drop-head" | "reject-publish" | "reject-publish-dlx") => Ok(()),
        _ if is_string(v) => Err("invalid_overflow".into()),
        _ => Err(unacceptable(v)),
    }
}

fn check_expires(v: &Value) -> Result<(), String> {
    match check_int(v)? {
        0 => Err("{value_zero,0}".into()),
        _ => check_ttl(v),
    }
}

fn check_max_priority(v: &Value) -> Result<(), String> {
    check_non_neg(v)?;
    match check_int(v)? {
        n if n > i128::from(MAX_PRIORITY) => Err(format!("{{max_value_exceeded,{n}}}")),
        _ => Ok(()),
    }
}

/// A string argument that becomes a dead letter's exchange or routing key
/// must fit the records' short strings (`crate::limits`); RabbitMQ 3.10
/// accepts a longer one and then fails every delivery of such a dead
/// letter (541), so Ferry refuses it at the declaration instead.
fn check_short_arg(v: &Value) -> Result<(), String> {
    let n = match v {
        Value::Str(s) => s.len(),
        _ => 0,
    };
    if n > crate::limits::SHORT_MAX {
        return Err(format!("{{value_too_long,{n}}}"));
    }
    Ok(())
}

/// The queue types a declaration may name.
const QUEUE_TYPES: [&str; 3] = ["classic", "quorum", "stream"];

fn check_queue_type(v: &Value) -> Result<(), String> {
    match text(v) {
        Some(t) if QUEUE_TYPES.contains(&t) => Ok(()),
        Some(t) => Err(format!("\"unsupported queue type '{t}'\"")),
        None => Err(unacceptable(v)),
    }
}

/// Arguments a replicated queue type (quorum, stream) refuses, as RabbitMQ
/// 3.10 does ("… of queue type rabbit_quorum_queue").
const CLASSIC_ONLY: [&str; 2] = ["x-max-priority", "x-queue-mode"];

impl QueueArgs {
    /// Checks the arguments of a new queue as RabbitMQ 3.10 does; the
    /// error is the reply text after `PRECONDITION_FAILED - `. Arguments
    /// Ferry does not act on yet are not checked.
    pub fn validate(args: &Table, queue: &str, vhost: &str) -> Result<(), String> {
        let a = args;
        let rs = format!("queue '{queue}' in vhost '{vhost}'");
        // The queue type is resolved before the other arguments are checked.
        if let Some(v) = a.get("x-queue-type") {
            check_queue_type(v).map_err(|e| invalid_arg("x-queue-type", &rs, &e))?;
        }
        // rabbit_channel resolves the DLX name before declaring.
        if let Some(v) = a.get("x-dead-letter-exchange") {
            if !is_string(v) {
                return Err(format!(
                    "invalid type '{}' for arg 'x-dead-letter-exchange' in {rs}",
                    ferry_model::args::type_name(v)
                ));
            }
            check_short_arg(v).map_err(|e| invalid_arg("x-dead-letter-exchange", &rs, &e))?;
        }
        // rabbit_amqqueue:declare_args/0 order.
        let has_dlx = a.get("x-dead-letter-exchange").is_some();
        type Check<'f> = &'f dyn Fn(&Value) -> Result<(), String>;
        let dlrk = |v: &Value| -> Result<(), String> {
            if !is_string(v) {
                return Err(unacceptable(v));
            }
            check_short_arg(v)?;
            if has_dlx {
                Ok(())
            } else {
                Err("routing_key_but_no_dlx_defined".into())
            }
        };
        // Ferry honours x-delivery-limit on every queue type; -1 (any
        // negative value) means unlimited, as in RabbitMQ 4.
        let checks: [(&str, Check<'_>); 9] = [
            ("x-expires", &check_expires),
            ("x-message-ttl", &check_ttl),
            ("x-dead-letter-routing-key", &dlrk),
            ("x-max-length", &check_non_neg),
            ("x-max-length-bytes", &check_non_neg),
            ("x-max-priority", &check_max_priority),
            ("x-overflow", &check_overflow),
            ("x-single-active-consumer", &check_bool),
            ("x-delivery-limit", &|v| check_int(v).map(|_| ())),
        ];
        for (key, check) in checks {
            if let Some(v) = a.get(key) {
                check(v).map_err(|e| invalid_arg(key, &rs, &e))?;
            }
        }
        super::retry::RetryPolicy::validate(args, &rs)?;
        if a.get(HOLD_ARG).is_some() {
            return Err(format!(
                "invalid arg '{HOLD_ARG}' for {rs}: \"reserved for delayed exchanges\""
            ));
        }
        let qtype = a.get("x-queue-type").and_then(text).unwrap_or("classic");
        if qtype != "classic" {
            if let Some(key) = CLASSIC_ONLY.iter().find(|k| a.get(k).is_some()) {
                return Err(format!(
                    "invalid arg '{key}' for {rs} of queue type rabbit_{qtype}_queue"
                ));
            }
        }
        Ok(())
    }

    /// `validate`, then what a replicated queue type (quorum, stream)
    /// demands of the declaration itself ([`check_replicated_declaration`]).
    pub fn validate_declaration(spec: &QueueSpec, vhost: &str) -> Result<(), String> {
        Self::validate(&spec.arguments, &spec.name, vhost)?;
        let qtype = spec
            .arguments
            .get("x-queue-type")
            .and_then(text)
            .unwrap_or("classic");
        if qtype == "classic" {
            return Ok(());
        }
        check_replicated_declaration(spec, vhost)
    }

    /// The arguments of a declared queue (validated at declaration; values
    /// that do not parse are ignored, as if absent). `quorum_default` is the
    /// delivery limit of a quorum queue without `x-delivery-limit` (None =
    /// unlimited).
    pub fn parse(args: &Table, quorum_default: Option<u64>) -> QueueArgs {
        let a = args;
        let num = |k: &str| a.get(k).and_then(non_negative);
        let name = |k: &str| a.get(k).and_then(text).map(Arc::from);
        let quorum = a.get("x-queue-type").and_then(text) == Some("quorum");
        let delivery_limit = match a.get("x-delivery-limit").and_then(int) {
            Some(n) => u64::try_from(n).ok(),
            None if quorum => quorum_default,
            None => None,
        };
        QueueArgs {
            max_priority: num("x-max-priority")
                .map(|p| u8::try_from(p.min(u64::from(MAX_PRIORITY))).unwrap_or(MAX_PRIORITY)),
            expires: num("x-expires").filter(|e| *e > 0),
            single_active_consumer: matches!(
                a.get("x-single-active-consumer"),
                Some(Value::Bool(true))
            ),
            delivery_limit,
            quorum,
            retry: super::retry::RetryPolicy::parse(args),
            hold: a.get(HOLD_ARG).is_some(),
            message_ttl: num("x-message-ttl"),
            max_length: num("x-max-length"),
            max_length_bytes: num("x-max-length-bytes"),
            overflow: match a.get("x-overflow").and_then(text) {
                Some("reject-publish") => Overflow::RejectPublish,
                Some("reject-publish-dlx") => Overflow::RejectPublishDlx,
                _ => Overflow::DropHead,
            },
            dead_letter_exchange: name("x-dead-letter-exchange"),
            dead_letter_routing_key: name("x-dead-letter-routing-key"),
        }
    }

    /// Whether the queue needs none of this (the common case, kept off the
    /// hot path entirely).
    pub fn is_plain(&self) -> bool {
        *self == QueueArgs::default()
    }

    /// Priority levels: `x-max-priority` + 1, or 1 for a plain queue.
    pub fn levels(&self) -> usize {
        self.max_priority.map_or(1, |p| usize::from(p) + 1)
    }

    /// Whether deliveries carry an `x-delivery-count` header (quorum
    /// queues, and any queue with a delivery limit or delayed retry).
    pub fn counts_deliveries(&self) -> bool {
        self.quorum || self.delivery_limit.is_some() || self.retry.is_some()
    }

    /// Whether a length limit is set.
    pub fn limited(&self) -> bool {
        self.max_length.is_some() || self.max_length_bytes.is_some()
    }

    /// Whether `ready` messages holding `ready_bytes` body bytes exceed
    /// the limits.
    pub fn over_limit(&self, ready: u64, ready_bytes: u64) -> bool {
        self.max_length.is_some_and(|m| ready > m)
            || self.max_length_bytes.is_some_and(|m| ready_bytes > m)
    }
}

/// The `x-priority` argument of basic.consume (0 without one); the error
/// is RabbitMQ's reply text after `PRECONDITION_FAILED - `.
pub fn consumer_priority(args: &Table, queue: &str, vhost: &str) -> Result<i64, String> {
    match args.get("x-priority") {
        None => Ok(0),
        Some(v) => check_int(v)
            .map(|n| i64::try_from(n).unwrap_or(if n < 0 { i64::MIN } else { i64::MAX }))
            .map_err(|e| {
                invalid_arg(
                    "x-priority",
                    &format!("queue '{queue}' in vhost '{vhost}'"),
                    &e,
                )
            }),
    }
}

/// What a replicated queue type (quorum, stream) demands of a declaration:
/// durable, not exclusive, not auto-delete (RabbitMQ 3.10's texts and
/// order).
pub(crate) fn check_replicated_declaration(spec: &QueueSpec, vhost: &str) -> Result<(), String> {
    let bad = if spec.auto_delete {
        "auto-delete"
    } else if spec.exclusive_owner.is_some() {
        "exclusive-owner"
    } else if !spec.durable {
        "non-durable"
    } else {
        return Ok(());
    };
    Err(format!(
        "invalid property '{bad}' for queue '{}' in vhost '{vhost}'",
        spec.name
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::test_support::{ms as s, mtable as table};

    #[test]
    fn parse_reads_what_the_queue_acts_on() {
        let a = QueueArgs::parse(
            &table(&[
                ("x-message-ttl", Value::I32(100)),
                ("x-max-length", Value::U8(3)),
                ("x-max-length-bytes", Value::I64(1 << 40)),
                ("x-overflow", s("reject-publish-dlx")),
                ("x-dead-letter-exchange", s("")),
                ("x-dead-letter-routing-key", s("dead")),
                ("x-other", s("ignored")),
            ]),
            Some(QUORUM_DELIVERY_LIMIT),
        );
        assert_eq!(a.message_ttl, Some(100));
        assert_eq!(a.max_length, Some(3));
        assert_eq!(a.max_length_bytes, Some(1 << 40));
        assert_eq!(a.overflow, Overflow::RejectPublishDlx);
        assert_eq!(a.dead_letter_exchange.as_deref(), Some(""));
        assert_eq!(a.dead_letter_routing_key.as_deref(), Some("dead"));
        assert!(!a.is_plain() && a.limited());
        assert!(QueueArgs::parse(&table(&[("x-other", s("x"))]), None).is_plain());
        assert!(a.over_limit(4, 0) && !a.over_limit(3, 1 << 40) && a.over_limit(0, (1 << 40) + 1));
    }

    #[test]
    fn dead_letter_names_longer_than_a_short_string_are_refused() {
        let long = "é".repeat(200);
        let check = |items: &[(&str, Value)]| QueueArgs::validate(&table(items), "q", "/");
        assert_eq!(
            check(&[
                ("x-dead-letter-exchange", s("amq.fanout")),
                ("x-dead-letter-routing-key", s(&long)),
            ]),
            Err("invalid arg 'x-dead-letter-routing-key' for queue 'q' in vhost '/': {value_too_long,400}".into())
        );
        assert_eq!(
            check(&[("x-dead-letter-exchange", s(&"x".repeat(256)))]),
            Err("invalid arg 'x-dead-letter-exchange' for queue 'q' in vhost '/': {value_too_long,256}".into())
        );
        let fits = format!("{}a", "é".repeat(127));
        assert_eq!(
            check(&[
                ("x-dead-letter-exchange", s("amq.fanout")),
                ("x-dead-letter-routing-key", s(&fits)),
            ]),
            Ok(())
        );
    }

    #[test]
    fn the_quorum_default_limit_applies_only_without_x_delivery_limit() {
        let limit = |items: &[(&str, Value)], default| {
            QueueArgs::parse(&table(items), default).delivery_limit
        };
        let quorum = || ("x-queue-type", s("quorum"));
        assert_eq!(limit(&[quorum()], Some(2)), Some(2));
        assert_eq!(limit(&[quorum()], None), None);
        assert_eq!(limit(&[], Some(2)), None, "classic queues have no default");
        let own = ("x-delivery-limit", Value::I32(7));
        assert_eq!(limit(&[quorum(), own], None), Some(7));
        let unlimited = ("x-delivery-limit", Value::I32(-1));
        assert_eq!(limit(&[quorum(), unlimited], Some(2)), None);
    }

    #[test]
    fn validation_texts_are_rabbitmq_s() {
        let check = |items: &[(&str, Value)]| QueueArgs::validate(&table(items), "q", "/");
        let pre = "invalid arg";
        assert_eq!(
            check(&[("x-message-ttl", Value::I32(-1))]).unwrap_err(),
            format!("{pre} 'x-message-ttl' for queue 'q' in vhost '/': {{value_negative,-1}}")
        );
        assert_eq!(
            check(&[("x-message-ttl", Value::I64(315_360_000_001))]).unwrap_err(),
            format!(
                "{pre} 'x-message-ttl' for queue 'q' in vhost '/': {{value_too_large,315360000001}}"
            )
        );
        assert_eq!(
            check(&[("x-max-length-bytes", Value::Bool(true))]).unwrap_err(),
            format!(
                "{pre} 'x-max-length-bytes' for queue 'q' in vhost '/': \"expected integer, got bool\""
            )
        );
        assert_eq!(
            check(&[("x-overflow", s("nope"))]).unwrap_err(),
            format!("{pre} 'x-overflow' for queue 'q' in vhost '/': invalid_overflow")
        );
        assert_eq!(
            check(&[("x-dead-letter-routing-key", s("k"))]).unwrap_err(),
            format!(
                "{pre} 'x-dead-letter-routing-key' for queue 'q' in vhost '/': routing_key_but_no_dlx_defined"
            )
        );
        assert_eq!(
            check(&[
                ("x-dead-letter-exchange", Value::I32(5)),
                ("x-message-ttl", s("a"))
            ])
            .unwrap_err(),
            "invalid type 'signedint' for arg 'x-dead-letter-exchange' in queue 'q' in vhost '/'"
        );
        assert!(check(&[
            ("x-message-ttl", Value::I64(315_360_000_000)),
            ("x-max-length", Value::I32(0)),
            ("x-overflow", s("drop-head")),
            ("x-dead-letter-exchange", s("")),
            ("x-dead-letter-routing-key", s("k")),
        ])
        .is_ok());
    }
}
