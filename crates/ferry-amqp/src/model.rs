//! AMQP 0-9-1 ⇄ ferry-model, at the edge: raw content properties to a
//! props blob and back, field tables and values to model tables and back
//! (docs/message-model.md, "AMQP 0-9-1").
//!
//! The property list is walked directly (flags, then each present field in
//! flag order); the model's tags follow the same order, so a blob is
//! written front to back with no sorting. Header tables are decoded into
//! model values (RabbitMQ's field types: 's' and 'U' are 16-bit signed,
//! 'l' and 'L' 64-bit signed, as RabbitMQ reads them) with nesting bounded
//! as for amq-protocol's parser.

use crate::error::CodecError;
use amq_protocol::types::{
    AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable, LongString, ShortString,
};
use bytes::{BufMut, Bytes};
use ferry_model::props::{self, tag, FieldSlices};
use ferry_model::{wire, Table, Value};
use std::sync::Arc;

/// Deepest nesting accepted, the top-level table counting as 1 (as
/// `nesting::MAX_NESTING`).
const MAX_NESTING: usize = crate::nesting::MAX_NESTING;

#[derive(Clone, Copy)]
enum Kind {
    Short,
    Table,
    Octet,
    Timestamp,
}

/// (flag bit, model tag, wire kind, name) in AMQP's property order.
const PROPS: [(u16, u8, Kind, &str); 14] = [
    (1 << 15, tag::CONTENT_TYPE, Kind::Short, "content_type"),
    (
        1 << 14,
        tag::CONTENT_ENCODING,
        Kind::Short,
        "content_encoding",
    ),
    (1 << 13, tag::HEADERS, Kind::Table, "headers"),
    (1 << 12, tag::DELIVERY_MODE, Kind::Octet, "delivery_mode"),
    (1 << 11, tag::PRIORITY, Kind::Octet, "priority"),
    (1 << 10, tag::CORRELATION_ID, Kind::Short, "correlation_id"),
    (1 << 9, tag::REPLY_TO, Kind::Short, "reply_to"),
    (1 << 8, tag::EXPIRATION, Kind::Short, "expiration"),
    (1 << 7, tag::MESSAGE_ID, Kind::Short, "message_id"),
    (1 << 6, tag::TIMESTAMP, Kind::Timestamp, "timestamp"),
    (1 << 5, tag::KIND, Kind::Short, "type"),
    (1 << 4, tag::USER_ID, Kind::Short, "user_id"),
    (1 << 3, tag::APP_ID, Kind::Short, "app_id"),
    (1 << 2, tag::CLUSTER_ID, Kind::Short, "cluster_id"),
];

struct Cursor<'a> {
    b: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if n > self.b.len() {
            return Err(CodecError::MalformedProperties);
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn arr<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.arr::<1>()?[0])
    }
    fn u32(&mut self) -> Result<u32, CodecError> {
        Ok(u32::from_be_bytes(self.arr()?))
    }
    fn short(&mut self) -> Result<&'a [u8], CodecError> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }
    fn long(&mut self) -> Result<&'a [u8], CodecError> {
        let n = self.u32()?;
        self.take(n as usize)
    }
    fn varint(&mut self) -> Result<usize, CodecError> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return usize::try_from(v).map_err(|_| CodecError::MalformedProperties);
            }
        }
        Err(CodecError::MalformedProperties)
    }
}

/// Converts raw AMQP content properties (flags + property list, as in a
/// content header frame) to a props blob.
pub fn props_to_model(raw: &[u8]) -> Result<Bytes, CodecError> {
    let mut out = Vec::with_capacity(raw.len() + 8);
    props_to_model_into(raw, &mut out)?;
    Ok(Bytes::from(out))
}

/// [`props_to_model`] appending to `out` (a record being encoded): no
/// allocation of its own. On error `out` may hold part of the blob.
pub fn props_to_model_into(raw: &[u8], out: &mut Vec<u8>) -> Result<(), CodecError> {
    let mut c = Cursor { b: raw };
    let flags = u16::from_be_bytes(c.arr()?);
    // Bit 0 would announce a second flag word (basic has none); bit 1 is
    // unused.
    if flags & 0b11 != 0 {
        return Err(CodecError::MalformedProperties);
    }
    for (bit, t, kind, _) in PROPS {
        if flags & bit == 0 {
            continue;
        }
        match kind {
            Kind::Short => props::put_field(out, t, c.short()?),
            Kind::Octet => props::put_field(out, t, &[c.u8()?]),
            Kind::Timestamp => props::put_field(out, t, &c.arr::<8>()?),
            Kind::Table => {
                out.push(t);
                let start = out.len();
                table_to_model(c.long()?, out, 1)?;
                // The field's varint length goes before the table, now
                // that it is known (a small move: headers are small).
                let mut len = Vec::with_capacity(5);
                wire::put_varint(&mut len, (out.len() - start) as u64);
                out.splice(start..start, len);
            }
        }
    }
    if !c.b.is_empty() {
        return Err(CodecError::MalformedProperties);
    }
    Ok(())
}

