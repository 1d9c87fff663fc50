//! M0 spike, kept as a measurement tool: is one openraft 0.9.25 instance per
//! queue viable on a 2-core box?
//!
//! Runs 3 nodes × G groups (one `Raft` of [`ferry_raft::TypeConfig`] per group
//! per node) in one process over an in-process router (`network`) and
//! in-memory log stores and counting state machines (`mem`), on a tokio
//! multi-thread runtime with 2 workers, and measures:
//!
//! - `idle`: process CPU and RSS per Raft instance with no writes;
//! - `write`: CPU per committed entry and throughput;
//! - `failover`: leader node down → first new committed write, per group.
//!
//! Each measurement prints a markdown table row (or a JSON line with
//! `--json`); progress goes to stderr. Results: `docs/cluster.md`.
//!
//! ```text
//! cargo run --release -p ferry-raft --example raft_spike -- idle --heartbeat-ms 500
//! cargo run --release -p ferry-raft --example raft_spike -- write --groups 1000 --inflight 1
//! cargo run --release -p ferry-raft --example raft_spike -- failover --heartbeat-ms 50
//! ```

mod cluster;
mod failover;
mod idle;
mod mem;
mod network;
mod procstat;
mod report;
mod write;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ferry_raft::NodeId;
use network::NetError;
use openraft::error::{ClientWriteError, Fatal, InitializeError, RaftError};
use openraft::BasicNode;

/// Errors of the spike program.
#[derive(Debug, thiserror::Error)]
pub enum SpikeError {
    /// An openraft error (config refused, Raft stopped, initialize or a
    /// warm-up write failed); boxed, openraft's errors are large.
    #[error("openraft: {0}")]
    Raft(Box<dyn std::error::Error + Send + Sync>),
    /// Router misuse.
    #[error("router: {0}")]
    Net(#[from] NetError),
    /// Reading /proc or starting a thread.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// Something did not happen in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// A command-line value that does not parse.
    #[error("bad argument: {0}")]
    Arg(String),
}

macro_rules! from_openraft {
    ($($t:ty),* $(,)?) => {$(
        impl From<$t> for SpikeError {
            fn from(e: $t) -> Self {
                Self::Raft(Box::new(e))
            }
        }
    )*};
}

from_openraft!(
    openraft::ConfigError,
    Fatal<NodeId>,
    RaftError<NodeId, InitializeError<NodeId, BasicNode>>,
    RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>,
);

#[derive(Parser)]
#[command(about = "openraft 0.9.25 one-instance-per-queue spike (M0)")]
struct Cli {
    /// Print one JSON object per measurement instead of markdown.
    #[arg(long, global = true)]
    json: bool,
    /// Tokio worker threads.
    #[arg(long, global = true, default_value_t = 2)]
    workers: usize,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// CPU and RSS of G idle groups × 3 nodes.
    Idle(idle::Args),
    /// CPU per committed entry and throughput.
    Write(write::Args),
    /// Leader node down → first committed write on a new leader.
    Failover(failover::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.workers.max(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("raft_spike: cannot build the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.cmd {
            Cmd::Idle(args) => idle::run(args).await,
            Cmd::Write(args) => write::run(args).await,
            Cmd::Failover(args) => failover::run(args).await,
        }
    });
    // Thousands of Raft tasks may still be running: do not wait for them.
    runtime.shutdown_background();
    match result {
        Ok(row) => {
            report::print(&row, cli.json);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("raft_spike: {e}");
            ExitCode::FAILURE
        }
    }
}
