//! The broker's users, permissions, limits and access checks (RabbitMQ's
//! internal auth backend). Every change rewrites the access file
//! (`DATA/access`, which also lists the vhosts) before it is visible;
//! readers see the old database until then. Vhost and user limits (see
//! [`ferry_auth::limits`]) are part of it; `max-queues` is also pushed to
//! the vhost, which checks it on queue.declare. Connection and channel
//! counts are the front end's: it asks `Broker::vhost_limit` /
//! `Broker::user_limit`.
//!
//! Owns the user database (its `users` lock, read by every check), the
//! `access_write` lock (serializes changes, each rewriting the file; taken
//! before the broker's `policy_write` and any vhost lock), the access
//! epoch and the user-deletion hooks.

use super::limits::{check_name, vhost_limit_params};
use super::vhosts::VhostSet;
use super::UserDeletedHook;
use crate::vhost::VHost;
use ferry_auth::{
    store, Access, AccessDefs, CompiledPermissions, HashAlgorithm, LimitScope, Limits,
    ParameterDef, PasswordSpec, Permissions, Resource, Users, VhostDef, VHOST_LIMITS_COMPONENT,
};
use ferry_log::FileIo;
use ferry_queue::error::{CoreError, ErrorKind, Result};
use parking_lot::{Mutex, MutexGuard, RwLock, RwLockReadGuard};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub(super) fn not_found(text: String) -> CoreError {
    CoreError::request(ErrorKind::NotFound, text)
}

pub(super) fn invalid(text: String) -> CoreError {
    CoreError::request(ErrorKind::CommandInvalid, text)
}

/// RabbitMQ's refusal of an operation on a resource.
pub fn access_refused(resource: Resource<'_>, vhost: &str, user: &str) -> CoreError {
    CoreError::request(
        ErrorKind::AccessRefused,
        format!("access to {resource} in vhost '{vhost}' refused for user '{user}'"),
    )
}

/// The access database and its file.
pub(super) struct AccessDb {
    io: Arc<dyn FileIo>,
    data_dir: PathBuf,
    users: RwLock<Users>,
    /// Serializes changes of users, permissions and vhosts (each rewrites
    /// the access file); readers never wait for the fsync.
    access_write: Mutex<()>,
    /// Bumped by every change of users, permissions or vhosts, so a
    /// connection's cached permissions are refreshed with one atomic load.
    epoch: AtomicU64,
    user_hooks: Mutex<Vec<UserDeletedHook>>,
}

impl AccessDb {
    /// The database `users` (loaded from `data_dir`'s access file).
    pub(super) fn new(io: Arc<dyn FileIo>, data_dir: PathBuf, users: Users) -> Self {
        AccessDb {
            io,
            data_dir,
            users: RwLock::new(users),
            access_write: Mutex::new(()),
            epoch: AtomicU64::new(0),
            user_hooks: Mutex::new(Vec::new()),
        }
    }

