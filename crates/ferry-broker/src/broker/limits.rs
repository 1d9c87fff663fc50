//! Vhost and user limits (see [`ferry_auth::limits`]): set and cleared
//! through the access database, so they are persisted in `DATA/access`
//! before they are visible; `max-queues` is also pushed to the vhost,
//! which checks it on queue.declare. Connection and channel counts are the
//! front end's: it asks [`Broker::vhost_limit`] / [`Broker::user_limit`].

use super::Broker;
use ferry_auth::limits::{LimitScope, Limits, USER_LIMITS, VHOST_LIMITS};
use ferry_queue::error::{CoreError, ErrorKind, Result};

fn not_found(text: String) -> CoreError {
    CoreError::request(ErrorKind::NotFound, text)
}

fn check_name(scope: LimitScope, name: &str) -> Result<()> {
    let known = match scope {
        LimitScope::Vhost => VHOST_LIMITS.contains(&name),
        LimitScope::User => USER_LIMITS.contains(&name),
    };
    match known {
        true => Ok(()),
        false => Err(CoreError::request(
            ErrorKind::CommandInvalid,
            format!("unknown limit '{name}'"),
        )),
    }
}

impl Broker {
    fn existing_vhost(&self, vhost: &str) -> Result<std::sync::Arc<crate::VHost>> {
        self.vhost(vhost)
            .map_err(|_| not_found(format!("vhost {vhost} not found")))
    }

    /// Sets a vhost limit (`max-connections`, `max-queues`; negative: no
    /// limit). `NotFound` for an unknown vhost.
    pub fn set_vhost_limit(&self, vhost: &str, name: &str, value: i64) -> Result<()> {
        check_name(LimitScope::Vhost, name)?;
        // Checked under `access_write`, which `delete_vhost` holds while it
        // removes the vhost and its limits: no limit outlives its vhost.
        let v = self.update_users(|u| {
            let v = self.existing_vhost(vhost)?;
            u.set_vhost_limit(vhost, name, value);
            Ok(v)
        })?;
        v.set_max_queues(self.vhost_limit(vhost, "max-queues"));
        Ok(())
    }

    /// Clears a vhost limit (absent: nothing to do). `NotFound` for an
    /// unknown vhost.
    pub fn clear_vhost_limit(&self, vhost: &str, name: &str) -> Result<()> {
        let v = self.existing_vhost(vhost)?;
        if self.vhost_limit(vhost, name).is_some() {
            self.update_users(|u| {
                self.existing_vhost(vhost)?;
                u.clear_vhost_limit(vhost, name);
                Ok(())
            })?;
        }
        v.set_max_queues(self.vhost_limit(vhost, "max-queues"));
        Ok(())
    }

    /// Sets a user limit (`max-connections`, `max-channels`). `NotFound`
    /// for an unknown user.
    pub fn set_user_limit(&self, user: &str, name: &str, value: i64) -> Result<()> {
        check_name(LimitScope::User, name)?;
        self.update_users(|u| {
            if u.get(user).is_none() {
                return Err(not_found(format!("user '{user}' not found")));
            }
            u.set_user_limit(user, name, value);
            Ok(())
        })
    }

    /// Clears a user limit (absent: nothing to do). `NotFound` for an
    /// unknown user.
    pub fn clear_user_limit(&self, user: &str, name: &str) -> Result<()> {
        if self.users.read().get(user).is_none() {
            return Err(not_found(format!("user '{user}' not found")));
        }
        if self.user_limit(user, name).is_none() {
            return Ok(());
        }
        self.update_users(|u| {
            u.clear_user_limit(user, name);
            Ok(())
        })
    }

    /// One vhost limit.
    pub fn vhost_limit(&self, vhost: &str, name: &str) -> Option<i64> {
        self.users.read().vhost_limit(vhost, name)
    }

    /// One user limit.
    pub fn user_limit(&self, user: &str, name: &str) -> Option<i64> {
        self.users.read().user_limit(user, name)
    }

    /// Every vhost's limits, by vhost name (entries may be empty once
    /// their last limit was cleared, as in RabbitMQ).
    pub fn vhost_limits(&self) -> Vec<(String, Limits)> {
        let users = self.users.read();
        users
            .vhost_limits()
            .iter()
            .map(|(v, l)| (v.clone(), l.clone()))
            .collect()
    }

    /// Every user's limits, by user name.
    pub fn user_limits(&self) -> Vec<(String, Limits)> {
        let users = self.users.read();
        users
            .user_limits()
            .iter()
            .map(|(u, l)| (u.clone(), l.clone()))
            .collect()
    }
}
