//! The broker's users, permissions and access checks (RabbitMQ's internal
//! auth backend). Every change rewrites the access file before it is
//! visible; readers see the old database until then.

use super::Broker;
use ferry_auth::{
    store, Access, AccessDefs, CompiledPermissions, HashAlgorithm, LimitScope, Limits,
    ParameterDef, PasswordSpec, Permissions, Resource, Users, VhostDef, VHOST_LIMITS_COMPONENT,
};
use ferry_queue::error::{CoreError, ErrorKind, Result};
use std::sync::atomic::Ordering;
use std::sync::Arc;

fn not_found(text: String) -> CoreError {
    CoreError::request(ErrorKind::NotFound, text)
}

fn invalid(text: String) -> CoreError {
    CoreError::request(ErrorKind::CommandInvalid, text)
}

/// RabbitMQ's refusal of an operation on a resource.
pub fn access_refused(resource: Resource<'_>, vhost: &str, user: &str) -> CoreError {
    CoreError::request(
        ErrorKind::AccessRefused,
        format!("access to {resource} in vhost '{vhost}' refused for user '{user}'"),
    )
}

impl Broker {
    /// Applies `f` to a copy of the users, persists it, then publishes it.
    /// The caller holds `access_write`.
    pub(super) fn update_users_locked<T>(
        &self,
        f: impl FnOnce(&mut Users) -> Result<T>,
    ) -> Result<T> {
        let mut next = self.users.read().clone();
        let out = f(&mut next)?;
        store::save(
            self.env.io.as_ref(),
            &self.config.data_dir,
            &next,
            self.vhost_names(),
        )?;
        *self.users.write() = next;
        self.access_epoch.fetch_add(1, Ordering::Release);
        Ok(out)
    }

    pub(super) fn update_users<T>(&self, f: impl FnOnce(&mut Users) -> Result<T>) -> Result<T> {
        let _w = self.access_write.lock();
        self.update_users_locked(f)
    }

