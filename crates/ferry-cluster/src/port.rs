//! A follower's side of serving its node's consumers of a replicated
//! queue ([`FollowerPort`], the queue's `LeaderPort`): a puller task keeps
//! a session with the group's leader (`served`) — one pull at a time,
//! each naming every consumer here with how far the leader may deliver to
//! it (what this session received for it plus what its channel takes
//! now), and credit in between when a consumer's channel frees up; a
//! forwarder task hands acks, requeues and rejects to the leader in
//! order; basic.get asks the leader directly. A session ends when the
//! leadership moves, the leader does not know it, or the link fails;
//! the consumers stay and the next session serves them (messages the old
//! session delivered and this node had not handed out are forgotten:
//! they are delivered again).

use crate::leadership::{Changes, Leadership};
use crate::link::Links;
use crate::served::{NOT_LEADER, PARK};
use crate::wire::remote::{self, ConsumerCredit, Credit, SettleOp};
use crate::wire::Frame;
use bytes::Bytes;
use ferry_queue::error::{CoreError, ErrorKind, Result as CoreResult};
use ferry_queue::queue::{record, Delivery, Forward, LeaderPort, RemoteConsumer, Replica};
use ferry_raft::NodeId;
use futures::channel::mpsc;
use futures::StreamExt;
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// A consumer is offered at most this many messages at a time.
const CAP: u32 = 256;
/// A session with messages unsettled here is kept alive this often.
const HEARTBEAT: Duration = Duration::from_secs(3);
/// How long a request other than a pull may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The way from this node's replica of a queue to the group's leader.
pub struct FollowerPort {
    lead: Leadership,
    links: Arc<Links>,
    group: u64,
    rt: tokio::runtime::Handle,
    woken: AtomicBool,
    wake: Notify,
    forwards: mpsc::UnboundedSender<(u64, Forward)>,
    session: AtomicU64,
    /// Ids this session delivered here (not auto-acked) and this node
    /// has not settled yet: while any, the session is kept alive.
    out: Mutex<HashSet<u64>>,
    name: Arc<str>,
}

impl std::fmt::Debug for FollowerPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FollowerPort")
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

impl LeaderPort for FollowerPort {
    fn wake(&self) {
        self.woken.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    fn forward(&self, op: Forward) {
        {
            let mut out = self.out.lock();
            let (Forward::Ack(ids) | Forward::Requeue(ids) | Forward::Reject(ids)) = &op;
            for id in ids {
                out.remove(id);
            }
        }
        let _ = self
            .forwards
            .unbounded_send((self.session.load(Ordering::Acquire), op));
    }

    fn get(&self, no_ack: bool) -> CoreResult<Option<(Delivery, u32)>> {
        self.rt.block_on(self.get_async(no_ack))
    }

    fn purge(&self) -> CoreResult<u32> {
        let answer =
            self.rt
                .block_on(self.request(remote::KIND_PURGE, Bytes::new(), REQUEST_TIMEOUT));
        let refused = |e: String| CoreError::request(ErrorKind::Internal, e);
        let body = answer.map_err(refused)?.body;
        let n: [u8; 4] = body[..]
            .try_into()
            .map_err(|_| refused("a purge answer of the wrong size".into()))?;
        Ok(u32::from_le_bytes(n))
    }
}

impl FollowerPort {
    /// The port of `group`'s replica on node `me`; the returned receiver
    /// feeds [`run_forwarder`].
    pub fn new(
        lead: Leadership,
        links: Arc<Links>,
        group: u64,
        name: Arc<str>,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<(u64, Forward)>) {
        let (tx, rx) = mpsc::unbounded();
        let port = Arc::new(FollowerPort {
            lead,
            links,
            group,
            rt: tokio::runtime::Handle::current(),
            woken: AtomicBool::new(false),
            wake: Notify::new(),
            forwards: tx,
            session: AtomicU64::new(rand::random()),
            out: Mutex::new(HashSet::new()),
            name,
        });
        (port, rx)
    }

