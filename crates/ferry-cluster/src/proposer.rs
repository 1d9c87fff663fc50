//! A group's proposer: takes a queue's (or stream's) proposals in the
//! order they were made, batches what is waiting into one entry, and
//! hands it to the group's leader — this node's Raft (`client_write_ff`,
//! which keeps the order), or the leader's node over the link.
//!
//! A replicated queue's proposer numbers its batches (publisher
//! deduplication, `ferry_queue`'s `state::marks`): each entry opens with
//! a Mark record (this proposer's random id, the batch's seq). A batch
//! whose fate is unknown — the leader changed while it was in flight, the
//! link dropped after it was sent — is sent again with the same Mark to
//! whoever leads, until it is answered: every replica applies a batch
//! once, and a proposer's batches in their order (a batch that follows a
//! lost one is skipped and sent again after it). So a publisher waits
//! while its queue has no reachable leader, and is nacked only when the
//! batch was surely not stored (refused by a length limit, the queue
//! deleted) or stayed unanswered for [`RESEND_WAIT`]. A stream's batches
//! are not numbered: a forward in doubt is nacked.
//!
//! On the leader, batches are pipelined (the next goes to the Raft once
//! the log made the previous append durable); a batch is forwarded to
//! another node only when none of this node's is in flight, so a resend
//! never overtakes a batch that could still be committed.

use crate::admission::{finish, split, Gate};
use crate::leadership::Leadership;
use crate::link::Links;
use crate::network::FerryRaft;
use crate::slot::RaftRef;
use crate::wire::{self, KIND_PROPOSE};
use bytes::Bytes;
use ferry_queue::queue::record::encode_mark;
use ferry_queue::queue::{ProposeDone, Proposer, Replica, Ticket};
use ferry_raft::replica::GAP;
use ferry_raft::{Batch, NodeId, RaftLog};
use futures::channel::mpsc;
use futures::StreamExt;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// Commands batched into one entry at most.
const MAX_BATCH: usize = 512;
/// How long a proposal waits for the group to have a leader.
const LEADER_WAIT: Duration = Duration::from_secs(10);
/// How long a numbered batch whose fate is unknown is sent again before
/// its publishers are nacked (in doubt).
pub const RESEND_WAIT: Duration = Duration::from_secs(300);
/// The reason a queue group's leader gives for a forwarded batch it
/// skipped because an earlier batch of its proposer is missing.
pub(crate) const GAP_REASON: &str = "gap: an earlier batch of this proposer is missing";

pub(crate) struct Proposal {
    records: Vec<Bytes>,
    done: Option<ProposeDone>,
}

/// Hands a queue's commands to its group, in order.
#[derive(Debug, Clone)]
pub struct GroupProposer {
    tx: mpsc::UnboundedSender<Proposal>,
}

impl GroupProposer {
    /// A proposer and the receiver [`run_proposer`] takes its proposals
    /// from. (futures' channel allocates per message: an idle queue's
    /// costs no block of slots.)
    pub(crate) fn new() -> (Self, mpsc::UnboundedReceiver<Proposal>) {
        let (tx, rx) = mpsc::unbounded();
        (GroupProposer { tx }, rx)
    }
}

impl std::fmt::Debug for Proposal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proposal")
            .field("records", &self.records.len())
            .finish()
    }
}

impl Proposer for GroupProposer {
    fn propose(&self, records: Vec<Bytes>, done: Option<ProposeDone>) {
        if let Err(e) = self.tx.unbounded_send(Proposal { records, done }) {
            if let Some(d) = e.into_inner().done {
                d(Err("the queue's group stopped".into()));
            }
        }
    }
}

/// How a proposer numbers its batches (a queue group's; None for a
/// stream's).
struct Numbering {
    id: u64,
    next: u64,
}

impl Numbering {
    fn new() -> Self {
        Numbering {
            id: rand::random::<u64>().max(1),
            next: 1,
        }
    }

    /// Opens `sent` with this proposer's next Mark.
    fn mark(&mut self, sent: &mut Sent) {
        let m = encode_mark(self.id, self.next);
        self.next += 1;
        match sent.mark {
            Some(_) => sent.cmds[0] = m,
            None => sent.cmds.insert(0, m),
        }
        sent.mark = Some(self.id);
    }

