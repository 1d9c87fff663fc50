//! # ferry-server: the AMQP 0-9-1 front end
//!
//! Owns listeners (plain, and AMQPS through `tls`: rustls with ring),
//! connections, the AMQP handshake, per-operation permission checks,
//! channel state machines, content assembly, delivery tags and acks,
//! publisher confirms (coalesced into `multiple` acks) and transactions
//! (discarded when their channel closes), heartbeats, limits and shutdown;
//! resource alarms (`alarms`) and what the memory alarm counts (`memory`:
//! bytes held for clients, not RSS); the live connection registry the
//! management API lists and force-closes through (`registry`); direct
//! reply-to consumers of every connection (`direct_reply`), which replies
//! reach without a queue. `frontend` serves a connection over any byte
//! stream (TCP, TLS, an in-process pipe); `Server` adds the listeners.
//!
//! Must not: hold routing or storage rules (those live in `ferry-broker`),
//! decide who may do what (the core's users and permissions do; channels
//! only ask), parse bytes by hand (the codec is `ferry-amqp`), or touch
//! files (except reading TLS certificates once, at startup).
//!
//! ```text
//! socket ─▶ connection (reader task) ─ frames ─▶ channel ─▶ ferry-broker
//!    ▲                                                       │
//!    └──── writer task ◀── outbox ◀── replies, deliveries, confirms
//! ```

pub mod alarms;
pub mod blocking;
pub mod channel;
pub mod config;
pub mod connection;
pub mod direct_reply;
pub mod error;
pub mod frontend;
pub mod memory;
pub mod outbox;
pub mod properties;
pub mod registry;
pub mod tls;
pub mod tls_info;
pub mod writer;

pub use config::ServerConfig;
pub use error::{AmqpError, ServerError};
pub use frontend::Frontend;

use ferry_broker::Broker;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};

/// State every connection shares.
#[derive(Debug)]
pub struct Shared {
    /// The broker core.
    pub broker: Arc<Broker>,
    /// Front-end settings.
    pub config: ServerConfig,
    /// Flips to true when the broker shuts down.
    pub shutdown: watch::Receiver<bool>,
    /// Memory and disk alarms.
    pub alarms: watch::Receiver<alarms::Alarms>,
    /// Live connections (management API).
    pub registry: Arc<registry::Registry>,
    /// Direct reply-to consumers of every connection.
    pub replies: Arc<channel::reply_to::Replies>,
    live: AtomicUsize,
    all_closed: Notify,
}

/// A running AMQP listener.
#[derive(Debug)]
pub struct Server {
    front: Frontend,
    local_addr: SocketAddr,
    accept: tokio::task::JoinHandle<()>,
    /// The AMQPS listener's address and accept task, when TLS is on.
    amqps: Option<(SocketAddr, tokio::task::JoinHandle<()>)>,
}

impl Server {
    /// Binds the AMQP listener and starts accepting.
    pub async fn start(broker: Arc<Broker>, config: ServerConfig) -> Result<Server, ServerError> {
        let listener = TcpListener::bind(config.amqp_listen).await?;
        let local_addr = listener.local_addr()?;
        let amqps = match (&config.tls, config.amqps_listen) {
            (Some(tls), Some(addr)) => Some((
                TcpListener::bind(addr).await?,
                tokio_rustls::TlsAcceptor::from(tls.clone()),
            )),
            _ => None,
        };
        let (alarm_tx, alarm_rx) = watch::channel(alarms::Alarms::default());
        let memory_bytes = memory_limit(config.memory_limit_bytes);
        let limits = alarms::Limits {
            memory_bytes,
            disk_free_bytes: config.disk_free_limit_bytes,
            data_dir: broker.config().data_dir.clone(),
        };
        tracing::info!(
            memory_limit = memory_bytes,
            disk_free_limit = limits.disk_free_bytes,
            "resource limits"
        );
        // Until the monitor's first tick the measure is its base, the RSS
        // now (so the API never reports 0 used).
        memory::record_used(alarms::rss_bytes().unwrap_or(0));
        let front = Frontend::with_alarms(broker.clone(), config, alarm_rx);
        let shutdown_rx = front.shared.shutdown.clone();
        tokio::spawn(alarms::monitor(
            limits,
            broker.clone(),
            alarm_tx,
            shutdown_rx.clone(),
        ));
        tokio::spawn(expiry_sweeper(broker, shutdown_rx));
        let accept = tokio::spawn(accept_loop(listener, front.shared.clone(), None));
        let amqps = match amqps {
            Some((l, acceptor)) => {
                let addr = l.local_addr()?;
                Some((
                    addr,
                    tokio::spawn(accept_loop(l, front.shared.clone(), Some(acceptor))),
                ))
            }
            None => None,
        };
        Ok(Server {
            front,
            local_addr,
            accept,
            amqps,
        })
    }

