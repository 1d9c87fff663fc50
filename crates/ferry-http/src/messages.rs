//! POST /api/exchanges/{vhost}/{name}/publish and POST
//! /api/queues/{vhost}/{name}/get, as RabbitMQ's management API: meant for
//! testing and debugging, not throughput.
//!
//! A publish is routed like an AMQP one (`VHost::route`, the same checks
//! on the exchange and the `user_id` property) and answered
//! `{"routed": bool}` once stored; a persistent message in a durable queue
//! is fsynced first, as RabbitMQ answers after its publisher confirm.
//! On the default exchange a direct reply-to name (routing key or CC/BCC)
//! hands the message to its reply consumer (`HttpConfig::replies`), which,
//! as in RabbitMQ, does not make it `routed`.
//! A get takes up to `count` messages, then settles them by `ackmode`
//! (requeued ones go back after the whole batch, so a batch never sees the
//! same message twice).

use crate::auth::Caller;
use crate::common::{self, exchange_name};
use crate::error::{ApiError, ApiResult};
use crate::json::{amqp_table_to_json, json_to_table};
use crate::state::Ctx;
use axum::extract::{Path, State};
use axum::{Extension, Json};
use base64::Engine;
use bytes::Bytes;
use ferry_amqp::{BasicProperties, ShortString};
use ferry_auth::{Access, Resource};
use ferry_model::Message;
use serde_json::{json, Map, Value};
use std::sync::Arc;

fn missing(keys: &[&str], b: &Value) -> ApiResult<()> {
    let gone: Vec<String> = keys
        .iter()
        .filter(|k| b.get(**k).is_none())
        .map(|k| format!("{{key_missing,{k}}}"))
        .collect();
    match gone.is_empty() {
        true => Ok(()),
        false => Err(ApiError::BadRequest(format!("[{}]", gone.join(",")))),
    }
}

fn short(v: &Value, key: &str) -> ApiResult<Option<ShortString>> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() <= 255 => Ok(Some(ShortString::from(s.clone()))),
        Some(Value::Number(n)) => Ok(Some(ShortString::from(n.to_string()))),
        Some(other) => Err(ApiError::BadRequest(format!(
            "property {key} must be a string of at most 255 bytes, got {other}"
        ))),
    }
}

fn octet(v: &Value, key: &str) -> ApiResult<Option<u8>> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x
            .as_u64()
            .or_else(|| x.as_str().and_then(|s| s.parse().ok()))
            .and_then(|n| u8::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| ApiError::BadRequest(format!("property {key} must be 0-255"))),
    }
}

/// Properties from RabbitMQ's JSON shape.
fn properties(p: &Value) -> ApiResult<BasicProperties> {
    if !p.is_object() {
        return Err(ApiError::BadRequest("properties must be an object".into()));
    }
    let mut b = BasicProperties::default();
    macro_rules! str_prop {
        ($($key:literal => $with:ident),*) => {
            $( if let Some(s) = short(p, $key)? { b = b.$with(s); } )*
        };
    }
    str_prop!(
        "content_type" => with_content_type,
        "content_encoding" => with_content_encoding,
        "correlation_id" => with_correlation_id,
        "reply_to" => with_reply_to,
        "expiration" => with_expiration,
        "message_id" => with_message_id,
        "type" => with_type,
        "user_id" => with_user_id,
        "app_id" => with_app_id,
        "cluster_id" => with_cluster_id
    );
    if let Some(m) = octet(p, "delivery_mode")? {
        b = b.with_delivery_mode(m);
    }
    if let Some(m) = octet(p, "priority")? {
        b = b.with_priority(m);
    }
    if let Some(t) = p.get("timestamp").filter(|v| !v.is_null()) {
        let t = t
            .as_u64()
            .ok_or_else(|| ApiError::BadRequest("timestamp must be an integer".into()))?;
        b = b.with_timestamp(t);
    }
    if p.get("headers").is_some_and(|h| !h.is_null()) {
        let headers = json_to_table(p.get("headers")).map_err(ApiError::BadRequest)?;
        let headers = ferry_amqp::model::table_to_amqp(&headers)
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        b = b.with_headers(headers);
    }
    Ok(b)
}

