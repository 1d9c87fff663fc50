//! /api/users, /api/vhosts, /api/permissions (and /api/whoami's friends):
//! the broker's access database through the core's user / vhost /
//! permission functions. Administrators only, except listing vhosts (each
//! user sees those it has permissions in).

use crate::auth::Caller;
use crate::common::{self, put_status, rate};
use crate::error::{ApiError, ApiResult};
use crate::query::ListParams;
use crate::state::Ctx;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use bytes::Bytes;
use ferry_auth::{PasswordSpec, Permissions, User, Users};
use ferry_broker::DefCommand;
use serde_json::{json, Value};

fn user_json(u: &User, users: &Users) -> Value {
    let limits = users
        .user_limits()
        .get(&u.name)
        .cloned()
        .unwrap_or_default();
    json!({
        "name": u.name,
        "password_hash": u.password_hash_b64(),
        "hashing_algorithm": u.hashing_algorithm(),
        "tags": u.tags,
        "limits": limits,
    })
}

/// GET /api/users
pub async fn users(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Query(p): Query<ListParams>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let rows: Vec<Value> = {
        let users = ctx.broker.users();
        users.list().iter().map(|u| user_json(u, &users)).collect()
    };
    Ok(Json(p.apply(rows)?))
}

/// GET /api/users/{name}
pub async fn user(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let users = ctx.broker.users();
    users
        .get(&name)
        .map(|u| Json(user_json(u, &users)))
        .ok_or(ApiError::NotFound)
}

fn tags_of(b: &Value) -> ApiResult<Vec<String>> {
    match b.get("tags") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(s
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(String::from)
            .collect()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|t| {
                t.as_str()
                    .map(String::from)
                    .ok_or_else(|| ApiError::BadRequest("tags must be strings".into()))
            })
            .collect(),
        Some(_) => Err(ApiError::BadRequest(
            "tags must be a string or a list".into(),
        )),
    }
}

/// PUT /api/users/{name}: `password` or `password_hash` (empty hash: no
/// password), `tags` as "a,b" or a list.
pub async fn put_user(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    raw: Bytes,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let b = common::object(&raw)?;
    let existed = ctx.broker.users().get(&name).is_some();
    let password = match (
        common::string(&b, "password")?,
        common::string(&b, "password_hash")?,
    ) {
        (Some(p), _) => PasswordSpec::Plain(p.to_string()),
        (None, Some("")) => PasswordSpec::NoPassword,
        (None, Some(h)) => PasswordSpec::HashB64(h.to_string()),
        (None, None) if existed => {
            return Err(ApiError::BadRequest(
                "password or password_hash must be given".into(),
            ))
        }
        (None, None) => {
            return Err(ApiError::BadRequest(
                "[{key_missing,password},{key_missing,password_hash}]".into(),
            ))
        }
    };
    let tags = tags_of(&b)?;
    ferry_server::blocking::run(|| {
        ctx.broker
            .change(DefCommand::put_user(&name, password, tags))
    })?;
    Ok(put_status(existed))
}

/// DELETE /api/users/{name}
pub async fn delete_user(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    ferry_server::blocking::run(|| ctx.broker.change(DefCommand::DeleteUser { name }))?;
    Ok(StatusCode::NO_CONTENT)
}

fn perm_json(user: &str, vhost: &str, p: &Permissions) -> Value {
    json!({"user": user, "vhost": vhost, "configure": p.configure, "write": p.write, "read": p.read})
}

fn perms_where(ctx: &Ctx, f: impl Fn(&str, &str) -> bool) -> Vec<Value> {
    ctx.broker
        .permissions()
        .iter()
        .filter(|(u, v, _)| f(u, v))
        .map(|(u, v, p)| perm_json(u, v, p))
        .collect()
}

/// GET /api/users/{name}/permissions
pub async fn user_permissions(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    if ctx.broker.users().get(&name).is_none() {
        return Err(ApiError::NotFound);
    }
    Ok(Json(Value::Array(perms_where(&ctx, |u, _| u == name))))
}

/// GET /api/permissions
pub async fn permissions(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Query(p): Query<ListParams>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    Ok(Json(p.apply(perms_where(&ctx, |_, _| true))?))
}

