//! The queue's command log records: the only way the queue state changes.
//!
//! ```text
//! Enqueue  | 0x07 | flags u8 | [expires_at u64 LE] | [priority u8] | [not_before u64 LE] | [bcc] | exch_len u8 | exchange | key_len u8 | key | props_len u32 LE | props | body ... |
//! Settle   | 0x02 | count u32 LE | count × id u64 LE |
//! Requeue  | 0x03 | count u32 LE | count × id u64 LE |
//! Purge    | 0x04 | upto u64 LE | count u32 LE | count × kept id u64 LE |
//! Drop     | 0x05 | reason u8 | count u32 LE | count × id u64 LE |
//! Retry    | 0x06 | count u32 LE | count × (id u64 LE, until u64 LE) |
//! Mark     | 0x08 | proposer u64 LE | seq u64 LE | [count u32 LE | count × pos u32 LE] |
//! flags: bit 0 = persistent (replay drops Enqueue records without it)
//!        bit 1 = expires_at present (ms since the Unix epoch)
//!        bit 2 = priority present (priority queues: the level it joined)
//!        bit 3 = not_before present (held until then: delayed exchanges)
//!        bit 4 = bcc present: count u32 LE | count × (len u32 LE | key)
//!                (the BCC keys the message was published with; records
//!                written before it have the bit clear and decode with none)
//! reason: 1 = expired, 2 = maxlen, 3 = rejected, 4 = delivery_limit
//! props:  a ferry-model props blob (format v2). Enqueue records written
//!         before it (tag 0x01, v1, same layout) hold AMQP 0-9-1 property
//!         bytes; they are still read, converted by the front end's
//!         converter (`crate::props::set_legacy_converter`), never written.
//! ```
//! A Mark opens a replicated queue's Raft entry: which proposer sent the
//! entry's other records, and its number for them (publisher
//! deduplication: `state::marks`), and the positions (in the proposer's
//! batch, the Mark at 0) of the records the leader's length limit refused
//! (absent: none). It is not a queue command.
//! A message's id is the log index of its Enqueue record. The format is
//! described with its invariants in `docs/queue-records.md`.

use super::dead_letter::Reason;
use crate::error::{CoreError, ErrorKind, Result};
use bytes::{Buf, BufMut, Bytes};
use ferry_model::message::Message;
use std::sync::Arc;

/// An Enqueue of format v1: properties are AMQP bytes (read only).
const TAG_ENQUEUE_V1: u8 = 1;
/// An Enqueue of format v2: properties are a props blob.
const TAG_ENQUEUE: u8 = 7;
const TAG_SETTLE: u8 = 2;
const TAG_REQUEUE: u8 = 3;
const TAG_PURGE: u8 = 4;
const TAG_DROP: u8 = 5;
const TAG_RETRY: u8 = 6;
const TAG_MARK: u8 = 8;
const FLAG_PERSISTENT: u8 = 1;
const FLAG_EXPIRES: u8 = 2;
const FLAG_PRIORITY: u8 = 4;
const FLAG_NOT_BEFORE: u8 = 8;
const FLAG_BCC: u8 = 16;

