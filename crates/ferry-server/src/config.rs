//! Front-end settings.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Settings of the AMQP listener and its connections.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where AMQP clients connect.
    pub amqp_listen: SocketAddr,
    /// Largest frame we accept and propose in connection.tune.
    pub frame_max: u32,
    /// Highest channel number we propose.
    pub channel_max: u16,
    /// Heartbeat interval (seconds) we propose; 0 disables.
    pub heartbeat: u16,
    /// Largest message body accepted (RabbitMQ's max_message_size).
    pub max_message_size: u64,
    /// Bytes queued for a socket above which consumers pause.
    pub socket_buffer_limit: usize,
    /// Most client connections at once (0 = no limit).
    pub max_connections: usize,
    /// Close a channel whose oldest unacked delivery is older (RabbitMQ's
    /// consumer_timeout; queues may override with `x-consumer-timeout`).
    pub consumer_timeout: Option<Duration>,
    /// Resident memory above which publishers are blocked (0 = 40% of RAM).
    pub memory_limit_bytes: u64,
    /// Free disk below which publishers are blocked.
    pub disk_free_limit_bytes: u64,
    /// Where AMQPS (AMQP over TLS) clients connect; on only with `tls`.
    pub amqps_listen: Option<SocketAddr>,
    /// TLS settings of the AMQPS listener (see `crate::tls`).
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            amqp_listen: SocketAddr::from(([0, 0, 0, 0], 5672)),
            frame_max: 131_072,
            channel_max: 2047,
            heartbeat: 60,
            max_message_size: 128 << 20,
            socket_buffer_limit: 4 << 20,
            max_connections: 0,
            consumer_timeout: Some(Duration::from_secs(30 * 60)),
            memory_limit_bytes: 0,
            disk_free_limit_bytes: 50_000_000,
            amqps_listen: None,
            tls: None,
        }
    }
}
