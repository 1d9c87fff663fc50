//! A queue group's leader decides which records it proposes: before it
//! hands a batch to its Raft — its own node's proposals (`group`'s
//! proposer) or a batch forwarded to it (a `propose` request) — its
//! replica admits each record (`Replica::admit`: a reject-publish length
//! limit counted over the ready messages plus the enqueues in flight,
//! exactly, whichever node they were published through). Only the
//! admitted records are proposed; the refused ones' positions go back to
//! whoever proposed them, whose proposals with a refused record fail (the
//! publisher's basic.nack). What a command means stays the queue's: this
//! module only splits batches and carries the answer.
//!
//! A forward's answer (docs/cluster-wire.md, "Node requests"): `index u64
//! | u32 n | n × u32` (the refused records' positions in the request,
//! ascending). A stream group's answer, and an earlier version's, is the
//! index alone: nothing refused.

use crate::network::{FerryRaft, REDIRECT};
use crate::wire;
use bytes::Bytes;
use ferry_queue::queue::record::{self, Record};
use ferry_queue::queue::{Admission, ProposeDone, Replica, Ticket, REFUSED};
use ferry_raft::replica::EntryAnswer;
use tokio::sync::watch;

/// A queue group's replica as the gate its leader's proposals pass, and
/// whether it serves (its leadership watch says so after each change).
#[derive(Debug, Clone)]
pub(crate) struct Gate {
    pub(crate) replica: Replica,
    pub(crate) serving: watch::Receiver<bool>,
}

/// A batch split by the leader's decision.
pub(crate) struct Split {
    /// The admitted records, in order: what is proposed.
    pub(crate) write: Vec<Bytes>,
    /// The refused records' positions in the batch, ascending.
    pub(crate) refused: Vec<u32>,
    /// What the admitted ones count as pending (given back if the
    /// proposal fails).
    pub(crate) ticket: Ticket,
}

/// Splits `cmds` by the replica's decision; gives `cmds` back if it does
/// not serve (it cannot decide: nothing may be proposed now). The common
/// case — everything admitted — keeps the batch as it is.
pub(crate) fn split(replica: &Replica, cmds: Vec<Bytes>) -> Result<Split, Vec<Bytes>> {
    let (admitted, ticket) = match replica.admit(&cmds) {
        Admission::Decided { admitted, ticket } => (admitted, ticket),
        Admission::NotServing => return Err(cmds),
    };
    if admitted.iter().all(|ok| *ok) {
        let mut write = cmds;
        mark_refusals(&mut write, &[]);
        return Ok(Split {
            write,
            refused: Vec::new(),
            ticket,
        });
    }
    let mut write = Vec::with_capacity(cmds.len());
    let mut refused = Vec::new();
    for (i, (c, ok)) in cmds.into_iter().zip(admitted).enumerate() {
        match ok {
            true => write.push(c),
            // A batch holds at most MAX_FRAME bytes of commands.
            false => refused.push(u32::try_from(i).unwrap_or(u32::MAX)),
        }
    }
    mark_refusals(&mut write, &refused);
    Ok(Split {
        write,
        refused,
        ticket,
    })
}

/// A numbered batch's Mark (always admitted, first) records what this
/// leader refused (whatever a forwarder put there): a resend of the batch
/// learns it (`state::marks`).
fn mark_refusals(write: &mut [Bytes], refused: &[u32]) {
    if let Some(first) = write.first_mut() {
        if let Ok(Record::Mark {
            proposer,
            seq,
            refused: was,
        }) = record::decode(first.clone())
        {
            if was != refused {
                *first = record::encode_mark(proposer, seq, refused);
            }
        }
    }
}

/// Why a replica that does not serve cannot take a forward: the leader
/// its Raft knows (a redirect the forwarder follows), or none yet (a new
/// leader still catching up, or fenced): either way surely not taken, so
/// the forwarder sends it again.
fn not_serving(raft: &FerryRaft) -> String {
    let m = raft.metrics().borrow().clone();
    let other = m.current_leader.filter(|l| *l != m.id);
    match other.and_then(|l| m.membership_config.membership().get_node(&l).cloned()) {
        Some(n) => format!("{REDIRECT}{}", n.addr),
        None => "no leader yet".into(),
    }
}

