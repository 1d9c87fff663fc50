//! Policies and operator policies: validated, persisted in
//! `DATA/policies` before they are visible, then handed to the vhost,
//! which applies them to its queues and exchanges at once.

use super::Broker;
use crate::policy::{store, Policy, PolicyDef, PolicyError, PolicyKind, PolicySet};
use ferry_queue::error::{CoreError, ErrorKind};

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

impl Broker {
    /// Every policy of one kind, by vhost then name.
    pub fn list_policies(&self, kind: PolicyKind) -> Vec<PolicyDef> {
        self.policies.read().list(kind)
    }

    /// Changes the policy set through `f`, persists it, publishes it and
    /// applies the vhost's new policies.
    fn update_policies<T>(
        &self,
        vhost: &str,
        f: impl FnOnce(&mut PolicySet) -> std::result::Result<T, PolicyChangeError>,
    ) -> std::result::Result<T, PolicyChangeError> {
        let _w = self.policy_write.lock();
        // Resolved under `policy_write`: `delete_vhost` removes the vhost
        // before it takes the lock to forget its policies, so a change
        // that still finds it here is forgotten after it, never orphaned.
        let v = self
            .vhost(vhost)
            .map_err(|_| PolicyChangeError::NoVhost(vhost.to_string()))?;
        let mut next = self.policies.read().clone();
        let out = f(&mut next)?;
        store::save(self.env.io.as_ref(), &self.config.data_dir, &next)?;
        let mine = next.vhost(vhost);
        *self.policies.write() = next;
        v.set_policies(mine);
        Ok(out)
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
        if self.vhost(vhost).is_err() {
            return Err(PolicyChangeError::NoVhost(vhost.to_string()));
        }
        let def = crate::policy::validate(kind, vhost, name, body)?;
        self.put_policy_def(kind, def)
    }

    /// Adds or replaces a validated policy (definitions import).
    pub fn put_policy_def(
        &self,
        kind: PolicyKind,
        def: PolicyDef,
    ) -> std::result::Result<bool, PolicyChangeError> {
        let vhost = def.vhost.clone();
        let p = Policy::compile(def).map_err(|e| {
            CoreError::request(ErrorKind::CommandInvalid, format!("invalid policy: {e}"))
        })?;
        self.update_policies(&vhost, |set| Ok(set.update(&vhost, |v| v.put(kind, p))))
    }

    /// Deletes a policy.
    pub fn delete_policy(
        &self,
        kind: PolicyKind,
        vhost: &str,
        name: &str,
    ) -> std::result::Result<(), PolicyChangeError> {
        self.update_policies(vhost, |set| {
            match set.update(vhost, |v| v.remove(kind, name)) {
                true => Ok(()),
                false => Err(PolicyChangeError::NotFound),
            }
        })
    }

    /// Drops a deleted vhost's policies (best effort: a failure to
    /// rewrite the file leaves entries that nothing matches).
    pub(super) fn forget_vhost_policies(&self, vhost: &str) {
        let _w = self.policy_write.lock();
        let mut next = self.policies.read().clone();
        next.remove_vhost(vhost);
        if let Err(e) = store::save(self.env.io.as_ref(), &self.config.data_dir, &next) {
            tracing::warn!(vhost, error = %e, "cannot rewrite the policy file");
        }
        *self.policies.write() = next;
    }
}
