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
    let (path, what, value) = match s {
        Set::VhostLimits { name, value } => {
            let (path, what) = target(args, None, name);
            (path, what, *value)
        }
        Set::UserLimits { user, name, value } => {
            let (path, what) = target(args, Some(user), name);
            (path, what, *value)
        }
        // Not a limit: `ops::set` handles it.
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
        Clear::VhostLimits { name } => target(args, None, name),
        Clear::UserLimits { user, name } => target(args, Some(user), name),
        // Not a limit: `ops::clear` handles it.
        _ => return Ok(()),
    };
    client.delete(&path, &what)?;
    out.done(&format!("cleared {what}"))
}

/// The API path of limit `name` of `user` (or, without one, of the
/// `--vhost`), and how messages name it.
fn target(args: &CtlArgs, user: Option<&str>, name: &str) -> (String, String) {
    match user {
        Some(user) => (
            api_path(&["user-limits", user, name]),
            format!("limit '{name}' of user '{user}'"),
        ),
        None => {
            let v = args.vhost();
            (
                api_path(&["vhost-limits", v, name]),
                format!("limit '{name}' of vhost '{v}'"),
            )
        }
    }
}
