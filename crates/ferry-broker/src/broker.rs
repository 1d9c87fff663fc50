//! The broker: configuration, vhosts, users, and the shared storage
//! facilities (I/O seam, group-commit threads, body cache budget).
//!
//! Data directory layout (see `docs/storage.md`):
//! ```text
//! DATA/access                               users and permissions
//! DATA/policies                             policies and operator policies
//! DATA/vhosts/<hex(vhost)>/definitions      durable exchanges, queues, bindings
//! DATA/vhosts/<hex(vhost)>/queues/<id>/     a durable queue's segmented log
//! DATA/vhosts/<hex(vhost)>/delayed/<hex(x)>/ held messages of delayed exchange x
//! DATA/transient/<id>/                      non-durable queues (wiped at start)
//! ```

use crate::vhost::VHost;
use ferry_auth::{store, Users};
use ferry_log::{FileIo, LogConfig};
use ferry_queue::clock::{Clock, ExpiryTimer, SystemClock, NEVER};
use ferry_queue::error::{CoreError, ErrorKind, Result};
use ferry_queue::queue::QueueEnv;
use ferry_queue::syncer::Syncer;
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

mod access;
mod limits;
mod policies;
mod vhosts;

pub use access::access_refused;
pub use policies::PolicyChangeError;

/// Called with the name of a deleted vhost (the AMQP server closes its
/// connections with 320 CONNECTION_FORCED).
pub type VhostDeletedHook = Arc<dyn Fn(&str) + Send + Sync>;

/// Called with the name of a deleted user (the AMQP server closes its
/// connections with 320 CONNECTION_FORCED, as RabbitMQ does).
pub type UserDeletedHook = Arc<dyn Fn(&str) + Send + Sync>;

/// Broker settings the core needs.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Where everything durable lives.
    pub data_dir: PathBuf,
    /// Segment size and index spacing of queue logs.
    pub log: LogConfig,
    /// Bytes of message bodies kept in memory across all queues.
    pub cache_bytes: i64,
    /// Durability rounds with at least this many dirty files make them
    /// durable with one `syncfs` of `data_dir`'s file system instead of
    /// one fdatasync per file (`usize::MAX`: never).
    pub syncfs_from_files: usize,
    /// The user a fresh data directory gets (administrator, all
    /// permissions on `/`), RabbitMQ's `default_user`.
    pub default_user: String,
    /// Its password (`default_pass`).
    pub default_pass: String,
    /// Users who may log in only from loopback addresses.
    pub loopback_users: Vec<String>,
    /// The delivery limit of quorum queues declared without
    /// `x-delivery-limit` (None = unlimited; RabbitMQ 4's 20 by default).
    pub quorum_delivery_limit: Option<u64>,
}

impl BrokerConfig {
    /// Defaults for a data directory.
    pub fn new(data_dir: PathBuf) -> Self {
        BrokerConfig {
            data_dir,
            log: LogConfig::default(),
            cache_bytes: 64 << 20,
            syncfs_from_files: ferry_log::RoundPolicy::DEFAULT_SYNCFS_FROM_FILES,
            default_user: "guest".into(),
            default_pass: "guest".into(),
            loopback_users: vec!["guest".into()],
            quorum_delivery_limit: Some(ferry_queue::queue::QUORUM_DELIVERY_LIMIT),
        }
    }
}

