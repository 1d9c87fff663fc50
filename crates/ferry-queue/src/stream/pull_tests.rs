//! The pull API (`pull.rs`) over the crash-simulating backend: bounds,
//! out-of-range answers, commit visibility, waits, crashes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::tests::{big, msg, publish_n, retention_fixture, Fixture};
use super::*;
use crate::error::ErrorKind;
use crate::queue::QueueEnv;
use crate::syncer::Syncer;
use ferry_log::{FileIo, LogConfig};
use ferry_model::Value;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

const ALL: ReadLimits = ReadLimits {
    max_bytes: u64::MAX,
    max_records: usize::MAX,
};

/// Wakes a parked thread and counts wakes.
struct Unpark {
    thread: Thread,
    wakes: AtomicUsize,
}

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.wakes.fetch_add(1, Ordering::SeqCst);
        self.thread.unpark();
    }
}

fn unpark() -> Arc<Unpark> {
    Arc::new(Unpark {
        thread: std::thread::current(),
        wakes: AtomicUsize::new(0),
    })
}

/// The caller's timer: polls `fut` whenever it is woken, until `deadline`
/// (`None` then, dropping the future).
fn wait_until<F: Future>(fut: F, deadline: Instant) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    let waker = Waker::from(unpark());
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return Some(v);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        std::thread::park_timeout(deadline - now);
    }
}

fn offsets(b: &ReadBatch) -> Vec<u64> {
    b.records().iter().map(|r| r.offset).collect()
}

fn bodies(b: &ReadBatch) -> Vec<String> {
    let body = |r: &StreamRecord| String::from_utf8_lossy(&r.message.body).into_owned();
    b.records().iter().map(body).collect()
}

/// What `publish` does short of asking for the sync: appended, not
/// committed (as between a publish and its group commit).
fn append_uncommitted(st: &Stream, body: &str) {
    let m = msg(body, true);
    st.append(&mut st.inner.lock(), &m, None).unwrap();
}

fn waiting(st: &Stream) -> usize {
    st.readers.waiting_len()
}

#[test]
fn reads_across_segments_from_any_offset() {
    let f = retention_fixture(&[]);
    let st = f.open();
    for i in 0..60 {
        st.publish(&big(i), None).unwrap();
        f.clock.advance(1_000);
    }
    assert!(st.inner.lock().log.segments().len() >= 3);
    let all = st.read(0, ALL).unwrap();
    assert_eq!((all.first(), all.end()), (0, 60));
    assert_eq!(offsets(&all), (0..60).collect::<Vec<_>>());
    assert_eq!(bodies(&all)[59], format!("{:0>200}", 59));
    for (i, r) in all.records().iter().enumerate() {
        assert_eq!(r.timestamp_ms, 1_000_000 + i as u64 * 1_000);
    }
    let limits = ReadLimits {
        max_bytes: u64::MAX,
        max_records: 5,
    };
    for from in [0, 16, 17, 33, 55] {
        let b = st.read(from, limits).unwrap();
        let want: Vec<u64> = (from..(from + 5).min(60)).collect();
        assert_eq!(offsets(&b), want, "from {from}");
    }
    // A reopened stream reads the same.
    drop(st);
    let st = f.open();
    assert_eq!(st.read(0, ALL).unwrap(), all);
}

#[test]
fn max_bytes_is_honoured_but_one_record_always_comes() {
    let f = Fixture::new(&[]);
    let st = f.open();
    st.publish(&msg(&"x".repeat(10_000), true), None).unwrap();
    publish_n(&st, 1, 9);
    let one = st.read(0, ReadLimits::bytes(1)).unwrap();
    assert_eq!(offsets(&one), vec![0]);
    let size = one.records()[0].bytes;
    assert!(size > 10_000);
    let small = st.read(1, ReadLimits::bytes(0)).unwrap().records()[0].bytes;
    // Records 1..10 are the same size.
    let b = st.read(1, ReadLimits::bytes(3 * small)).unwrap();
    assert_eq!(offsets(&b), vec![1, 2, 3]);
    let b = st.read(1, ReadLimits::bytes(3 * small - 1)).unwrap();
    assert_eq!(offsets(&b), vec![1, 2]);
    let b = st.read(0, ReadLimits::bytes(size + small)).unwrap();
    assert_eq!(offsets(&b), vec![0, 1]);
    let zero = ReadLimits {
        max_bytes: u64::MAX,
        max_records: 0,
    };
    assert_eq!(offsets(&st.read(4, zero).unwrap()), vec![4]);
}

