//! [`StateImage`]: a replicated queue's state as data, for its group's
//! snapshot — every message the replica holds with what the index knows
//! of it (never its body: the snapshot carries the records beside the
//! image), and each proposer's last applied batch (`marks`), and the pure
//! codec of that image (`docs/queue-snapshot.md`).
//!
//! Checked-out messages are imaged as ready: checkouts are not commands,
//! so no other replica ever saw them leave, and a restart or a new leader
//! returns them anyway.

use super::{Entry, MarkRow, Marks, QueueState};
use ferry_log::RecordPos;

/// One message of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageRow {
    /// Its id: the index of its Enqueue record in the group's log.
    pub id: u64,
    /// Its record's bytes on disk (what the queue's byte counts use).
    pub len: u32,
    /// How often it was returned.
    pub delivery_count: u16,
    /// Entry flags (redelivered, persistent).
    pub flags: u8,
    /// Priority level.
    pub priority: u8,
    /// Waiting until this time (ms), if it waits.
    pub until: Option<u64>,
    /// When it expires (ms), if it does.
    pub deadline: Option<u64>,
    /// Counted body bytes (0 unless the queue counts them).
    pub body: u32,
}

/// Every message a replica holds, by id, and its proposers' last batches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateImage {
    /// The rows, sorted by id.
    pub rows: Vec<ImageRow>,
    /// Each proposer's last applied batch, by proposer (version 2; none
    /// in a version 1 image).
    pub marks: Vec<MarkRow>,
}

/// Why an image could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad queue state image: {0}")]
pub struct ImageError(pub String);

/// Version 1: the rows only. Version 2 adds the marks.
const VERSION_1: u8 = 1;
const VERSION: u8 = 2;
const MARK_LEN: usize = 28;
const ROW_LEN: usize = 8 + 4 + 2 + 1 + 1 + 1 + 8 + 8 + 4;
const HAS_UNTIL: u8 = 1;
const HAS_DEADLINE: u8 = 2;

impl StateImage {
    /// Bytes of the records the image names.
    pub fn record_bytes(&self) -> u64 {
        self.rows.iter().map(|r| u64::from(r.len)).sum()
    }

    /// The image's bytes: `version u8 | count u64 | rows | marks`, each
    /// row of fixed size (see `docs/queue-snapshot.md`, [`decode_marks`]).
    pub fn encode(&self) -> Vec<u8> {
        let mut b =
            Vec::with_capacity(13 + self.rows.len() * ROW_LEN + self.marks.len() * MARK_LEN);
        b.push(VERSION);
        b.extend_from_slice(&(self.rows.len() as u64).to_le_bytes());
        for r in &self.rows {
            b.extend_from_slice(&r.id.to_le_bytes());
            b.extend_from_slice(&r.len.to_le_bytes());
            b.extend_from_slice(&r.delivery_count.to_le_bytes());
            b.push(r.flags);
            b.push(r.priority);
            let mut has = 0;
            if r.until.is_some() {
                has |= HAS_UNTIL;
            }
            if r.deadline.is_some() {
                has |= HAS_DEADLINE;
            }
            b.push(has);
            b.extend_from_slice(&r.until.unwrap_or(0).to_le_bytes());
            b.extend_from_slice(&r.deadline.unwrap_or(0).to_le_bytes());
            b.extend_from_slice(&r.body.to_le_bytes());
        }
        b.extend_from_slice(&(self.marks.len() as u32).to_le_bytes());
        for m in &self.marks {
            b.extend_from_slice(&m.proposer.to_le_bytes());
            b.extend_from_slice(&m.seq.to_le_bytes());
            b.extend_from_slice(&m.index.to_le_bytes());
            b.extend_from_slice(&(m.refused.len() as u32).to_le_bytes());
            for (s, pos) in &m.refused {
                b.extend_from_slice(&s.to_le_bytes());
                b.extend_from_slice(&(pos.len() as u32).to_le_bytes());
                for p in pos {
                    b.extend_from_slice(&p.to_le_bytes());
                }
            }
        }
        b
    }