/// RabbitMQ's JSON shape of properties.
fn properties_json(p: &BasicProperties) -> Value {
    let mut m = Map::new();
    let mut s = |k: &str, v: &Option<ShortString>| {
        if let Some(v) = v {
            m.insert(k.into(), Value::String(v.as_str().to_string()));
        }
    };
    s("content_type", p.content_type());
    s("content_encoding", p.content_encoding());
    s("correlation_id", p.correlation_id());
    s("reply_to", p.reply_to());
    s("expiration", p.expiration());
    s("message_id", p.message_id());
    s("type", p.kind());
    s("user_id", p.user_id());
    s("app_id", p.app_id());
    s("cluster_id", p.cluster_id());
    if let Some(d) = p.delivery_mode() {
        m.insert("delivery_mode".into(), json!(d));
    }
    if let Some(d) = p.priority() {
        m.insert("priority".into(), json!(d));
    }
    if let Some(t) = p.timestamp() {
        m.insert("timestamp".into(), json!(t));
    }
    if let Some(h) = p.headers() {
        m.insert("headers".into(), amqp_table_to_json(h));
    }
    Value::Object(m)
}

/// POST /api/exchanges/{vhost}/{name}/publish
pub async fn publish(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path((vhost, name)): Path<(String, String)>,
    raw: Bytes,
) -> ApiResult<Json<Value>> {
    let v = common::vhost(&ctx, &caller, &vhost)?;
    let b = common::object(&raw)?;
    missing(
        &["routing_key", "payload", "payload_encoding", "properties"],
        &b,
    )?;
    let props = properties(&b["properties"])?;
    let rk = common::string(&b, "routing_key")?.unwrap_or("");
    let payload = common::string(&b, "payload")?.unwrap_or("");
    let body = match common::string(&b, "payload_encoding")? {
        Some("string") => Bytes::from(payload.to_string()),
        Some("base64") => Bytes::from(
            base64::engine::general_purpose::STANDARD
                .decode(payload)
                .map_err(|_| ApiError::BadRequest("payload is not valid base64".into()))?,
        ),
        other => {
            return Err(ApiError::BadRequest(format!(
                "payload_encoding must be string or base64, got {other:?}"
            )))
        }
    };
    if let Some(uid) = props.user_id() {
        if uid.as_str() != caller.name {
            return Err(ApiError::BadRequest(format!(
                "user_id property set to '{}' but authenticated user was '{}'",
                uid.as_str(),
                caller.name
            )));
        }
    }
    let expiration_ms = match props.expiration() {
        None => None,
        Some(e) => Some(
            ferry_model::message::parse_expiration(e.as_str()).map_err(|r| {
                ApiError::BadRequest(ferry_model::message::invalid_expiration_text(
                    e.as_str(),
                    &r,
                ))
            })?,
        ),
    };
    // Routed with the BCC keys below, stored without them (as over AMQP).
    let raw_props = ferry_amqp::encode_properties(&props)
        .map_err(|e| ApiError::BadRequest(format!("bad properties: {e}")))?;
    let (blob, headers) = ferry_server::properties::to_blob(&raw_props)
        .map_err(|e| ApiError::BadRequest(format!("bad properties: {e}")))?;
    let stored = ferry_server::properties::without_bcc(&blob, headers.as_ref());
    let exchange = exchange_name(&name).to_string();
    if !v.has_exchange(&exchange) {
        return Err(ApiError::NotFound);
    }
    common::authorize(
        &ctx,
        &caller,
        &vhost,
        Access::Write,
        Resource::Exchange(&exchange),
    )?;
    // RabbitMQ publishes through a channel: a bad CC/BCC header is that
    // channel's error, reported with its code.
    if let Err(e) = ferry_route::sender_selected_keys(headers.as_ref()) {
        return Err(ApiError::BadRequest(format!(
            "406 PRECONDITION_FAILED - {e}"
        )));
    }
    let msg = Arc::new(Message {
        exchange: Arc::from(exchange.as_str()),
        routing_key: Arc::from(rk),
        properties: stored.unwrap_or(blob),
        body,
        persistent: *props.delivery_mode() == Some(2),
        expiration_ms,
        bcc: ferry_route::bcc_keys(headers.as_ref()),
    });
    let replies = ctx.replies.clone();
    let routed = tokio::task::spawn_blocking(move || -> ApiResult<bool> {
        let mut queues = Vec::new();
        v.route(&exchange, &msg, headers.as_ref(), &mut queues)?;
        if let (true, Some(replies)) = (exchange.is_empty(), &replies) {
            // As RabbitMQ's default exchange: a direct reply-to name (the
            // routing key or a CC/BCC key) hands the message to its reply
            // consumer, which does not count as routed.
            let cc = ferry_route::sender_selected_keys(headers.as_ref()).unwrap_or_default();
            let mut done: Vec<&str> = Vec::new();
            for key in std::iter::once(&*msg.routing_key).chain(cc) {
                if key.starts_with(ferry_server::direct_reply::REPLY_PREFIX) && !done.contains(&key)
                {
                    done.push(key);
                    replies.deliver(key, msg.clone());
                }
            }
        }
        let mut stored = false;
        for q in &queues {
            match q.publish(&msg, None) {
                Ok(ferry_queue::queue::Enqueued::Rejected) => {}
                Ok(_) => {
                    stored = true;
                    if msg.persistent && q.spec().durable {
                        q.sync_now();
                    }
                }
                Err(e) => tracing::warn!(queue = %q.name(), error = %e, "HTTP publish failed"),
            }
        }
        Ok(stored)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(Json(json!({ "routed": routed })))
}

#[derive(Clone, Copy, PartialEq)]
enum AckMode {
    AckRequeue,
    Ack,
    RejectRequeue,
    Reject,
}

/// POST /api/queues/{vhost}/{name}/get
pub async fn get(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path((vhost, name)): Path<(String, String)>,
    raw: Bytes,
) -> ApiResult<Json<Value>> {
    common::vhost(&ctx, &caller, &vhost)?;
    let b = common::object(&raw)?;
    missing(&["count", "ackmode", "encoding"], &b)?;
    let count = b["count"]
        .as_u64()
        .or_else(|| b["count"].as_str().and_then(|s| s.parse().ok()))
        .ok_or_else(|| ApiError::BadRequest("count must be a non-negative integer".into()))?;
    let mode = match b["ackmode"].as_str() {
        Some("ack_requeue_true") => AckMode::AckRequeue,
        Some("ack_requeue_false") => AckMode::Ack,
        Some("reject_requeue_true") => AckMode::RejectRequeue,
        Some("reject_requeue_false") => AckMode::Reject,
        _ => {
            return Err(ApiError::BadRequest(format!(
                "bad ackmode {}",
                b["ackmode"]
            )))
        }
    };
    let base64_always = match b["encoding"].as_str() {
        Some("auto") => false,
        Some("base64") => true,
        _ => {
            return Err(ApiError::BadRequest(format!(
                "bad encoding {}",
                b["encoding"]
            )))
        }
    };
    let truncate = match b.get("truncate") {
        None | Some(Value::Null) => None,
        Some(t) => Some(
            t.as_u64()
                .or_else(|| t.as_str().and_then(|s| s.parse().ok()))
                .ok_or_else(|| ApiError::BadRequest("truncate must be an integer".into()))?
                as usize,
        ),
    };
    let (_, entry) = crate::sources::find(&ctx, &caller, &vhost, &name)?;
    common::authorize(&ctx, &caller, &vhost, Access::Read, Resource::Queue(&name))?;
    // RabbitMQ answers a get on a stream with 400 and the channel error's
    // code in the reason: "540 basic.get not supported by stream queues ...".
    let q = entry.queue("basic.get").map_err(|e| match e.kind() {
        ferry_queue::ErrorKind::NotImplemented => ApiError::BadRequest(format!("540 {e}")),
        _ => ApiError::from(e),
    })?;
    let out = tokio::task::spawn_blocking(move || -> ApiResult<Vec<Value>> {
        let mut out = Vec::new();
        let mut ids = Vec::new();
        let mut result = Ok(());
        for _ in 0..count {
            let got = match q.get(false) {
                Ok(g) => g,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            let Some((d, left)) = got else { break };
            ids.push(d.msg_id);
            let m = &d.message;
            let props = ferry_amqp::model::props_from_model(&m.properties)
                .map_err(|e| e.to_string())
                .and_then(|raw| ferry_amqp::parse_properties(&raw).map_err(|e| e.to_string()))
                .map(|p| properties_json(&p))
                .unwrap_or_else(|_| json!({}));
            let body: &[u8] = match truncate {
                Some(t) if t < m.body.len() => &m.body[..t],
                _ => &m.body,
            };
            let (payload, enc) = match std::str::from_utf8(body) {
                Ok(s) if !base64_always => (s.to_string(), "string"),
                _ => (
                    base64::engine::general_purpose::STANDARD.encode(body),
                    "base64",
                ),
            };
            out.push(json!({
                "payload_bytes": m.body.len(),
                "redelivered": d.redelivered,
                "exchange": &*m.exchange,
                "routing_key": &*m.routing_key,
                "message_count": left,
                "properties": props,
                "payload": payload,
                "payload_encoding": enc,
            }));
        }
        // Settled after the batch: a requeued message must not come back
        // within it.
        let settled = match mode {
            AckMode::AckRequeue | AckMode::RejectRequeue => q.requeue(&ids),
            AckMode::Ack => q.settle(&ids),
            AckMode::Reject => q.reject(&ids),
        };
        result?;
        settled?;
        Ok(out)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(Json(Value::Array(out)))
}
