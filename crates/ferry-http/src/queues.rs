//! /api/queues: list, show, declare (PUT), delete, purge (DELETE
//! .../contents), and a queue's bindings; streams are listed as queues of
//! `"type": "stream"` (purge answers RabbitMQ's 400). Shapes as RabbitMQ 3.10's, with
//! `message_stats` from the queue's counters and rates from the sampler.
//! Crashed queues (log not recoverable at boot) are listed with
//! `"state": "crashed"` and can be deleted.

use crate::auth::Caller;
use crate::common::{self, put_status, query_flag, rate};
use crate::error::{ApiError, ApiResult};
use crate::json::{json_to_table, table_to_json};
use crate::query::ListParams;
use crate::sources::{self, QueueView};
use crate::state::Ctx;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use bytes::Bytes;
use ferry_auth::{Access, Resource};
use ferry_broker::vhost::CrashedQueue;
use ferry_broker::{command, VHost};
use ferry_queue::queue::QueueSpec;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// RabbitMQ's `message_stats` object from counters and rates.
pub fn message_stats(s: &ferry_queue::queue::StatsSnapshot, r: &crate::state::Rates) -> Value {
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

/// One queue or stream as the API shows it. `messages` counts messages
/// waiting for a delayed retry too; `messages_delayed` (Ferry's) says how
/// many, `messages_ready` leaves them out.
pub fn queue_json(ctx: &Ctx, vhost: &str, q: &QueueView, leaders: &LeaderDepths) -> Value {
    // A replicated queue: RabbitMQ's quorum-queue fields (`node` is the
    // leader's), and the leader's figures when this node follows.
    let group = ctx
        .broker
        .vhost(vhost)
        .ok()
        .and_then(|vh| vh.replicated_group(q.name()));
    let d = &group
        .and_then(|g| leaders.get(&g).copied())
        .unwrap_or(q.depth);
    let spec = q.spec();
    let r = ctx.rates.get(vhost, q.name());
    let pol = crate::policies::queue_policy(ctx, vhost, q);
    let mut v = json!({
        "name": &**q.name(),
        "vhost": vhost,
        "durable": spec.durable,
        "auto_delete": spec.auto_delete,
        "exclusive": spec.exclusive_owner.is_some(),
        "arguments": table_to_json(&spec.arguments),
        "node": ctx.node.name,
        "type": q.kind,
        "state": "running",
        "policy": pol.policy,
        "operator_policy": pol.operator_policy,
        "effective_policy_definition": pol.definition,
        "exclusive_consumer_tag": null,
        "messages": d.ready + d.unacked + d.delayed,
        "messages_details": rate(r.messages()),
        "messages_ready": d.ready,
        "messages_ready_details": rate(r.ready),
        "messages_unacknowledged": d.unacked,
        "messages_unacknowledged_details": rate(r.unacked),
        "messages_delayed": d.delayed,
        "message_bytes": d.ready_bytes + d.unacked_bytes,
        "message_bytes_ready": d.ready_bytes,
        "message_bytes_unacknowledged": d.unacked_bytes,
        "consumers": d.consumers,
        "message_stats": message_stats(&q.stats, &r),
    });
    match group.and_then(|g| ctx.broker.replicas().status(g)) {
        Some(st) => {
            if let Some(l) = &st.leader {
                v["node"] = json!(l);
            }
            v["leader"] = json!(st.leader);
            v["members"] = json!(st.members);
            v["online"] = json!(st.online);
        }
        // A node outside the group: the nodes its definitions record (the
        // leader is known to its members only).
        None if group.is_some() => {
            if let (Some(c), Ok(vh)) = (&ctx.cluster, ctx.broker.vhost(vhost)) {
                let names = c.meta_state();
                let mut members: Vec<String> = vh
                    .recorded_replicas(q.name())
                    .iter()
                    .filter_map(|id| names.nodes.get(id).map(|m| m.name.clone()))
                    .collect();
                members.sort();
                v["leader"] = Value::Null;
                v["members"] = json!(members);
            }
        }
        None => {}
    }
    v
}

/// A crashed queue or stream (`ferry_broker::vhost::CrashedQueue`) as
/// RabbitMQ shows one: its declared shape and `"state": "crashed"`, no
/// counts (RabbitMQ has no statistics for it either).
pub fn crashed_json(ctx: &Ctx, vhost: &str, c: &CrashedQueue) -> Value {
    let spec = &c.spec;
    json!({
        "name": &*spec.name,
        "vhost": vhost,
        "durable": spec.durable,
        "auto_delete": spec.auto_delete,
        "exclusive": false,
        "arguments": table_to_json(&spec.arguments),
        "node": ctx.node.name,
        "type": c.kind,
        "state": "crashed",
        "policy": null,
        "exclusive_consumer_tag": null,
    })
}

/// The figures of the replicated queues this node follows, as their
/// leaders have them, by group (empty on a single node).
pub type LeaderDepths = std::collections::HashMap<u64, ferry_queue::queue::Depth>;

/// Asks the leaders of the queues this node follows for their figures
/// (`only`: one group), at most a second per leader node.
pub async fn leader_depths(ctx: &Ctx, only: Option<u64>) -> LeaderDepths {
    if ctx.cluster.is_none() {
        return LeaderDepths::new();
    }
    let broker = ctx.broker.clone();
    tokio::task::spawn_blocking(move || broker.replicas().leader_depths(only))
        .await
        .map(|v| v.into_iter().collect())
        .unwrap_or_default()
}

fn rows(ctx: &Ctx, v: &VHost, leaders: &LeaderDepths) -> Vec<Value> {
    let mut all: Vec<Value> = sources::of_vhost(v)
        .iter()
        .map(|q| queue_json(ctx, v.name(), q, leaders))
        .collect();
    let crashed = v.crashed_queues();
    if !crashed.is_empty() {
        all.extend(crashed.iter().map(|c| crashed_json(ctx, v.name(), c)));
        all.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    }
    all
}

/// GET /api/queues[/{vhost}]
pub async fn list(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    vhost: Option<Path<String>>,
    Query(p): Query<ListParams>,
) -> ApiResult<Json<Value>> {
    let vhost = vhost.map(|Path(v)| v);
    let leaders = leader_depths(&ctx, None).await;
    common::listing(&ctx, &caller, vhost.as_deref(), &p, |v| {
        rows(&ctx, v, &leaders)
    })
}

/// GET /api/queues/{vhost}/{name}
pub async fn show(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path((vhost, name)): Path<(String, String)>,
    Query(p): Query<ListParams>,
) -> ApiResult<Json<Value>> {
    let vh = common::vhost(&ctx, &caller, &vhost)?;
    if let Some(c) = vh.crashed_queue(&name) {
        return Ok(Json(p.apply_one(crashed_json(&ctx, &vhost, &c))));
    }
    let (vh, q) = sources::find(&ctx, &caller, &vhost, &name)?;
    let leaders = match vh.replicated_group(&name) {
        Some(g) => leader_depths(&ctx, Some(g)).await,
        None => LeaderDepths::new(),
    };
    let mut v = queue_json(&ctx, &vhost, &QueueView::of(q), &leaders);
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
    common::may_configure(&ctx, &caller, &vhost, Resource::Queue(&name))?;
    let existed = v.queue_ref(&name).is_some();
    ferry_server::blocking::run(|| command::declare_queue(&ctx.broker, &v, spec, false, 0))?;
    Ok(put_status(existed))
}

/// DELETE /api/queues/{vhost}/{name}[?if-unused=true&if-empty=true]
pub async fn delete(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path((vhost, name)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<StatusCode> {
    let vh = common::vhost(&ctx, &caller, &vhost)?;
    if vh.crashed_queue(&name).is_some() {
        // The operator's way out: the definition and files go.
        common::may_configure(&ctx, &caller, &vhost, Resource::Queue(&name))?;
        ferry_server::blocking::run(|| vh.delete_queue(&name, false, false, 0))?;
        return Ok(StatusCode::NO_CONTENT);
    }
    let (v, queue) = sources::find(&ctx, &caller, &vhost, &name)?;
    common::may_configure(&ctx, &caller, &vhost, Resource::Queue(&name))?;
    let owner = QueueView::of(queue).spec().exclusive_owner.unwrap_or(0);
    let (if_unused, if_empty) = (query_flag(&q, "if-unused"), query_flag(&q, "if-empty"));
    let flags = (if_unused, if_empty);
    ferry_server::blocking::run(|| command::delete_queue(&ctx.broker, &v, &name, flags, owner))?;
    Ok(StatusCode::NO_CONTENT)
}

/// DELETE /api/queues/{vhost}/{name}/contents
pub async fn purge(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let (_, queue) = sources::find(&ctx, &caller, &vhost, &name)?;
    common::authorize(&ctx, &caller, &vhost, Access::Read, Resource::Queue(&name))?;
    // A stream: RabbitMQ's 400 "queue.purge not supported by stream queues".
    let queue = queue.queue("queue.purge")?;
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
    // A crashed queue keeps its bindings, and RabbitMQ lists them.
    let v = common::vhost(&ctx, &caller, &vhost)?;
    if v.crashed_queue(&name).is_none() {
        sources::find(&ctx, &caller, &vhost, &name)?;
    }
    let all = crate::bindings::vhost_bindings(&v);
    let mine = all
        .into_iter()
        .filter(|b| b["destination_type"] == "queue" && b["destination"] == *name)
        .collect();
    Ok(Json(p.apply(mine)?))
}
