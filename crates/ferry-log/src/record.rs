//! Record framing: `len u32 | crc32c u32 | index u64 | payload`, all LE.
//!
//! The checksum covers the index as well as the payload so a record that
//! is intact but sits where a different index belongs (stale bytes after a
//! truncation, a misdirected read) still fails verification.

use bytes::Bytes;

/// Bytes of framing in front of every payload.
pub const RECORD_HEADER_LEN: usize = 16;

/// Largest payload a record can carry. Bounds what a garbage length field
/// can make recovery believe, and keeps every record length in a `u32`.
pub const MAX_PAYLOAD_LEN: usize = 512 * 1024 * 1024;

/// A record read back from the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Its index.
    pub index: u64,
    /// The opaque payload as appended.
    pub payload: Bytes,
}

/// Where a record lives; returned by `append`, accepted by `read`.
///
/// Valid until the record is truncated or purged. A position kept across a
/// truncation may name a different record later; `read` rejects it unless
/// index and length still match.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RecordPos {
    /// The record's index.
    pub index: u64,
    /// Base index of the segment holding it.
    pub segment: u64,
    /// Byte offset of the record's header within the segment file.
    pub offset: u64,
    /// Bytes on disk, header included.
    pub len: u32,
}

/// The fixed-size front of a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RecordHeader {
    pub payload_len: u32,
    pub crc: u32,
    pub index: u64,
}

impl RecordHeader {
    pub(crate) fn parse(bytes: &[u8; RECORD_HEADER_LEN]) -> Self {
        let [l0, l1, l2, l3, c0, c1, c2, c3, i0, i1, i2, i3, i4, i5, i6, i7] = *bytes;
        RecordHeader {
            payload_len: u32::from_le_bytes([l0, l1, l2, l3]),
            crc: u32::from_le_bytes([c0, c1, c2, c3]),
            index: u64::from_le_bytes([i0, i1, i2, i3, i4, i5, i6, i7]),
        }
    }

    /// Parses the first [`RECORD_HEADER_LEN`] bytes; `None` if fewer.
    pub(crate) fn parse_prefix(bytes: &[u8]) -> Option<Self> {
        let head: &[u8; RECORD_HEADER_LEN] = bytes.get(..RECORD_HEADER_LEN)?.try_into().ok()?;
        Some(Self::parse(head))
    }

    /// Record length on disk, header included.
    pub(crate) fn total_len(&self) -> u64 {
        RECORD_HEADER_LEN as u64 + u64::from(self.payload_len)
    }

    pub(crate) fn checks_out(&self, payload: &[u8]) -> bool {
        checksum(self.index, payload) == self.crc
    }
}

pub(crate) fn checksum(index: u64, payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&index.to_le_bytes()), payload)
}

/// Appends one framed record to `buf`. The caller has checked the payload
/// against [`MAX_PAYLOAD_LEN`], so the length fits the `u32` field.
pub(crate) fn encode_into(buf: &mut Vec<u8>, index: u64, payload: &[u8]) {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    buf.reserve(RECORD_HEADER_LEN + payload.len());
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&checksum(index, payload).to_le_bytes());
    buf.extend_from_slice(&index.to_le_bytes());
    buf.extend_from_slice(payload);
}

/// Why bytes are not the expected record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Defect {
    /// Fewer bytes than a header.
    ShortHeader,
    /// Length field beyond [`MAX_PAYLOAD_LEN`].
    AbsurdLength(u32),
    /// The header promises more bytes than there are.
    ShortPayload,
    /// A well-framed record with the wrong index.
    WrongIndex { expected: u64, found: u64 },
    /// Checksum mismatch.
    BadChecksum,
}

impl Defect {
    pub(crate) fn describe(&self) -> String {
        match self {
            Defect::ShortHeader => "torn record header".into(),
            Defect::AbsurdLength(n) => format!("record length {n} exceeds the limit"),
            Defect::ShortPayload => "torn record payload".into(),
            Defect::WrongIndex { expected, found } => {
                format!("expected record {expected}, found {found}")
            }
            Defect::BadChecksum => "checksum mismatch".into(),
        }
    }
}

/// Checks the header of the record at the front of `bytes` (which may hold
/// less than the whole record) and returns it.
pub(crate) fn check_header(bytes: &[u8], expected_index: u64) -> Result<RecordHeader, Defect> {
    let header = RecordHeader::parse_prefix(bytes).ok_or(Defect::ShortHeader)?;
    if header.payload_len as usize > MAX_PAYLOAD_LEN {
        return Err(Defect::AbsurdLength(header.payload_len));
    }
    if header.index != expected_index {
        return Err(Defect::WrongIndex {
            expected: expected_index,
            found: header.index,
        });
    }
    Ok(header)
}

/// Fully verifies a whole record held in `bytes` (exactly one record).
pub(crate) fn verify(bytes: &[u8], expected_index: u64) -> Result<RecordHeader, Defect> {
    let header = check_header(bytes, expected_index)?;
    let payload = &bytes[RECORD_HEADER_LEN..];
    if payload.len() as u64 != u64::from(header.payload_len) {
        return Err(Defect::ShortPayload);
    }
    if !header.checks_out(payload) {
        return Err(Defect::BadChecksum);
    }
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut buf = Vec::new();
        encode_into(&mut buf, 42, b"hello");
        assert_eq!(buf.len(), RECORD_HEADER_LEN + 5);
        let h = verify(&buf, 42).ok();
        assert_eq!(h.map(|h| h.payload_len), Some(5));
        assert_eq!(&buf[RECORD_HEADER_LEN..], b"hello");
    }

    #[test]
    fn layout_is_little_endian() {
        let mut buf = Vec::new();
        encode_into(&mut buf, 0x0102_0304_0506_0708, b"ab");
        assert_eq!(&buf[0..4], &[2, 0, 0, 0]);
        assert_eq!(&buf[8..16], &[8, 7, 6, 5, 4, 3, 2, 1]);
        let crc = checksum(0x0102_0304_0506_0708, b"ab");
        assert_eq!(&buf[4..8], &crc.to_le_bytes());
    }

    #[test]
    fn detects_every_defect() {
        let mut buf = Vec::new();
        encode_into(&mut buf, 7, b"payload");
        assert_eq!(verify(&buf[..10], 7), Err(Defect::ShortHeader));
        assert_eq!(verify(&buf[..20], 7), Err(Defect::ShortPayload));
        assert_eq!(
            verify(&buf, 8),
            Err(Defect::WrongIndex {
                expected: 8,
                found: 7
            })
        );
        let mut flipped = buf.clone();
        flipped[RECORD_HEADER_LEN + 1] ^= 0x10;
        assert_eq!(verify(&flipped, 7), Err(Defect::BadChecksum));
        let mut huge = buf.clone();
        huge[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(verify(&huge, 7), Err(Defect::AbsurdLength(u32::MAX)));
    }

    #[test]
    fn empty_payload_is_a_valid_record() {
        let mut buf = Vec::new();
        encode_into(&mut buf, 0, b"");
        assert!(verify(&buf, 0).is_ok());
    }
}
