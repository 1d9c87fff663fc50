//! The server's side of `connection.start`: server-properties with the
//! capabilities table clients look at, mechanisms and locales.
//!
//! Clients read the capabilities table to decide which RabbitMQ extensions
//! they may use (confirms, `basic.nack`, consumer cancel notifications,
//! `connection.blocked`, ...), so it must list what the broker implements.

use amq_protocol::protocol::{connection, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable, LongString};

/// The SASL mechanisms we offer, space-separated as in `connection.start`.
pub const MECHANISMS: &str = "PLAIN AMQPLAIN";
/// The locales we offer.
pub const LOCALES: &str = "en_US";

/// Which broker features to advertise. `Default` is what Ferry supports:
/// RabbitMQ 3.10's whole set (the same nine keys, all true).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// `confirm.select` and publisher acks.
    pub publisher_confirms: bool,
    /// `exchange.bind` / `exchange.unbind`.
    pub exchange_exchange_bindings: bool,
    /// `basic.nack`.
    pub basic_nack: bool,
    /// Server-sent `basic.cancel` when a queue goes away.
    pub consumer_cancel_notify: bool,
    /// `connection.blocked` / `connection.unblocked`.
    pub connection_blocked: bool,
    /// `connection.close` with ACCESS_REFUSED on failed login (rather than
    /// dropping the socket).
    pub authentication_failure_close: bool,
    /// `basic.qos` with global=false applies per consumer (RabbitMQ's
    /// reinterpretation).
    pub per_consumer_qos: bool,
    /// The `amq.rabbitmq.reply-to` pseudo-queue.
    pub direct_reply_to: bool,
    /// The `x-priority` consumer argument.
    pub consumer_priorities: bool,
}

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities {
            publisher_confirms: true,
            exchange_exchange_bindings: true,
            basic_nack: true,
            consumer_cancel_notify: true,
            connection_blocked: true,
            authentication_failure_close: true,
            per_consumer_qos: true,
            direct_reply_to: true,
            consumer_priorities: true,
        }
    }
}

impl Capabilities {
    /// The capabilities table. Every key is present, false ones included:
    /// clients test for `true`, so an explicit false is read as absent, and
    /// listing them documents what we know of.
    #[must_use]
    pub fn to_table(&self) -> FieldTable {
        let mut table = FieldTable::default();
        for (key, on) in [
            ("publisher_confirms", self.publisher_confirms),
            (
                "exchange_exchange_bindings",
                self.exchange_exchange_bindings,
            ),
            ("basic.nack", self.basic_nack),
            ("consumer_cancel_notify", self.consumer_cancel_notify),
            ("connection.blocked", self.connection_blocked),
            (
                "authentication_failure_close",
                self.authentication_failure_close,
            ),
            ("per_consumer_qos", self.per_consumer_qos),
            ("direct_reply_to", self.direct_reply_to),
            ("consumer_priorities", self.consumer_priorities),
        ] {
            table.insert(key.into(), AMQPValue::Boolean(on));
        }
        table
    }
}

/// Builds the `server-properties` table: product, version, platform and
/// capabilities, values as long strings as RabbitMQ sends them.
#[must_use]
pub fn server_properties(product: &str, version: &str, capabilities: &Capabilities) -> FieldTable {
    let mut table = FieldTable::default();
    table.insert("product".into(), long_string(product));
    table.insert("version".into(), long_string(version));
    table.insert("platform".into(), long_string("Rust"));
    table.insert(
        "capabilities".into(),
        AMQPValue::FieldTable(capabilities.to_table()),
    );
    table
}

fn long_string(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

/// The `connection.start` method: version 0-9, the given server properties,
/// [`MECHANISMS`] and [`LOCALES`]. Encode it with [`crate::encode_method`]
/// on channel 0.
#[must_use]
pub fn connection_start(server_properties: FieldTable) -> AMQPClass {
    AMQPClass::Connection(connection::AMQPMethod::Start(connection::Start {
        version_major: 0,
        version_minor: 9,
        server_properties,
        mechanisms: LongString::from(MECHANISMS),
        locales: LongString::from(LOCALES),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_capabilities_table() {
        let props = server_properties("Ferry", "0.1.0", &Capabilities::default());
        let inner = props.inner();
        assert_eq!(inner["product"], AMQPValue::LongString("Ferry".into()));
        assert_eq!(inner["version"], AMQPValue::LongString("0.1.0".into()));
        let AMQPValue::FieldTable(caps) = &inner["capabilities"] else {
            panic!("capabilities is not a table");
        };
        let caps = caps.inner();
        for on in [
            "publisher_confirms",
            "exchange_exchange_bindings",
            "basic.nack",
            "consumer_cancel_notify",
            "connection.blocked",
            "authentication_failure_close",
            "per_consumer_qos",
            "direct_reply_to",
            "consumer_priorities",
        ] {
            assert_eq!(caps[on], AMQPValue::Boolean(true), "{on}");
        }
        assert_eq!(caps.len(), 9);
    }

    #[test]
    // Written as users outside the crate must: the struct is non_exhaustive.
    #[allow(clippy::field_reassign_with_default)]
    fn capabilities_can_be_changed() {
        let mut caps = Capabilities::default();
        caps.consumer_priorities = false;
        let table = caps.to_table();
        assert_eq!(
            table.inner()["consumer_priorities"],
            AMQPValue::Boolean(false)
        );
    }

    #[test]
    fn start_method_round_trips() {
        let start = connection_start(server_properties("Ferry", "1", &Capabilities::default()));
        let mut buf = bytes::BytesMut::new();
        crate::encode_method(&mut buf, 0, &start).unwrap_or_else(|e| panic!("{e}"));
        let frame = crate::parse_frame(buf.freeze()).unwrap_or_else(|e| panic!("{e}"));
        let crate::Frame::Method { channel: 0, method } = frame else {
            panic!("not a method on channel 0");
        };
        assert_eq!(method, start);
        let AMQPClass::Connection(connection::AMQPMethod::Start(s)) = method else {
            panic!("not connection.start");
        };
        assert_eq!(s.mechanisms.as_bytes(), b"PLAIN AMQPLAIN");
        assert_eq!(s.locales.as_bytes(), b"en_US");
        assert_eq!((s.version_major, s.version_minor), (0, 9));
    }
}
