//! Vhost and user limits at connection.open and channel.open, with
//! RabbitMQ 3.10's order and texts (530 NOT_ALLOWED; see
//! `ferry_core::auth::limits`): the vhost's `max-connections`, then the
//! user's `max-connections`, before the vhost access check; the user's
//! `max-channels` (over all of the user's connections) on every
//! channel.open. Counts come from the registry, which holds connections
//! whose handshake is done: the one opening is not counted yet.

use crate::error::AmqpError;
use crate::registry::Registry;
use ferry_amqp::ReplyCode;
use ferry_core::auth::limits::{
    is_reached, user_channels_text, user_connections_text, vhost_connections_text,
};
use ferry_core::Broker;

/// connection.open's limit checks for `user` opening `vhost`.
pub(super) fn check_connection(
    broker: &Broker,
    registry: &Registry,
    user: &str,
    vhost: &str,
) -> Result<(), AmqpError> {
    let refuse = |text: String| Err(AmqpError::new(ReplyCode::NOT_ALLOWED, text).on(10, 40));
    let vlimit = broker.vhost_limit(vhost, "max-connections");
    if let Some(l) = vlimit.and_then(|_| is_reached(vlimit, registry.vhost_connections(vhost))) {
        return refuse(vhost_connections_text(vhost, user, l));
    }
    let ulimit = broker.user_limit(user, "max-connections");
    if let Some(l) = ulimit.and_then(|_| is_reached(ulimit, registry.user_connections(user))) {
        return refuse(user_connections_text(user, l));
    }
    Ok(())
}

/// channel.open's check of the user's `max-channels`.
pub(super) fn check_channel(
    broker: &Broker,
    registry: &Registry,
    user: &str,
) -> Result<(), AmqpError> {
    let limit = broker.user_limit(user, "max-channels");
    match limit.and_then(|_| is_reached(limit, registry.user_channels(user))) {
        Some(l) => {
            Err(AmqpError::new(ReplyCode::NOT_ALLOWED, user_channels_text(user, l)).on(20, 10))
        }
        None => Ok(()),
    }
}
