//! Helpers shared by the black-box tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use ferry_log::{FileIo, Log, LogConfig, RecordPos, RecoveryReport, SimIo, StdIo};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A place to keep a log: real files in a temp dir, or a `SimIo`.
pub struct Backend {
    pub name: &'static str,
    pub io: Arc<dyn FileIo>,
    pub sim: Option<SimIo>,
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

pub fn std_backend() -> Backend {
    let tmp = tempfile::tempdir().unwrap();
    Backend {
        name: "std",
        io: Arc::new(StdIo),
        sim: None,
        dir: tmp.path().join("log"),
        _tmp: Some(tmp),
    }
}

pub fn sim_backend() -> Backend {
    let sim = SimIo::new();
    Backend {
        name: "sim",
        io: sim.shared(),
        sim: Some(sim),
        dir: PathBuf::from("/data/q1"),
        _tmp: None,
    }
}

/// Runs `test` against both backends, naming the backend on failure.
pub fn for_each_backend(test: impl Fn(&Backend)) {
    for b in [std_backend(), sim_backend()] {
        eprintln!("backend: {}", b.name);
        test(&b);
    }
}

impl Backend {
    pub fn open(&self, cfg: &LogConfig) -> (Log, RecoveryReport) {
        Log::open(self.io.clone(), &self.dir, cfg.clone()).unwrap()
    }

    pub fn files(&self, ext: &str) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = self
            .io
            .list(&self.dir)
            .unwrap()
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == ext))
            .collect();
        v.sort();
        v
    }

    pub fn file_len(&self, path: &Path) -> u64 {
        self.io.open(path, false).unwrap().len().unwrap()
    }

    pub fn write_at(&self, path: &Path, offset: u64, bytes: &[u8]) {
        let f = self.io.open(path, false).unwrap();
        f.write_all_at(bytes, offset).unwrap();
        f.sync_data().unwrap();
    }

    pub fn flip_byte(&self, path: &Path, offset: u64) {
        let f = self.io.open(path, false).unwrap();
        let mut b = [0u8; 1];
        f.read_at(&mut b, offset).unwrap();
        f.write_all_at(&[b[0] ^ 0x5A], offset).unwrap();
        f.sync_data().unwrap();
    }
}

/// Small segments and a dense index, so a few hundred records exercise
/// rolls and index lookups.
pub fn small_cfg() -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        index_interval_bytes: 128,
        first_index: 0,
    }
}

/// Deterministic payload for `index`; `salt` tells generations apart
/// (so a record that survived a truncation it should not have is caught).
pub fn payload(index: u64, salt: u64) -> Vec<u8> {
    let mut x = index
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(salt.wrapping_mul(0xBF58_476D_1CE4_E5B9));
    x ^= x >> 29;
    let len = (x % 200) as usize;
    let mut v = Vec::with_capacity(len + 16);
    v.extend_from_slice(&index.to_le_bytes());
    v.extend_from_slice(&salt.to_le_bytes());
    v.extend((0..len).map(|i| (x >> (i % 56)) as u8 ^ i as u8));
    v
}

/// A full prepare / run / complete round.
pub fn sync(log: &mut Log) {
    if let Some(job) = log.prepare_sync().unwrap() {
        let outcome = job.run();
        assert!(outcome.is_ok(), "{:?}", outcome.error());
        log.complete_sync(outcome);
    }
}

pub fn append_many(log: &mut Log, n: u64, salt: u64) -> Vec<RecordPos> {
    (0..n)
        .map(|_| {
            let i = log.next_index();
            let pos = log.append(&payload(i, salt)).unwrap();
            assert_eq!(pos.index, i);
            pos
        })
        .collect()
}

/// Every record via the reader, as (index, payload).
pub fn replay(log: &Log) -> Vec<(u64, Vec<u8>)> {
    log.reader(log.first_index())
        .map(|r| {
            let (pos, rec) = r.unwrap();
            assert_eq!(pos.index, rec.index);
            (rec.index, rec.payload.to_vec())
        })
        .collect()
}