/// A decoded command record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A message joins the queue's tail.
    Enqueue {
        /// The message (its `expiration_ms` is not stored: the deadline is).
        msg: Message,
        /// When it expires, in ms since the Unix epoch.
        expires_at: Option<u64>,
        /// Its level in a priority queue (already capped at the queue's
        /// `x-max-priority`); None in other queues.
        priority: Option<u8>,
        /// Invisible until then (ms since the Unix epoch): a message held
        /// by a delayed exchange. None for everything else.
        not_before: Option<u64>,
    },
    /// Messages leave the queue for good (acked, or dropped before a
    /// front end could tell why).
    Settle(Vec<u64>),
    /// Messages leave the queue because they died: expired, pushed out by
    /// the length limit, or rejected. Replay treats it as a Settle; the
    /// reason says what was (or would be) dead-lettered.
    Drop {
        /// Why.
        reason: Reason,
        /// Which.
        ids: Vec<u64>,
    },
    /// Checked-out messages return to their place, their delivery count bumped.
    Requeue(Vec<u64>),
    /// Checked-out messages return like a Requeue but stay invisible until
    /// their own `until` (ms since the Unix epoch): delayed retry.
    Retry(Vec<(u64, u64)>),
    /// Every message with an id below `upto` leaves, except the `keep`
    /// ones (those that were checked out at the time of the purge).
    Purge {
        /// Exclusive upper bound of purged ids.
        upto: u64,
        /// Ids below `upto` that survive.
        keep: Vec<u64>,
    },
    /// The first record of a replicated queue's entry: proposer
    /// `proposer` sent the entry's other records as its batch `seq`.
    Mark {
        /// The proposer (random, one per proposing task).
        proposer: u64,
        /// Its batch number (1, 2, ...).
        seq: u64,
        /// The positions the leader refused, ascending.
        refused: Vec<u32>,
    },
}

/// Encodes an Enqueue record for `msg` (expiring at `expires_at`, at level
/// `priority` of a priority queue) into `out`. Refuses (writing nothing)
/// a message whose exchange or routing key does not fit a short string
/// (see [`check_fields`]): a record is never truncated.
pub fn encode_enqueue(
    msg: &Message,
    expires_at: Option<u64>,
    priority: Option<u8>,
    out: &mut Vec<u8>,
) -> Result<()> {
    encode_enqueue_held(msg, expires_at, priority, None, out)
}

/// Whether `msg` can be stored: its exchange and routing key fit the
/// records' one-byte lengths ([`crate::limits::SHORT_MAX`]). Callers check
/// it before anything changes, so a refused publish leaves no trace.
pub fn check_fields(msg: &Message) -> Result<()> {
    crate::limits::check_short("exchange", &msg.exchange)?;
    crate::limits::check_short("routing_key", &msg.routing_key)
}

/// `encode_enqueue` for a message held until `not_before`.
pub fn encode_enqueue_held(
    msg: &Message,
    expires_at: Option<u64>,
    priority: Option<u8>,
    not_before: Option<u64>,
    out: &mut Vec<u8>,
) -> Result<()> {
    check_fields(msg)?;
    let too_large =
        |what: &str| CoreError::request(ErrorKind::PreconditionFailed, format!("{what} too large"));
    let props_len = u32::try_from(msg.properties.len()).map_err(|_| too_large("properties"))?;
    let bcc_count = u32::try_from(msg.bcc.len()).map_err(|_| too_large("BCC"))?;
    if msg.bcc.iter().any(|k| u32::try_from(k.len()).is_err()) {
        return Err(too_large("BCC key"));
    }
    out.reserve(msg.weight());
    out.put_u8(TAG_ENQUEUE);
    let mut flags = if msg.persistent { FLAG_PERSISTENT } else { 0 };
    if expires_at.is_some() {
        flags |= FLAG_EXPIRES;
    }
    if priority.is_some() {
        flags |= FLAG_PRIORITY;
    }
    if not_before.is_some() {
        flags |= FLAG_NOT_BEFORE;
    }
    if !msg.bcc.is_empty() {
        flags |= FLAG_BCC;
    }
    out.put_u8(flags);
    if let Some(at) = expires_at {
        out.put_u64_le(at);
    }
    if let Some(p) = priority {
        out.put_u8(p);
    }
    if let Some(at) = not_before {
        out.put_u64_le(at);
    }
    if !msg.bcc.is_empty() {
        out.put_u32_le(bcc_count);
        for k in &msg.bcc {
            // Checked above: every length fits a u32.
            out.put_u32_le(k.len() as u32);
            out.extend_from_slice(k.as_bytes());
        }
    }
    put_short(out, &msg.exchange);
    put_short(out, &msg.routing_key);
    out.put_u32_le(props_len);
    out.extend_from_slice(&msg.properties);
    out.extend_from_slice(&msg.body);
    Ok(())
}