    /// The leader and its address, if another node leads.
    fn leader(&self) -> Option<(NodeId, String)> {
        self.lead.leader()
    }

    /// One request to the leader (as this node knows it), retried with the
    /// next guess while it surely was not taken (the node could not be
    /// reached, or answered that it does not lead), for up to `ttl`.
    async fn request(
        &self,
        kind: u8,
        body: Bytes,
        ttl: Duration,
    ) -> std::result::Result<Frame, String> {
        let deadline = tokio::time::Instant::now() + ttl;
        let mut changes = self.lead.changes();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let (l, addr) = self.leader().ok_or("no other node leads the queue")?;
            let r = self
                .links
                .link(l, &addr)
                .request(kind, self.group, body.clone(), left)
                .await;
            let e = match r {
                Ok(f) if f.kind == kind | crate::wire::KIND_REPLY => return Ok(f),
                Ok(f) => return Err(String::from_utf8_lossy(&f.body).into_owned()),
                Err(e) => e,
            };
            // Not the leader (or gone): an outside node tries another.
            let (wrong, not_taken) = match &e {
                crate::LinkError::Remote { reason, .. } => {
                    let wrong = reason.starts_with(NOT_LEADER) || reason.starts_with("no ");
                    (wrong, wrong)
                }
                e => (true, e.not_taken()),
            };
            if wrong {
                self.lead.missed(l, None);
            }
            if !not_taken || deadline <= tokio::time::Instant::now() {
                return Err(e.to_string());
            }
            // The leadership moves (or a short while passes) before the
            // next try.
            let _ =
                tokio::time::timeout(Duration::from_millis(100).min(left), changes.changed()).await;
        }
    }

    async fn get_async(&self, no_ack: bool) -> CoreResult<Option<(Delivery, u32)>> {
        let session = self.session.load(Ordering::Acquire);
        let body = remote::encode_get(session, no_ack);
        let answer = self.request(remote::KIND_GET, body, REQUEST_TIMEOUT).await;
        let refused = |e: String| CoreError::request(ErrorKind::Internal, e);
        let got = remote::decode_got(answer.map_err(refused)?.body)
            .map_err(|e| refused(e.to_string()))?;
        let Some((d, left)) = got else {
            return Ok(None);
        };
        if !no_ack {
            self.out.lock().insert(d.msg_id);
        }
        let id = d.msg_id;
        match delivery(self.name.clone(), d) {
            Some(x) => Ok(Some((x, left))),
            None => {
                self.forward(Forward::Requeue(vec![id]));
                Err(refused(
                    "the leader sent a message that does not decode".into(),
                ))
            }
        }
    }
}

/// A delivery as it arrived, for queue `queue`.
fn delivery(queue: Arc<str>, d: remote::Delivered) -> Option<Delivery> {
    match record::decode(d.record) {
        Ok(record::Record::Enqueue { msg, .. }) => Some(Delivery {
            queue,
            msg_id: d.msg_id,
            message: Arc::new(msg),
            redelivered: d.redelivered,
            delivery_count: d.delivery_count,
        }),
        _ => None,
    }
}

/// Hands this node's acks, requeues and rejects to the leader, in order
/// (consecutive ones of the same kind and session in one request). With
/// no other node leading there is nobody to tell: a new leader returned
/// what the old one had out.
pub async fn run_forwarder(
    port: Arc<FollowerPort>,
    mut rx: mpsc::UnboundedReceiver<(u64, Forward)>,
) {
    while let Some(first) = rx.next().await {
        let mut runs: Vec<(u64, SettleOp, Vec<u64>)> = Vec::new();
        let mut next = Some(first);
        while let Some((session, op)) = next {
            let (kind, ids) = match op {
                Forward::Ack(ids) => (SettleOp::Ack, ids),
                Forward::Requeue(ids) => (SettleOp::Requeue, ids),
                Forward::Reject(ids) => (SettleOp::Reject, ids),
            };
            match runs.last_mut() {
                Some((s, k, v)) if *s == session && *k == kind => v.extend(ids),
                _ => runs.push((session, kind, ids)),
            }
            next = rx.try_recv().ok();
        }
        for (session, op, ids) in runs {
            for chunk in ids.chunks(64 * 1024) {
                let body = remote::encode_settle(session, op, chunk);
                // Boxed: the task of an idle queue stays small.
                if let Err(e) =
                    Box::pin(port.request(remote::KIND_SETTLE, body, REQUEST_TIMEOUT)).await
                {
                    tracing::debug!(group = port.group, error = %e, "a follower's settlement was not delivered");
                }
            }
        }
    }
}

