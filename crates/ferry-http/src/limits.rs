//! /api/vhost-limits and /api/user-limits, as RabbitMQ 3.10's management
//! plugin answers them:
//!
//! * `GET /api/vhost-limits[/{vhost}]`: `[{"vhost": "/", "value":
//!   {"max-connections": 5}}]`; a vhost whose last limit was cleared is
//!   still listed by the first with `"value": []`, the second answers `[]`.
//! * `PUT /api/vhost-limits/{vhost}/{name}` `{"value": N}` (204),
//!   `DELETE` the same path (204, also when unset). Validation errors are
//!   400 with RabbitMQ's reasons (`Validation failed\n\n...`); a missing
//!   `value` is `[{key_missing,value}]`; an unknown vhost 404
//!   `vhost_not_found`.
//! * `/api/user-limits[/{user}[/{name}]]` likewise (`"user"` instead of
//!   `"vhost"`, `max-connections` / `max-channels`); an unknown user on PUT
//!   is 400 `["no_such_user","bob"]`.
//! * GET of a single limit is 405, as in RabbitMQ.
//!
//! Changing limits takes `administrator`; listing vhost limits shows the
//! vhosts the caller can see, user limits are for administrators.
//! Deliberate difference: DELETE for an unknown vhost or user is a 404
//! (RabbitMQ answers 500). Changes run on the blocking pool (they fsync
//! the access file).

use crate::auth::Caller;
use crate::common;
use crate::error::{ApiError, ApiResult};
use crate::state::Ctx;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use bytes::Bytes;
use ferry_auth::limits::{validate, value_json, LimitScope};
use ferry_broker::DefCommand;
use ferry_queue::ErrorKind;
use serde_json::{json, Value};

/// The routes of this module (merged into the API router).
pub fn routes() -> Router<Ctx> {
    Router::new()
        .route("/api/vhost-limits", get(vhost_limits))
        .route("/api/vhost-limits/{vhost}", get(vhost_limits_of))
        .route(
            "/api/vhost-limits/{vhost}/{name}",
            axum::routing::put(put_vhost_limit).delete(delete_vhost_limit),
        )
        .route("/api/user-limits", get(user_limits))
        .route("/api/user-limits/{user}", get(user_limits_of))
        .route(
            "/api/user-limits/{user}/{name}",
            axum::routing::put(put_user_limit).delete(delete_user_limit),
        )
}

/// GET /api/vhost-limits
async fn vhost_limits(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Value>> {
    let rows = ctx
        .broker
        .vhost_limits()
        .into_iter()
        .filter(|(v, _)| caller.is_admin() || caller.sees_vhost(&ctx, v))
        .map(|(v, l)| json!({"vhost": v, "value": value_json(&l)}))
        .collect();
    Ok(Json(Value::Array(rows)))
}

/// GET /api/vhost-limits/{vhost}
async fn vhost_limits_of(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path(vhost): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_vhost(&ctx, &vhost)?;
    let rows = ctx
        .broker
        .vhost_limits()
        .into_iter()
        .filter(|(v, l)| *v == vhost && !l.is_empty())
        .map(|(v, l)| json!({"vhost": v, "value": value_json(&l)}))
        .collect();
    Ok(Json(Value::Array(rows)))
}

/// The `value` of a PUT body, validated; the error is the 400 response.
fn body_value(scope: LimitScope, name: &str, raw: &[u8]) -> ApiResult<i64> {
    let body: Value = common::body(raw)?;
    let Some(v) = body.get("value") else {
        return Err(ApiError::BadRequest("[{key_missing,value}]".into()));
    };
    validate(scope, name, v).map_err(ApiError::BadRequest)
}

/// PUT /api/vhost-limits/{vhost}/{name}
async fn put_vhost_limit(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path((vhost, name)): Path<(String, String)>,
    raw: Bytes,
) -> Response {
    let run = async {
        caller.require_admin()?;
        if ctx.broker.vhost(&vhost).is_err() {
            return Ok(vhost_not_found());
        }
        let n = body_value(LimitScope::Vhost, &name, &raw)?;
        let b = ctx.broker.clone();
        let cmd = DefCommand::VhostLimit {
            vhost,
            name,
            value: Some(n),
        };
        match common::blocking(move || b.change(cmd)).await? {
            // Deleted since the check above.
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(vhost_not_found()),
            r => r
                .map(|()| StatusCode::NO_CONTENT.into_response())
                .map_err(ApiError::from),
        }
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

fn vhost_not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not_found", json!("vhost_not_found"))
}

/// DELETE /api/vhost-limits/{vhost}/{name}
async fn delete_vhost_limit(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let b = ctx.broker.clone();
    let cmd = DefCommand::VhostLimit {
        vhost,
        name,
        value: None,
    };
    common::blocking(move || b.change(cmd)).await??;
    Ok(StatusCode::NO_CONTENT)
}

/// GET /api/user-limits
async fn user_limits(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let rows = ctx
        .broker
        .user_limits()
        .into_iter()
        .map(|(u, l)| json!({"user": u, "value": value_json(&l)}))
        .collect();
    Ok(Json(Value::Array(rows)))
}

/// GET /api/user-limits/{user}
async fn user_limits_of(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path(user): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    if ctx.broker.users().get(&user).is_none() {
        return Err(ApiError::NotFound);
    }
    let rows = ctx
        .broker
        .user_limits()
        .into_iter()
        .filter(|(u, _)| *u == user)
        .map(|(u, l)| json!({"user": u, "value": value_json(&l)}))
        .collect();
    Ok(Json(Value::Array(rows)))
}

/// PUT /api/user-limits/{user}/{name}
async fn put_user_limit(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path((user, name)): Path<(String, String)>,
    raw: Bytes,
) -> Response {
    let run = async {
        caller.require_admin()?;
        let n = body_value(LimitScope::User, &name, &raw)?;
        if ctx.broker.users().get(&user).is_none() {
            return Ok(error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                json!(["no_such_user", user]),
            ));
        }
        let b = ctx.broker.clone();
        let cmd = DefCommand::UserLimit {
            user,
            name,
            value: Some(n),
        };
        common::blocking(move || b.change(cmd)).await??;
        Ok::<_, ApiError>(StatusCode::NO_CONTENT.into_response())
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// DELETE /api/user-limits/{user}/{name}
async fn delete_user_limit(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path((user, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let b = ctx.broker.clone();
    let cmd = DefCommand::UserLimit {
        user,
        name,
        value: None,
    };
    common::blocking(move || b.change(cmd)).await??;
    Ok(StatusCode::NO_CONTENT)
}

/// An error body whose reason is not a string (RabbitMQ prints Erlang
/// terms there as JSON).
fn error(status: StatusCode, error: &str, reason: Value) -> Response {
    (status, Json(json!({"error": error, "reason": reason}))).into_response()
}

/// The `parameters` of a definitions export: the vhost limits (all vhosts,
/// or the one named).
pub fn parameters(ctx: &Ctx, vhost: Option<&str>) -> Value {
    let access = ctx.broker.export_access();
    Value::Array(
        access
            .parameters
            .iter()
            .filter(|p| vhost.is_none_or(|v| v == p.vhost))
            .filter_map(|p| serde_json::to_value(p).ok())
            .collect(),
    )
}
