//! One traffic run, start to end: probe the broker, set up the topology,
//! connect everyone, measure between "all connected" and "done", stop,
//! tear down, report.
//!
//! The measured window starts after every connection is open, so the
//! handshakes (and lapin's topology work) are not charged to the messages,
//! and ends the moment the duration elapses or the last awaited message
//! arrives: counters and CPU are read together at both ends.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use tokio::task::JoinHandle;

use crate::args::{Mode, Plan};
use crate::conn::{connection_close_frame, RawConn, Target};
use crate::consumer::{new_histogram, Consumer, ConsumerSpec};
use crate::cpu::{self, TreeSample};
use crate::error::BenchError;
use crate::producer::{Producer, ProducerSpec};
use crate::report::{self, Report};
use crate::stats::{Shared, Totals};
use crate::{idle, topology};

/// A --count or --consume-only run gives up after this long without any
/// message moving.
const STALL: Duration = Duration::from_secs(30);
/// Topology setup/teardown bound.
const TOPOLOGY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long tasks get to close their connections after the end.
const JOIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections opened at once.
const CONNECT_PARALLELISM: usize = 64;

/// Runs the plan and returns its report.
pub async fn run(plan: &Plan) -> Result<Report, BenchError> {
    let target = Target::parse(&plan.args.uri)?;
    // Our own handshake first: its errors say exactly what went wrong
    // (refused, login, vhost) before lapin gets involved.
    let mut probe = RawConn::open(&target, "probe").await?;
    let _ = tokio::io::AsyncWriteExt::write_all(&mut probe.stream, &connection_close_frame()).await;
    drop(probe);
    if let Some(pid) = plan.args.broker_pid {
        cpu::sample_tree(pid)?;
    }
    if plan.mode == Mode::IdleConnections {
        return idle::run(&target, plan).await;
    }
    let backlog = bounded("setup", topology::setup(&target, plan)).await?;
    let run = traffic(&target, plan, &backlog).await;
    // Tear down even after a failed run, but report the run's error.
    let down = bounded("teardown", topology::teardown(&target, plan)).await;
    let report = run?;
    down?;
    Ok(report)
}

async fn bounded<T>(
    what: &str,
    f: impl std::future::Future<Output = Result<T, BenchError>>,
) -> Result<T, BenchError> {
    tokio::time::timeout(TOPOLOGY_TIMEOUT, f)
        .await
        .map_err(|_| {
            BenchError::Timeout(format!("topology {what} took over {TOPOLOGY_TIMEOUT:?}"))
        })?
}

/// Different for every run, so that consumers measure only their own
/// producers' stamps.
fn new_run_id() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 40) | 1
}

/// Opens connections `CONNECT_PARALLELISM` at a time.
pub async fn connect_all<T, F, Fut>(n: usize, connect: F) -> Result<Vec<T>, BenchError>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<T, BenchError>> + Send + 'static,
{
    let mut out = Vec::with_capacity(n);
    let mut start = 0;
    while start < n {
        let end = (start + CONNECT_PARALLELISM).min(n);
        let handles: Vec<JoinHandle<Result<T, BenchError>>> =
            (start..end).map(|i| tokio::spawn(connect(i))).collect();
        for h in handles {
            let conn = h
                .await
                .map_err(|e| BenchError::Protocol(format!("connect task: {e}")))??;
            out.push(conn);
        }
        start = end;
    }
    Ok(out)
}

/// The broker tree sample, when a PID was given.
fn broker_sample(plan: &Plan) -> Result<Option<TreeSample>, BenchError> {
    plan.args.broker_pid.map(cpu::sample_tree).transpose()
}

