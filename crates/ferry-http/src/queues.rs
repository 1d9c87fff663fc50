//! /api/queues: list, show, declare (PUT), delete, purge (DELETE
//! .../contents), and a queue's bindings. Shapes as RabbitMQ 3.10's, with
//! `message_stats` from the queue's counters and rates from the sampler.

use crate::auth::Caller;
use crate::common::{self, put_status, query_flag, rate};
use crate::error::{ApiError, ApiResult};
use crate::json::{json_to_table, table_to_json};
use crate::query::ListParams;
use crate::state::Ctx;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use bytes::Bytes;
use ferry_core::auth::{Access, Resource};
use ferry_core::queue::{Queue, QueueSpec};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// RabbitMQ's `message_stats` object from counters and rates.
pub fn message_stats(s: &ferry_core::queue::StatsSnapshot, r: &crate::state::Rates) -> Value {
    json!({
        "publish": s.publish, "publish_details": rate(r.publish),
        "deliver": s.deliver, "deliver_details": rate(r.deliver),
        "deliver_no_ack": s.deliver_no_ack, "deliver_no_ack_details": rate(r.deliver_no_ack),
        "get": s.get, "get_details": rate(r.get),
        "get_no_ack": s.get_no_ack, "get_no_ack_details": rate(r.get_no_ack),
        "deliver_get": s.deliver_get(), "deliver_get_details": rate(r.deliver_get()),
        "redeliver": s.redeliver, "redeliver_details": rate(r.redeliver),
        "ack": s.ack, "ack_details": rate(r.ack),
    })
}

/// One queue as the API shows it.
pub fn queue_json(ctx: &Ctx, vhost: &str, q: &Queue) -> Value {
    let d = q.depth();
    let spec = q.spec();
    let r = ctx.rates.get(vhost, q.name());
    json!({
        "name": &**q.name(),
        "vhost": vhost,
        "durable": spec.durable,
        "auto_delete": spec.auto_delete,
        "exclusive": spec.exclusive_owner.is_some(),
        "arguments": table_to_json(&spec.arguments),
        "node": ctx.node.name,
        "type": "classic",
        "state": "running",
        "policy": null,
        "exclusive_consumer_tag": null,
        "messages": d.ready + d.unacked,
        "messages_details": rate(r.ready + r.unacked),
        "messages_ready": d.ready,
        "messages_ready_details": rate(r.ready),
        "messages_unacknowledged": d.unacked,
        "messages_unacknowledged_details": rate(r.unacked),
        "message_bytes": d.ready_bytes + d.unacked_bytes,
        "message_bytes_ready": d.ready_bytes,
        "message_bytes_unacknowledged": d.unacked_bytes,
        "consumers": d.consumers,
        "message_stats": message_stats(&q.stats().snapshot(), &r),
    })
}

fn queue_of(ctx: &Ctx, caller: &Caller, vhost: &str, name: &str) -> ApiResult<Arc<Queue>> {
    let v = common::vhost(ctx, caller, vhost)?;
    v.queues()
        .into_iter()
        .find(|q| &**q.name() == name)
        .ok_or(ApiError::NotFound)
}

fn listing(ctx: &Ctx, vhosts: Vec<Arc<ferry_core::VHost>>) -> Vec<Value> {
    let mut out = Vec::new();
    for v in vhosts {
        let mut qs = v.queues();
        qs.sort_by(|a, b| a.name().cmp(b.name()));
        out.extend(qs.iter().map(|q| queue_json(ctx, v.name(), q)));
    }
    out
}

/// GET /api/queues
pub async fn list(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Query(p): Query<ListParams>,
) -> ApiResult<Json<Value>> {
    let vhosts = common::visible_vhosts(&ctx, &caller);
    Ok(Json(p.apply(listing(&ctx, vhosts))?))
}

/// GET /api/queues/{vhost}
pub async fn list_vhost(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path(vhost): Path<String>,
    Query(p): Query<ListParams>,
) -> ApiResult<Json<Value>> {
    let v = common::vhost(&ctx, &caller, &vhost)?;
    Ok(Json(p.apply(listing(&ctx, vec![v]))?))
}

/// GET /api/queues/{vhost}/{name}
pub async fn show(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path((vhost, name)): Path<(String, String)>,
    Query(p): Query<ListParams>,
) -> ApiResult<Json<Value>> {
    let q = queue_of(&ctx, &caller, &vhost, &name)?;
    let mut v = queue_json(&ctx, &vhost, &q);
    if let Some(m) = v.as_object_mut() {
        let consumers: Vec<Value> = crate::connections::consumers_json(&ctx)
            .into_iter()
            .filter(|c| {
                c["queue"]["name"] == name.as_str() && c["queue"]["vhost"] == vhost.as_str()
            })
            .collect();
        m.insert("consumer_details".into(), Value::Array(consumers));
    }
    Ok(Json(p.apply_one(v)))
}

/// PUT /api/queues/{vhost}/{name}
pub async fn declare(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path((vhost, name)): Path<(String, String)>,
    raw: Bytes,
) -> ApiResult<StatusCode> {
    let v = common::vhost(&ctx, &caller, &vhost)?;
    let b = common::object(&raw)?;
    if name.is_empty() {
        return Err(ApiError::BadRequest("queue name must not be empty".into()));
    }
    let spec = QueueSpec {
        name: Arc::from(name.as_str()),
        durable: common::flag(&b, "durable", false)?,
        exclusive_owner: None,
        auto_delete: common::flag(&b, "auto_delete", false)?,
        arguments: json_to_table(b.get("arguments")).map_err(ApiError::BadRequest)?,
    };
    common::authorize(
        &ctx,
        &caller,
        &vhost,
        Access::Configure,
        Resource::Queue(&name),
    )?;
    let existed = v.queues().iter().any(|q| &**q.name() == name.as_str());
    v.declare_queue(spec, false, 0)?;
    Ok(put_status(existed))
}

/// DELETE /api/queues/{vhost}/{name}[?if-unused=true&if-empty=true]
pub async fn delete(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path((vhost, name)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<StatusCode> {
    let queue = queue_of(&ctx, &caller, &vhost, &name)?;
    let v = common::vhost(&ctx, &caller, &vhost)?;
    common::authorize(
        &ctx,
        &caller,
        &vhost,
        Access::Configure,
        Resource::Queue(&name),
    )?;
    let owner = queue.spec().exclusive_owner.unwrap_or(0);
    v.delete_queue(
        &name,
        query_flag(&q, "if-unused"),
        query_flag(&q, "if-empty"),
        owner,
    )?;
    Ok(StatusCode::NO_CONTENT)
}

/// DELETE /api/queues/{vhost}/{name}/contents
pub async fn purge(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let queue = queue_of(&ctx, &caller, &vhost, &name)?;
    common::authorize(&ctx, &caller, &vhost, Access::Read, Resource::Queue(&name))?;
    tokio::task::spawn_blocking(move || queue.purge())
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(StatusCode::NO_CONTENT)
}

/// GET /api/queues/{vhost}/{name}/bindings
pub async fn bindings(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path((vhost, name)): Path<(String, String)>,
    Query(p): Query<ListParams>,
) -> ApiResult<Json<Value>> {
    let q = queue_of(&ctx, &caller, &vhost, &name)?;
    let v = common::vhost(&ctx, &caller, &vhost)?;
    let all = crate::bindings::vhost_bindings(&v);
    let mine = all
        .into_iter()
        .filter(|b| b["destination_type"] == "queue" && b["destination"] == **q.name())
        .collect();
    Ok(Json(p.apply(mine)?))
}
