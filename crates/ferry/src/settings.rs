//! Settings: defaults, then an optional TOML file, then `FERRY_*`
//! environment variables, then command-line flags (each overrides the one
//! before).

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Everything `ferry server` can be told. Serialize only lists the keys
/// for the test that keeps `ferry.example.toml` complete.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Settings {
    /// Data directory.
    pub data_dir: PathBuf,
    /// AMQP listen address.
    pub amqp_listen: SocketAddr,
    /// Largest frame accepted / proposed.
    pub frame_max: u32,
    /// Heartbeat proposed to clients, seconds.
    pub heartbeat: u16,
    /// Highest channel number.
    pub channel_max: u16,
    /// Largest message body.
    pub max_message_size: u64,
    /// Segment size of queue logs.
    pub segment_bytes: u64,
    /// Bytes of message bodies kept in memory.
    pub cache_bytes: i64,
    /// Most client connections (0 = unlimited).
    pub max_connections: usize,
    /// Consumer acknowledgement timeout in ms (0 = none).
    pub consumer_timeout_ms: u64,
    /// Memory high watermark in bytes (0 = 40% of RAM).
    pub memory_limit: u64,
    /// Free disk limit in bytes.
    pub disk_free_limit: u64,
    /// Management HTTP API address ("" or "off" disables).
    pub http_listen: String,
    /// Prometheus metrics address ("" or "off" disables).
    pub metrics_listen: String,
    /// Serve the management API over HTTPS (with tls_cert / tls_key).
    pub http_tls: bool,
    /// Log filter in `tracing` EnvFilter syntax ("info", "debug",
    /// "info,ferry_server=debug"); `FERRY_LOG` overrides it.
    pub log_level: String,
    /// Log line format on stderr.
    pub log_format: LogFormat,
    /// The user a fresh data directory gets (RabbitMQ's default_user).
    pub default_user: String,
    /// Its password (default_pass).
    pub default_pass: String,
    /// Users who may log in only from loopback addresses.
    pub loopback_users: Vec<String>,
    /// RabbitMQ definitions JSON whose users, vhosts and permissions are
    /// imported at boot (RabbitMQ's load_definitions).
    pub load_definitions: Option<PathBuf>,
    /// AMQPS listen address (on only when tls_cert and tls_key are set).
    pub amqps_listen: SocketAddr,
    /// Server certificate chain (PEM).
    pub tls_cert: Option<PathBuf>,
    /// Server private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// CA bundle client certificates are verified against (PEM).
    pub tls_ca: Option<PathBuf>,
    /// Require a client certificate signed by tls_ca.
    pub tls_verify_peer: bool,
    /// Delivery limit of quorum queues declared without x-delivery-limit
    /// (0 or -1 = unlimited).
    pub quorum_delivery_limit: i64,
    /// Tokio worker threads (0 = one per core).
    pub worker_threads: usize,
    /// This node's name, unique in its cluster ("ferry@HOSTNAME").
    pub node_name: String,
    /// Cluster port ("" or "off": a single node, as before clustering).
    pub cluster_listen: String,
    /// The address the other nodes dial ("" = cluster_listen).
    pub cluster_advertise: String,
    /// The seed nodes' cluster addresses (every seed lists the same ones).
    pub cluster_seeds: Vec<String>,
    /// The shared secret of node-to-node links.
    pub cluster_secret: String,
    /// A file holding the shared secret (wins over cluster_secret).
    pub cluster_secret_file: Option<PathBuf>,
    /// Node-to-node links over mutual TLS (tls_cert, tls_key, tls_ca).
    pub cluster_tls: bool,
    /// Replicas of a new durable queue or stream in a cluster (capped at
    /// the cluster's size; `x-quorum-initial-group-size` overrides it for
    /// a queue, `x-initial-cluster-size` for a stream).
    pub default_replicas: usize,
    /// Bytes of records a replicated queue logs between two snapshots
    /// (at least the records of the messages it holds); each snapshot
    /// lets its Raft log be cut. A replicated stream's group snapshots
    /// at the same pace.
    pub queue_snapshot_bytes: u64,
    /// Entries the metadata group (definitions, members) logs between two
    /// snapshots; each lets its Raft log be cut (ra's `snapshot_interval`
    /// in RabbitMQ, 4,096 there too).
    pub meta_snapshot_interval: u64,
    /// A replicated queue's Raft instance nobody used for this many ms
    /// hibernates: it stops and starts again from its log when a publish,
    /// an ack or another node needs it (0: never).
    pub queue_hibernate_after_ms: u64,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (timestamp, level, target, message, fields).
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(()),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        let s = ferry_server::ServerConfig::default();
        Settings {
            data_dir: PathBuf::from("./ferry-data"),
            amqp_listen: s.amqp_listen,
            frame_max: s.frame_max,
            heartbeat: s.heartbeat,
            channel_max: s.channel_max,
            max_message_size: s.max_message_size,
            segment_bytes: 64 << 20,
            cache_bytes: 64 << 20,
            max_connections: s.max_connections,
            consumer_timeout_ms: s.consumer_timeout.map_or(0, |d| d.as_millis() as u64),
            memory_limit: s.memory_limit_bytes,
            disk_free_limit: s.disk_free_limit_bytes,
            http_listen: "0.0.0.0:15672".to_string(),
            metrics_listen: "0.0.0.0:15692".to_string(),
            http_tls: false,
            log_level: "info".to_string(),
            log_format: LogFormat::Text,
            default_user: "guest".to_string(),
            default_pass: "guest".to_string(),
            loopback_users: vec!["guest".to_string()],
            load_definitions: None,
            amqps_listen: SocketAddr::from(([0, 0, 0, 0], 5671)),
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            tls_verify_peer: false,
            quorum_delivery_limit: 20,
            worker_threads: 0,
            node_name: ferry_http::default_node_name(),
            cluster_listen: "off".to_string(),
            cluster_advertise: String::new(),
            cluster_seeds: Vec::new(),
            cluster_secret: String::new(),
            cluster_secret_file: None,
            cluster_tls: false,
            default_replicas: 3,
            queue_snapshot_bytes: 64 << 20,
            meta_snapshot_interval: 4096,
            queue_hibernate_after_ms: 10_000,
        }
    }
}

