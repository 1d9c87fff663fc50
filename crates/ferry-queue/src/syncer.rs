//! The node's durability round: group commit for every log (queues and
//! streams) at once.
//!
//! A log with appends that must become durable joins the next round
//! (`SyncSchedule::request`). A round takes every member that joined,
//! (a) flushes each member's buffers and captures its `SyncJob` under the
//! member's lock, (b) makes all of them durable with one device flush
//! (`ferry_log::sync_round`: one `syncfs` of the data directory's file
//! system, or per-file fdatasync for a round of a few files), then (c)
//! completes each member under its lock (durable index up, confirms and
//! nacks, stream consumers woken) and runs the confirms after the lock. A
//! failed `syncfs` poisons every log of the round. Appends that land while
//! a round runs join the next one; rounds start when the previous one ends,
//! so a busy node runs them back to back and an idle one runs none.
//!
//! Owns: the executor and its modes, round membership, and the one
//! membership glue of queues and streams ([`LogOwner`]: joining a round,
//! `sync_now`, their `SyncTask` share of a round). Must not: run a round
//! on a tokio worker (the production executor is a dedicated OS thread),
//! know AMQP.

use crate::metrics;
use crate::queue::sinks::for_each_sink_run;
use crate::queue::ConfirmToken;
use ferry_log::{sync_round, DeviceFlush, Log, RoundPolicy, SyncJob, SyncOutcome};
use parking_lot::{Condvar, Mutex};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

#[cfg(test)]
mod tests;

/// A log that takes part in durability rounds (a queue or a stream).
pub trait SyncTask: Send + Sync {
    /// Its round membership.
    fn schedule(&self) -> &SyncSchedule;
    /// (a) Under the member's lock: flushes its buffers and captures what
    /// the device flush must cover. `None`: nothing to make durable, the
    /// member is gone, or its log failed (then `complete_sync` nacks).
    fn prepare_sync(&self) -> Option<SyncJob>;
    /// (c) After the device flush: records the outcome (`None` if
    /// `prepare_sync` gave no job) and releases what it covered.
    fn complete_sync(&self, outcome: Option<SyncOutcome>);
}

/// Which thread runs the rounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A dedicated OS thread (production).
    Thread,
    /// The thread that asks (`request`) runs the round at once. A caller
    /// holding a member's lock (a queue's settle counting) would deadlock,
    /// so only tests that stay clear of that use it.
    Inline,
    /// Only when the owner calls `run_round` (deterministic tests; a
    /// simulator drives it the same way).
    Manual,
    /// After `stop`: each request gets a one-member round on a short-lived
    /// thread of its own.
    Stopped,
}

struct State {
    /// Members that joined the next round, each once (`SyncSchedule`).
    next: Vec<Arc<dyn SyncTask>>,
    mode: Mode,
}

struct Shared {
    state: Mutex<State>,
    cv: Condvar,
    policy: RoundPolicy,
}

/// The durability round executor, one per node (`QueueEnv::syncer`).
pub struct Syncer {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Syncer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Syncer")
            .field("policy", &self.shared.policy)
            .finish_non_exhaustive()
    }
}

