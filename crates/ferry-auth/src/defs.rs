//! The users / vhosts / permissions part of RabbitMQ's definitions JSON
//! (`rabbitmqctl export_definitions`, `GET /api/definitions`,
//! `load_definitions`), with user limits (`users[].limits`) and vhost
//! limits (`parameters` of component `vhost-limits`). Unknown fields
//! (`metadata`, ...) and other parameters are ignored on import.

use super::hash::SHA256;
use super::limits::Limits;
use serde::{Deserialize, Deserializer, Serialize};

/// Users, vhosts and permissions as RabbitMQ's definitions carry them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AccessDefs {
    /// Users.
    #[serde(default)]
    pub users: Vec<UserDef>,
    /// Virtual hosts.
    #[serde(default)]
    pub vhosts: Vec<VhostDef>,
    /// Permissions.
    #[serde(default)]
    pub permissions: Vec<PermissionDef>,
    /// Runtime parameters: those of component `vhost-limits` (name
    /// `limits`) carry vhost limits; others are ignored.
    #[serde(default)]
    pub parameters: Vec<ParameterDef>,
}

/// A runtime parameter entry (`{"vhost": "/", "component": "vhost-limits",
/// "name": "limits", "value": {"max-queues": 10}}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParameterDef {
    /// Vhost (may be absent in a per-vhost import).
    #[serde(default)]
    pub vhost: String,
    /// Component (`vhost-limits`, ...).
    pub component: String,
    /// Name (`limits` for vhost limits).
    pub name: String,
    /// Value (for vhost limits: name → integer; `[]` when none is left).
    pub value: serde_json::Value,
}

/// The component of vhost limits' runtime parameter.
pub const VHOST_LIMITS_COMPONENT: &str = "vhost-limits";

/// A user entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserDef {
    /// Login name.
    pub name: String,
    /// `base64(salt ‖ hash)`; empty for a user without a password.
    #[serde(default)]
    pub password_hash: String,
    /// A clear text password (accepted on import instead of a hash, as
    /// RabbitMQ does; never exported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// `rabbit_password_hashing_sha256` (or `..._sha512`).
    #[serde(default = "default_algorithm")]
    pub hashing_algorithm: String,
    /// Tags: RabbitMQ 3.10 exports a list; older versions a comma
    /// separated string. Both are read.
    #[serde(default, deserialize_with = "tags")]
    pub tags: Vec<String>,
    /// User limits (`max-connections`, `max-channels`).
    #[serde(default)]
    pub limits: Limits,
}

/// A vhost entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VhostDef {
    /// Name.
    pub name: String,
}

/// A permissions entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PermissionDef {
    /// User name.
    pub user: String,
    /// Vhost name.
    pub vhost: String,
    /// Configure expression.
    pub configure: String,
    /// Write expression.
    pub write: String,
    /// Read expression.
    pub read: String,
}

impl AccessDefs {
    /// The same definitions with every clear text password replaced by a
    /// salted hash (as importing would store it), so that every node that
    /// applies them (a cluster replicates imports) stores the same hash.
    pub fn salted(mut self) -> Self {
        for u in &mut self.users {
            if let (Some(p), true) = (&u.password, u.password_hash.is_empty()) {
                u.password_hash = super::hash::PasswordHash::new(p).to_b64();
                u.hashing_algorithm = SHA256.to_string();
            }
            u.password = None;
        }
        self
    }
}

fn default_algorithm() -> String {
    SHA256.to_string()
}

fn tags<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Tags {
        List(Vec<String>),
        Csv(String),
    }
    Ok(match Tags::deserialize(d)? {
        Tags::List(v) => v,
        Tags::Csv(s) => s
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(String::from)
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rabbitmq_3_10_export() {
        // Trimmed from `rabbitmqctl export_definitions` on RabbitMQ 3.10.8.
        let json = r#"{"rabbit_version":"3.10.8","users":[
            {"hashing_algorithm":"rabbit_password_hashing_sha256","limits":{},"name":"bob",
             "password_hash":"ZWL39wRyKV9y87LKOUTXD/T6LlDI6zY79hWaO+++9jx8QAL2","tags":[]},
            {"hashing_algorithm":"rabbit_password_hashing_sha256","limits":{},"name":"guest",
             "password_hash":"FtMzsNljSP6OvGxZ82sVVCBzj/1jiASA1G1i3ECxJ6wfycu2","tags":["administrator"]}],
            "vhosts":[{"limits":[],"metadata":{"description":"Default virtual host","tags":[]},"name":"/"},
                      {"limits":[],"metadata":{"description":"","tags":""},"name":"v2"}],
            "permissions":[{"configure":"foo","read":"foo","user":"bob","vhost":"/","write":"foo"}],
            "queues":[],"exchanges":[],"bindings":[]}"#;
        let d: AccessDefs = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.users.len(), 2);
        assert_eq!(d.users[1].tags, vec!["administrator".to_string()]);
        assert_eq!(d.vhosts[1].name, "v2");
        assert_eq!(d.permissions[0].configure, "foo");
        let old: UserDef =
            serde_json::from_str(r#"{"name":"a","tags":"administrator, monitoring"}"#)
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(old.tags, vec!["administrator", "monitoring"]);
        assert_eq!(old.hashing_algorithm, SHA256);
    }
}