/// The TOML file's shape: every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    data_dir: Option<PathBuf>,
    amqp_listen: Option<SocketAddr>,
    frame_max: Option<u32>,
    heartbeat: Option<u16>,
    channel_max: Option<u16>,
    max_message_size: Option<u64>,
    segment_bytes: Option<u64>,
    cache_bytes: Option<i64>,
    max_connections: Option<usize>,
    consumer_timeout_ms: Option<u64>,
    memory_limit: Option<u64>,
    disk_free_limit: Option<u64>,
    http_listen: Option<String>,
    metrics_listen: Option<String>,
    http_tls: Option<bool>,
    log_level: Option<String>,
    log_format: Option<LogFormat>,
    default_user: Option<String>,
    default_pass: Option<String>,
    loopback_users: Option<Vec<String>>,
    load_definitions: Option<PathBuf>,
    amqps_listen: Option<SocketAddr>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
    tls_verify_peer: Option<bool>,
    quorum_delivery_limit: Option<i64>,
    worker_threads: Option<usize>,
    node_name: Option<String>,
    cluster_listen: Option<String>,
    cluster_advertise: Option<String>,
    cluster_seeds: Option<Vec<String>>,
    cluster_secret: Option<String>,
    cluster_secret_file: Option<PathBuf>,
    cluster_tls: Option<bool>,
    default_replicas: Option<usize>,
    queue_snapshot_bytes: Option<u64>,
    meta_snapshot_interval: Option<u64>,
    queue_hibernate_after_ms: Option<u64>,
}

/// A settings error, reported before the broker starts.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The config file could not be read.
    #[error("cannot read config file {0}: {1}")]
    Read(PathBuf, std::io::Error),
    /// The config file is not valid TOML for us.
    #[error("invalid config file {0}: {1}")]
    Parse(PathBuf, String),
    /// An environment variable has a bad value.
    #[error("invalid value for {0}: {1:?}")]
    Env(&'static str, String),
}

/// A comma-separated list, trimmed, without empty items.
pub fn split_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_owned)
        .collect()
}

