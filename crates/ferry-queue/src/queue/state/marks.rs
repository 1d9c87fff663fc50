//! Publisher deduplication of a replicated queue: which batch of each
//! proposer the queue applied last, and which records of its recent
//! batches the leader refused.
//!
//! A node's proposer numbers its batches 1, 2, ... and opens each Raft
//! entry with a Mark record (proposer, seq; the leader adds the positions
//! its length limit refused). When it cannot tell whether a batch was
//! committed (the leader changed, the link dropped after the send), it
//! sends the same batch again — to whoever leads — until it is answered.
//! Every replica applies an entry's commands only if its seq is the next
//! one of its proposer ([`Marks::check`]): a seq already applied is a
//! resend (skipped, answered with what the applied copy's leader refused,
//! so a resend never confirms a message that was refused), a seq past the
//! next one follows a batch that was lost (skipped; its proposer sends
//! again from the lost one). So a batch is applied once, and a proposer's
//! batches in their order, however the resends interleave with a
//! leadership change.
//!
//! The table is part of the replicated state (every replica decides the
//! same, a snapshot carries it) and holds at most [`MAX_PROPOSERS`]
//! proposers: the one that proposed longest ago goes first. A proposer
//! whose row went finds out from the gap its next batch meets although
//! nothing of its own is missing, and starts over under a new id (it
//! would have had to stay quiet while 64 others proposed). The refusals
//! of a proposer's last [`WINDOW`] batches are kept; a resend of an older
//! batch is answered "unknown" (its publishers are nacked, in doubt).

use std::collections::HashMap;

/// Proposers remembered per queue at most.
pub const MAX_PROPOSERS: usize = 64;
/// A proposer's batches whose refusals are remembered (the last ones).
pub const WINDOW: u64 = 64;

/// What to do with an entry's commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MarkOutcome {
    /// The proposer's next batch: apply it.
    Apply,
    /// Applied before (a resend): skip it; the applied copy's leader
    /// refused the records at these positions.
    Duplicate(Vec<u32>),
    /// Applied before, too long ago to know what was refused: skip it.
    DuplicateUnknown,
    /// An earlier batch of the proposer is missing: skip it; the proposer
    /// sends again from the missing one.
    Gap,
}

/// One proposer's row: its last applied seq, the log index of the entry
/// that applied it, and the refused positions of its recent batches that
/// had any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkRow {
    /// The proposer.
    pub proposer: u64,
    /// Its last applied batch.
    pub seq: u64,
    /// The index of that batch's entry.
    pub index: u64,
    /// (seq, refused positions) of its batches within [`WINDOW`] of
    /// `seq` that had refusals, by seq.
    pub refused: Vec<(u64, Vec<u32>)>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Row {
    seq: u64,
    index: u64,
    refused: Vec<(u64, Vec<u32>)>,
}

/// The last applied batch of each proposer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Marks {
    by: HashMap<u64, Row>,
}

impl Marks {
    /// Decides the entry at `index` opened by batch `seq` of `proposer`
    /// (whose leader refused the records at `refused`), and notes it if
    /// it is applied. A proposer not in the table starts at seq 1.
    pub fn check(&mut self, proposer: u64, seq: u64, index: u64, refused: &[u32]) -> MarkOutcome {
        let row = self.by.get(&proposer);
        let last = row.map_or(0, |r| r.seq);
        if seq <= last {
            return match row {
                Some(r) if last - seq < WINDOW => MarkOutcome::Duplicate(
                    r.refused
                        .iter()
                        .find(|(s, _)| *s == seq)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default(),
                ),
                _ => MarkOutcome::DuplicateUnknown,
            };
        }
        if seq != last + 1 {
            return MarkOutcome::Gap;
        }
        let row = self.by.entry(proposer).or_default();
        row.seq = seq;
        row.index = index;
        row.refused.retain(|(s, _)| seq.saturating_sub(*s) < WINDOW);
        if !refused.is_empty() {
            row.refused.push((seq, refused.to_vec()));
        }
        while self.by.len() > MAX_PROPOSERS {
            let oldest = self
                .by
                .iter()
                .map(|(p, r)| (r.index, *p))
                .min()
                .map(|(_, p)| p);
            match oldest {
                Some(p) => self.by.remove(&p),
                None => break,
            };
        }
        MarkOutcome::Apply
    }

