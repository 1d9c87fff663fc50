//! Durability rounds over real queues and streams on `SimIo`, driven by a
//! manual executor: what a round confirms, when, and what a failed flush
//! does to every member.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::queue::{ConfirmToken, Enqueued, Queue, QueueEnv};
use crate::stream::Stream;
use crate::test_support::{drain, message, spec, Confirms, Taker};
use ferry_log::{FileIo, LogConfig, SimIo};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

const ROOT: &str = "/data";

fn env(io: &SimIo, syncer: Arc<Syncer>) -> QueueEnv {
    io.create_dir_all(Path::new(ROOT)).unwrap();
    QueueEnv::new(io.shared(), syncer, LogConfig::default(), 1 << 20)
}

fn policy() -> RoundPolicy {
    RoundPolicy::syncfs(ROOT)
}

fn open_queue(env: &QueueEnv, i: usize) -> Arc<Queue> {
    Queue::open(
        spec(&format!("q{i}"), true, Default::default()),
        Arc::from("/"),
        PathBuf::from(format!("{ROOT}/q{i}")),
        env.clone(),
    )
    .unwrap()
}

fn publish(q: &Queue, sink: &Arc<Confirms>, seq: u64) {
    let token = ConfirmToken {
        sink: sink.clone(),
        seq,
    };
    let m = Arc::new(message(&format!("m{seq}"), true));
    assert_eq!(q.publish(&m, Some(token)).unwrap(), Enqueued::Deferred);
}

use std::path::Path;

#[test]
fn many_logs_share_one_round_and_confirm_only_after_its_flush() {
    let io = SimIo::new();
    let syncer = Syncer::manual(policy());
    let env = env(&io, syncer.clone());
    let sink = Arc::new(Confirms::default());
    let queues: Vec<Arc<Queue>> = (0..50).map(|i| open_queue(&env, i)).collect();
    for (i, q) in queues.iter().enumerate() {
        publish(q, &sink, i as u64);
        publish(q, &sink, 1000 + i as u64);
    }
    let flushes = io.fs_syncs();
    assert!(sink.ok.lock().is_empty(), "confirmed before any round");
    assert_eq!(syncer.run_round(), 50, "every dirty queue joins, once");
    assert_eq!(io.fs_syncs(), flushes + 1, "one device flush for 50 logs");
    assert_eq!(sink.ok.lock().len(), 100);
    assert!(sink.failed.lock().is_empty());
    assert_eq!(syncer.run_round(), 0, "nothing joined the next round");
    // Everything confirmed is on disk after a power cut.
    drop(queues);
    io.crash(7);
    let env = self::env(&io, Syncer::inline());
    for i in 0..50 {
        let q = open_queue(&env, i);
        assert_eq!(drain(&q), vec![format!("m{i}"), format!("m{}", 1000 + i)]);
    }
}

/// A durable stream `s` on `env`.
fn open_stream(env: &QueueEnv) -> Arc<Stream> {
    let mut args = ferry_model::Table::new();
    args.insert("x-queue-type", ferry_model::Value::str("stream"));
    Stream::open(
        spec("s", true, args),
        Arc::from("/"),
        PathBuf::from(format!("{ROOT}/s")),
        env.clone(),
    )
    .unwrap()
}

#[test]
fn a_stream_consumer_sees_new_records_only_after_the_round() {
    let io = SimIo::new();
    let syncer = Syncer::manual(policy());
    let env = env(&io, syncer.clone());
    let s = open_stream(&env);
    let queues: Vec<Arc<Queue>> = (0..5).map(|i| open_queue(&env, i)).collect();
    let taker = Taker::new(100);
    let consume_args = ferry_model::Table::new();
    s.consume(
        Arc::from("c"),
        taker.clone(),
        crate::stream::StreamConsume {
            no_ack: false,
            prefetch: 100,
            arguments: &consume_args,
        },
    )
    .unwrap();
    s.dispatch();
    let sink = Arc::new(Confirms::default());
    let m = Arc::new(message("x", true));
    let token = ConfirmToken {
        sink: sink.clone(),
        seq: 1,
    };
    assert_eq!(s.publish(&m, Some(token)).unwrap(), Enqueued::Deferred);
    for (i, q) in queues.iter().enumerate() {
        publish(q, &sink, 10 + i as u64);
    }
    assert!(taker.offsets().is_empty(), "uncommitted record delivered");
    assert_eq!(syncer.run_round(), 6);
    assert_eq!(taker.offsets(), vec![0]);
    assert_eq!(sink.ok.lock().len(), 6);
}