/// Converts a props blob to raw AMQP content properties. Fields AMQP has
/// no property for (a Kafka key, tags of a newer Ferry) are left out;
/// strings over 255 bytes and table keys over 255 bytes cannot be sent and
/// are an error.
pub fn props_from_model(blob: &Bytes) -> Result<Bytes, CodecError> {
    let mut out = Vec::with_capacity(blob.len() + 8);
    props_from_model_into(blob, &mut out)?;
    Ok(Bytes::from(out))
}

/// [`props_from_model`] appending to `out` (a frame being encoded).
pub fn props_from_model_into(blob: &Bytes, out: &mut Vec<u8>) -> Result<(), CodecError> {
    let at = out.len();
    out.put_u16(0);
    let mut flags = 0u16;
    for f in FieldSlices::new(blob) {
        let (t, v) = f.map_err(|_| CodecError::MalformedProperties)?;
        let Some(&(bit, _, kind, name)) = PROPS.iter().find(|p| p.1 == t) else {
            continue;
        };
        flags |= bit;
        match kind {
            Kind::Short => put_short(out, v, name)?,
            Kind::Octet | Kind::Timestamp => out.extend_from_slice(v),
            Kind::Table => {
                let mut c = Cursor { b: v };
                table_from_model(c.long()?, out, 1)?;
                if !c.b.is_empty() {
                    return Err(CodecError::MalformedProperties);
                }
            }
        }
    }
    out[at..at + 2].copy_from_slice(&flags.to_be_bytes());
    Ok(())
}

fn put_short(out: &mut Vec<u8>, s: &[u8], field: &'static str) -> Result<(), CodecError> {
    let n = u8::try_from(s.len()).map_err(|_| CodecError::ShortStringTooLong {
        field,
        len: s.len(),
    })?;
    out.put_u8(n);
    out.put_slice(s);
    Ok(())
}

/// Which side of the conversion a value is read from.
#[derive(Clone, Copy, PartialEq)]
enum Side {
    Amqp,
    Model,
}

/// Transcodes the entries of an AMQP field table (`src`, without its
/// length) to a model table (with its length) at the end of `out`.
fn table_to_model(src: &[u8], out: &mut Vec<u8>, depth: usize) -> Result<(), CodecError> {
    transcode_table(src, out, depth, Side::Amqp)
}

/// The reverse of [`table_to_model`].
fn table_from_model(src: &[u8], out: &mut Vec<u8>, depth: usize) -> Result<(), CodecError> {
    transcode_table(src, out, depth, Side::Model)
}

/// Tables differ only in how keys are prefixed (AMQP: one byte; model: a
/// varint) and in the type letters AMQP allows as aliases; values are
/// otherwise laid out alike (docs/message-model.md), so this copies.
fn transcode_table(
    src: &[u8],
    out: &mut Vec<u8>,
    depth: usize,
    from: Side,
) -> Result<(), CodecError> {
    if depth > MAX_NESTING {
        return Err(CodecError::MalformedProperties);
    }
    let at = wire::begin_len(out);
    let mut c = Cursor { b: src };
    while !c.b.is_empty() {
        let key = match from {
            Side::Amqp => c.short()?,
            Side::Model => {
                let n = c.varint()?;
                c.take(n)?
            }
        };
        if std::str::from_utf8(key).is_err() {
            return Err(CodecError::MalformedProperties);
        }
        match from {
            Side::Amqp => wire::put_prefixed(out, key),
            Side::Model => put_short(out, key, "table key")?,
        }
        transcode_value(&mut c, out, depth, from)?;
    }
    wire::end_len(out, at);
    Ok(())
}

