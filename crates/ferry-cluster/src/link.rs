//! Dialing peers: one authenticated connection per peer, shared by every
//! group's requests (frames tagged with the group id), answers matched by
//! correlation id. Frames queued while a write is in progress, or by the
//! tasks that run in the writer's one yield before a small write, go out
//! together in one `write_all`.

use crate::error::LinkError;
use crate::handshake::{self, Identity, Secret};
use crate::tls::{BoxStream, LinkTls};
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
    /// When the reader last got bytes (ms since `EPOCH`).
    last_read: Arc<AtomicU64>,
    /// The reader and writer tasks, ended when the connection is given up.
    tasks: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

fn now_ms() -> u64 {
    u64::try_from(EPOCH.get_or_init(Instant::now).elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl Conn {
    /// Gives the connection up: its tasks end, its waiting requests fail,
    /// the next request dials again.
    fn kill(&self) {
        self.alive.store(false, Ordering::Release);
        for t in self.tasks.lock().drain(..) {
            t.abort();
        }
        self.pending.lock().clear();
    }
}

/// The links of one node to its peers.
pub struct Links {
    me: Identity,
    secret: Secret,
    tls: Option<LinkTls>,
    admission: std::sync::OnceLock<Admission>,
    peers: Mutex<HashMap<NodeId, Arc<PeerLink>>>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
    closed: AtomicBool,
}

/// Whether this node may talk to node `id` of incarnation `inc`: None if
/// so, the reason if not.
pub type Admission = Arc<dyn Fn(NodeId, u64) -> Option<String> + Send + Sync>;

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Links")
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

impl Links {
    /// Links of the node `me`, authenticated with `secret`, over TLS when
    /// `tls` is given.
    pub fn new(me: Identity, secret: Secret, tls: Option<LinkTls>) -> Arc<Self> {
        Arc::new(Links {
            me,
            secret,
            tls,
            admission: std::sync::OnceLock::new(),
            peers: Mutex::new(HashMap::new()),
            tasks: Arc::new(Mutex::new(Vec::new())),
            closed: AtomicBool::new(false),
        })
    }

    /// Checks every peer this node dials from now on (a peer refused
    /// gets no request; see `node::admission`). Set once.
    pub fn set_admission(&self, a: Admission) {
        let _ = self.admission.set(a);
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
            expect: id,
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

    pub(crate) fn track(&self, t: JoinHandle<()>) {
        let mut tasks = self.tasks.lock();
        tasks.retain(|t| !t.is_finished());
        tasks.push(t);
    }
}

/// One peer's link.
pub struct PeerLink {
    /// The node id the peer must prove it has.
    expect: NodeId,
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

    /// Sends a request for `group` and waits for its answer, all within
    /// `timeout` (dialing included). A request that times out on a
    /// connection that has read nothing for as long gives the connection
    /// up (a peer behind a silent partition never resets it).
    pub async fn request(
        &self,
        kind: u8,
        group: u64,
        body: bytes::Bytes,
        timeout: Duration,
    ) -> Result<Frame, LinkError> {
        if body.len() + crate::wire::FRAME_HEADER > crate::wire::MAX_FRAME {
            return Err(LinkError::Remote {
                addr: self.addr.clone(),
                reason: format!("a {}-byte request exceeds the frame limit", body.len()),
            });
        }
        let timed_out = || LinkError::Timeout {
            addr: self.addr.clone(),
            millis: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        };
        let deadline = Instant::now() + timeout;
        let conn = tokio::time::timeout(timeout, self.connection())
            .await
            .map_err(|_| timed_out())??;
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
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx).await {
            Ok(Ok(f)) if f.kind == KIND_ERROR => Err(LinkError::Remote {
                addr: self.addr.clone(),
                reason: String::from_utf8_lossy(&f.body).into_owned(),
            }),
            Ok(Ok(f)) => Ok(f),
            Ok(Err(_)) => Err(LinkError::Lost {
                addr: self.addr.clone(),
            }),
            Err(_) => {
                conn.pending.lock().remove(&corr);
                let silent = now_ms().saturating_sub(conn.last_read.load(Ordering::Relaxed));
                if u128::from(silent) >= timeout.as_millis() {
                    tracing::debug!(addr = %self.addr, silent, "giving up a silent cluster link");
                    conn.kill();
                }
                Err(timed_out())
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
        // Counted as failed until it succeeds: a dial abandoned by its
        // caller's timeout still holds the next one back.
        *self.failed_at.lock() = Some(Instant::now());
        let c = self.dial(&links).await?;
        *self.failed_at.lock() = None;
        *slot = Some(c.clone());
        Ok(c)
    }

    async fn dial(&self, links: &Arc<Links>) -> Result<Conn, LinkError> {
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.addr))
            .await
            .map_err(|_| self.unreachable("connect timed out"))?
            .map_err(|e| self.unreachable(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let mut s = crate::tls::dial(links.tls.as_ref(), tcp, &self.addr)
            .await
            .map_err(|e| self.unreachable(format!("TLS: {e}")))?;
        let (peer, incarnation) =
            handshake::dial(&mut s, &links.me, &links.secret, &self.addr, self.expect).await?;
        if let Some(why) = links.admission.get().and_then(|a| a(peer, incarnation)) {
            return Err(LinkError::Handshake {
                addr: self.addr.clone(),
                reason: why,
            });
        }
        tracing::debug!(addr = %self.addr, peer, "cluster link up");
        let (rd, wr) = tokio::io::split(s);
        let (tx, rx) = mpsc::unbounded_channel();
        let conn = Conn {
            tx,
            pending: Arc::new(Mutex::new(HashMap::new())),
            alive: Arc::new(AtomicBool::new(true)),
            last_read: Arc::new(AtomicU64::new(now_ms())),
            tasks: Arc::new(Mutex::new(Vec::new())),
        };
        let w = tokio::spawn(write_loop(wr, rx, conn.alive.clone()));
        let r = tokio::spawn(read_loop(rd, conn.clone(), self.addr.clone()));
        conn.tasks
            .lock()
            .extend([w.abort_handle(), r.abort_handle()]);
        links.track(w);
        links.track(r);
        Ok(conn)
    }
}

/// A write smaller than this waits one turn of the scheduler for more.
const COALESCE_BELOW: usize = 16 * 1024;
/// The most one write carries (more waits for the next).
const WRITE_MAX: usize = 1 << 20;

fn drain(rx: &mut mpsc::UnboundedReceiver<Frame>, buf: &mut BytesMut) {
    while buf.len() < WRITE_MAX {
        match rx.try_recv() {
            Ok(f) => f.encode(buf),
            Err(_) => break,
        }
    }
}

/// Writes queued frames, coalescing what is queued into one write.
pub(crate) async fn write_loop(
    mut wr: tokio::io::WriteHalf<BoxStream>,
    mut rx: mpsc::UnboundedReceiver<Frame>,
    alive: Arc<AtomicBool>,
) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    while let Some(f) = rx.recv().await {
        f.encode(&mut buf);
        drain(&mut rx, &mut buf);
        if buf.len() < COALESCE_BELOW {
            // Let the tasks that are ready to run add their frames first:
            // one sync round commits many groups at once, and their
            // replication tasks and answers each bring one small frame.
            // One send per frame was a fifth of a node's CPU in S8.
            tokio::task::yield_now().await;
            drain(&mut rx, &mut buf);
        }
        if wr.write_all(&buf).await.is_err() {
            break;
        }
        buf.clear();
    }
    alive.store(false, Ordering::Release);
}

async fn read_loop(mut rd: tokio::io::ReadHalf<BoxStream>, conn: Conn, addr: String) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    'conn: loop {
        match rd.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => conn.last_read.store(now_ms(), Ordering::Relaxed),
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