/// Encodes a Settle or Requeue record.
pub fn encode_ids(requeue: bool, ids: &[u64], out: &mut Vec<u8>) {
    out.put_u8(if requeue { TAG_REQUEUE } else { TAG_SETTLE });
    out.put_u32_le(ids.len() as u32);
    for id in ids {
        out.put_u64_le(*id);
    }
}

/// Encodes a Retry record: each id with the time it becomes ready again.
pub fn encode_retry(items: &[(u64, u64)], out: &mut Vec<u8>) {
    out.put_u8(TAG_RETRY);
    out.put_u32_le(items.len() as u32);
    for (id, until) in items {
        out.put_u64_le(*id);
        out.put_u64_le(*until);
    }
}

/// Encodes a Drop record.
pub fn encode_drop(reason: Reason, ids: &[u64], out: &mut Vec<u8>) {
    out.put_u8(TAG_DROP);
    out.put_u8(reason.code());
    out.put_u32_le(ids.len() as u32);
    for id in ids {
        out.put_u64_le(*id);
    }
}

/// Encodes a Purge record.
pub fn encode_purge(upto: u64, keep: &[u64], out: &mut Vec<u8>) {
    out.put_u8(TAG_PURGE);
    out.put_u64_le(upto);
    out.put_u32_le(keep.len() as u32);
    for id in keep {
        out.put_u64_le(*id);
    }
}

/// A Mark record: the batch `seq` of proposer `proposer`, whose records
/// at `refused` the leader refused.
pub fn encode_mark(proposer: u64, seq: u64, refused: &[u32]) -> Bytes {
    let mut out = Vec::with_capacity(21 + 4 * refused.len());
    out.put_u8(TAG_MARK);
    out.put_u64_le(proposer);
    out.put_u64_le(seq);
    if !refused.is_empty() {
        out.put_u32_le(refused.len() as u32);
        for p in refused {
            out.put_u32_le(*p);
        }
    }
    Bytes::from(out)
}

/// Writes a short string whose length `check_fields` has checked.
fn put_short(out: &mut Vec<u8>, s: &str) {
    let n = u8::try_from(s.len()).unwrap_or(u8::MAX);
    out.put_u8(n);
    out.extend_from_slice(&s.as_bytes()[..usize::from(n)]);
}

fn corrupt(what: &str) -> CoreError {
    CoreError::Corrupt(format!("queue record: {what}"))
}

fn take_short(buf: &mut Bytes) -> Result<Arc<str>> {
    if buf.remaining() < 1 {
        return Err(corrupt("short string length"));
    }
    let n = buf.get_u8() as usize;
    if buf.remaining() < n {
        return Err(corrupt("short string"));
    }
    let s = buf.split_to(n);
    std::str::from_utf8(&s)
        .map(Arc::from)
        .map_err(|_| corrupt("short string utf-8"))
}

fn take_bcc(buf: &mut Bytes) -> Result<Vec<Arc<str>>> {
    if buf.remaining() < 4 {
        return Err(corrupt("bcc count"));
    }
    let n = buf.get_u32_le() as usize;
    // Each key takes at least its 4-byte length: a bound before allocating.
    if buf.remaining() < n.saturating_mul(4) {
        return Err(corrupt("bcc count"));
    }
    let mut keys = Vec::with_capacity(n);
    for _ in 0..n {
        if buf.remaining() < 4 {
            return Err(corrupt("bcc key length"));
        }
        let len = buf.get_u32_le() as usize;
        if buf.remaining() < len {
            return Err(corrupt("bcc key"));
        }
        let k = buf.split_to(len);
        let k = std::str::from_utf8(&k).map_err(|_| corrupt("bcc key utf-8"))?;
        keys.push(Arc::from(k));
    }
    Ok(keys)
}

fn take_ids(buf: &mut Bytes) -> Result<Vec<u64>> {
    if buf.remaining() < 4 {
        return Err(corrupt("id count"));
    }
    let n = buf.get_u32_le() as usize;
    if buf.remaining() != n.saturating_mul(8) {
        return Err(corrupt("id list length"));
    }
    Ok((0..n).map(|_| buf.get_u64_le()).collect())
}