async fn traffic(target: &Target, plan: &Plan, backlog: &[u64]) -> Result<Report, BenchError> {
    let run_id = new_run_id();
    let args = &plan.args;
    let per_producer_rate = if args.rate > 0.0 && plan.producers > 0 {
        args.rate / plan.producers as f64
    } else {
        0.0
    };
    let consumer_target = match &args.consumer_uri {
        Some(u) => Target::parse(u)?,
        None => target.clone(),
    };
    let consumers = connect_all(plan.consumers, |j| {
        let target = consumer_target.clone();
        let spec = ConsumerSpec {
            index: j,
            queue: plan.consumer_queue(j).to_string(),
            prefetch: args.prefetch,
            auto_ack: args.auto_ack,
            multi_ack_every: args.multi_ack_every,
            run_id,
        };
        async move { Consumer::connect(&target, spec).await }
    })
    .await?;
    let producers = connect_all(plan.producers, |i| {
        let target = target.clone();
        let (exchange, routing_key) = plan.route(i);
        let spec = ProducerSpec {
            index: i,
            exchange,
            routing_key,
            persistent: args.persistent,
            size: args.size,
            confirm: args.confirm,
            count: args.count,
            rate: per_producer_rate,
            run_id,
        };
        async move { Producer::connect(&target, spec).await }
    })
    .await?;

    let shared = Arc::new(Shared::default());
    let broker0 = broker_sample(plan)?;
    let client0 = cpu::self_ticks()?;
    let t0 = Instant::now();
    let consumer_tasks: Vec<JoinHandle<Option<Histogram<u64>>>> = consumers
        .into_iter()
        .map(|c| tokio::spawn(c.run(shared.clone())))
        .collect();
    let producer_tasks: Vec<JoinHandle<Option<Histogram<u64>>>> = producers
        .into_iter()
        .map(|p| tokio::spawn(p.run(shared.clone())))
        .collect();

    let complete = monitor(plan, backlog, &shared, t0).await;
    let elapsed = t0.elapsed().as_secs_f64();
    let totals = shared.totals();
    let client1 = cpu::self_ticks()?;
    let broker1 = broker_sample(plan)?;
    shared.stop();

    let deadline = tokio::time::Instant::now() + JOIN_TIMEOUT;
    let mut hist = new_histogram()?;
    for t in consumer_tasks {
        if let Ok(Ok(Some(h))) = tokio::time::timeout_at(deadline, t).await {
            // Same bounds on both sides: add cannot fail.
            let _ = hist.add(&h);
        }
    }
    let mut confirm_hist = new_histogram()?;
    for t in producer_tasks {
        if let Ok(Ok(Some(h))) = tokio::time::timeout_at(deadline, t).await {
            let _ = confirm_hist.add(&h);
        }
    }
    if let Some(e) = shared.take_fatal() {
        return Err(e);
    }

    let mut r = Report {
        mode: Some(plan.mode),
        producers: plan.producers,
        consumers: plan.consumers,
        queues: plan.queues.len(),
        size: args.size,
        persistent: args.persistent,
        confirm: args.confirm,
        prefetch: args.prefetch,
        multi_ack_every: args.multi_ack_every,
        auto_ack: args.auto_ack,
        rate_limit: args.rate,
        exchange_type: args.exchange_type,
        elapsed_secs: elapsed,
        sent: totals.sent,
        confirmed: totals.confirmed,
        nacked: totals.nacked,
        confirm_frames: totals.confirm_frames,
        received: totals.received,
        complete,
        ..Report::default()
    };
    r.set_latency(report::latency(&hist));
    r.set_confirm_latency(report::latency(&confirm_hist));
    let broker_ticks = match (broker0, broker1) {
        (Some(a), Some(b)) => {
            r.broker_peak_rss_kib = Some(b.peak_rss_kib);
            r.broker_rss_kib = Some(b.rss_kib);
            r.broker_rss_before_kib = Some(a.rss_kib);
            Some(b.cpu_ticks.saturating_sub(a.cpu_ticks))
        }
        _ => None,
    };
    r.derive(client1.saturating_sub(client0), broker_ticks);
    Ok(r)
}

/// Waits for the end of the run, printing progress. Returns whether the
/// run completed (always, for a duration run).
async fn monitor(plan: &Plan, backlog: &[u64], shared: &Shared, t0: Instant) -> bool {
    let args = &plan.args;
    let count_mode = args.count.is_some() && plan.mode != Mode::ConsumeOnly;
    // --count overrides --duration; a drain may be bounded by an explicit one.
    let deadline = if count_mode {
        None
    } else {
        plan.duration.map(|d| t0 + Duration::from_secs_f64(d))
    };
    let expected = match plan.mode {
        Mode::ConsumeOnly => backlog
            .iter()
            .enumerate()
            .filter(|(q, _)| plan.is_consumed(*q))
            .map(|(_, n)| n)
            .sum(),
        _ => args.count.map_or(0, |c| plan.expected_received(c)),
    };
    let mut prev = Totals::default();
    let mut last_move = t0;
    let mut moved_at = Totals::default();
    let mut next_tick = t0 + Duration::from_secs(1);
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(5)) => {}
            () = shared.stopped() => return false,
        }
        let now = Instant::now();
        let t = shared.totals();
        if t.moved_since(&moved_at) {
            moved_at = t;
            last_move = now;
        }
        if deadline.is_some_and(|d| now >= d) {
            return true;
        }
        if count_mode {
            let producers_done = shared
                .producers_done
                .load(std::sync::atomic::Ordering::Relaxed)
                >= plan.producers as u64;
            if producers_done && (plan.consumers == 0 || t.received >= expected) {
                return true;
            }
        }
        if plan.mode == Mode::ConsumeOnly && t.received >= expected {
            return true;
        }
        if (count_mode || plan.mode == Mode::ConsumeOnly) && now - last_move > STALL {
            eprintln!(
                "ferry bench: nothing moved for {STALL:?}; giving up (received {} of {expected})",
                t.received
            );
            return false;
        }
        if plan.progress && now >= next_tick {
            let secs = (now - t0).as_secs_f64();
            eprintln!(
                "[{secs:6.1}s] sent {:>8}/s  confirmed {:>8}/s  received {:>8}/s  (totals: sent {}, received {})",
                t.sent - prev.sent,
                t.confirmed - prev.confirmed,
                t.received - prev.received,
                t.sent,
                t.received,
            );
            prev = t;
            next_tick += Duration::from_secs(1);
        }
    }
}
