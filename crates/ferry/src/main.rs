//! `ferry`: the broker binary. Wiring only: settings, logging, the broker
//! core, the AMQP listener, signals.

mod settings;

use clap::{Parser, Subcommand};
use ferry_core::{Broker, BrokerConfig};
use ferry_log::{LogConfig, StdIo};
use settings::Settings;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Debug, Parser)]
#[command(
    name = "ferry",
    version,
    about = "Ferry: a durable AMQP 0-9-1 message broker"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the broker (the default).
    Server(ServerArgs),
    /// Load generator for any AMQP 0-9-1 broker (see the ferry-bench crate).
    Bench(ferry_bench::BenchArgs),
}

#[derive(Debug, Clone, Default, clap::Args)]
struct ServerArgs {
    /// TOML config file.
    #[arg(long, env = "FERRY_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory [default: ./ferry-data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// AMQP listen address [default: 0.0.0.0:5672].
    #[arg(long)]
    amqp_listen: Option<SocketAddr>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Server(a)) => a,
        // Before logging is set up: the bench has its own output.
        Some(Command::Bench(b)) => return ferry_bench::run_cli(b),
        None => cli.server,
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let mut settings = Settings::default();
    let loaded = args
        .config
        .as_ref()
        .map_or(Ok(()), |p| settings.apply_file(p))
        .and_then(|()| settings.apply_env(|k| std::env::var(k).ok()));
    if let Err(e) = loaded {
        eprintln!("ferry: {e}");
        return ExitCode::from(2);
    }
    if let Some(d) = args.data_dir {
        settings.data_dir = d;
    }
    if let Some(a) = args.amqp_listen {
        settings.amqp_listen = a;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ferry: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(serve(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferry: {e}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error("cannot open data directory: {0}")]
    Core(#[from] ferry_core::CoreError),
    #[error("cannot start listener: {0}")]
    Server(#[from] ferry_server::ServerError),
    #[error("signal handling: {0}")]
    Signal(#[from] std::io::Error),
}

async fn serve(s: Settings) -> Result<(), RunError> {
    let mut bc = BrokerConfig::new(s.data_dir.clone());
    bc.log = LogConfig {
        segment_bytes: s.segment_bytes,
        ..LogConfig::default()
    };
    bc.cache_bytes = s.cache_bytes;
    let data_dir = s.data_dir.clone();
    let broker = tokio::task::spawn_blocking(move || Broker::open(bc, Arc::new(StdIo)))
        .await
        .map_err(|e| RunError::Signal(std::io::Error::other(e)))??;
    let cfg = ferry_server::ServerConfig {
        amqp_listen: s.amqp_listen,
        frame_max: s.frame_max,
        heartbeat: s.heartbeat,
        channel_max: s.channel_max,
        max_message_size: s.max_message_size,
        max_connections: s.max_connections,
        consumer_timeout: (s.consumer_timeout_ms > 0)
            .then(|| std::time::Duration::from_millis(s.consumer_timeout_ms)),
        memory_limit_bytes: s.memory_limit,
        disk_free_limit_bytes: s.disk_free_limit,
        ..ferry_server::ServerConfig::default()
    };
    let server = ferry_server::Server::start(broker, cfg).await?;
    let addr = server.local_addr();
    tracing::info!(amqp = %addr, data_dir = %data_dir.display(), "ferry started");
    // Handlers first: whoever reads the READY line may send SIGTERM at once,
    // and before registration its default action kills the process.
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    // A machine-readable line for scripts and tests (logs go to stderr).
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "FERRY_READY amqp={addr}");
    let _ = out.flush();
    drop(out);
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
        _ = int.recv() => tracing::info!("SIGINT received, shutting down"),
    }
    server.shutdown().await;
    tracing::info!("ferry stopped");
    Ok(())
}