    /// Decodes [`StateImage::encode`]'s bytes (ids must grow), and
    /// version 1's.
    pub fn decode(b: &[u8]) -> Result<Self, ImageError> {
        let bad = |w: &str| ImageError(w.to_owned());
        if b.len() < 9 {
            return Err(bad("truncated header"));
        }
        if b[0] != VERSION && b[0] != VERSION_1 {
            return Err(ImageError(format!("unknown version {}", b[0])));
        }
        let n = u64::from_le_bytes(b[1..9].try_into().map_err(|_| bad("count"))?);
        let rows_len = n
            .checked_mul(ROW_LEN as u64)
            .and_then(|l| usize::try_from(l).ok())
            .filter(|l| *l <= b.len() - 9)
            .ok_or_else(|| ImageError(format!("{} bytes for {n} rows", b.len() - 9)))?;
        let (body, rest) = b[9..].split_at(rows_len);
        let marks = match b[0] {
            VERSION_1 if rest.is_empty() => Vec::new(),
            VERSION_1 => return Err(bad("bytes after the rows")),
            _ => decode_marks(rest)?,
        };
        let mut rows = Vec::with_capacity(body.len() / ROW_LEN);
        for c in body.chunks_exact(ROW_LEN) {
            let u64_at = |i: usize| {
                let mut a = [0u8; 8];
                a.copy_from_slice(&c[i..i + 8]);
                u64::from_le_bytes(a)
            };
            let u32_at = |i: usize| {
                let mut a = [0u8; 4];
                a.copy_from_slice(&c[i..i + 4]);
                u32::from_le_bytes(a)
            };
            let has = c[16];
            let row = ImageRow {
                id: u64_at(0),
                len: u32_at(8),
                delivery_count: u16::from_le_bytes([c[12], c[13]]),
                flags: c[14],
                priority: c[15],
                until: (has & HAS_UNTIL != 0).then(|| u64_at(17)),
                deadline: (has & HAS_DEADLINE != 0).then(|| u64_at(25)),
                body: u32_at(33),
            };
            if rows.last().is_some_and(|p: &ImageRow| p.id >= row.id) {
                return Err(ImageError(format!("id {} out of order", row.id)));
            }
            rows.push(row);
        }
        Ok(StateImage { rows, marks })
    }
}

/// `count u32 | count × mark`, by proposer; a mark is `proposer u64 |
/// seq u64 | index u64 | r u32 | r × (seq u64 | k u32 | k × pos u32)`.
fn decode_marks(mut b: &[u8]) -> Result<Vec<MarkRow>, ImageError> {
    let n = take_u32(&mut b)? as usize;
    // Each mark is at least 28 bytes: a count past what is there lies.
    if n > b.len() / 28 {
        return Err(ImageError(format!("{n} marks in {} bytes", b.len())));
    }
    let mut out: Vec<MarkRow> = Vec::with_capacity(n);
    for _ in 0..n {
        let proposer = take_u64(&mut b)?;
        let seq = take_u64(&mut b)?;
        let index = take_u64(&mut b)?;
        let r = take_u32(&mut b)? as usize;
        if r > b.len() / 12 {
            return Err(ImageError(format!("{r} refusals in {} bytes", b.len())));
        }
        let mut refused = Vec::with_capacity(r);
        for _ in 0..r {
            let s = take_u64(&mut b)?;
            let k = take_u32(&mut b)? as usize;
            if k > b.len() / 4 {
                return Err(ImageError(format!("{k} positions in {} bytes", b.len())));
            }
            let pos: Vec<u32> = (0..k).map(|_| take_u32(&mut b)).collect::<Result<_, _>>()?;
            // Refusals of this proposer's applied batches, by seq, each
            // list ascending.
            if s > seq || refused.last().is_some_and(|(p, _)| *p >= s) {
                return Err(ImageError(format!("refusal of batch {s} out of place")));
            }
            if pos.windows(2).any(|w| w[0] >= w[1]) {
                return Err(ImageError("refused positions out of order".into()));
            }
            refused.push((s, pos));
        }
        if out.last().is_some_and(|p| p.proposer >= proposer) {
            return Err(ImageError(format!("mark {proposer:x} out of order")));
        }
        out.push(MarkRow {
            proposer,
            seq,
            index,
            refused,
        });
    }
    if !b.is_empty() {
        return Err(ImageError(format!("{} bytes after the marks", b.len())));
    }
    Ok(out)
}

