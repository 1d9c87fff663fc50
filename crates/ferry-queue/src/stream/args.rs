//! The arguments of a stream (`x-max-age`, `x-max-length-bytes`,
//! `x-stream-max-segment-size-bytes`) and the arguments a stream refuses,
//! checked with RabbitMQ 3.10's texts; RabbitMQ's duration strings ("7D").

use crate::queue::QueueSpec;
use ferry_model::args::{self as xargs, invalid_arg, text, unacceptable};
use ferry_model::{Table, Value};

/// Milliseconds per unit of RabbitMQ's duration strings (`rabbit_amqqueue:
/// check_max_age`: a month is 30 days, a year 365).
const UNITS: [(char, u64); 6] = [
    ('Y', 365 * 86_400_000),
    ('M', 30 * 86_400_000),
    ('D', 86_400_000),
    ('h', 3_600_000),
    ('m', 60_000),
    ('s', 1_000),
];

/// Smallest segment a stream may ask for: a header and a few small records.
pub const MIN_SEGMENT_BYTES: u64 = 4096;

/// Queue arguments RabbitMQ checks that a stream does not support
/// ("invalid arg … of queue type rabbit_stream_queue"); their values are
/// not looked at.
const NOT_FOR_STREAMS: [&str; 14] = [
    "x-max-priority",
    "x-queue-mode",
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-length",
    "x-max-in-memory-length",
    "x-max-in-memory-bytes",
    "x-overflow",
    "x-single-active-consumer",
    "x-quorum-initial-group-size",
    "x-delivery-limit",
    "x-queue-master-locator",
];

type Check = fn(&Value) -> Result<(), String>;

/// What a stream acts on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamArgs {
    /// `x-max-age` in ms: whole segments older than this are deleted.
    pub max_age_ms: Option<u64>,
    /// `x-max-length-bytes`: oldest segments are deleted while the stream
    /// is larger.
    pub max_bytes: Option<u64>,
    /// `x-stream-max-segment-size-bytes`.
    pub segment_bytes: Option<u64>,
}

/// Parses RabbitMQ's duration string: a positive integer and one unit of
/// Y, M, D, h, m, s. `None` when it is not one.
pub fn parse_duration(s: &str) -> Option<u64> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (num, unit) = s.split_at(digits);
    let mut chars = unit.chars();
    let (Some(u), None) = (chars.next(), chars.next()) else {
        return None;
    };
    let per = UNITS.iter().find(|(c, _)| *c == u)?.1;
    match num.parse::<u64>().ok()? {
        0 => None,
        n => Some(n.saturating_mul(per)),
    }
}

/// An integer argument. Unlike RabbitMQ's `check_int_arg` (and the queue
/// arguments), a stream's integer arguments also accept a timestamp.
fn int(v: &Value) -> Option<i128> {
    match v {
        Value::Timestamp(x) => Some(i128::from(*x)),
        v => xargs::int(v),
    }
}

fn check_max_age(v: &Value) -> Result<(), String> {
    match text(v) {
        Some(s) if parse_duration(s).is_some() => Ok(()),
        // RabbitMQ 3.10 crashes (541) on "" and "-1h"; Ferry refuses them
        // like every other bad duration.
        Some(_) => Err("invalid_max_age".into()),
        None => Err(unacceptable(v)),
    }
}

fn check_non_neg(v: &Value) -> Result<(), String> {
    match int(v) {
        Some(n) if n < 0 => Err(format!("{{value_negative,{n}}}")),
        Some(_) => Ok(()),
        None => xargs::check_int(v).map(|_| ()),
    }
}

impl StreamArgs {
    /// Whether the arguments declare a stream.
    pub fn is_stream(args: &Table) -> bool {
        args.get("x-queue-type").and_then(text) == Some("stream")
    }

    /// Checks the declaration of a stream in RabbitMQ 3.10's order: the
    /// values of the arguments streams support, then arguments they do not
    /// (whatever their value), then durable / exclusive / auto-delete. The
    /// error is the text after `PRECONDITION_FAILED - `.
    pub fn validate_declaration(spec: &QueueSpec, vhost: &str) -> Result<(), String> {
        Self::validate(&spec.arguments, &spec.name, vhost)?;
        crate::queue::args::check_replicated_declaration(spec, vhost)
    }

