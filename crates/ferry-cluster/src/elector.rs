//! Elections of quiescent groups (the queue groups): such a group sends
//! no heartbeats and starts no election on a timer of its own (openraft's
//! `heartbeat(false)` / `elect(false)`), so an idle group costs only
//! openraft's tick; a change of the commit index still reaches the
//! followers at once (openraft sends it). Instead, one task per node:
//!
//! - **Failure detector**: pings every other node every [`TICK`] over the
//!   node links ([`KIND_ALIVE`]). A node is down when a dial to it is
//!   refused or its connection is lost (a killed process: known at once),
//!   or when it answered nothing for [`DOWN_AFTER`] (a partition).
//! - **Elections**: for each quiescent group this node votes in whose
//!   leader is unknown, down, or this node without leading, the live
//!   voters stand in the order of their ids: the first at once, the next
//!   [`STAND_GAP`] later, ... (each again every [`RETRY`] while the group
//!   has no leader: a voter that heard the old leader less than the
//!   election timeout ago refuses its vote until then). Groups are looked
//!   at on every tick only while a node came or went or some group needs
//!   this node, else every [`SCAN`].
//! - **Fencing**: a leader that heard from less than a majority of its
//!   group's voters for [`FENCE_AFTER`] stops serving (its consumers and
//!   gets wait) until it hears from them again: cut off, it cannot commit,
//!   and the majority elects another leader after [`DOWN_AFTER`] — so it
//!   never hands out what the new leader may have delivered meanwhile.
//! - **Catching up**: a leader whose live follower lags (it was down,
//!   or is being rebuilt) sends it a heartbeat every [`NUDGE`], so it
//!   catches up (entries, or the snapshot) without waiting for a write.
//!
//! - **Hibernation**: a queue group nobody used for its idle time is put
//!   to sleep (`slot`); a sleeping group is looked at through the
//!   metrics it had, and woken to stand, to nudge, or to apply a fence.
//!
//! Known limit: a group whose Raft instance stopped on a node that is
//! otherwise up keeps that node as its leader on the others.

use crate::link::Links;
use crate::network::RaftGroups;
use crate::slot::RaftSlot;
use crate::wire::KIND_ALIVE;
use crate::LinkError;
use ferry_raft::NodeId;
use openraft::ServerState;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// How often the other nodes are pinged and the groups looked at.
pub const TICK: Duration = Duration::from_millis(250);
/// A node that answered nothing for this long is down.
pub const DOWN_AFTER: Duration = Duration::from_secs(2);
/// Between two voters' turns to stand.
pub const STAND_GAP: Duration = Duration::from_secs(1);
/// Before a voter stands again in a group still without a leader (its
/// vote requests may have met the lease of a voter that heard the old
/// leader lately), plus a random part up to as much again: two voters
/// past their turns that retried in step (their electors tick alike)
/// kept splitting the third's votes, each winning a term and losing
/// the next to the other (a 10 s duel, seen once in CI).
pub const RETRY: Duration = Duration::from_millis(400);
/// Between two heartbeats to a lagging follower.
pub const NUDGE: Duration = Duration::from_secs(1);
/// A leader that heard from less than a majority of its group's voters
/// for this long stops serving (before the others, who wait
/// [`DOWN_AFTER`], elect another).
pub const FENCE_AFTER: Duration = Duration::from_secs(1);
/// Every group is looked at least this often.
pub const SCAN: Duration = Duration::from_secs(1);
/// How long an instance started from hibernation refuses votes (the
/// queue groups' lease, openraft's election timeout).
const WOKEN_LEASE: Duration = Duration::from_millis(crate::group::QUEUE_LEASE_MS.1);
/// How long a ping may take.
const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// The other nodes to watch, with their cluster addresses.
pub type Peers = Arc<dyn Fn() -> Vec<(NodeId, String)> + Send + Sync>;

/// What this node knows of the others' liveness.
#[derive(Debug, Default)]
struct Liveness {
    last_ok: HashMap<NodeId, Instant>,
    gone: HashSet<NodeId>,
}

impl Liveness {
    fn alive(&self, me: NodeId, id: NodeId) -> bool {
        id == me
            || (!self.gone.contains(&id)
                && self
                    .last_ok
                    .get(&id)
                    .is_some_and(|t| t.elapsed() < DOWN_AFTER))
    }

    /// Whether `id` answered within `d` (and was not found gone since).
    fn heard_within(&self, me: NodeId, id: NodeId, d: Duration) -> bool {
        id == me
            || (!self.gone.contains(&id) && self.last_ok.get(&id).is_some_and(|t| t.elapsed() < d))
    }

