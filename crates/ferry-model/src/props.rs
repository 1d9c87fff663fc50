//! Message properties in the core's own terms, and their binary form.
//!
//! [`Properties`] is the decoded, owned form. The binary form (a *props
//! blob*) is what a stored record and a shared in-memory message carry:
//! a list of fields, each `tag, varint length, payload`, tags ascending
//! (docs/message-model.md). The hot path never decodes a blob whole:
//! [`field`] finds one field by scanning tags and lengths, and the few
//! facts the core needs on every message (priority, expiration) are read
//! that way. Unknown tags (written by a newer Ferry) are kept and written
//! back unchanged, so a rolling upgrade never strips a field.

use crate::error::ModelError;
use crate::value::Table;
use crate::wire::{self, put_prefixed, put_varint, Reader};
use bytes::Bytes;

/// Field tags of the props blob. Never reuse a number.
pub mod tag {
    /// MIME type of the body.
    pub const CONTENT_TYPE: u8 = 1;
    /// Encoding of the body (gzip, …).
    pub const CONTENT_ENCODING: u8 = 2;
    /// Application headers (a table).
    pub const HEADERS: u8 = 3;
    /// 1 transient, 2 persistent (AMQP's delivery mode, kept as sent).
    pub const DELIVERY_MODE: u8 = 4;
    /// Message priority as sent (0-255).
    pub const PRIORITY: u8 = 5;
    /// Correlation id.
    pub const CORRELATION_ID: u8 = 6;
    /// Where replies go.
    pub const REPLY_TO: u8 = 7;
    /// Per-message TTL as sent (decimal milliseconds, as text).
    pub const EXPIRATION: u8 = 8;
    /// Message id.
    pub const MESSAGE_ID: u8 = 9;
    /// Creation time in seconds (big-endian u64).
    pub const TIMESTAMP: u8 = 10;
    /// Application message type (AMQP's `type`).
    pub const KIND: u8 = 11;
    /// The user the publisher claims to be.
    pub const USER_ID: u8 = 12;
    /// Application id.
    pub const APP_ID: u8 = 13;
    /// Reserved by AMQP 0-9-1 (`cluster-id`).
    pub const CLUSTER_ID: u8 = 14;
    /// A Kafka record key.
    pub const KEY: u8 = 32;
}

/// Decoded properties. Strings are bytes (normally UTF-8; kept exactly as
/// they arrived).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Properties {
    /// MIME type of the body.
    pub content_type: Option<Bytes>,
    /// Encoding of the body.
    pub content_encoding: Option<Bytes>,
    /// Application headers.
    pub headers: Option<Table>,
    /// 1 transient, 2 persistent.
    pub delivery_mode: Option<u8>,
    /// Priority as sent.
    pub priority: Option<u8>,
    /// Correlation id.
    pub correlation_id: Option<Bytes>,
    /// Where replies go.
    pub reply_to: Option<Bytes>,
    /// Per-message TTL as sent (text).
    pub expiration: Option<Bytes>,
    /// Message id.
    pub message_id: Option<Bytes>,
    /// Creation time, seconds since the epoch.
    pub timestamp: Option<u64>,
    /// Application message type.
    pub kind: Option<Bytes>,
    /// Claimed user.
    pub user_id: Option<Bytes>,
    /// Application id.
    pub app_id: Option<Bytes>,
    /// AMQP's reserved cluster id.
    pub cluster_id: Option<Bytes>,
    /// Kafka record key.
    pub key: Option<Bytes>,
    /// Fields this version does not know, as (tag, payload), tag order.
    pub unknown: Vec<(u8, Bytes)>,
}

impl Properties {
    /// The binary form.
    pub fn encode(&self) -> Bytes {
        let mut buf = Vec::with_capacity(64);
        self.encode_into(&mut buf);
        Bytes::from(buf)
    }

