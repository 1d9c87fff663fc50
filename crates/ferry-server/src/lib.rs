//! # ferry-server: the AMQP 0-9-1 front end
//!
//! Owns listeners, connections, the AMQP handshake, channel state machines,
//! content assembly, delivery tags and acks, publisher confirms and
//! transactions, heartbeats, limits and shutdown.
//!
//! Must not: hold routing or storage rules (those live in `ferry-core`),
//! parse bytes by hand (the codec is `ferry-amqp`), or touch files.
//!
//! ```text
//! socket ─▶ connection (reader task) ─ frames ─▶ channel ─▶ ferry-core
//!    ▲                                                       │
//!    └──── writer task ◀── outbox ◀── replies, deliveries, confirms
//! ```

pub mod alarms;
pub mod channel;
pub mod config;
pub mod connection;
pub mod error;
pub mod outbox;
pub mod properties;
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
}

static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

impl Server {
    /// Binds the AMQP listener and starts accepting.
    pub async fn start(broker: Arc<Broker>, config: ServerConfig) -> Result<Server, ServerError> {
        let listener = TcpListener::bind(config.amqp_listen).await?;
        let local_addr = listener.local_addr()?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (alarm_tx, alarm_rx) = watch::channel(alarms::Alarms::default());
        let memory_bytes = match config.memory_limit_bytes {
            0 => alarms::total_memory_bytes().map_or(u64::MAX, |t| t / 5 * 2),
            n => n,
        };
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
            live: AtomicUsize::new(0),
            all_closed: Notify::new(),
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(Server {
            shared,
            shutdown_tx,
            local_addr,
            accept,
        })
    }

    /// Connections currently open.
    pub fn live_connections(&self) -> usize {
        self.shared.live.load(Ordering::Relaxed)
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

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
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
        let id = NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed);
        let s = shared.clone();
        s.live.fetch_add(1, Ordering::AcqRel);
        tokio::spawn(async move {
            connection::serve(stream, peer, s.clone(), id).await;
            if s.live.fetch_sub(1, Ordering::AcqRel) == 1 {
                s.all_closed.notify_waiters();
            }
        });
    }
}