/// An optional listener address: "" or "off" means disabled.
pub fn optional_listen(key: &'static str, v: &str) -> Result<Option<SocketAddr>, SettingsError> {
    match v.trim() {
        "" | "off" => Ok(None),
        a => a
            .parse()
            .map(Some)
            .map_err(|_| SettingsError::Env(key, v.to_string())),
    }
}

impl Settings {
    /// Applies a TOML config file.
    pub fn apply_file(&mut self, path: &Path) -> Result<(), SettingsError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| SettingsError::Read(path.into(), e))?;
        self.apply_toml(&text)
            .map_err(|e| SettingsError::Parse(path.into(), e))
    }

    fn apply_toml(&mut self, text: &str) -> Result<(), String> {
        let f: FileSettings = toml::from_str(text).map_err(|e| e.to_string())?;
        macro_rules! take {
            ($($k:ident),*) => { $( if let Some(v) = f.$k { self.$k = v; } )* };
        }
        take!(
            data_dir,
            amqp_listen,
            frame_max,
            heartbeat,
            channel_max,
            max_message_size,
            segment_bytes,
            cache_bytes,
            max_connections,
            consumer_timeout_ms,
            memory_limit,
            disk_free_limit,
            http_listen,
            metrics_listen,
            http_tls,
            log_level,
            log_format,
            default_user,
            default_pass,
            loopback_users,
            amqps_listen,
            tls_verify_peer,
            quorum_delivery_limit,
            worker_threads,
            node_name,
            cluster_listen,
            cluster_advertise,
            cluster_seeds,
            cluster_secret,
            cluster_tls,
            default_replicas,
            queue_snapshot_bytes,
            meta_snapshot_interval,
            queue_hibernate_after_ms
        );
        macro_rules! take_opt {
            ($($k:ident),*) => { $( if f.$k.is_some() { self.$k = f.$k; } )* };
        }
        take_opt!(
            load_definitions,
            tls_cert,
            tls_key,
            tls_ca,
            cluster_secret_file
        );
        Ok(())
    }

    /// Applies `FERRY_*` variables from `get` (the process environment in
    /// production, a map in tests).
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), SettingsError> {
        fn parse<T: std::str::FromStr>(k: &'static str, v: String) -> Result<T, SettingsError> {
            v.parse().map_err(|_| SettingsError::Env(k, v))
        }
        if let Some(v) = get("FERRY_DATA_DIR") {
            self.data_dir = PathBuf::from(v);
        }
        if let Some(v) = get("FERRY_LOG_LEVEL") {
            self.log_level = v;
        }
        if let Some(v) = get("FERRY_HTTP_LISTEN") {
            self.http_listen = v;
        }
        if let Some(v) = get("FERRY_METRICS_LISTEN") {
            self.metrics_listen = v;
        }
        self.apply_security_env(&get);
        self.apply_cluster_env(&get);
        macro_rules! env {
            ($($name:literal => $k:ident),*) => {
                $( if let Some(v) = get($name) { self.$k = parse($name, v)?; } )*
            };
        }
        env!(
            "FERRY_AMQP_LISTEN" => amqp_listen,
            "FERRY_FRAME_MAX" => frame_max,
            "FERRY_HEARTBEAT" => heartbeat,
            "FERRY_CHANNEL_MAX" => channel_max,
            "FERRY_MAX_MESSAGE_SIZE" => max_message_size,
            "FERRY_SEGMENT_BYTES" => segment_bytes,
            "FERRY_CACHE_BYTES" => cache_bytes,
            "FERRY_MAX_CONNECTIONS" => max_connections,
            "FERRY_CONSUMER_TIMEOUT_MS" => consumer_timeout_ms,
            "FERRY_MEMORY_LIMIT" => memory_limit,
            "FERRY_DISK_FREE_LIMIT" => disk_free_limit,
            "FERRY_HTTP_TLS" => http_tls,
            "FERRY_LOG_FORMAT" => log_format,
            "FERRY_AMQPS_LISTEN" => amqps_listen,
            "FERRY_TLS_VERIFY_PEER" => tls_verify_peer,
            "FERRY_QUORUM_DELIVERY_LIMIT" => quorum_delivery_limit,
            "FERRY_WORKER_THREADS" => worker_threads,
            "FERRY_CLUSTER_TLS" => cluster_tls,
            "FERRY_DEFAULT_REPLICAS" => default_replicas,
            "FERRY_QUEUE_SNAPSHOT_BYTES" => queue_snapshot_bytes,
            "FERRY_META_SNAPSHOT_INTERVAL" => meta_snapshot_interval,
            "FERRY_QUEUE_HIBERNATE_AFTER_MS" => queue_hibernate_after_ms
        );
        Ok(())
    }
}