    /// Starts over under a new id (see `state::marks`): the batches of
    /// `flight` get new Marks, in order.
    fn renew<'a>(&mut self, flight: impl Iterator<Item = &'a mut Sent>) {
        *self = Numbering::new();
        for s in flight {
            self.mark(s);
        }
    }
}

/// A batch handed over and not settled yet.
struct Sent {
    /// What is sent (a numbered batch's Mark first), kept for a resend.
    cmds: Vec<Bytes>,
    /// The proposer id of the Mark at `cmds[0]`, if numbered.
    mark: Option<u64>,
    /// The proposer id of the Mark the pending answer is about.
    sent_with: Option<u64>,
    /// The proposals' record counts and dones (the Mark's span first).
    spans: Vec<(usize, Option<ProposeDone>)>,
    outcome: Pending,
}

enum Pending {
    Known(Outcome),
    Waiting(oneshot::Receiver<Outcome>),
}

/// What became of a batch.
#[derive(Debug)]
enum Outcome {
    /// Committed and applied (or a resend of one that was): the refused
    /// records' positions.
    Done(Vec<u32>),
    /// Skipped: an earlier batch of this proposer is missing.
    Gap,
    /// Failed: maybe stored, maybe not (surely not if `definite`).
    Failed { why: String, definite: bool },
}

fn stopped() -> Outcome {
    Outcome::Failed {
        why: "the group stopped".into(),
        definite: false,
    }
}

impl Sent {
    /// Waits for the answer and keeps it (cancel-safe).
    async fn answered(&mut self) {
        if let Pending::Waiting(rx) = &mut self.outcome {
            let o = rx.await.unwrap_or_else(|_| stopped());
            self.outcome = Pending::Known(o);
        }
    }

    /// Whether the answer is here (kept).
    fn ready(&mut self) -> bool {
        if let Pending::Waiting(rx) = &mut self.outcome {
            match rx.try_recv() {
                Ok(o) => self.outcome = Pending::Known(o),
                Err(oneshot::error::TryRecvError::Empty) => return false,
                Err(oneshot::error::TryRecvError::Closed) => {
                    self.outcome = Pending::Known(stopped())
                }
            }
        }
        true
    }

    /// The answer (call after `answered`).
    fn take(&mut self) -> Outcome {
        match std::mem::replace(&mut self.outcome, Pending::Known(stopped())) {
            Pending::Known(o) => o,
            Pending::Waiting(_) => stopped(),
        }
    }

    fn done(&self) -> bool {
        matches!(self.outcome, Pending::Known(Outcome::Done(_)))
    }
}

impl Drop for Sent {
    /// A batch dropped unsettled (its proposer stopped with the group):
    /// its publishers learn it.
    fn drop(&mut self) {
        if !self.spans.is_empty() {
            finish(
                std::mem::take(&mut self.spans),
                &[],
                Err("the queue's group stopped".into()),
            );
        }
    }
}

