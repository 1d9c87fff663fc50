//! kill -9 soak: cycles of confirmed publishing and acking consumers across
//! several durable queues, a SIGKILL at a random moment, a restart on the
//! same data directory and a full drain, with a checker.
//!
//! Per cycle and in total the checker reports:
//! * **lost**: confirmed, not acked by a consumer before the kill, and not
//!   delivered by the drain after the restart. Must be 0.
//! * **duplicated**: messages delivered more than once, split into
//!   `redelivered` (delivered but unacked at the kill: at-least-once, as
//!   expected), `after-ack` (its ack was sent but not yet on disk at the
//!   kill: allowed, acks are not fsynced) and `same-run` (twice within one
//!   broker run: a bug, must be 0; this soak never requeues).
//! * **reordered**: per queue and publisher, a first delivery of a message
//!   after a later message of the same publisher. Must be 0.
//!
//! Settings (environment):
//! * `FERRY_SOAK_CYCLES` (default 3: the normal test run, well under 20 s);
//!   `scripts/soak` runs 100 in release mode.
//! * `FERRY_BIN`: the ferry binary (then `FERRY_TEST_BIN`, as for every
//!   black-box test). Default `target/release/ferry` when it is at least as
//!   new as the binary cargo built for this test, else that one, so a stale
//!   release build is never soaked by accident.
//! * `FERRY_SOAK_SEED`: seed of the kill moments (default: the clock;
//!   printed, so a run can be repeated).
//! * `FERRY_SEGMENT_BYTES` for the broker defaults to 256 KiB here, so
//!   cycles roll, seal and remove segments.
//!
//! Owns the broker process: skipped when FERRY_TEST_AMQP_URL is set.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const QUEUES: usize = 3;
const PUBLISHERS: u32 = 3;
const IN_FLIGHT: usize = 64;
const PREFETCH: u16 = 32;

/// Publisher id (unique across cycles) and its sequence number.
type MsgId = (u32, u32);

fn queue_name(q: usize) -> String {
    format!("soak-q{q}")
}

fn queue_of(seq: u32) -> usize {
    seq as usize % QUEUES
}

fn body(id: MsgId) -> Vec<u8> {
    let mut b = format!("p{}s{}|", id.0, id.1).into_bytes();
    let pad = (u64::from(id.1) * 7919 + u64::from(id.0) * 131) % 1200;
    b.resize(b.len() + pad as usize, b'.');
    b
}

fn parse(data: &[u8]) -> MsgId {
    let s = std::str::from_utf8(data).expect("utf8 body");
    let head = s.split('|').next().unwrap();
    let (p, q) = head[1..].split_once('s').expect("soak body");
    let id = (p.parse().unwrap(), q.parse().unwrap());
    assert_eq!(data, body(id).as_slice(), "altered body for {id:?}");
    id
}

/// SplitMix64, for the kill moments.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

struct Settings {
    cycles: usize,
    seed: u64,
    bin: PathBuf,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// Reads the settings and exports what the harness and the broker read.
/// Runs before any thread of this test binary exists.
fn settings() -> Settings {
    let cycles = env_or("FERRY_SOAK_CYCLES", 3usize);
    let seed = env_or(
        "FERRY_SOAK_SEED",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    );
    let built = PathBuf::from(env!("CARGO_BIN_EXE_ferry"));
    let release = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../target/release/ferry"
    ));
    let mtime = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let given = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    let bin = match given("FERRY_BIN").or_else(|| given("FERRY_TEST_BIN")) {
        Some(b) => PathBuf::from(b),
        None => match (mtime(&release), mtime(&built)) {
            (Some(r), Some(b)) if r >= b => release,
            _ => built,
        },
    };
    // What the harness spawns.
    std::env::set_var("FERRY_TEST_BIN", &bin);
    if std::env::var_os("FERRY_TEST_TIMEOUT_SECS").is_none() {
        // The harness's per-broker watchdog must outlive the whole soak.
        std::env::set_var("FERRY_TEST_TIMEOUT_SECS", (120 + 60 * cycles).to_string());
    }
    if std::env::var_os("FERRY_SEGMENT_BYTES").is_none() {
        std::env::set_var("FERRY_SEGMENT_BYTES", "262144");
    }
    Settings { cycles, seed, bin }
}

#[derive(Default)]
struct Ledger {
    published: HashSet<MsgId>,
    confirmed: HashSet<MsgId>,
    nacked: HashSet<MsgId>,
    /// Recorded before the ack is sent: a superset of the acks the broker saw.
    acked: HashSet<MsgId>,
    /// The broker run of every delivery so far, per message.
    history: HashMap<MsgId, Vec<u32>>,
}

