//! The file-system seam. Everything the log does to storage goes through
//! these two traits, so tests (here and in other crates) can swap real
//! files for [`SimIo`], which can lose unsynced data like a power cut.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod sim;
mod sim_file;
mod std_io;

pub use sim::SimIo;
pub use std_io::StdIo;

/// A file system: directory operations plus opening files.
pub trait FileIo: Send + Sync + std::fmt::Debug + 'static {
    /// Opens `path` for reading and writing; creates it (empty) if `create`
    /// and it does not exist. Never truncates an existing file.
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn IoFile>>;
    /// Unlinks a file.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Atomically renames a file, replacing `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Paths of the regular files directly inside `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>>;
    /// Creates `dir` and its missing parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Removes `dir` and everything below it.
    fn remove_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Makes creations, removals and renames of entries in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Makes everything written so far on the file system that holds `dir`
    /// durable: every file's data and size and every directory entry
    /// (`syncfs(2)`: one device flush instead of one `fdatasync` per file).
    /// An error cannot be attributed to a file: treat every file written
    /// before the call as possibly lost.
    fn sync_fs(&self, dir: &Path) -> io::Result<()>;
    /// Whether a file or directory exists at `path`.
    fn exists(&self, path: &Path) -> bool;
}

/// An open file. Positional I/O on `&self`, so one thread can fsync a
/// shared handle while another writes to it.
pub trait IoFile: Send + Sync + std::fmt::Debug {
    /// Reads at `offset` until `buf` is full or end of file; returns the
    /// byte count, which is short only at end of file.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Writes all of `buf` at `offset`, growing the file as needed.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes the file's contents and size durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
    /// Truncates or zero-extends the file.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Current size in bytes.
    fn len(&self) -> io::Result<u64>;

    /// Whether the file holds no bytes.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
}
