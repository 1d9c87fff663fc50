//! Bodies of a stream read: a node outside a replicated stream's group
//! asks a member for the committed records from an offset, for one of
//! its consumers (docs/cluster-wire.md, "Stream reads"): pure codecs and
//! the limits a member holds a request to. Records travel as the stream
//! records the member's log holds (docs/streams.md), opaque here.

use super::{put_bytes, put_u32, Reader};
use crate::error::WireError;
use bytes::Bytes;
use ferry_queue::stream::{OffsetSpec, ReadLimits};
use std::time::Duration;

/// Committed records of a stream from an offset (group = the stream's).
pub const KIND_STREAM_READ: u8 = 20;
/// An answer carries at most this many bytes of records (more than one
/// record only below it; a larger first record alone).
pub const MAX_READ_BYTES: u32 = 1 << 20;
/// An answer carries at most this many records.
pub const MAX_READ_RECORDS: u32 = 4096;
/// A member waits at most this long for records to commit before it
/// answers with none (below the requester's timeout).
pub const MAX_WAIT_MS: u32 = 5_000;

/// Where a read starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadStart {
    /// Exactly this offset (a reader going on): below the first retained
    /// offset the member starts at that one (retention went past it, as
    /// for a member's own consumer); past its end it waits.
    At(u64),
    /// A consumer's `x-stream-offset`, resolved by the member as for its
    /// own consumers (`first`, `last`, `next`, an offset clamped to the
    /// stream, a timestamp).
    Spec(OffsetSpec),
}

/// A stream read request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadRequest {
    /// Where it starts.
    pub start: ReadStart,
    /// At most this many records (1 ..).
    pub max_records: u32,
    /// About this many record bytes at most (1 ..; the first record
    /// always comes, whatever its size).
    pub max_bytes: u32,
    /// How long the member may wait for a first record to commit.
    pub wait_ms: u32,
}

impl ReadRequest {
    /// The read's limits and wait as a member applies them: zero records
    /// or bytes is refused; more than [`MAX_READ_RECORDS`],
    /// [`MAX_READ_BYTES`] or [`MAX_WAIT_MS`] is cut to it.
    pub fn limits(&self) -> Result<(ReadLimits, Duration), WireError> {
        if self.max_records == 0 || self.max_bytes == 0 {
            return Err(WireError(format!(
                "stream read of {} records, {} bytes",
                self.max_records, self.max_bytes
            )));
        }
        let limits = ReadLimits {
            max_bytes: u64::from(self.max_bytes.min(MAX_READ_BYTES)),
            max_records: self.max_records.min(MAX_READ_RECORDS) as usize,
        };
        let wait = Duration::from_millis(u64::from(self.wait_ms.min(MAX_WAIT_MS)));
        Ok((limits, wait))
    }
}

/// A member's answer: the records from `start` on (record `i` at offset
/// `start + i`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadAnswer {
    /// The member's first retained offset.
    pub first: u64,
    /// The member's committed end (records below it are readable there).
    pub end: u64,
    /// Where the records start: the offset asked for, or where the member
    /// resolved a spec to, or its first retained offset if the one asked
    /// for is gone.
    pub start: u64,
    /// The records, as its log holds them.
    pub records: Vec<Bytes>,
}

impl ReadAnswer {
    /// Where the reader goes on.
    pub fn next(&self) -> u64 {
        self.start.saturating_add(self.records.len() as u64)
    }
}

/// `start | max_records u32 | max_bytes u32 | wait_ms u32`; `start` is
/// `0u8 at u64 | 1u8 (first) | 2u8 (last) | 3u8 (next) | 4u8 offset u64 |
/// 5u8 timestamp_ms u64`.
pub fn encode_read(r: &ReadRequest) -> Bytes {
    let mut b = Vec::with_capacity(21);
    let (tag, value) = match r.start {
        ReadStart::At(n) => (0, Some(n)),
        ReadStart::Spec(OffsetSpec::First) => (1, None),
        ReadStart::Spec(OffsetSpec::Last) => (2, None),
        ReadStart::Spec(OffsetSpec::Next) => (3, None),
        ReadStart::Spec(OffsetSpec::Offset(n)) => (4, Some(n)),
        ReadStart::Spec(OffsetSpec::Timestamp(ms)) => (5, Some(ms)),
    };
    b.push(tag);
    if let Some(v) = value {
        b.extend_from_slice(&v.to_le_bytes());
    }
    for v in [r.max_records, r.max_bytes, r.wait_ms] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    Bytes::from(b)
}

/// Decodes a stream read request.
pub fn decode_read(body: Bytes) -> Result<ReadRequest, WireError> {
    let mut r = Reader::new(body);
    let start = match r.u8()? {
        0 => ReadStart::At(r.u64()?),
        1 => ReadStart::Spec(OffsetSpec::First),
        2 => ReadStart::Spec(OffsetSpec::Last),
        3 => ReadStart::Spec(OffsetSpec::Next),
        4 => ReadStart::Spec(OffsetSpec::Offset(r.u64()?)),
        5 => ReadStart::Spec(OffsetSpec::Timestamp(r.u64()?)),
        t => return Err(WireError(format!("stream read start {t}"))),
    };
    let req = ReadRequest {
        start,
        max_records: r.u32()?,
        max_bytes: r.u32()?,
        wait_ms: r.u32()?,
    };
    r.end()?;
    Ok(req)
}

