//! The vhost's side of `x-delayed-message` exchanges: opening their hidden
//! queues, diverting held publishes into them, and routing what falls due
//! (`exchange::delayed_store` has the design).

use super::{storage_name, VHost};
use ferry_model::Table;
use ferry_queue::error::Result;
use ferry_queue::queue::Queue;
use ferry_route::{delay_of, sender_selected_keys, ExchangeKind};
use std::sync::Arc;

impl VHost {
    /// Opens the hidden queue of delayed exchange `name`: under the vhost's
    /// directory when the exchange is durable (its held messages survive a
    /// restart), else under the transient directory.
    pub(super) fn open_delayed(&self, name: &Arc<str>, durable: bool) -> Result<()> {
        let dir = if durable {
            self.dir.join("delayed").join(crate::broker::hex(name))
        } else {
            self.transient_dir
                .join(format!("delayed-{}", storage_name()))
        };
        self.delayed
            .open(name, durable, self.name.clone(), dir, self.env.clone())
    }

    /// Where a publish to delayed exchange `exchange` goes when its
    /// `x-delay` asks for a hold: the exchange's hidden queue. None: route
    /// it now.
    pub(super) fn hold_target(
        &self,
        exchange: &str,
        headers: Option<&Table>,
    ) -> Option<Arc<Queue>> {
        headers.and_then(delay_of)?;
        self.delayed.queue(exchange)
    }

    /// Deletes the hidden queues whose delayed exchange is gone.
    pub(super) fn drop_orphan_delayed(&self) {
        let r = self.delayed.remove_missing(|n| {
            self.exchanges
                .read()
                .get(n)
                .is_some_and(|x| x.kind == ExchangeKind::DelayedMessage)
        });
        if let Err(e) = r {
            tracing::warn!(vhost = %self.name, error = %e, "cannot delete a delayed exchange's messages");
        }
    }

    /// Routes the held messages of every delayed exchange that are due at
    /// `now` (the broker's expiry sweep). Returns the earliest due time
    /// left (`NEVER` if none).
    pub fn release_delayed(&self, now: u64) -> u64 {
        self.delayed.release_due(now, |exchange, msg, headers| {
            let exchanges = self.exchanges.read();
            let names = self.registry.read();
            let mut out = Vec::new();
            if exchanges.contains_key(exchange) {
                // Its publish key, CC keys (a stored header is an
                // array, or the publish failed) and the BCC keys kept
                // with it: RabbitMQ's delayed-message plugin stores the
                // whole message record (its `routing_keys` hold all
                // three) and routes it by them on release.
                let mut keys = vec![&*msg.routing_key];
                keys.extend(sender_selected_keys(headers).unwrap_or_default());
                keys.extend(msg.bcc.iter().map(|k| &**k));
                let routed = (keys.as_slice(), &msg.properties);
                self.route_through(&exchanges, &names, exchange, routed, headers, &mut out);
            }
            out
        })
    }

    /// The hidden queues of the delayed exchanges (shutdown syncs them).
    pub fn delayed_queues(&self) -> Vec<Arc<Queue>> {
        self.delayed.queues()
    }
}