    /// Appends the binary form to `buf`.
    pub fn encode_into(&self, buf: &mut Vec<u8>) {
        let mut unknown = self.unknown.iter().peekable();
        let mut flush_below = |buf: &mut Vec<u8>, t: u8| {
            while let Some((u, payload)) = unknown.next_if(|(u, _)| *u < t) {
                buf.push(*u);
                put_prefixed(buf, payload);
            }
        };
        let bytes_field = |buf: &mut Vec<u8>, t: u8, v: &Option<Bytes>| {
            if let Some(b) = v {
                buf.push(t);
                put_prefixed(buf, b);
            }
        };
        flush_below(buf, tag::CONTENT_TYPE);
        bytes_field(buf, tag::CONTENT_TYPE, &self.content_type);
        bytes_field(buf, tag::CONTENT_ENCODING, &self.content_encoding);
        flush_below(buf, tag::HEADERS);
        if let Some(h) = &self.headers {
            let mut t = Vec::new();
            wire::put_table(&mut t, h);
            buf.push(tag::HEADERS);
            put_prefixed(buf, &t);
        }
        flush_below(buf, tag::DELIVERY_MODE);
        for (t, v) in [
            (tag::DELIVERY_MODE, self.delivery_mode),
            (tag::PRIORITY, self.priority),
        ] {
            if let Some(v) = v {
                buf.extend_from_slice(&[t, 1, v]);
            }
        }
        flush_below(buf, tag::CORRELATION_ID);
        bytes_field(buf, tag::CORRELATION_ID, &self.correlation_id);
        bytes_field(buf, tag::REPLY_TO, &self.reply_to);
        bytes_field(buf, tag::EXPIRATION, &self.expiration);
        bytes_field(buf, tag::MESSAGE_ID, &self.message_id);
        flush_below(buf, tag::TIMESTAMP);
        if let Some(ts) = self.timestamp {
            buf.extend_from_slice(&[tag::TIMESTAMP, 8]);
            buf.extend_from_slice(&ts.to_be_bytes());
        }
        flush_below(buf, tag::KIND);
        bytes_field(buf, tag::KIND, &self.kind);
        bytes_field(buf, tag::USER_ID, &self.user_id);
        bytes_field(buf, tag::APP_ID, &self.app_id);
        bytes_field(buf, tag::CLUSTER_ID, &self.cluster_id);
        flush_below(buf, tag::KEY);
        bytes_field(buf, tag::KEY, &self.key);
        flush_below(buf, u8::MAX);
        if let Some((u, payload)) = unknown.next() {
            // Tag 255 itself.
            buf.push(*u);
            put_prefixed(buf, payload);
        }
    }

    /// Decodes a props blob.
    pub fn decode(blob: &Bytes) -> Result<Properties, ModelError> {
        let mut p = Properties::default();
        for f in Fields::new(blob) {
            let (t, v) = f?;
            let dup = match t {
                tag::CONTENT_TYPE => p.content_type.replace(v).is_some(),
                tag::CONTENT_ENCODING => p.content_encoding.replace(v).is_some(),
                tag::HEADERS => p.headers.replace(decode_table(&v)?).is_some(),
                tag::DELIVERY_MODE => p.delivery_mode.replace(one_byte(&v)?).is_some(),
                tag::PRIORITY => p.priority.replace(one_byte(&v)?).is_some(),
                tag::CORRELATION_ID => p.correlation_id.replace(v).is_some(),
                tag::REPLY_TO => p.reply_to.replace(v).is_some(),
                tag::EXPIRATION => p.expiration.replace(v).is_some(),
                tag::MESSAGE_ID => p.message_id.replace(v).is_some(),
                tag::TIMESTAMP => p.timestamp.replace(u64_field(&v)?).is_some(),
                tag::KIND => p.kind.replace(v).is_some(),
                tag::USER_ID => p.user_id.replace(v).is_some(),
                tag::APP_ID => p.app_id.replace(v).is_some(),
                tag::CLUSTER_ID => p.cluster_id.replace(v).is_some(),
                tag::KEY => p.key.replace(v).is_some(),
                other => {
                    p.unknown.push((other, v));
                    false
                }
            };
            if dup {
                return Err(ModelError::Malformed("property given twice"));
            }
        }
        Ok(p)
    }
}

/// The fields of a props blob in order, as (tag, payload); checks that
/// tags ascend.
#[derive(Debug)]
pub struct Fields<'a> {
    blob: &'a Bytes,
    inner: FieldSlices<'a>,
}

impl<'a> Fields<'a> {
    /// Fields of `blob`.
    pub fn new(blob: &'a Bytes) -> Self {
        Fields {
            blob,
            inner: FieldSlices::new(blob),
        }
    }
}

impl Iterator for Fields<'_> {
    type Item = Result<(u8, Bytes), ModelError>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = self.inner.next()?;
        Some(item.map(|(t, v)| (t, self.blob.slice_ref(v))))
    }
}

/// [`Fields`] borrowing the payloads (no reference count touched: what a
/// hot path that only copies them out wants, e.g. a front end encoding a
/// delivery). The same checks.
#[derive(Debug)]
pub struct FieldSlices<'a> {
    r: Reader<'a>,
    last: Option<u8>,
    failed: bool,
}

impl<'a> FieldSlices<'a> {
    /// Fields of `blob`.
    pub fn new(blob: &'a Bytes) -> Self {
        FieldSlices {
            r: Reader::new(blob),
            last: None,
            failed: false,
        }
    }
}

impl<'a> Iterator for FieldSlices<'a> {
    type Item = Result<(u8, &'a [u8]), ModelError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.r.remaining() == 0 {
            return None;
        }
        let item = (|| {
            let t = self.r.u8()?;
            if self.last.is_some_and(|l| l >= t) {
                return Err(ModelError::Malformed("property tags out of order"));
            }
            self.last = Some(t);
            let n = self.r.length()?;
            Ok((t, self.r.slice(n)?))
        })();
        self.failed = item.is_err();
        Some(item)
    }
}