fn transcode_value(
    c: &mut Cursor<'_>,
    out: &mut Vec<u8>,
    depth: usize,
    from: Side,
) -> Result<(), CodecError> {
    let letter = c.u8()?;
    let (canonical, fixed) = match letter {
        b't' | b'b' | b'B' => (letter, 1),
        b's' | b'u' => (letter, 2),
        b'U' if from == Side::Amqp => (b's', 2),
        b'I' | b'i' | b'f' => (letter, 4),
        b'l' | b'd' | b'T' => (letter, 8),
        b'L' if from == Side::Amqp => (b'l', 8),
        b'D' => (letter, 5),
        b'V' => (letter, 0),
        b'S' | b'x' | b'F' | b'A' => (letter, usize::MAX),
        _ => return Err(CodecError::MalformedProperties),
    };
    out.push(canonical);
    if fixed != usize::MAX {
        out.extend_from_slice(c.take(fixed)?);
        return Ok(());
    }
    let inner = c.long()?;
    match letter {
        b'F' => transcode_table(inner, out, depth + 1, from),
        b'A' => {
            if depth + 1 > MAX_NESTING {
                return Err(CodecError::MalformedProperties);
            }
            let at = wire::begin_len(out);
            let mut items = Cursor { b: inner };
            while !items.b.is_empty() {
                transcode_value(&mut items, out, depth + 1, from)?;
            }
            wire::end_len(out, at);
            Ok(())
        }
        _ => {
            out.put_u32(inner.len() as u32);
            out.extend_from_slice(inner);
            Ok(())
        }
    }
}

/// An amq-protocol value as a model value.
pub fn value_from_amqp(v: &AMQPValue) -> Value {
    match v {
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::ShortShortInt(x) => Value::I8(*x),
        AMQPValue::ShortShortUInt(x) => Value::U8(*x),
        AMQPValue::ShortInt(x) => Value::I16(*x),
        AMQPValue::ShortUInt(x) => Value::U16(*x),
        AMQPValue::LongInt(x) => Value::I32(*x),
        AMQPValue::LongUInt(x) => Value::U32(*x),
        AMQPValue::LongLongInt(x) => Value::I64(*x),
        AMQPValue::Float(x) => Value::F32(*x),
        AMQPValue::Double(x) => Value::F64(*x),
        AMQPValue::DecimalValue(d) => Value::Decimal {
            scale: d.scale,
            value: d.value,
        },
        AMQPValue::ShortString(s) => Value::str(s.as_str()),
        AMQPValue::LongString(s) => Value::Str(Bytes::copy_from_slice(s.as_bytes())),
        AMQPValue::FieldArray(a) => {
            Value::Array(a.as_slice().iter().map(value_from_amqp).collect())
        }
        AMQPValue::Timestamp(t) => Value::Timestamp(*t),
        AMQPValue::FieldTable(t) => Value::Table(table_from_amqp(t)),
        AMQPValue::ByteArray(b) => Value::Bytes(Bytes::copy_from_slice(b.as_slice())),
        AMQPValue::Void => Value::Void,
    }
}

/// An amq-protocol table as a model table (amq-protocol's tables are
/// sorted maps: its key order).
pub fn table_from_amqp(t: &FieldTable) -> Table {
    t.inner()
        .iter()
        .map(|(k, v)| (Arc::<str>::from(k.as_str()), value_from_amqp(v)))
        .collect()
}

/// A model value as an amq-protocol value.
pub fn value_to_amqp(v: &Value) -> Result<AMQPValue, CodecError> {
    Ok(match v {
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::I8(x) => AMQPValue::ShortShortInt(*x),
        Value::U8(x) => AMQPValue::ShortShortUInt(*x),
        Value::I16(x) => AMQPValue::ShortInt(*x),
        Value::U16(x) => AMQPValue::ShortUInt(*x),
        Value::I32(x) => AMQPValue::LongInt(*x),
        Value::U32(x) => AMQPValue::LongUInt(*x),
        Value::I64(x) => AMQPValue::LongLongInt(*x),
        Value::F32(x) => AMQPValue::Float(*x),
        Value::F64(x) => AMQPValue::Double(*x),
        Value::Decimal { scale, value } => AMQPValue::DecimalValue(DecimalValue {
            scale: *scale,
            value: *value,
        }),
        Value::Str(s) => AMQPValue::LongString(LongString::from(s.to_vec())),
        Value::Timestamp(t) => AMQPValue::Timestamp(*t),
        Value::Table(t) => AMQPValue::FieldTable(table_to_amqp(t)?),
        Value::Array(items) => AMQPValue::FieldArray(FieldArray::from(
            items
                .iter()
                .map(value_to_amqp)
                .collect::<Result<Vec<_>, _>>()?,
        )),
        Value::Bytes(b) => AMQPValue::ByteArray(ByteArray::from(b.to_vec())),
        Value::Void => AMQPValue::Void,
    })
}

/// A model table as an amq-protocol table (sorted by key, the first of
/// repeated keys kept); keys over 255 bytes cannot be sent.
pub fn table_to_amqp(t: &Table) -> Result<FieldTable, CodecError> {
    let mut out = FieldTable::default();
    for (k, v) in t.iter() {
        let key = ShortString::try_new(&**k).map_err(|_| CodecError::ShortStringTooLong {
            field: "table key",
            len: k.len(),
        })?;
        if !out.contains_key(k) {
            out.insert(key, value_to_amqp(v)?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