    fn record(&mut self, id: NodeId, r: Result<(), LinkError>) {
        match r {
            Ok(()) => {
                self.last_ok.insert(id, Instant::now());
                self.gone.remove(&id);
            }
            // Refused or lost: the process is gone (or the link broke:
            // the next ping tells).
            Err(LinkError::Unreachable { .. } | LinkError::Lost { .. }) => {
                self.gone.insert(id);
            }
            Err(_) => {}
        }
    }
}

#[derive(Debug, Default)]
struct GroupWatch {
    leaderless_since: Option<Instant>,
    stood_at: Option<Instant>,
    /// How long after `stood_at` it may stand again ([`RETRY`] and a
    /// random part).
    retry: Duration,
    nudged_at: Option<Instant>,
    /// Leading, with a live follower behind.
    lagging: bool,
    /// When this node woke the group (hibernating) to elect a leader.
    woke_at: Option<Instant>,
}

/// Starts this node's elector (ends when `links` close).
pub fn spawn(me: NodeId, links: &Arc<Links>, groups: Arc<RaftGroups>, peers: Peers) {
    let weak = Arc::downgrade(links);
    let t = tokio::spawn(run(me, weak, groups, peers));
    links.track(t);
}

async fn run(me: NodeId, links: Weak<Links>, groups: Arc<RaftGroups>, peers: Peers) {
    let mut live = Liveness::default();
    let mut seen: HashMap<NodeId, bool> = HashMap::new();
    let mut watch: HashMap<u64, GroupWatch> = HashMap::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut scanned: Option<Instant> = None;
    let mut attention = false;
    loop {
        tick.tick().await;
        let Some(l) = links.upgrade() else { return };
        let peers = peers();
        let pings = peers
            .iter()
            .filter(|(id, _)| *id != me)
            .map(|(id, addr)| {
                let (id, link) = (*id, l.link(*id, addr));
                async move {
                    let r = link
                        .request(KIND_ALIVE, 0, bytes::Bytes::new(), PING_TIMEOUT)
                        .await
                        .map(|_| ());
                    (id, r)
                }
            })
            .collect();
        let answers = crate::join_all(pings).await;
        drop(l);
        for (id, r) in answers {
            live.record(id, r);
        }
        // Against what was seen at the last tick (liveness also lapses
        // with time alone: a peer that stopped answering).
        let mut changed = false;
        for (id, addr) in peers.iter().filter(|(id, _)| *id != me) {
            let now = live.alive(me, *id);
            let was = seen.insert(*id, now).unwrap_or(false);
            if now != was {
                changed = true;
                // Once per change (openraft's own complaints about a peer
                // that is away are filtered out of the log).
                if now {
                    tracing::info!(node = %addr, "cluster node up");
                } else {
                    tracing::warn!(node = %addr, "cluster node down (no answer, or its link refused)");
                }
            }
        }
        groups.set_alive(
            peers
                .iter()
                .map(|(id, _)| *id)
                .filter(|id| *id != me && live.alive(me, *id))
                .collect(),
        );
        // Every group is looked at when a node came or went, while some
        // group needs this node, and every SCAN otherwise (new groups,
        // restarted members): 1,000 idle groups cost little.
        let due = scanned.is_none_or(|t| t.elapsed() >= SCAN);
        if !(changed || attention || due) {
            continue;
        }
        scanned = Some(Instant::now());
        attention = false;
        let quiet = groups.quiescent();
        let ids: HashSet<u64> = quiet.iter().map(|(q, _)| *q).collect();
        watch.retain(|g, _| ids.contains(g));
        for (gid, slot) in quiet {
            // A group seen for the first time (declared, or this node
            // starting) gets a turn's grace: its declaring node stands
            // first (RabbitMQ's client-local placement).
            let w = watch.entry(gid).or_insert_with(|| GroupWatch {
                leaderless_since: Some(Instant::now() + STAND_GAP),
                ..GroupWatch::default()
            });
            let fenced = look_at(me, &slot, &live, w).await;
            attention |= fenced.is_some_and(|f| f) || w.leaderless_since.is_some();
            attention |= w.lagging;
            let fenced = fenced.unwrap_or(false);
            if (fenced || groups.is_fenced(gid) != fenced) && !slot.is_awake() {
                // A hibernating leader that is, or was, fenced: its
                // instance's watch applies the fence.
                let s = slot.clone();
                tokio::spawn(async move { s.raft().await.is_some() });
            }
            groups.set_fenced(gid, fenced);
            // Only a group with a live leader sleeps (one being elected
            // would wake again, its lease anew).
            let settled = w.leaderless_since.is_none() && w.woke_at.is_none() && !fenced;
            if settled && slot.drowsy(me) {
                tokio::spawn(async move { slot.sleep_if_idle(me).await });
            }
        }
    }
}

