//! Helpers shared by the resource handlers: request bodies, vhost lists,
//! RabbitMQ's naming of the default exchange, status codes of PUT, and
//! [`blocking`] for broker calls that write files.

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::state::Ctx;
use axum::http::StatusCode;
use ferry_broker::VHost;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::sync::Arc;

/// Runs a broker call that does file I/O (fsyncs, log reads) on tokio's
/// blocking pool, never on an async worker. A panicked task is a 500.
/// Calls that borrow the request's data use `ferry_server::blocking::run`
/// instead (the worker hands its other tasks over, then blocks).
pub async fn blocking<T, F>(f: F) -> ApiResult<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))
}

/// Parses a JSON body; an empty body is `{}`.
pub fn body<T: DeserializeOwned>(raw: &[u8]) -> ApiResult<T> {
    let v: Value = if raw.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Default::default())
    } else {
        serde_json::from_slice(raw).map_err(|_| ApiError::BadRequest("not_json".into()))?
    };
    serde_json::from_value(v).map_err(ApiError::bad_json)
}

/// A boolean field of a body object (absent = `default`).
pub fn flag(v: &Value, key: &str, default: bool) -> ApiResult<bool> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        // rabbitmqadmin sends "true"/"false" strings for some fields.
        Some(Value::String(s)) if s == "true" => Ok(true),
        Some(Value::String(s)) if s == "false" => Ok(false),
        Some(other) => Err(ApiError::BadRequest(format!(
            "{key} must be a boolean, got {other}"
        ))),
    }
}

/// A string field of a body object.
pub fn string<'a>(v: &'a Value, key: &str) -> ApiResult<Option<&'a str>> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(ApiError::BadRequest(format!(
            "{key} must be a string, got {other}"
        ))),
    }
}

/// The body must be a JSON object.
pub fn object(raw: &[u8]) -> ApiResult<Value> {
    let v: Value = body(raw)?;
    match v {
        Value::Object(_) => Ok(v),
        _ => Err(ApiError::BadRequest("body must be a JSON object".into())),
    }
}

/// The exchange a path names: RabbitMQ calls the default one `amq.default`.
pub fn exchange_name(path: &str) -> &str {
    if path == "amq.default" {
        ""
    } else {
        path
    }
}

/// A vhost the caller may use (404 if absent, 401 without access).
pub fn vhost(ctx: &Ctx, caller: &Caller, name: &str) -> ApiResult<Arc<VHost>> {
    caller.require_vhost(ctx, name)?;
    ctx.broker.vhost(name).map_err(|_| ApiError::NotFound)
}

/// A list endpoint's answer: the rows of every vhost the caller sees
/// (`vhost` None) or of the one named (404 / 401), filtered, sorted, paged
/// and projected by the query's parameters.
pub fn listing(
    ctx: &Ctx,
    caller: &Caller,
    vhost: Option<&str>,
    p: &crate::query::ListParams,
    rows: impl Fn(&VHost) -> Vec<Value>,
) -> ApiResult<axum::Json<Value>> {
    let vhosts = match vhost {
        None => visible_vhosts(ctx, caller),
        Some(name) => vec![self::vhost(ctx, caller, name)?],
    };
    let items = vhosts.iter().flat_map(|v| rows(v)).collect();
    Ok(axum::Json(p.apply(items)?))
}

/// Every vhost the caller may see, by name.
pub fn visible_vhosts(ctx: &Ctx, caller: &Caller) -> Vec<Arc<VHost>> {
    ctx.broker
        .vhost_names()
        .into_iter()
        .filter(|n| caller.sees_vhost(ctx, n))
        .filter_map(|n| ctx.broker.vhost(&n).ok())
        .collect()
}

/// PUT's answer: 201 when created, 204 when it already existed.
pub fn put_status(existed: bool) -> StatusCode {
    if existed {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::CREATED
    }
}

/// `{"rate": x}`.
pub fn rate(x: f64) -> Value {
    serde_json::json!({ "rate": x })
}

/// Query flag as RabbitMQ's `if-unused=true`.
pub fn query_flag(q: &std::collections::HashMap<String, String>, key: &str) -> bool {
    q.get(key).is_some_and(|v| v == "true")
}

/// The caller's configure permission on a resource (declare / delete).
pub fn may_configure(
    ctx: &Ctx,
    caller: &Caller,
    vhost: &str,
    resource: ferry_auth::Resource<'_>,
) -> ApiResult<()> {
    authorize(ctx, caller, vhost, ferry_auth::Access::Configure, resource)
}

/// Checks a resource permission of the caller (RabbitMQ checks these for
/// administrators too); refusals are 401 "Access refused." as RabbitMQ.
pub fn authorize(
    ctx: &Ctx,
    caller: &Caller,
    vhost: &str,
    access: ferry_auth::Access,
    resource: ferry_auth::Resource<'_>,
) -> ApiResult<()> {
    ctx.broker
        .authorize(&caller.name, vhost, access, resource)
        .map_err(|e| {
            tracing::debug!(user = %caller.name, error = %e, "management API access refused");
            ApiError::NotAuthorised("Access refused.".into())
        })
}
