//! [`FileIo`] over the real file system.

use super::{FileIo, IoFile};
use parking_lot::Mutex;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Directory descriptors kept open for `sync_fs` (one per data directory
/// in practice), so writeback errors between calls are not missed.
static SYNCFS_FDS: Mutex<Vec<(PathBuf, File)>> = Mutex::new(Vec::new());

/// Real files via `std::fs` (pread/pwrite/fdatasync/syncfs).
#[derive(Clone, Copy, Debug, Default)]
pub struct StdIo;

impl StdIo {
    /// A handle ready to share as `Arc<dyn FileIo>`.
    pub fn shared() -> Arc<dyn FileIo> {
        Arc::new(StdIo)
    }
}

#[derive(Debug)]
struct StdFile {
    file: File,
}

impl FileIo for StdIo {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn IoFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(path)?;
        Ok(Arc::new(StdFile { file }))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                out.push(entry.path());
            }
        }
        out.sort();
        Ok(out)
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::remove_dir_all(dir)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        // On Linux a directory is fsynced through a read-only descriptor.
        File::open(dir)?.sync_all()
    }

    fn sync_fs(&self, dir: &Path) -> io::Result<()> {
        // syncfs(2) flushes the whole file system holding the descriptor
        // and (Linux >= 5.8) reports the file system's writeback errors
        // seen since that descriptor was opened: the descriptor stays open
        // for the process's life, so an error between two calls (page
        // writeback in the background) is reported by the next one.
        let mut fds = SYNCFS_FDS.lock();
        let fd = match fds.iter().find(|(p, _)| p == dir) {
            Some((_, f)) => f.try_clone()?,
            None => {
                let f = File::open(dir)?;
                fds.push((dir.to_path_buf(), f.try_clone()?));
                f
            }
        };
        drop(fds);
        rustix::fs::syncfs(&fd).map_err(io::Error::from)
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
}

impl IoFile for StdFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn positional_io_and_directory_ops() {
        let dir = tempfile::tempdir().unwrap();
        let io = StdIo;
        let sub = dir.path().join("a/b");
        io.create_dir_all(&sub).unwrap();
        let p = sub.join("f");
        assert!(io.open(&p, false).is_err());
        let f = io.open(&p, true).unwrap();
        f.write_all_at(b"world", 6).unwrap();
        f.write_all_at(b"hello ", 0).unwrap();
        f.sync_data().unwrap();
        let mut buf = [0u8; 20];
        assert_eq!(f.read_at(&mut buf, 0).unwrap(), 11);
        assert_eq!(&buf[..11], b"hello world");
        f.set_len(5).unwrap();
        assert_eq!(f.len().unwrap(), 5);
        // Reopening must not truncate.
        let again = io.open(&p, true).unwrap();
        assert_eq!(again.len().unwrap(), 5);
        let q = sub.join("g");
        io.rename(&p, &q).unwrap();
        io.sync_dir(&sub).unwrap();
        io.sync_fs(&sub).unwrap();
        assert_eq!(io.list(&sub).unwrap(), vec![q.clone()]);
        io.remove(&q).unwrap();
        assert!(!io.exists(&q));
        io.remove_dir_all(&dir.path().join("a")).unwrap();
        assert!(!io.exists(&sub));
    }
}