impl Syncer {
    fn with_mode(policy: RoundPolicy, mode: Mode) -> Arc<Self> {
        Arc::new(Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    next: Vec::new(),
                    mode,
                }),
                cv: Condvar::new(),
                policy,
            }),
            thread: Mutex::new(None),
        })
    }

    /// Starts the round thread (`ferry-sync`).
    pub fn start(policy: RoundPolicy) -> std::io::Result<Arc<Self>> {
        let me = Self::with_mode(policy, Mode::Thread);
        let shared = me.shared.clone();
        let handle = std::thread::Builder::new()
            .name("ferry-sync".into())
            .spawn(move || round_thread(&shared))?;
        *me.thread.lock() = Some(handle);
        Ok(me)
    }

    /// An executor without threads: each request runs its round on the
    /// requesting thread (see `Mode::Inline`), per-file fdatasync.
    pub fn inline() -> Arc<Self> {
        Self::with_mode(RoundPolicy::per_file(), Mode::Inline)
    }

    /// An executor whose rounds run only when `run_round` is called.
    pub fn manual(policy: RoundPolicy) -> Arc<Self> {
        Self::with_mode(policy, Mode::Manual)
    }

    /// Adds a member to the next round; the caller (`SyncSchedule`) makes
    /// sure it is there at most once.
    ///
    /// Callers may hold their member's lock (settle counting does), so in
    /// `Thread` mode this only queues. After `stop` the member gets a round
    /// of its own on a short-lived thread: nothing the shutdown promised
    /// depends on it (`Broker::shutdown` syncs every log itself before
    /// stopping), but a confirm still waiting is released rather than
    /// forgotten, and the caller neither blocks nor deadlocks.
    fn join(&self, member: Arc<dyn SyncTask>) {
        let mut st = self.shared.state.lock();
        match st.mode {
            Mode::Thread => {
                st.next.push(member);
                drop(st);
                self.shared.cv.notify_one();
            }
            Mode::Manual => st.next.push(member),
            Mode::Inline => {
                drop(st);
                let mut members = vec![member];
                while !members.is_empty() {
                    members = run_round(&self.shared.policy, members);
                }
            }
            Mode::Stopped => {
                drop(st);
                run_detached(self.shared.policy.clone(), member);
            }
        }
    }

    /// Runs one round of every member that joined, on this thread
    /// (`Manual` mode; elsewhere it is a no-op returning 0). Returns how
    /// many logs took part.
    pub fn run_round(&self) -> usize {
        let members = {
            let mut st = self.shared.state.lock();
            if st.mode != Mode::Manual {
                return 0;
            }
            std::mem::take(&mut st.next)
        };
        let n = members.len();
        let again = run_round(&self.shared.policy, members);
        self.shared.state.lock().next.extend(again);
        n
    }

    /// Finishes the rounds already asked for and stops the thread.
    pub fn stop(&self) {
        let leftover = {
            let mut st = self.shared.state.lock();
            let was = st.mode;
            st.mode = Mode::Stopped;
            match was {
                Mode::Manual => std::mem::take(&mut st.next),
                _ => Vec::new(),
            }
        };
        self.shared.cv.notify_all();
        let handle = self.thread.lock().take();
        if let Some(h) = handle {
            let _ = h.join();
        }
        let mut members = leftover;
        while !members.is_empty() {
            members = run_round(&self.shared.policy, members);
        }
    }
}

fn round_thread(s: &Shared) {
    let mut members: Vec<Arc<dyn SyncTask>> = Vec::new();
    loop {
        {
            let mut st = s.state.lock();
            // Members a round sent back (dirtied while it ran) go first.
            members.append(&mut st.next);
            while members.is_empty() {
                if st.mode != Mode::Thread {
                    return;
                }
                s.cv.wait(&mut st);
                members.append(&mut st.next);
            }
        }
        members = run_round(&s.policy, std::mem::take(&mut members));
    }
}

/// One round over `members`. Returns those that joined again while it ran
/// (their next round).
fn run_round(policy: &RoundPolicy, members: Vec<Arc<dyn SyncTask>>) -> Vec<Arc<dyn SyncTask>> {
    let started = Instant::now();
    for m in &members {
        m.schedule().begin();
    }
    let mut jobs = Vec::with_capacity(members.len());
    let mut owners = Vec::with_capacity(members.len());
    for (i, m) in members.iter().enumerate() {
        if let Some(job) = m.prepare_sync() {
            jobs.push(job);
            owners.push(i);
        }
    }
    let flush_started = Instant::now();
    let (outcomes, flush) = sync_round(jobs, policy);
    if flush != DeviceFlush::None {
        metrics::FSYNC.observe(flush_started.elapsed());
    }
    let mut outcomes: VecDeque<(usize, SyncOutcome)> = owners.into_iter().zip(outcomes).collect();
    for (i, m) in members.iter().enumerate() {
        let outcome = match outcomes.front() {
            Some((at, _)) if *at == i => outcomes.pop_front().map(|(_, o)| o),
            _ => None,
        };
        m.complete_sync(outcome);
    }
    metrics::ROUNDS.fetch_add(1, Ordering::Relaxed);
    metrics::ROUND_LOGS.observe_value(members.len() as u64);
    metrics::ROUND_DURATION.observe(started.elapsed());
    members.into_iter().filter(|m| m.schedule().end()).collect()
}

/// Runs a member's round after `stop` on a thread of its own.
fn run_detached(policy: RoundPolicy, member: Arc<dyn SyncTask>) {
    let spawned = std::thread::Builder::new()
        .name("ferry-sync-late".into())
        .spawn(move || {
            let mut members = vec![member];
            while !members.is_empty() {
                members = run_round(&policy, members);
            }
        });
    if let Err(e) = spawned {
        // The member stays marked as joined, so its late confirms never
        // come; the connection closes with shutdown.
        tracing::error!(error = %e, "cannot start a thread for a late sync");
    }
}

/// One log's membership in the durability rounds: the one group-commit
/// type of queues and streams. A log is in at most one round's list at a
/// time; appends that land while its round runs mark it dirty, and it
/// joins the next round when this one ends.
#[derive(Debug, Default)]
pub struct SyncSchedule(AtomicU8);