/// The broker core shared by every front end.
pub struct Broker {
    config: BrokerConfig,
    env: QueueEnv,
    vhosts: RwLock<HashMap<String, Arc<VHost>>>,
    users: RwLock<Users>,
    /// Serializes changes of users, permissions and vhosts (each rewrites
    /// the access file); readers never wait for the fsync.
    access_write: Mutex<()>,
    /// Bumped by every change of users, permissions or vhosts, so a
    /// connection's cached permissions are refreshed with one atomic load.
    access_epoch: AtomicU64,
    vhost_hooks: Mutex<Vec<VhostDeletedHook>>,
    user_hooks: Mutex<Vec<UserDeletedHook>>,
    /// Every vhost's policies (`broker/policies.rs`, `DATA/policies`).
    policies: RwLock<crate::policy::PolicySet>,
    /// Serializes policy changes (each rewrites the policy file).
    policy_write: Mutex<()>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("config", &self.config)
            .field("vhosts", &self.vhosts.read().keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

pub(crate) fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn unhex(s: &str) -> Option<String> {
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
        let mut env = QueueEnv::new(
            io.clone(),
            Syncer::start(ferry_log::RoundPolicy {
                fs_root: Some(config.data_dir.clone()),
                syncfs_from_files: config.syncfs_from_files,
            })?,
            config.log.clone(),
            config.cache_bytes,
        )
        .with_clock(clock);
        env.quorum_delivery_limit = config.quorum_delivery_limit;
        let loopback = config.loopback_users.clone();
        let stored = match store::load(&*io, &config.data_dir, loopback.clone()) {
            Ok(s) => s,
            Err(e) => {
                env.syncer.stop();
                return Err(e.into());
            }
        };
        let (users, listed) = match stored {
            Some((users, vhosts)) => (users, Some(vhosts)),
            None => (Users::new(loopback), None),
        };
        let fresh = listed.is_none();
        let policies = match crate::policy::store::load(&*io, &config.data_dir) {
            Ok(p) => p,
            Err(e) => {
                env.syncer.stop();
                return Err(e);
            }
        };
        let broker = Broker {
            config,
            env,
            vhosts: RwLock::new(HashMap::new()),
            users: RwLock::new(users),
            access_write: Mutex::new(()),
            access_epoch: AtomicU64::new(0),
            vhost_hooks: Mutex::new(Vec::new()),
            user_hooks: Mutex::new(Vec::new()),
            policies: RwLock::new(policies),
            policy_write: Mutex::new(()),
        };
        let opened = broker
            .open_vhosts(&*io, &vdir, listed)
            .and_then(|()| match fresh {
                true => broker.create_default_user(),
                false => Ok(()),
            });
        if let Err(e) = opened {
            // Nobody will call `shutdown` on a broker that failed to open:
            // stop its round thread, or it waits forever.
            broker.env.syncer.stop();
            return Err(e);
        }
        Ok(Arc::new(broker))
    }

    /// Looks a vhost up.
    pub fn vhost(&self, name: &str) -> Result<Arc<VHost>> {
        self.vhosts.read().get(name).cloned().ok_or_else(|| {
            CoreError::request(ErrorKind::NotAllowed, format!("vhost {name} not found"))
        })
    }

    /// The user database. Drop the guard before calling a method that
    /// changes users, permissions or vhosts (they take the write lock).
    pub fn users(&self) -> parking_lot::RwLockReadGuard<'_, Users> {
        self.users.read()
    }

    /// Changes of users, permissions or vhosts so far: a connection that
    /// cached its permissions refreshes them when this moves.
    pub fn access_epoch(&self) -> u64 {
        self.access_epoch.load(Ordering::Acquire)
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

    /// Expires (and dead-letters) the messages of every queue whose head
    /// deadline is at or before `now`, and deletes the queues left unused
    /// past their `x-expires`. Returns the earliest deadline left (`NEVER`
    /// if none).
    pub fn expire_due(&self, now: u64) -> u64 {
        let vhosts: Vec<Arc<VHost>> = self.vhosts.read().values().cloned().collect();
        let mut queues: Vec<Arc<ferry_queue::queue::Queue>> = Vec::new();
        for v in &vhosts {
            for q in v.queues() {
                // x-expires: the queue stayed unused past its deadline.
                if q.idle_deadline() <= now && q.idle_expired(now) {
                    if let Err(e) = v.drop_queue(&q) {
                        tracing::warn!(queue = %q.name(), error = %e, "cannot delete expired queue");
                    }
                    continue;
                }
                queues.push(q);
            }
        }
        for q in &queues {
            if q.next_expiry() <= now {
                q.expire(now);
            }
        }
        // Delayed exchanges route what fell due (after the queues' pass,
        // so a released message meets queues already swept).
        let held = vhosts
            .iter()
            .map(|v| v.release_delayed(now))
            .min()
            .unwrap_or(NEVER);
        // Streams whose oldest segment aged out (`x-max-age`).
        let streams: Vec<_> = vhosts.iter().flat_map(|v| v.streams()).collect();
        for s in streams.iter().filter(|s| s.retention_deadline() <= now) {
            s.enforce_retention(now);
        }
        // After the pass: dead letters may have given other queues a head.
        let queue_next = queues
            .iter()
            .map(|q| q.next_expiry().min(q.idle_deadline()))
            .min()
            .unwrap_or(NEVER);
        streams
            .iter()
            .map(|s| s.retention_deadline())
            .fold(queue_next, u64::min)
            .min(held)
    }

    /// Bytes of message bodies the queues cache now (memory alarm).
    pub fn cache_bytes(&self) -> u64 {
        u64::try_from(
            self.env
                .cache_used
                .load(std::sync::atomic::Ordering::Relaxed),
        )
        .unwrap_or(0)
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
        for v in &vhosts {
            for q in v.queues() {
                q.sync_now();
            }
            for s in v.streams() {
                s.sync_now();
            }
        }
        // Last: the queues' syncs above settle the delayed messages they
        // stored, and those settles belong in the hidden queues' logs.
        for v in &vhosts {
            for q in v.delayed_queues() {
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
