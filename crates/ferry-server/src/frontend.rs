//! The front end without its listeners: the state every connection
//! shares, and serving one already-accepted stream (TCP, TLS, or an
//! in-process pipe such as `tokio::io::duplex`) with the real connection
//! code: the same handshake, heartbeats, framing limits, channel routing,
//! writer task and shutdown whatever carries the bytes.
//!
//! [`crate::Server`] is a `Frontend` plus listeners and the background
//! tasks (alarm monitor, message expiry). A `Frontend` made with
//! [`Frontend::new`] has neither: no resource alarm ever fires and nothing
//! expires messages on a timer. The fuzzer and in-process tests use it.
//!
//! Must not: accept sockets or bind listeners (`lib.rs` does), or know
//! anything about the stream beyond `AsyncRead + AsyncWrite`.

use crate::{alarms, connection, registry, ServerConfig, Shared};
use ferry_broker::Broker;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{watch, Notify};

static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

/// How long [`Frontend::shutdown`] waits for connections to close.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);

/// Serves connections over streams the caller brings.
#[derive(Debug)]
pub struct Frontend {
    pub(crate) shared: Arc<Shared>,
    shutdown_tx: watch::Sender<bool>,
    /// The alarm state's sender when no monitor owns it (kept so that
    /// the state stays "no alarm" rather than closed).
    _alarms: Option<watch::Sender<alarms::Alarms>>,
}

impl Frontend {
    /// A front end over `broker` with no listener and no background tasks
    /// (no resource alarms, no timed message expiry).
    pub fn new(broker: Arc<Broker>, config: ServerConfig) -> Frontend {
        let (alarm_tx, alarm_rx) = watch::channel(alarms::Alarms::default());
        Frontend::build(broker, config, alarm_rx, Some(alarm_tx))
    }

    /// A front end whose alarm state comes from `alarms` (the server's
    /// monitor).
    pub(crate) fn with_alarms(
        broker: Arc<Broker>,
        config: ServerConfig,
        alarms: watch::Receiver<alarms::Alarms>,
    ) -> Frontend {
        Frontend::build(broker, config, alarms, None)
    }

    fn build(
        broker: Arc<Broker>,
        config: ServerConfig,
        alarms: watch::Receiver<alarms::Alarms>,
        own_alarms: Option<watch::Sender<alarms::Alarms>>,
    ) -> Frontend {
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        crate::properties::install_legacy_converter();
        let shared = Arc::new(Shared {
            broker,
            config,
            shutdown: shutdown_rx,
            alarms,
            registry: registry::Registry::new(),
            replies: Default::default(),
            live: AtomicUsize::new(0),
            all_closed: Notify::new(),
        });
        shared
            .broker
            .on_vhost_deleted(vhost_deleted_hook(&shared.registry));
        shared
            .broker
            .on_user_deleted(user_deleted_hook(&shared.registry));
        Frontend {
            shared,
            shutdown_tx,
            _alarms: own_alarms,
        }
    }

    /// Serves one accepted stream from `peer` until the connection ends
    /// (the returned future owns what it needs: spawn it). The connection
    /// counts as live from this call on.
    pub fn serve<S>(&self, stream: S, peer: SocketAddr) -> impl Future<Output = ()> + Send + 'static
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let live = Live::enter(&self.shared);
        async move { live.serve(stream, (peer, None), None).await }
    }

    /// Connections currently open.
    pub fn live_connections(&self) -> usize {
        self.shared.live.load(Ordering::Relaxed)
    }

    /// The broker core.
    pub fn broker(&self) -> &Arc<Broker> {
        &self.shared.broker
    }

    /// Closes every connection with 320 CONNECTION_FORCED, waits for them
    /// (bounded), then flushes and fsyncs all queues (`Broker::shutdown`,
    /// on the blocking pool).
    pub async fn shutdown(self) {
        let _ = self.shutdown_tx.send(true);
        let wait = async {
            loop {
                let notified = self.shared.all_closed.notified();
                if self.shared.live.load(Ordering::Acquire) == 0 {
                    break;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(SHUTDOWN_WAIT, wait).await.is_err() {
            tracing::warn!("some connections did not close in time");
        }
        let broker = self.shared.broker.clone();
        let _ = tokio::task::spawn_blocking(move || broker.shutdown()).await;
    }
}

/// One live connection, counted from its accept (before a TLS handshake)
/// until it is dropped; the last one out wakes a waiting shutdown.
pub(crate) struct Live {
    shared: Arc<Shared>,
    id: u64,
}

impl Live {
    pub(crate) fn enter(shared: &Arc<Shared>) -> Live {
        shared.live.fetch_add(1, Ordering::AcqRel);
        Live {
            shared: shared.clone(),
            id: NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Runs the connection (`connection::serve`) over `stream`.
    pub(crate) async fn serve<S>(
        self,
        stream: S,
        addrs: (SocketAddr, Option<SocketAddr>),
        tls: Option<registry::TlsInfo>,
    ) where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        connection::serve(stream, addrs, self.shared.clone(), self.id, tls).await;
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if self.shared.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.all_closed.notify_waiters();
        }
    }
}

/// Closes the connections of a deleted vhost as RabbitMQ does (320
/// CONNECTION_FORCED "vhost 'v' is down").
fn vhost_deleted_hook(
    registry: &Arc<registry::Registry>,
) -> ferry_broker::broker::VhostDeletedHook {
    let registry = Arc::downgrade(registry);
    Arc::new(move |vhost: &str| {
        let Some(registry) = registry.upgrade() else {
            return;
        };
        registry.close_vhost(vhost, &format!("vhost '{vhost}' is down"));
    })
}

/// Closes the connections of a deleted user as RabbitMQ 3.10 does (320
/// CONNECTION_FORCED "user 'u' is deleted").
fn user_deleted_hook(registry: &Arc<registry::Registry>) -> ferry_broker::broker::UserDeletedHook {
    let registry = Arc::downgrade(registry);
    Arc::new(move |user: &str| {
        if let Some(registry) = registry.upgrade() {
            registry.close_user(user, &format!("user '{user}' is deleted"));
        }
    })
}

#[cfg(test)]
mod tests;