const SYNC_IDLE: u8 = 0;
const SYNC_QUEUED: u8 = 1;
const SYNC_RUNNING: u8 = 2;
const SYNC_DIRTY: u8 = 3;

impl SyncSchedule {
    /// Joins the next round: hands `member()` to `syncer` unless it is
    /// already waiting for a round; one that is in a running round joins
    /// the next. `member` gives None once its owner is gone.
    pub fn request(&self, syncer: &Syncer, member: impl FnOnce() -> Option<Arc<dyn SyncTask>>) {
        loop {
            let cur = self.0.load(Ordering::Acquire);
            let next = match cur {
                SYNC_IDLE => SYNC_QUEUED,
                SYNC_RUNNING => SYNC_DIRTY,
                _ => return,
            };
            if self
                .0
                .compare_exchange(cur, next, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                continue;
            }
            if next == SYNC_QUEUED {
                match member() {
                    Some(m) => syncer.join(m),
                    None => self.0.store(SYNC_IDLE, Ordering::Release),
                }
            }
            return;
        }
    }

    /// A round took the member: requests from now on join the next one.
    fn begin(&self) {
        self.0.store(SYNC_RUNNING, Ordering::Release);
    }

    /// The round ended: true if the member was asked for again meanwhile
    /// (it stays queued for the next round), false if it is idle now.
    fn end(&self) -> bool {
        match self
            .0
            .compare_exchange(SYNC_RUNNING, SYNC_IDLE, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => false,
            Err(_) => {
                self.0.store(SYNC_QUEUED, Ordering::Release);
                true
            }
        }
    }
}

/// Which log the alarm names.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LogName<'a> {
    /// "queue" or "stream".
    pub kind: &'static str,
    pub name: &'a str,
    pub vhost: &'a str,
}

/// The shared part of `SyncTask::prepare_sync`, under the member's lock:
/// flush and capture; a failure is logged (the log is poisoned by it, and
/// `complete_log` then nacks).
pub(crate) fn prepare_log(log: &mut Log, who: LogName<'_>) -> Option<SyncJob> {
    match log.prepare_sync() {
        Ok(job) => job,
        Err(e) => {
            tracing::error!(kind = who.kind, name = who.name, error = %e, "sync failed");
            None
        }
    }
}

/// The shared part of `SyncTask::complete_sync`, under the member's lock:
/// records the outcome and takes the confirm waiters it settled, as
/// (confirmed, failed). A failed flush poisons the log (invariant 4): it
/// refuses writes until restart and every pending confirm becomes a nack.
pub(crate) fn complete_log<T>(
    log: &mut Log,
    waiters: &mut VecDeque<(u64, T)>,
    outcome: Option<SyncOutcome>,
    who: LogName<'_>,
) -> (Vec<T>, Vec<T>) {
    if let Some(o) = outcome {
        if let Some(e) = o.error() {
            tracing::error!(
                kind = who.kind, name = who.name, vhost = who.vhost, error = %e,
                "ALARM: fsync failed, {} log poisoned; pending and new publishes are \
                 nacked until restart",
                who.kind
            );
        }
        log.complete_sync(o);
    }
    release_waiters(waiters, log.is_poisoned(), log.durable_index())
}

/// Takes the confirm waiters (log index, token) a sync settled, as
/// (confirmed, failed). A poisoned log fails every waiter; otherwise
/// those up to the durable index are confirmed and the rest keep waiting.
pub(crate) fn release_waiters<T>(
    waiters: &mut VecDeque<(u64, T)>,
    poisoned: bool,
    durable: Option<u64>,
) -> (Vec<T>, Vec<T>) {
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    if poisoned {
        failed.extend(waiters.drain(..).map(|(_, t)| t));
    } else if let Some(durable) = durable {
        while waiters.front().is_some_and(|(i, _)| *i <= durable) {
            if let Some((_, t)) = waiters.pop_front() {
                ok.push(t);
            }
        }
    }
    (ok, failed)
}

/// A one-member round on the caller's thread, whatever the mode: `sync_now`
/// (shutdown, tests, the HTTP publish of a persistent message). Runs
/// beside the executor's rounds: the log allows several jobs in flight.
pub(crate) fn sync_alone(member: &dyn SyncTask) {
    let job = member.prepare_sync();
    let started = Instant::now();
    let outcome = job.map(SyncJob::run);
    if outcome.is_some() {
        metrics::FSYNC.observe(started.elapsed());
    }
    member.complete_sync(outcome);
}