fn take_u64(b: &mut &[u8]) -> Result<u64, ImageError> {
    let (h, rest) = b
        .split_first_chunk::<8>()
        .ok_or_else(|| ImageError("truncated marks".into()))?;
    *b = rest;
    Ok(u64::from_le_bytes(*h))
}

fn take_u32(b: &mut &[u8]) -> Result<u32, ImageError> {
    let (h, rest) = b
        .split_first_chunk::<4>()
        .ok_or_else(|| ImageError("truncated marks".into()))?;
    *b = rest;
    Ok(u32::from_le_bytes(*h))
}

impl QueueState {
    /// The state as an image (checked-out messages as ready).
    pub fn image(&self) -> StateImage {
        let row = |e: &Entry, until: Option<u64>| ImageRow {
            id: e.id,
            len: e.size(),
            delivery_count: e.delivery_count,
            flags: e.flags(),
            priority: e.priority,
            until,
            deadline: self.meta.deadline(e.id),
            body: u32::try_from(self.meta.body(e.id)).unwrap_or(u32::MAX),
        };
        let mut rows: Vec<ImageRow> = self
            .ready
            .entries()
            .chain(self.checked_out.entries())
            .map(|e| row(e, None))
            .chain(self.waiting.iter().map(|(due, e)| row(e, Some(due))))
            .collect();
        rows.sort_unstable_by_key(|r| r.id);
        StateImage {
            rows,
            marks: self.marks.rows(),
        }
    }

    /// Where the record of every message held is (any order).
    pub fn positions(&self) -> Vec<RecordPos> {
        self.ready
            .entries()
            .chain(self.checked_out.entries())
            .chain(self.waiting.iter().map(|(_, e)| e))
            .map(Entry::pos)
            .collect()
    }

