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
//! reach without a queue.
//!
//! Must not: hold routing or storage rules (those live in `ferry-core`),
//! decide who may do what (the core's users and permissions do; channels
//! only ask), parse bytes by hand (the codec is `ferry-amqp`), or touch
//! files (except reading TLS certificates once, at startup).
//!
//! ```text
//! socket ─▶ connection (reader task) ─ frames ─▶ channel ─▶ ferry-core
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
pub mod memory;
pub mod outbox;
pub mod properties;
pub mod registry;
pub mod tls;
pub mod tls_info;
pub mod writer;

pub use config::ServerConfig;
pub use error::{AmqpError, ServerError};

use ferry_core::Broker;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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
    shared: Arc<Shared>,
    shutdown_tx: watch::Sender<bool>,
    local_addr: SocketAddr,
    accept: tokio::task::JoinHandle<()>,
    /// The AMQPS listener's address and accept task, when TLS is on.
    amqps: Option<(SocketAddr, tokio::task::JoinHandle<()>)>,
}

static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

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
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
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
        tokio::spawn(alarms::monitor(
            limits,
            broker.clone(),
            alarm_tx,
            shutdown_rx.clone(),
        ));
        broker.set_property_codec(Arc::new(properties::AmqpPropertyCodec));
        tokio::spawn(expiry_sweeper(broker.clone(), shutdown_rx.clone()));
        let shared = Arc::new(Shared {
            broker,
            config,
            shutdown: shutdown_rx,
            alarms: alarm_rx,
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
        let accept = tokio::spawn(accept_loop(listener, shared.clone(), None));
        let amqps = match amqps {
            Some((l, acceptor)) => {
                let addr = l.local_addr()?;
                Some((
                    addr,
                    tokio::spawn(accept_loop(l, shared.clone(), Some(acceptor))),
                ))
            }
            None => None,
        };
        Ok(Server {
            shared,
            shutdown_tx,
            local_addr,
            accept,
            amqps,
        })
    }

    /// Connections currently open.
    pub fn live_connections(&self) -> usize {
        self.shared.live.load(Ordering::Relaxed)
    }

    /// Live connections, channels and consumers.
    pub fn registry(&self) -> Arc<registry::Registry> {
        self.shared.registry.clone()
    }

    /// The direct reply-to consumers of every connection (for publishers
    /// outside AMQP: the management API).
    pub fn replies(&self) -> Arc<channel::reply_to::Replies> {
        self.shared.replies.clone()
    }

    /// Current memory and disk alarm state.
    pub fn alarms(&self) -> watch::Receiver<alarms::Alarms> {
        self.shared.alarms.clone()
    }

    /// The broker core.
    pub fn broker(&self) -> &Arc<Broker> {
        &self.shared.broker
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
        if tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .is_err()
        {
            tracing::warn!("some connections did not close in time");
        }
        let broker = self.shared.broker.clone();
        let _ = tokio::task::spawn_blocking(move || broker.shutdown()).await;
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

/// Closes the connections of a deleted vhost as RabbitMQ does (320
/// CONNECTION_FORCED "vhost 'v' is down").
fn vhost_deleted_hook(registry: &Arc<registry::Registry>) -> ferry_core::broker::VhostDeletedHook {
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
fn user_deleted_hook(registry: &Arc<registry::Registry>) -> ferry_core::broker::UserDeletedHook {
    let registry = Arc::downgrade(registry);
    Arc::new(move |user: &str| {
        if let Some(registry) = registry.upgrade() {
            registry.close_user(user, &format!("user '{user}' is deleted"));
        }
    })
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
        let id = NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed);
        let s = shared.clone();
        s.live.fetch_add(1, Ordering::AcqRel);
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => connection::serve(stream, (peer, local), s.clone(), id, None).await,
                Some(acceptor) => {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    {
                        Ok(Ok(stream)) => {
                            let info = registry::TlsInfo::of(stream.get_ref().1);
                            connection::serve(stream, (peer, local), s.clone(), id, Some(info))
                                .await
                        }
                        Ok(Err(e)) => tracing::info!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::info!(%peer, "TLS handshake timeout"),
                    }
                }
            }
            if s.live.fetch_sub(1, Ordering::AcqRel) == 1 {
                s.all_closed.notify_waiters();
            }
        });
    }
}