    /// A fresh data directory's user: `default_user` as administrator with
    /// all permissions on `/`.
    pub(super) fn create_default_user(&self) -> Result<()> {
        let name = self.config.default_user.clone();
        let pass = self.config.default_pass.clone();
        let has_root = self.vhosts.read().contains_key("/");
        self.update_users(|u| {
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

    /// Creates or updates a user (permissions stay), persisted.
    pub fn put_user(&self, name: &str, password: PasswordSpec, tags: Vec<String>) -> Result<()> {
        self.update_users(|u| {
            u.put(name, password, HashAlgorithm::Sha256, tags)
                .map_err(invalid)
        })
    }

    /// Deletes a user and its permissions (`NotFound` if absent).
    /// Its open connections are closed by the hooks (see
    /// [`Broker::on_user_deleted`]).
    pub fn delete_user(&self, name: &str) -> Result<()> {
        self.update_users(|u| match u.remove(name) {
            true => Ok(()),
            false => Err(not_found(format!("user '{name}' not found"))),
        })?;
        let hooks: Vec<super::UserDeletedHook> = self.user_hooks.lock().clone();
        for h in hooks {
            h(name);
        }
        Ok(())
    }

    /// Registers a callback run after a user is deleted.
    pub fn on_user_deleted(&self, hook: super::UserDeletedHook) {
        self.user_hooks.lock().push(hook);
    }

    /// Sets a user's permissions in a vhost; `NotFound` for an unknown
    /// user or vhost, `CommandInvalid` for a bad expression.
    pub fn set_permissions(&self, user: &str, vhost: &str, p: Permissions) -> Result<()> {
        if !self.vhosts.read().contains_key(vhost) {
            return Err(not_found(format!("vhost {vhost} not found")));
        }
        self.update_users(|u| {
            if u.get(user).is_none() {
                return Err(not_found(format!("user '{user}' not found")));
            }
            u.set_permissions(user, vhost, p).map_err(invalid)
        })
    }

    /// Removes a user's permissions in a vhost (`NotFound` if none).
    pub fn clear_permissions(&self, user: &str, vhost: &str) -> Result<()> {
        self.update_users(|u| match u.clear_permissions(user, vhost) {
            true => Ok(()),
            false => Err(not_found(format!(
                "no permissions for user '{user}' in vhost '{vhost}'"
            ))),
        })
    }

    /// Every (user, vhost, permissions), sorted.
    pub fn permissions(&self) -> Vec<(String, String, Permissions)> {
        self.users.read().permissions()
    }

    /// A user's compiled permissions in a vhost, for a connection to cache
    /// (refresh when [`Broker::access_epoch`] moves).
    pub fn permissions_for(&self, user: &str, vhost: &str) -> Option<Arc<CompiledPermissions>> {
        self.users.read().permissions_for(user, vhost)
    }

    /// connection.open's check: the vhost exists and the user has
    /// permissions in it (both `NotAllowed`, RabbitMQ's 530).
    pub fn check_vhost_access(&self, user: &str, vhost: &str) -> Result<()> {
        if !self.vhosts.read().contains_key(vhost) {
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
        match self.users.read().permissions_for(user, vhost) {
            Some(p) if p.allows(access, resource) => Ok(()),
            _ => Err(access_refused(resource, vhost, user)),
        }
    }

    /// Imports users, vhosts and permissions from RabbitMQ definitions
    /// (`load_definitions`, `POST /api/definitions`). Everything is
    /// validated before anything changes; existing users are replaced.
    pub fn import_access(&self, defs: &AccessDefs) -> Result<()> {
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
            if !self.vhosts.read().contains_key(&p.vhost)
                && !defs.vhosts.iter().any(|v| v.name == p.vhost)
            {
                return Err(not_found(format!("vhost {} not found", p.vhost)));
            }
            store::apply_permission(&mut check, p).map_err(invalid)?;
        }
        let vhost_limits = vhost_limit_params(defs)?;
        for (vhost, _) in &vhost_limits {
            if !self.vhosts.read().contains_key(vhost)
                && !defs.vhosts.iter().any(|v| &v.name == vhost)
            {
                return Err(not_found(format!("vhost {vhost} not found")));
            }
        }
        for v in &defs.vhosts {
            self.add_vhost(&v.name)?;
        }
        self.update_users(|u| {
            for x in &defs.users {
                store::apply_user(u, x).map_err(invalid)?;
            }
            for p in &defs.permissions {
                store::apply_permission(u, p).map_err(invalid)?;
            }
            for (vhost, limits) in &vhost_limits {
                u.put_vhost_limits(vhost, limits.clone());
            }
            Ok(())
        })?;
        for (vhost, _) in &vhost_limits {
            if let Some(v) = self.vhosts.read().get(vhost) {
                v.set_max_queues(self.vhost_limit(vhost, "max-queues"));
            }
        }
        Ok(())
    }

    /// Users, vhosts and permissions in RabbitMQ's definitions shape.
    pub fn export_access(&self) -> AccessDefs {
        let users = self.users.read();
        AccessDefs {
            users: store::user_defs(&users),
            vhosts: self
                .vhost_names()
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
}

impl Broker {
    /// Validates the vhost limits a definitions document carries (what
    /// [`import_vhost_limits`](Self::import_vhost_limits) would refuse),
    /// changing nothing.
    pub fn check_vhost_limits(defs: &AccessDefs) -> Result<Vec<(String, Limits)>> {
        vhost_limit_params(defs)
    }

    /// The vhost limits of a per-vhost definitions document
    /// (`POST /api/definitions/{vhost}`): as RabbitMQ 3.10, every
    /// `vhost-limits` parameter goes to `vhost`, whatever vhost the entry
    /// names, and replaces its limits. Validated before anything changes;
    /// `NotFound` for an unknown vhost.
    pub fn import_vhost_limits(&self, vhost: &str, defs: &AccessDefs) -> Result<()> {
        let limits = Self::check_vhost_limits(defs)?;
        if limits.is_empty() {
            return Ok(());
        }
        let v = self
            .vhost(vhost)
            .map_err(|_| not_found(format!("vhost {vhost} not found")))?;
        self.update_users(|u| {
            for (_, l) in &limits {
                u.put_vhost_limits(vhost, l.clone());
            }
            Ok(())
        })?;
        v.set_max_queues(self.vhost_limit(vhost, "max-queues"));
        Ok(())
    }
}

/// The vhost limits carried by a definitions document's `parameters`
/// (component `vhost-limits`), validated as the API validates them.
fn vhost_limit_params(defs: &AccessDefs) -> Result<Vec<(String, Limits)>> {
    let mut out = Vec::new();
    for p in defs
        .parameters
        .iter()
        .filter(|p| p.component == VHOST_LIMITS_COMPONENT)
    {
        let mut limits = Limits::new();
        if let Some(map) = p.value.as_object() {
            for (name, value) in map {
                let n = ferry_auth::limits::validate(LimitScope::Vhost, name, value)
                    .map_err(invalid)?;
                limits.insert(name.clone(), n);
            }
        }
        out.push((p.vhost.clone(), limits));
    }
    Ok(out)
}
