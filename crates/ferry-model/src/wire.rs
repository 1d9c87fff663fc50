//! The binary form of values and tables (docs/message-model.md has the
//! byte diagram): what stored records carry. Pure functions over byte
//! slices; decoding never trusts its input (lengths checked before any
//! allocation, nesting bounded by [`MAX_DEPTH`]).

use crate::error::ModelError;
use crate::value::{Table, Value};
use bytes::{BufMut, Bytes};
use std::sync::Arc;

/// Deepest nesting of tables and arrays accepted (the AMQP front end
/// refuses deeper input long before this).
pub const MAX_DEPTH: usize = 128;

/// Appends `v` as an unsigned LEB128 varint.
pub fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

/// Cursor over an encoded input; every read is bounds-checked.
#[derive(Debug)]
pub struct Reader<'a> {
    src: &'a Bytes,
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `src`.
    pub fn new(src: &'a Bytes) -> Self {
        Reader { src, pos: 0 }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.src.len() - self.pos
    }

    /// Reads `n` bytes (zero-copy).
    pub fn bytes(&mut self, n: usize) -> Result<Bytes, ModelError> {
        if n > self.remaining() {
            return Err(ModelError::Truncated);
        }
        let b = self.src.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(b)
    }

    /// Reads `n` bytes as a borrowed slice (no reference count touched).
    pub fn slice(&mut self, n: usize) -> Result<&'a [u8], ModelError> {
        if n > self.remaining() {
            return Err(ModelError::Truncated);
        }
        let src: &'a Bytes = self.src;
        let b = &src[self.pos..self.pos + n];
        self.pos += n;
        Ok(b)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ModelError> {
        let s = self
            .src
            .get(self.pos..self.pos + N)
            .ok_or(ModelError::Truncated)?;
        self.pos += N;
        let mut a = [0; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    /// One byte.
    pub fn u8(&mut self) -> Result<u8, ModelError> {
        Ok(self.array::<1>()?[0])
    }

    /// An unsigned LEB128 varint of at most 64 bits.
    pub fn varint(&mut self) -> Result<u64, ModelError> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(ModelError::Malformed("varint longer than 64 bits"))
    }

    /// A varint length, checked against what is left.
    pub fn length(&mut self) -> Result<usize, ModelError> {
        let n = self.varint()?;
        usize::try_from(n)
            .ok()
            .filter(|n| *n <= self.remaining())
            .ok_or(ModelError::Truncated)
    }

    /// A byte string after a u32 (big-endian) length.
    pub fn long(&mut self) -> Result<Bytes, ModelError> {
        let n = u32::from_be_bytes(self.array()?) as usize;
        self.bytes(n)
    }

    /// A varint-length-prefixed byte string.
    pub fn prefixed(&mut self) -> Result<Bytes, ModelError> {
        let n = self.length()?;
        self.bytes(n)
    }
}

/// Appends a varint-length-prefixed byte string.
pub fn put_prefixed(buf: &mut Vec<u8>, b: &[u8]) {
    put_varint(buf, b.len() as u64);
    buf.put_slice(b);
}

/// Appends the binary form of `t`: its byte length (u32), then each entry
/// as key (varint length, bytes) and value.
pub fn put_table(buf: &mut Vec<u8>, t: &Table) {
    let at = begin_len(buf);
    for (k, v) in t.iter() {
        put_prefixed(buf, k.as_bytes());
        put_value(buf, v);
    }
    end_len(buf, at);
}

/// Reserves a u32 length; [`end_len`] fills it in.
pub fn begin_len(buf: &mut Vec<u8>) -> usize {
    buf.put_u32(0);
    buf.len()
}

/// Writes the length of what follows the u32 reserved at `at` - 4.
/// Lengths over 4 GiB cannot occur: messages are far smaller.
pub fn end_len(buf: &mut [u8], at: usize) {
    let n = u32::try_from(buf.len() - at).unwrap_or(u32::MAX);
    buf[at - 4..at].copy_from_slice(&n.to_be_bytes());
}

