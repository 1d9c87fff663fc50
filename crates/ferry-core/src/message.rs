//! A message as the core stores and delivers it.
//!
//! Properties are kept as the raw bytes the publisher sent (the AMQP
//! content-header property flags and list), so every header table and field
//! type goes back to consumers byte for byte, and the core never parses them.
//! The front end hands over the few facts the core needs (persistence and,
//! for headers exchanges, the parsed header table) next to the raw bytes.

use bytes::Bytes;
use std::sync::Arc;

/// An immutable published message, shared by every queue it was routed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Exchange it was published to.
    pub exchange: Arc<str>,
    /// Routing key it was published with.
    pub routing_key: Arc<str>,
    /// Raw encoded properties (opaque to the core).
    pub properties: Bytes,
    /// The body.
    pub body: Bytes,
    /// Delivery mode 2: survives a restart when stored in a durable queue.
    pub persistent: bool,
}

impl Message {
    /// Bytes this message accounts for in memory and on disk (approximate).
    pub fn weight(&self) -> usize {
        self.body.len() + self.properties.len() + self.routing_key.len() + self.exchange.len() + 64
    }
}

/// Parses the `expiration` property as RabbitMQ does (Erlang's
/// `string:to_integer`): an optional sign and digits, nothing after them,
/// not negative. The error is RabbitMQ's reason term, e.g. `no_integer`,
/// `{value_negative,-1}`, `{leftover_string,"s"}`.
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
    Ok(magnitude
        .parse::<u64>()
        .unwrap_or(if magnitude.is_empty() { 0 } else { u64::MAX }))
}

#[cfg(test)]
mod tests {
    use super::parse_expiration;

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
        assert_eq!(parse_expiration("99999999999999999999999"), Ok(u64::MAX));
    }
}
