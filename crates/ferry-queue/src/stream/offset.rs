//! Where a stream consumer starts: basic.consume's `x-stream-offset`.

use super::args::parse_duration;
use ferry_model::args::text;
use ferry_model::{Table, Value};

/// A consumer's starting point, as requested.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OffsetSpec {
    /// The oldest message still retained.
    First,
    /// The newest message (RabbitMQ: the newest chunk; Ferry has no chunks).
    Last,
    /// Only messages published from now on (the default).
    #[default]
    Next,
    /// This offset; below the first retained one means the first, past
    /// the end means next (RabbitMQ's clamping).
    Offset(u64),
    /// The first message published at or after this time (ms since the
    /// epoch): an AMQP timestamp (seconds) or now minus an interval ("1h").
    Timestamp(u64),
}

impl OffsetSpec {
    /// Reads `x-stream-offset` from basic.consume's arguments; `now_ms`
    /// anchors an interval. The error is the reply text after
    /// `PRECONDITION_FAILED - ` (RabbitMQ 3.10 crashes the channel's
    /// connection with 541 on such values instead).
    pub fn parse(
        args: &Table,
        now_ms: u64,
        queue: &str,
        vhost: &str,
    ) -> Result<OffsetSpec, String> {
        let Some(v) = args.get("x-stream-offset") else {
            return Ok(OffsetSpec::Next);
        };
        let bad = |why: String| {
            format!("invalid arg 'x-stream-offset' for queue '{queue}' in vhost '{vhost}': {why}")
        };
        use Value as V;
        let signed: Option<i128> = match v {
            V::I8(x) => Some(i128::from(*x)),
            V::U8(x) => Some(i128::from(*x)),
            V::I16(x) => Some(i128::from(*x)),
            V::U16(x) => Some(i128::from(*x)),
            V::I32(x) => Some(i128::from(*x)),
            V::U32(x) => Some(i128::from(*x)),
            V::I64(x) => Some(i128::from(*x)),
            _ => None,
        };
        if let Some(n) = signed {
            // RabbitMQ starts a negative offset at the first message.
            return Ok(OffsetSpec::Offset(u64::try_from(n).unwrap_or(0)));
        }
        if let V::Timestamp(secs) = v {
            return Ok(OffsetSpec::Timestamp(secs.saturating_mul(1000)));
        }
        match text(v) {
            Some("first") => Ok(OffsetSpec::First),
            Some("last") => Ok(OffsetSpec::Last),
            Some("next") => Ok(OffsetSpec::Next),
            Some(s) => match parse_duration(s) {
                Some(ms) => Ok(OffsetSpec::Timestamp(now_ms.saturating_sub(ms))),
                None => Err(bad(format!("invalid offset '{s}'"))),
            },
            None => Err(bad(format!(
                "{{unacceptable_type,{}}}",
                ferry_model::args::type_name(v)
            ))),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn spec(v: Option<Value>) -> Result<OffsetSpec, String> {
        let mut t = Table::new();
        if let Some(v) = v {
            t.insert("x-stream-offset", v);
        }
        OffsetSpec::parse(&t, 10_000_000, "s", "/")
    }

    fn s(x: &str) -> Option<Value> {
        Some(Value::str(x))
    }

    #[test]
    fn every_form_rabbitmq_accepts() {
        assert_eq!(spec(None).unwrap(), OffsetSpec::Next);
        assert_eq!(spec(s("first")).unwrap(), OffsetSpec::First);
        assert_eq!(spec(s("last")).unwrap(), OffsetSpec::Last);
        assert_eq!(spec(s("next")).unwrap(), OffsetSpec::Next);
        assert_eq!(spec(Some(Value::I64(42))).unwrap(), OffsetSpec::Offset(42));
        assert_eq!(spec(Some(Value::I8(-1))).unwrap(), OffsetSpec::Offset(0));
        assert_eq!(
            spec(Some(Value::Timestamp(1234))).unwrap(),
            OffsetSpec::Timestamp(1_234_000)
        );
        assert_eq!(
            spec(s("1h")).unwrap(),
            OffsetSpec::Timestamp(10_000_000 - 3_600_000)
        );
    }

    #[test]
    fn garbage_is_refused_with_a_text() {
        assert_eq!(
            spec(s("bogus")).unwrap_err(),
            "invalid arg 'x-stream-offset' for queue 's' in vhost '/': invalid offset 'bogus'"
        );
        assert_eq!(
            spec(Some(Value::Bool(true))).unwrap_err(),
            "invalid arg 'x-stream-offset' for queue 's' in vhost '/': {unacceptable_type,bool}"
        );
    }
}
