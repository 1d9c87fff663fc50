//! The `x-…` queue arguments a queue acts on: message TTL, length limits
//! with their overflow behaviour, and the dead-letter target. Checked at
//! declaration with RabbitMQ 3.10's rules and error texts; parsed once when
//! the queue opens (arguments never change afterwards).

use amq_protocol_types::{AMQPValue, FieldTable};
use std::sync::Arc;

/// The largest TTL / expiration RabbitMQ accepts: ten years in ms.
pub const MAX_EXPIRY_MS: u64 = 315_360_000_000;

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
}

fn int_value(v: &AMQPValue) -> Option<i128> {
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

fn str_value(v: &AMQPValue) -> Option<&str> {
    match v {
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
        AMQPValue::ShortString(s) => Some(s.as_str()),
        _ => None,
    }
}

fn is_longstr(v: &AMQPValue) -> bool {
    matches!(v, AMQPValue::LongString(_) | AMQPValue::ShortString(_))
}

fn non_negative(v: &AMQPValue) -> Option<u64> {
    int_value(v).and_then(|n| u64::try_from(n).ok())
}

/// RabbitMQ's `check_int_arg`: the reason term as `~p` prints it.
fn check_int(v: &AMQPValue) -> Result<i128, String> {
    int_value(v).ok_or_else(|| {
        format!(
            "\"expected integer, got {}\"",
            crate::exchange::type_name(v)
        )
    })
}

fn check_non_neg(v: &AMQPValue) -> Result<(), String> {
    match check_int(v)? {
        n if n < 0 => Err(format!("{{value_negative,{n}}}")),
        _ => Ok(()),
    }
}

fn check_ttl(v: &AMQPValue) -> Result<(), String> {
    match check_int(v)? {
        n if n > i128::from(MAX_EXPIRY_MS) => Err(format!("{{value_too_large,{n}}}")),
        n if n < 0 => Err(format!("{{value_negative,{n}}}")),
        _ => Ok(()),
    }
}

fn check_overflow(v: &AMQPValue) -> Result<(), String> {
    match str_value(v) {
        Some("drop-head" | "reject-publish" | "reject-publish-dlx") => Ok(()),
        _ if is_longstr(v) => Err("invalid_overflow".into()),
        _ => Err(unacceptable(v)),
    }
}

fn unacceptable(v: &AMQPValue) -> String {
    format!("{{unacceptable_type,{}}}", crate::exchange::type_name(v))
}

impl QueueArgs {
    /// Checks the arguments of a new queue as RabbitMQ 3.10 does; the
    /// error is the reply text after `PRECONDITION_FAILED - `. Arguments
    /// Ferry does not act on yet are not checked.
    pub fn validate(args: &FieldTable, queue: &str, vhost: &str) -> Result<(), String> {
        let a = args.inner();
        let rs = format!("queue '{queue}' in vhost '{vhost}'");
        // rabbit_channel resolves the DLX name before declaring.
        if let Some(v) = a.get("x-dead-letter-exchange") {
            if !is_longstr(v) {
                return Err(format!(
                    "invalid type '{}' for arg 'x-dead-letter-exchange' in {rs}",
                    crate::exchange::type_name(v)
                ));
            }
        }
        // rabbit_amqqueue:declare_args/0 order.
        let has_dlx = a.contains_key("x-dead-letter-exchange");
        type Check<'f> = &'f dyn Fn(&AMQPValue) -> Result<(), String>;
        let dlrk = |v: &AMQPValue| -> Result<(), String> {
            if !is_longstr(v) {
                return Err(unacceptable(v));
            }
            if has_dlx {
                Ok(())
            } else {
                Err("routing_key_but_no_dlx_defined".into())
            }
        };
        let checks: [(&str, Check<'_>); 5] = [
            ("x-message-ttl", &check_ttl),
            ("x-dead-letter-routing-key", &dlrk),
            ("x-max-length", &check_non_neg),
            ("x-max-length-bytes", &check_non_neg),
            ("x-overflow", &check_overflow),
        ];
        for (key, check) in checks {
            if let Some(v) = a.get(key) {
                check(v).map_err(|e| format!("invalid arg '{key}' for {rs}: {e}"))?;
            }
        }
        Ok(())
    }

    /// The arguments of a declared queue (validated at declaration; values
    /// that do not parse are ignored, as if absent).
    pub fn parse(args: &FieldTable) -> QueueArgs {
        let a = args.inner();
        let num = |k: &str| a.get(k).and_then(non_negative);
        let text = |k: &str| a.get(k).and_then(str_value).map(Arc::from);
        QueueArgs {
            message_ttl: num("x-message-ttl"),
            max_length: num("x-max-length"),
            max_length_bytes: num("x-max-length-bytes"),
            overflow: match a.get("x-overflow").and_then(str_value) {
                Some("reject-publish") => Overflow::RejectPublish,
                Some("reject-publish-dlx") => Overflow::RejectPublishDlx,
                _ => Overflow::DropHead,
            },
            dead_letter_exchange: text("x-dead-letter-exchange"),
            dead_letter_routing_key: text("x-dead-letter-routing-key"),
        }
    }

    /// Whether the queue needs none of this (the common case, kept off the
    /// hot path entirely).
    pub fn is_plain(&self) -> bool {
        *self == QueueArgs::default()
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use amq_protocol_types::LongString;

    fn table(items: &[(&str, AMQPValue)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in items {
            t.insert((*k).into(), v.clone());
        }
        t
    }

    fn s(x: &str) -> AMQPValue {
        AMQPValue::LongString(LongString::from(x))
    }

    #[test]
    fn parse_reads_what_the_queue_acts_on() {
        let a = QueueArgs::parse(&table(&[
            ("x-message-ttl", AMQPValue::LongInt(100)),
            ("x-max-length", AMQPValue::ShortShortUInt(3)),
            ("x-max-length-bytes", AMQPValue::LongLongInt(1 << 40)),
            ("x-overflow", s("reject-publish-dlx")),
            ("x-dead-letter-exchange", s("")),
            ("x-dead-letter-routing-key", s("dead")),
            ("x-other", s("ignored")),
        ]));
        assert_eq!(a.message_ttl, Some(100));
        assert_eq!(a.max_length, Some(3));
        assert_eq!(a.max_length_bytes, Some(1 << 40));
        assert_eq!(a.overflow, Overflow::RejectPublishDlx);
        assert_eq!(a.dead_letter_exchange.as_deref(), Some(""));
        assert_eq!(a.dead_letter_routing_key.as_deref(), Some("dead"));
        assert!(!a.is_plain() && a.limited());
        assert!(QueueArgs::parse(&table(&[("x-other", s("x"))])).is_plain());
        assert!(a.over_limit(4, 0) && !a.over_limit(3, 1 << 40) && a.over_limit(0, (1 << 40) + 1));
    }

    #[test]
    fn validation_texts_are_rabbitmq_s() {
        let check = |items: &[(&str, AMQPValue)]| QueueArgs::validate(&table(items), "q", "/");
        let pre = "invalid arg";
        assert_eq!(
            check(&[("x-message-ttl", AMQPValue::LongInt(-1))]).unwrap_err(),
            format!("{pre} 'x-message-ttl' for queue 'q' in vhost '/': {{value_negative,-1}}")
        );
        assert_eq!(
            check(&[("x-message-ttl", AMQPValue::LongLongInt(315_360_000_001))]).unwrap_err(),
            format!(
                "{pre} 'x-message-ttl' for queue 'q' in vhost '/': {{value_too_large,315360000001}}"
            )
        );
        assert_eq!(
            check(&[("x-max-length-bytes", AMQPValue::Boolean(true))]).unwrap_err(),
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
                ("x-dead-letter-exchange", AMQPValue::LongInt(5)),
                ("x-message-ttl", s("a"))
            ])
            .unwrap_err(),
            "invalid type 'signedint' for arg 'x-dead-letter-exchange' in queue 'q' in vhost '/'"
        );
        assert!(check(&[
            ("x-message-ttl", AMQPValue::LongLongInt(315_360_000_000)),
            ("x-max-length", AMQPValue::LongInt(0)),
            ("x-overflow", s("drop-head")),
            ("x-dead-letter-exchange", s("")),
            ("x-dead-letter-routing-key", s("k")),
        ])
        .is_ok());
    }
}