/// Takes proposals in order and hands them to the group (module docs).
/// A queue group's `gate` is its replica, which decides on the leader
/// which records are proposed (`admission`); a stream's has none.
/// With this node's `log` of the group, a batch this node's Raft took as
/// leader is followed by the next only once the log made its append
/// durable (or the batch was answered): openraft appends one entry per
/// write and waits for each, so handing over every small batch at once
/// would queue one entry and one durability round per batch — under a
/// busy node's long rounds a fast publisher's confirms waited for dozens
/// of rounds. The gate may open a round early (another append settled
/// first: a new leader's blank entry, a membership change): that only
/// costs batching. `numbered`: a queue group's batches carry Marks.
pub(crate) async fn run_proposer(
    lead: Leadership,
    links: Arc<Links>,
    group: u64,
    mut rx: mpsc::UnboundedReceiver<Proposal>,
    (gate, log): (Option<Gate>, Option<RaftLog>),
    numbered: bool,
) {
    let to = Target {
        lead,
        links,
        group,
        gate,
    };
    let mut numbering = numbered.then(Numbering::new);
    let mut flight: VecDeque<Sent> = VecDeque::new();
    loop {
        settle_ready(&to, &mut flight, &mut numbering).await;
        let first = if flight.is_empty() {
            match rx.next().await {
                Some(p) => p,
                None => return,
            }
        } else {
            tokio::select! {
                p = rx.next() => match p {
                    Some(p) => p,
                    None => {
                        settle_all(&to, &mut flight, &mut numbering).await;
                        return;
                    }
                },
                // The oldest batch's answer came: settle it first.
                _ = wait_front(&mut flight) => continue,
            }
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let mut sent = Sent {
            cmds: Vec::new(),
            mark: None,
            sent_with: None,
            spans: Vec::new(),
            outcome: Pending::Known(stopped()),
        };
        if let Some(n) = numbering.as_mut() {
            n.mark(&mut sent);
            sent.spans.push((1, None));
        }
        for p in batch {
            sent.spans.push((p.records.len(), p.done));
            sent.cmds.extend(p.records);
        }
        let durable = log.as_ref().map(RaftLog::append_mark);
        loop {
            sent.sent_with = sent.mark;
            // Boxed: the task waits for proposals with a small future (an
            // idle queue's task stays small).
            let h = Box::pin(hand_over(&to, sent.cmds.clone(), flight.is_empty())).await;
            match h {
                Handover::Local(answer) => {
                    let (answered, on_answer) = oneshot::channel::<()>();
                    let (tx, rx_outcome) = oneshot::channel();
                    tokio::spawn(async move {
                        let o = answer.outcome().await;
                        drop(answered);
                        let _ = tx.send(o);
                    });
                    sent.outcome = Pending::Waiting(rx_outcome);
                    flight.push_back(sent);
                    if let (Some(log), Some(mark)) = (&log, durable) {
                        Box::pin(async {
                            tokio::select! {
                                _ = log.flushed_past(mark) => {}
                                _ = on_answer => {}
                            }
                        })
                        .await;
                    }
                }
                Handover::Done(o) => {
                    sent.outcome = Pending::Known(o);
                    flight.push_back(sent);
                }
                Handover::Blocked => {
                    // Another node leads now: this node's batches in
                    // flight are settled (sent again if need be) first.
                    settle_all(&to, &mut flight, &mut numbering).await;
                    if let Some(n) = numbering.as_mut().filter(|n| Some(n.id) != sent.mark) {
                        // Renewed meanwhile: this batch was never sent.
                        n.mark(&mut sent);
                    }
                    continue;
                }
            }
            break;
        }
    }
}

/// Where a proposer's batches go.
struct Target {
    lead: Leadership,
    links: Arc<Links>,
    group: u64,
    gate: Option<Gate>,
}

/// Waits until the oldest batch in flight is answered.
async fn wait_front(flight: &mut VecDeque<Sent>) {
    if let Some(front) = flight.front_mut() {
        front.answered().await;
    }
}

/// Settles the answered batches at the front of `flight`, in order; one
/// that did not go through starts [`settle_all`].
async fn settle_ready(to: &Target, flight: &mut VecDeque<Sent>, numbering: &mut Option<Numbering>) {
    while let Some(front) = flight.front_mut() {
        if !front.ready() {
            return;
        }
        if !front.done() {
            settle_all(to, flight, numbering).await;
            return;
        }
        if let Some(mut s) = flight.pop_front() {
            if let Outcome::Done(refused) = s.take() {
                finish(std::mem::take(&mut s.spans), &refused, Ok(()));
            }
        }
    }
}

/// Settles every batch in flight, in order: waits for each answer; a
/// numbered batch that did not go through is sent again (alone, to
/// whoever leads) until it does, or is surely not stored, or
/// [`RESEND_WAIT`] passes.
async fn settle_all(to: &Target, flight: &mut VecDeque<Sent>, numbering: &mut Option<Numbering>) {
    while let Some(mut s) = flight.pop_front() {
        s.answered().await;
        let deadline = tokio::time::Instant::now() + RESEND_WAIT;
        let mut changes = to.lead.changes();
        loop {
            let (why, definite) = match s.take() {
                Outcome::Done(refused) => {
                    finish(std::mem::take(&mut s.spans), &refused, Ok(()));
                    break;
                }
                Outcome::Gap => match numbering.as_mut() {
                    // Nothing of this proposer's is missing (every older
                    // batch was settled): its row was pruned, or an older
                    // batch was given up. Start over under a new id (once:
                    // a gap of an older Mark is just sent again).
                    Some(n) => {
                        if s.sent_with == Some(n.id) {
                            n.renew(std::iter::once(&mut s).chain(flight.iter_mut()));
                        }
                        (String::new(), false)
                    }
                    None => ("skipped by the group".into(), true),
                },
                Outcome::Failed { why, definite } => (why, definite),
            };
            if numbering.is_none() || definite || tokio::time::Instant::now() >= deadline {
                if let Some(n) = numbering.as_mut() {
                    // This batch may never be applied: the later ones
                    // would wait behind it.
                    n.renew(flight.iter_mut());
                }
                finish(std::mem::take(&mut s.spans), &[], Err(why));
                break;
            }
            if !why.is_empty() {
                tracing::debug!(group = to.group, reason = %why, "a batch in doubt is sent again");
                // Let the leadership settle (or a little while).
                let _ = tokio::time::timeout(Duration::from_millis(100), changes.changed()).await;
            }
            s.sent_with = s.mark;
            let o = match Box::pin(hand_over(to, s.cmds.clone(), true)).await {
                Handover::Local(answer) => answer.outcome().await,
                Handover::Done(o) => o,
                Handover::Blocked => stopped(),
            };
            s.outcome = Pending::Known(o);
        }
    }
}

/// The answer openraft gives a batch this node's Raft took as leader.
type Answer = <<ferry_raft::TypeConfig as openraft::RaftTypeConfig>::Responder as openraft::raft::responder::Responder<ferry_raft::TypeConfig>>::Receiver;

/// What became of a hand-over.
enum Handover {
    /// Given to this node's Raft as leader: the answer comes later.
    Local(LocalAnswer),
    /// Forwarded and answered, or failed.
    Done(Outcome),
    /// Another node leads, and this node's batches are in flight: not
    /// sent (see the module docs).
    Blocked,
}

/// A batch this node's Raft took as leader. The records at `refused`
/// were not given (the replica refused them); `ticket` is what they
/// count as pending, given back if the batch fails.
struct LocalAnswer {
    answer: Answer,
    refused: Vec<u32>,
    ticket: Ticket,
    replica: Option<Replica>,
    /// The group does not hibernate before the answer.
    _using: RaftRef,
}

impl LocalAnswer {
    async fn outcome(self) -> Outcome {
        let o = match self.answer.await {
            Ok(Ok(r)) if r.data.0.as_ref() == GAP => Outcome::Gap,
            Ok(Ok(_)) => Outcome::Done(self.refused),
            Ok(Err(e)) => Outcome::Failed {
                why: e.to_string(),
                definite: false,
            },
            Err(_) => Outcome::Failed {
                why: "the group stopped".into(),
                definite: false,
            },
        };
        if !matches!(o, Outcome::Done(_)) {
            if let Some(r) = &self.replica {
                r.release(self.ticket);
            }
        }
        o
    }
}

/// Hands one batch to the group's leader: this node's Raft, or the
/// leader's node over the link (only if `may_forward`, else Blocked). A
/// forward the leader surely did not take (the link was down, another
/// node leads now, no leader yet) is sent again to whoever leads next,
/// until `LEADER_WAIT`; one that may have been taken (the connection
/// dropped after sending) fails, in doubt (a numbered batch is then sent
/// again by the proposer). On the leader, the gate decides first
/// (waiting while its replica does not serve yet: it catches up on what
/// was logged before this leadership).
async fn hand_over(to: &Target, mut cmds: Vec<Bytes>, may_forward: bool) -> Handover {
    let failed = |why: &str, definite: bool| {
        Handover::Done(Outcome::Failed {
            why: why.into(),
            definite,
        })
    };
    let deadline = tokio::time::Instant::now() + LEADER_WAIT;
    let lead = &to.lead;
    let mut changes = lead.changes();
    loop {
        if let Leadership::Member { slot, me } = lead {
            let Some(raft) = slot.raft().await else {
                return failed("the queue's group stopped", true);
            };
            let Some(leader) = wait_for_leader(&raft).await else {
                return failed("the queue's group has no leader", false);
            };
            if leader == *me {
                let Some(g) = &to.gate else {
                    return local(raft, cmds, Vec::new(), None).await;
                };
                // Marked seen before deciding: a change after it wakes
                // the wait below.
                let mut serving = g.serving.clone();
                serving.borrow_and_update();
                cmds = match split(&g.replica, cmds) {
                    Ok(s) => {
                        return local(raft, s.write, s.refused, Some((&g.replica, s.ticket))).await
                    }
                    Err(back) => back,
                };
                if tokio::time::Instant::now() >= deadline {
                    return failed("the queue's leader does not serve yet", false);
                }
                tokio::select! {
                    _ = serving.changed() => {}
                    _ = changes.changed() => {}
                    _ = tokio::time::sleep_until(deadline) => {}
                }
                continue;
            }
        }
        if !may_forward {
            return Handover::Blocked;
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some((leader, addr)) = lead.leader() else {
            if left.is_zero() {
                return failed("the leader's address is unknown", false);
            }
            let _ =
                tokio::time::timeout(Duration::from_millis(100).min(left), changes.changed()).await;
            continue;
        };
        let sent = to
            .links
            .link(leader, &addr)
            .request(KIND_PROPOSE, to.group, wire::encode_commands(&cmds), left)
            .await;
        match sent {
            Ok(f) => {
                return match wire::decode_refused(f.body, cmds.len()) {
                    Ok(refused) => Handover::Done(Outcome::Done(refused)),
                    // Taken, but which records is not known: in doubt.
                    Err(e) => failed(&format!("the leader's answer: {e}"), false),
                };
            }
            Err(crate::LinkError::Remote { reason, .. }) if reason == GAP_REASON => {
                return Handover::Done(Outcome::Gap)
            }
            Err(e) if e.not_taken() && !left.is_zero() => {
                let hint = match &e {
                    crate::LinkError::Remote { reason, .. } => reason
                        .strip_prefix(crate::network::REDIRECT)
                        .map(str::to_owned),
                    _ => None,
                };
                lead.missed(leader, hint.as_deref());
                // Wait for the leadership to move (or a short while).
                let _ =
                    tokio::time::timeout(Duration::from_millis(100).min(left), changes.changed())
                        .await;
            }
            Err(e) => return failed(&e.to_string(), false),
        }
    }
}

/// Gives `write` to this node's Raft as the group's leader (nothing if
/// every record was refused); a failure gives the replica's `ticket` back.
async fn local(
    raft: RaftRef,
    write: Vec<Bytes>,
    refused: Vec<u32>,
    gate: Option<(&Replica, Ticket)>,
) -> Handover {
    let ticket = gate.map(|(_, t)| t).unwrap_or_default();
    if write.is_empty() {
        return Handover::Done(Outcome::Done(refused));
    }
    match raft.client_write_ff(Batch::new(write)).await {
        Ok(answer) => Handover::Local(LocalAnswer {
            answer,
            refused,
            ticket,
            replica: gate.map(|(r, _)| r.clone()),
            _using: raft,
        }),
        Err(e) => {
            if let Some((r, t)) = gate {
                r.release(t);
            }
            Handover::Done(Outcome::Failed {
                why: e.to_string(),
                definite: false,
            })
        }
    }
}

/// The group's leader, waiting a while for one.
async fn wait_for_leader(raft: &FerryRaft) -> Option<NodeId> {
    // The server metrics: those whose changes wake the callers (the full
    // ones are published after them).
    let mut rx = raft.server_metrics();
    let deadline = tokio::time::Instant::now() + LEADER_WAIT;
    loop {
        if let Some(l) = rx.borrow().current_leader {
            return Some(l);
        }
        if tokio::time::timeout_at(deadline, rx.changed())
            .await
            .is_err()
        {
            return None;
        }
    }
}
