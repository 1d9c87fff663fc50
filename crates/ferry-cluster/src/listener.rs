//! Accepting peers: the cluster port. A connection must pass the
//! handshake before any frame is read; then each request runs as its own
//! task (a slow append never holds up a vote) and its answer goes back on
//! the same connection.

use crate::handshake::{self, Identity, Secret};
use crate::link::write_loop;
use crate::tls::LinkTls;
use crate::wire::Frame;
use bytes::BytesMut;
use parking_lot::Mutex;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// A boxed future of a request's answer.
pub type Answer = Pin<Box<dyn Future<Output = Frame> + Send>>;

/// What serves the requests arriving on the cluster port.
pub trait Handler: Send + Sync + 'static {
    /// The answer to `frame` from the node `from` (as its handshake
    /// proved it).
    fn handle(&self, from: &Identity, frame: Frame) -> Answer;
}

/// The cluster port of a node.
pub struct Listener {
    local: SocketAddr,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("local", &self.local)
            .finish()
    }
}

impl Listener {
    /// Serves `addr` until closed or dropped.
    pub async fn bind(
        addr: &str,
        me: Identity,
        (secret, tls): (Secret, Option<LinkTls>),
        handler: Arc<dyn Handler>,
    ) -> std::io::Result<Self> {
        let l = TcpListener::bind(addr).await?;
        let local = l.local_addr()?;
        let tasks = Arc::new(Mutex::new(Vec::new()));
        let t = tokio::spawn(accept_loop(l, me, (secret, tls), handler, tasks.clone()));
        tasks.lock().push(t);
        Ok(Listener { local, tasks })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Stops accepting and drops every accepted connection.
    pub fn close(&self) {
        for t in self.tasks.lock().drain(..) {
            t.abort();
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.close();
    }
}

async fn accept_loop(
    l: TcpListener,
    me: Identity,
    (secret, tls): (Secret, Option<LinkTls>),
    handler: Arc<dyn Handler>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
) {
    loop {
        let (s, peer) = match l.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors, most likely: back off, do not spin.
                tracing::warn!(error = %e, "cluster accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let t = tokio::spawn(serve(
            s,
            peer,
            me.clone(),
            (secret.clone(), tls.clone()),
            handler.clone(),
            tasks.clone(),
        ));
        let mut ts = tasks.lock();
        ts.retain(|t| !t.is_finished());
        ts.push(t);
    }
}

/// Logs a refused connection: at most one line per 10 s per node (a
/// misconfigured peer retries several times a second), with the count of
/// those not logged.
fn refused(addr: &str, e: &crate::LinkError) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    static QUIET: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let last = LAST.load(Ordering::Relaxed);
    if now >= last + 10
        && LAST
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        let more = QUIET.swap(0, Ordering::Relaxed);
        tracing::warn!(peer = %addr, error = %e, not_logged = more, "cluster connection refused");
    } else {
        QUIET.fetch_add(1, Ordering::Relaxed);
    }
}

async fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    me: Identity,
    (secret, tls): (Secret, Option<LinkTls>),
    handler: Arc<dyn Handler>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
) {
    let addr = peer.to_string();
    let _ = tcp.set_nodelay(true);
    let mut s = match crate::tls::accept(tls.as_ref(), tcp).await {
        Ok(s) => s,
        Err(e) => {
            let e = crate::LinkError::Handshake {
                addr: addr.clone(),
                reason: format!("TLS: {e}"),
            };
            refused(&addr, &e);
            return;
        }
    };
    let from = match handshake::accept(&mut s, &me, &secret, &addr).await {
        Ok(who) => who,
        Err(e) => {
            refused(&addr, &e);
            return;
        }
    };
    tracing::debug!(peer = %addr, node = from.id, name = %from.name, "cluster peer connected");
    let (mut rd, wr) = tokio::io::split(s);
    let (tx, rx) = mpsc::unbounded_channel();
    let writer = tokio::spawn(write_loop(wr, rx, Arc::new(AtomicBool::new(true))));
    tasks.lock().push(writer);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    'conn: loop {
        match rd.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        loop {
            match Frame::decode(&mut buf) {
                Ok(Some(f)) => {
                    let answer = handler.handle(&from, f);
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        let _ = tx.send(answer.await);
                    });
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(peer = %addr, error = %e, "dropping cluster connection");
                    break 'conn;
                }
            }
        }
    }
}
