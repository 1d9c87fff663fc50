//! Bodies of the requests a follower of a replicated queue sends the
//! queue's leader to serve its own clients (docs/cluster-wire.md, "Queue
//! requests"): pure codecs. Messages travel as the queue's own Enqueue
//! records (opaque here).

use super::{put_bytes, put_text, put_u32, take_text, Reader};
use crate::error::WireError;
use bytes::Bytes;
use ferry_queue::queue::Depth;

/// Pull deliveries for a follower's consumers (answered when there are
/// some, or after a while with none).
pub const KIND_PULL: u8 = 8;
/// New credit for a follower's consumers (answered at once, empty).
pub const KIND_CREDIT: u8 = 9;
/// Acks, requeues or rejects from a follower's clients.
pub const KIND_SETTLE: u8 = 10;
/// basic.get through a follower.
pub const KIND_GET: u8 = 11;
/// queue.purge through a follower (empty body; answer: count u32).
pub const KIND_PURGE: u8 = 12;
/// The figures of the queues the receiver leads, among the groups asked
/// (group 0; body: the group ids; answer: the queue's `Depth` of those it
/// leads, [`encode_figures`]).
pub const KIND_FIGURES: u8 = 17;

/// `n u32 | n × group u64`
pub fn encode_groups(groups: &[u64]) -> Bytes {
    let mut b = Vec::with_capacity(4 + groups.len() * 8);
    put_u32(&mut b, groups.len());
    for g in groups {
        b.extend_from_slice(&g.to_le_bytes());
    }
    Bytes::from(b)
}

/// Decodes [`encode_groups`]'s bytes.
pub fn decode_groups(body: Bytes) -> Result<Vec<u64>, WireError> {
    let mut r = Reader::new(body);
    let n = r.count(8, "groups")?;
    let out = (0..n).map(|_| r.u64()).collect::<Result<Vec<_>, _>>()?;
    r.end()?;
    Ok(out)
}

/// `n u32 | n × (group, ready, unacked, ready_bytes, unacked_bytes,
/// consumers, delayed: u64 each)`: each queue's figures on its leader.
pub fn encode_figures(figures: &[(u64, Depth)]) -> Bytes {
    let mut b = Vec::with_capacity(4 + figures.len() * 56);
    put_u32(&mut b, figures.len());
    for (group, d) in figures {
        for v in [
            *group,
            d.ready,
            d.unacked,
            d.ready_bytes,
            d.unacked_bytes,
            d.consumers,
            d.delayed,
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
    }
    Bytes::from(b)
}

/// Decodes [`encode_figures`]'s bytes.
pub fn decode_figures(body: Bytes) -> Result<Vec<(u64, Depth)>, WireError> {
    let mut r = Reader::new(body);
    let n = r.count(56, "figures")?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let group = r.u64()?;
        let d = Depth {
            ready: r.u64()?,
            unacked: r.u64()?,
            ready_bytes: r.u64()?,
            unacked_bytes: r.u64()?,
            consumers: r.u64()?,
            delayed: r.u64()?,
        };
        out.push((group, d));
    }
    r.end()?;
    Ok(out)
}

/// One of a follower's consumers and how far the leader may deliver to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerCredit {
    /// Its id on the follower.
    pub id: u64,
    /// Its consumer tag.
    pub tag: String,
    /// Auto-ack.
    pub no_ack: bool,
    /// Exclusive.
    pub exclusive: bool,
    /// `x-priority`.
    pub priority: i64,
    /// The leader may deliver to it until it has delivered this many in
    /// the session (what the follower received plus what it takes now).
    pub limit: u64,
}

/// A pull or credit request: the follower's consumers, all of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credit {
    /// The follower's session with the leader (a new one after any break).
    pub session: u64,
    /// The session's first request: the leader creates it. A later
    /// request for a session the leader does not know fails (the
    /// follower starts a new one: what it counted no longer holds).
    pub fresh: bool,
    /// Every consumer of the follower's clients on the queue.
    pub consumers: Vec<ConsumerCredit>,
}

/// One message delivered to a follower's consumer (or got).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The follower's consumer id (0 for basic.get).
    pub consumer: u64,
    /// The message id.
    pub msg_id: u64,
    /// Delivered before.
    pub redelivered: bool,
    /// Times it was returned.
    pub delivery_count: u32,
    /// The message, as a queue Enqueue record.
    pub record: Bytes,
}

