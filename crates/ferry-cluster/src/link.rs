//! Dialing peers: one authenticated connection per peer, shared by every
//! group's requests (frames tagged with the group id), answers matched by
//! correlation id. Writes queued while a write is in progress go out
//! together in one `write_all`.

use crate::error::LinkError;
use crate::handshake::{self, Identity, Secret};
use crate::wire::{Frame, KIND_ERROR};
use bytes::BytesMut;
use ferry_raft::NodeId;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// How long a dial may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// After a failed dial, requests fail at once for this long (no storms).
const REDIAL_AFTER: Duration = Duration::from_millis(250);

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Frame>>>>;

/// A live connection's handles.
#[derive(Clone)]
struct Conn {
    tx: mpsc::UnboundedSender<Frame>,
    pending: Pending,
    alive: Arc<AtomicBool>,
}

/// The links of one node to its peers.
pub struct Links {
    me: Identity,
    secret: Secret,
    peers: Mutex<HashMap<NodeId, Arc<PeerLink>>>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
    closed: AtomicBool,
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Links")
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

impl Links {
    /// Links of the node `me`, authenticated with `secret`.
    pub fn new(me: Identity, secret: Secret) -> Arc<Self> {
        Arc::new(Links {
            me,
            secret,
            peers: Mutex::new(HashMap::new()),
            tasks: Arc::new(Mutex::new(Vec::new())),
            closed: AtomicBool::new(false),
        })
    }

    /// This node's identity.
    pub fn me(&self) -> &Identity {
        &self.me
    }

    /// The link to peer `id` at `addr` (created on first use; a changed
    /// address replaces it).
    pub fn link(self: &Arc<Self>, id: NodeId, addr: &str) -> Arc<PeerLink> {
        let mut peers = self.peers.lock();
        if let Some(l) = peers.get(&id) {
            if l.addr == addr {
                return l.clone();
            }
        }
        let l = Arc::new(PeerLink {
            addr: addr.to_owned(),
            links: Arc::downgrade(self),
            conn: tokio::sync::Mutex::new(None),
            next_corr: AtomicU64::new(1),
            failed_at: Mutex::new(None),
        });
        peers.insert(id, l.clone());
        l
    }

    /// Drops every connection and refuses new ones (a node stopping).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        for t in self.tasks.lock().drain(..) {
            t.abort();
        }
        self.peers.lock().clear();
    }

    fn track(&self, t: JoinHandle<()>) {
        let mut tasks = self.tasks.lock();
        tasks.retain(|t| !t.is_finished());
        tasks.push(t);
    }
}

/// One peer's link.
pub struct PeerLink {
    addr: String,
    links: std::sync::Weak<Links>,
    conn: tokio::sync::Mutex<Option<Conn>>,
    next_corr: AtomicU64,
    failed_at: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for PeerLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerLink")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl PeerLink {
    /// The peer's cluster address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn unreachable(&self, reason: impl Into<String>) -> LinkError {
        LinkError::Unreachable {
            addr: self.addr.clone(),
            reason: reason.into(),
        }
    }

    /// Sends a request for `group` and waits for its answer.
    pub async fn request(
        &self,
        kind: u8,
        group: u64,
        body: bytes::Bytes,
        timeout: Duration,
    ) -> Result<Frame, LinkError> {
        let conn = self.connection().await?;
        let corr = self.next_corr.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        conn.pending.lock().insert(corr, tx);
        let frame = Frame {
            kind,
            corr,
            group,
            body,
        };
        if conn.tx.send(frame).is_err() {
            conn.pending.lock().remove(&corr);
            return Err(self.unreachable("connection closed"));
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(f)) if f.kind == KIND_ERROR => Err(LinkError::Remote {
                addr: self.addr.clone(),
                reason: String::from_utf8_lossy(&f.body).into_owned(),
            }),
            Ok(Ok(f)) => Ok(f),
            Ok(Err(_)) => Err(self.unreachable("connection lost")),
            Err(_) => {
                conn.pending.lock().remove(&corr);
                Err(LinkError::Timeout {
                    addr: self.addr.clone(),
                    millis: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                })
            }
        }
    }

    /// The live connection, dialing (and authenticating) if there is none.
    async fn connection(&self) -> Result<Conn, LinkError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            if c.alive.load(Ordering::Acquire) {
                return Ok(c.clone());
            }
        }
        *slot = None;
        if self
            .failed_at
            .lock()
            .is_some_and(|t| t.elapsed() < REDIAL_AFTER)
        {
            return Err(self.unreachable("recently failed"));
        }
        let links = self
            .links
            .upgrade()
            .ok_or_else(|| self.unreachable("node stopping"))?;
        if links.closed.load(Ordering::Acquire) {
            return Err(self.unreachable("node stopping"));
        }
        match self.dial(&links).await {
            Ok(c) => {
                *self.failed_at.lock() = None;
                *slot = Some(c.clone());
                Ok(c)
            }
            Err(e) => {
                *self.failed_at.lock() = Some(Instant::now());
                Err(e)
            }
        }
    }

    async fn dial(&self, links: &Arc<Links>) -> Result<Conn, LinkError> {
        let mut s = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.addr))
            .await
            .map_err(|_| self.unreachable("connect timed out"))?
            .map_err(|e| self.unreachable(e.to_string()))?;
        let _ = s.set_nodelay(true);
        let peer = handshake::dial(&mut s, &links.me, &links.secret, &self.addr).await?;
        tracing::debug!(addr = %self.addr, peer, "cluster link up");
        let (rd, wr) = s.into_split();
        let (tx, rx) = mpsc::unbounded_channel();
        let conn = Conn {
            tx,
            pending: Arc::new(Mutex::new(HashMap::new())),
            alive: Arc::new(AtomicBool::new(true)),
        };
        links.track(tokio::spawn(write_loop(wr, rx, conn.alive.clone())));
        links.track(tokio::spawn(read_loop(rd, conn.clone(), self.addr.clone())));
        Ok(conn)
    }
}

/// Writes queued frames, coalescing what is queued into one write.
pub(crate) async fn write_loop(
    mut wr: tokio::net::tcp::OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Frame>,
    alive: Arc<AtomicBool>,
) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    while let Some(f) = rx.recv().await {
        f.encode(&mut buf);
        while buf.len() < 1 << 20 {
            match rx.try_recv() {
                Ok(f) => f.encode(&mut buf),
                Err(_) => break,
            }
        }
        if wr.write_all(&buf).await.is_err() {
            break;
        }
        buf.clear();
    }
    alive.store(false, Ordering::Release);
}

async fn read_loop(mut rd: tokio::net::tcp::OwnedReadHalf, conn: Conn, addr: String) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    'conn: loop {
        match rd.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        loop {
            match Frame::decode(&mut buf) {
                Ok(Some(f)) => {
                    if let Some(tx) = conn.pending.lock().remove(&f.corr) {
                        let _ = tx.send(f);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(%addr, error = %e, "dropping cluster link");
                    break 'conn;
                }
            }
        }
    }
    conn.alive.store(false, Ordering::Release);
    // Every request still waiting learns the connection is gone.
    conn.pending.lock().clear();
}
