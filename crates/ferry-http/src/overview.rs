//! /api/overview, /api/nodes, /api/health/checks/*, /api/whoami,
//! /api/extensions: node-wide facts and totals. `rabbitmq_version` and
//! `management_version` say which RabbitMQ API level Ferry mimics (3.10.8);
//! `product_name` / `product_version` say what it is.

use crate::auth::Caller;
use crate::common::rate;
use crate::error::{ApiError, ApiResult};
use crate::state::{Ctx, Rates};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use ferry_queue::queue::StatsSnapshot;
use serde_json::{json, Value};

/// The RabbitMQ API level Ferry answers as.
pub const RABBITMQ_VERSION: &str = "3.10.8";

const EXCHANGE_TYPES: [(&str, &str); 5] = [
    (
        "direct",
        "AMQP direct exchange, as per the AMQP specification",
    ),
    (
        "fanout",
        "AMQP fanout exchange, as per the AMQP specification",
    ),
    (
        "headers",
        "AMQP headers exchange, as per the AMQP specification",
    ),
    (
        "topic",
        "AMQP topic exchange, as per the AMQP specification",
    ),
    // As RabbitMQ lists it with rabbitmq_consistent_hash_exchange enabled.
    ("x-consistent-hash", "Consistent Hashing Exchange"),
];

fn exchange_types() -> Value {
    EXCHANGE_TYPES
        .iter()
        .map(|(n, d)| json!({"name": n, "description": d, "enabled": true}))
        .collect()
}

/// Totals over the vhosts the caller sees.
struct Totals {
    ready: u64,
    unacked: u64,
    delayed: u64,
    queues: usize,
    exchanges: usize,
    consumers: u64,
    stats: StatsSnapshot,
    rates: Rates,
}

fn totals(ctx: &Ctx, caller: &Caller) -> Totals {
    let mut t = Totals {
        ready: 0,
        unacked: 0,
        delayed: 0,
        queues: 0,
        exchanges: 0,
        consumers: 0,
        stats: StatsSnapshot::default(),
        rates: Rates::default(),
    };
    for v in crate::common::visible_vhosts(ctx, caller) {
        t.exchanges += v.exchanges().len();
        // RabbitMQ counts every queue record (`rabbit_amqqueue:list/1`),
        // a crashed queue too; it has no stats, so no messages.
        t.queues += v.crashed_queues().len();
        for q in crate::sources::of_vhost(&v) {
            t.ready += q.depth.ready;
            t.unacked += q.depth.unacked;
            t.delayed += q.depth.delayed;
            t.consumers += q.depth.consumers;
            t.queues += 1;
            t.stats.add(&q.stats);
            t.rates.add(&ctx.rates.get(v.name(), q.name()));
        }
    }
    t
}

