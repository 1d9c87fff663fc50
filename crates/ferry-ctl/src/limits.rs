//! `ferry ctl set|clear vhost-limits|user-limits`: PUT / DELETE on
//! `/api/vhost-limits/{vhost}/{name}` and `/api/user-limits/{user}/{name}`
//! (listing is `list vhost-limits|user-limits`, in `list`).

use crate::args::{Clear, CtlArgs, Set};
use crate::client::{api_path, Client};
use crate::error::CtlError;
use crate::Output;
use serde_json::json;

/// `set vhost-limits NAME VALUE` / `set user-limits --user U NAME VALUE`.
pub fn set(client: &Client, args: &CtlArgs, s: &Set, out: &mut Output<'_>) -> Result<(), CtlError> {
    let (path, what) = match s {
        Set::VhostLimits { name, .. } => {
            let v = args.vhost();
            (
                api_path(&["vhost-limits", v, name]),
                format!("limit '{name}' of vhost '{v}'"),
            )
        }
        Set::UserLimits { user, name, .. } => (
            api_path(&["user-limits", user, name]),
            format!("limit '{name}' of user '{user}'"),
        ),
        // Not a limit: `ops::set` handles it.
        _ => return Ok(()),
    };
    let value = match s {
        Set::VhostLimits { value, .. } | Set::UserLimits { value, .. } => *value,
        _ => return Ok(()),
    };
    client.put(&path, &json!({ "value": value }), &what)?;
    out.done(&format!("set {what} to {value}"))
}

/// `clear vhost-limits NAME` / `clear user-limits --user U NAME`.
pub fn clear(
    client: &Client,
    args: &CtlArgs,
    c: &Clear,
    out: &mut Output<'_>,
) -> Result<(), CtlError> {
    let (path, what) = match c {
        Clear::VhostLimits { name } => {
            let v = args.vhost();
            (
                api_path(&["vhost-limits", v, name]),
                format!("limit '{name}' of vhost '{v}'"),
            )
        }
        Clear::UserLimits { user, name } => (
            api_path(&["user-limits", user, name]),
            format!("limit '{name}' of user '{user}'"),
        ),
        // Not a limit: `ops::clear` handles it.
        _ => return Ok(()),
    };
    client.delete(&path, &what)?;
    out.done(&format!("cleared {what}"))
}
