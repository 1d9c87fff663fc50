//! The live connection registry: what the management API and the metrics
//! endpoint list (connections, their channels and consumers), and the
//! handle to close a connection from outside (RabbitMQ's "Closed via
//! management plugin").
//!
//! A connection registers once its handshake is done and unregisters when
//! its task ends. What changes while it runs is shared, not copied: byte
//! counters are atomics the reader and writer bump, channels are the same
//! `ChannelShared` their queues deliver through, and `ChannelInfo` (modes,
//! prefetch, consumers) is updated by the channel's own methods. Listing
//! takes a snapshot under short locks; nothing here sits on the hot path
//! beyond one relaxed add per socket read.

use crate::channel::delivery::ChannelShared;
pub use crate::tls_info::TlsInfo;
use crate::writer::WriterParams;
use ferry_amqp::{AMQPValue, FieldTable};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::Notify;

/// Every live connection of the node.
#[derive(Debug, Default)]
pub struct Registry {
    conns: Mutex<BTreeMap<u64, Arc<ConnEntry>>>,
}

/// What a registered connection shares with the registry.
#[derive(Debug)]
pub struct ConnEntry {
    /// Connection id (also exclusive-queue owner id).
    pub id: u64,
    /// Client address.
    pub peer: SocketAddr,
    /// The socket's own address (the listener's port).
    pub local: Option<SocketAddr>,
    /// Handshake facts of a TLS connection.
    pub tls: Option<TlsInfo>,
    /// Bytes read from the socket.
    pub recv_oct: AtomicU64,
    force: ForceClose,
    details: Mutex<Details>,
    params: Mutex<Option<Arc<WriterParams>>>,
    channels: Mutex<BTreeMap<u16, Arc<ChannelShared>>>,
}

#[derive(Debug, Default, Clone)]
struct Details {
    name: String,
    user: String,
    vhost: String,
    client_properties: Option<FieldTable>,
    connected_at_ms: u64,
}

/// A close request from outside (management API), waited on by the
/// connection's reader.
#[derive(Debug, Default)]
struct ForceClose {
    notify: Notify,
    reason: Mutex<Option<String>>,
}

/// Per-channel facts the channel's methods keep up to date.
#[derive(Debug, Default)]
pub struct ChannelInfo {
    confirm: AtomicBool,
    tx: AtomicBool,
    prefetch: AtomicU32,
    consumers: Mutex<Vec<ConsumerInfo>>,
}

/// A consumer as listed by the management API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerInfo {
    /// Consumer tag.
    pub tag: String,
    /// Queue it consumes from.
    pub queue: String,
    /// Manual acknowledgement.
    pub ack_required: bool,
    /// Prefetch window at consume time (0 = unlimited).
    pub prefetch: u32,
    /// Exclusive consumer.
    pub exclusive: bool,
}

/// A connection at one instant.
#[derive(Debug, Clone)]
pub struct ConnSnapshot {
    /// Id.
    pub id: u64,
    /// RabbitMQ-style name, "PEER -> LOCAL".
    pub name: String,
    /// Client address.
    pub peer: SocketAddr,
    /// Listener address.
    pub local: Option<SocketAddr>,
    /// Authenticated user.
    pub user: String,
    /// Vhost opened.
    pub vhost: String,
    /// Client properties of connection.start-ok.
    pub client_properties: Option<FieldTable>,
    /// Unix ms of the handshake's end.
    pub connected_at_ms: u64,
    /// Over TLS: the handshake's facts.
    pub tls: Option<TlsInfo>,
    /// Negotiated frame_max.
    pub frame_max: u32,
    /// Negotiated heartbeat, seconds.
    pub heartbeat: u32,
    /// Bytes received.
    pub recv_oct: u64,
    /// Bytes sent.
    pub send_oct: u64,
    /// Open channels.
    pub channels: Vec<ChannelSnapshot>,
}

/// A channel at one instant.
#[derive(Debug, Clone)]
pub struct ChannelSnapshot {
    /// Channel number.
    pub number: u16,
    /// Per-consumer prefetch (basic.qos global=false).
    pub prefetch: u32,
    /// Channel-wide prefetch (basic.qos global=true).
    pub global_prefetch: u32,
    /// Delivered, not yet acknowledged.
    pub unacked: u64,
    /// confirm.select seen.
    pub confirm: bool,
    /// tx.select seen.
    pub tx: bool,
    /// Its consumers.
    pub consumers: Vec<ConsumerInfo>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Arc<Self> {
        Arc::new(Registry::default())
    }