/// A pull's answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pulled {
    /// Deliveries, in order.
    pub deliveries: Vec<Delivered>,
    /// Consumers the leader refused or ended (an exclusive consumer
    /// elsewhere, ...): the follower cancels them.
    pub cancelled: Vec<u64>,
}

/// What a settle request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettleOp {
    /// basic.ack.
    Ack = 0,
    /// Back to the queue.
    Requeue = 1,
    /// Dropped (dead-lettered).
    Reject = 2,
}

/// Smallest encoded consumer: id, tag length, flags, priority, limit.
const CONSUMER_MIN: usize = 8 + 2 + 2 + 8 + 8;
/// Smallest encoded delivery: consumer, id, flag, count, record length.
const DELIVERED_MIN: usize = 8 + 8 + 1 + 4 + 4;

/// `session u64 | fresh u8 | u32 n | n × (id u64 | text tag | no_ack u8 |
/// exclusive u8 | priority i64 | limit u64)`
pub fn encode_credit(c: &Credit) -> Bytes {
    let mut b = Vec::with_capacity(16 + c.consumers.len() * (CONSUMER_MIN + 16));
    b.extend_from_slice(&c.session.to_le_bytes());
    b.push(u8::from(c.fresh));
    put_u32(&mut b, c.consumers.len());
    for x in &c.consumers {
        b.extend_from_slice(&x.id.to_le_bytes());
        put_text(&mut b, &x.tag, u16::MAX as usize);
        b.push(u8::from(x.no_ack));
        b.push(u8::from(x.exclusive));
        b.extend_from_slice(&x.priority.to_le_bytes());
        b.extend_from_slice(&x.limit.to_le_bytes());
    }
    Bytes::from(b)
}

/// Decodes a pull or credit request.
pub fn decode_credit(body: Bytes) -> Result<Credit, WireError> {
    let mut r = Reader::new(body);
    let session = r.u64()?;
    let fresh = r.bool()?;
    let n = r.count(CONSUMER_MIN, "consumers")?;
    let mut consumers = Vec::with_capacity(n);
    for _ in 0..n {
        let id = r.u64()?;
        let tag = take_text(&mut r.buf)?;
        consumers.push(ConsumerCredit {
            id,
            tag,
            no_ack: r.bool()?,
            exclusive: r.bool()?,
            priority: r.u64()? as i64,
            limit: r.u64()?,
        });
    }
    r.end()?;
    Ok(Credit {
        session,
        fresh,
        consumers,
    })
}

fn put_delivered(b: &mut Vec<u8>, d: &Delivered) {
    b.extend_from_slice(&d.consumer.to_le_bytes());
    b.extend_from_slice(&d.msg_id.to_le_bytes());
    b.push(u8::from(d.redelivered));
    b.extend_from_slice(&d.delivery_count.to_le_bytes());
    put_bytes(b, &d.record);
}

fn take_delivered(r: &mut Reader) -> Result<Delivered, WireError> {
    Ok(Delivered {
        consumer: r.u64()?,
        msg_id: r.u64()?,
        redelivered: r.bool()?,
        delivery_count: r.u32()?,
        record: r.bytes()?,
    })
}

/// `u32 n | n × (consumer u64 | msg_id u64 | redelivered u8 |
/// delivery_count u32 | bytes record) | u32 m | m × consumer u64`
pub fn encode_pulled(p: &Pulled) -> Bytes {
    let size: usize = p
        .deliveries
        .iter()
        .map(|d| DELIVERED_MIN + d.record.len())
        .sum();
    let mut b = Vec::with_capacity(8 + size + p.cancelled.len() * 8);
    put_u32(&mut b, p.deliveries.len());
    for d in &p.deliveries {
        put_delivered(&mut b, d);
    }
    put_u32(&mut b, p.cancelled.len());
    for c in &p.cancelled {
        b.extend_from_slice(&c.to_le_bytes());
    }
    Bytes::from(b)
}

/// Decodes a pull's answer.
pub fn decode_pulled(body: Bytes) -> Result<Pulled, WireError> {
    let mut r = Reader::new(body);
    let n = r.count(DELIVERED_MIN, "deliveries")?;
    let mut deliveries = Vec::with_capacity(n);
    for _ in 0..n {
        deliveries.push(take_delivered(&mut r)?);
    }
    let m = r.count(8, "cancellations")?;
    let mut cancelled = Vec::with_capacity(m);
    for _ in 0..m {
        cancelled.push(r.u64()?);
    }
    r.end()?;
    Ok(Pulled {
        deliveries,
        cancelled,
    })
}