impl Settings {
    /// The broker's default quorum delivery limit: None (unlimited) for 0
    /// or a negative value.
    pub fn quorum_delivery_limit(&self) -> Option<u64> {
        u64::try_from(self.quorum_delivery_limit)
            .ok()
            .filter(|n| *n > 0)
    }

    /// Cluster settings from `FERRY_*` (strings; seeds comma-separated).
    fn apply_cluster_env(&mut self, get: &impl Fn(&str) -> Option<String>) {
        if let Some(v) = get("FERRY_NODE_NAME") {
            self.node_name = v;
        }
        if let Some(v) = get("FERRY_CLUSTER_LISTEN") {
            self.cluster_listen = v;
        }
        if let Some(v) = get("FERRY_CLUSTER_ADVERTISE") {
            self.cluster_advertise = v;
        }
        if let Some(v) = get("FERRY_CLUSTER_SEEDS") {
            self.cluster_seeds = split_list(&v);
        }
        if let Some(v) = get("FERRY_CLUSTER_SECRET") {
            self.cluster_secret = v;
        }
        if let Some(v) = get("FERRY_CLUSTER_SECRET_FILE") {
            self.cluster_secret_file = (!v.is_empty()).then(|| PathBuf::from(v));
        }
    }

    /// Users and TLS from `FERRY_*` (strings and paths: nothing to parse
    /// but the comma-separated user list; an empty path unsets).
    fn apply_security_env(&mut self, get: &impl Fn(&str) -> Option<String>) {
        if let Some(v) = get("FERRY_DEFAULT_USER") {
            self.default_user = v;
        }
        if let Some(v) = get("FERRY_DEFAULT_PASS") {
            self.default_pass = v;
        }
        if let Some(v) = get("FERRY_LOOPBACK_USERS") {
            self.loopback_users = v
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(String::from)
                .collect();
        }
        let path = |v: String| (!v.is_empty()).then(|| PathBuf::from(v));
        for (name, slot) in [
            ("FERRY_LOAD_DEFINITIONS", &mut self.load_definitions),
            ("FERRY_TLS_CERT", &mut self.tls_cert),
            ("FERRY_TLS_KEY", &mut self.tls_key),
            ("FERRY_TLS_CA", &mut self.tls_ca),
        ] {
            if let Some(v) = get(name) {
                *slot = path(v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn file_then_env_override_defaults() {
        let mut s = Settings::default();
        s.apply_toml("data_dir = \"/tmp/x\"\namqp_listen = \"127.0.0.1:5673\"\nheartbeat = 5\n")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(s.heartbeat, 5);
        let env: HashMap<&str, &str> = [
            ("FERRY_AMQP_LISTEN", "127.0.0.1:7000"),
            ("FERRY_HEARTBEAT", "9"),
        ]
        .into();
        s.apply_env(|k| env.get(k).map(|v| v.to_string()))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.amqp_listen.port(), 7000);
        assert_eq!(s.heartbeat, 9);
        assert_eq!(s.data_dir, PathBuf::from("/tmp/x"));
    }

    /// `ferry.example.toml` names every setting (a commented line counts)
    /// with its `FERRY_*` variable, and its active values are the defaults,
    /// so it cannot go stale.
    #[test]
    fn example_file_documents_every_setting() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../ferry.example.toml");
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let mut s = Settings::default();
        s.apply_toml(&text)
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(s, Settings::default(), "{path} must show the defaults");
        let fields = serde_json::to_value(Settings::default()).unwrap_or_else(|e| panic!("{e}"));
        let fields = fields
            .as_object()
            .unwrap_or_else(|| panic!("not an object"));
        assert!(fields.len() >= 14, "{fields:?}");
        for key in fields.keys() {
            let documented = text.lines().any(|l| {
                let l = l.trim_start_matches('#').trim_start();
                l.strip_prefix(key.as_str())
                    .is_some_and(|rest| rest.trim_start().starts_with('='))
            });
            assert!(documented, "{path} lacks a `{key} = ...` line");
            let env = format!("FERRY_{}", key.to_uppercase());
            assert!(text.contains(&env), "{path} does not name {env}");
        }
    }

    #[test]
    fn log_settings_from_file_and_env() {
        let mut s = Settings::default();
        assert_eq!(
            (s.log_level.as_str(), s.log_format),
            ("info", LogFormat::Text)
        );
        s.apply_toml("log_level = \"debug\"\nlog_format = \"json\"\n")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (s.log_level.as_str(), s.log_format),
            ("debug", LogFormat::Json)
        );
        let env: HashMap<&str, &str> =
            [("FERRY_LOG_FORMAT", "text"), ("FERRY_LOG_LEVEL", "warn")].into();
        s.apply_env(|k| env.get(k).map(|v| v.to_string()))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (s.log_level.as_str(), s.log_format),
            ("warn", LogFormat::Text)
        );
        assert!(s.apply_toml("log_format = \"xml\"").is_err());
        assert!(s
            .apply_env(|k| (k == "FERRY_LOG_FORMAT").then(|| "xml".to_string()))
            .is_err());
    }

