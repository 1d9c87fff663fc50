//! Policies and operator policies: validated, persisted in
//! `DATA/policies` before they are visible, then handed to the vhost,
//! which applies them to its queues and exchanges at once.
//!
//! Owns the node's policy set (its `policies` lock, held only to read or
//! swap the set) and the `policy_write` lock (serializes changes, each
//! rewriting the file; after the broker's `access_write`, before any
//! vhost lock).

use super::vhosts::VhostSet;
use crate::policy::{store, Policy, PolicyDef, PolicyError, PolicyKind, PolicySet, VhostPolicies};
use ferry_log::FileIo;
use ferry_queue::error::{CoreError, ErrorKind};
use parking_lot::{Mutex, RwLock};
use std::path::PathBuf;
use std::sync::Arc;

/// Why a policy change failed. Deliberately exhaustive: the HTTP layer
/// maps every variant to its status (a new one must be mapped there).
#[derive(Debug, thiserror::Error)]
pub enum PolicyChangeError {
    /// The vhost does not exist.
    #[error("vhost {0} not found")]
    NoVhost(String),
    /// No such policy (delete).
    #[error("policy not found")]
    NotFound,
    /// The policy is invalid (RabbitMQ's texts).
    #[error(transparent)]
    Invalid(#[from] PolicyError),
    /// Persisting failed.
    #[error(transparent)]
    Core(#[from] CoreError),
}

type Result<T> = std::result::Result<T, PolicyChangeError>;

/// Every vhost's policies and the policy file.
pub(super) struct Policies {
    io: Arc<dyn FileIo>,
    data_dir: PathBuf,
    set: RwLock<PolicySet>,
    /// Serializes policy changes (each rewrites the policy file).
    policy_write: Mutex<()>,
}

impl Policies {
    /// The set loaded from `data_dir`'s policy file.
    pub(super) fn new(io: Arc<dyn FileIo>, data_dir: PathBuf, set: PolicySet) -> Self {
        Policies {
            io,
            data_dir,
            set: RwLock::new(set),
            policy_write: Mutex::new(()),
        }
    }

    /// Vhost `name`'s policies.
    pub(super) fn vhost(&self, name: &str) -> Arc<VhostPolicies> {
        self.set.read().vhost(name)
    }

    /// Every policy of one kind, by vhost then name.
    pub(super) fn list(&self, kind: PolicyKind) -> Vec<PolicyDef> {
        self.set.read().list(kind)
    }

    /// Changes the policy set through `f`, persists it, publishes it and
    /// applies the vhost's new policies.
    fn update<T>(
        &self,
        vhosts: &VhostSet,
        vhost: &str,
        f: impl FnOnce(&mut PolicySet) -> Result<T>,
    ) -> Result<T> {
        let _w = self.policy_write.lock();
        // Resolved under `policy_write`: `delete_vhost` removes the vhost
        // before it takes the lock to forget its policies, so a change
        // that still finds it here is forgotten after it, never orphaned.
        let v = vhosts
            .get(vhost)
            .ok_or_else(|| PolicyChangeError::NoVhost(vhost.to_string()))?;
        let mut next = self.set.read().clone();
        let out = f(&mut next)?;
        store::save(self.io.as_ref(), &self.data_dir, &next)?;
        let mine = next.vhost(vhost);
        *self.set.write() = next;
        v.set_policies(mine);
        Ok(out)
    }

    /// `Broker::put_policy`.
    pub(super) fn put(
        &self,
        vhosts: &VhostSet,
        kind: PolicyKind,
        vhost: &str,
        name: &str,
        body: &serde_json::Value,
    ) -> Result<bool> {
        if !vhosts.contains(vhost) {
            return Err(PolicyChangeError::NoVhost(vhost.to_string()));
        }
        let def = crate::policy::validate(kind, vhost, name, body)?;
        self.put_def(vhosts, kind, def)
    }

    /// `Broker::put_policy_def`.
    pub(super) fn put_def(
        &self,
        vhosts: &VhostSet,
        kind: PolicyKind,
        def: PolicyDef,
    ) -> Result<bool> {
        let vhost = def.vhost.clone();
        let p = Policy::compile(def).map_err(|e| {
            CoreError::request(ErrorKind::CommandInvalid, format!("invalid policy: {e}"))
        })?;
        self.update(vhosts, &vhost, |set| {
            Ok(set.update(&vhost, |v| v.put(kind, p)))
        })
    }

    /// `Broker::delete_policy`.
    pub(super) fn delete(
        &self,
        vhosts: &VhostSet,
        kind: PolicyKind,
        vhost: &str,
        name: &str,
    ) -> Result<()> {
        self.update(vhosts, vhost, |set| {
            match set.update(vhost, |v| v.remove(kind, name)) {
                true => Ok(()),
                false => Err(PolicyChangeError::NotFound),
            }
        })
    }

    /// Drops a deleted vhost's policies (best effort: a failure to
    /// rewrite the file leaves entries that nothing matches).
    pub(super) fn forget_vhost(&self, vhost: &str) {
        let _w = self.policy_write.lock();
        let mut next = self.set.read().clone();
        next.remove_vhost(vhost);
        if let Err(e) = store::save(self.io.as_ref(), &self.data_dir, &next) {
            tracing::warn!(vhost, error = %e, "cannot rewrite the policy file");
        }
        *self.set.write() = next;
    }
}