fn put_long(buf: &mut Vec<u8>, b: &[u8]) {
    buf.put_u32(u32::try_from(b.len()).unwrap_or(u32::MAX));
    buf.put_slice(b);
}

/// Appends the binary form of `v`: a type byte, then its payload.
pub fn put_value(buf: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Bool(b) => buf.put_slice(&[b't', u8::from(*b)]),
        Value::I8(x) => buf.put_slice(&[b'b', *x as u8]),
        Value::U8(x) => buf.put_slice(&[b'B', *x]),
        Value::I16(x) => {
            buf.put_u8(b's');
            buf.put_i16(*x);
        }
        Value::U16(x) => {
            buf.put_u8(b'u');
            buf.put_u16(*x);
        }
        Value::I32(x) => {
            buf.put_u8(b'I');
            buf.put_i32(*x);
        }
        Value::U32(x) => {
            buf.put_u8(b'i');
            buf.put_u32(*x);
        }
        Value::I64(x) => {
            buf.put_u8(b'l');
            buf.put_i64(*x);
        }
        Value::F32(x) => {
            buf.put_u8(b'f');
            buf.put_u32(x.to_bits());
        }
        Value::F64(x) => {
            buf.put_u8(b'd');
            buf.put_u64(x.to_bits());
        }
        Value::Decimal { scale, value } => {
            buf.put_slice(&[b'D', *scale]);
            buf.put_u32(*value);
        }
        Value::Str(b) => {
            buf.put_u8(b'S');
            put_long(buf, b);
        }
        Value::Timestamp(t) => {
            buf.put_u8(b'T');
            buf.put_u64(*t);
        }
        Value::Table(t) => {
            buf.put_u8(b'F');
            put_table(buf, t);
        }
        Value::Array(items) => {
            buf.put_u8(b'A');
            let at = begin_len(buf);
            for i in items {
                put_value(buf, i);
            }
            end_len(buf, at);
        }
        Value::Bytes(b) => {
            buf.put_u8(b'x');
            put_long(buf, b);
        }
        Value::Void => buf.put_u8(b'V'),
    }
}

/// Reads a table written by [`put_table`].
pub fn read_table(r: &mut Reader<'_>) -> Result<Table, ModelError> {
    read_table_at(r, 0)
}

fn read_table_at(r: &mut Reader<'_>, depth: usize) -> Result<Table, ModelError> {
    if depth > MAX_DEPTH {
        return Err(ModelError::TooDeep);
    }
    let src = r.long()?;
    let mut inner = Reader::new(&src);
    let mut t = Table::new();
    while inner.remaining() > 0 {
        let k = inner.prefixed()?;
        let k = std::str::from_utf8(&k).map_err(|_| ModelError::Malformed("table key"))?;
        let v = read_value_at(&mut inner, depth + 1)?;
        t.push(Arc::<str>::from(k), v);
    }
    Ok(t)
}

/// Reads a value written by [`put_value`].
pub fn read_value(r: &mut Reader<'_>) -> Result<Value, ModelError> {
    read_value_at(r, 0)
}