/// GET /api/permissions/{vhost}/{user}
pub async fn permission(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path((vhost, user)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    perms_where(&ctx, |u, v| u == user && v == vhost)
        .pop()
        .map(Json)
        .ok_or(ApiError::NotFound)
}

/// PUT /api/permissions/{vhost}/{user}
pub async fn put_permission(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path((vhost, user)): Path<(String, String)>,
    raw: Bytes,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let b = common::object(&raw)?;
    let get = |k: &str| -> ApiResult<String> {
        common::string(&b, k)?
            .map(String::from)
            .ok_or_else(|| ApiError::BadRequest(format!("[{{key_missing,{k}}}]")))
    };
    let p = Permissions {
        configure: get("configure")?,
        write: get("write")?,
        read: get("read")?,
    };
    if ctx.broker.vhost(&vhost).is_err() || ctx.broker.users().get(&user).is_none() {
        return Err(ApiError::NotFound);
    }
    let existed = !perms_where(&ctx, |u, v| u == user && v == vhost).is_empty();
    ferry_server::blocking::run(|| {
        ctx.broker.change(DefCommand::SetPermissions {
            user,
            vhost,
            permissions: p,
        })
    })?;
    Ok(put_status(existed))
}

/// DELETE /api/permissions/{vhost}/{user}
pub async fn delete_permission(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path((vhost, user)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    ferry_server::blocking::run(|| {
        ctx.broker
            .change(DefCommand::ClearPermissions { user, vhost })
    })?;
    Ok(StatusCode::NO_CONTENT)
}

fn vhost_json(ctx: &Ctx, name: &str) -> Value {
    let (mut ready, mut unacked, mut delayed) = (0, 0, 0);
    if let Ok(v) = ctx.broker.vhost(name) {
        for q in crate::sources::of_vhost(&v) {
            ready += q.depth.ready;
            unacked += q.depth.unacked;
            delayed += q.depth.delayed;
        }
    }
    json!({
        "name": name,
        "description": if name == "/" { "Default virtual host" } else { "" },
        "tags": [],
        "tracing": false,
        "cluster_state": { ctx.node.name.clone(): "running" },
        "messages": ready + unacked + delayed, "messages_details": rate(0.0),
        "messages_ready": ready, "messages_ready_details": rate(0.0),
        "messages_unacknowledged": unacked, "messages_unacknowledged_details": rate(0.0),
    })
}

/// GET /api/vhosts
pub async fn vhosts(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Query(p): Query<ListParams>,
) -> ApiResult<Json<Value>> {
    let items = ctx
        .broker
        .vhost_names()
        .iter()
        .filter(|n| caller.is_admin() || caller.sees_vhost(&ctx, n))
        .map(|n| vhost_json(&ctx, n))
        .collect();
    Ok(Json(p.apply(items)?))
}

/// GET /api/vhosts/{name}
pub async fn vhost(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_vhost(&ctx, &name)?;
    Ok(Json(vhost_json(&ctx, &name)))
}

/// PUT /api/vhosts/{name}
pub async fn put_vhost(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    raw: Bytes,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    common::object(&raw)?;
    if name.is_empty() {
        return Err(ApiError::BadRequest("vhost name must not be empty".into()));
    }
    let existed = ctx.broker.vhost(&name).is_ok();
    ferry_server::blocking::run(|| ctx.broker.change(DefCommand::AddVhost { name }))?;
    Ok(put_status(existed))
}

/// DELETE /api/vhosts/{name}
pub async fn delete_vhost(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    if ctx.broker.vhost(&name).is_err() {
        return Err(ApiError::NotFound);
    }
    let b = ctx.broker.clone();
    crate::common::blocking(move || b.change(DefCommand::DeleteVhost { name })).await??;
    Ok(StatusCode::NO_CONTENT)
}

/// GET /api/vhosts/{name}/permissions
pub async fn vhost_permissions(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    if ctx.broker.vhost(&name).is_err() {
        return Err(ApiError::NotFound);
    }
    Ok(Json(Value::Array(perms_where(&ctx, |_, v| v == name))))
}