/// A batch forwarded to this node for queue group `raft` (whose replica
/// here is `replica`): the admitted records proposed as one entry.
/// Answers `index u64 | u32 n | n × u32 refused` once applied (index 0
/// if every record was refused and nothing proposed; a numbered batch's
/// Mark always goes), or the gap error if the entry was skipped.
pub(crate) async fn propose_forwarded(
    raft: &FerryRaft,
    replica: &Replica,
    body: Bytes,
) -> Result<Bytes, String> {
    let cmds = wire::decode_commands(body).map_err(|e| e.to_string())?;
    let Ok(s) = split(replica, cmds) else {
        return Err(not_serving(raft));
    };
    if s.write.is_empty() {
        return Ok(wire::encode_proposed(0, &s.refused));
    }
    match raft.client_write(ferry_raft::Batch::new(s.write)).await {
        Ok(r) => match EntryAnswer::decode(&r.data) {
            EntryAnswer::Applied => Ok(wire::encode_proposed(r.log_id.index, &s.refused)),
            // A resend: what the applied copy's leader refused.
            EntryAnswer::Duplicate(refused) => Ok(wire::encode_proposed(r.log_id.index, &refused)),
            // Skipped: an earlier batch of its proposer is missing (it
            // sends again from that one).
            EntryAnswer::Gap => Err(crate::proposer::GAP_REASON.into()),
            EntryAnswer::Unknown => Err(crate::proposer::UNKNOWN_REASON.into()),
        },
        Err(e) => {
            replica.release(s.ticket);
            Err(crate::network::write_error(e))
        }
    }
}

/// Tells each proposal of a batch its fate: `spans` are the proposals'
/// record counts (in the batch's order) and dones; one with a record at a
/// `refused` position fails with [`REFUSED`], the others get `r`.
pub(crate) fn finish(
    spans: Vec<(usize, Option<ProposeDone>)>,
    refused: &[u32],
    r: Result<(), String>,
) {
    let mut at = 0usize;
    let mut refused = refused.iter().map(|p| *p as usize).peekable();
    for (n, done) in spans {
        let end = at + n;
        let mut hit = false;
        while let Some(p) = refused.next_if(|p| *p < end) {
            hit |= p >= at;
        }
        at = end;
        if let Some(d) = done {
            d(if hit { Err(REFUSED.into()) } else { r.clone() });
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use parking_lot::Mutex;
    use std::sync::Arc;

    /// Proposals of 1, 1, 2 and 1 records (the last without a done),
    /// records 1 and 3 refused: the second and third proposals fail, the
    /// first gets the batch's result.
    #[test]
    fn a_proposal_with_a_refused_record_fails_the_others_get_the_result() {
        type Got = Arc<Mutex<Vec<(usize, Result<(), String>)>>>;
        let got: Got = Arc::default();
        let done = |i: usize| -> Option<ProposeDone> {
            let got = got.clone();
            Some(Box::new(move |r| got.lock().push((i, r))))
        };
        let spans = vec![(1, done(0)), (1, done(1)), (2, done(2)), (1, None)];
        finish(spans, &[1, 3], Ok(()));
        let got = got.lock().clone();
        assert_eq!(
            got,
            [
                (0, Ok(())),
                (1, Err(REFUSED.to_string())),
                (2, Err(REFUSED.to_string()))
            ]
        );
        // A failed batch fails all (nothing refused then).
        let got2: Arc<Mutex<Vec<Result<(), String>>>> = Arc::default();
        let g = got2.clone();
        let d: ProposeDone = Box::new(move |r| g.lock().push(r));
        finish(vec![(3, Some(d))], &[], Err("lost".into()));
        assert_eq!(*got2.lock(), [Err("lost".to_string())]);
    }
}
