//! The broker: configuration, vhosts, users, and the shared storage
//! facilities (I/O seam, group-commit threads, body cache budget).
//!
//! This file holds the [`Broker`]: opening, the expiry sweep, shutdown,
//! vhost creation and deletion (they span its parts), and thin public
//! methods over its parts, each owning its state and locks:
//! `vhosts` ([`VhostSet`](vhosts::VhostSet): the open vhosts),
//! `access` ([`AccessDb`](access::AccessDb): users, permissions, limits,
//! the access file, `access_write`), `policies`
//! ([`Policies`](policies::Policies): the policy set and file,
//! `policy_write`); `limits` checks limits (pure functions).
//!
//! Lock order: `access_write` → `policy_write` → a vhost's locks; the
//! `vhosts` map, the `users` database and the policy set are leaves.
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

use crate::command::{self, DefCommand, DefError, SharedReplicator};
use crate::policy::{PolicyDef, PolicyKind};
use crate::replicated::ReplicaHub;
use crate::vhost::VHost;
use access::AccessDb;
use ferry_auth::{
    store, Access, AccessDefs, CompiledPermissions, Limits, PasswordSpec, Permissions, Resource,
    Users,
};
use ferry_log::{FileIo, LogConfig};
use ferry_queue::clock::{Clock, ExpiryTimer, SystemClock, NEVER};
use ferry_queue::error::{CoreError, ErrorKind, Result};
use ferry_queue::queue::QueueEnv;
use ferry_queue::syncer::Syncer;
use policies::Policies;
use std::path::PathBuf;
use std::sync::Arc;
use vhosts::VhostSet;

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
    /// The open vhosts (`broker/vhosts.rs`).
    vhosts: VhostSet,
    /// Users, permissions, limits, `DATA/access` (`broker/access.rs`).
    access: AccessDb,
    /// Every vhost's policies, `DATA/policies` (`broker/policies.rs`).
    policies: Policies,
    /// Where definition changes go in a cluster (None: applied here).
    replicator: parking_lot::RwLock<Option<SharedReplicator>>,
    /// Replicated queues' groups (`crate::replicated`).
    replicas: Arc<ReplicaHub>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("config", &self.config)
            .field("vhosts", &self.vhosts.names())
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
        let data_dir = config.data_dir.clone();
        let replicas = Arc::new(ReplicaHub::default());
        let broker = Broker {
            vhosts: VhostSet::new(data_dir.clone(), env.clone(), replicas.clone()),
            replicas,
            access: AccessDb::new(io.clone(), data_dir.clone(), users),
            policies: Policies::new(io.clone(), data_dir, policies),
            config,
            env,
            replicator: parking_lot::RwLock::new(None),
        };
        let opened = broker
            .open_vhosts(&*io, &vdir, listed)
            .and_then(|()| match fresh {
                true => broker.access.create_default_user(
                    &broker.vhosts,
                    broker.config.default_user.clone(),
                    broker.config.default_pass.clone(),
                ),
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

    /// The file I/O seam.
    pub fn io(&self) -> &Arc<dyn FileIo> {
        &self.env.io
    }

    /// Replicated queues: where their groups run.
    pub fn replicas(&self) -> &Arc<ReplicaHub> {
        &self.replicas
    }

    /// Sends every later definition change through `r` (a cluster's
    /// metadata group) instead of applying it here at once.
    pub fn set_replicator(&self, r: SharedReplicator) {
        *self.replicator.write() = Some(r);
    }

    /// Makes a definition change (`crate::command`): applied here at once
    /// on a single node, through the replicator on every node of a
    /// cluster. Blocks (file I/O; in a cluster a round trip to the
    /// metadata leader): call it from the blocking pool or in
    /// `block_in_place`.
    pub fn submit(&self, cmd: DefCommand) -> std::result::Result<bool, DefError> {
        let r = self.replicator.read().clone();
        match r {
            None => command::apply(self, &cmd),
            Some(r) => match r.replicate(cmd.encode()) {
                Ok(out) => command::decode_result(&out),
                Err(e) => Err(CoreError::request(
                    ErrorKind::Internal,
                    format!("the change could not be replicated: {e}"),
                )
                .into()),
            },
        }
    }

    /// [`submit`](Self::submit) for the changes whose errors are the core's.
    pub fn change(&self, cmd: DefCommand) -> Result<()> {
        self.submit(cmd).map(|_| ()).map_err(CoreError::from)
    }

    /// Looks a vhost up.
    pub fn vhost(&self, name: &str) -> Result<Arc<VHost>> {
        self.vhosts.get(name).ok_or_else(|| {
            CoreError::request(ErrorKind::NotAllowed, format!("vhost {name} not found"))
        })
    }

    /// The user database. Drop the guard before calling a method that
    /// changes users, permissions or vhosts (they take the write lock).
    pub fn users(&self) -> parking_lot::RwLockReadGuard<'_, Users> {
        self.access.users()
    }

    /// Changes of users, permissions or vhosts so far: a connection that
    /// cached its permissions refreshes them when this moves.
    pub fn access_epoch(&self) -> u64 {
        self.access.epoch()
    }

    /// Settings.
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// The node's durability round (shared with the Raft logs of a
    /// clustered node).
    pub fn syncer(&self) -> &Arc<ferry_queue::syncer::Syncer> {
        &self.env.syncer
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
        let vhosts: Vec<Arc<VHost>> = self.vhosts.all();
        let mut queues: Vec<Arc<ferry_queue::queue::Queue>> = Vec::new();
        // Replicated queues unused past their x-expires (this node leads
        // them): deleted through the definitions, on every node.
        let mut expired: Vec<(Arc<str>, Arc<str>)> = Vec::new();
        for v in &vhosts {
            for q in v.queues() {
                // x-expires: the queue stayed unused past its deadline.
                if q.idle_deadline() <= now && q.idle_expired(now) {
                    if v.replicated_group(q.name()).is_some() {
                        expired.push((v.name().clone(), q.name().clone()));
                    } else if let Err(e) = v.drop_queue(&q) {
                        tracing::warn!(queue = %q.name(), error = %e, "cannot delete expired queue");
                    }
                    continue;
                }
                queues.push(q);
            }
        }
        for (vhost, name) in expired {
            let cmd = DefCommand::DeleteReplicatedQueue {
                vhost: vhost.to_string(),
                name: name.to_string(),
            };
            if let Err(e) = self.change(cmd) {
                tracing::warn!(queue = %name, error = %e, "cannot delete expired queue");
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
        let vhosts: Vec<Arc<VHost>> = self.vhosts.all();
        for v in vhosts {
            for q in v.queues() {
                q.shed_cache();
            }
        }
    }

    /// Flushes and fsyncs every queue, then stops the sync threads.
    pub fn shutdown(&self) {
        let vhosts: Vec<Arc<VHost>> = self.vhosts.all();
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
        // A round the executor thread was still running may have released
        // confirms after the syncs above (they run after its members'
        // locks): stopping joins it, and the delayed queues are synced once
        // more so the settles those confirms appended are durable too.
        self.env.syncer.stop();
        for v in &vhosts {
            for q in v.delayed_queues() {
                q.sync_now();
            }
        }
    }
    // --- vhosts (`vhosts.rs`) ---

    /// Opens the vhosts the access file lists (`listed`), or on a fresh
    /// data directory every directory found plus the default `/`.
    fn open_vhosts(
        &self,
        io: &dyn FileIo,
        vdir: &std::path::Path,
        listed: Option<Vec<String>>,
    ) -> Result<()> {
        for n in self.vhosts.to_open(io, vdir, listed)? {
            self.open_vhost(&n)?;
        }
        Ok(())
    }

    fn open_vhost(&self, name: &str) -> Result<Arc<VHost>> {
        let policies = self.policies.vhost(name);
        let max_queues = self.access.vhost_limit(name, "max-queues");
        self.vhosts.open(name, policies, max_queues)
    }

    /// Creates (or returns the existing) vhost, persisted before it
    /// returns.
    pub fn add_vhost(&self, name: &str) -> Result<Arc<VHost>> {
        if let Some(v) = self.vhosts.get(name) {
            return Ok(v);
        }
        if name.is_empty() {
            return Err(CoreError::request(
                ErrorKind::CommandInvalid,
                "vhost name must not be empty",
            ));
        }
        let _w = self.access.lock();
        if let Some(v) = self.vhosts.get(name) {
            return Ok(v);
        }
        let v = self.open_vhost(name)?;
        if let Err(e) = self.access.update_locked(&self.vhosts, |_| Ok(())) {
            self.vhosts.remove(name);
            return Err(e);
        }
        Ok(v)
    }

    /// Deletes a vhost: its queues (consumers are cancelled), exchanges,
    /// data and permissions. Connections still on it fail their next
    /// declare; the hooks (see [`Broker::on_vhost_deleted`]) close them.
    pub fn delete_vhost(&self, name: &str) -> Result<()> {
        let _w = self.access.lock();
        let v = self.vhosts.remove(name).ok_or_else(|| {
            CoreError::request(ErrorKind::NotFound, format!("vhost {name} not found"))
        })?;
        // The commit point: the access file no longer lists it.
        if let Err(e) = self.access.update_locked(&self.vhosts, |u| {
            u.remove_vhost(name);
            Ok(())
        }) {
            self.vhosts.insert(name, v);
            return Err(e);
        }
        self.policies.forget_vhost(name);
        let deleted = v.delete_all();
        self.vhosts.remove_data(name)?;
        self.vhosts.deleted(name);
        self.access.bump_epoch();
        deleted
    }

    /// Registers a callback run after a vhost is deleted.
    pub fn on_vhost_deleted(&self, hook: VhostDeletedHook) {
        self.vhosts.on_deleted(hook);
    }

    /// Every vhost name, sorted.
    pub fn vhost_names(&self) -> Vec<String> {
        self.vhosts.names()
    }

    // --- users, permissions and limits (`access.rs`) ---

    /// Creates or updates a user (permissions stay), persisted.
    pub fn put_user(&self, name: &str, password: PasswordSpec, tags: Vec<String>) -> Result<()> {
        self.access.put_user(&self.vhosts, name, password, tags)
    }

    /// Deletes a user and its permissions (`NotFound` if absent).
    /// Its open connections are closed by the hooks (see
    /// [`Broker::on_user_deleted`]).
    pub fn delete_user(&self, name: &str) -> Result<()> {
        self.access.delete_user(&self.vhosts, name)
    }

    /// Registers a callback run after a user is deleted.
    pub fn on_user_deleted(&self, hook: UserDeletedHook) {
        self.access.on_user_deleted(hook);
    }

    /// Sets a user's permissions in a vhost; `NotFound` for an unknown
    /// user or vhost, `CommandInvalid` for a bad expression.
    pub fn set_permissions(&self, user: &str, vhost: &str, p: Permissions) -> Result<()> {
        self.access.set_permissions(&self.vhosts, user, vhost, p)
    }

    /// Removes a user's permissions in a vhost (`NotFound` if none).
    pub fn clear_permissions(&self, user: &str, vhost: &str) -> Result<()> {
        self.access.clear_permissions(&self.vhosts, user, vhost)
    }

    /// Every (user, vhost, permissions), sorted.
    pub fn permissions(&self) -> Vec<(String, String, Permissions)> {
        self.access.permissions()
    }

    /// A user's compiled permissions in a vhost, for a connection to cache
    /// (refresh when [`Broker::access_epoch`] moves).
    pub fn permissions_for(&self, user: &str, vhost: &str) -> Option<Arc<CompiledPermissions>> {
        self.access.permissions_for(user, vhost)
    }

    /// connection.open's check: the vhost exists and the user has
    /// permissions in it (both `NotAllowed`, RabbitMQ's 530).
    pub fn check_vhost_access(&self, user: &str, vhost: &str) -> Result<()> {
        self.access.check_vhost_access(&self.vhosts, user, vhost)
    }

    /// Whether `user` may do `access` on `resource` in `vhost`
    /// (`AccessRefused` with RabbitMQ's text otherwise). Front ends on a
    /// hot path cache [`Broker::permissions_for`] instead.
    pub fn authorize(
        &self,
        user: &str,
        vhost: &str,
        access: Access,
        resource: Resource<'_>,
    ) -> Result<()> {
        self.access.authorize(user, vhost, access, resource)
    }

    /// Imports users, vhosts and permissions from RabbitMQ definitions
    /// (`load_definitions`, `POST /api/definitions`). Everything is
    /// validated before anything changes; existing users are replaced.
    pub fn import_access(&self, defs: &AccessDefs) -> Result<()> {
        let vhost_limits = self.access.check_import(&self.vhosts, defs)?;
        for v in &defs.vhosts {
            self.add_vhost(&v.name)?;
        }
        self.access.apply_import(&self.vhosts, defs, &vhost_limits)
    }

    /// Users, vhosts and permissions in RabbitMQ's definitions shape.
    pub fn export_access(&self) -> AccessDefs {
        self.access.export(&self.vhosts)
    }

    /// Validates the vhost limits a definitions document carries (what
    /// [`import_vhost_limits`](Self::import_vhost_limits) would refuse),
    /// changing nothing.
    pub fn check_vhost_limits(defs: &AccessDefs) -> Result<Vec<(String, Limits)>> {
        limits::vhost_limit_params(defs)
    }

    /// The vhost limits of a per-vhost definitions document
    /// (`POST /api/definitions/{vhost}`): as RabbitMQ 3.10, every
    /// `vhost-limits` parameter goes to `vhost`, whatever vhost the entry
    /// names, and replaces its limits. Validated before anything changes;
    /// `NotFound` for an unknown vhost.
    pub fn import_vhost_limits(&self, vhost: &str, defs: &AccessDefs) -> Result<()> {
        self.access.import_vhost_limits(&self.vhosts, vhost, defs)
    }

    /// Sets a vhost limit (`max-connections`, `max-queues`; negative: no
    /// limit). `NotFound` for an unknown vhost.
    pub fn set_vhost_limit(&self, vhost: &str, name: &str, value: i64) -> Result<()> {
        self.access
            .set_vhost_limit(&self.vhosts, vhost, name, value)
    }

    /// Clears a vhost limit (absent: nothing to do). `NotFound` for an
    /// unknown vhost.
    pub fn clear_vhost_limit(&self, vhost: &str, name: &str) -> Result<()> {
        self.access.clear_vhost_limit(&self.vhosts, vhost, name)
    }

    /// Sets a user limit (`max-connections`, `max-channels`). `NotFound`
    /// for an unknown user.
    pub fn set_user_limit(&self, user: &str, name: &str, value: i64) -> Result<()> {
        self.access.set_user_limit(&self.vhosts, user, name, value)
    }

    /// Clears a user limit (absent: nothing to do). `NotFound` for an
    /// unknown user.
    pub fn clear_user_limit(&self, user: &str, name: &str) -> Result<()> {
        self.access.clear_user_limit(&self.vhosts, user, name)
    }

    /// One vhost limit.
    pub fn vhost_limit(&self, vhost: &str, name: &str) -> Option<i64> {
        self.access.vhost_limit(vhost, name)
    }

    /// One user limit.
    pub fn user_limit(&self, user: &str, name: &str) -> Option<i64> {
        self.access.user_limit(user, name)
    }

    /// Every vhost's limits, by vhost name (entries may be empty once
    /// their last limit was cleared, as in RabbitMQ).
    pub fn vhost_limits(&self) -> Vec<(String, Limits)> {
        self.access.vhost_limits()
    }

    /// Every user's limits, by user name.
    pub fn user_limits(&self) -> Vec<(String, Limits)> {
        self.access.user_limits()
    }

    // --- policies (`policies.rs`) ---

    /// Every policy of one kind, by vhost then name.
    pub fn list_policies(&self, kind: PolicyKind) -> Vec<PolicyDef> {
        self.policies.list(kind)
    }

    /// Adds or replaces a policy from its HTTP body (`pattern`,
    /// `definition`, `priority`, `apply-to`); true if it replaced one.
    pub fn put_policy(
        &self,
        kind: PolicyKind,
        vhost: &str,
        name: &str,
        body: &serde_json::Value,
    ) -> std::result::Result<bool, PolicyChangeError> {
        self.policies.put(&self.vhosts, kind, vhost, name, body)
    }

    /// Adds or replaces a validated policy (definitions import).
    pub fn put_policy_def(
        &self,
        kind: PolicyKind,
        def: PolicyDef,
    ) -> std::result::Result<bool, PolicyChangeError> {
        self.policies.put_def(&self.vhosts, kind, def)
    }

    /// Deletes a policy.
    pub fn delete_policy(
        &self,
        kind: PolicyKind,
        vhost: &str,
        name: &str,
    ) -> std::result::Result<(), PolicyChangeError> {
        self.policies.delete(&self.vhosts, kind, vhost, name)
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
