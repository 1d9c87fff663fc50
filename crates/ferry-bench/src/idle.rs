//! `--idle-connections N`: what an idle connection costs the broker. Opens
//! N connections with one channel each, holds them for --duration with no
//! traffic (heartbeats off), and reads the broker's RSS before and after.

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use crate::args::Plan;
use crate::conn::{connection_close_frame, RawConn, Target};
use crate::cpu;
use crate::error::BenchError;
use crate::report::Report;
use crate::run::connect_all;

/// Runs the idle-connections scenario.
pub async fn run(target: &Target, plan: &Plan) -> Result<Report, BenchError> {
    let n = plan.args.idle_connections.unwrap_or(0);
    let pid = plan.args.broker_pid;
    let before = pid.map(cpu::sample_tree).transpose()?;
    let t0 = Instant::now();
    if plan.progress {
        eprintln!("opening {n} connections");
    }
    let mut conns = connect_all(n, |i| {
        let target = target.clone();
        async move { RawConn::open(&target, &format!("idle {i}")).await }
    })
    .await?;
    let hold = Duration::from_secs_f64(plan.duration.unwrap_or(10.0));
    let held_from = Instant::now();
    if plan.progress {
        eprintln!(
            "{n} connections open in {:.1} s; holding them for {hold:?}",
            t0.elapsed().as_secs_f64()
        );
    }
    while held_from.elapsed() < hold {
        let left = hold.saturating_sub(held_from.elapsed());
        tokio::time::sleep(left.min(Duration::from_secs(1))).await;
        if plan.progress {
            let rss = pid
                .and_then(|p| cpu::sample_tree(p).ok())
                .map_or_else(|| "-".into(), |s| s.rss_kib.to_string());
            eprintln!(
                "[{:6.1}s] {n} idle connections, broker RSS {rss} KiB",
                held_from.elapsed().as_secs_f64()
            );
        }
    }
    let after = pid.map(cpu::sample_tree).transpose()?;
    // A connection the broker closed while idle reads as EOF (or as a
    // close frame): the number would be wrong, so say so.
    let mut buf = [0u8; 64];
    let dropped = conns
        .iter()
        .filter(|c| !matches!(c.stream.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock))
        .count();
    let close = connection_close_frame();
    for c in &mut conns {
        let _ = c.stream.write_all(&close).await;
    }
    drop(conns);
    if dropped > 0 {
        return Err(BenchError::Protocol(format!(
            "the broker closed or wrote to {dropped} of {n} idle connections while they were held"
        )));
    }
    let mut r = Report {
        mode: Some(plan.mode),
        elapsed_secs: held_from.elapsed().as_secs_f64(),
        idle_connections: Some(n),
        complete: true,
        ..Report::default()
    };
    if let (Some(b), Some(a)) = (before, after) {
        r.broker_rss_before_kib = Some(b.rss_kib);
        r.broker_rss_kib = Some(a.rss_kib);
        r.broker_peak_rss_kib = Some(a.peak_rss_kib);
        r.broker_rss_per_connection_kib =
            (n > 0).then(|| (a.rss_kib as f64 - b.rss_kib as f64) / n as f64);
    }
    r.derive(0, None);
    Ok(r)
}
