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
use ferry_raft::replica::EntryAnswer;
use ferry_raft::{Batch, NodeId, RaftLog};
use futures::channel::mpsc;
use futures::StreamExt;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

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
/// The reason given for a resend of a batch applied too long ago to say
/// which of its records were refused (its publishers are nacked).
pub(crate) const UNKNOWN_REASON: &str = "in doubt: a resend of a batch applied long ago";
/// A batch this node's Raft took as leader is sent again once this node
/// no longer leads (openraft may keep the answer of a leader that stepped
/// down for ever), or, whatever happens, after this long without an
/// answer (a slow leader's commit is waited for, not duplicated).
const ANSWER_WAIT: Duration = Duration::from_secs(60);
/// Batches in flight at most (the oldest is settled before the next).
const MAX_FLIGHT: usize = 64;

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
        let m = encode_mark(self.id, self.next, &[]);
        self.next += 1;
        match sent.mark {
            Some(_) => sent.cmds[0] = m,
            None => sent.cmds.insert(0, m),
        }
        sent.mark = Some(self.id);
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
    /// Whether that attempt went while no older batch was unsettled (a gap
    /// it met then means this proposer's row is gone: `settle_all`).
    alone: bool,
    /// When that attempt went.
    since: Instant,
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
    /// Failed: maybe stored, maybe not (for good if `definite`: sending
    /// it again cannot help).
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

    /// The answer; a late one counts as failed (in doubt).
    fn take(&mut self) -> Outcome {
        match std::mem::replace(&mut self.outcome, Pending::Known(stopped())) {
            Pending::Known(o) => o,
            Pending::Waiting(_) => Outcome::Failed {
                why: format!("no answer within {ANSWER_WAIT:?}"),
                definite: false,
            },
        }
    }

    fn done(&self) -> bool {
        matches!(self.outcome, Pending::Known(Outcome::Done(_)))
    }

    fn late(&self) -> Instant {
        self.since + ANSWER_WAIT
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
        let first = match flight.front().map(Sent::late) {
            None => match rx.next().await {
                Some(p) => p,
                None => return,
            },
            // Enough in flight: the oldest is settled first.
            Some(late) if flight.len() >= MAX_FLIGHT => {
                let _ = tokio::time::timeout_at(late, wait_front(&mut flight)).await;
                if Instant::now() >= late {
                    settle_all(&to, &mut flight, &mut numbering).await;
                }
                continue;
            }
            Some(late) => tokio::select! {
                p = rx.next() => match p {
                    Some(p) => p,
                    None => {
                        settle_all(&to, &mut flight, &mut numbering).await;
                        return;
                    }
                },
                // The oldest batch's answer came: settle it first.
                _ = wait_front(&mut flight) => continue,
                // It is late (its leader may have stepped down, keeping
                // its answer): settle everything, sending it again.
                _ = tokio::time::sleep_until(late) => {
                    settle_all(&to, &mut flight, &mut numbering).await;
                    continue;
                }
            },
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
            alone: true,
            since: Instant::now(),
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
            sent.alone = flight.is_empty();
            // Boxed: the task waits for proposals with a small future (an
            // idle queue's task stays small).
            let h = Box::pin(hand_over(&to, sent.cmds.clone(), flight.is_empty())).await;
            sent.since = Instant::now();
            match h {
                Handover::Local(answer) => {
                    let (answered, on_answer) = oneshot::channel::<()>();
                    let (tx, rx_outcome) = oneshot::channel();
                    let lead = to.lead.clone();
                    tokio::spawn(async move {
                        // Bounded: an answer openraft keeps for ever
                        // would keep the group awake for ever.
                        let o = answer.outcome_while_leading(&lead).await;
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
/// that did not go through, or is late, starts [`settle_all`].
async fn settle_ready(to: &Target, flight: &mut VecDeque<Sent>, numbering: &mut Option<Numbering>) {
    while let Some(front) = flight.front_mut() {
        if !front.ready() {
            if Instant::now() >= front.late() {
                settle_all(to, flight, numbering).await;
            }
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

/// Settles every batch in flight, in order: waits for each answer (until
/// it is late); a numbered batch that did not go through is sent again
/// (alone, to whoever leads) until it does, or cannot, or
/// [`RESEND_WAIT`] passes — then it and every later batch not yet
/// answered as done fail (in doubt: their earlier copies may still be
/// applied, so they are not sent again under a new id) and the proposer
/// starts over under a new id.
async fn settle_all(to: &Target, flight: &mut VecDeque<Sent>, numbering: &mut Option<Numbering>) {
    while let Some(mut s) = flight.pop_front() {
        let _ = tokio::time::timeout_at(s.late(), s.answered()).await;
        let deadline = Instant::now() + RESEND_WAIT;
        let mut changes = to.lead.changes();
        loop {
            let (why, definite) = match s.take() {
                Outcome::Done(refused) => {
                    finish(std::mem::take(&mut s.spans), &refused, Ok(()));
                    break;
                }
                Outcome::Gap => match numbering.as_mut() {
                    // Sent while nothing older of this proposer was
                    // unsettled, yet an earlier batch is missing: its row
                    // was pushed out of the table. Start over under a new
                    // id. (A gap met while older batches were unsettled
                    // was theirs: just send it again.)
                    Some(n) => {
                        if s.sent_with == Some(n.id) && s.alone {
                            *n = Numbering::new();
                            n.mark(&mut s);
                            for later in flight.iter_mut() {
                                n.mark(later);
                            }
                        }
                        ("an earlier batch of this proposer is missing".into(), false)
                    }
                    None => ("skipped by the group".into(), true),
                },
                Outcome::Failed { why, definite } => (why, definite),
            };
            if numbering.is_none() || definite || Instant::now() >= deadline {
                finish(std::mem::take(&mut s.spans), &[], Err(why.clone()));
                if let Some(n) = numbering.as_mut() {
                    give_up(flight, &why);
                    *n = Numbering::new();
                }
                break;
            }
            tracing::debug!(group = to.group, reason = %why, "a batch in doubt is sent again");
            // Let the leadership settle (or a little while).
            let _ = tokio::time::timeout(Duration::from_millis(100), changes.changed()).await;
            s.sent_with = s.mark;
            s.alone = true;
            let o = match Box::pin(hand_over(to, s.cmds.clone(), true)).await {
                Handover::Local(answer) => answer.outcome_while_leading(&to.lead).await,
                Handover::Done(o) => o,
                Handover::Blocked => stopped(),
            };
            s.outcome = Pending::Known(o);
        }
    }
}

/// Fails every batch of `flight` not answered as done (each an answer
/// away at most: it is not waited for).
fn give_up(flight: &mut VecDeque<Sent>, why: &str) {
    for mut s in flight.drain(..) {
        s.ready();
        match s.take() {
            Outcome::Done(refused) => finish(std::mem::take(&mut s.spans), &refused, Ok(())),
            _ => finish(
                std::mem::take(&mut s.spans),
                &[],
                Err(format!("in doubt: an earlier batch failed ({why})")),
            ),
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
    /// The answer, or a failure (in doubt) once this node no longer leads
    /// or after [`ANSWER_WAIT`].
    async fn outcome_while_leading(self, lead: &Leadership) -> Outcome {
        let in_doubt = |why: &str| Outcome::Failed {
            why: why.into(),
            definite: false,
        };
        tokio::select! {
            o = self.outcome() => o,
            _ = lead.until_not_leading() => in_doubt("this node no longer leads the group"),
            _ = tokio::time::sleep(ANSWER_WAIT) => in_doubt("no answer in time"),
        }
    }

    async fn outcome(self) -> Outcome {
        let failed = |why: String| {
            if let Some(r) = &self.replica {
                r.release(self.ticket);
            }
            Outcome::Failed {
                why,
                definite: false,
            }
        };
        match self.answer.await {
            // (A skipped entry's admitted Enqueues already left the
            // pending count when the replica skipped them.)
            Ok(Ok(r)) => match EntryAnswer::decode(&r.data) {
                EntryAnswer::Applied => Outcome::Done(self.refused),
                EntryAnswer::Duplicate(refused) => Outcome::Done(refused),
                EntryAnswer::Gap => Outcome::Gap,
                EntryAnswer::Unknown => Outcome::Failed {
                    why: UNKNOWN_REASON.into(),
                    definite: true,
                },
            },
            Ok(Err(e)) => failed(e.to_string()),
            Err(_) => failed("the group stopped".into()),
        }
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
            Err(crate::LinkError::Remote { reason, .. }) if reason == UNKNOWN_REASON => {
                return failed(UNKNOWN_REASON, true)
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