#[test]
fn retention_makes_an_old_offset_out_of_range_never_skipped() {
    let f = retention_fixture(&[("x-max-length-bytes", Value::I32(10_000))]);
    let st = f.open();
    for i in 0..200 {
        st.publish(&big(i), None).unwrap();
    }
    let (first, next, _) = st.offsets();
    assert!(first > 100);
    for from in [0, first - 1] {
        assert_eq!(
            st.read(from, ALL).unwrap(),
            ReadBatch::OffsetOutOfRange { first, end: 200 }
        );
    }
    let b = st.read(first, ALL).unwrap();
    assert_eq!(offsets(&b), (first..next).collect::<Vec<_>>());
    // At the end: nothing yet; past it: out of range.
    let at_end = st.read(200, ALL).unwrap();
    assert_eq!(
        at_end,
        ReadBatch::Records {
            first,
            end: 200,
            records: vec![]
        }
    );
    assert!(matches!(
        st.read(201, ALL).unwrap(),
        ReadBatch::OffsetOutOfRange { end: 200, .. }
    ));
    // A waiter below the first offset resolves at once: the read then
    // says where the stream starts.
    let w = wait_until(st.wait_for(0), Instant::now());
    assert_eq!(w, Some(WaitOutcome::Committed));
}

#[test]
fn reads_never_return_uncommitted_records_and_a_commit_wakes_the_waiter() {
    let f = Fixture::new(&[]);
    let st = f.open();
    publish_n(&st, 0, 5);
    for i in 5..8 {
        append_uncommitted(&st, &format!("m{i}"));
    }
    assert_eq!(st.offsets(), (0, 8, 5));
    let b = st.read(0, ALL).unwrap();
    assert_eq!((offsets(&b), b.end()), ((0..5).collect(), 5));
    // Appended but not committed: empty, not out of range.
    for from in [5, 7, 8] {
        assert!(st.read(from, ALL).unwrap().records().is_empty(), "{from}");
        assert!(matches!(
            st.read(from, ALL).unwrap(),
            ReadBatch::Records { .. }
        ));
    }
    assert!(matches!(
        st.read(9, ALL).unwrap(),
        ReadBatch::OffsetOutOfRange { first: 0, end: 5 }
    ));
    let wake = unpark();
    let waker = Waker::from(wake.clone());
    let mut cx = Context::from_waker(&waker);
    let mut w = std::pin::pin!(st.wait_for(5));
    assert_eq!(w.as_mut().poll(&mut cx), Poll::Pending);
    assert_eq!(w.as_mut().poll(&mut cx), Poll::Pending);
    assert_eq!(waiting(&st), 1, "one entry however often it is polled");
    assert_eq!(wake.wakes.load(Ordering::SeqCst), 0);
    st.sync_now();
    assert_eq!(wake.wakes.load(Ordering::SeqCst), 1, "woken by the commit");
    assert_eq!(
        w.as_mut().poll(&mut cx),
        Poll::Ready(WaitOutcome::Committed)
    );
    assert_eq!(waiting(&st), 0);
    let b = st.read(5, ALL).unwrap();
    assert_eq!(bodies(&b), vec!["m5", "m6", "m7"]);
    assert_eq!(b.end(), 8);
}

#[test]
fn a_wait_ends_at_the_callers_deadline_and_unregisters() {
    let f = Fixture::new(&[]);
    let st = f.open();
    publish_n(&st, 0, 2);
    let start = Instant::now();
    let w = wait_until(st.wait_for(2), start + Duration::from_millis(30));
    assert_eq!(w, None);
    assert!(start.elapsed() >= Duration::from_millis(30));
    assert_eq!(waiting(&st), 0, "a dropped wait leaves nothing behind");
    // Already committed: ready at once.
    let w = wait_until(st.wait_for(1), Instant::now());
    assert_eq!(w, Some(WaitOutcome::Committed));
}

#[test]
fn delete_ends_waits_and_reads() {
    let f = Fixture::new(&[]);
    let st = f.open();
    publish_n(&st, 0, 2);
    let st2 = st.clone();
    let waiter = std::thread::spawn(move || {
        wait_until(st2.wait_for(2), Instant::now() + Duration::from_secs(30))
    });
    while waiting(&st) == 0 {
        std::thread::yield_now();
    }
    st.delete().unwrap();
    assert_eq!(waiter.join().unwrap(), Some(WaitOutcome::Closed));
    assert_eq!(st.read(0, ALL).unwrap_err().kind(), ErrorKind::NotFound);
    let w = wait_until(st.wait_for(0), Instant::now());
    assert_eq!(w, Some(WaitOutcome::Closed));
}