/// This node's session with the group's leader.
struct Session {
    id: u64,
    leader: NodeId,
    /// Deliveries received per consumer.
    received: HashMap<u64, u64>,
    /// The leader answered a request of it (it exists there).
    known: bool,
    /// The leader has stand-ins for consumers here.
    stand_ins: bool,
}

/// Keeps a session with the leader while this node's replica follows and
/// has consumers, or holds messages of the session unsettled.
pub async fn run_puller(port: Arc<FollowerPort>, replica: Replica) {
    let mut metrics = port.lead.changes();
    let mut s: Option<Session> = None;
    loop {
        port.woken.store(false, Ordering::Release);
        let leader = port.leader().map(|l| l.0);
        if s.as_ref().map(|s| Some(s.leader)) != Some(leader) {
            if s.take().is_some() {
                end_session(&port, &replica);
            }
            if let Some(l) = leader {
                tracing::debug!(
                    group = port.group,
                    leader = l,
                    "a follower's session with the queue's leader begins"
                );
                s = Some(Session {
                    id: port.session.load(Ordering::Acquire),
                    leader: l,
                    received: HashMap::new(),
                    known: false,
                    stand_ins: false,
                });
            }
        }
        let Some(sess) = s.as_mut() else {
            tokio::select! {
                _ = port.wake.notified() => {}
                r = metrics.changed() => if r.is_err() { return },
            }
            continue;
        };
        let wanted = replica.remote_consumers(CAP);
        // Boxed: the task of an idle queue stays small.
        let r = if wanted.is_empty() {
            Box::pin(idle(&port, sess, &mut metrics)).await
        } else {
            Box::pin(pull(&port, &replica, sess, wanted, &mut metrics)).await
        };
        match r {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::debug!(group = port.group, error = %e, "a follower's session with the queue's leader ended");
                s = None;
                end_session(&port, &replica);
                // Wait for the leadership to move, or a little while.
                let _ = tokio::time::timeout(Duration::from_millis(200), metrics.changed()).await;
            }
        }
    }
}

/// A session ended: what it delivered and was not handed out is
/// forgotten, what is unsettled no longer counts (the leader returns
/// it), the next session gets a new id.
fn end_session(port: &FollowerPort, replica: &Replica) {
    replica.reset_remote();
    port.out.lock().clear();
    port.session.store(rand::random(), Ordering::Release);
}

type Metrics = Changes;

/// No consumer here: the leader's stand-ins go; while messages of the
/// session are unsettled here, the session is kept alive. Ok(false): the
/// group stopped.
async fn idle(port: &FollowerPort, s: &mut Session, metrics: &mut Metrics) -> Result<bool, String> {
    if s.stand_ins {
        send_credit(port, s, &[]).await?;
        s.stand_ins = false;
    }
    let holding = !port.out.lock().is_empty();
    tokio::select! {
        _ = port.wake.notified() => {}
        r = metrics.changed() => if r.is_err() { return Ok(false) },
        _ = tokio::time::sleep(HEARTBEAT), if holding => {
            send_credit(port, s, &[]).await?;
        }
    }
    Ok(true)
}

