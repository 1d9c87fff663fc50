//! /api/connections, /api/channels, /api/consumers from the live
//! connection registry; DELETE /api/connections/{name} closes one with 320
//! CONNECTION_FORCED ("Closed via management plugin", or the `X-Reason`
//! header), as RabbitMQ does.
//!
//! Users with only the `management` tag see their own connections;
//! `monitoring` and `administrator` see every one.

use crate::auth::Caller;
use crate::common::rate;
use crate::error::{ApiError, ApiResult};
use crate::json::amqp_table_to_json;
use crate::query::ListParams;
use crate::state::Ctx;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use ferry_server::registry::{client_property, ChannelSnapshot, ConnSnapshot};
use serde_json::{json, Value};

/// The connections the caller may see, of one vhost (401 without access
/// to it) or of all.
fn visible(ctx: &Ctx, caller: &Caller, vhost: Option<&str>) -> ApiResult<Vec<ConnSnapshot>> {
    if let Some(v) = vhost {
        caller.require_vhost(ctx, v)?;
    }
    Ok(ctx
        .registry
        .snapshot()
        .into_iter()
        .filter(|c| caller.is_monitor() || c.user == caller.name)
        .filter(|c| vhost.is_none_or(|v| c.vhost == v))
        .collect())
}

fn conn_json(ctx: &Ctx, c: &ConnSnapshot) -> Value {
    let props = c.client_properties.as_ref();
    let user_provided = props.and_then(|p| client_property(p, "connection_name"));
    let tls = c.tls.as_ref();
    json!({
        "name": c.name,
        "node": ctx.node.name,
        "type": "network",
        "state": "running",
        "protocol": "AMQP 0-9-1",
        "auth_mechanism": "PLAIN",
        "user": c.user,
        "vhost": c.vhost,
        "peer_host": c.peer.ip().to_string(),
        "peer_port": c.peer.port(),
        "host": c.local.map(|l| l.ip().to_string()),
        "port": c.local.map(|l| l.port()),
        "ssl": c.tls.is_some(),
        "ssl_protocol": tls.map(|t| t.protocol.as_str()),
        "ssl_key_exchange": tls.map(|t| t.key_exchange.as_str()),
        "ssl_cipher": tls.map(|t| t.cipher.as_str()),
        "ssl_hash": tls.map(|t| t.hash.as_str()),
        "peer_cert_subject": tls.and_then(|t| t.peer_cert_subject.as_deref()),
        "peer_cert_issuer": tls.and_then(|t| t.peer_cert_issuer.as_deref()),
        "channels": c.channels.len(),
        "channel_max": 0,
        "frame_max": c.frame_max,
        "timeout": c.heartbeat,
        "connected_at": c.connected_at_ms,
        "recv_oct": c.recv_oct,
        "recv_oct_details": rate(0.0),
        "send_oct": c.send_oct,
        "send_oct_details": rate(0.0),
        "client_properties": props.map_or(json!({}), amqp_table_to_json),
        "user_provided_name": user_provided,
    })
}

fn channel_name(c: &ConnSnapshot, ch: &ChannelSnapshot) -> String {
    format!("{} ({})", c.name, ch.number)
}

fn channel_json(ctx: &Ctx, c: &ConnSnapshot, ch: &ChannelSnapshot) -> Value {
    json!({
        "name": channel_name(c, ch),
        "number": ch.number,
        "node": ctx.node.name,
        "user": c.user,
        "vhost": c.vhost,
        "state": "running",
        "connection_details": {
            "name": c.name,
            "peer_host": c.peer.ip().to_string(),
            "peer_port": c.peer.port(),
        },
        "prefetch_count": ch.prefetch,
        "global_prefetch_count": ch.global_prefetch,
        "messages_unacknowledged": ch.unacked,
        "messages_unconfirmed": 0,
        "messages_uncommitted": 0,
        "acks_uncommitted": 0,
        "confirm": ch.confirm,
        "transactional": ch.tx,
        "consumer_count": ch.consumers.len(),
    })
}

/// Every consumer on the node as the API shows it.
pub fn consumers_json(ctx: &Ctx) -> Vec<Value> {
    consumers_of(ctx, &ctx.registry.snapshot())
}