/// GET /api/overview
pub async fn overview(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Value>> {
    let t = totals(&ctx, &caller);
    let conns = ctx.registry.snapshot();
    let channels: usize = conns.iter().map(|c| c.channels.len()).sum();
    let s = &t.stats;
    Ok(Json(json!({
        "management_version": RABBITMQ_VERSION,
        "rabbitmq_version": RABBITMQ_VERSION,
        "product_name": "Ferry",
        "product_version": env!("CARGO_PKG_VERSION"),
        "rates_mode": "basic",
        "cluster_name": ctx.node.name,
        "node": ctx.node.name,
        "erlang_version": "n/a",
        "disable_stats": false,
        "enable_queue_totals": true,
        "statistics_db_event_queue": 0,
        "exchange_types": exchange_types(),
        "message_stats": crate::queues::message_stats(s, &t.rates),
        "queue_totals": {
            "messages": t.ready + t.unacked + t.delayed,
            "messages_details": rate(t.rates.messages()),
            "messages_ready": t.ready, "messages_ready_details": rate(t.rates.ready),
            "messages_unacknowledged": t.unacked,
            "messages_unacknowledged_details": rate(t.rates.unacked),
            "messages_delayed": t.delayed,
        },
        "object_totals": {
            "connections": conns.len(),
            "channels": channels,
            "exchanges": t.exchanges,
            "queues": t.queues,
            "consumers": t.consumers,
        },
        "listeners": [{
            "node": ctx.node.name,
            "protocol": "amqp",
            "ip_address": ctx.node.amqp_listen.ip().to_string(),
            "port": ctx.node.amqp_listen.port(),
        }],
        "contexts": [],
    })))
}

fn proc_value(path: &str, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(path).ok()?;
    let line = s.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// Free bytes on the data directory's file system.
pub fn disk_free(ctx: &Ctx) -> u64 {
    rustix::fs::statvfs(&ctx.broker.config().data_dir)
        .map_or(0, |st| st.f_bavail.saturating_mul(st.f_frsize))
}

/// This node's figures that change (memory, disk, descriptors, ...):
/// part of its `/api/nodes` entry here, and sent to the other nodes of a
/// cluster with every ping so that theirs show them too.
pub fn stats_json(ctx: &Ctx) -> Value {
    let alarms = *ctx.alarms.borrow();
    let fd_used = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());
    let fd_total = proc_value("/proc/self/limits", "Max open files").unwrap_or(0);
    json!({
        "os_pid": std::process::id().to_string(),
        "processors": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "uptime": ctx.started.elapsed().as_millis() as u64,
        // What the memory alarm compares with mem_limit (RabbitMQ's
        // mem_used is its allocator's view, not RSS either).
        "mem_used": ferry_server::memory::used_bytes(),
        "mem_used_details": rate(0.0),
        "mem_rss": ferry_server::alarms::rss_bytes().unwrap_or(0),
        "mem_limit": ctx.node.mem_limit,
        "mem_alarm": alarms.memory,
        "disk_free": disk_free(ctx),
        "disk_free_details": rate(0.0),
        "disk_free_limit": ctx.node.disk_free_limit,
        "disk_free_alarm": alarms.disk,
        "fd_used": fd_used,
        "fd_total": fd_total,
        "sockets_used": ctx.registry.len(),
    })
}

fn node_json(ctx: &Ctx) -> Value {
    let mut v = stats_json(ctx);
    let more = json!({
        "name": ctx.node.name,
        "type": "disc",
        "running": true,
        "proc_used": 0,
        "proc_total": 0,
        "run_queue": 0,
        "rates_mode": "basic",
        "partitions": [],
        "exchange_types": exchange_types(),
        "applications": [{"name": "ferry", "description": "Ferry", "version": env!("CARGO_PKG_VERSION")}],
        "auth_mechanisms": [
            {"name": "PLAIN", "description": "SASL PLAIN authentication mechanism", "enabled": true},
            {"name": "AMQPLAIN", "description": "QPid AMQPLAIN mechanism", "enabled": true},
        ],
    });
    if let (Some(v), Value::Object(more)) = (v.as_object_mut(), more) {
        v.extend(more);
    }
    v
}

/// Every node: this one in full; in a cluster, each other member with its
/// name, whether it answers, and the members this node cannot reach
/// (`partitions`, RabbitMQ's field), plus the cluster fields of
/// `ferry_cluster` (`cluster_id`, `raft_id`, `cluster_address`, `voter`,
/// `metadata_leader`).
async fn all_nodes(ctx: &Ctx) -> Vec<Value> {
    let mut me = node_json(ctx);
    let Some(cluster) = &ctx.cluster else {
        return vec![me];
    };
    let st = cluster.status().await;
    let down: Vec<String> = st
        .members
        .iter()
        .filter(|m| !m.running)
        .map(display_name)
        .collect();
    let mut out = Vec::new();
    for m in &st.members {
        let mut v = if m.id == st.me {
            me["partitions"] = json!(down);
            std::mem::take(&mut me)
        } else {
            let mut v = json!({
                "name": display_name(m),
                "type": "disc",
                "running": m.running,
                "partitions": [],
            });
            // Its own figures, sent with its answer to this node's ping.
            if let (Some(v), Ok(Value::Object(stats))) =
                (v.as_object_mut(), serde_json::from_slice::<Value>(&m.stats))
            {
                v.extend(stats);
            }
            v
        };
        v["raft_id"] = json!(m.id.to_string());
        v["cluster_address"] = json!(m.addr);
        v["voter"] = json!(m.voter);
        v["metadata_leader"] = json!(st.leader == Some(m.id));
        v["cluster_id"] = json!(st.cluster_id);
        out.push(v);
    }
    out
}

/// A member's name, or its address until it announced itself.
fn display_name(m: &ferry_cluster::node::MemberStatus) -> String {
    if m.name.is_empty() {
        m.addr.clone()
    } else {
        m.name.clone()
    }
}

/// GET /api/nodes
pub async fn nodes(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Value>> {
    caller.require_monitor()?;
    Ok(Json(Value::Array(all_nodes(&ctx).await)))
}

/// DELETE /api/nodes/{name}: removes a stopped member from the cluster
/// (Ferry's own: RabbitMQ does this with `rabbitmqctl forget_cluster_node`).
pub async fn forget_node(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<axum::http::StatusCode> {
    caller.require_admin()?;
    let Some(cluster) = &ctx.cluster else {
        return Err(ApiError::BadRequest("this node is not clustered".into()));
    };
    use ferry_cluster::node::ForgetError;
    match cluster.forget(&name).await {
        Ok(id) => {
            // As RabbitMQ's forget: out of every replicated queue's group
            // too (a group that cannot lose it is logged and stays).
            let broker = ctx.broker.clone();
            let shrunk = tokio::task::spawn_blocking(move || broker.shrink_node(id))
                .await
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            tracing::info!(node = %name, removed = shrunk.changed, failed = shrunk.failed.len(),
                "forgotten node taken out of the replicated queues' groups");
            Ok(axum::http::StatusCode::NO_CONTENT)
        }
        Err(ForgetError::NotAMember) => Err(ApiError::NotFound),
        Err(e @ ForgetError::NoLeader(_)) => Err(ApiError::Unavailable(e.to_string())),
        Err(e) => Err(ApiError::BadRequest(e.to_string())),
    }
}

/// POST /api/cluster/leave (Ferry's own, administrator): this node leaves
/// the cluster (RabbitMQ's `stop_app` + `reset`): out of every replicated
/// queue's and stream's group first (handing over the leaderships it
/// has), then out of the cluster; then it stops. If a group cannot let it
/// go (its other members hold no majority), nothing more is done: 400
/// naming those queues.
pub async fn leave_cluster(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<axum::http::StatusCode> {
    use ferry_cluster::node::ForgetError;
    caller.require_admin()?;
    let Some(cluster) = &ctx.cluster else {
        return Err(ApiError::BadRequest("this node is not clustered".into()));
    };
    if cluster.voters().len() <= 1 {
        return Err(ApiError::BadRequest(
            "the cluster's last member cannot leave it".into(),
        ));
    }
    let (broker, me) = (ctx.broker.clone(), cluster.id());
    let shrunk = tokio::task::spawn_blocking(move || broker.shrink_node(me))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    if !shrunk.failed.is_empty() {
        let queues: Vec<String> = shrunk
            .failed
            .iter()
            .map(|(v, q, why)| format!("'{q}' in vhost '{v}' ({why})"))
            .collect();
        return Err(ApiError::BadRequest(format!(
            "this node could not leave the groups of {}; it is still a member of the cluster",
            queues.join(", ")
        )));
    }
    match cluster.leave().await {
        Ok(()) => Ok(axum::http::StatusCode::NO_CONTENT),
        Err(ForgetError::NotAMember) => Err(ApiError::NotFound),
        Err(e @ ForgetError::NoLeader(_)) => Err(ApiError::Unavailable(e.to_string())),
        Err(e) => Err(ApiError::BadRequest(e.to_string())),
    }
}

/// POST /api/cluster/join (Ferry's own, administrator; RabbitMQ's
/// `join_cluster`): `{"node": "HOST:PORT"}`, the cluster address of a node
/// of a running cluster. This node must be a cluster of one; it then
/// resets its data directory (every definition and message it holds is
/// gone, as RabbitMQ's join resets the node) and starts again, joining
/// that cluster. 202: it is starting over; 400: refused, nothing changed.
pub async fn join_cluster(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    raw: axum::body::Bytes,
) -> ApiResult<(axum::http::StatusCode, Json<Value>)> {
    caller.require_admin()?;
    let Some(cluster) = &ctx.cluster else {
        return Err(ApiError::BadRequest(
            "this node is not clustered: start it with cluster_listen (and no seeds) to join a cluster"
                .into(),
        ));
    };
    let body: Value = serde_json::from_slice(&raw).map_err(ApiError::bad_json)?;
    let Some(addr) = body.get("node").and_then(Value::as_str) else {
        return Err(ApiError::BadRequest(
            "expected {\"node\": \"HOST:PORT\"}: the cluster address of a node of the cluster to join"
                .into(),
        ));
    };
    match cluster.join_other(addr).await {
        Ok(()) => Ok((
            axum::http::StatusCode::ACCEPTED,
            Json(serde_json::json!({"joining": addr.trim()})),
        )),
        Err(e) => Err(ApiError::BadRequest(e.to_string())),
    }
}

/// The cluster id of member `name` (404: no such member).
fn member_id(ctx: &Ctx, name: &str) -> ApiResult<u64> {
    let Some(cluster) = &ctx.cluster else {
        return Err(ApiError::BadRequest("this node is not clustered".into()));
    };
    let st = cluster.meta_state();
    let voters = cluster.voters();
    st.nodes
        .iter()
        .find(|(id, m)| m.name == name && voters.contains_key(id))
        .map(|(id, _)| *id)
        .ok_or(ApiError::NotFound)
}

/// The JSON answer of a grow or shrink.
fn changed_json(r: &ferry_broker::shrink::Shrunk) -> Json<Value> {
    let failed: Vec<Value> = r
        .failed
        .iter()
        .map(|(v, q, why)| serde_json::json!({"vhost": v, "name": q, "error": why}))
        .collect();
    Json(serde_json::json!({"changed": r.changed, "failed": failed}))
}

/// POST /api/queues/quorum/replicas/on/{node}/grow (administrator; body
/// `{"strategy": "all" | "even"}`, RabbitMQ's `rabbitmq-queues grow`):
/// adds a replica on `node` to every replicated queue and stream without
/// one there. Answers how many groups changed and which could not.
pub async fn grow_replicas(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path(node): Path<String>,
    raw: axum::body::Bytes,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let who = member_id(&ctx, &node)?;
    let body: Value = if raw.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&raw).map_err(ApiError::bad_json)?
    };
    let even = match body.get("strategy").and_then(Value::as_str) {
        None | Some("all") => false,
        Some("even") => true,
        Some(s) => {
            return Err(ApiError::BadRequest(format!(
                "strategy must be \"all\" or \"even\", not \"{s}\""
            )))
        }
    };
    let broker = ctx.broker.clone();
    let r = tokio::task::spawn_blocking(move || broker.grow_node(who, even))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(changed_json(&r))
}

/// DELETE /api/queues/quorum/replicas/on/{node}/shrink (administrator,
/// RabbitMQ's `rabbitmq-queues shrink`): removes `node`'s replica from
/// every replicated queue and stream (a group whose other members hold no
/// majority of it keeps it: listed in the answer).
pub async fn shrink_replicas(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path(node): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let who = member_id(&ctx, &node)?;
    let broker = ctx.broker.clone();
    let r = tokio::task::spawn_blocking(move || broker.shrink_node(who))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(changed_json(&r))
}

/// POST /api/rebalance/queues (RabbitMQ's, administrator): spreads the
/// leaders of the replicated queues and streams this node holds a replica
/// of evenly over their live members (each over-loaded leader's group is
/// asked to elect a less loaded member; an idle group moves at once, a
/// busy one within its lease). Answers how many groups it looked at and
/// how many it asked to move.
pub async fn rebalance_queues(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let broker = ctx.broker.clone();
    let done = tokio::task::spawn_blocking(move || broker.replicas().rebalance())
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let Some(r) = done else {
        return Err(ApiError::BadRequest("this node is not clustered".into()));
    };
    Ok(Json(
        serde_json::json!({ "groups": r.groups, "moved": r.moved }),
    ))
}

/// GET /api/nodes/{name}
pub async fn node(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_monitor()?;
    all_nodes(&ctx)
        .await
        .into_iter()
        .find(|n| n["name"] == name)
        .map(Json)
        .ok_or(ApiError::NotFound)
}

/// GET /api/health/checks/alarms (and local-alarms): 200 without alarms,
/// 503 with the list, as RabbitMQ.
pub async fn alarms(State(ctx): State<Ctx>) -> Response {
    let a = *ctx.alarms.borrow();
    let mut list = Vec::new();
    if a.memory {
        list.push(json!({"node": ctx.node.name, "resource": "memory"}));
    }
    if a.disk {
        list.push(json!({"node": ctx.node.name, "resource": "disk"}));
    }
    if list.is_empty() {
        return Json(json!({"status": "ok"})).into_response();
    }
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({
            "status": "failed",
            "reason": "resource alarm(s) in effect in the cluster",
            "alarms": list,
        })),
    )
        .into_response()
}