/// `session u64 | op u8 | u32 n | n × id u64`
pub fn encode_settle(session: u64, op: SettleOp, ids: &[u64]) -> Bytes {
    let mut b = Vec::with_capacity(13 + ids.len() * 8);
    b.extend_from_slice(&session.to_le_bytes());
    b.push(op as u8);
    put_u32(&mut b, ids.len());
    for id in ids {
        b.extend_from_slice(&id.to_le_bytes());
    }
    Bytes::from(b)
}

/// Decodes a settle request.
pub fn decode_settle(body: Bytes) -> Result<(u64, SettleOp, Vec<u64>), WireError> {
    let mut r = Reader::new(body);
    let session = r.u64()?;
    let op = match r.u8()? {
        0 => SettleOp::Ack,
        1 => SettleOp::Requeue,
        2 => SettleOp::Reject,
        o => return Err(WireError(format!("settle op {o}"))),
    };
    let n = r.count(8, "ids")?;
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        ids.push(r.u64()?);
    }
    r.end()?;
    Ok((session, op, ids))
}

/// `session u64 | no_ack u8`
pub fn encode_get(session: u64, no_ack: bool) -> Bytes {
    let mut b = session.to_le_bytes().to_vec();
    b.push(u8::from(no_ack));
    Bytes::from(b)
}

/// Decodes a get request.
pub fn decode_get(body: Bytes) -> Result<(u64, bool), WireError> {
    let mut r = Reader::new(body);
    let session = r.u64()?;
    let no_ack = r.bool()?;
    r.end()?;
    Ok((session, no_ack))
}

/// `0u8` (empty) | `1u8 | left u32 | delivery`
pub fn encode_got(got: Option<&(Delivered, u32)>) -> Bytes {
    let mut b = Vec::new();
    match got {
        None => b.push(0),
        Some((d, left)) => {
            b.push(1);
            b.extend_from_slice(&left.to_le_bytes());
            put_delivered(&mut b, d);
        }
    }
    Bytes::from(b)
}

/// Decodes a get's answer.
pub fn decode_got(body: Bytes) -> Result<Option<(Delivered, u32)>, WireError> {
    let mut r = Reader::new(body);
    if !r.bool()? {
        r.end()?;
        return Ok(None);
    }
    let left = r.u32()?;
    let d = take_delivered(&mut r)?;
    r.end()?;
    Ok(Some((d, left)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn requests_and_answers_round_trip() {
        let c = Credit {
            session: 7,
            fresh: true,
            consumers: vec![ConsumerCredit {
                id: 3,
                tag: "amq.ctag-1".into(),
                no_ack: false,
                exclusive: true,
                priority: -2,
                limit: 40,
            }],
        };
        assert_eq!(decode_credit(encode_credit(&c)).unwrap(), c);
        let d = Delivered {
            consumer: 3,
            msg_id: 99,
            redelivered: true,
            delivery_count: 2,
            record: Bytes::from_static(b"\x07rec"),
        };
        let p = Pulled {
            deliveries: vec![d.clone(), d.clone()],
            cancelled: vec![5],
        };
        assert_eq!(decode_pulled(encode_pulled(&p)).unwrap(), p);
        let s = encode_settle(7, SettleOp::Reject, &[1, 2]);
        assert_eq!(decode_settle(s).unwrap(), (7, SettleOp::Reject, vec![1, 2]));
        assert_eq!(decode_get(encode_get(7, true)).unwrap(), (7, true));
        let got = Some((d, 4));
        assert_eq!(decode_got(encode_got(got.as_ref())).unwrap(), got);
        assert_eq!(decode_got(encode_got(None)).unwrap(), None);
    }

    #[test]
    fn lying_counts_and_trailing_bytes_are_refused() {
        let mut b = 7u64.to_le_bytes().to_vec();
        b.push(0);
        b.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_credit(Bytes::from(b)).is_err());
        let mut b = u32::MAX.to_le_bytes().to_vec();
        b.extend_from_slice(&[0; 8]);
        assert!(decode_pulled(Bytes::from(b)).is_err());
        let mut s = encode_settle(1, SettleOp::Ack, &[1]).to_vec();
        s.push(0);
        assert!(decode_settle(Bytes::from(s)).is_err());
        assert!(decode_settle(Bytes::from_static(&[0; 9])).is_err());
        assert!(decode_got(Bytes::from_static(&[2])).is_err());
    }
}
