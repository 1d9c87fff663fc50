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