/// GET /api/health/checks/node-is-quorum-critical (RabbitMQ's): 503 with
/// the replicated queues and streams that would lose their majority if
/// this node stopped now (it is one of their members, and without it
/// fewer than a majority of their members are up as this node sees
/// them), 200 otherwise — always on a node that is not clustered.
pub async fn quorum_critical(State(ctx): State<Ctx>) -> Response {
    let mut critical = Vec::new();
    if ctx.cluster.is_some() {
        let replicas = ctx.broker.replicas();
        for vname in ctx.broker.vhost_names() {
            let Ok(vh) = ctx.broker.vhost(&vname) else {
                continue;
            };
            for (name, group, _) in vh.replicated_members() {
                let Some(st) = replicas.status(group) else {
                    continue;
                };
                let me = &ctx.node.name;
                if !st.members.contains(me) {
                    continue;
                }
                let others_up = st.online.iter().filter(|n| *n != me).count();
                if others_up < st.members.len() / 2 + 1 {
                    critical.push(json!({
                        "name": name,
                        "virtual_host": vname,
                        "type": match vh.queue_ref(&name) {
                            Some(ferry_queue::source::QueueRef::Stream(_)) => "stream",
                            _ => "quorum",
                        },
                        "members": st.members,
                        "online": st.online,
                    }));
                }
            }
        }
    }
    if critical.is_empty() {
        return Json(json!({"status": "ok"})).into_response();
    }
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({
            "status": "failed",
            "reason": "There are quorum queues that would lose their quorum if the target node is shut down",
            "queues": critical,
        })),
    )
        .into_response()
}

/// GET /api/whoami
pub async fn whoami(Extension(caller): Extension<Caller>) -> Json<Value> {
    Json(json!({"name": caller.name, "tags": caller.tags}))
}

/// GET /api/extensions (no web UI plugins).
pub async fn extensions() -> Json<Value> {
    Json(json!([]))
}
