//! Byte-level helpers shared by the encoders: frame envelope and short
//! strings. Private: the public API is in terms of frames and methods.

use bytes::{BufMut, BytesMut};

use crate::error::CodecError;

/// Frame type octets (spec §4.2.3).
pub(crate) const FRAME_METHOD: u8 = 1;
pub(crate) const FRAME_HEADER: u8 = 2;
pub(crate) const FRAME_BODY: u8 = 3;
pub(crate) const FRAME_HEARTBEAT: u8 = 8;
/// The frame-end octet.
pub(crate) const FRAME_END: u8 = 0xCE;
/// type (1) + channel (2) + size (4).
pub(crate) const FRAME_HEADER_SIZE: usize = 7;

/// Starts a frame whose payload size is not known yet: writes the type and
/// channel and reserves the size. Returns the frame's start offset for
/// [`finish_frame`].
pub(crate) fn begin_frame(buf: &mut BytesMut, frame_type: u8, channel: u16) -> usize {
    let start = buf.len();
    buf.put_u8(frame_type);
    buf.put_u16(channel);
    buf.put_u32(0);
    start
}

/// Patches the payload size of the frame begun at `start` and appends the
/// frame end. Payloads written here are methods, whose size always fits in
/// a u32 (they are built from bounded fields); the error is for tables that
/// were somehow made larger.
pub(crate) fn finish_frame(buf: &mut BytesMut, start: usize) -> Result<(), CodecError> {
    let payload = buf.len() - start - FRAME_HEADER_SIZE;
    let Ok(size) = u32::try_from(payload) else {
        buf.truncate(start);
        return Err(CodecError::FrameTooLarge {
            size: payload as u64,
            frame_max: u32::MAX,
        });
    };
    buf[start + 3..start + FRAME_HEADER_SIZE].copy_from_slice(&size.to_be_bytes());
    buf.put_u8(FRAME_END);
    Ok(())
}

/// Reads a big-endian u16 at `at`; callers have checked the length.
pub(crate) fn be_u16(buf: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([buf[at], buf[at + 1]])
}

/// Reads a big-endian u32 at `at`; callers have checked the length.
pub(crate) fn be_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

/// Reads a big-endian u64 at `at`; callers have checked the length.
pub(crate) fn be_u64(buf: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    u64::from_be_bytes(b)
}