/// The payload of field `t` of `blob`, without decoding the others.
pub fn field(blob: &Bytes, t: u8) -> Result<Option<Bytes>, ModelError> {
    for f in Fields::new(blob) {
        let (tag, v) = f?;
        if tag == t {
            return Ok(Some(v));
        }
        if tag > t {
            break;
        }
    }
    Ok(None)
}

/// The `priority` of a props blob.
pub fn priority(blob: &Bytes) -> Result<Option<u8>, ModelError> {
    field(blob, tag::PRIORITY)?
        .map(|v| one_byte(&v))
        .transpose()
}

/// The headers of a props blob.
pub fn headers(blob: &Bytes) -> Result<Option<Table>, ModelError> {
    field(blob, tag::HEADERS)?
        .map(|v| decode_table(&v))
        .transpose()
}

fn decode_table(v: &Bytes) -> Result<Table, ModelError> {
    let mut r = Reader::new(v);
    let t = wire::read_table(&mut r)?;
    if r.remaining() != 0 {
        return Err(ModelError::Malformed("bytes after the headers table"));
    }
    Ok(t)
}

fn one_byte(v: &Bytes) -> Result<u8, ModelError> {
    match v[..] {
        [b] => Ok(b),
        _ => Err(ModelError::Malformed("one-byte property")),
    }
}

fn u64_field(v: &Bytes) -> Result<u64, ModelError> {
    let a: [u8; 8] = v[..]
        .try_into()
        .map_err(|_| ModelError::Malformed("timestamp"))?;
    Ok(u64::from_be_bytes(a))
}

/// Appends a field to a blob under construction (tags must ascend).
pub fn put_field(buf: &mut Vec<u8>, t: u8, payload: &[u8]) {
    buf.push(t);
    put_varint(buf, payload.len() as u64);
    buf.extend_from_slice(payload);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::value::Value;

    fn full() -> Properties {
        Properties {
            content_type: Some(Bytes::from_static(b"text/plain")),
            content_encoding: Some(Bytes::from_static(b"gzip")),
            headers: Some(
                [("a", Value::I32(1)), ("b", Value::str("x"))]
                    .into_iter()
                    .collect(),
            ),
            delivery_mode: Some(2),
            priority: Some(9),
            correlation_id: Some(Bytes::from_static(b"c")),
            reply_to: Some(Bytes::from_static(b"r")),
            expiration: Some(Bytes::from_static(b"60000")),
            message_id: Some(Bytes::from_static(b"m")),
            timestamp: Some(1_765_000_000),
            kind: Some(Bytes::from_static(b"t")),
            user_id: Some(Bytes::from_static(b"guest")),
            app_id: Some(Bytes::from_static(b"app")),
            cluster_id: Some(Bytes::from_static(b"cl")),
            key: Some(Bytes::from_static(b"\x00key")),
            unknown: vec![(20, Bytes::from_static(b"new")), (255, Bytes::new())],
        }
    }

    #[test]
    fn properties_round_trip_with_unknown_fields_kept() {
        for p in [Properties::default(), full()] {
            let blob = p.encode();
            assert_eq!(Properties::decode(&blob).unwrap(), p);
        }
        assert!(Properties::default().encode().is_empty());
    }

    #[test]
    fn single_fields_read_without_decoding_the_rest() {
        let blob = full().encode();
        assert_eq!(priority(&blob).unwrap(), Some(9));
        assert_eq!(headers(&blob).unwrap(), full().headers);
        assert_eq!(
            field(&blob, tag::EXPIRATION).unwrap().as_deref(),
            Some(&b"60000"[..])
        );
        assert_eq!(field(&blob, tag::CLUSTER_ID + 1).unwrap(), None);
        assert_eq!(priority(&Properties::default().encode()).unwrap(), None);
    }

    #[test]
    fn damaged_blobs_are_errors() {
        let blob = full().encode();
        for n in 1..blob.len() {
            let cut = blob.slice(..n);
            // A cut at a field boundary is a valid, shorter blob; anything
            // else must be an error, never a panic.
            if let Ok(p) = Properties::decode(&cut) {
                assert_ne!(p, full());
            }
        }
        let mut twice = Vec::new();
        put_field(&mut twice, tag::PRIORITY, &[1]);
        put_field(&mut twice, tag::PRIORITY, &[2]);
        assert!(Properties::decode(&Bytes::from(twice)).is_err());
        let mut wide = Vec::new();
        put_field(&mut wide, tag::PRIORITY, &[1, 2]);
        assert!(priority(&Bytes::from(wide)).is_err());
    }
}