/// A stream consumer from "first", registered now.
fn read_first(s: &Stream) -> Vec<u64> {
    let taker = Taker::new(100);
    let mut args = ferry_model::Table::new();
    args.insert("x-stream-offset", ferry_model::Value::str("first"));
    let how = crate::stream::StreamConsume {
        no_ack: false,
        prefetch: 100,
        arguments: &args,
    };
    s.consume(Arc::from("c"), taker.clone(), how).unwrap();
    s.dispatch();
    taker.offsets()
}

#[test]
fn a_transient_stream_message_is_confirmed_only_once_readable() {
    // A stream stores every message: a transient one's confirm waits for
    // the round that commits it, like a persistent one's, so a consumer
    // that starts after the confirm reads it.
    let io = SimIo::new();
    let syncer = Syncer::manual(policy());
    let env = env(&io, syncer.clone());
    let s = open_stream(&env);
    let sink = Arc::new(Confirms::default());
    let token = ConfirmToken {
        sink: sink.clone(),
        seq: 1,
    };
    let transient = Arc::new(message("t", false));
    assert_eq!(
        s.publish(&transient, Some(token)).unwrap(),
        Enqueued::Deferred
    );
    assert!(sink.ok.lock().is_empty(), "confirmed before it is readable");
    assert!(read_first(&s).is_empty(), "uncommitted record delivered");
    assert_eq!(syncer.run_round(), 1);
    assert_eq!(*sink.ok.lock(), vec![1]);
    assert_eq!(read_first(&s), vec![0]);
}

#[test]
fn a_failed_flush_poisons_every_member_and_nacks_their_confirms() {
    let io = SimIo::new();
    let syncer = Syncer::manual(policy());
    let env = env(&io, syncer.clone());
    let sink = Arc::new(Confirms::default());
    let queues: Vec<Arc<Queue>> = (0..20).map(|i| open_queue(&env, i)).collect();
    for (i, q) in queues.iter().enumerate() {
        publish(q, &sink, i as u64);
    }
    io.fail_next_sync();
    assert_eq!(syncer.run_round(), 20);
    assert!(sink.ok.lock().is_empty(), "a failed round confirmed");
    let mut failed = sink.failed.lock().clone();
    failed.sort_unstable();
    assert_eq!(failed, (0..20).collect::<Vec<u64>>());
    for q in &queues {
        let m = Arc::new(message("late", true));
        assert!(q.publish(&m, None).is_err(), "a poisoned log took a write");
    }
}

#[test]
fn small_rounds_fdatasync_file_by_file() {
    let io = SimIo::new();
    let syncer = Syncer::manual(policy());
    let env = env(&io, syncer.clone());
    let sink = Arc::new(Confirms::default());
    let queues: Vec<Arc<Queue>> = (0..2).map(|i| open_queue(&env, i)).collect();
    for (i, q) in queues.iter().enumerate() {
        publish(q, &sink, i as u64);
    }
    let flushes = io.fs_syncs();
    assert_eq!(syncer.run_round(), 2);
    assert_eq!(io.fs_syncs(), flushes, "two files: no syncfs");
    assert_eq!(sink.ok.lock().len(), 2);
}

/// A member that gets dirty again while its round runs (an append landing
/// after its flush), like a busy queue.
struct Busy {
    schedule: SyncSchedule,
    syncer: Arc<Syncer>,
    me: Mutex<Option<std::sync::Weak<Busy>>>,
    prepared: Mutex<usize>,
    dirty_again: Mutex<bool>,
}

