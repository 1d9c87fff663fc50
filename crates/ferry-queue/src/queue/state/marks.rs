//! Publisher deduplication of a replicated queue: which batch of each
//! proposer the queue applied last.
//!
//! A node's proposer numbers its batches 1, 2, ... and opens each Raft
//! entry with a Mark record (proposer, seq). When it cannot tell whether a
//! batch was committed (the leader changed, the link dropped after the
//! send), it sends the same batch again — to whoever leads — until it is
//! answered. Every replica applies an entry's commands only if its seq is
//! the next one of its proposer ([`Marks::check`]): a seq already applied
//! is a resend (skipped, answered as done), a seq past the next one
//! follows a batch that was lost (skipped; its proposer sends again from
//! the lost one). So a batch is applied once, and a proposer's batches in
//! their order, however the resends interleave with a leadership change.
//!
//! The table is part of the replicated state (every replica decides the
//! same, a snapshot carries it) and holds at most [`MAX_PROPOSERS`]
//! proposers: the one that proposed longest ago goes first. A proposer
//! whose row went finds out from the gap its next batch meets although
//! nothing of its own is missing, and starts over under a new id (it
//! would have had to stay quiet while 64 others proposed).

use std::collections::HashMap;

/// Proposers remembered per queue at most.
pub const MAX_PROPOSERS: usize = 64;

/// What to do with an entry's commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkOutcome {
    /// The proposer's next batch: apply it.
    Apply,
    /// Applied before (a resend): skip it, answer as done.
    Duplicate,
    /// An earlier batch of the proposer is missing: skip it; the proposer
    /// sends again from the missing one.
    Gap,
}

/// One proposer's row: its last applied seq and the log index of the
/// entry that applied it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarkRow {
    /// The proposer.
    pub proposer: u64,
    /// Its last applied batch.
    pub seq: u64,
    /// The index of that batch's entry.
    pub index: u64,
}

/// The last applied batch of each proposer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Marks {
    by: HashMap<u64, (u64, u64)>,
}

impl Marks {
    /// Decides the entry at `index` opened by batch `seq` of `proposer`,
    /// and notes it if it is applied. A proposer not in the table starts
    /// at seq 1.
    pub fn check(&mut self, proposer: u64, seq: u64, index: u64) -> MarkOutcome {
        let last = self.by.get(&proposer).map_or(0, |(s, _)| *s);
        let outcome = if seq <= last {
            MarkOutcome::Duplicate
        } else if seq != last + 1 {
            MarkOutcome::Gap
        } else {
            MarkOutcome::Apply
        };
        if outcome == MarkOutcome::Apply {
            self.by.insert(proposer, (seq, index));
            while self.by.len() > MAX_PROPOSERS {
                let oldest = self
                    .by
                    .iter()
                    .map(|(p, (_, i))| (*i, *p))
                    .min()
                    .map(|(_, p)| p);
                match oldest {
                    Some(p) => self.by.remove(&p),
                    None => break,
                };
            }
        }
        outcome
    }

    /// The rows, by proposer (for an image).
    pub fn rows(&self) -> Vec<MarkRow> {
        let mut rows: Vec<MarkRow> = self
            .by
            .iter()
            .map(|(p, (s, i))| MarkRow {
                proposer: *p,
                seq: *s,
                index: *i,
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
                .map(|r| (r.proposer, (r.seq, r.index)))
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
        assert_eq!(m.check(7, 2, 10), MarkOutcome::Gap, "batch 1 is missing");
        assert_eq!(m.check(7, 1, 11), MarkOutcome::Apply);
        assert_eq!(m.check(7, 1, 12), MarkOutcome::Duplicate, "a resend");
        assert_eq!(m.check(7, 3, 13), MarkOutcome::Gap, "batch 2 is missing");
        assert_eq!(m.check(7, 2, 14), MarkOutcome::Apply);
        assert_eq!(m.check(7, 3, 15), MarkOutcome::Apply);
        assert_eq!(m.check(7, 2, 16), MarkOutcome::Duplicate);
        assert_eq!(m.check(8, 1, 17), MarkOutcome::Apply, "another proposer");
        assert_eq!(
            m.rows(),
            [
                MarkRow {
                    proposer: 7,
                    seq: 3,
                    index: 15
                },
                MarkRow {
                    proposer: 8,
                    seq: 1,
                    index: 17
                }
            ]
        );
        assert_eq!(Marks::from_rows(&m.rows()), m);
    }

    #[test]
    fn the_table_keeps_the_proposers_that_proposed_last() {
        let mut m = Marks::default();
        for p in 0..MAX_PROPOSERS as u64 {
            assert_eq!(m.check(p, 1, 100 + p), MarkOutcome::Apply);
        }
        // Proposer 0 proposes again: proposer 1 is now the oldest.
        assert_eq!(m.check(0, 2, 500), MarkOutcome::Apply);
        // Full: a new proposer pushes out proposer 1.
        assert_eq!(m.check(1000, 1, 501), MarkOutcome::Apply);
        assert_eq!(m.len(), MAX_PROPOSERS);
        assert!(m.rows().iter().all(|r| r.proposer != 1));
        assert!(m.rows().iter().any(|r| r.proposer == 0 && r.seq == 2));
        // Proposer 1 comes back at its next seq: a gap (it starts over
        // under a new id).
        assert_eq!(m.check(1, 2, 502), MarkOutcome::Gap);
        assert_eq!(m.len(), MAX_PROPOSERS);
    }
}