fn read_value_at(r: &mut Reader<'_>, depth: usize) -> Result<Value, ModelError> {
    if depth > MAX_DEPTH {
        return Err(ModelError::TooDeep);
    }
    Ok(match r.u8()? {
        b't' => match r.u8()? {
            0 => Value::Bool(false),
            1 => Value::Bool(true),
            _ => return Err(ModelError::Malformed("bool")),
        },
        b'b' => Value::I8(r.u8()? as i8),
        b'B' => Value::U8(r.u8()?),
        b's' => Value::I16(i16::from_be_bytes(r.array()?)),
        b'u' => Value::U16(u16::from_be_bytes(r.array()?)),
        b'I' => Value::I32(i32::from_be_bytes(r.array()?)),
        b'i' => Value::U32(u32::from_be_bytes(r.array()?)),
        b'l' => Value::I64(i64::from_be_bytes(r.array()?)),
        b'f' => Value::F32(f32::from_bits(u32::from_be_bytes(r.array()?))),
        b'd' => Value::F64(f64::from_bits(u64::from_be_bytes(r.array()?))),
        b'D' => Value::Decimal {
            scale: r.u8()?,
            value: u32::from_be_bytes(r.array()?),
        },
        b'S' => Value::Str(r.long()?),
        b'T' => Value::Timestamp(u64::from_be_bytes(r.array()?)),
        b'F' => Value::Table(read_table_at(r, depth + 1)?),
        b'A' => {
            let src = r.long()?;
            let mut inner = Reader::new(&src);
            let mut items = Vec::new();
            while inner.remaining() > 0 {
                items.push(read_value_at(&mut inner, depth + 1)?);
            }
            Value::Array(items)
        }
        b'x' => Value::Bytes(r.long()?),
        b'V' => Value::Void,
        other => return Err(ModelError::UnknownType(other)),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    pub(crate) fn every_type() -> Table {
        let nested: Table = [("deep", Value::str("x"))].into_iter().collect();
        [
            ("bool", Value::Bool(true)),
            ("i8", Value::I8(-8)),
            ("u8", Value::U8(8)),
            ("i16", Value::I16(-16)),
            ("u16", Value::U16(16)),
            ("i32", Value::I32(-32)),
            ("u32", Value::U32(32)),
            ("i64", Value::I64(i64::MIN)),
            ("f32", Value::F32(1.5)),
            ("f64", Value::F64(-2.25)),
            (
                "dec",
                Value::Decimal {
                    scale: 2,
                    value: 123,
                },
            ),
            ("str", Value::Str(Bytes::from_static(b"\xff not utf-8"))),
            ("ts", Value::Timestamp(1_765_000_000)),
            ("table", Value::Table(nested)),
            (
                "array",
                Value::Array(vec![Value::I32(1), Value::str("two"), Value::Void]),
            ),
            ("bytes", Value::Bytes(Bytes::from_static(b"\x00\x01"))),
            ("void", Value::Void),
            ("é✓ long key ".repeat(30).as_str(), Value::Bool(false)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    #[test]
    fn every_type_round_trips() {
        let t = every_type();
        let mut buf = Vec::new();
        put_table(&mut buf, &t);
        let src = Bytes::from(buf);
        let mut r = Reader::new(&src);
        assert_eq!(read_table(&mut r).unwrap(), t);
        assert_eq!(r.remaining(), 0);
    }

    #[test]
    fn every_truncation_is_an_error_never_a_panic() {
        let mut buf = Vec::new();
        put_table(&mut buf, &every_type());
        for n in 0..buf.len() {
            let src = Bytes::copy_from_slice(&buf[..n]);
            assert!(read_table(&mut Reader::new(&src)).is_err(), "prefix {n}");
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let mut v = Value::Void;
        for _ in 0..MAX_DEPTH + 2 {
            v = Value::Array(vec![v]);
        }
        let mut buf = Vec::new();
        put_value(&mut buf, &v);
        let src = Bytes::from(buf);
        assert_eq!(read_value(&mut Reader::new(&src)), Err(ModelError::TooDeep));
    }

    #[test]
    fn lying_lengths_are_errors() {
        let src = Bytes::from_static(&[b'A', 0xff, 0xff, 0xff, 0xff, b'V']);
        assert_eq!(
            read_value(&mut Reader::new(&src)),
            Err(ModelError::Truncated)
        );
    }

    #[test]
    fn varints_round_trip() {
        for v in [0, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            let src = Bytes::from(buf);
            assert_eq!(Reader::new(&src).varint().unwrap(), v);
        }
    }
}