fn consumers_of(ctx: &Ctx, conns: &[ConnSnapshot]) -> Vec<Value> {
    let mut out = Vec::new();
    for c in conns {
        for ch in &c.channels {
            for k in &ch.consumers {
                out.push(json!({
                    "consumer_tag": k.tag,
                    "queue": { "name": k.queue, "vhost": c.vhost },
                    "channel_details": {
                        "name": channel_name(c, ch),
                        "number": ch.number,
                        "connection_name": c.name,
                        "peer_host": c.peer.ip().to_string(),
                        "peer_port": c.peer.port(),
                        "user": c.user,
                        "node": ctx.node.name,
                    },
                    "ack_required": k.ack_required,
                    "prefetch_count": k.prefetch,
                    "exclusive": k.exclusive,
                    "active": true,
                    "activity_status": "up",
                    "arguments": {},
                }));
            }
        }
    }
    out
}

/// A list of connections, channels or consumers: `rows` of the visible
/// connections (of `vhost`), filtered, sorted, paged.
fn listing(
    ctx: &Ctx,
    caller: &Caller,
    vhost: Option<&str>,
    p: &ListParams,
    rows: impl Fn(&[ConnSnapshot]) -> Vec<Value>,
) -> ApiResult<Json<Value>> {
    Ok(Json(p.apply(rows(&visible(ctx, caller, vhost)?))?))
}

fn conn_rows(ctx: &Ctx, conns: &[ConnSnapshot]) -> Vec<Value> {
    conns.iter().map(|c| conn_json(ctx, c)).collect()
}

fn channel_rows(ctx: &Ctx, conns: &[ConnSnapshot]) -> Vec<Value> {
    conns
        .iter()
        .flat_map(|c| c.channels.iter().map(move |ch| channel_json(ctx, c, ch)))
        .collect()
}

/// GET /api/connections and /api/vhosts/{vhost}/connections
pub async fn list(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    vhost: Option<Path<String>>,
    Query(p): Query<ListParams>,
) -> ApiResult<Json<Value>> {
    let vhost = vhost.map(|Path(v)| v);
    listing(&ctx, &caller, vhost.as_deref(), &p, |c| conn_rows(&ctx, c))
}

fn find(ctx: &Ctx, caller: &Caller, name: &str) -> ApiResult<ConnSnapshot> {
    visible(ctx, caller, None)?
        .into_iter()
        .find(|c| c.name == name)
        .ok_or(ApiError::NotFound)
}

/// GET /api/connections/{name}
pub async fn show(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Query(p): Query<ListParams>,
) -> ApiResult<Json<Value>> {
    let c = find(&ctx, &caller, &name)?;
    Ok(Json(p.apply_one(conn_json(&ctx, &c))))
}

/// DELETE /api/connections/{name}
pub async fn close(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    find(&ctx, &caller, &name)?;
    let reason = headers
        .get("x-reason")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("Closed via management plugin");
    match ctx.registry.force_close(&name, reason) {
        true => Ok(StatusCode::NO_CONTENT),
        false => Err(ApiError::NotFound),
    }
}

/// GET /api/connections/{name}/channels
pub async fn conn_channels(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Query(p): Query<ListParams>,
) -> ApiResult<Json<Value>> {
    let c = find(&ctx, &caller, &name)?;
    let items = c
        .channels
        .iter()
        .map(|ch| channel_json(&ctx, &c, ch))
        .collect();
    Ok(Json(p.apply(items)?))
}

/// GET /api/channels and /api/vhosts/{vhost}/channels
pub async fn channels(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    vhost: Option<Path<String>>,
    Query(p): Query<ListParams>,
) -> ApiResult<Json<Value>> {
    let vhost = vhost.map(|Path(v)| v);
    listing(&ctx, &caller, vhost.as_deref(), &p, |c| {
        channel_rows(&ctx, c)
    })
}

/// GET /api/channels/{name}
pub async fn channel(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    channel_rows(&ctx, &visible(&ctx, &caller, None)?)
        .into_iter()
        .find(|c| c["name"] == name.as_str())
        .map(Json)
        .ok_or(ApiError::NotFound)
}

/// GET /api/consumers and /api/consumers/{vhost}
pub async fn consumers(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    vhost: Option<Path<String>>,
    Query(p): Query<ListParams>,
) -> ApiResult<Json<Value>> {
    let vhost = vhost.map(|Path(v)| v);
    listing(&ctx, &caller, vhost.as_deref(), &p, |c| {
        consumers_of(&ctx, c)
    })
}