/// The parts of a log owner's locked state a round works on.
pub(crate) struct LogParts<'a> {
    /// Its log.
    pub log: &'a mut Log,
    /// Confirms waiting for an index to be durable, oldest first.
    pub waiters: &'a mut VecDeque<(u64, ConfirmToken)>,
}

/// A queue or a stream as a member of the durability rounds: what differs
/// between the two. Everything else is shared: every `LogOwner` is a
/// [`SyncTask`] (flush and capture under its lock; completion: durable
/// index up, confirms and nacks taken under the lock and sent after it),
/// joins rounds with [`schedule`] and syncs alone with [`sync_serial`].
/// Both implement the common part with [`log_owner_fields!`].
pub(crate) trait LogOwner: Send + Sync + 'static {
    /// The state behind its lock.
    type Locked;
    /// Its lock.
    fn locked(&self) -> &Mutex<Self::Locked>;
    /// The log and waiters of `inner`; `None` once deleted (`delete`
    /// answered the waiters; the files may be gone).
    fn log_parts(inner: &mut Self::Locked) -> Option<LogParts<'_>>;
    /// Its round membership.
    fn sync_schedule(&self) -> &SyncSchedule;
    /// Serializes `sync_now` with deletion.
    fn sync_lock(&self) -> &Mutex<()>;
    /// The node's executor.
    fn syncer(&self) -> &Syncer;
    /// Which log alarms name.
    fn log_name(&self) -> LogName<'_>;
    /// A strong reference to itself, `None` once it is being dropped.
    fn strong(&self) -> Option<Arc<Self>>;
    /// Under the lock, after a sync completed on a log that is not
    /// poisoned (a stream commits what became durable). Default: nothing.
    fn synced(&self, _inner: &mut Self::Locked) {}
}

/// The [`LogOwner`] items of a queue or a stream, which share their field
/// names: `inner: Mutex<Inner>` (with `log`, `waiters`, `deleted`),
/// `sync_state`, `sync_lock`, `env.syncer`, `spec.name`, `vhost`. Used in
/// the `impl LogOwner` block with the kind alarms name; `strong` (and
/// `synced`) stay the type's own.
macro_rules! log_owner_fields {
    ($kind:literal) => {
        type Locked = Inner;

        fn locked(&self) -> &::parking_lot::Mutex<Inner> {
            &self.inner
        }

        fn log_parts(inner: &mut Inner) -> Option<$crate::syncer::LogParts<'_>> {
            (!inner.deleted).then_some($crate::syncer::LogParts {
                log: &mut inner.log,
                waiters: &mut inner.waiters,
            })
        }

        fn sync_schedule(&self) -> &$crate::syncer::SyncSchedule {
            &self.sync_state
        }

        fn sync_lock(&self) -> &::parking_lot::Mutex<()> {
            &self.sync_lock
        }

        fn syncer(&self) -> &$crate::syncer::Syncer {
            &self.env.syncer
        }

        fn log_name(&self) -> $crate::syncer::LogName<'_> {
            $crate::syncer::LogName {
                kind: $kind,
                name: &self.spec.name,
                vhost: &self.vhost,
            }
        }
    };
}
pub(crate) use log_owner_fields;

/// Joins the next durability round (see `SyncSchedule`).
pub(crate) fn schedule<T: LogOwner>(owner: &T) {
    owner.sync_schedule().request(owner.syncer(), || {
        owner.strong().map(|m| m as Arc<dyn SyncTask>)
    });
}

/// Flushes and fsyncs `owner` now, on this thread (shutdown, tests),
/// serialized with its deletion.
pub(crate) fn sync_serial<T: LogOwner>(owner: &T) {
    let _serial = owner.sync_lock().lock();
    sync_alone(owner);
}

impl<T: LogOwner> SyncTask for T {
    fn schedule(&self) -> &SyncSchedule {
        self.sync_schedule()
    }

    fn prepare_sync(&self) -> Option<SyncJob> {
        let mut g = self.locked().lock();
        let parts = T::log_parts(&mut g)?;
        prepare_log(parts.log, self.log_name())
    }

    fn complete_sync(&self, outcome: Option<SyncOutcome>) {
        let (ok, failed) = {
            let mut g = self.locked().lock();
            let Some(parts) = T::log_parts(&mut g) else {
                return;
            };
            let released = complete_log(parts.log, parts.waiters, outcome, self.log_name());
            if !parts.log.is_poisoned() {
                self.synced(&mut *g);
            }
            released
        };
        for_each_sink_run(ok, |s, seqs| s.confirmed(seqs));
        for_each_sink_run(failed, |s, seqs| s.failed(seqs));
    }
}
