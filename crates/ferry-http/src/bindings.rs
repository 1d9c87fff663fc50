//! /api/bindings: list (all, per vhost, between two objects), create
//! (POST), show and delete by "properties key". Like RabbitMQ, the default
//! exchange's implicit binding to every queue is listed (source "").
//!
//! Properties key: the routing key, percent-encoded ("~" when empty),
//! plus "~" and a short hash of the arguments when there are any. Clients
//! treat it as opaque and only send back what a listing gave them.

use crate::auth::Caller;
use crate::common::{self, exchange_name};
use crate::error::{ApiError, ApiResult};
use crate::json::{json_to_table, table_to_json};
use crate::query::ListParams;
use crate::state::Ctx;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::Engine;
use bytes::Bytes;
use ferry_auth::{Access, Resource};
use ferry_broker::{command, VHost};
use ferry_model::Table;
use ferry_route::Destination;
use serde_json::{json, Value};

fn args_hash(args: &Value) -> String {
    // FNV-1a over the canonical JSON (serde_json maps are sorted).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in args.to_string().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&h.to_be_bytes()[..5])
}

fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The properties key of a binding, decoded (as it arrives in a path).
fn props_key_raw(rk: &str, args: &Value) -> String {
    let empty = args.as_object().is_none_or(|m| m.is_empty());
    match (rk.is_empty(), empty) {
        (true, true) => "~".to_string(),
        (false, true) => rk.to_string(),
        (_, false) => format!("{rk}~{}", args_hash(args)),
    }
}

fn props_key(rk: &str, args: &Value) -> String {
    let empty = args.as_object().is_none_or(|m| m.is_empty());
    match (rk.is_empty(), empty) {
        (true, true) => "~".to_string(),
        (false, true) => encode(rk),
        (_, false) => format!("{}~{}", encode(rk), args_hash(args)),
    }
}

fn binding_json(vhost: &str, source: &str, dest: &Destination, rk: &str, args: &Table) -> Value {
    let (dtype, dname) = match dest {
        Destination::Queue(q) => ("queue", q),
        Destination::Exchange(e) => ("exchange", e),
    };
    let a = table_to_json(args);
    json!({
        "source": source,
        "vhost": vhost,
        "destination": &**dname,
        "destination_type": dtype,
        "routing_key": rk,
        "arguments": a,
        "properties_key": props_key(rk, &a),
    })
}

/// Every binding of a vhost, default-exchange ones first.
pub fn vhost_bindings(v: &VHost) -> Vec<Value> {
    // Every queue has its default-exchange binding, a crashed one too
    // (RabbitMQ lists the bindings of every queue record it holds).
    let mut queues: Vec<String> = v
        .queue_refs()
        .iter()
        .map(|q| q.name().to_string())
        .collect();
    queues.extend(
        v.crashed_queues()
            .into_iter()
            .map(|c| c.spec.name.to_string()),
    );
    queues.sort();
    let mut out: Vec<Value> = queues
        .iter()
        .map(|q| {
            let d = Destination::queue(q.as_str());
            binding_json(v.name(), "", &d, q, &Table::new())
        })
        .collect();
    let mut xs = v.exchanges();
    xs.sort_by(|a, b| a.name.cmp(&b.name));
    for x in xs.iter().filter(|x| !x.name.is_empty()) {
        for b in x.bindings() {
            out.push(binding_json(
                v.name(),
                &x.name,
                &b.destination,
                &b.routing_key,
                &b.arguments,
            ));
        }
    }
    out
}

/// GET /api/bindings[/{vhost}]
pub async fn list(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    vhost: Option<Path<String>>,
    Query(p): Query<ListParams>,
) -> ApiResult<Json<Value>> {
    let vhost = vhost.map(|Path(v)| v);
    common::listing(&ctx, &caller, vhost.as_deref(), &p, vhost_bindings)
}

fn destination(v: &VHost, dtype: &str, name: &str) -> ApiResult<Destination> {
    match dtype {
        "q" if v.queue_ref(name).is_some() => Ok(Destination::queue(name)),
        "e" if v.has_exchange(exchange_name(name)) => {
            Ok(Destination::exchange(exchange_name(name)))
        }
        _ => Err(ApiError::NotFound),
    }
}

fn between(v: &VHost, source: &str, dest: &Destination) -> Vec<Value> {
    vhost_bindings(v)
        .into_iter()
        .filter(|b| {
            let dtype = match dest {
                Destination::Queue(_) => "queue",
                Destination::Exchange(_) => "exchange",
            };
            b["source"] == source
                && b["destination_type"] == dtype
                && b["destination"] == **dest.name()
        })
        .collect()
}

