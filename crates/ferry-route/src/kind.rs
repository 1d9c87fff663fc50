//! The built-in exchange types.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// An exchange type. Serialized as its wire name ("direct", ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExchangeKind {
    /// Routes to bindings whose key equals the routing key.
    Direct,
    /// Routes to every binding, ignoring the routing key.
    Fanout,
    /// Routes by pattern (`*` one word, `#` zero or more words).
    Topic,
    /// Routes by message headers against binding arguments (`x-match`).
    Headers,
    /// `x-delayed-message` (the RabbitMQ plugin's type): holds a message
    /// for its `x-delay` header's ms, then routes it by its
    /// `x-delayed-type` (see `exchange::delayed`).
    #[serde(rename = "x-delayed-message")]
    DelayedMessage,
    /// `x-consistent-hash` (the RabbitMQ plugin's type): binding keys are
    /// weights, each message goes to one destination chosen by a hash (see
    /// `exchange::consistent_hash`).
    #[serde(rename = "x-consistent-hash")]
    ConsistentHash,
}

impl ExchangeKind {
    /// Parses the `type` field of `exchange.declare`. Case-sensitive, as in
    /// RabbitMQ ("Direct" is not a type). `None` means the caller must refuse
    /// the declare: see [`UnknownExchangeType`] for the error to send.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "direct" => Some(Self::Direct),
            "fanout" => Some(Self::Fanout),
            "topic" => Some(Self::Topic),
            "headers" => Some(Self::Headers),
            super::delayed::TYPE_NAME => Some(Self::DelayedMessage),
            super::consistent_hash::TYPE_NAME => Some(Self::ConsistentHash),
            _ => None,
        }
    }

    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Fanout => "fanout",
            Self::Topic => "topic",
            Self::Headers => "headers",
            Self::DelayedMessage => super::delayed::TYPE_NAME,
            Self::ConsistentHash => super::consistent_hash::TYPE_NAME,
        }
    }
}

impl fmt::Display for ExchangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ExchangeKind {
    type Err = UnknownExchangeType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s).ok_or_else(|| UnknownExchangeType(s.to_string()))
    }
}

/// `exchange.declare` named a type this broker does not have.
///
/// RabbitMQ 3.x answers with a connection error 503 COMMAND_INVALID and
/// this text (`ErrorKind::CommandInvalid` in the core); RabbitMQ 4.x
/// changed it to a channel error 406 PRECONDITION_FAILED with the same text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown exchange type '{0}'")]
pub struct UnknownExchangeType(pub String);

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn parse_round_trips_every_kind() {
        for k in [
            ExchangeKind::Direct,
            ExchangeKind::Fanout,
            ExchangeKind::Topic,
            ExchangeKind::Headers,
            ExchangeKind::DelayedMessage,
            ExchangeKind::ConsistentHash,
        ] {
            assert_eq!(ExchangeKind::parse(k.as_str()), Some(k));
            assert_eq!(k.as_str().parse::<ExchangeKind>(), Ok(k));
            assert_eq!(k.to_string(), k.as_str());
        }
    }

    #[test]
    fn unknown_types_are_refused_with_rabbitmq_text() {
        for bad in ["", "Direct", "TOPIC", "x-delayed", "match", "direct "] {
            assert_eq!(ExchangeKind::parse(bad), None, "{bad:?}");
        }
        let err = "x-custom".parse::<ExchangeKind>().unwrap_err();
        assert_eq!(err.to_string(), "unknown exchange type 'x-custom'");
    }

    #[test]
    fn serde_uses_wire_names() {
        let json = serde_json::to_string(&ExchangeKind::Headers).unwrap();
        assert_eq!(json, "\"headers\"");
        let back: ExchangeKind = serde_json::from_str("\"topic\"").unwrap();
        assert_eq!(back, ExchangeKind::Topic);
    }
}
