//! Settings: defaults, then an optional TOML file, then `FERRY_*`
//! environment variables, then command-line flags (each overrides the one
//! before).

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Everything `ferry server` can be told.
#[derive(Debug, Clone, PartialEq)]
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
            disk_free_limit
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
            "FERRY_DISK_FREE_LIMIT" => disk_free_limit
        );
        Ok(())
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

    #[test]
    fn bad_values_are_errors() {
        let mut s = Settings::default();
        assert!(s.apply_toml("nope = 1").is_err());
        assert!(s
            .apply_env(|k| (k == "FERRY_HEARTBEAT").then(|| "x".to_string()))
            .is_err());
    }
}
