//! [`SimIo`]: an in-memory file system that can lose power.
//!
//! Model, kept simple but honest about what real disks promise:
//! - file bytes are durable up to the last successful `sync_data`; a crash
//!   keeps an arbitrary prefix of the later writes, the last one possibly
//!   torn and sometimes followed by a few garbage bytes;
//! - creations, removals and renames are durable once `sync_dir` ran on
//!   the directory holding the (new) name; a crash keeps an arbitrary prefix
//!   of the later ones, so an unsynced new file may vanish and an unsynced
//!   removal may be undone;
//! - directories themselves are durable as soon as they are created.

use super::sim_file::{Faults, SimFile};
use super::{FileIo, IoFile};
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// In-memory [`FileIo`] with crash simulation. Clones share one file
/// system, so a test can keep a handle after giving one to the log.
#[derive(Clone, Debug, Default)]
pub struct SimIo {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    ns: Mutex<Namespace>,
    faults: Arc<Faults>,
}

#[derive(Debug, Default)]
struct Namespace {
    files: BTreeMap<PathBuf, Arc<SimFile>>,
    durable: BTreeMap<PathBuf, Arc<SimFile>>,
    /// Entry changes per directory since its last `sync_dir`, oldest first.
    pending: BTreeMap<PathBuf, Vec<DirOp>>,
    dirs: BTreeSet<PathBuf>,
}

#[derive(Debug)]
enum DirOp {
    Create(PathBuf, Arc<SimFile>),
    Remove(PathBuf),
    Rename(PathBuf, PathBuf),
}

impl DirOp {
    fn apply(self, durable: &mut BTreeMap<PathBuf, Arc<SimFile>>) {
        match self {
            DirOp::Create(p, f) => {
                durable.insert(p, f);
            }
            DirOp::Remove(p) => {
                durable.remove(&p);
            }
            DirOp::Rename(from, to) => {
                if let Some(f) = durable.remove(&from) {
                    durable.insert(to, f);
                }
            }
        }
    }
}

fn parent(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} not found", path.display()),
    )
}

impl Namespace {
    fn record(&mut self, dir: PathBuf, op: DirOp) {
        self.pending.entry(dir).or_default().push(op);
    }

    fn remove_file(&mut self, path: &Path) -> io::Result<()> {
        self.files.remove(path).ok_or_else(|| not_found(path))?;
        self.record(parent(path), DirOp::Remove(path.to_path_buf()));
        Ok(())
    }
}

impl SimIo {
    /// An empty file system.
    pub fn new() -> Self {
        Self::default()
    }

    /// A handle ready to share as `Arc<dyn FileIo>`.
    pub fn shared(&self) -> Arc<dyn FileIo> {
        Arc::new(self.clone())
    }

    /// Simulates a power cut, deterministically for a given `seed`: every
    /// file reverts to what the model above allows to survive. Handles
    /// opened before the crash keep working but no longer reach the file
    /// system; reopen everything afterwards.
    pub fn crash(&self, seed: u64) {
        let mut rng = Rng::new(seed);
        let mut ns = self.shared.ns.lock();
        let ns = &mut *ns;
        for (_, ops) in std::mem::take(&mut ns.pending) {
            let kept = rng.below(ops.len() as u64 + 1) as usize;
            for op in ops.into_iter().take(kept) {
                op.apply(&mut ns.durable);
            }
        }
        let survivors: BTreeMap<PathBuf, Arc<SimFile>> = ns
            .durable
            .iter()
            .map(|(p, f)| {
                let image = f.crash_image(&mut rng);
                (
                    p.clone(),
                    Arc::new(SimFile::new(self.shared.faults.clone(), image)),
                )
            })
            .collect();
        for p in survivors.keys() {
            ns.dirs.extend(p.ancestors().skip(1).map(Path::to_path_buf));
        }
        ns.durable = survivors.clone();
        ns.files = survivors;
        self.shared
            .faults
            .fail_next_sync
            .store(false, Ordering::SeqCst);
        self.shared
            .faults
            .fail_next_write
            .store(false, Ordering::SeqCst);
    }

    /// Makes the next `sync_data` on any file fail (once).
    pub fn fail_next_sync(&self) {
        self.shared
            .faults
            .fail_next_sync
            .store(true, Ordering::SeqCst);
    }

    /// Makes the next `write_all_at` on any file fail (once).
    pub fn fail_next_write(&self) {
        self.shared
            .faults
            .fail_next_write
            .store(true, Ordering::SeqCst);
    }
}

impl FileIo for SimIo {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn IoFile>> {
        let mut ns = self.shared.ns.lock();
        if let Some(f) = ns.files.get(path) {
            return Ok(f.clone());
        }
        let dir = parent(path);
        if !create || !ns.dirs.contains(&dir) {
            return Err(not_found(path));
        }
        let f = Arc::new(SimFile::new(self.shared.faults.clone(), Vec::new()));
        ns.files.insert(path.to_path_buf(), f.clone());
        ns.record(dir, DirOp::Create(path.to_path_buf(), f.clone()));
        Ok(f)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.shared.ns.lock().remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut ns = self.shared.ns.lock();
        if !ns.dirs.contains(&parent(to)) {
            return Err(not_found(to));
        }
        let f = ns.files.remove(from).ok_or_else(|| not_found(from))?;
        ns.files.insert(to.to_path_buf(), f);
        // Durable with the destination directory's sync (the log only
        // renames within one directory).
        ns.record(
            parent(to),
            DirOp::Rename(from.to_path_buf(), to.to_path_buf()),
        );
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let ns = self.shared.ns.lock();
        if !ns.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        Ok(ns
            .files
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .cloned()
            .collect())
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut ns = self.shared.ns.lock();
        ns.dirs.extend(dir.ancestors().map(Path::to_path_buf));
        Ok(())
    }

    fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut ns = self.shared.ns.lock();
        if !ns.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        let doomed: Vec<PathBuf> = ns
            .files
            .keys()
            .filter(|p| p.starts_with(dir))
            .cloned()
            .collect();
        for p in doomed {
            ns.remove_file(&p)?;
        }
        ns.dirs.retain(|d| !d.starts_with(dir));
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut ns = self.shared.ns.lock();
        if !ns.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        let ns = &mut *ns;
        for op in ns.pending.remove(dir).unwrap_or_default() {
            op.apply(&mut ns.durable);
        }
        Ok(())
    }

    fn exists(&self, path: &Path) -> bool {
        let ns = self.shared.ns.lock();
        ns.files.contains_key(path) || ns.dirs.contains(path)
    }
}

/// SplitMix64: tiny, seedable, good enough to pick crash outcomes.
#[derive(Debug)]
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub(super) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-enough value in `0..n` (`0` when `n` is 0).
    pub(super) fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn read_all(f: &dyn IoFile) -> Vec<u8> {
        let mut buf = vec![0u8; f.len().unwrap() as usize];
        let n = f.read_at(&mut buf, 0).unwrap();
        buf.truncate(n);
        buf
    }

    fn setup() -> (SimIo, PathBuf) {
        let io = SimIo::new();
        let dir = PathBuf::from("/d");
        io.create_dir_all(&dir).unwrap();
        (io, dir)
    }

    #[test]
    fn synced_data_and_entries_survive_every_crash() {
        for seed in 0..50 {
            let (io, dir) = setup();
            let p = dir.join("f");
            let f = io.open(&p, true).unwrap();
            f.write_all_at(b"durable", 0).unwrap();
            f.sync_data().unwrap();
            io.sync_dir(&dir).unwrap();
            f.write_all_at(b" maybe", 7).unwrap();
            io.crash(seed);
            let g = io.open(&p, false).unwrap();
            let data = read_all(&*g);
            assert!(data.starts_with(b"durable"), "seed {seed}: {data:?}");
            assert!(data.len() <= 7 + 6 + 16);
        }
    }

    #[test]
    fn crash_outcomes_vary_with_the_seed() {
        let mut lens = BTreeSet::new();
        let mut vanished = 0;
        for seed in 0..200 {
            let (io, dir) = setup();
            let p = dir.join("f");
            let f = io.open(&p, true).unwrap();
            f.write_all_at(&[7u8; 100], 0).unwrap();
            io.crash(seed);
            match io.open(&p, false) {
                Ok(g) => {
                    let data = read_all(&*g);
                    lens.insert(data.len());
                }
                Err(e) => {
                    assert_eq!(e.kind(), io::ErrorKind::NotFound);
                    vanished += 1;
                }
            }
        }
        assert!(vanished > 0, "unsynced creations must sometimes vanish");
        assert!(lens.len() > 10, "torn lengths should vary: {lens:?}");
    }

    #[test]
    fn unsynced_removal_can_come_back_and_synced_one_cannot() {
        let mut came_back = false;
        for seed in 0..40 {
            let (io, dir) = setup();
            let a = dir.join("a");
            let b = dir.join("b");
            io.open(&a, true).unwrap();
            io.open(&b, true).unwrap();
            io.sync_dir(&dir).unwrap();
            io.remove(&a).unwrap();
            io.sync_dir(&dir).unwrap();
            io.remove(&b).unwrap();
            io.crash(seed);
            assert!(!io.exists(&a));
            came_back |= io.exists(&b);
        }
        assert!(came_back);
    }

    #[test]
    fn failures_are_injected_once() {
        let (io, dir) = setup();
        let f = io.open(&dir.join("f"), true).unwrap();
        io.fail_next_write();
        assert!(f.write_all_at(b"x", 0).is_err());
        f.write_all_at(b"x", 0).unwrap();
        io.fail_next_sync();
        assert!(f.sync_data().is_err());
        f.sync_data().unwrap();
    }

    #[test]
    fn rename_list_and_remove_dir_all() {
        let (io, dir) = setup();
        io.create_dir_all(&dir.join("sub")).unwrap();
        let f = io.open(&dir.join("tmp"), true).unwrap();
        f.write_all_at(b"v", 0).unwrap();
        io.rename(&dir.join("tmp"), &dir.join("final")).unwrap();
        io.open(&dir.join("sub/x"), true).unwrap();
        assert_eq!(io.list(&dir).unwrap(), vec![dir.join("final")]);
        io.remove_dir_all(&dir).unwrap();
        assert!(!io.exists(&dir.join("final")));
        assert!(io.list(&dir).is_err());
        assert!(io.open(&dir.join("y"), true).is_err());
    }

    #[test]
    fn set_len_is_a_pending_change_too() {
        let (io, dir) = setup();
        let p = dir.join("f");
        let f = io.open(&p, true).unwrap();
        f.write_all_at(&[1u8; 50], 0).unwrap();
        f.sync_data().unwrap();
        io.sync_dir(&dir).unwrap();
        f.set_len(10).unwrap();
        f.sync_data().unwrap();
        io.crash(3);
        assert_eq!(io.open(&p, false).unwrap().len().unwrap(), 10);
    }
}