#[test]
fn a_corrupt_record_crashes_the_stream_for_readers_and_waiters() {
    let f = Fixture::new(&[]);
    let st = f.open();
    publish_n(&st, 0, 10);
    let size = st.read(0, ReadLimits::bytes(0)).unwrap().records()[0].bytes;
    // Record 6's payload: segment header (40), 6 records, its header (16).
    let at = 40 + 6 * (16 + size) + 16 + size / 2;
    let seg = Path::new("/data/s/00000000000000000000.log");
    f.io.flip_bit(seg, at, 3).unwrap();
    let wake = unpark();
    let waker = Waker::from(wake.clone());
    let mut cx = Context::from_waker(&waker);
    let mut w = std::pin::pin!(st.wait_for(10));
    assert_eq!(w.as_mut().poll(&mut cx), Poll::Pending);
    assert_eq!(offsets(&st.read(0, ReadLimits::bytes(0)).unwrap()), vec![0]);
    let e = st.read(3, ALL).unwrap_err();
    assert!(e.is_corruption(), "{e}");
    assert!(st.is_deleted());
    assert_eq!(w.as_mut().poll(&mut cx), Poll::Ready(WaitOutcome::Closed));
    assert_eq!(wake.wakes.load(Ordering::SeqCst), 1);
    assert_eq!(st.read(0, ALL).unwrap_err().kind(), ErrorKind::NotFound);
}

#[test]
fn a_reader_follows_concurrent_appends_through_waits() {
    let mut f = Fixture::new(&[]);
    let syncer = Syncer::start(ferry_log::RoundPolicy::per_file()).unwrap();
    f.env = QueueEnv::new(f.io.shared(), syncer.clone(), LogConfig::default(), 0)
        .with_clock(f.clock.clone());
    let st = f.open();
    const N: usize = 2_000;
    let reader = {
        let st = st.clone();
        std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut waits = 0;
            while got.len() < N {
                let next = got.len() as u64;
                let b = st.read(next, ReadLimits::bytes(4096)).unwrap();
                assert!(b.end() <= st.offsets().2, "never past committed");
                if b.records().is_empty() {
                    let deadline = Instant::now() + Duration::from_secs(30);
                    let w = wait_until(st.wait_for(next), deadline);
                    assert_eq!(w, Some(WaitOutcome::Committed));
                    waits += 1;
                }
                got.extend(bodies(&b));
            }
            (got, waits)
        })
    };
    // The reader starts at the (empty) tail: it waits before any publish.
    while waiting(&st) == 0 {
        std::thread::yield_now();
    }
    publish_n(&st, 0, N);
    let (got, waits) = reader.join().unwrap();
    let want: Vec<String> = (0..N).map(|i| format!("m{i}")).collect();
    assert_eq!(got, want);
    assert!(waits > 0, "the reader reached the tail at least once");
    assert_eq!(waiting(&st), 0);
    syncer.stop();
}

#[test]
fn after_a_crash_committed_offsets_read_the_same_and_nothing_else_was_served() {
    for seed in 0..30 {
        let f = Fixture::new(&[]);
        let st = f.open();
        publish_n(&st, 0, 10);
        for i in 10..15 {
            append_uncommitted(&st, &format!("m{i}"));
            if i == 12 {
                // Handed to the OS, not fsynced: may survive, may not
                // (dropping the log hands over the rest the same way).
                st.inner.lock().log.flush().unwrap();
            }
        }
        let before = st.read(0, ALL).unwrap();
        assert_eq!(offsets(&before), (0..10).collect::<Vec<_>>(), "seed {seed}");
        assert!(st.read(10, ALL).unwrap().records().is_empty());
        drop(st);
        f.io.crash(seed);
        let st = f.open();
        let after = st.read(0, ALL).unwrap();
        let got = bodies(&after);
        // Every committed record at its offset; after them at most a
        // prefix of the unsynced appends, never anything else.
        assert_eq!(got[..10], bodies(&before)[..], "seed {seed}");
        let want: Vec<String> = (0..got.len()).map(|i| format!("m{i}")).collect();
        assert_eq!(got, want, "seed {seed}");
        let end = after.end();
        assert!((10..=15).contains(&end), "seed {seed}: {end}");
        assert!(st.read(end, ALL).unwrap().records().is_empty());
        assert!(matches!(
            st.read(end + 1, ALL).unwrap(),
            ReadBatch::OffsetOutOfRange { .. }
        ));
        assert!(f.io.exists(&PathBuf::from("/data/s")));
    }
}

