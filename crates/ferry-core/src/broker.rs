//! The broker: configuration, vhosts, users, and the shared storage
//! facilities (I/O seam, group-commit threads, body cache budget).
//!
//! Data directory layout (see `docs/storage.md`):
//! ```text
//! DATA/vhosts/<hex(vhost)>/definitions      durable exchanges, queues, bindings
//! DATA/vhosts/<hex(vhost)>/queues/<id>/     a durable queue's segmented log
//! DATA/transient/<id>/                      non-durable queues (wiped at start)
//! ```

use crate::auth::Users;
use crate::clock::{Clock, ExpiryTimer, SystemClock, NEVER};
use crate::error::{CoreError, ErrorKind, Result};
use crate::queue::{PropertyCodec, QueueEnv};
use crate::syncer::Syncer;
use crate::vhost::VHost;
use ferry_log::{FileIo, LogConfig};
use parking_lot::RwLock;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Broker settings the core needs.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Where everything durable lives.
    pub data_dir: PathBuf,
    /// Segment size and index spacing of queue logs.
    pub log: LogConfig,
    /// Bytes of message bodies kept in memory across all queues.
    pub cache_bytes: i64,
    /// Number of fsync threads.
    pub sync_threads: usize,
}

impl BrokerConfig {
    /// Defaults for a data directory.
    pub fn new(data_dir: PathBuf) -> Self {
        BrokerConfig {
            data_dir,
            log: LogConfig::default(),
            cache_bytes: 64 << 20,
            sync_threads: 4,
        }
    }
}

/// The broker core shared by every front end.
#[derive(Debug)]
pub struct Broker {
    config: BrokerConfig,
    env: QueueEnv,
    vhosts: RwLock<HashMap<String, Arc<VHost>>>,
    users: RwLock<Users>,
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    if s.len() % 2 != 0 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

impl Broker {
    /// Opens the data directory: recovers every vhost (the default `/`
    /// always exists) and wipes non-durable leftovers.
    pub fn open(config: BrokerConfig, io: Arc<dyn FileIo>) -> Result<Arc<Self>> {
        Self::open_with_clock(config, io, Arc::new(SystemClock))
    }

    /// `open` with another clock (tests drive message deadlines with a
    /// `ManualClock`).
    pub fn open_with_clock(
        config: BrokerConfig,
        io: Arc<dyn FileIo>,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>> {
        let transient = config.data_dir.join("transient");
        if io.exists(&transient) {
            io.remove_dir_all(&transient)?;
        }
        io.create_dir_all(&transient)?;
        let vdir = config.data_dir.join("vhosts");
        io.create_dir_all(&vdir)?;
        let env = QueueEnv::new(
            io.clone(),
            Syncer::start(config.sync_threads)?,
            config.log.clone(),
            config.cache_bytes,
        )
        .with_clock(clock);
        let broker = Broker {
            config,
            env,
            vhosts: RwLock::new(HashMap::new()),
            users: RwLock::new(Users::with_default_guest()),
        };
        if let Err(e) = broker.open_vhosts(&*io, &vdir) {
            // Nobody will call `shutdown` on a broker that failed to open:
            // stop its sync threads, or they wait forever.
            broker.env.syncer.stop();
            return Err(e);
        }
        Ok(Arc::new(broker))
    }

    /// Recovers every vhost found in `vdir`, and the default one.
    fn open_vhosts(&self, io: &dyn FileIo, vdir: &std::path::Path) -> Result<()> {
        let mut names: Vec<String> = io
            .list(vdir)?
            .iter()
            .filter_map(|p| p.file_name()?.to_str().and_then(unhex))
            .collect();
        if !names.iter().any(|n| n == "/") {
            names.push("/".to_string());
        }
        for n in names {
            self.add_vhost(&n)?;
        }
        Ok(())
    }

    /// Creates (or opens) a vhost.
    pub fn add_vhost(&self, name: &str) -> Result<Arc<VHost>> {
        if let Some(v) = self.vhosts.read().get(name) {
            return Ok(v.clone());
        }
        let dir = self.config.data_dir.join("vhosts").join(hex(name));
        self.env.io.create_dir_all(&dir)?;
        let tdir = self.config.data_dir.join("transient").join(hex(name));
        let v = VHost::open(name, dir, tdir, self.env.clone())?;
        self.vhosts.write().insert(name.to_string(), v.clone());
        Ok(v)
    }

    /// Looks a vhost up.
    pub fn vhost(&self, name: &str) -> Result<Arc<VHost>> {
        self.vhosts.read().get(name).cloned().ok_or_else(|| {
            CoreError::request(ErrorKind::NotAllowed, format!("vhost {name} not found"))
        })
    }

    /// The user database.
    pub fn users(&self) -> parking_lot::RwLockReadGuard<'_, Users> {
        self.users.read()
    }

    /// Settings.
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// The broker's clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.env.clock
    }

    /// Where queues post their next message deadline; the front end's
    /// expiry task sleeps on it and then calls [`Broker::expire_due`].
    pub fn expiry_timer(&self) -> &Arc<ExpiryTimer> {
        &self.env.timer
    }

    /// Installs the property codec dead-lettering re-encodes messages with
    /// (the AMQP front end's). The first one installed stays.
    pub fn set_property_codec(&self, codec: Arc<dyn PropertyCodec>) {
        let _ = self.env.codec.set(codec);
    }

    /// Expires (and dead-letters) the messages of every queue whose head
    /// deadline is at or before `now`. Returns the earliest deadline left
    /// (`NEVER` if none).
    pub fn expire_due(&self, now: u64) -> u64 {
        let vhosts: Vec<Arc<VHost>> = self.vhosts.read().values().cloned().collect();
        let queues: Vec<Arc<crate::queue::Queue>> =
            vhosts.iter().flat_map(|v| v.queues()).collect();
        for q in &queues {
            if q.next_expiry() <= now {
                q.expire(now);
            }
        }
        // After the pass: dead letters may have given other queues a head.
        queues
            .iter()
            .map(|q| q.next_expiry())
            .min()
            .unwrap_or(NEVER)
    }

    /// Drops cached message bodies in every queue (memory alarm).
    pub fn shed_memory(&self) {
        let vhosts: Vec<Arc<VHost>> = self.vhosts.read().values().cloned().collect();
        for v in vhosts {
            for q in v.queues() {
                q.shed_cache();
            }
        }
    }

    /// Flushes and fsyncs every queue, then stops the sync threads.
    pub fn shutdown(&self) {
        let vhosts: Vec<Arc<VHost>> = self.vhosts.read().values().cloned().collect();
        for v in vhosts {
            for q in v.queues() {
                q.sync_now();
            }
        }
        self.env.syncer.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vhost_dir_names_round_trip() {
        for n in ["/", "prod", "a b/ç"] {
            assert_eq!(unhex(&hex(n)).as_deref(), Some(n));
        }
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex("abc"), None);
    }
}