    /// A replicated queue's state rebuilt from `image` (`levels` and
    /// `track_body` as the queue's arguments say). Each message's record
    /// is found by its id (the snapshot's store holds it).
    pub fn from_image(levels: usize, track_body: bool, image: &StateImage) -> Self {
        let mut st = QueueState::for_replicated(levels, track_body);
        for r in &image.rows {
            let pos = RecordPos {
                index: r.id,
                segment: r.id,
                offset: 0,
                len: r.len,
            };
            let e = Entry::restored(pos, r.delivery_count, r.flags, r.priority);
            let deadline = r.deadline;
            match r.until {
                Some(until) => st.hold(e, until, deadline, r.body),
                None => st.enqueue(e, deadline, r.body),
            }
        }
        st.marks = Marks::from_rows(&image.marks);
        st
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pos(id: u64, len: u32) -> RecordPos {
        RecordPos {
            index: id,
            segment: 1,
            offset: id * 100,
            len,
        }
    }

    #[test]
    fn an_image_rebuilds_the_same_state_and_round_trips_its_bytes() {
        let mut st = QueueState::for_replicated(3, true);
        st.enqueue(Entry::new(pos(3, 50), true, None), None, 10);
        st.enqueue(
            Entry::new(pos(5, 60), false, None).with_priority(2),
            Some(9_000),
            20,
        );
        st.enqueue(Entry::new(pos(7, 70), true, None), None, 30);
        st.hold(Entry::new(pos(9, 80), true, None), 5_000, None, 40);
        assert_eq!(
            st.check_mark(0xab, 1, 2, &[]),
            super::super::MarkOutcome::Apply
        );
        assert_eq!(
            st.check_mark(0x12, 1, 4, &[1, 3]),
            super::super::MarkOutcome::Apply
        );
        // 3 is delivered (checked out), then 7 returned once.
        let e = st.pop_ready().unwrap();
        assert_eq!(e.id, 5, "priority 2 first");
        st.check_out(e);
        assert!(st.return_any(5, None));
        let e = st.pop_ready().unwrap();
        st.check_out(e);
        let img = st.image();
        assert_eq!(img.rows.len(), 4);
        assert_eq!(img.record_bytes(), 50 + 60 + 70 + 80);
        let back = StateImage::decode(&img.encode()).unwrap();
        assert_eq!(back, img);
        let rebuilt = QueueState::from_image(3, true, &back);
        // The checked-out message is ready again, nothing else changed.
        let mut want = st.digest();
        want.sort_unstable();
        assert_eq!(rebuilt.digest(), want);
        assert_eq!(rebuilt.ready_len(), 3);
        assert_eq!(rebuilt.waiting_len(), 1);
        assert_eq!(rebuilt.ready_body_bytes(), 10 + 20 + 30);
        assert_eq!(rebuilt.peek_ready().unwrap().id, 5);
        assert!(rebuilt.peek_ready().unwrap().redelivered());
        assert_eq!(rebuilt.peek_ready().unwrap().pos().len, 60);
        // The marks came along: batch 1 of 0xab again is a resend.
        assert_eq!(back.marks.len(), 2);
        let mut rebuilt = rebuilt;
        assert_eq!(
            rebuilt.check_mark(0xab, 1, 20, &[]),
            super::super::MarkOutcome::Duplicate(vec![])
        );
        assert_eq!(
            rebuilt.check_mark(0x12, 1, 21, &[]),
            super::super::MarkOutcome::Duplicate(vec![1, 3])
        );
    }

    /// A version 1 image (before the marks) still decodes: the rows, no
    /// marks. Bytes as version 1 wrote them.
    #[test]
    fn a_version_1_image_decodes_without_marks() {
        let mut v1 = vec![1u8];
        v1.extend_from_slice(&1u64.to_le_bytes());
        v1.extend_from_slice(&3u64.to_le_bytes()); // id
        v1.extend_from_slice(&50u32.to_le_bytes()); // len
        v1.extend_from_slice(&2u16.to_le_bytes()); // delivery count
        v1.extend_from_slice(&[1, 0, 2]); // flags, priority, has (deadline)
        v1.extend_from_slice(&0u64.to_le_bytes()); // until
        v1.extend_from_slice(&9_000u64.to_le_bytes()); // deadline
        v1.extend_from_slice(&10u32.to_le_bytes()); // body
        let img = StateImage::decode(&v1).unwrap();
        assert!(img.marks.is_empty());
        assert_eq!(img.rows.len(), 1);
        assert_eq!((img.rows[0].id, img.rows[0].deadline), (3, Some(9_000)));
        let mut extra = v1.clone();
        extra.push(0);
        assert!(StateImage::decode(&extra).is_err());
    }

    #[test]
    fn bad_images_are_refused() {
        let row = |id| ImageRow {
            id,
            len: 1,
            delivery_count: 0,
            flags: 0,
            priority: 0,
            until: None,
            deadline: None,
            body: 0,
        };
        let img = StateImage {
            rows: vec![row(4), row(2)],
            marks: Vec::new(),
        };
        let b = img.encode();
        assert!(StateImage::decode(&b).unwrap_err().0.contains("order"));
        assert!(StateImage::decode(&b[..b.len() - 1]).is_err());
        assert!(StateImage::decode(&[9, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(StateImage::decode(&[]).is_err());
        let mut huge = vec![VERSION];
        huge.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(StateImage::decode(&huge).is_err());
        let marks = |ps: &[u64]| StateImage {
            rows: vec![row(1)],
            marks: ps
                .iter()
                .map(|p| MarkRow {
                    proposer: *p,
                    seq: 1,
                    index: 1,
                    refused: vec![(1, vec![2])],
                })
                .collect(),
        };
        let b = marks(&[3, 2]).encode();
        assert!(StateImage::decode(&b).unwrap_err().0.contains("order"));
        let b = marks(&[2, 3]).encode();
        assert_eq!(StateImage::decode(&b).unwrap(), marks(&[2, 3]));
        assert!(StateImage::decode(&b[..b.len() - 1]).is_err());
        assert!(StateImage::decode(&b[..b.len() - 2 * MARK_LEN]).is_err());
        let mut lying = b.clone();
        let at = lying.len() - 2 * (MARK_LEN + 16) - 4;
        lying[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(StateImage::decode(&lying).is_err(), "a lying mark count");
    }
}
