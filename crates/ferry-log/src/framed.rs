//! Small checksummed files rewritten atomically (vhost definitions, the
//! access file). They change rarely, so each change rewrites the whole
//! file: write a temp file, fsync, rename, fsync the directory.
//!
//! ```text
//! | magic (8) | len u32 LE | crc32c u32 LE (of the body) | body (len bytes) |
//! ```
//! A file whose checksum does not match is refused rather than silently
//! dropping what it held (see `docs/storage.md`).

use crate::FileIo;
use std::path::Path;

/// Why a framed file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum FramedError {
    /// The file system failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The file (or what the caller made of its body) is not what was
    /// written: bad header, truncated, checksum mismatch, undecodable body.
    #[error("corrupt file: {0}")]
    Corrupt(String),
}

type Result<T> = std::result::Result<T, FramedError>;

/// Writes `dir/name` atomically with the given magic.
pub fn save(io: &dyn FileIo, dir: &Path, name: &str, magic: &[u8; 8], body: &[u8]) -> Result<()> {
    let len = u32::try_from(body.len())
        .map_err(|_| FramedError::Corrupt(format!("{name}: {} bytes is too big", body.len())))?;
    let mut buf = Vec::with_capacity(body.len() + 16);
    buf.extend_from_slice(magic);
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
    buf.extend_from_slice(body);
    io.create_dir_all(dir)?;
    let tmp = dir.join(format!("{name}.tmp"));
    let f = io.open(&tmp, true)?;
    f.set_len(0)?;
    f.write_all_at(&buf, 0)?;
    f.sync_data()?;
    drop(f);
    io.rename(&tmp, &dir.join(name))?;
    io.sync_dir(dir)?;
    Ok(())
}

/// Reads the body of `path`; `None` when the file does not exist.
pub fn load(io: &dyn FileIo, path: &Path, magic: &[u8; 8]) -> Result<Option<Vec<u8>>> {
    if !io.exists(path) {
        return Ok(None);
    }
    let f = io.open(path, false)?;
    let len = f.len()? as usize;
    let mut buf = vec![0u8; len];
    let mut off = 0;
    while off < len {
        let n = f.read_at(&mut buf[off..], off as u64)?;
        if n == 0 {
            break;
        }
        off += n;
    }
    let bad = |w: &str| FramedError::Corrupt(format!("{}: {w}", path.display()));
    if off < 16 || &buf[..8] != magic {
        return Err(bad("bad header"));
    }
    let n = u32::from_le_bytes([buf[8], buf[9], buf[10], buf[11]]) as usize;
    let crc = u32::from_le_bytes([buf[12], buf[13], buf[14], buf[15]]);
    let body = buf.get(16..16 + n).ok_or_else(|| bad("truncated"))?;
    if crc32c::crc32c(body) != crc {
        return Err(bad("checksum mismatch"));
    }
    buf.truncate(16 + n);
    buf.drain(..16);
    Ok(Some(buf))
}