/// Decodes a record. Message fields are zero-copy slices of `payload`.
pub fn decode(mut payload: Bytes) -> Result<Record> {
    if payload.is_empty() {
        return Err(corrupt("empty"));
    }
    match payload.get_u8() {
        tag @ (TAG_ENQUEUE | TAG_ENQUEUE_V1) => {
            if payload.remaining() < 1 {
                return Err(corrupt("flags"));
            }
            let flags = payload.get_u8();
            let expires_at = if flags & FLAG_EXPIRES != 0 {
                if payload.remaining() < 8 {
                    return Err(corrupt("expiry"));
                }
                Some(payload.get_u64_le())
            } else {
                None
            };
            let priority = if flags & FLAG_PRIORITY != 0 {
                if payload.remaining() < 1 {
                    return Err(corrupt("priority"));
                }
                Some(payload.get_u8())
            } else {
                None
            };
            let not_before = if flags & FLAG_NOT_BEFORE != 0 {
                if payload.remaining() < 8 {
                    return Err(corrupt("not_before"));
                }
                Some(payload.get_u64_le())
            } else {
                None
            };
            let bcc = if flags & FLAG_BCC != 0 {
                take_bcc(&mut payload)?
            } else {
                Vec::new()
            };
            let exchange = take_short(&mut payload)?;
            let routing_key = take_short(&mut payload)?;
            if payload.remaining() < 4 {
                return Err(corrupt("properties length"));
            }
            let n = payload.get_u32_le() as usize;
            if payload.remaining() < n {
                return Err(corrupt("properties"));
            }
            let mut properties = payload.split_to(n);
            if tag == TAG_ENQUEUE_V1 {
                properties = crate::props::from_legacy(&properties)?;
            }
            Ok(Record::Enqueue {
                msg: Message {
                    exchange,
                    routing_key,
                    properties,
                    body: payload,
                    persistent: flags & FLAG_PERSISTENT != 0,
                    expiration_ms: None,
                    bcc,
                },
                expires_at,
                priority,
                not_before,
            })
        }
        TAG_SETTLE => Ok(Record::Settle(take_ids(&mut payload)?)),
        TAG_REQUEUE => Ok(Record::Requeue(take_ids(&mut payload)?)),
        TAG_RETRY => {
            if payload.remaining() < 4 {
                return Err(corrupt("retry count"));
            }
            let n = payload.get_u32_le() as usize;
            if payload.remaining() != n.saturating_mul(16) {
                return Err(corrupt("retry list length"));
            }
            Ok(Record::Retry(
                (0..n)
                    .map(|_| (payload.get_u64_le(), payload.get_u64_le()))
                    .collect(),
            ))
        }
        TAG_DROP => {
            if payload.remaining() < 1 {
                return Err(corrupt("drop reason"));
            }
            let code = payload.get_u8();
            let reason =
                Reason::from_code(code).ok_or_else(|| corrupt(&format!("drop reason {code}")))?;
            Ok(Record::Drop {
                reason,
                ids: take_ids(&mut payload)?,
            })
        }
        TAG_PURGE => {
            if payload.remaining() < 8 {
                return Err(corrupt("purge bound"));
            }
            let upto = payload.get_u64_le();
            let keep = take_ids(&mut payload)?;
            Ok(Record::Purge { upto, keep })
        }
        TAG_MARK => {
            if payload.remaining() < 16 {
                return Err(corrupt("mark length"));
            }
            let proposer = payload.get_u64_le();
            let seq = payload.get_u64_le();
            let mut refused = Vec::new();
            if payload.has_remaining() {
                if payload.remaining() < 4 {
                    return Err(corrupt("mark refusals"));
                }
                let n = payload.get_u32_le() as usize;
                if payload.remaining() != n.saturating_mul(4) {
                    return Err(corrupt("mark refusals length"));
                }
                refused = (0..n).map(|_| payload.get_u32_le()).collect();
                if refused.windows(2).any(|w| w[0] >= w[1]) {
                    return Err(corrupt("mark refusals out of order"));
                }
            }
            Ok(Record::Mark {
                proposer,
                seq,
                refused,
            })
        }
        other => Err(corrupt(&format!("unknown tag {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(persistent: bool) -> Message {
        Message {
            exchange: Arc::from("amq.direct"),
            routing_key: Arc::from("k.1"),
            // A props blob: content_type "a/b".
            properties: Bytes::from_static(&[1, 3, b'a', b'/', b'b']),
            body: Bytes::from_static(b"hello"),
            persistent,
            expiration_ms: None,
            bcc: Vec::new(),
        }
    }

    #[test]
    fn enqueue_round_trips_both_flags_and_the_deadline() {
        for p in [true, false] {
            for expires_at in [None, Some(0), Some(1_700_000_000_123), Some(u64::MAX)] {
                for priority in [None, Some(0), Some(255)] {
                    let mut out = Vec::new();
                    assert!(encode_enqueue(&msg(p), expires_at, priority, &mut out).is_ok());
                    assert_eq!(
                        decode(Bytes::from(out)).ok(),
                        Some(Record::Enqueue {
                            msg: msg(p),
                            expires_at,
                            priority,
                            not_before: None,
                        })
                    );
                }
            }
        }
    }

    #[test]
    fn enqueue_without_deadline_keeps_the_old_layout() {
        let mut out = Vec::new();
        assert!(encode_enqueue(&msg(true), None, None, &mut out).is_ok());
        assert_eq!(&out[..4], &[TAG_ENQUEUE, FLAG_PERSISTENT, 10, b'a']);
        let mut out = Vec::new();
        assert!(encode_enqueue(&msg(true), Some(0x0102), None, &mut out).is_ok());
        assert_eq!(&out[..11], &[TAG_ENQUEUE, 3, 2, 1, 0, 0, 0, 0, 0, 0, 10]);
        let mut out = Vec::new();
        assert!(encode_enqueue(&msg(true), Some(0x0102), Some(7), &mut out).is_ok());
        assert_eq!(&out[..12], &[TAG_ENQUEUE, 7, 2, 1, 0, 0, 0, 0, 0, 0, 7, 10]);
    }

    /// An Enqueue record of format v1 as Ferry wrote it before the BCC
    /// field (flag bit 4) existed: persistent, expiring at 0x0102,
    /// exchange "x", key "k", AMQP properties [0x10, 0x00, 2] (delivery
    /// mode 2), body "hi". It must still decode, its properties converted.
    const V1_ENQUEUE: &[u8] = &[
        TAG_ENQUEUE_V1,
        3,
        2,
        1,
        0,
        0,
        0,
        0,
        0,
        0,
        1,
        b'x',
        1,
        b'k',
        3,
        0,
        0,
        0,
        0x10,
        0x00,
        2,
        b'h',
        b'i',
    ];

    #[test]
    fn v1_records_decode_with_their_properties_converted() {
        crate::test_support::install_legacy_converter();
        let Ok(Record::Enqueue {
            msg,
            expires_at,
            priority,
            not_before,
        }) = decode(Bytes::from_static(V1_ENQUEUE))
        else {
            panic!("v1 record does not decode");
        };
        assert_eq!(
            (expires_at, priority, not_before),
            (Some(0x0102), None, None)
        );
        assert_eq!((&*msg.exchange, &*msg.routing_key), ("x", "k"));
        // The props blob of delivery mode 2: tag 4, length 1, 2.
        assert_eq!(
            (&msg.properties[..], &msg.body[..]),
            (&[4, 1, 2][..], &b"hi"[..])
        );
        assert!(msg.persistent && msg.bcc.is_empty());
        // Written again, it is a v2 record: the new tag and the blob, the
        // rest of the layout as it was.
        let mut out = Vec::new();
        assert!(encode_enqueue(&msg, Some(0x0102), None, &mut out).is_ok());
        let mut want = V1_ENQUEUE.to_vec();
        want[0] = TAG_ENQUEUE;
        want.splice(14..21, [3, 0, 0, 0, 4, 1, 2]);
        assert_eq!(out, want);
        // Properties a v1 record cannot hold (not AMQP) are corruption.
        let mut bad = V1_ENQUEUE.to_vec();
        bad[18] = 0x80;
        assert!(decode(Bytes::from(bad)).is_err());
    }

    #[test]
    fn bcc_keys_round_trip_after_the_optional_fields() {
        let mut m = msg(true);
        m.bcc = vec![
            Arc::from("b1"),
            Arc::from(""),
            Arc::from("é".repeat(200).as_str()),
        ];
        for not_before in [None, Some(5)] {
            let mut out = Vec::new();
            assert!(encode_enqueue_held(&m, Some(9), Some(1), not_before, &mut out).is_ok());
            assert_eq!(
                out[1],
                FLAG_PERSISTENT
                    | FLAG_EXPIRES
                    | FLAG_PRIORITY
                    | FLAG_BCC
                    | if not_before.is_some() {
                        FLAG_NOT_BEFORE
                    } else {
                        0
                    }
            );
            let at = if not_before.is_some() { 19 } else { 11 };
            assert_eq!(&out[at..at + 10], &[3, 0, 0, 0, 2, 0, 0, 0, b'b', b'1']);
            assert_eq!(
                decode(Bytes::from(out.clone())).ok(),
                Some(Record::Enqueue {
                    msg: m.clone(),
                    expires_at: Some(9),
                    priority: Some(1),
                    not_before
                })
            );
            // Every truncation inside the list is a decode error, not a panic.
            for cut in at..at + 18 {
                assert!(
                    decode(Bytes::from(out[..cut].to_vec())).is_err(),
                    "cut {cut}"
                );
            }
        }
        // A count no record could hold is refused before allocating.
        let mut huge = vec![TAG_ENQUEUE, FLAG_BCC, 0xff, 0xff, 0xff, 0xff];
        huge.extend_from_slice(&[0; 8]);
        assert!(decode(Bytes::from(huge)).is_err());
    }

    #[test]
    fn held_enqueues_and_retries_round_trip() {
        for not_before in [None, Some(0), Some(1_700_000_000_123)] {
            for expires_at in [None, Some(9)] {
                let mut out = Vec::new();
                assert!(
                    encode_enqueue_held(&msg(true), expires_at, Some(3), not_before, &mut out)
                        .is_ok()
                );
                assert_eq!(
                    decode(Bytes::from(out)).ok(),
                    Some(Record::Enqueue {
                        msg: msg(true),
                        expires_at,
                        priority: Some(3),
                        not_before,
                    })
                );
            }
        }
        let mut out = Vec::new();
        encode_retry(&[(4, 100), (7, u64::MAX)], &mut out);
        assert_eq!(
            decode(Bytes::from(out.clone())).ok(),
            Some(Record::Retry(vec![(4, 100), (7, u64::MAX)]))
        );
        for cut in 0..out.len() {
            assert!(
                decode(Bytes::copy_from_slice(&out[..cut])).is_err(),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn drop_records_round_trip_with_their_reason() {
        for reason in [
            Reason::Expired,
            Reason::Maxlen,
            Reason::Rejected,
            Reason::DeliveryLimit,
        ] {
            let mut out = Vec::new();
            encode_drop(reason, &[7, 9], &mut out);
            assert_eq!(
                decode(Bytes::from(out)).ok(),
                Some(Record::Drop {
                    reason,
                    ids: vec![7, 9]
                })
            );
        }
        assert!(decode(Bytes::from_static(&[TAG_DROP, 9, 0, 0, 0, 0])).is_err());
        assert!(decode(Bytes::from_static(&[TAG_DROP])).is_err());
    }

    #[test]
    fn marks_round_trip_and_wrong_lengths_are_errors() {
        let m = encode_mark(0xfeed_beef_0000_0001, 42, &[]);
        assert_eq!(m.len(), 17);
        assert_eq!(
            decode(m.clone()).ok(),
            Some(Record::Mark {
                proposer: 0xfeed_beef_0000_0001,
                seq: 42,
                refused: vec![]
            })
        );
        assert!(decode(m.slice(..16)).is_err());
        let mut long = m.to_vec();
        long.push(0);
        assert!(decode(Bytes::from(long)).is_err());
        let r = encode_mark(5, 6, &[1, 4]);
        assert_eq!(r.len(), 17 + 4 + 8);
        assert_eq!(
            decode(r.clone()).ok(),
            Some(Record::Mark {
                proposer: 5,
                seq: 6,
                refused: vec![1, 4]
            })
        );
        assert!(decode(r.slice(..r.len() - 1)).is_err());
        let mut lying = r.to_vec();
        lying[17] = 0xff;
        assert!(decode(Bytes::from(lying)).is_err());
        assert!(decode(encode_mark(5, 6, &[4, 1])).is_err(), "not ascending");
    }

    #[test]
    fn id_records_round_trip() {
        let mut out = Vec::new();
        encode_ids(false, &[1, 5, 9], &mut out);
        assert_eq!(
            decode(Bytes::from(out)).ok(),
            Some(Record::Settle(vec![1, 5, 9]))
        );
        let mut out = Vec::new();
        encode_ids(true, &[], &mut out);
        assert_eq!(decode(Bytes::from(out)).ok(), Some(Record::Requeue(vec![])));
        let mut out = Vec::new();
        encode_purge(100, &[3, 4], &mut out);
        assert_eq!(
            decode(Bytes::from(out)).ok(),
            Some(Record::Purge {
                upto: 100,
                keep: vec![3, 4]
            })
        );
    }

    #[test]
    fn truncated_records_are_errors_not_panics() {
        let mut out = Vec::new();
        assert!(encode_enqueue(&msg(true), None, None, &mut out).is_ok());
        for cut in 0..12 {
            assert!(
                decode(Bytes::copy_from_slice(&out[..cut])).is_err(),
                "cut {cut}"
            );
        }
        let mut out = Vec::new();
        assert!(encode_enqueue(&msg(true), Some(5), Some(3), &mut out).is_ok());
        for cut in 0..21 {
            assert!(
                decode(Bytes::copy_from_slice(&out[..cut])).is_err(),
                "cut {cut}"
            );
        }
        let mut out = Vec::new();
        encode_ids(false, &[1, 2], &mut out);
        out.push(0);
        assert!(decode(Bytes::from(out)).is_err());
        assert!(decode(Bytes::from_static(&[9])).is_err());
    }

    #[test]
    fn over_long_names_are_refused_never_truncated() {
        // 200 × "é" = 400 bytes: clamping at 255 would cut a character.
        let mut m = msg(true);
        m.routing_key = Arc::from("é".repeat(200).as_str());
        let mut out = Vec::new();
        let e = encode_enqueue(&m, None, None, &mut out)
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("routing_key should be less than 255 bytes, actually was 400\n")
        );
        assert!(out.is_empty(), "nothing written for a refused message");
        let mut m = msg(true);
        m.exchange = Arc::from("x".repeat(256).as_str());
        assert!(encode_enqueue(&m, None, None, &mut out).is_err());
        assert!(out.is_empty());
        // 255 bytes is the limit, and it round-trips exactly.
        let mut m = msg(true);
        m.routing_key = Arc::from(format!("{}a", "é".repeat(127)).as_str());
        m.exchange = Arc::from("e".repeat(255).as_str());
        assert!(encode_enqueue(&m, None, None, &mut out).is_ok());
        assert_eq!(
            decode(Bytes::from(out)).ok(),
            Some(Record::Enqueue {
                msg: m,
                expires_at: None,
                priority: None,
                not_before: None,
            })
        );
    }
}