impl SyncTask for Busy {
    fn schedule(&self) -> &SyncSchedule {
        &self.schedule
    }
    fn prepare_sync(&self) -> Option<SyncJob> {
        *self.prepared.lock() += 1;
        if std::mem::take(&mut *self.dirty_again.lock()) {
            let me = self.me.lock().clone();
            self.schedule.request(&self.syncer, || {
                me.and_then(|w| w.upgrade()).map(|b| b as Arc<dyn SyncTask>)
            });
        }
        None
    }
    fn complete_sync(&self, _: Option<SyncOutcome>) {}
}

#[test]
fn an_append_during_a_round_joins_the_next_one() {
    let syncer = Syncer::manual(RoundPolicy::per_file());
    let busy = Arc::new(Busy {
        schedule: SyncSchedule::default(),
        syncer: syncer.clone(),
        me: Mutex::new(None),
        prepared: Mutex::new(0),
        dirty_again: Mutex::new(true),
    });
    *busy.me.lock() = Some(Arc::downgrade(&busy));
    let b = busy.clone();
    busy.schedule
        .request(&syncer, move || Some(b as Arc<dyn SyncTask>));
    // A second request before the round starts does not join twice.
    busy.schedule.request(&syncer, || panic!("joined twice"));
    assert_eq!(syncer.run_round(), 1);
    assert_eq!(syncer.run_round(), 1, "dirtied mid-round: next round");
    assert_eq!(syncer.run_round(), 0);
    assert_eq!(*busy.prepared.lock(), 2);
}

/// A member whose round needs the lock its requester holds, like a queue
/// whose settle counting asks for a round under `Queue.inner`.
struct NeedsLock {
    schedule: SyncSchedule,
    lock: Arc<Mutex<()>>,
    ran: mpsc::Sender<()>,
}

impl SyncTask for NeedsLock {
    fn schedule(&self) -> &SyncSchedule {
        &self.schedule
    }
    fn prepare_sync(&self) -> Option<SyncJob> {
        let _g = self.lock.lock();
        let _ = self.ran.send(());
        None
    }
    fn complete_sync(&self, _: Option<SyncOutcome>) {}
}

fn needs_lock(lock: &Arc<Mutex<()>>, ran: &mpsc::Sender<()>) -> Arc<NeedsLock> {
    Arc::new(NeedsLock {
        schedule: SyncSchedule::default(),
        lock: lock.clone(),
        ran: ran.clone(),
    })
}

#[test]
fn a_request_after_stop_does_not_run_under_the_callers_lock() {
    let syncer = Syncer::start(RoundPolicy::per_file()).unwrap();
    syncer.stop();
    let lock = Arc::new(Mutex::new(()));
    let (ran_tx, ran_rx) = mpsc::channel();
    let (submitted_tx, submitted_rx) = mpsc::channel();
    let task = needs_lock(&lock, &ran_tx);
    let caller = {
        let lock = lock.clone();
        std::thread::spawn(move || {
            let _held = lock.lock();
            let t = task.clone();
            task.schedule
                .request(&syncer, move || Some(t as Arc<dyn SyncTask>));
            let _ = submitted_tx.send(());
            // Still holding the lock: the round cannot have run yet.
        })
    };
    assert!(
        submitted_rx.recv_timeout(Duration::from_secs(10)).is_ok(),
        "a request after stop blocked its caller"
    );
    caller.join().unwrap();
    assert!(
        ran_rx.recv_timeout(Duration::from_secs(10)).is_ok(),
        "the late round never ran"
    );
}

#[test]
fn stop_runs_the_rounds_asked_for_before_it() {
    let syncer = Syncer::start(RoundPolicy::per_file()).unwrap();
    let lock = Arc::new(Mutex::new(()));
    let (ran_tx, ran_rx) = mpsc::channel();
    let held = lock.lock();
    for _ in 0..3 {
        let t = needs_lock(&lock, &ran_tx);
        let m = t.clone();
        t.schedule
            .request(&syncer, move || Some(m as Arc<dyn SyncTask>));
    }
    drop(held);
    syncer.stop();
    assert_eq!(ran_rx.try_iter().count(), 3);
}
