//! Checks of vhost and user limits (see [`ferry_auth::limits`]) before
//! they reach the access database (`access.rs`): a limit's name, and the
//! `vhost-limits` parameters of a definitions document. Pure functions.

use super::access::invalid;
use ferry_auth::limits::{LimitScope, Limits, USER_LIMITS, VHOST_LIMITS};
use ferry_auth::{AccessDefs, VHOST_LIMITS_COMPONENT};
use ferry_queue::error::{CoreError, ErrorKind, Result};

/// `CommandInvalid` for a limit name `scope` does not know.
pub(super) fn check_name(scope: LimitScope, name: &str) -> Result<()> {
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

/// The vhost limits carried by a definitions document's `parameters`
/// (component `vhost-limits`), validated as the API validates them.
pub(super) fn vhost_limit_params(defs: &AccessDefs) -> Result<Vec<(String, Limits)>> {
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