    /// Lists the node's connections, ordered by id.
    pub fn snapshot(&self) -> Vec<ConnSnapshot> {
        let conns: Vec<Arc<ConnEntry>> = self.conns.lock().values().cloned().collect();
        conns.iter().map(|c| c.snapshot()).collect()
    }

    /// Open connections.
    pub fn len(&self) -> usize {
        self.conns.lock().len()
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Registered connections on `vhost` (vhost limit `max-connections`).
    pub fn vhost_connections(&self, vhost: &str) -> usize {
        self.count_where(|d| d.vhost == vhost)
    }

    /// Registered connections of `user` (user limit `max-connections`).
    pub fn user_connections(&self, user: &str) -> usize {
        self.count_where(|d| d.user == user)
    }

    /// Open channels over every connection of `user` (user limit
    /// `max-channels`).
    pub fn user_channels(&self, user: &str) -> usize {
        let conns: Vec<Arc<ConnEntry>> = self.conns.lock().values().cloned().collect();
        conns
            .iter()
            .filter(|c| c.details.lock().user == user)
            .map(|c| c.channel_count())
            .sum()
    }

    fn count_where(&self, pick: impl Fn(&Details) -> bool) -> usize {
        let conns: Vec<Arc<ConnEntry>> = self.conns.lock().values().cloned().collect();
        conns.iter().filter(|c| pick(&c.details.lock())).count()
    }

    /// Asks the connection named `name` to close with 320
    /// CONNECTION_FORCED and `reason`. False if no such connection.
    pub fn force_close(&self, name: &str, reason: &str) -> bool {
        self.force_close_where(|d| d.name == name, reason) > 0
    }

    /// Closes (320) every connection of `user`; how many were asked.
    pub fn close_user(&self, user: &str, reason: &str) -> usize {
        self.force_close_where(|d| d.user == user, reason)
    }

    /// Closes (320) every connection on `vhost`; how many were asked.
    pub fn close_vhost(&self, vhost: &str, reason: &str) -> usize {
        self.force_close_where(|d| d.vhost == vhost, reason)
    }

    fn force_close_where(&self, pick: impl Fn(&Details) -> bool, reason: &str) -> usize {
        let conns: Vec<Arc<ConnEntry>> = self.conns.lock().values().cloned().collect();
        let mut n = 0;
        for c in conns.iter().filter(|c| pick(&c.details.lock())) {
            *c.force.reason.lock() = Some(reason.to_string());
            c.force.notify.notify_one();
            n += 1;
        }
        n
    }

    /// Makes a connection visible (after its handshake).
    pub fn insert(&self, c: Arc<ConnEntry>) {
        {
            let mut d = c.details.lock();
            d.name = match c.local {
                Some(l) => format!("{} -> {}", c.peer, l),
                None => c.peer.to_string(),
            };
            d.connected_at_ms = now_ms();
        }
        self.conns.lock().insert(c.id, c);
    }

    /// Forgets a connection (its task ended).
    pub fn remove(&self, id: u64) {
        self.conns.lock().remove(&id);
    }
}

impl ConnEntry {
    /// A connection not yet registered: the socket's two ends (the local
    /// one names the listener it came through, AMQP or AMQPS) and its TLS
    /// handshake.
    pub fn new(
        id: u64,
        peer: SocketAddr,
        local: Option<SocketAddr>,
        tls: Option<TlsInfo>,
    ) -> Arc<Self> {
        Arc::new(ConnEntry {
            id,
            peer,
            local,
            tls,
            recv_oct: AtomicU64::new(0),
            force: ForceClose::default(),
            details: Mutex::new(Details::default()),
            params: Mutex::new(None),
            channels: Mutex::new(BTreeMap::new()),
        })
    }

