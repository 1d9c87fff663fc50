//! The one record a stream's log holds: a message with its publish time.
//! Layout in `docs/streams.md`. All integers little-endian.

use crate::error::{CoreError, ErrorKind, Result};
use bytes::Bytes;
use ferry_model::message::Message;
use std::sync::Arc;

/// First byte of a stream record of format v2: properties are a props blob.
const TAG: u8 = b'T';
/// First byte of a stream record of format v1: properties are AMQP bytes
/// (read, converted by the front end's converter; never written).
const TAG_V1: u8 = b'S';
const PERSISTENT: u8 = 1;
/// Tag, timestamp, flags.
const FIXED: usize = 1 + 8 + 1;

/// Appends the record of `msg` published at `ts_ms` with `properties`
/// (the message's, with `x-stream-offset` already added) to `out`.
/// Refuses (writing nothing) a message whose exchange or routing key is
/// longer than a short string, or whose properties do not fit a u32: a
/// record is never truncated (`crate::limits`).
pub fn encode(msg: &Message, properties: &[u8], ts_ms: u64, out: &mut Vec<u8>) -> Result<()> {
    crate::queue::record::check_fields(msg)?;
    let short = |s: &str| u8::try_from(s.len()).unwrap_or(u8::MAX);
    let plen = u32::try_from(properties.len())
        .map_err(|_| CoreError::request(ErrorKind::PreconditionFailed, "properties too large"))?;
    let exchange = msg.exchange.as_bytes();
    let key = msg.routing_key.as_bytes();
    out.reserve(FIXED + 2 + exchange.len() + key.len() + 4 + properties.len() + msg.body.len());
    out.push(TAG);
    out.extend_from_slice(&ts_ms.to_le_bytes());
    out.push(if msg.persistent { PERSISTENT } else { 0 });
    out.push(short(&msg.exchange));
    out.extend_from_slice(exchange);
    out.push(short(&msg.routing_key));
    out.extend_from_slice(key);
    out.extend_from_slice(&plen.to_le_bytes());
    out.extend_from_slice(properties);
    out.extend_from_slice(&msg.body);
    Ok(())
}

fn corrupt(why: &str) -> CoreError {
    CoreError::Corrupt(format!("stream record: {why}"))
}

/// The publish time of a record (ms since the epoch).
pub fn timestamp(payload: &[u8]) -> Result<u64> {
    match payload {
        [TAG | TAG_V1, t0, t1, t2, t3, t4, t5, t6, t7, ..] => {
            Ok(u64::from_le_bytes([*t0, *t1, *t2, *t3, *t4, *t5, *t6, *t7]))
        }
        _ => Err(corrupt("bad tag or too short")),
    }
}

/// Decodes a record: (publish time, message). Slices share `payload`.
pub fn decode(payload: Bytes) -> Result<(u64, Message)> {
    let ts = timestamp(&payload)?;
    let mut at = FIXED;
    let flags = *payload.get(FIXED - 1).ok_or_else(|| corrupt("truncated"))?;
    let mut take = |n: usize| -> Result<Bytes> {
        let end = at.checked_add(n).filter(|e| *e <= payload.len());
        let end = end.ok_or_else(|| corrupt("truncated"))?;
        let b = payload.slice(at..end);
        at = end;
        Ok(b)
    };
    let str_of = |b: Bytes| -> Result<Arc<str>> {
        std::str::from_utf8(&b)
            .map(Arc::from)
            .map_err(|_| corrupt("name is not UTF-8"))
    };
    let len_byte = |b: Bytes| b.first().copied().map_or(0, usize::from);
    let n = len_byte(take(1)?);
    let exchange = str_of(take(n)?)?;
    let n = len_byte(take(1)?);
    let routing_key = str_of(take(n)?)?;
    let p = take(4)?;
    let plen = u32::from_le_bytes([p[0], p[1], p[2], p[3]]) as usize;
    let mut properties = take(plen)?;
    let body = payload.slice(at..);
    if payload[0] == TAG_V1 {
        properties = crate::props::from_legacy(&properties)?;
    }
    Ok((
        ts,
        Message {
            exchange,
            routing_key,
            properties,
            body,
            persistent: flags & PERSISTENT != 0,
            expiration_ms: None,
            bcc: Vec::new(),
        },
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let m = Message {
            exchange: Arc::from("amq.direct"),
            routing_key: Arc::from("k"),
            // A props blob: delivery mode 2.
            properties: Bytes::from_static(&[4, 1, 2]),
            body: Bytes::from_static(b"hello"),
            persistent: true,
            expiration_ms: None,
            bcc: Vec::new(),
        };
        let mut buf = Vec::new();
        encode(&m, &m.properties, 1_700_000_000_123, &mut buf).unwrap();
        let (ts, back) = decode(Bytes::from(buf.clone())).unwrap();
        assert_eq!(ts, 1_700_000_000_123);
        assert_eq!(back, m);
        assert_eq!(timestamp(&buf).unwrap(), ts);
        for cut in [0, 5, FIXED, FIXED + 3, FIXED + 14] {
            assert!(decode(Bytes::from(buf[..cut].to_vec())).is_err(), "{cut}");
        }
        buf[0] = b'X';
        assert!(decode(Bytes::from(buf)).is_err());
    }

    /// A record of format v1 (tag 'S', AMQP properties: delivery mode 2)
    /// still decodes, its properties converted to the blob.
    #[test]
    fn v1_records_decode_with_their_properties_converted() {
        crate::test_support::install_legacy_converter();
        let mut v1 = vec![b'S'];
        v1.extend_from_slice(&1_700_000_000_123u64.to_le_bytes());
        v1.push(PERSISTENT);
        v1.extend_from_slice(&[1, b'x', 1, b'k', 3, 0, 0, 0, 0x10, 0x00, 2]);
        v1.extend_from_slice(b"hi");
        let (ts, m) = decode(Bytes::from(v1.clone())).unwrap();
        assert_eq!(ts, 1_700_000_000_123);
        assert_eq!(timestamp(&v1).unwrap(), ts);
        assert_eq!(&m.properties[..], &[4, 1, 2]);
        assert_eq!(
            (&*m.exchange, &*m.routing_key, &m.body[..]),
            ("x", "k", &b"hi"[..])
        );
        assert!(m.persistent);
        // Written again it is a v2 record: tag 'T' and the blob.
        let mut out = Vec::new();
        encode(&m, &m.properties, ts, &mut out).unwrap();
        let mut want = v1.clone();
        want[0] = b'T';
        want.splice(14..21, [3, 0, 0, 0, 4, 1, 2]);
        assert_eq!(out, want);
        // v1 properties that are not AMQP are corruption.
        v1[18] = 0x80;
        assert!(decode(Bytes::from(v1)).is_err());
    }

    #[test]
    fn over_long_keys_are_refused_never_truncated() {
        let mut m = Message {
            exchange: Arc::from("amq.fanout"),
            routing_key: Arc::from("é".repeat(200).as_str()),
            properties: Bytes::new(),
            body: Bytes::from_static(b"x"),
            persistent: true,
            expiration_ms: None,
            bcc: Vec::new(),
        };
        let mut buf = Vec::new();
        assert!(encode(&m, &[], 1, &mut buf).is_err());
        assert!(buf.is_empty());
        m.routing_key = Arc::from(format!("{}a", "é".repeat(127)).as_str());
        encode(&m, &[], 1, &mut buf).unwrap();
        assert_eq!(decode(Bytes::from(buf)).unwrap().1, m);
    }
}