/// One cycle's figures (also summed over all cycles).
#[derive(Debug, Default, Clone, Copy)]
struct Figures {
    published: usize,
    confirmed: usize,
    nacked: usize,
    delivered: usize,
    acked: usize,
    owed: usize,
    drained: usize,
    lost: usize,
    duplicated: usize,
    redelivered: usize,
    after_ack: usize,
    same_run: usize,
    reordered: usize,
    phantom: usize,
}

impl std::ops::AddAssign for Figures {
    fn add_assign(&mut self, o: Figures) {
        self.published += o.published;
        self.confirmed += o.confirmed;
        self.nacked += o.nacked;
        self.delivered += o.delivered;
        self.acked += o.acked;
        self.owed += o.owed;
        self.drained += o.drained;
        self.lost += o.lost;
        self.duplicated += o.duplicated;
        self.redelivered += o.redelivered;
        self.after_ack += o.after_ack;
        self.same_run += o.same_run;
        self.reordered += o.reordered;
        self.phantom += o.phantom;
    }
}

/// Checks deliveries in arrival order as they come in (per broker run).
struct Checker {
    run: u32,
    /// Highest seq delivered per (queue, publisher) in this run.
    high: HashMap<(usize, u32), u32>,
    fig: Figures,
    /// Messages that got a repeat delivery this cycle.
    repeated: HashSet<MsgId>,
}

impl Checker {
    fn new(run: u32) -> Self {
        Checker {
            run,
            high: HashMap::new(),
            fig: Figures::default(),
            repeated: HashSet::new(),
        }
    }

    /// Records a delivery (before its ack is decided).
    fn delivered(&mut self, l: &mut Ledger, id: MsgId, queue: usize) {
        self.fig.delivered += 1;
        if !l.published.contains(&id) || queue_of(id.1) != queue {
            self.fig.phantom += 1;
        }
        let before = l.history.entry(id).or_default();
        if let Some(&last_run) = before.last() {
            if self.repeated.insert(id) {
                self.fig.duplicated += 1;
            }
            if last_run == self.run {
                self.fig.same_run += 1;
            } else if l.acked.contains(&id) {
                self.fig.after_ack += 1;
            } else {
                self.fig.redelivered += 1;
            }
        } else {
            let high = self.high.entry((queue, id.0)).or_insert(0);
            if id.1 < *high {
                self.fig.reordered += 1;
                eprintln!(
                    "REORDERED: {id:?} after p{}s{} in queue {queue}",
                    id.0, high
                );
            }
            *high = (*high).max(id.1);
        }
        before.push(self.run);
    }
}

