//! `ferry`: the broker binary. Wiring only: settings (flags, env, TOML),
//! logging, the broker core, the AMQP and AMQPS listeners, the management
//! HTTP and metrics listeners, signals, and the `ferry ctl` subcommand
//! (`ferry-ctl`). Must not hold broker logic: every rule lives in a crate.

mod cluster;
mod join;
mod rebalance;
mod replicas;
mod settings;
mod trim;

use clap::{Parser, Subcommand};
use ferry_broker::{Broker, BrokerConfig};
use ferry_log::{LogConfig, StdIo};
use settings::{LogFormat, Settings};
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
    Server(Box<ServerArgs>),
    /// Load generator for any AMQP 0-9-1 broker (see the ferry-bench crate).
    Bench(ferry_bench::BenchArgs),
    /// Manage a node through its management HTTP API (see the ferry-ctl crate).
    Ctl(ferry_ctl::CtlArgs),
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
    /// Management HTTP API address, or "off" [default: 0.0.0.0:15672].
    #[arg(long)]
    http_listen: Option<String>,
    /// Prometheus metrics address, or "off" [default: 0.0.0.0:15692].
    #[arg(long)]
    metrics_listen: Option<String>,
    /// Log format on stderr [default: text].
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    /// Log filter, e.g. debug or info,ferry_server=debug [default: info]; FERRY_LOG wins.
    #[arg(long)]
    log_level: Option<String>,
    /// AMQPS listen address [default: 0.0.0.0:5671; on only with --tls-cert and --tls-key].
    #[arg(long)]
    amqps_listen: Option<SocketAddr>,
    /// Server certificate chain (PEM) for AMQPS.
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// Server private key (PEM) for AMQPS.
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// CA bundle (PEM) client certificates are verified against.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// Require a client certificate signed by --tls-ca.
    #[arg(long)]
    tls_verify_peer: bool,
    /// RabbitMQ definitions JSON whose users, vhosts and permissions are imported at boot.
    #[arg(long)]
    load_definitions: Option<PathBuf>,
    /// This node's name, unique in its cluster [default: ferry@HOSTNAME].
    #[arg(long)]
    node_name: Option<String>,
    /// Cluster port, or "off" for a single node [default: off].
    #[arg(long)]
    cluster_listen: Option<String>,
    /// The address the other nodes dial [default: --cluster-listen].
    #[arg(long)]
    cluster_advertise: Option<String>,
    /// Seed nodes' cluster addresses, comma-separated (the same list on every seed).
    #[arg(long)]
    cluster_seeds: Option<String>,
    /// File holding the cluster's shared secret.
    #[arg(long)]
    cluster_secret_file: Option<PathBuf>,
    /// Node-to-node links over mutual TLS (needs --tls-cert, --tls-key, --tls-ca).
    #[arg(long)]
    cluster_tls: bool,
    /// Replicas of a new durable queue in a cluster [default: 3].
    #[arg(long)]
    default_replicas: Option<usize>,
    /// Bytes a replicated queue logs between snapshots [default: 64 MiB].
    #[arg(long)]
    queue_snapshot_bytes: Option<u64>,
    /// Metadata log entries between snapshots [default: 4096].
    #[arg(long)]
    meta_snapshot_interval: Option<u64>,
    /// A replicated queue's Raft instance unused this long (ms) hibernates
    /// [default: 10000; 0: never].
    #[arg(long)]
    queue_hibernate_after_ms: Option<u64>,
    /// Tokio worker threads [default: one per core].
    #[arg(long)]
    worker_threads: Option<usize>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Server(a)) => *a,
        // Before logging is set up: the bench has its own output.
        Some(Command::Bench(b)) => return ferry_bench::run_cli(b),
        Some(Command::Ctl(c)) => return ferry_ctl::run_cli(c),
        None => cli.server,
    };
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
    if let Some(a) = args.http_listen {
        settings.http_listen = a;
    }
    if let Some(a) = args.metrics_listen {
        settings.metrics_listen = a;
    }
    if let Some(f) = args.log_format {
        settings.log_format = f;
    }
    if let Some(l) = args.log_level {
        settings.log_level = l;
    }
    if let Some(a) = args.amqps_listen {
        settings.amqps_listen = a;
    }
    if args.tls_cert.is_some() {
        settings.tls_cert = args.tls_cert;
    }
    if args.tls_key.is_some() {
        settings.tls_key = args.tls_key;
    }
    if args.tls_ca.is_some() {
        settings.tls_ca = args.tls_ca;
    }
    if args.tls_verify_peer {
        settings.tls_verify_peer = true;
    }
    if args.load_definitions.is_some() {
        settings.load_definitions = args.load_definitions;
    }
    if let Some(v) = args.node_name {
        settings.node_name = v;
    }
    if let Some(v) = args.cluster_listen {
        settings.cluster_listen = v;
    }
    if let Some(v) = args.cluster_advertise {
        settings.cluster_advertise = v;
    }
    if let Some(v) = args.cluster_seeds {
        settings.cluster_seeds = settings::split_list(&v);
    }
    if args.cluster_secret_file.is_some() {
        settings.cluster_secret_file = args.cluster_secret_file;
    }
    if args.cluster_tls {
        settings.cluster_tls = true;
    }
    if let Some(v) = args.worker_threads {
        settings.worker_threads = v;
    }
    if let Some(v) = args.default_replicas {
        settings.default_replicas = v;
    }
    if let Some(v) = args.queue_snapshot_bytes {
        settings.queue_snapshot_bytes = v;
    }
    if let Some(v) = args.meta_snapshot_interval {
        settings.meta_snapshot_interval = v;
    }
    if let Some(v) = args.queue_hibernate_after_ms {
        settings.queue_hibernate_after_ms = v;
    }
    if let Err(e) = init_logging(&settings) {
        eprintln!("ferry: {e}");
        return ExitCode::from(2);
    }
    // Before anything opens the data directory: a join asked for at the
    // last run resets it here.
    if let Err(e) = join::apply_pending(&settings.data_dir) {
        eprintln!("ferry: {e}");
        return ExitCode::FAILURE;
    }
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if settings.worker_threads > 0 {
        rt.worker_threads(settings.worker_threads);
    }
    let rt = match rt.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ferry: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let data_dir = settings.data_dir.clone();
    let ran = rt.block_on(serve(settings));
    rt.shutdown_timeout(std::time::Duration::from_secs(5));
    match ran {
        Ok(None) => ExitCode::SUCCESS,
        // Asked to join another cluster: reset and start over in place.
        Ok(Some(addr)) => {
            if let Err(e) = join::mark(&data_dir, &addr) {
                eprintln!("ferry: cannot record the join of {addr}: {e}");
                return ExitCode::FAILURE;
            }
            tracing::info!(cluster = %addr, "starting over to join the cluster");
            let e = join::start_over();
            eprintln!("ferry: cannot start again ({e}): start the node again to join {addr}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("ferry: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr: `log_level` (or `FERRY_LOG`, EnvFilter syntax, which
/// wins) in the `log_format`. Colours only on a terminal.
fn init_logging(s: &Settings) -> Result<(), String> {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    // openraft narrates every election and vote at INFO: its warnings and
    // errors are what an operator needs, unless the filter names it — but
    // not its replication tasks', which log each failed send to a peer that
    // is down (every 100 ms, per group: a flood for one node away, which
    // the failure detector reports once; a storage failure still stops the
    // Raft core, which logs it).
    let quiet_raft = |f: &str| {
        if f.contains("openraft") {
            f.to_string()
        } else {
            format!(
                "{f},openraft=warn,openraft::replication=off,\
                 openraft::engine::handler::replication_handler=error"
            )
        }
    };
    let filter = match std::env::var("FERRY_LOG") {
        Ok(v) if !v.trim().is_empty() => EnvFilter::try_new(quiet_raft(&v))
            .map_err(|e| format!("invalid FERRY_LOG {v:?}: {e}"))?,
        _ => EnvFilter::try_new(quiet_raft(&s.log_level))
            .map_err(|e| format!("invalid log_level {:?}: {e}", s.log_level))?,
    };
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match s.log_format {
        LogFormat::Text => fmt.with_ansi(std::io::stderr().is_terminal()).init(),
        // Fields at the top level ({"timestamp","level","message","amqp",...,"target"}).
        LogFormat::Json => fmt.json().flatten_event(true).init(),
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error("cannot open data directory: {0}")]
    Core(#[from] ferry_queue::CoreError),
    #[error("cannot start listener: {0}")]
    Server(#[from] ferry_server::ServerError),
    #[error("signal handling: {0}")]
    Signal(#[from] std::io::Error),
    #[error("{0}")]
    Tls(#[from] ferry_server::tls::TlsError),
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Settings(#[from] settings::SettingsError),
    #[error("{0}")]
    Http(#[from] ferry_http::HttpError),
}

/// The AMQPS TLS configuration, when `tls_cert` and `tls_key` are set.
fn tls_config(s: &Settings) -> Result<Option<Arc<ferry_server::tls::TlsConfig>>, RunError> {
    match (&s.tls_cert, &s.tls_key) {
        (Some(cert), Some(key)) => Ok(Some(ferry_server::tls::server_config(
            cert,
            key,
            s.tls_ca.as_deref(),
            s.tls_verify_peer,
        )?)),
        (None, None) => Ok(None),
        _ => Err(RunError::Config(
            "tls_cert and tls_key must be set together".into(),
        )),
    }
}

/// RabbitMQ's load_definitions: the whole definitions file (users, vhosts,
/// permissions, exchanges, queues and streams, bindings), imported at
/// every boot by the management API's own import.
fn load_definitions(broker: &Broker, path: &std::path::Path) -> Result<(), RunError> {
    let bad = |e: String| RunError::Config(format!("load_definitions {}: {e}", path.display()));
    let text = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    ferry_http::import_document(broker, &text, None).map_err(|e| bad(e.to_string()))
}

/// Runs the broker until a signal, or until its node leaves its cluster;
/// `Some(addr)`: it is to join the cluster at `addr` (see `join`).
async fn serve(s: Settings) -> Result<Option<String>, RunError> {
    let mut bc = BrokerConfig::new(s.data_dir.clone());
    bc.log = LogConfig {
        segment_bytes: s.segment_bytes,
        ..LogConfig::default()
    };
    bc.cache_bytes = s.cache_bytes;
    bc.default_user = s.default_user.clone();
    bc.default_pass = s.default_pass.clone();
    bc.loopback_users = s.loopback_users.clone();
    bc.quorum_delivery_limit = s.quorum_delivery_limit();
    // Bad certificates or cluster settings stop the broker before it opens anything.
    let tls = tls_config(&s)?;
    let cluster_cfg = cluster::node_config(&s).map_err(RunError::Config)?;
    let data_dir = s.data_dir.clone();
    // Records of format v1 hold AMQP properties: the core converts them
    // with the AMQP front end's converter as it reads them.
    ferry_server::properties::install_legacy_converter();
    let broker = tokio::task::spawn_blocking(move || Broker::open(bc, Arc::new(StdIo)))
        .await
        .map_err(|e| RunError::Signal(std::io::Error::other(e)))??;
    if let Some(path) = &s.load_definitions {
        if let Err(e) = load_definitions(&broker, path) {
            broker.shutdown();
            return Err(e);
        }
    }
    let http_tls = match (s.http_tls, &tls) {
        (false, _) => None,
        (true, Some(t)) => Some(t.clone()),
        (true, None) => {
            broker.shutdown();
            return Err(RunError::Config(
                "http_tls needs tls_cert and tls_key".into(),
            ));
        }
    };
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
        amqps_listen: tls.is_some().then_some(s.amqps_listen),
        tls,
        ..ferry_server::ServerConfig::default()
    };
    // Handlers first: whoever reads the READY line may send SIGTERM at once,
    // and before registration its default action kills the process.
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let cluster = match cluster_cfg {
        None => None,
        // Forming may wait for the other seeds: a signal meanwhile stops cleanly.
        Some(c) => tokio::select! {
            r = cluster::start(c, &broker, s.default_replicas) => match r {
                Ok(node) => Some(node),
                Err(e) => {
                    broker.shutdown();
                    return Err(RunError::Config(e));
                }
            },
            _ = term.recv() => {
                tracing::info!("SIGTERM received while forming the cluster, shutting down");
                broker.shutdown();
                return Ok(None);
            }
            _ = int.recv() => {
                tracing::info!("SIGINT received while forming the cluster, shutting down");
                broker.shutdown();
                return Ok(None);
            }
        },
    };
    let cluster_addr = cluster.as_ref().and_then(|c| c.local_addr());
    let http_listen = settings::optional_listen("http_listen", &s.http_listen)?;
    let metrics_listen = settings::optional_listen("metrics_listen", &s.metrics_listen)?;
    let server = ferry_server::Server::start(broker, cfg).await?;
    let addr = server.local_addr();
    let http = ferry_http::HttpServer::start(
        server.broker().clone(),
        server.registry(),
        server.alarms(),
        ferry_http::HttpConfig {
            api_listen: http_listen,
            metrics_listen,
            memory_limit: s.memory_limit,
            disk_free_limit: s.disk_free_limit,
            amqp_listen: addr,
            tls: http_tls,
            replies: Some(server.replies()),
            node_name: s.node_name.clone(),
            cluster: cluster.clone(),
        },
    )
    .await?;
    tracing::info!(amqp = %addr, data_dir = %data_dir.display(), "ferry started");
    // A machine-readable line for scripts and tests (logs go to stderr).
    let mut out = std::io::stdout().lock();
    let mut ready = format!("FERRY_READY amqp={addr}");
    if let Some(a) = server.amqps_addr() {
        ready.push_str(&format!(" amqps={a}"));
    }
    if let Some(a) = http.api_addr() {
        ready.push_str(&format!(" http={a}"));
    }
    if let Some(a) = http.metrics_addr() {
        ready.push_str(&format!(" metrics={a}"));
    }
    if let Some(a) = cluster_addr {
        ready.push_str(&format!(" cluster={a}"));
    }
    let _ = writeln!(out, "{ready}");
    let _ = out.flush();
    drop(out);
    let exit = async {
        match &cluster {
            Some(c) => c.exit().await,
            None => std::future::pending().await,
        }
    };
    let (mut join, mut refused) = (None, None);
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
        _ = int.recv() => tracing::info!("SIGINT received, shutting down"),
        e = exit => match e {
            ferry_cluster::node::NodeExit::Left => tracing::info!(
                "left the cluster, shutting down (wipe the data directory before starting this node again)"
            ),
            ferry_cluster::node::NodeExit::Join(addr) => {
                tracing::info!(cluster = %addr, "joining another cluster: shutting down to reset");
                join = Some(addr);
            }
            ferry_cluster::node::NodeExit::Refused(why) => refused = Some(why),
        },
    }
    http.shutdown().await;
    if let Some(c) = &cluster {
        c.shutdown().await;
    }
    server.shutdown().await;
    tracing::info!("ferry stopped");
    match refused {
        Some(why) => Err(RunError::Config(why)),
        None => Ok(join),
    }
}
