//! Vhost and user limits at connection.open and channel.open, with
//! RabbitMQ 3.10's order and texts (530 NOT_ALLOWED; see
//! `ferry_auth::limits`): the vhost's `max-connections`, then the
//! user's `max-connections`, before the vhost access check; the user's
//! `max-channels` (over all of the user's connections) on every
//! channel.open. Slots are taken from the registry's counters at once
//! (`crate::registry::ConnSlot`), so concurrent opens cannot all pass; the
//! connection opening counts from its connection.open on.

use crate::error::AmqpError;
use crate::registry::{ConnSlot, Registry, SlotRefused};
use ferry_amqp::ReplyCode;
use ferry_auth::limits::{user_channels_text, user_connections_text, vhost_connections_text};
use ferry_broker::Broker;

/// connection.open's limit checks for `user` opening `vhost`: the slot the
/// connection holds until it ends.
pub(super) fn reserve_connection(
    broker: &Broker,
    registry: &Registry,
    user: &str,
    vhost: &str,
) -> Result<ConnSlot, AmqpError> {
    let vlimit = broker.vhost_limit(vhost, "max-connections");
    // A vhost that does not exist (refused next) is counted nowhere.
    let counted = (vlimit.is_some() || broker.vhost(vhost).is_ok()).then_some((vhost, vlimit));
    let ulimit = broker.user_limit(user, "max-connections");
    registry
        .reserve_connection(counted, user, ulimit)
        .map_err(|refused| {
            let text = match refused {
                SlotRefused::Vhost(l) => vhost_connections_text(vhost, user, l),
                SlotRefused::User(l) => user_connections_text(user, l),
            };
            AmqpError::new(ReplyCode::NOT_ALLOWED, text).on(10, 40)
        })
}

/// channel.open's check of the user's `max-channels`.
pub(super) fn open_channel(
    broker: &Broker,
    slot: &mut ConnSlot,
    user: &str,
) -> Result<(), AmqpError> {
    slot.open_channel(broker.user_limit(user, "max-channels"))
        .map_err(|l| AmqpError::new(ReplyCode::NOT_ALLOWED, user_channels_text(user, l)).on(20, 10))
}
