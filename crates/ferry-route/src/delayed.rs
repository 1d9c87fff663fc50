//! The `x-delayed-message` exchange type, as the
//! rabbitmq-delayed-message-exchange plugin defines it: the pure rules.
//!
//! * exchange.declare needs `x-delayed-type`, the type whose routing rules
//!   the exchange uses (direct, fanout, topic, headers); without a valid one
//!   the declare fails with 406 and the plugin's text.
//! * A publish whose `x-delay` header is a delay in ms greater than 0 (and
//!   at most 2^32 - 1, the plugin's Erlang timer limit) is held; anything
//!   else (no header, 0, negative, too large, not a number) is routed at
//!   once. Like the plugin, integers of any width, numeric strings and
//!   floats (truncated) are read as delays.
//! * When a held message is due it is routed with the delayed type's rules
//!   over the exchange's bindings at that time, its `x-delay` header set to
//!   minus the delay (signed 32-bit when it fits), so it is not delayed
//!   again by a later delayed exchange and consumers can tell.
//!
//! Holding (durably) is the vhost's job: `delayed_store`.

use super::kind::ExchangeKind;
use ferry_model::args::{int, text};
use ferry_model::{Table, Value};

/// The exchange type's wire name.
pub const TYPE_NAME: &str = "x-delayed-message";
/// The argument naming the routing type.
pub const DELAYED_TYPE_ARG: &str = "x-delayed-type";
/// The message header carrying the delay (ms).
pub const DELAY_HEADER: &str = "x-delay";
/// The longest delay the plugin holds (its Erlang timer's limit); longer
/// ones are routed at once, as there.
pub const MAX_DELAY_MS: u64 = 4_294_967_295;

/// The text of the 406 for a missing or unknown `x-delayed-type`.
pub const BAD_DELAYED_TYPE: &str =
    "Invalid argument, 'x-delayed-type' must be an existing exchange type";

/// The routing type of a delayed exchange declared with `arguments`; the
/// error is the 406 text. `x-delayed-type` may not itself be
/// `x-delayed-message`.
pub fn delayed_type(arguments: &Table) -> Result<ExchangeKind, &'static str> {
    let name = arguments.get(DELAYED_TYPE_ARG).and_then(text);
    match name.and_then(ExchangeKind::parse) {
        Some(ExchangeKind::DelayedMessage) | None => Err(BAD_DELAYED_TYPE),
        Some(k) => Ok(k),
    }
}

/// The kind whose rules route for an exchange of `kind` with `arguments`:
/// itself, or a delayed exchange's `x-delayed-type` (direct if missing,
/// which a validated declaration never is).
pub fn routing_kind(kind: ExchangeKind, arguments: &Table) -> ExchangeKind {
    match kind {
        ExchangeKind::DelayedMessage => delayed_type(arguments).unwrap_or(ExchangeKind::Direct),
        k => k,
    }
}

fn delay_value(v: &Value) -> Option<i128> {
    if let Some(n) = int(v) {
        return Some(n);
    }
    match v {
        Value::F32(x) => float_ms(f64::from(*x)),
        Value::F64(x) => float_ms(*x),
        // The plugin also takes the delay as a string of digits.
        v => v.as_text()?.trim().parse().ok(),
    }
}

fn float_ms(x: f64) -> Option<i128> {
    // Erlang's trunc; NaN and infinities are not delays. The range check
    // makes the cast exact.
    (x.is_finite() && x.abs() < 1e30).then(|| x.trunc() as i128)
}

/// The delay a message with these headers asks for: Some(ms) when it is
/// to be held (0 < ms <= 2^32 - 1), None when it is routed at once.
pub fn delay_of(headers: &Table) -> Option<u64> {
    let d = delay_value(headers.get(DELAY_HEADER)?)?;
    (d > 0 && d <= i128::from(MAX_DELAY_MS))
        .then(|| u64::try_from(d).ok())
        .flatten()
}

/// The headers a held message is routed with when due: `x-delay` set to
/// minus its delay (the plugin's `swap_delay_header`). Returns whether
/// anything changed.
pub fn negate_delay(headers: &mut Table) -> bool {
    let Some(d) = delay_of(headers) else {
        return false;
    };
    let neg = -i128::from(d);
    let v = match i32::try_from(neg) {
        Ok(n) => Value::I32(n),
        Err(_) => Value::I64(i64::try_from(neg).unwrap_or(i64::MIN)),
    };
    headers.insert(DELAY_HEADER, v);
    true
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn args(k: &str, v: Value) -> Table {
        [(k, v)].into_iter().collect()
    }

    #[test]
    fn delayed_type_must_name_a_routing_type() {
        let s = Value::str;
        let with = args;
        for (k, want) in [
            ("direct", ExchangeKind::Direct),
            ("fanout", ExchangeKind::Fanout),
            ("topic", ExchangeKind::Topic),
            ("headers", ExchangeKind::Headers),
        ] {
            assert_eq!(delayed_type(&with(DELAYED_TYPE_ARG, s(k))), Ok(want));
        }
        for bad in [
            Table::new(),
            with(DELAYED_TYPE_ARG, s("nope")),
            with(DELAYED_TYPE_ARG, s(TYPE_NAME)),
            with(DELAYED_TYPE_ARG, Value::I32(1)),
        ] {
            assert_eq!(delayed_type(&bad), Err(BAD_DELAYED_TYPE));
        }
        assert_eq!(
            routing_kind(
                ExchangeKind::DelayedMessage,
                &with(DELAYED_TYPE_ARG, s("topic"))
            ),
            ExchangeKind::Topic
        );
        assert_eq!(
            routing_kind(ExchangeKind::Fanout, &Table::new()),
            ExchangeKind::Fanout
        );
    }

    #[test]
    fn delays_are_read_like_the_plugin() {
        let one = |v: Value| -> Table { [(DELAY_HEADER, v)].into_iter().collect() };
        let d = |v: Value| delay_of(&one(v));
        assert_eq!(d(Value::I32(5000)), Some(5000));
        assert_eq!(d(Value::U8(7)), Some(7));
        assert_eq!(d(Value::I64(4_294_967_295)), Some(4_294_967_295));
        assert_eq!(d(Value::I64(4_294_967_296)), None);
        assert_eq!(d(Value::I32(0)), None);
        assert_eq!(d(Value::I32(-5)), None);
        assert_eq!(d(Value::F64(1500.9)), Some(1500));
        assert_eq!(d(Value::F64(f64::NAN)), None);
        assert_eq!(d(Value::str("250")), Some(250));
        assert_eq!(d(Value::str("soon")), None);
        assert_eq!(d(Value::Bool(true)), None);
        assert_eq!(d(Value::Timestamp(5)), None);
        assert_eq!(delay_of(&Table::new()), None);
    }

    #[test]
    fn release_negates_the_delay() {
        let one = |v: Value| -> Table { [(DELAY_HEADER, v)].into_iter().collect() };
        let mut h = one(Value::I64(300));
        assert!(negate_delay(&mut h));
        assert_eq!(h.get(DELAY_HEADER), Some(&Value::I32(-300)));
        // Negated, it is never held again.
        assert_eq!(delay_of(&h), None);
        assert!(!negate_delay(&mut h));
        let mut h = one(Value::I64(4_000_000_000));
        assert!(negate_delay(&mut h));
        assert_eq!(h.get(DELAY_HEADER), Some(&Value::I64(-4_000_000_000)));
    }
}
