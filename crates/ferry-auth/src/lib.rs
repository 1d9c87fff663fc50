//! # ferry-auth: users, passwords, permissions and limits
//!
//! Owns users, password checks and permissions, with RabbitMQ's rules:
//! salted password hashes in RabbitMQ's format (see [`hash`]), tags, users
//! named in `loopback_users` may log in only from a loopback address, per
//! (user, vhost) configure / write / read expressions (see
//! [`permissions`]), user and vhost limits ([`limits`]), and the access
//! file they are kept in ([`store`]). ferry-broker's `Broker` owns one
//! [`Users`] and decides when to persist it.
//!
//! Must not: know queues, exchanges or any wire protocol, or do I/O other
//! than the access file through `ferry_log::FileIo`.

pub mod defs;
pub mod hash;
pub mod limits;
pub mod permissions;
pub mod store;

pub use defs::{
    AccessDefs, ParameterDef, PermissionDef, UserDef, VhostDef, VHOST_LIMITS_COMPONENT,
};
pub use hash::HashAlgorithm;
pub use limits::{LimitScope, Limits};
pub use permissions::{Access, CompiledPermissions, Permissions, Resource};

use hash::PasswordHash;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A user account.
#[derive(Debug, Clone)]
pub struct User {
    /// Login name.
    pub name: String,
    /// RabbitMQ tags (administrator, management, monitoring, policymaker,
    /// impersonator or anything else).
    pub tags: Vec<String>,
    /// Only accepted from loopback peers (the name is in `loopback_users`).
    pub loopback_only: bool,
    hash: PasswordHash,
}

impl User {
    /// The salted hash in RabbitMQ's base64 form ("" without a password).
    pub fn password_hash_b64(&self) -> String {
        self.hash.to_b64()
    }

    /// RabbitMQ's name of the hashing algorithm.
    pub fn hashing_algorithm(&self) -> &'static str {
        self.hash.algorithm().name()
    }

    /// Whether the user carries a tag.
    pub fn has_tag(&self, t: &str) -> bool {
        self.tags.iter().any(|x| x == t)
    }
}

/// How a user's password is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSpec {
    /// A clear text password, hashed with a fresh salt.
    Plain(String),
    /// RabbitMQ's `rabbit_password_hashing_sha256` base64 form.
    HashB64(String),
    /// No password: password logins always fail.
    NoPassword,
}

impl PasswordSpec {
    /// The same password as a salted hash: a clear text password is hashed
    /// here, once, so that every node that stores the user (a cluster
    /// replicates the change) stores the same hash.
    pub fn salted(self) -> PasswordSpec {
        match self {
            PasswordSpec::Plain(p) => PasswordSpec::HashB64(PasswordHash::new(&p).to_b64()),
            other => other,
        }
    }
}

/// Why a login failed (the front end answers ACCESS_REFUSED either way).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// Unknown user or wrong password.
    #[error("user '{0}' - invalid credentials")]
    InvalidCredentials(String),
    /// A loopback-only user connecting from elsewhere.
    #[error("user '{0}' can only connect via localhost")]
    LoopbackOnly(String),
}

/// The user database and everyone's permissions.
#[derive(Debug, Clone, Default)]
pub struct Users {
    users: BTreeMap<String, User>,
    /// (user, vhost) → compiled expressions, shared with the connections
    /// that cached them.
    perms: BTreeMap<(String, String), Arc<CompiledPermissions>>,
    loopback_users: Vec<String>,
    /// vhost → its limits. An entry stays (possibly empty) once a limit
    /// was set, as RabbitMQ's runtime parameter does.
    vhost_limits: BTreeMap<String, Limits>,
    /// user → its limits (never empty).
    user_limits: BTreeMap<String, Limits>,
}

impl Users {
    /// An empty database; `loopback_users` names users who may log in only
    /// from loopback addresses.
    pub fn new(loopback_users: Vec<String>) -> Self {
        Users {
            loopback_users,
            ..Users::default()
        }
    }

    /// Checks a login.
    pub fn authenticate(
        &self,
        name: &str,
        password: &str,
        from_loopback: bool,
    ) -> Result<&User, AuthError> {
        let user = self
            .users
            .get(name)
            .filter(|u| u.hash.verify(password))
            .ok_or_else(|| AuthError::InvalidCredentials(name.to_string()))?;
        if user.loopback_only && !from_loopback {
            return Err(AuthError::LoopbackOnly(name.to_string()));
        }
        Ok(user)
    }

