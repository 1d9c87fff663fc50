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
//! - directories themselves are durable as soon as they are created;
//! - `sync_fs` (the whole file system at once, like `syncfs(2)`) makes
//!   every file's written data and every entry change durable;
//! - media corruption happens only when a test asks for it: `flip_bit` and
//!   `flip_random_bits` damage synced bytes, durably (crashes keep it).

use super::sim_file::{Faults, SimFile};
use super::{FileIo, IoFile};
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// Successful `sync_fs` calls (tests check which flush a round chose).
    fs_syncs: AtomicU64,
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

    /// Simulates media corruption: flips bit `bit` (0..8) of the byte at
    /// `offset` of `path`, which must lie in the file's synced (durable)
    /// bytes. The damage is durable: it survives crashes. Reads see it at
    /// once unless an unsynced write covers that byte (see
    /// `SimFile::flip_bit`). Flipping the same bit twice undoes it.
    pub fn flip_bit(&self, path: &Path, offset: u64, bit: u8) -> io::Result<()> {
        let f = self
            .shared
            .ns
            .lock()
            .files
            .get(path)
            .cloned()
            .ok_or_else(|| not_found(path))?;
        if bit >= 8 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bit {bit} is not in 0..8"),
            ));
        }
        let at = usize::try_from(offset).unwrap_or(usize::MAX);
        if !f.flip_bit(at, bit) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "offset {offset} is beyond the {} synced bytes of {}",
                    f.durable_len(),
                    path.display()
                ),
            ));
        }
        Ok(())
    }

    /// Flips `n` random bits, deterministically for a given `seed`, each in
    /// the synced bytes of some file (files weighted by their synced size).
    /// Returns what was flipped as `(path, offset, bit)`, in order. Nothing
    /// is flipped when no file holds synced bytes.
    pub fn flip_random_bits(&self, seed: u64, n: usize) -> Vec<(PathBuf, u64, u8)> {
        self.flip_random_bits_in(seed, n, |_| true)
    }

    /// [`SimIo::flip_random_bits`] restricted to the files `filter` accepts
    /// (for example only segment files, or only index files).
    pub fn flip_random_bits_in(
        &self,
        seed: u64,
        n: usize,
        filter: impl Fn(&Path) -> bool,
    ) -> Vec<(PathBuf, u64, u8)> {
        let candidates: Vec<(PathBuf, Arc<SimFile>, u64)> = {
            let ns = self.shared.ns.lock();
            ns.files
                .iter()
                .filter(|(p, _)| filter(p))
                .map(|(p, f)| (p.clone(), f.clone(), f.durable_len() as u64))
                .filter(|(_, _, len)| *len > 0)
                .collect()
        };
        let total: u64 = candidates.iter().map(|(_, _, len)| len).sum();
        let mut rng = Rng::new(seed);
        let mut flipped = Vec::with_capacity(n);
        if total == 0 {
            return flipped;
        }
        for _ in 0..n {
            let mut at = rng.below(total);
            let bit = rng.below(8) as u8;
            for (p, f, len) in &candidates {
                if at < *len {
                    // In range by construction: `at` < the synced length,
                    // and synced data never shrinks without a crash.
                    if f.flip_bit(at as usize, bit) {
                        flipped.push((p.clone(), at, bit));
                    }
                    break;
                }
                at -= len;
            }
        }
        flipped
    }

    /// How many `sync_fs` calls succeeded so far.
    pub fn fs_syncs(&self) -> u64 {
        self.shared.fs_syncs.load(Ordering::SeqCst)
    }

    /// Makes the next `sync_data` on any file, or the next `sync_fs`,
    /// fail (once).
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

    fn sync_fs(&self, dir: &Path) -> io::Result<()> {
        let mut ns = self.shared.ns.lock();
        if !ns.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        if self
            .shared
            .faults
            .fail_next_sync
            .swap(false, Ordering::SeqCst)
        {
            return Err(io::Error::other("simulated syncfs failure"));
        }
        let ns = &mut *ns;
        for (_, ops) in std::mem::take(&mut ns.pending) {
            for op in ops {
                op.apply(&mut ns.durable);
            }
        }
        for f in ns.files.values() {
            f.make_durable();
        }
        self.shared.fs_syncs.fetch_add(1, Ordering::SeqCst);
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
    fn sync_fs_makes_every_file_and_entry_durable() {
        for seed in 0..20 {
            let (io, dir) = setup();
            let sub = dir.join("sub");
            io.create_dir_all(&sub).unwrap();
            let a = io.open(&dir.join("a"), true).unwrap();
            let b = io.open(&sub.join("b"), true).unwrap();
            a.write_all_at(b"alpha", 0).unwrap();
            b.write_all_at(b"beta", 0).unwrap();
            io.sync_fs(&dir).unwrap();
            assert_eq!(io.fs_syncs(), 1);
            a.write_all_at(b"-lost?", 5).unwrap();
            io.crash(seed);
            let a = io.open(&dir.join("a"), false).unwrap();
            let b = io.open(&sub.join("b"), false).unwrap();
            assert!(read_all(&*a).starts_with(b"alpha"));
            assert_eq!(read_all(&*b), b"beta");
        }
        let (io, dir) = setup();
        io.fail_next_sync();
        assert!(io.sync_fs(&dir).is_err());
        io.sync_fs(&dir).unwrap();
        assert!(io.sync_fs(&dir.join("nowhere")).is_err());
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
    fn flipped_bits_are_durable_and_visible_unless_shadowed() {
        let (io, dir) = setup();
        let p = dir.join("f");
        let f = io.open(&p, true).unwrap();
        f.write_all_at(&[0u8; 8], 0).unwrap();
        f.sync_data().unwrap();
        io.sync_dir(&dir).unwrap();
        io.flip_bit(&p, 2, 3).unwrap();
        assert_eq!(read_all(&*f), [0, 0, 8, 0, 0, 0, 0, 0]);
        // Not synced: out of range, as is a bit above 7.
        f.write_all_at(&[0xFF; 2], 6).unwrap();
        assert!(io.flip_bit(&p, 8, 0).is_err());
        assert!(io.flip_bit(&p, 0, 8).is_err());
        assert!(io.flip_bit(&dir.join("nope"), 0, 0).is_err());
        // Under an unsynced write the page cache still has the new bytes;
        // a crash that drops the write exposes the damage.
        io.flip_bit(&p, 7, 0).unwrap();
        assert_eq!(read_all(&*f)[6..], [0xFF, 0xFF]);
        let mut exposed = false;
        for seed in 0..40 {
            let (io2, _) = setup();
            let g = io2.open(&p, true).unwrap();
            g.write_all_at(&[0u8; 8], 0).unwrap();
            g.sync_data().unwrap();
            io2.sync_dir(&dir).unwrap();
            g.write_all_at(&[0xFF; 2], 6).unwrap();
            io2.flip_bit(&p, 7, 0).unwrap();
            io2.crash(seed);
            let data = read_all(&*io2.open(&p, false).unwrap());
            // Whenever the crash dropped the whole write, the flip shows.
            if data.len() == 8 && data[6] == 0 {
                assert_eq!(data[7], 1, "seed {seed}: {data:?}");
                exposed = true;
            }
        }
        assert!(exposed);
        io.crash(1);
        assert_eq!(read_all(&*io.open(&p, false).unwrap())[2], 8);
    }

    #[test]
    fn random_flips_hit_synced_bytes_of_accepted_files_only() {
        let (io, dir) = setup();
        for (name, len) in [("a.log", 100usize), ("b.idx", 30), ("c.log", 0)] {
            let f = io.open(&dir.join(name), true).unwrap();
            f.write_all_at(&vec![0u8; len], 0).unwrap();
            f.sync_data().unwrap();
            f.write_all_at(&[0u8; 50], len as u64).unwrap();
        }
        let flips = io.flip_random_bits(7, 200);
        assert_eq!(flips.len(), 200);
        assert_eq!(flips, {
            let (again, _) = setup();
            for (name, len) in [("a.log", 100usize), ("b.idx", 30), ("c.log", 0)] {
                let f = again.open(&dir.join(name), true).unwrap();
                f.write_all_at(&vec![0u8; len], 0).unwrap();
                f.sync_data().unwrap();
            }
            again.flip_random_bits(7, 200)
        });
        for (p, off, bit) in &flips {
            let limit = if p.ends_with("a.log") { 100 } else { 30 };
            assert!(*off < limit && *bit < 8, "{p:?} {off}");
        }
        assert!(flips.iter().any(|(p, ..)| p.ends_with("b.idx")));
        let logs = io.flip_random_bits_in(3, 50, |p| p.extension().is_some_and(|e| e == "log"));
        assert!(logs.iter().all(|(p, ..)| p.ends_with("a.log")));
        assert!(SimIo::new().flip_random_bits(1, 5).is_empty());
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