    #[test]
    fn http_listeners_parse_or_switch_off() {
        let ok = |v| optional_listen("http_listen", v).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ok("off"), None);
        assert_eq!(ok(""), None);
        assert_eq!(ok("127.0.0.1:0").map(|a| a.port()), Some(0));
        assert!(optional_listen("http_listen", "nope").is_err());
    }

    #[test]
    fn security_settings_from_file_and_env() {
        let mut s = Settings::default();
        assert_eq!(s.loopback_users, vec!["guest".to_string()]);
        s.apply_toml("default_user = \"admin\"\ntls_cert = \"/c.pem\"\nloopback_users = []\n")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.default_user, "admin");
        assert_eq!(s.tls_cert, Some(PathBuf::from("/c.pem")));
        assert!(s.loopback_users.is_empty());
        let env: HashMap<&str, &str> = [
            ("FERRY_DEFAULT_PASS", "pw"),
            ("FERRY_LOOPBACK_USERS", "guest, ops"),
            ("FERRY_TLS_CERT", ""),
            ("FERRY_TLS_VERIFY_PEER", "true"),
            ("FERRY_AMQPS_LISTEN", "127.0.0.1:5999"),
        ]
        .into();
        s.apply_env(|k| env.get(k).map(|v| v.to_string()))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.default_pass, "pw");
        assert_eq!(
            s.loopback_users,
            vec!["guest".to_string(), "ops".to_string()]
        );
        assert_eq!(s.tls_cert, None, "an empty path unsets");
        assert!(s.tls_verify_peer);
        assert_eq!(s.amqps_listen.port(), 5999);
    }

    #[test]
    fn quorum_delivery_limit_from_file_and_env() {
        let mut s = Settings::default();
        assert_eq!(s.quorum_delivery_limit(), Some(20));
        s.apply_toml("quorum_delivery_limit = 2\n")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.quorum_delivery_limit(), Some(2));
        for (v, want) in [("-1", None), ("0", None), ("5", Some(5))] {
            s.apply_env(|k| (k == "FERRY_QUORUM_DELIVERY_LIMIT").then(|| v.to_string()))
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(s.quorum_delivery_limit(), want, "{v}");
        }
        assert!(s
            .apply_env(|k| (k == "FERRY_QUORUM_DELIVERY_LIMIT").then(|| "many".to_string()))
            .is_err());
    }

    #[test]
    fn bad_values_are_errors() {
        let mut s = Settings::default();
        assert!(s.apply_toml("nope = 1").is_err());
        assert!(s
            .apply_env(|k| (k == "FERRY_HEARTBEAT").then(|| "x".to_string()))
            .is_err());
    }
}
