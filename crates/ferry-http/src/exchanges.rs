//! /api/exchanges: list, show, declare (PUT), delete, and an exchange's
//! bindings as source or destination. The default exchange is listed with
//! the name "" and addressed as `amq.default` in paths, as in RabbitMQ.

use crate::auth::Caller;
use crate::common::{self, exchange_name, put_status, query_flag};
use crate::error::{ApiError, ApiResult};
use crate::json::{json_to_table, table_to_json};
use crate::query::ListParams;
use crate::state::Ctx;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use bytes::Bytes;
use ferry_core::auth::{Access, Resource};
use ferry_core::exchange::Exchange;
use ferry_core::{ExchangeArgs, VHost};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// One exchange as the API shows it.
pub fn exchange_json(vhost: &str, x: &Exchange) -> Value {
    json!({
        "name": &*x.name,
        "vhost": vhost,
        "type": x.kind.as_str(),
        "durable": x.durable,
        "auto_delete": x.auto_delete,
        "internal": x.internal,
        "arguments": table_to_json(&x.arguments),
        "user_who_performed_action": "rmq-internal",
    })
}

fn sorted(v: &VHost) -> Vec<Exchange> {
    let mut xs = v.exchanges();
    xs.sort_by(|a, b| a.name.cmp(&b.name));
    xs
}

fn listing(vhosts: Vec<Arc<VHost>>) -> Vec<Value> {
    vhosts
        .iter()
        .flat_map(|v| {
            sorted(v)
                .iter()
                .map(|x| exchange_json(v.name(), x))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn find(v: &VHost, path_name: &str) -> ApiResult<Exchange> {
    let name = exchange_name(path_name);
    v.exchanges()
        .into_iter()
        .find(|x| &*x.name == name)
        .ok_or(ApiError::NotFound)
}

/// GET /api/exchanges
pub async fn list(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Query(p): Query<ListParams>,
) -> ApiResult<Json<Value>> {
    Ok(Json(
        p.apply(listing(common::visible_vhosts(&ctx, &caller)))?,
    ))
}

/// GET /api/exchanges/{vhost}
pub async fn list_vhost(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path(vhost): Path<String>,
    Query(p): Query<ListParams>,
) -> ApiResult<Json<Value>> {
    let v = common::vhost(&ctx, &caller, &vhost)?;
    Ok(Json(p.apply(listing(vec![v]))?))
}

/// GET /api/exchanges/{vhost}/{name}
pub async fn show(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path((vhost, name)): Path<(String, String)>,
    Query(p): Query<ListParams>,
) -> ApiResult<Json<Value>> {
    let v = common::vhost(&ctx, &caller, &vhost)?;
    let x = find(&v, &name)?;
    Ok(Json(p.apply_one(exchange_json(&vhost, &x))))
}

/// PUT /api/exchanges/{vhost}/{name}
pub async fn declare(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path((vhost, name)): Path<(String, String)>,
    raw: Bytes,
) -> ApiResult<StatusCode> {
    let v = common::vhost(&ctx, &caller, &vhost)?;
    let b = common::object(&raw)?;
    let kind = common::string(&b, "type")?.unwrap_or("direct");
    let args = ExchangeArgs {
        durable: common::flag(&b, "durable", false)?,
        auto_delete: common::flag(&b, "auto_delete", false)?,
        internal: common::flag(&b, "internal", false)?,
        arguments: json_to_table(b.get("arguments")).map_err(ApiError::BadRequest)?,
    };
    let name = exchange_name(&name);
    common::authorize(
        &ctx,
        &caller,
        &vhost,
        Access::Configure,
        Resource::Exchange(name),
    )?;
    let existed = v.has_exchange(name);
    v.declare_exchange(name, kind, false, args)?;
    Ok(put_status(existed))
}

/// DELETE /api/exchanges/{vhost}/{name}[?if-unused=true]
pub async fn delete(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path((vhost, name)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<StatusCode> {
    let v = common::vhost(&ctx, &caller, &vhost)?;
    let name = exchange_name(&name);
    if !v.has_exchange(name) {
        return Err(ApiError::NotFound);
    }
    common::authorize(
        &ctx,
        &caller,
        &vhost,
        Access::Configure,
        Resource::Exchange(name),
    )?;
    v.delete_exchange(name, query_flag(&q, "if-unused"))?;
    Ok(StatusCode::NO_CONTENT)
}

/// GET /api/exchanges/{vhost}/{name}/bindings/source
pub async fn bindings_source(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path((vhost, name)): Path<(String, String)>,
    Query(p): Query<ListParams>,
) -> ApiResult<Json<Value>> {
    let v = common::vhost(&ctx, &caller, &vhost)?;
    let x = find(&v, &name)?;
    let all = crate::bindings::vhost_bindings(&v);
    let out = all.into_iter().filter(|b| b["source"] == *x.name).collect();
    Ok(Json(p.apply(out)?))
}

/// GET /api/exchanges/{vhost}/{name}/bindings/destination
pub async fn bindings_destination(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path((vhost, name)): Path<(String, String)>,
    Query(p): Query<ListParams>,
) -> ApiResult<Json<Value>> {
    let v = common::vhost(&ctx, &caller, &vhost)?;
    let x = find(&v, &name)?;
    let all = crate::bindings::vhost_bindings(&v);
    let out = all
        .into_iter()
        .filter(|b| b["destination_type"] == "exchange" && b["destination"] == *x.name)
        .collect();
    Ok(Json(p.apply(out)?))
}
