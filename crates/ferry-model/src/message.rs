//! A message as the core stores and delivers it.
//!
//! Properties are a `ferry-model` props blob (docs/message-model.md): the
//! protocol-neutral form every front end converts to when a message is
//! published and from when it is delivered (AMQP round-trips byte for
//! byte). The core reads and edits it itself (`ferry_queue::props`); the front
//! end also hands over the facts it parsed anyway (persistence, the
//! expiration in ms, the BCC keys) and the headers table for routing.

use bytes::Bytes;
use std::sync::Arc;

/// The largest TTL / expiration RabbitMQ accepts: ten years in ms.
pub const MAX_EXPIRY_MS: u64 = 315_360_000_000;

/// An immutable published message, shared by every queue it was routed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Exchange it was published to.
    pub exchange: Arc<str>,
    /// Routing key it was published with.
    pub routing_key: Arc<str>,
    /// The properties as a props blob (`ferry_model::props`; read and
    /// edited through `ferry_queue::props`).
    pub properties: Bytes,
    /// The body.
    pub body: Bytes,
    /// Delivery mode 2: survives a restart when stored in a durable queue.
    pub persistent: bool,
    /// The `expiration` property as parsed by the front end (ms; the
    /// per-message TTL). Queues turn it into an absolute deadline when the
    /// message is enqueued; it is not stored (the deadline is).
    pub expiration_ms: Option<u64>,
    /// The keys of the `BCC` header it was published with (the header
    /// itself is stripped before storage). RabbitMQ keeps them with the
    /// message (its `routing_keys`) and routes a dead letter without a
    /// dead-letter routing key, or a delayed message on release, by them
    /// too. Empty for nearly every message (no allocation).
    pub bcc: Vec<Arc<str>>,
}

impl Message {
    /// Bytes this message accounts for in memory and on disk (approximate).
    pub fn weight(&self) -> usize {
        self.body.len()
            + self.properties.len()
            + self.routing_key.len()
            + self.exchange.len()
            + self.bcc.iter().map(|k| k.len() + 4).sum::<usize>()
            + 64
    }
}

/// Parses the `expiration` property as RabbitMQ does (Erlang's
/// `string:to_integer`, then `rabbit_misc:check_expiry`): an optional sign
/// and digits, nothing after them, not negative, at most ten years
/// (315360000000 ms). The error is RabbitMQ's reason term, e.g.
/// `no_integer`, `{value_negative,-1}`, `{leftover_string,"s"}`,
/// `{value_too_large,315360000001}`.
pub fn parse_expiration(s: &str) -> Result<u64, String> {
    let bytes = s.as_bytes();
    let sign_len = usize::from(matches!(bytes.first(), Some(b'+' | b'-')));
    let digits = bytes[sign_len..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    if digits == 0 {
        return Err("no_integer".into());
    }
    let (num, rest) = s.split_at(sign_len + digits);
    if !rest.is_empty() {
        return Err(format!("{{leftover_string,\"{rest}\"}}"));
    }
    let negative = bytes.first() == Some(&b'-');
    let magnitude = num[sign_len..].trim_start_matches('0');
    if negative && !magnitude.is_empty() {
        return Err(format!("{{value_negative,-{magnitude}}}"));
    }
    let magnitude = if magnitude.is_empty() { "0" } else { magnitude };
    match magnitude.parse::<u64>() {
        Ok(n) if n <= MAX_EXPIRY_MS => Ok(n),
        _ => Err(format!("{{value_too_large,{magnitude}}}")),
    }
}

/// RabbitMQ's text for a refused `expiration`: `invalid expiration '~s':
/// ~p`. Erlang's `~p` breaks a tuple that would pass column 78 after its
/// first element, indenting the rest under it; this does the same for the
/// two-element reason terms `parse_expiration` returns.
pub fn invalid_expiration_text(value: &str, reason: &str) -> String {
    let prefix = format!("invalid expiration '{value}': ");
    let col = prefix.chars().count();
    let fits = col + reason.chars().count() <= 78;
    match reason.split_once(',') {
        Some((first, rest)) if !fits && reason.starts_with('{') => {
            format!("{prefix}{first},\n{}{rest}", " ".repeat(col + 1))
        }
        _ => format!("{prefix}{reason}"),
    }
}

#[cfg(test)]
mod tests {
    use super::{invalid_expiration_text, parse_expiration};

    #[test]
    fn expiration_parses_like_rabbitmq() {
        assert_eq!(parse_expiration("0"), Ok(0));
        assert_eq!(parse_expiration("600000"), Ok(600_000));
        assert_eq!(parse_expiration("+5"), Ok(5));
        assert_eq!(parse_expiration("-0"), Ok(0));
        assert_eq!(parse_expiration("soon"), Err("no_integer".to_string()));
        assert_eq!(parse_expiration(""), Err("no_integer".to_string()));
        assert_eq!(
            parse_expiration("-1"),
            Err("{value_negative,-1}".to_string())
        );
        assert_eq!(
            parse_expiration("10s"),
            Err("{leftover_string,\"s\"}".to_string())
        );
        assert_eq!(parse_expiration("315360000000"), Ok(315_360_000_000));
        assert_eq!(
            parse_expiration("315360000001"),
            Err("{value_too_large,315360000001}".to_string())
        );
        assert_eq!(
            parse_expiration("0099999999999999999999999"),
            Err("{value_too_large,99999999999999999999999}".to_string())
        );
    }

    /// Texts RabbitMQ 3.10.8 sent (tests/python/test_queue_features.py).
    #[test]
    fn refusal_text_wraps_like_erlang_pretty_print() {
        let text =
            |v: &str| invalid_expiration_text(v, &parse_expiration(v).err().unwrap_or_default());
        assert_eq!(
            text("100000000000000000"),
            "invalid expiration '100000000000000000': {value_too_large,100000000000000000}"
        );
        assert_eq!(
            text("0111111111111111111"),
            "invalid expiration '0111111111111111111': {value_too_large,111111111111111111}"
        );
        assert_eq!(
            text("1000000000000000000"),
            format!(
                "invalid expiration '1000000000000000000': {{value_too_large,\n{}1000000000000000000}}",
                " ".repeat(43)
            )
        );
        assert_eq!(
            text("-111111111111111111"),
            "invalid expiration '-111111111111111111': {value_negative,-111111111111111111}"
        );
        assert_eq!(text("soon"), "invalid expiration 'soon': no_integer");
    }
}