#[test]
fn push_consumers_and_pull_reads_see_the_same_records_across_views() {
    let segment = ("x-stream-max-segment-size-bytes", Value::I32(64 * 1024));
    let f = Fixture::new(&[segment]);
    let st = f.open();
    let body = "y".repeat(1_000);
    for _ in 0..2_500 {
        st.publish(&msg(&body, true), None).unwrap();
    }
    // 2.5 MB: one dispatch takes several 1 MiB views.
    let pushed = super::tests::consume_at(&st, 3_000, Some(crate::test_support::ms("first")));
    let pulled = st.read(0, ALL).unwrap();
    assert_eq!(pushed.offsets(), (0..2_500).collect::<Vec<_>>());
    let got = pushed.got.lock();
    assert_eq!(got.len(), pulled.records().len());
    for (d, r) in got.iter().zip(pulled.records()) {
        assert_eq!((d.msg_id, &*d.message), (r.offset, &r.message));
    }
}

/// Numbers for the report, on real files (page cache):
/// `cargo test --release -p ferry-queue measure_pull -- --ignored --nocapture`.
#[test]
#[ignore = "measurement, run by hand in release mode"]
fn measure_pull_reads_and_lock_hold() {
    use crate::test_support::Taker;
    let dir = tempfile::tempdir().unwrap();
    let mut f = Fixture::new(&[]);
    let syncer = Syncer::start(ferry_log::RoundPolicy::per_file()).unwrap();
    f.env = QueueEnv::new(
        ferry_log::StdIo::shared(),
        syncer.clone(),
        LogConfig::default(),
        0,
    );
    let spec = crate::queue::QueueSpec {
        name: Arc::from("s"),
        durable: true,
        exclusive_owner: None,
        auto_delete: false,
        arguments: crate::test_support::mtable(&[(
            "x-queue-type",
            crate::test_support::ms("stream"),
        )]),
    };
    let st = Stream::open(spec, Arc::from("/"), dir.path().join("s"), f.env.clone()).unwrap();
    const N: usize = 50_000;
    let body = "x".repeat(1024);
    for _ in 0..N {
        st.publish(&msg(&body, true), None).unwrap();
    }
    st.sync_now();
    assert_eq!(st.offsets().2, N as u64);
    let t = Instant::now();
    let (mut next, mut bytes, mut reads) = (0u64, 0u64, 0u32);
    while next < N as u64 {
        let b = st.read(next, ReadLimits::bytes(1 << 20)).unwrap();
        next = b.records().last().unwrap().offset + 1;
        bytes += b.records().iter().map(|r| r.bytes).sum::<u64>();
        reads += 1;
    }
    let pull = t.elapsed();
    let t = Instant::now();
    let rounds = 10_000u32;
    for i in 0..rounds {
        let from = u64::from(i) * 5 % N as u64;
        let g = st.inner.lock();
        let v = g.log.view(from, g.state.committed(), 1 << 20).unwrap();
        assert!(v.end() > from);
    }
    let capture = t.elapsed() / rounds;
    let taker = Taker::new(N as u32);
    let args =
        crate::test_support::mtable(&[("x-stream-offset", crate::test_support::ms("first"))]);
    let how = StreamConsume {
        no_ack: false,
        prefetch: N as u32,
        arguments: &args,
    };
    st.consume(Arc::from("c"), taker.clone(), how).unwrap();
    let t = Instant::now();
    st.dispatch();
    let push = t.elapsed();
    assert_eq!(taker.offsets().len(), N);
    let mb = bytes as f64 / 1e6;
    eprintln!(
        "pull: {N} records, {mb:.1} MB in {reads} reads of <= 1 MiB: {:?} ({:.0} MB/s, {:?} per read, lock held only to capture: {capture:?} per capture)",
        pull,
        mb / pull.as_secs_f64(),
        pull / reads,
    );
    eprintln!(
        "push: {N} records in one dispatch under the lock: {:?} ({:.0} MB/s)",
        push,
        mb / push.as_secs_f64()
    );
    syncer.stop();
}
