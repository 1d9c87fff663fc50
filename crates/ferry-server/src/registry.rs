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
//!
//! Connection and channel limits are enforced with per-vhost and per-user
//! counters ([`ConnSlot`]): a connection takes its slots at connection.open
//! (compare-and-swap against the limit, so concurrent opens cannot all
//! pass) and gives them back when the slot is dropped, whether the
//! handshake failed after reserving or the connection ended. Checking a
//! limit is O(1), whatever the number of connections.

use crate::channel::delivery::ChannelShared;
pub use crate::tls_info::TlsInfo;
use crate::writer::WriterParams;
use ferry_amqp::{AMQPValue, FieldTable};
use ferry_auth::limits::is_reached;
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::Notify;

/// Every live connection of the node.
#[derive(Debug, Default)]
pub struct Registry {
    conns: Mutex<BTreeMap<u64, Arc<ConnEntry>>>,
    /// Connections per vhost (those past connection.open's limit check).
    vhost_conns: Counters,
    /// Connections per user.
    user_conns: Counters,
    /// Open channels per user, over all of the user's connections.
    user_chans: Counters,
}

/// Named counters; a name's counter lives as long as the registry (names
/// are existing vhosts and authenticated users).
#[derive(Debug, Default)]
struct Counters(Mutex<HashMap<String, Arc<AtomicUsize>>>);

impl Counters {
    fn get(&self, name: &str) -> Arc<AtomicUsize> {
        let mut m = self.0.lock();
        match m.get(name) {
            Some(c) => c.clone(),
            None => {
                let c = Arc::new(AtomicUsize::new(0));
                m.insert(name.to_string(), c.clone());
                c
            }
        }
    }

    fn count(&self, name: &str) -> usize {
        self.0
            .lock()
            .get(name)
            .map_or(0, |c| c.load(Ordering::Acquire))
    }
}

/// Takes one unit of `counter` unless `limit` is reached (then the limit).
fn take(counter: &AtomicUsize, limit: Option<i64>) -> Result<(), i64> {
    let mut reached = None;
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            reached = is_reached(limit, n);
            reached.is_none().then_some(n + 1)
        })
        .map(drop)
        .map_err(|_| reached.unwrap_or(0))
}

/// Which limit refused a connection slot, and its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotRefused {
    /// The vhost's `max-connections`.
    Vhost(i64),
    /// The user's `max-connections`.
    User(i64),
}

/// A connection's share of the vhost and user counters, given back on drop
/// (with the channels it still counts).
#[derive(Debug)]
pub struct ConnSlot {
    vhost: Option<Arc<AtomicUsize>>,
    user: Arc<AtomicUsize>,
    chans: Arc<AtomicUsize>,
    /// Channels this connection counts in `chans`.
    own_chans: usize,
}

impl ConnSlot {
    /// channel.open: takes a channel of the user's `max-channels` (the
    /// limit if reached).
    pub fn open_channel(&mut self, limit: Option<i64>) -> Result<(), i64> {
        take(&self.chans, limit)?;
        self.own_chans += 1;
        Ok(())
    }

    /// A channel counted by `open_channel` closed.
    pub fn close_channel(&mut self) {
        if self.own_chans > 0 {
            self.own_chans -= 1;
            self.chans.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        if let Some(v) = &self.vhost {
            v.fetch_sub(1, Ordering::AcqRel);
        }
        self.user.fetch_sub(1, Ordering::AcqRel);
        self.chans.fetch_sub(self.own_chans, Ordering::AcqRel);
    }
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

    /// Reserves a connection of `user` on `vhost` (None: a vhost that does
    /// not exist, counted nowhere), vhost limit first as RabbitMQ checks.
    pub fn reserve_connection(
        &self,
        vhost: Option<(&str, Option<i64>)>,
        user: &str,
        user_limit: Option<i64>,
    ) -> Result<ConnSlot, SlotRefused> {
        let vhost = match vhost {
            Some((name, limit)) => {
                let c = self.vhost_conns.get(name);
                take(&c, limit).map_err(SlotRefused::Vhost)?;
                Some(c)
            }
            None => None,
        };
        let user_c = self.user_conns.get(user);
        if let Err(l) = take(&user_c, user_limit) {
            if let Some(v) = &vhost {
                v.fetch_sub(1, Ordering::AcqRel);
            }
            return Err(SlotRefused::User(l));
        }
        Ok(ConnSlot {
            vhost,
            user: user_c,
            chans: self.user_chans.get(user),
            own_chans: 0,
        })
    }

    /// Connections counted on `vhost`.
    pub fn vhost_connections(&self, vhost: &str) -> usize {
        self.vhost_conns.count(vhost)
    }

    /// Connections counted for `user`.
    pub fn user_connections(&self, user: &str) -> usize {
        self.user_conns.count(user)
    }

    /// Open channels counted for `user`.
    pub fn user_channels(&self, user: &str) -> usize {
        self.user_chans.count(user)
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
#[allow(clippy::unwrap_used)]
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

    #[test]
    fn concurrent_reservations_never_pass_the_limit_and_are_given_back() {
        let r = Registry::new();
        let held = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (r, held, peak) = (r.clone(), held.clone(), peak.clone());
                std::thread::spawn(move || {
                    let mut won = 0;
                    for _ in 0..2000 {
                        if let Ok(slot) = r.reserve_connection(Some(("v", Some(3))), "u", None) {
                            let now = held.fetch_add(1, Ordering::SeqCst) + 1;
                            peak.fetch_max(now, Ordering::SeqCst);
                            won += 1;
                            held.fetch_sub(1, Ordering::SeqCst);
                            drop(slot);
                        }
                    }
                    won
                })
            })
            .collect();
        let won: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert!(won > 0);
        assert!(peak.load(Ordering::SeqCst) <= 3);
        assert_eq!(r.vhost_connections("v"), 0);
        assert_eq!(r.user_connections("u"), 0);
    }

    #[test]
    fn a_refused_user_slot_gives_the_vhost_slot_back_and_channels_are_counted() {
        let r = Registry::new();
        let mut a = r
            .reserve_connection(Some(("v", Some(5))), "u", Some(1))
            .unwrap();
        assert_eq!(
            r.reserve_connection(Some(("v", Some(5))), "u", Some(1))
                .err(),
            Some(SlotRefused::User(1))
        );
        assert_eq!(r.vhost_connections("v"), 1);
        assert_eq!(
            r.reserve_connection(Some(("v", Some(1))), "w", None).err(),
            Some(SlotRefused::Vhost(1))
        );
        assert_eq!(r.user_connections("w"), 0);
        // A vhost that does not exist is counted nowhere.
        let b = r.reserve_connection(None, "w", None).unwrap();
        assert_eq!(r.user_connections("w"), 1);
        a.open_channel(Some(2)).unwrap();
        a.open_channel(Some(2)).unwrap();
        assert_eq!(a.open_channel(Some(2)), Err(2));
        a.close_channel();
        assert_eq!(r.user_channels("u"), 1);
        drop(a);
        drop(b);
        assert_eq!(
            (
                r.vhost_connections("v"),
                r.user_connections("u"),
                r.user_channels("u")
            ),
            (0, 0, 0)
        );
    }
}
