//! Users and password checks. RabbitMQ's rule for the default user holds:
//! `guest` may log in only from a loopback address.

use std::collections::HashMap;

/// A user account.
#[derive(Debug, Clone)]
pub struct User {
    /// Login name.
    pub name: String,
    password: String,
    /// Only accepted from loopback peers.
    pub loopback_only: bool,
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

/// The user database.
#[derive(Debug, Clone, Default)]
pub struct Users {
    users: HashMap<String, User>,
}

impl Users {
    /// A database holding only `guest`/`guest` (loopback only).
    pub fn with_default_guest() -> Self {
        let mut u = Users::default();
        u.add("guest", "guest", true);
        u
    }

    /// Adds or replaces a user.
    pub fn add(&mut self, name: &str, password: &str, loopback_only: bool) {
        self.users.insert(
            name.to_string(),
            User {
                name: name.to_string(),
                password: password.to_string(),
                loopback_only,
            },
        );
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
            .filter(|u| constant_time_eq(u.password.as_bytes(), password.as_bytes()))
            .ok_or_else(|| AuthError::InvalidCredentials(name.to_string()))?;
        if user.loopback_only && !from_loopback {
            return Err(AuthError::LoopbackOnly(name.to_string()));
        }
        Ok(user)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_only_from_loopback() {
        let u = Users::with_default_guest();
        assert!(u.authenticate("guest", "guest", true).is_ok());
        assert_eq!(
            u.authenticate("guest", "guest", false).err(),
            Some(AuthError::LoopbackOnly("guest".into()))
        );
        assert!(u.authenticate("guest", "nope", true).is_err());
        assert!(u.authenticate("nobody", "guest", true).is_err());
    }
}