    /// Connections currently open.
    pub fn live_connections(&self) -> usize {
        self.front.live_connections()
    }

    /// Live connections, channels and consumers.
    pub fn registry(&self) -> Arc<registry::Registry> {
        self.front.shared.registry.clone()
    }

    /// The direct reply-to consumers of every connection (for publishers
    /// outside AMQP: the management API).
    pub fn replies(&self) -> Arc<channel::reply_to::Replies> {
        self.front.shared.replies.clone()
    }

    /// Current memory and disk alarm state.
    pub fn alarms(&self) -> watch::Receiver<alarms::Alarms> {
        self.front.shared.alarms.clone()
    }

    /// The broker core.
    pub fn broker(&self) -> &Arc<Broker> {
        &self.front.shared.broker
    }

    /// The bound AMQPS address, when TLS is on.
    pub fn amqps_addr(&self) -> Option<SocketAddr> {
        self.amqps.as_ref().map(|(a, _)| *a)
    }

    /// The bound AMQP address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, closes every connection with 320
    /// CONNECTION_FORCED, waits for them (bounded), then flushes and
    /// fsyncs all queues.
    pub async fn shutdown(self) {
        self.accept.abort();
        if let Some((_, t)) = &self.amqps {
            t.abort();
        }
        self.front.shutdown().await;
    }
}

/// Message expiry (TTL) for every queue. The core owns no timers and reads
/// no clock on its own: queues post their head's deadline to the broker's
/// `ExpiryTimer`, and this one task sleeps until the earliest (woken early
/// when a sooner deadline appears, at least every second as a safety net),
/// then has the due queues drop or dead-letter what expired. That work
/// reads logs and routes dead letters, so it runs on the blocking pool.
async fn expiry_sweeper(broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
    let wake = Arc::new(Notify::new());
    let timer = broker.expiry_timer().clone();
    {
        let wake = wake.clone();
        timer.set_waker(move || wake.notify_one());
    }
    loop {
        timer.reset();
        let now = broker.clock().now_ms();
        let b = broker.clone();
        match tokio::task::spawn_blocking(move || b.expire_due(now)).await {
            Ok(next) => timer.note(next),
            Err(e) => tracing::error!(error = %e, "message expiry pass failed"),
        }
        let wait = timer
            .next()
            .saturating_sub(broker.clock().now_ms())
            .clamp(1, 1000);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
            _ = wake.notified() => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// The memory alarm's limit for a configured `memory_limit` (0 = 40% of
/// RAM, RabbitMQ's default watermark); the management API reports the same.
pub fn memory_limit(configured: u64) -> u64 {
    match configured {
        0 => alarms::total_memory_bytes().map_or(u64::MAX, |t| t / 5 * 2),
        n => n,
    }
}

/// Longest a client may take for its TLS handshake (RabbitMQ's
/// ssl_handshake_timeout is 5 s).
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().ok();
        let live = frontend::Live::enter(&shared);
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => live.serve(stream, (peer, local), None).await,
                Some(acceptor) => {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    {
                        Ok(Ok(stream)) => {
                            let info = registry::TlsInfo::of(stream.get_ref().1);
                            live.serve(stream, (peer, local), Some(info)).await
                        }
                        Ok(Err(e)) => tracing::info!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::info!(%peer, "TLS handshake timeout"),
                    }
                }
            }
        });
    }
}
