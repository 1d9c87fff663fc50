//! HTTP basic authentication against the broker's users, and RabbitMQ's
//! management tags: `management` (own vhosts), `monitoring` (also every
//! connection, channel and node), `administrator` (everything, including
//! users, vhosts, permissions and definitions). `policymaker` is
//! `management` plus reading one policy and changing policies
//! (`policies.rs`).
//!
//! Every failure is a 401, as in RabbitMQ: "Login failed" for missing or
//! wrong credentials (`not_authorized`), and `not_authorised` with the
//! reason for a user who lacks a tag or vhost access.

use crate::error::{ApiError, ApiResult};
use crate::state::Ctx;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine;
use std::net::SocketAddr;

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// User name.
    pub name: String,
    /// Its tags.
    pub tags: Vec<String>,
}

impl Caller {
    fn has(&self, t: &str) -> bool {
        self.tags.iter().any(|x| x == t)
    }

    /// Has the `administrator` tag.
    pub fn is_admin(&self) -> bool {
        self.has("administrator")
    }

    /// May see every connection, channel and node statistic.
    pub fn is_monitor(&self) -> bool {
        self.is_admin() || self.has("monitoring")
    }

    fn is_management(&self) -> bool {
        self.is_monitor() || self.has("management") || self.has("policymaker")
    }

    /// Refuses a non-administrator.
    pub fn require_admin(&self) -> ApiResult<()> {
        match self.is_admin() {
            true => Ok(()),
            false => Err(ApiError::NotAuthorised("Not administrator user".into())),
        }
    }

    /// Refuses a user without `monitoring` or `administrator`.
    pub fn require_monitor(&self) -> ApiResult<()> {
        match self.is_monitor() {
            true => Ok(()),
            false => Err(ApiError::NotAuthorised("Not monitor user".into())),
        }
    }

    /// Whether the caller may see objects of `vhost` (administrators and
    /// monitors see all; others need permissions there).
    pub fn sees_vhost(&self, ctx: &Ctx, vhost: &str) -> bool {
        self.is_monitor()
            || ctx
                .broker
                .users()
                .permissions_for(&self.name, vhost)
                .is_some()
    }

    /// Refuses a caller with no access to `vhost`; 404 if it does not exist.
    pub fn require_vhost(&self, ctx: &Ctx, vhost: &str) -> ApiResult<()> {
        if ctx.broker.vhost(vhost).is_err() {
            return Err(ApiError::NotFound);
        }
        if self.is_admin()
            || ctx
                .broker
                .users()
                .permissions_for(&self.name, vhost)
                .is_some()
        {
            return Ok(());
        }
        Err(ApiError::NotAuthorised(
            "User not authorised to access virtual host".into(),
        ))
    }
}

fn credentials(req: &Request) -> Option<(String, String)> {
    let h = req.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, b64) = h.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (u, p) = s.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

/// Middleware: authenticates the request and stores the [`Caller`] in its
/// extensions; refuses users without a management tag.
pub async fn authenticate(
    State(ctx): State<Ctx>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let loopback = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .is_some_and(|c| c.0.ip().is_loopback());
    let Some((user, pass)) = credentials(&req) else {
        return Err(ApiError::Unauthorized("Login failed".into()));
    };
    let caller = {
        let users = ctx.broker.users();
        match users.authenticate(&user, &pass, loopback) {
            Ok(u) => Caller {
                name: u.name.clone(),
                tags: u.tags.clone(),
            },
            Err(_) => return Err(ApiError::Unauthorized("Login failed".into())),
        }
    };
    if !caller.is_management() {
        return Err(ApiError::NotAuthorised("Not management user".into()));
    }
    req.extensions_mut().insert(caller);
    Ok(next.run(req).await)
}
