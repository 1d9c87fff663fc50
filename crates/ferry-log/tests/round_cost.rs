//! What one durability round costs on this machine's disk, per flush kind:
//! N logs (real files, `StdIo`) with one 512-byte append each, made
//! durable by `sync_round` file by file or with one `syncfs`. Not a
//! correctness test: run it by hand to pick `RoundPolicy`'s crossover,
//!
//!   cargo test -p ferry-log --release --test round_cost -- --ignored --nocapture
//!
//! (set FERRY_ROUND_DIR to measure another file system than the target dir).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferry_log::{sync_round, DeviceFlush, Log, LogConfig, RoundPolicy, StdIo};
use std::path::PathBuf;
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

#[test]
#[ignore = "a measurement, run by hand"]
fn round_cost_by_flush_kind() {
    let base = std::env::var_os("FERRY_ROUND_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    let dir = tempfile::tempdir_in(base).unwrap();
    let io = StdIo::shared();
    let payload = vec![7u8; 512];
    println!("logs | fdatasync each (ms, median of 9) | one syncfs (ms)");
    for n in [1usize, 2, 4, 10, 100, 1000] {
        let mut logs: Vec<Log> = (0..n)
            .map(|i| {
                Log::open(
                    io.clone(),
                    &dir.path().join(format!("n{n}-{i}")),
                    LogConfig::default(),
                )
                .unwrap()
                .0
            })
            .collect();
        let mut per_file = Vec::new();
        let mut syncfs = Vec::new();
        for rep in 0..18 {
            let (policy, want) = if rep % 2 == 0 {
                (RoundPolicy::per_file(), DeviceFlush::PerFile)
            } else {
                let mut p = RoundPolicy::syncfs(dir.path());
                p.syncfs_from_files = 1;
                (p, DeviceFlush::FileSystem)
            };
            for log in &mut logs {
                log.append(&payload).unwrap();
            }
            let t = Instant::now();
            let jobs = logs
                .iter_mut()
                .map(|l| l.prepare_sync().unwrap().unwrap())
                .collect();
            let (outcomes, flush) = sync_round(jobs, &policy);
            let ms = t.elapsed().as_secs_f64() * 1e3;
            assert_eq!(flush, want);
            for (log, o) in logs.iter_mut().zip(outcomes) {
                assert!(o.is_ok());
                log.complete_sync(o);
            }
            if want == DeviceFlush::PerFile {
                per_file.push(ms);
            } else {
                syncfs.push(ms);
            }
        }
        println!("{n} | {:.2} | {:.2}", median(per_file), median(syncfs));
    }
}