    /// Takes `access_write` (vhost creation and deletion hold it across
    /// their change of the vhost set).
    pub(super) fn lock(&self) -> MutexGuard<'_, ()> {
        self.access_write.lock()
    }

    /// The user database.
    pub(super) fn users(&self) -> RwLockReadGuard<'_, Users> {
        self.users.read()
    }

    /// Changes so far.
    pub(super) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Marks a change outside the database (a vhost deleted).
    pub(super) fn bump_epoch(&self) {
        self.epoch.fetch_add(1, Ordering::Release);
    }

    /// Applies `f` to a copy of the users, persists it with the vhosts of
    /// `vhosts`, then publishes it. The caller holds `access_write`.
    pub(super) fn update_locked<T>(
        &self,
        vhosts: &VhostSet,
        f: impl FnOnce(&mut Users) -> Result<T>,
    ) -> Result<T> {
        let mut next = self.users.read().clone();
        let out = f(&mut next)?;
        store::save(self.io.as_ref(), &self.data_dir, &next, vhosts.names())?;
        *self.users.write() = next;
        self.epoch.fetch_add(1, Ordering::Release);
        Ok(out)
    }

    fn update<T>(&self, vhosts: &VhostSet, f: impl FnOnce(&mut Users) -> Result<T>) -> Result<T> {
        let _w = self.access_write.lock();
        self.update_locked(vhosts, f)
    }

    /// A fresh data directory's user: `name` as administrator with all
    /// permissions on `/`.
    pub(super) fn create_default_user(
        &self,
        vhosts: &VhostSet,
        name: String,
        pass: String,
    ) -> Result<()> {
        let has_root = vhosts.contains("/");
        self.update(vhosts, |u| {
            u.put(
                &name,
                PasswordSpec::Plain(pass),
                HashAlgorithm::Sha256,
                vec!["administrator".into()],
            )
            .map_err(invalid)?;
            if has_root {
                u.set_permissions(&name, "/", Permissions::all())
                    .map_err(invalid)?;
            }
            Ok(())
        })
    }

    /// `Broker::put_user`.
    pub(super) fn put_user(
        &self,
        vhosts: &VhostSet,
        name: &str,
        password: PasswordSpec,
        tags: Vec<String>,
    ) -> Result<()> {
        self.update(vhosts, |u| {
            u.put(name, password, HashAlgorithm::Sha256, tags)
                .map_err(invalid)
        })
    }

    /// `Broker::delete_user`.
    pub(super) fn delete_user(&self, vhosts: &VhostSet, name: &str) -> Result<()> {
        self.update(vhosts, |u| match u.remove(name) {
            true => Ok(()),
            false => Err(not_found(format!("user '{name}' not found"))),
        })?;
        let hooks: Vec<UserDeletedHook> = self.user_hooks.lock().clone();
        for h in hooks {
            h(name);
        }
        Ok(())
    }

    /// Registers a callback run after a user is deleted.
    pub(super) fn on_user_deleted(&self, hook: UserDeletedHook) {
        self.user_hooks.lock().push(hook);
    }

    /// `Broker::set_permissions`.
    pub(super) fn set_permissions(
        &self,
        vhosts: &VhostSet,
        user: &str,
        vhost: &str,
        p: Permissions,
    ) -> Result<()> {
        if !vhosts.contains(vhost) {
            return Err(not_found(format!("vhost {vhost} not found")));
        }
        self.update(vhosts, |u| {
            if u.get(user).is_none() {
                return Err(not_found(format!("user '{user}' not found")));
            }
            u.set_permissions(user, vhost, p).map_err(invalid)
        })
    }

    /// `Broker::clear_permissions`.
    pub(super) fn clear_permissions(
        &self,
        vhosts: &VhostSet,
        user: &str,
        vhost: &str,
    ) -> Result<()> {
        self.update(vhosts, |u| match u.clear_permissions(user, vhost) {
            true => Ok(()),
            false => Err(not_found(format!(
                "no permissions for user '{user}' in vhost '{vhost}'"
            ))),
        })
    }

    /// Every (user, vhost, permissions), sorted.
    pub(super) fn permissions(&self) -> Vec<(String, String, Permissions)> {
        self.users.read().permissions()
    }

    /// A user's compiled permissions in a vhost.
    pub(super) fn permissions_for(
        &self,
        user: &str,
        vhost: &str,
    ) -> Option<Arc<CompiledPermissions>> {
        self.users.read().permissions_for(user, vhost)
    }

    /// `Broker::check_vhost_access`.
    pub(super) fn check_vhost_access(
        &self,
        vhosts: &VhostSet,
        user: &str,
        vhost: &str,
    ) -> Result<()> {
        if !vhosts.contains(vhost) {
            return Err(CoreError::request(
                ErrorKind::NotAllowed,
                format!("vhost {vhost} not found"),
            ));
        }
        match self.users.read().permissions_for(user, vhost) {
            Some(_) => Ok(()),
            None => Err(CoreError::request(
                ErrorKind::NotAllowed,
                format!("access to vhost '{vhost}' refused for user '{user}'"),
            )),
        }
    }

    /// `Broker::authorize`.
    pub(super) fn authorize(
        &self,
        user: &str,
        vhost: &str,
        access: Access,
        resource: Resource<'_>,
    ) -> Result<()> {
        match self.users.read().permissions_for(user, vhost) {
            Some(p) if p.allows(access, resource) => Ok(()),
            _ => Err(access_refused(resource, vhost, user)),
        }
    }

    /// `Broker::import_access`'s checks, before anything changes: the
    /// users, permissions and vhost limits of `defs` are valid, and name
    /// vhosts that exist or that `defs` creates. Returns the vhost limits.
    pub(super) fn check_import(
        &self,
        vhosts: &VhostSet,
        defs: &AccessDefs,
    ) -> Result<Vec<(String, Limits)>> {
        if defs.vhosts.iter().any(|v| v.name.is_empty()) {
            return Err(invalid("vhost name must not be empty".into()));
        }
        let mut check = self.users.read().clone();
        for u in &defs.users {
            store::apply_user(&mut check, u).map_err(invalid)?;
        }
        for p in &defs.permissions {
            if check.get(&p.user).is_none() {
                return Err(not_found(format!("user '{}' not found", p.user)));
            }
            if !vhosts.contains(&p.vhost) && !defs.vhosts.iter().any(|v| v.name == p.vhost) {
                return Err(not_found(format!("vhost {} not found", p.vhost)));
            }
            store::apply_permission(&mut check, p).map_err(invalid)?;
        }
        let vhost_limits = vhost_limit_params(defs)?;
        for (vhost, _) in &vhost_limits {
            if !vhosts.contains(vhost) && !defs.vhosts.iter().any(|v| &v.name == vhost) {
                return Err(not_found(format!("vhost {vhost} not found")));
            }
        }
        Ok(vhost_limits)
    }

    /// `Broker::import_access` once its vhosts exist: users, permissions
    /// and `vhost_limits` (from `check_import`), then the limits pushed to
    /// their vhosts.
    pub(super) fn apply_import(
        &self,
        vhosts: &VhostSet,
        defs: &AccessDefs,
        vhost_limits: &[(String, Limits)],
    ) -> Result<()> {
        self.update(vhosts, |u| {
            for x in &defs.users {
                store::apply_user(u, x).map_err(invalid)?;
            }
            for p in &defs.permissions {
                store::apply_permission(u, p).map_err(invalid)?;
            }
            for (vhost, limits) in vhost_limits {
                u.put_vhost_limits(vhost, limits.clone());
            }
            Ok(())
        })?;
        for (vhost, _) in vhost_limits {
            if let Some(v) = vhosts.get(vhost) {
                v.set_max_queues(self.vhost_limit(vhost, "max-queues"));
            }
        }
        Ok(())
    }

    /// Users, vhosts and permissions in RabbitMQ's definitions shape.
    pub(super) fn export(&self, vhosts: &VhostSet) -> AccessDefs {
        let users = self.users.read();
        AccessDefs {
            users: store::user_defs(&users),
            vhosts: vhosts
                .names()
                .into_iter()
                .map(|name| VhostDef { name })
                .collect(),
            permissions: store::permission_defs(&users),
            parameters: users
                .vhost_limits()
                .iter()
                .map(|(vhost, limits)| ParameterDef {
                    vhost: vhost.clone(),
                    component: VHOST_LIMITS_COMPONENT.into(),
                    name: "limits".into(),
                    value: ferry_auth::limits::value_json(limits),
                })
                .collect(),
        }
    }

    // --- limits ---

    fn existing_vhost(vhosts: &VhostSet, vhost: &str) -> Result<Arc<VHost>> {
        vhosts
            .get(vhost)
            .ok_or_else(|| not_found(format!("vhost {vhost} not found")))
    }

    /// `Broker::set_vhost_limit`.
    pub(super) fn set_vhost_limit(
        &self,
        vhosts: &VhostSet,
        vhost: &str,
        name: &str,
        value: i64,
    ) -> Result<()> {
        check_name(LimitScope::Vhost, name)?;
        // Checked under `access_write`, which `delete_vhost` holds while it
        // removes the vhost and its limits: no limit outlives its vhost.
        let v = self.update(vhosts, |u| {
            let v = Self::existing_vhost(vhosts, vhost)?;
            u.set_vhost_limit(vhost, name, value);
            Ok(v)
        })?;
        v.set_max_queues(self.vhost_limit(vhost, "max-queues"));
        Ok(())
    }

    /// `Broker::clear_vhost_limit`.
    pub(super) fn clear_vhost_limit(
        &self,
        vhosts: &VhostSet,
        vhost: &str,
        name: &str,
    ) -> Result<()> {
        let v = Self::existing_vhost(vhosts, vhost)?;
        if self.vhost_limit(vhost, name).is_some() {
            self.update(vhosts, |u| {
                Self::existing_vhost(vhosts, vhost)?;
                u.clear_vhost_limit(vhost, name);
                Ok(())
            })?;
        }
        v.set_max_queues(self.vhost_limit(vhost, "max-queues"));
        Ok(())
    }

    /// `Broker::set_user_limit`.
    pub(super) fn set_user_limit(
        &self,
        vhosts: &VhostSet,
        user: &str,
        name: &str,
        value: i64,
    ) -> Result<()> {
        check_name(LimitScope::User, name)?;
        self.update(vhosts, |u| {
            if u.get(user).is_none() {
                return Err(not_found(format!("user '{user}' not found")));
            }
            u.set_user_limit(user, name, value);
            Ok(())
        })
    }

    /// `Broker::clear_user_limit`.
    pub(super) fn clear_user_limit(&self, vhosts: &VhostSet, user: &str, name: &str) -> Result<()> {
        if self.users.read().get(user).is_none() {
            return Err(not_found(format!("user '{user}' not found")));
        }
        if self.user_limit(user, name).is_none() {
            return Ok(());
        }
        self.update(vhosts, |u| {
            u.clear_user_limit(user, name);
            Ok(())
        })
    }

    /// One vhost limit.
    pub(super) fn vhost_limit(&self, vhost: &str, name: &str) -> Option<i64> {
        self.users.read().vhost_limit(vhost, name)
    }

    /// One user limit.
    pub(super) fn user_limit(&self, user: &str, name: &str) -> Option<i64> {
        self.users.read().user_limit(user, name)
    }

    /// Every vhost's limits, by vhost name.
    pub(super) fn vhost_limits(&self) -> Vec<(String, Limits)> {
        let users = self.users.read();
        users
            .vhost_limits()
            .iter()
            .map(|(v, l)| (v.clone(), l.clone()))
            .collect()
    }

    /// Every user's limits, by user name.
    pub(super) fn user_limits(&self) -> Vec<(String, Limits)> {
        let users = self.users.read();
        users
            .user_limits()
            .iter()
            .map(|(u, l)| (u.clone(), l.clone()))
            .collect()
    }

    /// `Broker::import_vhost_limits`.
    pub(super) fn import_vhost_limits(
        &self,
        vhosts: &VhostSet,
        vhost: &str,
        defs: &AccessDefs,
    ) -> Result<()> {
        let limits = vhost_limit_params(defs)?;
        if limits.is_empty() {
            return Ok(());
        }
        let v = Self::existing_vhost(vhosts, vhost)?;
        self.update(vhosts, |u| {
            for (_, l) in &limits {
                u.put_vhost_limits(vhost, l.clone());
            }
            Ok(())
        })?;
        v.set_max_queues(self.vhost_limit(vhost, "max-queues"));
        Ok(())
    }
}
