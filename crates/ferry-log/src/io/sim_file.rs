//! One in-memory file of [`super::SimIo`]: what readers see, what a power
//! cut would keep for sure, and the writes in between.

use super::sim::Rng;
use super::IoFile;
use parking_lot::Mutex;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Failures a test asked for; shared by every file of one `SimIo`.
#[derive(Debug, Default)]
pub(super) struct Faults {
    pub fail_next_sync: AtomicBool,
    pub fail_next_write: AtomicBool,
}

#[derive(Debug)]
pub(super) struct SimFile {
    state: Mutex<FileState>,
    faults: Arc<Faults>,
}

#[derive(Debug, Default)]
struct FileState {
    /// What reads return now.
    data: Vec<u8>,
    /// What survives any crash.
    durable: Vec<u8>,
    /// Changes since the last successful sync, oldest first. A crash keeps
    /// an arbitrary prefix of them: writes reach the disk in order, but
    /// nobody says how far they got.
    pending: Vec<Op>,
}

#[derive(Debug)]
enum Op {
    Write { offset: usize, bytes: Vec<u8> },
    SetLen(usize),
}

fn to_usize(n: u64) -> io::Result<usize> {
    usize::try_from(n).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))
}

fn write_into(buf: &mut Vec<u8>, offset: usize, bytes: &[u8]) {
    let end = offset + bytes.len();
    if buf.len() < end {
        buf.resize(end, 0);
    }
    buf[offset..end].copy_from_slice(bytes);
}

fn apply(buf: &mut Vec<u8>, op: &Op) {
    match op {
        Op::Write { offset, bytes } => write_into(buf, *offset, bytes),
        Op::SetLen(len) => buf.resize(*len, 0),
    }
}

impl SimFile {
    /// A file whose `contents` are already durable.
    pub(super) fn new(faults: Arc<Faults>, contents: Vec<u8>) -> Self {
        SimFile {
            state: Mutex::new(FileState {
                data: contents.clone(),
                durable: contents,
                pending: Vec::new(),
            }),
            faults,
        }
    }

    /// The contents after a power cut: the durable bytes plus a random
    /// prefix of the pending changes, the last one possibly torn and
    /// sometimes followed by a few garbage bytes.
    pub(super) fn crash_image(&self, rng: &mut Rng) -> Vec<u8> {
        let st = self.state.lock();
        let mut img = st.durable.clone();
        let n = st.pending.len();
        if n == 0 {
            return img;
        }
        let kept = rng.below(n as u64 + 1) as usize;
        for op in &st.pending[..kept] {
            apply(&mut img, op);
        }
        let torn_end = match st.pending.get(kept) {
            Some(Op::Write { offset, bytes }) => {
                let cut = rng.below(bytes.len() as u64 + 1) as usize;
                write_into(&mut img, *offset, &bytes[..cut]);
                Some(offset + cut)
            }
            Some(Op::SetLen(_)) => None,
            None => match st.pending.last() {
                Some(Op::Write { offset, bytes }) if rng.below(4) == 0 => {
                    Some(offset + bytes.len())
                }
                _ => None,
            },
        };
        if let Some(at) = torn_end {
            if rng.below(3) == 0 {
                let garbage: Vec<u8> = (0..1 + rng.below(16))
                    .map(|_| rng.next_u64() as u8)
                    .collect();
                write_into(&mut img, at, &garbage);
            }
        }
        img
    }
}

impl SimFile {
    /// Bytes that survive any crash.
    pub(super) fn durable_len(&self) -> usize {
        self.state.lock().durable.len()
    }

    /// Media corruption: flips bit `bit` of the durable byte at `offset`.
    /// Reads see it too unless a pending change covers that byte (then the
    /// page cache still holds the newer bytes, and only a crash that loses
    /// that change exposes the damage). `false` if `offset` is not durable.
    pub(super) fn flip_bit(&self, offset: usize, bit: u8) -> bool {
        let mask = 1u8 << (bit % 8);
        let mut st = self.state.lock();
        let st = &mut *st;
        let Some(b) = st.durable.get_mut(offset) else {
            return false;
        };
        *b ^= mask;
        let shadowed = st.pending.iter().any(|op| match op {
            Op::Write { offset: o, bytes } => (*o..*o + bytes.len()).contains(&offset),
            Op::SetLen(len) => *len <= offset,
        });
        if !shadowed {
            if let Some(b) = st.data.get_mut(offset) {
                *b ^= mask;
            }
        }
        true
    }
}

impl SimFile {
    /// Applies every pending change to the durable image (a successful
    /// `sync_data`, or the file's share of a `sync_fs`).
    pub(super) fn make_durable(&self) {
        let mut st = self.state.lock();
        let st = &mut *st;
        for op in st.pending.drain(..) {
            apply(&mut st.durable, &op);
        }
    }
}

impl IoFile for SimFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let st = self.state.lock();
        let start = to_usize(offset)?.min(st.data.len());
        let n = buf.len().min(st.data.len() - start);
        buf[..n].copy_from_slice(&st.data[start..start + n]);
        Ok(n)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if self.faults.fail_next_write.swap(false, Ordering::SeqCst) {
            return Err(io::Error::other("simulated write failure"));
        }
        let offset = to_usize(offset)?;
        let mut st = self.state.lock();
        write_into(&mut st.data, offset, buf);
        // Sequential appends coalesce so a busy log keeps one pending op.
        if let Some(Op::Write { offset: o, bytes }) = st.pending.last_mut() {
            if *o + bytes.len() == offset {
                bytes.extend_from_slice(buf);
                return Ok(());
            }
        }
        st.pending.push(Op::Write {
            offset,
            bytes: buf.to_vec(),
        });
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        if self.faults.fail_next_sync.swap(false, Ordering::SeqCst) {
            return Err(io::Error::other("simulated fsync failure"));
        }
        self.make_durable();
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let len = to_usize(len)?;
        let mut st = self.state.lock();
        st.data.resize(len, 0);
        st.pending.push(Op::SetLen(len));
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.state.lock().data.len() as u64)
    }
}
