//! `write`: CPU per committed entry (all three replicas, same process) and
//! throughput, with a bounded number of `client_write`s in flight per group.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferry_raft::Batch;

use crate::cluster::{Cluster, FlushSpec, TimerArgs, Timers};
use crate::procstat::{cpu_time, loadavg, pct_of_core, quantile};
use crate::report::Row;
use crate::SpikeError;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Raft groups (each has 3 replicas).
    #[arg(long, default_value_t = 1)]
    groups: u64,
    /// Concurrent `client_write` calls per group.
    #[arg(long, default_value_t = 64)]
    inflight: usize,
    /// Bytes per command.
    #[arg(long, default_value_t = 100)]
    payload: usize,
    /// Commands per Raft entry (one `Batch` of this many `payload`-byte
    /// commands).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Measured window, seconds.
    #[arg(long, default_value_t = 10)]
    duration_s: u64,
    /// Writes before the window, seconds.
    #[arg(long, default_value_t = 1)]
    warmup_s: u64,
    /// Log flush: immediate, task:<µs> (tokio task) or round:<µs> (node round).
    #[arg(long, default_value = "immediate", value_parser = FlushSpec::parse)]
    flush: FlushSpec,
    #[command(flatten)]
    timers: TimerArgs,
}

/// What one writer task saw inside the window.
#[derive(Default)]
struct Tally {
    ok: u64,
    errors: u64,
    latencies: Vec<Duration>,
}

pub async fn run(args: Args) -> Result<Row, SpikeError> {
    let timers = Timers::from_args(&args.timers)?;
    let load = loadavg();
    let cluster = Cluster::start(args.groups, timers, args.flush).await?;
    cluster.initialize().await?;
    cluster.wait_leaders(Duration::from_secs(600)).await?;
    let command = Bytes::from(vec![0xA5u8; args.payload]);
    let batch = Batch::new(vec![command; args.batch.max(1)]);

    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for group in &cluster.groups {
        let (_, leader) = cluster
            .live_leader(group)
            .ok_or_else(|| SpikeError::Timeout(format!("group {} has no leader", group.id)))?;
        for _ in 0..args.inflight.max(1) {
            let raft = leader.clone();
            let batch = batch.clone();
            let (measuring, stop) = (measuring.clone(), stop.clone());
            writers.push(tokio::spawn(async move {
                let mut tally = Tally::default();
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let result = raft.client_write(batch.clone()).await;
                    let counted = measuring.load(Ordering::Relaxed);
                    match result {
                        Ok(_) if counted => {
                            tally.ok += 1;
                            tally.latencies.push(started.elapsed());
                        }
                        Ok(_) => {}
                        Err(_) => {
                            tally.errors += u64::from(counted);
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
                tally
            }));
        }
    }
    tokio::time::sleep(Duration::from_secs(args.warmup_s)).await;

    let rounds0: Vec<_> = cluster.rounds.iter().map(|r| r.stats()).collect();
    let rpc0 = cluster.router.stats();
    let cpu0 = cpu_time()?;
    let wall0 = Instant::now();
    measuring.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(args.duration_s)).await;
    measuring.store(false, Ordering::SeqCst);
    let cpu = cpu_time()?.saturating_sub(cpu0);
    let wall = wall0.elapsed();
    let rpc1 = cluster.router.stats();
    let rounds1: Vec<_> = cluster.rounds.iter().map(|r| r.stats()).collect();
    stop.store(true, Ordering::SeqCst);

    let mut total = Tally::default();
    for writer in writers {
        if let Ok(t) = writer.await {
            total.ok += t.ok;
            total.errors += t.errors;
            total.latencies.extend(t.latencies);
        }
    }
    total.latencies.sort_unstable();
    let secs = wall.as_secs_f64();
    let entries = total.ok.max(1) as f64;
    let per_entry_us = cpu.as_secs_f64() * 1e6 / entries;
    let commands_per_s = total.ok as f64 * args.batch.max(1) as f64 / secs;
    let (rounds, completed) = rounds0.iter().zip(&rounds1).fold((0, 0), |(r, c), (a, b)| {
        (r + b.rounds - a.rounds, c + b.completed - a.completed)
    });

    let mut row = Row::new();
    row.add("measurement", "write")
        .add("groups", args.groups)
        .add("in flight / group", args.inflight)
        .add("cmds / entry", args.batch)
        .add("entry bytes", batch.bytes())
        .add("flush", args.flush.label())
        .add("hb / election ms", timers.label())
        .num("window s", secs, 1)
        .add("entries committed", total.ok)
        .num("entries/s", total.ok as f64 / secs, 0)
        .num("cmds/s", commands_per_s, 0)
        .num(
            "MB/s payload",
            commands_per_s * args.payload as f64 / 1e6,
            1,
        )
        .num("CPU % of 1 core", pct_of_core(cpu, wall), 1)
        .num("CPU µs / entry (3 replicas)", per_entry_us, 1)
        .num("CPU µs / cmd", per_entry_us / args.batch.max(1) as f64, 2)
        .ms("latency p50 ms", quantile(&total.latencies, 0.5))
        .ms("latency p99 ms", quantile(&total.latencies, 0.99))
        .num(
            "AppendEntries / entry",
            (rpc1.append_entries - rpc0.append_entries) as f64 / entries,
            2,
        )
        .add("write errors", total.errors);
    if rounds > 0 {
        row.num("flushes / round", completed as f64 / rounds as f64, 1);
    }
    row.add("loadavg before", load);
    cluster.stop_rounds();
    Ok(row)
}
