//! `idle`: G groups × 3 nodes with no writes; process CPU over a window and
//! RSS per Raft instance.

use std::time::{Duration, Instant};

use crate::cluster::{Cluster, FlushSpec, TimerArgs, Timers};
use crate::procstat::{cpu_time, loadavg, pct_of_core, rss_bytes};
use crate::report::Row;
use crate::SpikeError;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Raft groups (each has 3 replicas).
    #[arg(long, default_value_t = 1000)]
    groups: u64,
    #[command(flatten)]
    timers: TimerArgs,
    /// Measurement window, seconds.
    #[arg(long, default_value_t = 20)]
    window_s: u64,
    /// Pause between "every group has a leader" and the window, seconds.
    #[arg(long, default_value_t = 3)]
    settle_s: u64,
    /// Also print RSS per replica to stderr every this many seconds (0: off).
    #[arg(long, default_value_t = 0)]
    rss_every_s: u64,
}

pub async fn run(args: Args) -> Result<Row, SpikeError> {
    let timers = Timers::from_args(&args.timers)?;
    let load = loadavg();
    let rss0 = rss_bytes()?;
    let setup = Instant::now();
    let cluster = Cluster::start(args.groups, timers, FlushSpec::Immediate).await?;
    let created = setup.elapsed();
    cluster.initialize().await?;
    cluster.wait_leaders(Duration::from_secs(600)).await?;
    let ready = setup.elapsed();
    eprintln!(
        "idle {}: {} instances created in {:.1} s, all leaders known after {:.1} s",
        timers.label(),
        cluster.instances(),
        created.as_secs_f64(),
        ready.as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(args.settle_s)).await;

    let rss1 = rss_bytes()?;
    let terms0 = cluster.term_sum();
    let rpc0 = cluster.router.stats();
    let cpu0 = cpu_time()?;
    let wall0 = Instant::now();
    let window = Duration::from_secs(args.window_s);
    if args.rss_every_s == 0 {
        tokio::time::sleep(window).await;
    } else {
        let every = Duration::from_secs(args.rss_every_s);
        while wall0.elapsed() + every <= window {
            tokio::time::sleep(every).await;
            let kib =
                rss_bytes()?.saturating_sub(rss0) as f64 / cluster.instances() as f64 / 1024.0;
            eprintln!(
                "  t={:>4.0} s  RSS {kib:.1} KiB per replica",
                wall0.elapsed().as_secs_f64()
            );
        }
        tokio::time::sleep(window.saturating_sub(wall0.elapsed())).await;
    }
    let cpu = cpu_time()?.saturating_sub(cpu0);
    let wall = wall0.elapsed();
    let rpc1 = cluster.router.stats();
    let terms1 = cluster.term_sum();
    let rss2 = rss_bytes()?;

    let instances = cluster.instances() as f64;
    let total_pct = pct_of_core(cpu, wall);
    let secs = wall.as_secs_f64();
    let per_instance_kib = |rss: u64| rss.saturating_sub(rss0) as f64 / instances / 1024.0;
    let leaders = cluster.leaders_per_node();
    let mut row = Row::new();
    row.add("measurement", "idle")
        .add("groups", args.groups)
        .add("instances", cluster.instances())
        .add("hb / election ms", timers.label())
        .add("quiescent", timers.quiescent)
        .add(
            "leaders n1/n2/n3",
            format!("{}/{}/{}", leaders[0], leaders[1], leaders[2]),
        )
        .num("ready s", ready.as_secs_f64(), 1)
        .num("window s", secs, 1)
        .num("CPU % of 1 core (process)", total_pct, 2)
        .num("CPU % per node", total_pct / 3.0, 2)
        .num("RSS KiB per replica", per_instance_kib(rss1), 1)
        .num("RSS KiB per replica (end)", per_instance_kib(rss2), 1)
        .num(
            "AppendEntries/s",
            (rpc1.append_entries - rpc0.append_entries) as f64 / secs,
            0,
        )
        .add("votes in window", rpc1.votes - rpc0.votes)
        .add("term bumps in window", terms1.saturating_sub(terms0))
        .add("loadavg before", load);
    cluster.stop_rounds();
    Ok(row)
}