/// GET /api/bindings/{vhost}/e/{source}/{q|e}/{destination}
pub async fn list_between(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path((vhost, source, dtype, dest)): Path<(String, String, String, String)>,
    Query(p): Query<ListParams>,
) -> ApiResult<Json<Value>> {
    let v = common::vhost(&ctx, &caller, &vhost)?;
    let source = exchange_name(&source);
    if !v.has_exchange(source) {
        return Err(ApiError::NotFound);
    }
    let d = destination(&v, &dtype, &dest)?;
    Ok(Json(p.apply(between(&v, source, &d))?))
}

/// POST /api/bindings/{vhost}/e/{source}/{q|e}/{destination}
pub async fn create(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path((vhost, source, dtype, dest)): Path<(String, String, String, String)>,
    raw: Bytes,
) -> ApiResult<Response> {
    let v = common::vhost(&ctx, &caller, &vhost)?;
    let b = common::object(&raw)?;
    let source = exchange_name(&source);
    if !v.has_exchange(source) {
        return Err(ApiError::NotFound);
    }
    let d = destination(&v, &dtype, &dest)?;
    let rk = common::string(&b, "routing_key")?.unwrap_or("");
    let args = json_to_table(b.get("arguments")).map_err(ApiError::BadRequest)?;
    may_bind(&ctx, &caller, &vhost, source, &d)?;
    let a = args.clone();
    ferry_server::blocking::run(|| command::binding(&ctx.broker, &v, true, (source, d), rk, a, 0))?;
    let location = props_key(rk, &table_to_json(&args));
    Ok((StatusCode::CREATED, [(header::LOCATION, location)]).into_response())
}

/// RabbitMQ's binding check: write on the destination, read on the source.
fn may_bind(
    ctx: &Ctx,
    caller: &Caller,
    vhost: &str,
    source: &str,
    d: &Destination,
) -> ApiResult<()> {
    let dest = match d {
        Destination::Queue(q) => Resource::Queue(q),
        Destination::Exchange(e) => Resource::Exchange(e),
    };
    common::authorize(ctx, caller, vhost, Access::Write, dest)?;
    common::authorize(ctx, caller, vhost, Access::Read, Resource::Exchange(source))
}

fn find_one(v: &VHost, source: &str, d: &Destination, props: &str) -> ApiResult<Value> {
    between(v, source, d)
        .into_iter()
        .find(|b| {
            let rk = b["routing_key"].as_str().unwrap_or("");
            props_key_raw(rk, &b["arguments"]) == props
                || b["properties_key"].as_str() == Some(props)
        })
        .ok_or(ApiError::NotFound)
}

/// GET /api/bindings/{vhost}/e/{source}/{q|e}/{destination}/{props}
pub async fn show(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path((vhost, source, dtype, dest, props)): Path<(String, String, String, String, String)>,
) -> ApiResult<Json<Value>> {
    let v = common::vhost(&ctx, &caller, &vhost)?;
    let source = exchange_name(&source);
    let d = destination(&v, &dtype, &dest)?;
    Ok(Json(find_one(&v, source, &d, &props)?))
}

/// DELETE /api/bindings/{vhost}/e/{source}/{q|e}/{destination}/{props}
pub async fn delete(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path((vhost, source, dtype, dest, props)): Path<(String, String, String, String, String)>,
) -> ApiResult<StatusCode> {
    let v = common::vhost(&ctx, &caller, &vhost)?;
    let source = exchange_name(&source);
    let d = destination(&v, &dtype, &dest)?;
    let b = find_one(&v, source, &d, &props)?;
    let rk = b["routing_key"].as_str().unwrap_or("");
    let args = json_to_table(b.get("arguments")).map_err(ApiError::BadRequest)?;
    may_bind(&ctx, &caller, &vhost, source, &d)?;
    ferry_server::blocking::run(|| {
        command::binding(&ctx.broker, &v, false, (source, d), rk, args, 0)
    })?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_keys() {
        assert_eq!(props_key("", &json!({})), "~");
        assert_eq!(props_key("a.#", &json!({})), "a.%23");
        assert_eq!(props_key_raw("a.#", &json!({})), "a.#");
        let k = props_key("k", &json!({"a": 1}));
        assert!(k.starts_with("k~") && k.len() > 3, "{k}");
        assert_ne!(k, props_key("k", &json!({"a": 2})));
    }
}