/// One group, as this node sees it: stands for election if it is this
/// node's turn, or (leading) nudges a lagging follower. Returns, when
/// this node leads, whether it must not serve (fenced: it heard from less
/// than a majority of the voters lately).
async fn look_at(
    me: NodeId,
    slot: &Arc<RaftSlot>,
    live: &Liveness,
    w: &mut GroupWatch,
) -> Option<bool> {
    let now = Instant::now();
    let seen = slot.with_metrics(|m| {
        let leader = m.current_leader;
        if m.state != ServerState::Leader && leader.is_some_and(|l| l != me && live.alive(me, l)) {
            // The common case: a live leader elsewhere.
            return None;
        }
        let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().collect();
        let last = m.last_log_index.unwrap_or(0);
        let lagging = m.replication.as_ref().is_some_and(|r| {
            r.iter().any(|(id, matched)| {
                *id != me && live.alive(me, *id) && matched.map_or(0, |l| l.index) < last
            })
        });
        Some((m.state, leader, voters, lagging))
    });
    let Some((state, leader, voters, lagging)) = seen else {
        w.leaderless_since = None;
        w.lagging = false;
        w.woke_at = None;
        return None;
    };
    w.lagging = false;
    if state == ServerState::Leader {
        w.leaderless_since = None;
        w.woke_at = None;
        w.lagging = lagging;
        if lagging && w.nudged_at.is_none_or(|t| now - t >= NUDGE) {
            w.nudged_at = Some(now);
            if let Some(raft) = slot.raft().await {
                let _ = raft.trigger().heartbeat().await;
            }
        }
        let heard = voters
            .iter()
            .filter(|v| live.heard_within(me, **v, FENCE_AFTER))
            .count();
        return Some(heard * 2 <= voters.len());
    }
    if !voters.contains(&me) {
        w.leaderless_since = None;
        w.woke_at = None;
        return None;
    }
    if !slot.is_awake() {
        // Hibernating: woken now, on every live voter (each elector sees
        // the leader go). A started instance refuses votes for the lease
        // (openraft's, from its start), so it stands once that is over.
        // (Woken apart: many groups may have lost the same leader.)
        let s = slot.clone();
        tokio::spawn(async move { s.raft().await.is_some() });
        w.woke_at = Some(now);
    }
    let since = *w.leaderless_since.get_or_insert(now);
    // (The lease that matters is the other voters', which began when
    // their electors woke them, within a tick of this one: standing a
    // little before this node's own ends loses nothing but a term.)
    if now < since || w.woke_at.is_some_and(|t| now + TICK / 5 < t + WOKEN_LEASE) {
        return None;
    }
    let mut standing: Vec<NodeId> = voters.into_iter().filter(|v| live.alive(me, *v)).collect();
    standing.sort_unstable();
    let rank = standing.iter().position(|v| *v == me).unwrap_or(0);
    let turn = since + STAND_GAP * u32::try_from(rank).unwrap_or(u32::MAX);
    // (Every voter retries at the same average pace: a faster one for a
    // woken group made two survivors duel for terms under load.)
    if now >= turn && w.stood_at.is_none_or(|t| now - t >= w.retry) {
        w.stood_at = Some(now);
        w.retry = RETRY + RETRY.mul_f64(rand::random::<f64>());
        tracing::debug!(
            rank,
            ?leader,
            "a quiescent group has no live leader: standing"
        );
        if let Some(raft) = slot.raft().await {
            let _ = raft.trigger().elect().await;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_or_lost_link_is_down_at_once_a_silent_one_after_a_while() {
        let mut live = Liveness::default();
        assert!(live.alive(1, 1), "a node is alive to itself");
        assert!(!live.alive(1, 2), "never heard: down");
        live.record(2, Ok(()));
        assert!(live.alive(1, 2));
        let refused = LinkError::Unreachable {
            addr: "a".into(),
            reason: "refused".into(),
        };
        live.record(2, Err(refused));
        assert!(!live.alive(1, 2), "refused: down at once");
        live.record(2, Ok(()));
        assert!(live.alive(1, 2), "answered again: up");
        live.record(2, Err(LinkError::Lost { addr: "a".into() }));
        assert!(!live.alive(1, 2), "connection lost: down at once");
        live.record(2, Ok(()));
        let silent = LinkError::Timeout {
            addr: "a".into(),
            millis: 1000,
        };
        live.record(2, Err(silent));
        assert!(live.alive(1, 2), "one unanswered ping is not death");
        live.last_ok.insert(
            2,
            Instant::now()
                .checked_sub(DOWN_AFTER)
                .unwrap_or_else(Instant::now),
        );
        assert!(!live.alive(1, 2), "silent for DOWN_AFTER: down");
    }
}