    /// Counts bytes read from the socket.
    pub fn received(&self, n: usize) {
        self.recv_oct.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Records who the client is, once the handshake is done.
    pub fn set_identity(&self, user: &str, vhost: &str, params: Arc<WriterParams>) {
        let mut d = self.details.lock();
        d.user = user.to_string();
        d.vhost = vhost.to_string();
        *self.params.lock() = Some(params);
    }

    /// Records the client properties of connection.start-ok.
    pub fn set_client_properties(&self, p: &FieldTable) {
        self.details.lock().client_properties = Some(p.clone());
    }

    /// Waits until someone asks this connection to close; returns the
    /// reason (once: later calls wait forever).
    pub async fn forced(&self) -> String {
        loop {
            if let Some(r) = self.force.reason.lock().take() {
                return r;
            }
            self.force.notify.notified().await;
        }
    }

    /// A channel was opened.
    pub fn add_channel(&self, ch: u16, shared: Arc<ChannelShared>) {
        self.channels.lock().insert(ch, shared);
    }

    /// A channel was closed.
    pub fn remove_channel(&self, ch: u16) {
        self.channels.lock().remove(&ch);
    }

    /// Open channels.
    pub fn channel_count(&self) -> usize {
        self.channels.lock().len()
    }

    fn snapshot(&self) -> ConnSnapshot {
        let d = self.details.lock().clone();
        let (frame_max, heartbeat, send_oct) = self.params.lock().as_ref().map_or((0, 0, 0), |p| {
            (
                p.frame_max.load(Ordering::Relaxed),
                p.heartbeat.load(Ordering::Relaxed),
                p.bytes_out.load(Ordering::Relaxed),
            )
        });
        let chans: Vec<Arc<ChannelShared>> = self.channels.lock().values().cloned().collect();
        ConnSnapshot {
            id: self.id,
            name: d.name,
            peer: self.peer,
            local: self.local,
            user: d.user,
            vhost: d.vhost,
            client_properties: d.client_properties,
            connected_at_ms: d.connected_at_ms,
            tls: self.tls.clone(),
            frame_max,
            heartbeat,
            recv_oct: self.recv_oct.load(Ordering::Relaxed),
            send_oct,
            channels: chans.iter().map(|c| channel_snapshot(c)).collect(),
        }
    }
}

fn channel_snapshot(c: &ChannelShared) -> ChannelSnapshot {
    let (unacked, global_prefetch) = {
        let st = c.state.lock();
        (st.unacked.len() as u64, st.global_prefetch)
    };
    ChannelSnapshot {
        number: c.id,
        prefetch: c.info.prefetch.load(Ordering::Relaxed),
        global_prefetch,
        unacked,
        confirm: c.info.confirm.load(Ordering::Relaxed),
        tx: c.info.tx.load(Ordering::Relaxed),
        consumers: c.info.consumers.lock().clone(),
    }
}

impl ChannelInfo {
    /// confirm.select.
    pub fn set_confirm(&self) {
        self.confirm.store(true, Ordering::Relaxed);
    }

    /// tx.select.
    pub fn set_tx(&self) {
        self.tx.store(true, Ordering::Relaxed);
    }

    /// basic.qos global=false.
    pub fn set_prefetch(&self, n: u32) {
        self.prefetch.store(n, Ordering::Relaxed);
    }

    /// basic.consume-ok.
    pub fn add_consumer(&self, c: ConsumerInfo) {
        self.consumers.lock().push(c);
    }

    /// basic.cancel, or the queue went away.
    pub fn remove_consumer(&self, tag: &str) {
        self.consumers.lock().retain(|c| c.tag != tag);
    }
}

/// A string field of a client-properties table.
pub fn client_property(p: &FieldTable, key: &str) -> Option<String> {
    match p.inner().get(key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn force_close_finds_by_name_and_wakes_once() {
        let r = Registry::new();
        let local = SocketAddr::from(([127, 0, 0, 1], 5672));
        let c = ConnEntry::new(
            7,
            SocketAddr::from(([127, 0, 0, 1], 5555)),
            Some(local),
            None,
        );
        r.insert(c.clone());
        let snap = r.snapshot();
        assert_eq!(snap[0].name, "127.0.0.1:5555 -> 127.0.0.1:5672");
        assert!(!r.force_close("nope", "x"));
        assert!(r.force_close("127.0.0.1:5555 -> 127.0.0.1:5672", "bye"));
        assert_eq!(c.forced().await, "bye");
        let again = tokio::time::timeout(std::time::Duration::from_millis(20), c.forced()).await;
        assert!(again.is_err(), "a close request is delivered once");
        r.remove(7);
        assert!(r.is_empty());
    }

    #[test]
    fn close_user_and_vhost_pick_their_connections() {
        let r = Registry::new();
        let peer = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        for (id, user, vhost) in [(1, "a", "v"), (2, "b", "v"), (3, "a", "w")] {
            let c = ConnEntry::new(id, peer(6000 + id as u16), Some(peer(5671)), None);
            c.set_identity(user, vhost, Arc::default());
            r.insert(c);
        }
        assert_eq!(r.close_user("a", "user 'a' is deleted"), 2);
        assert_eq!(r.close_user("nobody", "x"), 0);
        assert_eq!(r.close_vhost("v", "vhost 'v' is down"), 2);
        assert_eq!(r.snapshot()[0].name, "127.0.0.1:6001 -> 127.0.0.1:5671");
    }
}
