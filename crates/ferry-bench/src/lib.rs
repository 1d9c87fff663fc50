//! `ferry-bench`: `ferry bench`, a PerfTest-like load generator that works
//! against any AMQP 0-9-1 broker (Ferry, RabbitMQ, ...).
//!
//! # What it owns
//!
//! - The `ferry bench` command line ([`BenchArgs`]) and its run:
//!   producers, consumers, queues, confirms, prefetch, multi-ack, rate,
//!   duration or count, exchange fan-out, publish-only / consume-only
//!   backlogs, idle connections.
//! - A **lean hand-framed client**: each producer and consumer is one raw
//!   tokio TCP connection with channel 1. Producers copy a pre-encoded
//!   basic.publish + header + body and patch a stamp (run id, sequence,
//!   send time) into the body, many messages per write, within the confirm
//!   window; consumers use `check_frame` then a borrowing deliver parser
//!   and ack with `multiple`. Its CPU per message must stay well under the
//!   broker's, or the bench measures itself.
//! - **Accounting**: publish→deliver latency in an HDR histogram (one
//!   monotonic clock: producers and consumers are in this process), the
//!   client's own CPU per message, and with `--broker-pid` the broker's CPU
//!   per message (user+system of the PID and all its descendants, from
//!   /proc) and its peak RSS.
//! - Topology (declare/purge/bind/delete of `PREFIX.N` queues and the
//!   `PREFIX.x` exchange) through lapin: not a hot path.
//!
//! # What it must not touch
//!
//! The broker's crates (ferry-server, ferry-broker, ferry-log): this is a
//! client, and must stay broker-agnostic. It uses only ferry-amqp's codec.
//! No state on disk; it never deletes queues it did not name.
//!
//! # Runs
//!
//! Queues `PREFIX.0` .. `PREFIX.N-1` (durable unless `--no-durable-queue`,
//! with the `--queue-arg`s) are purged before a run and deleted after it.
//! `--publish-only` keeps them (the backlog); `--consume-only` drains the
//! ready messages it finds at start, then deletes them (give it the same
//! `--queue-prefix`, `--queues` and `--queue-arg`s). Producer i publishes
//! to queue i % queues through the default exchange, or to `PREFIX.x` (to
//! which every queue is bound) with `--exchange-type`; consumer j consumes
//! queue j % queues. `--duration` ends the run at the deadline; `--count N`
//! makes each producer publish N and wait for their confirms, and the run
//! ends once every expected delivery has arrived. `--consume-only` ends
//! when the backlog is drained (bounded by `--duration` only if given;
//! `--count` does not apply). Connections turn heartbeats off.
//!
//! # Output
//!
//! A progress line per second on stderr (sent/confirmed/received per
//! second). Then a summary on stdout, or with `--json` exactly one JSON
//! object on one line, with these fields (`null` when not measured):
//!
//! | field | meaning |
//! | --- | --- |
//! | `mode` | `normal`, `publish_only`, `consume_only`, `idle_connections` |
//! | `producers`, `consumers`, `queues`, `size`, `persistent`, `confirm`, `prefetch`, `multi_ack_every`, `auto_ack`, `rate_limit`, `exchange_type` | the run's settings (`exchange_type` null = default exchange) |
//! | `elapsed_secs` | measured window: from all connections open to the end of the duration, or to the last awaited message with `--count` |
//! | `sent`, `confirmed`, `nacked`, `received` | message totals in the window (a fan-out delivery counts once per queue) |
//! | `confirm_frames`, `confirm_frames_per_msg` | basic.ack / basic.nack frames the producers received, and that count / (confirmed + nacked): 1.0 = one frame per message, lower = coalesced with `multiple` |
//! | `sent_msgs_per_sec`, `confirmed_msgs_per_sec`, `received_msgs_per_sec` | totals / elapsed |
//! | `sent_mb_per_sec`, `received_mb_per_sec` | body bytes per second, in 10^6 bytes |
//! | `confirm_latency_samples`, `confirm_latency_p50_us`, `confirm_latency_p99_us`, `confirm_latency_max_us` | publish→confirm latency, µs (per batch written: its send time to the confirm that covers it; null without `--confirm`) |
//! | `latency_samples` | deliveries carrying a stamp of this run (0 with `--consume-only` or bodies < 24 B) |
//! | `latency_p50_us`, `latency_p99_us`, `latency_p999_us`, `latency_max_us` | publish→deliver latency, µs |
//! | `cpu_basis`, `cpu_basis_msgs` | what CPU per message divides by: `received` if there are consumers, else `confirmed` with confirms, else `sent` |
//! | `client_cpu_secs`, `client_cpu_us_per_msg` | this process's user+system CPU in the window |
//! | `broker_cpu_secs`, `broker_cpu_us_per_msg` | the `--broker-pid` tree's user+system CPU in the window |
//! | `broker_peak_rss_kib` | largest VmHWM of a process in the broker's tree at the end |
//! | `broker_rss_kib`, `broker_rss_before_kib` | sum of VmRSS over the tree at the end / before the run |
//! | `idle_connections`, `broker_rss_per_connection_kib` | `--idle-connections` runs: (rss − rss before) / N |
//! | `complete` | false if a `--count` or drain run gave up after 30 s without progress |
//!
//! CPU times come from /proc in 10 ms ticks: give runs a second or more
//! for the per-message CPU figures to mean something.
//!
//! Exit codes: 0 done; 1 error (unreachable, login refused, the broker
//! closed a connection or channel: the message carries the reply code and
//! text); 2 bad flags; 3 incomplete (`complete: false`, report printed).

mod args;
mod confirms;
mod conn;
mod consumer;
mod cpu;
mod error;
mod frames;
mod idle;
mod producer;
mod report;
mod run;
mod stats;
mod topology;

use std::io::Write;
use std::process::ExitCode;

pub use args::{BenchArgs, ExchangeType, Mode, Plan};
pub use error::BenchError;
pub use report::Report;

/// Runs `ferry bench` with parsed flags: builds its own tokio runtime
/// (one thread unless `--threads`), prints the report, returns the exit
/// code.
#[must_use]
pub fn run_cli(args: BenchArgs) -> ExitCode {
    match run_plan(args) {
        Ok(report) => {
            let mut out = std::io::stdout().lock();
            let printed = if report.json {
                serde_json::to_string(&report.report)
                    .map_err(std::io::Error::other)
                    .and_then(|s| writeln!(out, "{s}"))
            } else {
                write!(out, "{}", report.report.text())
            };
            let _ = out.flush();
            if let Err(e) = printed {
                eprintln!("ferry bench: cannot print the report: {e}");
                return ExitCode::FAILURE;
            }
            if report.report.complete {
                ExitCode::SUCCESS
            } else {
                eprintln!("ferry bench: incomplete run (see the counts above)");
                ExitCode::from(3)
            }
        }
        Err(e) => {
            eprintln!("ferry bench: {e}");
            e.exit_code()
        }
    }
}

struct Finished {
    report: Report,
    json: bool,
}

fn run_plan(args: BenchArgs) -> Result<Finished, BenchError> {
    let plan = Plan::new(args)?;
    let mut builder = if plan.args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(usize::from(plan.args.threads));
        b
    };
    let rt = builder
        .enable_all()
        .build()
        .map_err(|e| BenchError::io("start the runtime", e))?;
    let report = rt.block_on(run::run(&plan))?;
    Ok(Finished {
        report,
        json: plan.args.json,
    })
}