/// `first u64 | end u64 | start u64 | u32 n | n × bytes(record)`
pub fn encode_read_answer(a: &ReadAnswer) -> Bytes {
    let size: usize = a.records.iter().map(|r| 4 + r.len()).sum();
    let mut b = Vec::with_capacity(28 + size);
    for v in [a.first, a.end, a.start] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    put_u32(&mut b, a.records.len());
    for r in &a.records {
        put_bytes(&mut b, r);
    }
    Bytes::from(b)
}

/// Decodes a stream read's answer.
pub fn decode_read_answer(body: Bytes) -> Result<ReadAnswer, WireError> {
    let mut r = Reader::new(body);
    let first = r.u64()?;
    let end = r.u64()?;
    let start = r.u64()?;
    let n = r.count(4, "records")?;
    if start.checked_add(n as u64).is_none() {
        return Err(WireError(format!("{n} records from offset {start}")));
    }
    let mut records = Vec::with_capacity(n);
    for _ in 0..n {
        records.push(r.bytes()?);
    }
    r.end()?;
    Ok(ReadAnswer {
        first,
        end,
        start,
        records,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn every_start() -> Vec<ReadStart> {
        vec![
            ReadStart::At(u64::MAX - 1),
            ReadStart::Spec(OffsetSpec::First),
            ReadStart::Spec(OffsetSpec::Last),
            ReadStart::Spec(OffsetSpec::Next),
            ReadStart::Spec(OffsetSpec::Offset(150)),
            ReadStart::Spec(OffsetSpec::Timestamp(1_700_000_000_123)),
        ]
    }

    #[test]
    fn requests_and_answers_round_trip() {
        for start in every_start() {
            let r = ReadRequest {
                start,
                max_records: 10,
                max_bytes: 1 << 20,
                wait_ms: 3000,
            };
            assert_eq!(decode_read(encode_read(&r)).unwrap(), r);
        }
        let a = ReadAnswer {
            first: 3,
            end: 90,
            start: 7,
            records: vec![Bytes::from_static(b"T rec"), Bytes::new()],
        };
        assert_eq!(a.next(), 9);
        assert_eq!(decode_read_answer(encode_read_answer(&a)).unwrap(), a);
        let empty = ReadAnswer {
            records: Vec::new(),
            ..a
        };
        assert_eq!(
            decode_read_answer(encode_read_answer(&empty)).unwrap(),
            empty
        );
    }

    /// Every cut of a valid body, a bad tag, a lying count and trailing
    /// bytes are errors, never a panic or an allocation of the count.
    #[test]
    fn truncated_or_garbage_bodies_are_errors() {
        for start in every_start() {
            let r = ReadRequest {
                start,
                max_records: 1,
                max_bytes: 1,
                wait_ms: 0,
            };
            let b = encode_read(&r);
            for cut in 0..b.len() {
                assert!(decode_read(b.slice(..cut)).is_err(), "{start:?} cut {cut}");
            }
            let mut long = b.to_vec();
            long.push(0);
            assert!(decode_read(Bytes::from(long)).is_err());
        }
        let mut bad = encode_read(&ReadRequest {
            start: ReadStart::At(1),
            max_records: 1,
            max_bytes: 1,
            wait_ms: 0,
        })
        .to_vec();
        bad[0] = 6;
        assert!(decode_read(Bytes::from(bad)).is_err());

        let a = encode_read_answer(&ReadAnswer {
            first: 0,
            end: 2,
            start: 0,
            records: vec![Bytes::from_static(b"ab"), Bytes::from_static(b"c")],
        });
        for cut in 0..a.len() {
            assert!(decode_read_answer(a.slice(..cut)).is_err(), "cut {cut}");
        }
        let mut lying = [0u8; 24].to_vec();
        lying.extend_from_slice(&u32::MAX.to_le_bytes());
        lying.extend_from_slice(&[0; 8]);
        assert!(decode_read_answer(Bytes::from(lying)).is_err());
        // Offsets past u64::MAX.
        let mut wraps = Vec::new();
        for v in [0, 0, u64::MAX] {
            wraps.extend_from_slice(&v.to_le_bytes());
        }
        wraps.extend_from_slice(&1u32.to_le_bytes());
        wraps.extend_from_slice(&0u32.to_le_bytes());
        assert!(decode_read_answer(Bytes::from(wraps)).is_err());
        for garbage in [&b""[..], &[0xff; 3], &[7; 40]] {
            assert!(decode_read(Bytes::copy_from_slice(garbage)).is_err());
            assert!(decode_read_answer(Bytes::copy_from_slice(garbage)).is_err());
        }
    }

    #[test]
    fn a_member_refuses_empty_limits_and_cuts_large_ones() {
        let r = |max_records, max_bytes, wait_ms| ReadRequest {
            start: ReadStart::At(0),
            max_records,
            max_bytes,
            wait_ms,
        };
        assert!(r(0, 10, 0).limits().is_err());
        assert!(r(10, 0, 0).limits().is_err());
        let (l, wait) = r(u32::MAX, u32::MAX, u32::MAX).limits().unwrap();
        assert_eq!(l.max_bytes, u64::from(MAX_READ_BYTES));
        assert_eq!(l.max_records, MAX_READ_RECORDS as usize);
        assert_eq!(wait, Duration::from_millis(u64::from(MAX_WAIT_MS)));
        let (l, wait) = r(10, 500, 200).limits().unwrap();
        assert_eq!((l.max_records, l.max_bytes), (10, 500));
        assert_eq!(wait, Duration::from_millis(200));
    }
}