/// Runs everything of one cycle's live phase until the kill.
struct Live {
    tasks: Vec<(&'static str, tokio::task::JoinHandle<()>)>,
}

async fn declare_all(ch: &Channel) {
    for q in 0..QUEUES {
        ch.queue_declare(
            queue_name(q).as_str().into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await
        .expect("queue.declare");
    }
}

async fn start_live(
    url: &str,
    cycle: usize,
    ledger: &Arc<Mutex<Ledger>>,
    checker: &Arc<Mutex<Checker>>,
    freeze: &Arc<AtomicBool>,
) -> Live {
    let mut tasks = Vec::new();
    for q in 0..QUEUES {
        let conn = connect(url).await;
        let ch = conn.create_channel().await.unwrap();
        ch.basic_qos(PREFETCH, BasicQosOptions::default())
            .await
            .unwrap();
        let mut consumer = consume(&ch, &queue_name(q), BasicConsumeOptions::default()).await;
        let (ledger, checker, freeze) = (ledger.clone(), checker.clone(), freeze.clone());
        // Consumers of different speeds: queue 0 keeps up with its
        // publishers, the others fall behind, so a backlog of confirmed,
        // unacked messages is on disk when the kill comes.
        let pause_every = [0u64, 4, 1][q % 3];
        tasks.push((
            "consumer",
            tokio::spawn(async move {
                let mut n = 0u64;
                while let Some(Ok(d)) = consumer.next().await {
                    n += 1;
                    if pause_every > 0 && n % pause_every == 0 {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    let id = parse(&d.data);
                    {
                        let mut l = ledger.lock().unwrap();
                        checker.lock().unwrap().delivered(&mut l, id, q);
                        if freeze.load(Ordering::SeqCst) {
                            // The kill is imminent: no ack leaves from now on.
                            continue;
                        }
                        l.acked.insert(id);
                    }
                    if d.ack(BasicAckOptions::default()).await.is_err() {
                        break;
                    }
                }
                drop(conn);
            }),
        ));
    }
    for p in 0..PUBLISHERS {
        let pid = cycle as u32 * PUBLISHERS + p;
        let conn = connect(url).await;
        let ch = confirm_channel(&conn).await;
        let (tx, mut rx) =
            tokio::sync::mpsc::channel::<(MsgId, lapin::PublisherConfirm)>(IN_FLIGHT);
        let l = ledger.clone();
        tasks.push((
            "publisher",
            tokio::spawn(async move {
                for seq in 0u32.. {
                    let id = (pid, seq);
                    l.lock().unwrap().published.insert(id);
                    let res = ch
                        .basic_publish(
                            "".into(),
                            queue_name(queue_of(seq)).as_str().into(),
                            BasicPublishOptions::default(),
                            &body(id),
                            BasicProperties::default().with_delivery_mode(2),
                        )
                        .await;
                    let Ok(confirm) = res else { break };
                    if tx.send((id, confirm)).await.is_err() {
                        break;
                    }
                }
                drop(conn);
            }),
        ));
        let l = ledger.clone();
        tasks.push((
            "confirm collector",
            tokio::spawn(async move {
                while let Some((id, confirm)) = rx.recv().await {
                    match confirm.await {
                        Ok(Confirmation::Ack(_)) => {
                            l.lock().unwrap().confirmed.insert(id);
                        }
                        Ok(Confirmation::Nack(_)) => {
                            l.lock().unwrap().nacked.insert(id);
                        }
                        Ok(Confirmation::NotRequested) => panic!("confirms not enabled"),
                        // The connection died: unconfirmed.
                        Err(_) => {}
                    }
                }
            }),
        ));
    }
    Live { tasks }
}

/// After a restart: takes everything from every queue, acking it.
async fn drain(
    url: &str,
    ledger: &Arc<Mutex<Ledger>>,
    checker: &Arc<Mutex<Checker>>,
) -> HashSet<MsgId> {
    let conn = connect(url).await;
    let ch = conn.create_channel().await.unwrap();
    ch.basic_qos(500, BasicQosOptions::default()).await.unwrap();
    let mut present = HashSet::new();
    for q in 0..QUEUES {
        let name = queue_name(q);
        let count = message_count(&ch, &name).await as usize;
        if count == 0 {
            continue;
        }
        let mut c = consume(&ch, &name, BasicConsumeOptions::default()).await;
        let mut got = 0;
        while got < count {
            let batch = recv_n(&mut c, (count - got).min(400), STEP).await;
            got += batch.len();
            {
                let mut l = ledger.lock().unwrap();
                let mut ck = checker.lock().unwrap();
                for d in &batch {
                    let id = parse(&d.data);
                    ck.delivered(&mut l, id, q);
                    present.insert(id);
                    l.acked.insert(id);
                }
            }
            batch
                .last()
                .unwrap()
                .ack(BasicAckOptions { multiple: true })
                .await
                .unwrap();
        }
        ch.basic_cancel(c.tag(), BasicCancelOptions::default())
            .await
            .unwrap();
    }
    conn.close(200, "drained".into()).await.unwrap();
    present
}

#[test]
fn kill9_soak_loses_nothing_confirmed() {
    let s = settings();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(soak(s));
}

async fn soak(s: Settings) {
    let Some(mut broker) = Broker::start_owned("soak::kill9_soak").await else {
        return;
    };
    println!(
        "soak: {} cycles, seed {} (FERRY_SOAK_SEED), binary {}, {QUEUES} queues, {PUBLISHERS} publishers",
        s.cycles,
        s.seed,
        s.bin.display()
    );
    let started = Instant::now();
    let mut rng = Rng(s.seed);
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut total = Figures::default();
    let mut lost_ids: HashSet<MsgId> = HashSet::new();
    let mut run = 0u32;
    {
        let (conn, ch) = connect_channel(&broker.amqp_url()).await;
        declare_all(&ch).await;
        conn.close(200, "declared".into()).await.unwrap();
    }
    let mut checker = Arc::new(Mutex::new(Checker::new(run)));
    for cycle in 0..s.cycles {
        let t0 = Instant::now();
        let counts0 = {
            let l = ledger.lock().unwrap();
            (
                l.published.len(),
                l.confirmed.len(),
                l.nacked.len(),
                l.acked.len(),
            )
        };
        let freeze = Arc::new(AtomicBool::new(false));
        let live = start_live(&broker.amqp_url(), cycle, &ledger, &checker, &freeze).await;
        // A random moment: mostly well into the run, sometimes right away.
        let wait = if rng.below(10) == 0 {
            rng.below(60)
        } else {
            150 + rng.below(1350)
        };
        tokio::time::sleep(Duration::from_millis(wait)).await;
        freeze.store(true, Ordering::SeqCst);
        broker.kill9().await;
        for (name, task) in live.tasks {
            tokio::time::timeout(STEP, task)
                .await
                .unwrap_or_else(|_| panic!("cycle {cycle}: {name} did not stop after the kill"))
                .unwrap_or_else(|e| panic!("cycle {cycle}: {name} panicked: {e}"));
        }
        // Nothing changes `confirmed` or `acked` any more (acks are frozen,
        // the clients are gone): what the broker owes us now.
        let owed: HashSet<MsgId> = {
            let l = ledger.lock().unwrap();
            l.confirmed
                .iter()
                .filter(|id| !l.acked.contains(id) && !lost_ids.contains(id))
                .copied()
                .collect()
        };
        let t_restart = Instant::now();
        broker.start_again().await;
        let restart_ms = t_restart.elapsed().as_millis();
        run += 1;
        let live_fig = std::mem::replace(&mut checker, Arc::new(Mutex::new(Checker::new(run))));
        let mut fig = live_fig.lock().unwrap().fig;
        let present = drain(&broker.amqp_url(), &ledger, &checker).await;
        let drained = std::mem::replace(&mut *checker.lock().unwrap(), Checker::new(run));
        // Repeats are counted once per message across both phases.
        let mut drain_fig = drained.fig;
        drain_fig.duplicated = drained
            .repeated
            .difference(&live_fig.lock().unwrap().repeated)
            .count();
        fig += drain_fig;
        let lost: Vec<MsgId> = owed.difference(&present).copied().collect();
        lost_ids.extend(&lost);
        {
            let l = ledger.lock().unwrap();
            fig.published = l.published.len() - counts0.0;
            fig.confirmed = l.confirmed.len() - counts0.1;
            fig.nacked = l.nacked.len() - counts0.2;
            fig.acked = l.acked.len() - counts0.3;
        }
        fig.owed = owed.len();
        fig.drained = present.len();
        fig.lost = lost.len();
        println!(
            "cycle {}/{}: kill after {wait} ms | published {} confirmed {} nacked {} delivered {} \
             | owed at kill {} | restart {restart_ms} ms, drained {} | lost {} duplicated {} \
             (redelivered {}, after-ack {}, same-run {}) reordered {} | {:.1}s",
            cycle + 1,
            s.cycles,
            fig.published,
            fig.confirmed,
            fig.nacked,
            fig.delivered,
            fig.owed,
            fig.drained,
            fig.lost,
            fig.duplicated,
            fig.redelivered,
            fig.after_ack,
            fig.same_run,
            fig.reordered,
            t0.elapsed().as_secs_f64(),
        );
        if !lost.is_empty() {
            let mut sample = lost.clone();
            sample.sort();
            sample.truncate(20);
            eprintln!("cycle {}: LOST e.g. {sample:?}", cycle + 1);
        }
        total += fig;
    }
    let dup_messages = ledger
        .lock()
        .unwrap()
        .history
        .values()
        .filter(|v| v.len() > 1)
        .count();
    println!(
        "SOAK TOTAL: cycles {} in {:.1}s | published {} confirmed {} nacked {} delivered {} \
         | lost {} | duplicated {} messages (redelivered {}, after-ack {}, same-run {}) \
         | reordered {} | phantom {}",
        s.cycles,
        started.elapsed().as_secs_f64(),
        total.published,
        total.confirmed,
        total.nacked,
        total.delivered,
        total.lost,
        dup_messages,
        total.redelivered,
        total.after_ack,
        total.same_run,
        total.reordered,
        total.phantom,
    );
    assert_eq!(total.lost, 0, "confirmed, unacked messages were lost");
    assert_eq!(total.reordered, 0, "messages were delivered out of order");
    assert_eq!(
        total.same_run, 0,
        "a message was delivered twice in one run"
    );
    assert_eq!(total.phantom, 0, "messages that were never published");
    assert!(
        s.cycles == 0 || total.confirmed > 0,
        "nothing was confirmed: the soak tested nothing\n{}",
        broker.stderr()
    );
}