    /// The argument checks of `validate_declaration`.
    pub fn validate(args: &Table, queue: &str, vhost: &str) -> Result<(), String> {
        let a = args;
        let rs = format!("queue '{queue}' in vhost '{vhost}'");
        let checks: [(&str, Check); 3] = [
            ("x-max-length-bytes", check_non_neg),
            ("x-max-age", check_max_age),
            ("x-stream-max-segment-size-bytes", check_non_neg),
        ];
        for (key, check) in checks {
            if let Some(v) = a.get(key) {
                check(v).map_err(|e| invalid_arg(key, &rs, &e))?;
            }
        }
        // The first in key order, as RabbitMQ's sorted table has them.
        let refused = ferry_model::args::sorted(a)
            .into_iter()
            .map(|(k, _)| k)
            .find(|k| NOT_FOR_STREAMS.contains(&&***k));
        if let Some(key) = refused {
            return Err(format!(
                "invalid arg '{key}' for {rs} of queue type rabbit_stream_queue"
            ));
        }
        Ok(())
    }

    /// The arguments of a declared (validated) stream.
    pub fn parse(args: &Table) -> StreamArgs {
        let a = args;
        let num = |k: &str| a.get(k).and_then(int).and_then(|n| u64::try_from(n).ok());
        StreamArgs {
            max_age_ms: a.get("x-max-age").and_then(text).and_then(parse_duration),
            max_bytes: num("x-max-length-bytes"),
            segment_bytes: num("x-stream-max-segment-size-bytes")
                .filter(|n| *n > 0)
                .map(|n| n.clamp(MIN_SEGMENT_BYTES, u64::from(u32::MAX))),
        }
    }

    /// Whether segments are ever deleted.
    pub fn has_retention(&self) -> bool {
        self.max_age_ms.is_some() || self.max_bytes.is_some()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::test_support::{ms as s, mtable as table};

    #[test]
    fn durations_are_rabbitmq_s() {
        assert_eq!(parse_duration("7D"), Some(7 * 86_400_000));
        assert_eq!(parse_duration("1Y"), Some(365 * 86_400_000));
        assert_eq!(parse_duration("2M"), Some(60 * 86_400_000));
        assert_eq!(parse_duration("90s"), Some(90_000));
        assert_eq!(parse_duration("5m"), Some(300_000));
        assert_eq!(parse_duration("1h"), Some(3_600_000));
        for bad in ["0D", "10x", "1.5h", "1h2m", "", "-1h", "h", "1", "1d"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn validation_texts_match_rabbitmq() {
        let check = |items: &[(&str, Value)]| StreamArgs::validate(&table(items), "s", "/");
        let pre = "invalid arg";
        assert_eq!(
            check(&[("x-max-age", s("10x"))]).unwrap_err(),
            format!("{pre} 'x-max-age' for queue 's' in vhost '/': invalid_max_age")
        );
        assert_eq!(
            check(&[("x-max-age", Value::I32(5))]).unwrap_err(),
            format!(
                "{pre} 'x-max-age' for queue 's' in vhost '/': {{unacceptable_type,signedint}}"
            )
        );
        assert_eq!(
            check(&[("x-stream-max-segment-size-bytes", Value::I32(-5))]).unwrap_err(),
            format!(
                "{pre} 'x-stream-max-segment-size-bytes' for queue 's' in vhost '/': {{value_negative,-5}}"
            )
        );
        assert_eq!(
            check(&[("x-stream-max-segment-size-bytes", s("x"))]).unwrap_err(),
            format!(
                "{pre} 'x-stream-max-segment-size-bytes' for queue 's' in vhost '/': \"expected integer, got longstr\""
            )
        );
        assert_eq!(
            check(&[("x-message-ttl", Value::I32(5))]).unwrap_err(),
            format!("{pre} 'x-message-ttl' for queue 's' in vhost '/' of queue type rabbit_stream_queue")
        );
        // Several refused: the first in key order is named, whatever the
        // order given (RabbitMQ's table is sorted).
        assert_eq!(
            check(&[
                ("x-message-ttl", Value::I32(5)),
                ("x-expires", Value::I32(5))
            ])
            .unwrap_err(),
            format!(
                "{pre} 'x-expires' for queue 's' in vhost '/' of queue type rabbit_stream_queue"
            )
        );
        assert!(check(&[
            ("x-max-age", s("7D")),
            ("x-max-length-bytes", Value::I32(0)),
            ("x-stream-max-segment-size-bytes", Value::I32(0)),
            ("x-initial-cluster-size", Value::I32(1)),
        ])
        .is_ok());
    }

    #[test]
    fn parse_clamps_segment_size() {
        let a = StreamArgs::parse(&table(&[
            ("x-max-age", s("1h")),
            ("x-max-length-bytes", Value::I64(1000)),
            ("x-stream-max-segment-size-bytes", Value::I32(10)),
        ]));
        assert_eq!(a.max_age_ms, Some(3_600_000));
        assert_eq!(a.max_bytes, Some(1000));
        assert_eq!(a.segment_bytes, Some(MIN_SEGMENT_BYTES));
        assert!(a.has_retention());
        assert!(!StreamArgs::default().has_retention());
    }
}