    /// The rows, by proposer (for an image).
    pub fn rows(&self) -> Vec<MarkRow> {
        let mut rows: Vec<MarkRow> = self
            .by
            .iter()
            .map(|(p, r)| MarkRow {
                proposer: *p,
                seq: r.seq,
                index: r.index,
                refused: r.refused.clone(),
            })
            .collect();
        rows.sort_unstable_by_key(|r| r.proposer);
        rows
    }

    /// The table `rows` describe.
    pub fn from_rows(rows: &[MarkRow]) -> Self {
        Marks {
            by: rows
                .iter()
                .map(|r| {
                    (
                        r.proposer,
                        Row {
                            seq: r.seq,
                            index: r.index,
                            refused: r.refused.clone(),
                        },
                    )
                })
                .collect(),
        }
    }

    /// Proposers remembered.
    pub fn len(&self) -> usize {
        self.by.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.by.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_batch_applies_once_and_in_order() {
        let mut m = Marks::default();
        assert_eq!(
            m.check(7, 2, 10, &[]),
            MarkOutcome::Gap,
            "batch 1 is missing"
        );
        assert_eq!(m.check(7, 1, 11, &[]), MarkOutcome::Apply);
        assert_eq!(m.check(7, 1, 12, &[]), MarkOutcome::Duplicate(vec![]));
        assert_eq!(
            m.check(7, 3, 13, &[]),
            MarkOutcome::Gap,
            "batch 2 is missing"
        );
        assert_eq!(m.check(7, 2, 14, &[2]), MarkOutcome::Apply);
        assert_eq!(m.check(7, 3, 15, &[]), MarkOutcome::Apply);
        // A resend of batch 2 learns what its applied copy's leader
        // refused (whatever the resend's leader decided).
        assert_eq!(m.check(7, 2, 16, &[]), MarkOutcome::Duplicate(vec![2]));
        assert_eq!(
            m.check(8, 1, 17, &[]),
            MarkOutcome::Apply,
            "another proposer"
        );
        assert_eq!(
            m.rows(),
            [
                MarkRow {
                    proposer: 7,
                    seq: 3,
                    index: 15,
                    refused: vec![(2, vec![2])]
                },
                MarkRow {
                    proposer: 8,
                    seq: 1,
                    index: 17,
                    refused: vec![]
                }
            ]
        );
        assert_eq!(Marks::from_rows(&m.rows()), m);
    }

    #[test]
    fn refusals_are_kept_for_the_last_batches_only() {
        let mut m = Marks::default();
        assert_eq!(m.check(1, 1, 1, &[1, 3]), MarkOutcome::Apply);
        for s in 2..=WINDOW {
            assert_eq!(m.check(1, s, s, &[]), MarkOutcome::Apply);
        }
        assert_eq!(m.check(1, 1, 100, &[]), MarkOutcome::Duplicate(vec![1, 3]));
        assert_eq!(m.check(1, WINDOW + 1, 101, &[]), MarkOutcome::Apply);
        assert_eq!(m.check(1, 1, 102, &[]), MarkOutcome::DuplicateUnknown);
        assert!(m.rows()[0].refused.is_empty(), "batch 1's refusal is gone");
    }

    #[test]
    fn the_table_keeps_the_proposers_that_proposed_last() {
        let mut m = Marks::default();
        for p in 0..MAX_PROPOSERS as u64 {
            assert_eq!(m.check(p, 1, 100 + p, &[]), MarkOutcome::Apply);
        }
        // Proposer 0 proposes again: proposer 1 is now the oldest.
        assert_eq!(m.check(0, 2, 500, &[]), MarkOutcome::Apply);
        // Full: a new proposer pushes out proposer 1.
        assert_eq!(m.check(1000, 1, 501, &[]), MarkOutcome::Apply);
        assert_eq!(m.len(), MAX_PROPOSERS);
        assert!(m.rows().iter().all(|r| r.proposer != 1));
        assert!(m.rows().iter().any(|r| r.proposer == 0 && r.seq == 2));
        // Proposer 1 comes back at its next seq: a gap (it starts over
        // under a new id).
        assert_eq!(m.check(1, 2, 502, &[]), MarkOutcome::Gap);
        assert_eq!(m.len(), MAX_PROPOSERS);
    }
}