    /// Looks a user up.
    pub fn get(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    /// Every user, sorted by name.
    pub fn list(&self) -> Vec<User> {
        self.users.values().cloned().collect()
    }

    /// A user's compiled permissions in a vhost.
    pub fn permissions_for(&self, user: &str, vhost: &str) -> Option<Arc<CompiledPermissions>> {
        self.perms
            .get(&(user.to_string(), vhost.to_string()))
            .cloned()
    }

    /// Every (user, vhost, permissions), sorted.
    pub fn permissions(&self) -> Vec<(String, String, Permissions)> {
        self.perms
            .iter()
            .map(|((u, v), p)| (u.clone(), v.clone(), p.source().clone()))
            .collect()
    }

    /// Creates or replaces a user (its permissions stay).
    pub fn put(
        &mut self,
        name: &str,
        password: PasswordSpec,
        algorithm: HashAlgorithm,
        tags: Vec<String>,
    ) -> Result<(), String> {
        if name.is_empty() {
            return Err("user name must not be empty".into());
        }
        let hash = match password {
            PasswordSpec::Plain(p) => PasswordHash::new(&p),
            PasswordSpec::HashB64(h) => PasswordHash::from_b64(&h, algorithm)?,
            PasswordSpec::NoPassword => PasswordHash::none(),
        };
        let tags = tags
            .into_iter()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect();
        let user = User {
            name: name.to_string(),
            tags,
            loopback_only: self.loopback_users.iter().any(|u| u == name),
            hash,
        };
        self.users.insert(name.to_string(), user);
        Ok(())
    }

    /// Deletes a user, its permissions and limits; false if absent.
    pub fn remove(&mut self, name: &str) -> bool {
        self.perms.retain(|(u, _), _| u != name);
        self.user_limits.remove(name);
        self.users.remove(name).is_some()
    }

    pub fn set_permissions(
        &mut self,
        user: &str,
        vhost: &str,
        p: Permissions,
    ) -> Result<(), String> {
        let compiled = CompiledPermissions::compile(p)?;
        self.perms
            .insert((user.to_string(), vhost.to_string()), Arc::new(compiled));
        Ok(())
    }

    pub fn clear_permissions(&mut self, user: &str, vhost: &str) -> bool {
        self.perms
            .remove(&(user.to_string(), vhost.to_string()))
            .is_some()
    }

    /// Drops every permission and the limits of a deleted vhost.
    pub fn remove_vhost(&mut self, vhost: &str) {
        self.perms.retain(|(_, v), _| v != vhost);
        self.vhost_limits.remove(vhost);
    }

    /// Every vhost's limits (an entry may be empty once its last limit
    /// was cleared, as in RabbitMQ).
    pub fn vhost_limits(&self) -> &BTreeMap<String, Limits> {
        &self.vhost_limits
    }

    /// Every user's limits.
    pub fn user_limits(&self) -> &BTreeMap<String, Limits> {
        &self.user_limits
    }

    /// One vhost limit (`max-connections`, `max-queues`).
    pub fn vhost_limit(&self, vhost: &str, name: &str) -> Option<i64> {
        self.vhost_limits.get(vhost)?.get(name).copied()
    }

    /// One user limit (`max-connections`, `max-channels`).
    pub fn user_limit(&self, user: &str, name: &str) -> Option<i64> {
        self.user_limits.get(user)?.get(name).copied()
    }

    pub fn set_vhost_limit(&mut self, vhost: &str, name: &str, value: i64) {
        self.vhost_limits
            .entry(vhost.to_string())
            .or_default()
            .insert(name.to_string(), value);
    }

    pub fn clear_vhost_limit(&mut self, vhost: &str, name: &str) {
        if let Some(l) = self.vhost_limits.get_mut(vhost) {
            l.remove(name);
        }
    }

    /// Replaces a vhost's limits (the access file, definitions import).
    pub fn put_vhost_limits(&mut self, vhost: &str, limits: Limits) {
        self.vhost_limits.insert(vhost.to_string(), limits);
    }

    pub fn set_user_limit(&mut self, user: &str, name: &str, value: i64) {
        self.user_limits
            .entry(user.to_string())
            .or_default()
            .insert(name.to_string(), value);
    }

    pub fn clear_user_limit(&mut self, user: &str, name: &str) {
        if let Some(l) = self.user_limits.get_mut(user) {
            l.remove(name);
            if l.is_empty() {
                self.user_limits.remove(user);
            }
        }
    }

    /// Replaces a user's limits (empty: none).
    pub fn put_user_limits(&mut self, user: &str, limits: Limits) {
        if limits.is_empty() {
            self.user_limits.remove(user);
        } else {
            self.user_limits.insert(user.to_string(), limits);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guest_db() -> Users {
        let mut u = Users::new(vec!["guest".into()]);
        u.put(
            "guest",
            PasswordSpec::Plain("guest".into()),
            HashAlgorithm::Sha256,
            vec!["administrator".into()],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        u
    }

    #[test]
    fn guest_only_from_loopback() {
        let u = guest_db();
        assert!(u.authenticate("guest", "guest", true).is_ok());
        assert_eq!(
            u.authenticate("guest", "guest", false).err(),
            Some(AuthError::LoopbackOnly("guest".into()))
        );
        assert!(u.authenticate("guest", "nope", true).is_err());
        assert!(u.authenticate("nobody", "guest", true).is_err());
        assert!(u.get("guest").is_some_and(|g| g.has_tag("administrator")));
    }

    #[test]
    fn no_password_never_logs_in() {
        let mut u = Users::new(Vec::new());
        u.put(
            "svc",
            PasswordSpec::NoPassword,
            HashAlgorithm::Sha256,
            Vec::new(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(u.authenticate("svc", "", true).is_err());
        assert_eq!(
            u.get("svc").map(|s| s.password_hash_b64()),
            Some(String::new())
        );
    }

    #[test]
    fn removing_a_user_drops_its_permissions() {
        let mut u = guest_db();
        u.set_permissions("guest", "/", Permissions::all())
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(u.permissions_for("guest", "/").is_some());
        assert!(u.remove("guest"));
        assert!(u.permissions_for("guest", "/").is_none());
        assert!(!u.remove("guest"));
    }
}
