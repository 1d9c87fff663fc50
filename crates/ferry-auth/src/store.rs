//! The access file `DATA/access`: vhosts, users and permissions, framed
//! like the vhost definitions (magic "FRYACC01", see `docs/storage.md`),
//! with a JSON body in RabbitMQ's definitions shape. It is the record of
//! which vhosts exist (a vhost's directory only holds its data), so
//! creating or deleting one commits with a single atomic rename. Limits
//! ride along: a user's in its entry (`limits`), vhosts' in
//! `vhost_limits` (vhost → name → value).

use super::defs::{PermissionDef, UserDef, VhostDef};
use super::{HashAlgorithm, Limits, PasswordSpec, Permissions, Users};
use ferry_log::framed::{self, FramedError};
use ferry_log::FileIo;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

const MAGIC: &[u8; 8] = b"FRYACC01";
const NAME: &str = "access";

#[derive(Serialize, Deserialize)]
struct AccessFile {
    version: u32,
    vhosts: Vec<VhostDef>,
    users: Vec<UserDef>,
    permissions: Vec<PermissionDef>,
    #[serde(default)]
    vhost_limits: BTreeMap<String, Limits>,
}

/// The users' entries in definitions form.
pub fn user_defs(users: &Users) -> Vec<UserDef> {
    users
        .users
        .values()
        .map(|u| UserDef {
            name: u.name.clone(),
            password_hash: u.password_hash_b64(),
            password: None,
            hashing_algorithm: u.hashing_algorithm().to_string(),
            tags: u.tags.clone(),
            limits: users
                .user_limits()
                .get(&u.name)
                .cloned()
                .unwrap_or_default(),
        })
        .collect()
}

/// The permissions' entries in definitions form.
pub fn permission_defs(users: &Users) -> Vec<PermissionDef> {
    users
        .permissions()
        .into_iter()
        .map(|(user, vhost, p)| PermissionDef {
            user,
            vhost,
            configure: p.configure,
            write: p.write,
            read: p.read,
        })
        .collect()
}

/// Adds or replaces a user from its definitions entry.
pub fn apply_user(users: &mut Users, u: &UserDef) -> std::result::Result<(), String> {
    let algorithm = HashAlgorithm::parse(&u.hashing_algorithm)
        .ok_or_else(|| format!("unsupported hashing_algorithm '{}'", u.hashing_algorithm))?;
    let password = match (&u.password, u.password_hash.is_empty()) {
        (Some(p), true) => PasswordSpec::Plain(p.clone()),
        (_, false) => PasswordSpec::HashB64(u.password_hash.clone()),
        (None, true) => PasswordSpec::NoPassword,
    };
    users
        .put(&u.name, password, algorithm, u.tags.clone())
        .map_err(|e| format!("user '{}': {e}", u.name))?;
    // An entry without limits leaves the user's limits as they are.
    if !u.limits.is_empty() {
        users.put_user_limits(&u.name, u.limits.clone());
    }
    Ok(())
}

/// Sets permissions from a definitions entry.
pub fn apply_permission(users: &mut Users, p: &PermissionDef) -> std::result::Result<(), String> {
    users.set_permissions(
        &p.user,
        &p.vhost,
        Permissions {
            configure: p.configure.clone(),
            write: p.write.clone(),
            read: p.read.clone(),
        },
    )
}

/// Writes the access file atomically.
pub fn save(
    io: &dyn FileIo,
    dir: &Path,
    users: &Users,
    vhosts: Vec<String>,
) -> Result<(), FramedError> {
    let file = AccessFile {
        version: 1,
        vhosts: vhosts.into_iter().map(|name| VhostDef { name }).collect(),
        users: user_defs(users),
        permissions: permission_defs(users),
        vhost_limits: users.vhost_limits().clone(),
    };
    let json = serde_json::to_vec(&file).map_err(|e| FramedError::Corrupt(e.to_string()))?;
    framed::save(io, dir, NAME, MAGIC, &json)
}

/// Reads the access file: users and vhost names; `None` on a fresh data
/// directory.
pub fn load(
    io: &dyn FileIo,
    dir: &Path,
    loopback: Vec<String>,
) -> Result<Option<(Users, Vec<String>)>, FramedError> {
    let path = dir.join(NAME);
    let Some(body) = framed::load(io, &path, MAGIC)? else {
        return Ok(None);
    };
    let bad = |e: String| FramedError::Corrupt(format!("access file {}: {e}", path.display()));
    let file: AccessFile = serde_json::from_slice(&body).map_err(|e| bad(e.to_string()))?;
    let mut users = Users::new(loopback);
    for u in &file.users {
        apply_user(&mut users, u).map_err(bad)?;
    }
    for p in &file.permissions {
        apply_permission(&mut users, p).map_err(bad)?;
    }
    for (vhost, limits) in file.vhost_limits {
        users.put_vhost_limits(&vhost, limits);
    }
    Ok(Some((
        users,
        file.vhosts.into_iter().map(|v| v.name).collect(),
    )))
}