async fn send_credit(
    port: &FollowerPort,
    s: &mut Session,
    wanted: &[RemoteConsumer],
) -> Result<(), String> {
    let c = credit(s, wanted);
    port.request(
        remote::KIND_CREDIT,
        remote::encode_credit(&c),
        REQUEST_TIMEOUT,
    )
    .await?;
    s.known = true;
    Ok(())
}

/// One pull (and credit while it waits), its deliveries handed over.
async fn pull(
    port: &FollowerPort,
    replica: &Replica,
    s: &mut Session,
    wanted: Vec<RemoteConsumer>,
    metrics: &mut Metrics,
) -> Result<bool, String> {
    let no_ack: HashSet<u64> = wanted.iter().filter(|c| c.no_ack).map(|c| c.id).collect();
    let mut sent = credit(s, &wanted);
    let mut sent_wants: HashMap<u64, u32> = wanted.iter().map(|c| (c.id, c.want)).collect();
    s.stand_ins = true;
    let body = remote::encode_credit(&sent);
    let request = port.request(remote::KIND_PULL, body, PARK + REQUEST_TIMEOUT);
    tokio::pin!(request);
    let answer = loop {
        tokio::select! {
            r = &mut request => break r?,
            _ = port.wake.notified() => {
                if !port.woken.swap(false, Ordering::AcqRel) {
                    continue;
                }
                let now = replica.remote_consumers(CAP);
                if more_credit(&sent, &sent_wants, &now) {
                    let c = credit(s, &now);
                    port.request(remote::KIND_CREDIT, remote::encode_credit(&c), REQUEST_TIMEOUT)
                        .await?;
                    sent = c;
                    sent_wants = now.iter().map(|c| (c.id, c.want)).collect();
                }
            }
            r = metrics.changed() => {
                if r.is_err() {
                    return Ok(false);
                }
                if port.leader().map(|l| l.0) != Some(s.leader) {
                    return Err("the leadership moved".into());
                }
            }
        }
    };
    s.known = true;
    let pulled = remote::decode_pulled(answer.body).map_err(|e| e.to_string())?;
    tracing::trace!(group = port.group, wanted = ?sent, deliveries = pulled.deliveries.len(), "pulled");
    let name = replica.queue().name().clone();
    let mut items = Vec::with_capacity(pulled.deliveries.len());
    let mut bad = Vec::new();
    {
        let mut out = port.out.lock();
        for d in pulled.deliveries {
            *s.received.entry(d.consumer).or_insert(0) += 1;
            let (cid, id) = (d.consumer, d.msg_id);
            if !no_ack.contains(&cid) {
                out.insert(id);
            }
            match delivery(name.clone(), d) {
                Some(x) => items.push((cid, x)),
                None => bad.push(id),
            }
        }
    }
    bad.extend(replica.deliver_remote(items));
    if !bad.is_empty() {
        port.forward(Forward::Requeue(bad));
    }
    for cid in pulled.cancelled {
        replica.cancel_remote(cid);
    }
    Ok(true)
}

/// A pull or credit request for `wanted` in session `s`.
fn credit(s: &Session, wanted: &[RemoteConsumer]) -> Credit {
    Credit {
        session: s.id,
        fresh: !s.known,
        consumers: wanted
            .iter()
            .map(|c| ConsumerCredit {
                id: c.id,
                tag: c.tag.to_string(),
                no_ack: c.no_ack,
                exclusive: c.exclusive,
                priority: c.priority,
                limit: s.received.get(&c.id).copied().unwrap_or(0) + u64::from(c.want),
            })
            .collect(),
    }
}

/// Whether `now` is worth telling the leader while a pull waits: a
/// consumer came or went, one that took nothing takes some now, or one
/// takes noticeably more than it was offered.
fn more_credit(sent: &Credit, sent_wants: &HashMap<u64, u32>, now: &[RemoteConsumer]) -> bool {
    if sent.consumers.len() != now.len() {
        return true;
    }
    now.iter().any(|c| match sent_wants.get(&c.id) {
        None => true,
        Some(&w) => (w == 0 && c.want > 0) || c.want >= w + CAP / 2,
    })
}
