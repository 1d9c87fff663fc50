//! GET / POST /api/definitions[/{vhost}]: RabbitMQ's definitions JSON, and
//! [`import_document`], which the broker's boot-time `load_definitions`
//! calls too.
//! Users, vhosts and permissions go through the core's `export_access` /
//! `import_access`; durable exchanges, queues and bindings through the
//! vhosts. Import validates the whole document's shape before changing
//! anything, then applies access, policies and operator policies,
//! exchanges, queues, bindings in that order (a failing item stops the
//! import with a 400 naming it). A per-vhost import (`POST
//! /api/definitions/{vhost}`) takes, as RabbitMQ 3.10, the vhost limits
//! and operator policies in `parameters`, the policies and the topology,
//! all into that vhost whatever vhost the entries name; users, vhosts and
//! permissions are ignored.

use crate::auth::Caller;
use crate::common;
use crate::error::{ApiError, ApiResult};
use crate::json::{json_to_table, table_to_json};
use crate::overview::RABBITMQ_VERSION;
use crate::sources::QueueView;
use crate::state::Ctx;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use bytes::Bytes;
use ferry_auth::{AccessDefs, VHOST_LIMITS_COMPONENT};
use ferry_broker::policy::validate::erlang_binary;
use ferry_broker::policy::PolicyKind;
use ferry_broker::{command, Broker, DefCommand, ExchangeArgs, VHost};
use ferry_queue::queue::{QueueArgs, QueueSpec};
use ferry_queue::stream::args::StreamArgs;
use ferry_route::Destination;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

fn is_builtin(name: &str) -> bool {
    name.is_empty() || name.starts_with("amq.")
}

/// Exchanges, queues and bindings of one vhost; `with_vhost` adds the
/// `vhost` field (whole-node export).
fn topology(v: &VHost, with_vhost: bool) -> (Vec<Value>, Vec<Value>, Vec<Value>) {
    let tag = |mut o: Value| {
        if with_vhost {
            if let Some(m) = o.as_object_mut() {
                m.insert("vhost".into(), Value::String(v.name().to_string()));
            }
        }
        o
    };
    let mut xs = v.exchanges();
    xs.sort_by(|a, b| a.name.cmp(&b.name));
    let exchanges = xs
        .iter()
        .filter(|x| x.durable && !is_builtin(&x.name))
        .map(|x| {
            tag(json!({
                "name": &*x.name, "type": x.kind.as_str(), "durable": true,
                "auto_delete": x.auto_delete, "internal": x.internal,
                "arguments": table_to_json(&x.arguments),
            }))
        })
        .collect();
    // Streams too: their arguments carry x-queue-type stream.
    let qs: Vec<QueueView> = crate::sources::of_vhost(v)
        .into_iter()
        .filter(|q| q.spec().durable && q.spec().exclusive_owner.is_none())
        .collect();
    // Crashed queues keep their definition (RabbitMQ exports them too).
    let crashed = v.crashed_queues();
    let specs = qs
        .iter()
        .map(|q| q.spec())
        .chain(crashed.iter().map(|c| &c.spec));
    let specs: Vec<&ferry_queue::queue::QueueSpec> = specs.collect();
    let durable_q: Vec<String> = specs.iter().map(|s| s.name.to_string()).collect();
    let queues = specs
        .iter()
        .map(|s| {
            tag(json!({
                "name": &*s.name, "durable": true, "auto_delete": s.auto_delete,
                "arguments": table_to_json(&s.arguments),
            }))
        })
        .collect();
    let mut bindings = Vec::new();
    for x in xs.iter().filter(|x| x.durable && !x.name.is_empty()) {
        for b in x.bindings() {
            let (dtype, ok) = match &b.destination {
                Destination::Queue(q) => ("queue", durable_q.iter().any(|n| n == &**q)),
                Destination::Exchange(e) => {
                    ("exchange", xs.iter().any(|o| o.name == *e && o.durable))
                }
            };
            if ok {
                bindings.push(tag(json!({
                    "source": &*x.name, "destination": &**b.destination.name(),
                    "destination_type": dtype, "routing_key": b.routing_key,
                    "arguments": table_to_json(&b.arguments),
                })));
            }
        }
    }
    (exchanges, queues, bindings)
}

fn header() -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("rabbit_version".into(), json!(RABBITMQ_VERSION));
    m.insert("rabbitmq_version".into(), json!(RABBITMQ_VERSION));
    m.insert("product_name".into(), json!("Ferry"));
    m.insert("product_version".into(), json!(env!("CARGO_PKG_VERSION")));
    m
}

/// GET /api/definitions
pub async fn export(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let access = ctx.broker.export_access();
    let mut m = header();
    let access = serde_json::to_value(&access).map_err(|e| ApiError::Internal(e.to_string()))?;
    for k in ["users", "vhosts", "permissions"] {
        m.insert(k.into(), access.get(k).cloned().unwrap_or(json!([])));
    }
    for k in ["topic_permissions", "global_parameters"] {
        m.insert(k.into(), json!([]));
    }
    m.insert("parameters".into(), parameters(&ctx, None));
    m.insert(
        "policies".into(),
        crate::policies::export(&ctx.broker, None),
    );
    let (mut xs, mut qs, mut bs) = (Vec::new(), Vec::new(), Vec::new());
    for name in ctx.broker.vhost_names() {
        if let Ok(v) = ctx.broker.vhost(&name) {
            let (x, q, b) = topology(&v, true);
            xs.extend(x);
            qs.extend(q);
            bs.extend(b);
        }
    }
    m.insert("queues".into(), Value::Array(qs));
    m.insert("exchanges".into(), Value::Array(xs));
    m.insert("bindings".into(), Value::Array(bs));
    Ok(Json(Value::Object(m)))
}

/// The runtime parameters of the export, as RabbitMQ 3.10 writes them:
/// vhost limits (component `vhost-limits`) and operator policies
/// (component `operator_policy`).
fn parameters(ctx: &Ctx, vhost: Option<&str>) -> Value {
    let mut all = Vec::new();
    for list in [
        crate::limits::parameters(ctx, vhost),
        crate::policies::export_operator(&ctx.broker, vhost),
    ] {
        if let Value::Array(items) = list {
            all.extend(items);
        }
    }
    Value::Array(all)
}

/// GET /api/definitions/{vhost}
pub async fn export_vhost(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path(vhost): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let v = ctx.broker.vhost(&vhost).map_err(|_| ApiError::NotFound)?;
    let (xs, qs, bs) = topology(&v, false);
    let mut m = header();
    m.insert("parameters".into(), parameters(&ctx, Some(&vhost)));
    m.insert(
        "policies".into(),
        crate::policies::export(&ctx.broker, Some(&vhost)),
    );
    m.insert("queues".into(), Value::Array(qs));
    m.insert("exchanges".into(), Value::Array(xs));
    m.insert("bindings".into(), Value::Array(bs));
    Ok(Json(Value::Object(m)))
}

#[derive(Debug, Deserialize)]
struct QueueIn {
    name: String,
    vhost: Option<String>,
    #[serde(default = "yes")]
    durable: bool,
    #[serde(default)]
    auto_delete: bool,
    #[serde(default)]
    arguments: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct ExchangeIn {
    name: String,
    vhost: Option<String>,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default = "yes")]
    durable: bool,
    #[serde(default)]
    auto_delete: bool,
    #[serde(default)]
    internal: bool,
    #[serde(default)]
    arguments: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct BindingIn {
    source: String,
    vhost: Option<String>,
    destination: String,
    destination_type: String,
    #[serde(default)]
    routing_key: String,
    #[serde(default)]
    arguments: Option<Value>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
struct DefsIn {
    #[serde(flatten)]
    access: AccessDefs,
    #[serde(default)]
    queues: Vec<QueueIn>,
    #[serde(default)]
    exchanges: Vec<ExchangeIn>,
    #[serde(default)]
    bindings: Vec<BindingIn>,
    #[serde(default)]
    policies: Vec<Value>,
}

fn target(broker: &Broker, fixed: Option<&str>, item: Option<&str>) -> ApiResult<Arc<VHost>> {
    let name = fixed.or(item).ok_or_else(|| {
        ApiError::BadRequest("definition without a vhost (use /api/definitions/{vhost})".into())
    })?;
    broker
        .vhost(name)
        .map_err(|_| ApiError::BadRequest(format!("vhost {name} not found")))
}

/// Imports a RabbitMQ definitions document (`POST /api/definitions`, and
/// `load_definitions` at boot): users, vhosts and permissions (whole-node
/// import only), vhost limits, policies and operator policies, then
/// exchanges, queues and streams, bindings. With `vhost`, every item goes
/// into that vhost. The document's shape is
/// checked before anything changes; a failing item stops the import with
/// an error naming it. Blocking (declares write definitions files).
pub fn import_document(broker: &Broker, raw: &[u8], vhost: Option<&str>) -> ApiResult<()> {
    let d: DefsIn = common::body(raw)?;
    apply(broker, &d, vhost)
}

/// RabbitMQ's check before an import changes anything: the document's new
/// queues must fit under each vhost's current `max-queues` (the limit the
/// document itself sets does not count), else the whole import is refused.
fn check_queue_limits(broker: &Broker, d: &DefsIn, fixed: Option<&str>) -> ApiResult<()> {
    let mut new: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for q in &d.queues {
        if let Some(vhost) = fixed.or(q.vhost.as_deref()) {
            new.entry(vhost).or_default().insert(q.name.as_str());
        }
    }
    for (vhost, names) in new {
        let Ok(v) = broker.vhost(vhost) else {
            continue; // created by this import, or refused later
        };
        let limit = match broker.vhost_limit(vhost, "max-queues") {
            Some(l) if l >= 0 => l,
            _ => continue,
        };
        let add = names.iter().filter(|n| !v.has_queue_name(n)).count();
        let count = v.queue_name_count();
        if add > 0 && (count + add) as u64 > limit as u64 {
            return Err(ApiError::BadRequest(format!(
                "Adding {add} queue(s) to virtual host \"{vhost}\" would exceed the limit of \
                 {limit} queue(s).\n\nThis virtual host currently has {count} queue(s) \
                 defined.\n\nImport aborted!"
            )));
        }
    }
    Ok(())
}

/// A per-vhost document's vhost limits, validated before anything changes.
/// RabbitMQ reports a bad one as the Erlang term of its validation text
/// (HTML-escaped) and the parameter's `vhost/component/name`.
fn check_vhost_limits(d: &DefsIn, vhost: &str) -> ApiResult<()> {
    for p in d
        .access
        .parameters
        .iter()
        .filter(|p| p.component == VHOST_LIMITS_COMPONENT)
    {
        let one = AccessDefs {
            parameters: vec![p.clone()],
            ..AccessDefs::default()
        };
        if let Err(e) = Broker::check_vhost_limits(&one) {
            let text = format!(
                "{} ({vhost}/{}/{})",
                crate::policies::escape_html(&e.to_string()),
                p.component,
                p.name
            );
            return Err(ApiError::BadRequest(erlang_binary(&text)));
        }
    }
    Ok(())
}

/// A new queue's arguments, checked as its declaration will, answered as
/// RabbitMQ's import answers a refused argument (its declare raises
/// `precondition_failed`): the Erlang term, not the AMQP reply text.
fn check_new_queue_args(v: &VHost, spec: &QueueSpec) -> ApiResult<()> {
    if v.has_queue_name(&spec.name) {
        return Ok(());
    }
    let checked = if StreamArgs::is_stream(&spec.arguments) {
        StreamArgs::validate(&spec.arguments, &spec.name, v.name())
    } else {
        QueueArgs::validate(&spec.arguments, &spec.name, v.name())
    };
    checked.map_err(|text| ApiError::AmqpError {
        name: "precondition_failed",
        text,
    })
}

fn apply(broker: &Broker, d: &DefsIn, fixed: Option<&str>) -> ApiResult<()> {
    check_queue_limits(broker, d, fixed)?;
    match fixed {
        None => broker.change(DefCommand::ImportAccess {
            defs: d.access.clone().salted(),
        })?,
        // Applied last (below), refused before anything changes.
        Some(vhost) => check_vhost_limits(d, vhost)?,
    }
    // Before the queues, so they open with their policies.
    for p in &d.policies {
        crate::policies::import(broker, PolicyKind::Policy, p, fixed)?;
    }
    // Of the runtime parameters, operator policies are imported here (vhost
    // limits go with the access definitions, or last for one vhost).
    for p in &d.access.parameters {
        if p.component == "operator_policy" {
            let mut entry = p.value.clone();
            if let Some(o) = entry.as_object_mut() {
                o.insert("name".into(), Value::String(p.name.clone()));
                if !p.vhost.is_empty() {
                    o.insert("vhost".into(), Value::String(p.vhost.clone()));
                }
            }
            crate::policies::import(broker, PolicyKind::Operator, &entry, fixed)?;
        }
    }
    for x in &d.exchanges {
        if is_builtin(&x.name) {
            continue;
        }
        let v = target(broker, fixed, x.vhost.as_deref())?;
        let args = ExchangeArgs {
            durable: x.durable,
            auto_delete: x.auto_delete,
            internal: x.internal,
            arguments: json_to_table(x.arguments.as_ref()).map_err(ApiError::BadRequest)?,
        };
        command::declare_exchange(broker, &v, &x.name, &x.kind, args)?;
    }
    for q in &d.queues {
        let v = target(broker, fixed, q.vhost.as_deref())?;
        let spec = QueueSpec {
            name: Arc::from(q.name.as_str()),
            durable: q.durable,
            exclusive_owner: None,
            auto_delete: q.auto_delete,
            arguments: json_to_table(q.arguments.as_ref()).map_err(ApiError::BadRequest)?,
        };
        check_new_queue_args(&v, &spec)?;
        command::declare_queue(broker, &v, spec, false, 0)?;
    }
    for b in &d.bindings {
        let v = target(broker, fixed, b.vhost.as_deref())?;
        let dest = match b.destination_type.as_str() {
            "queue" => Destination::queue(b.destination.as_str()),
            "exchange" => Destination::exchange(b.destination.as_str()),
            other => {
                return Err(ApiError::BadRequest(format!(
                    "bad destination_type '{other}'"
                )))
            }
        };
        let args = json_to_table(b.arguments.as_ref()).map_err(ApiError::BadRequest)?;
        command::binding(broker, &v, true, (&b.source, dest), &b.routing_key, args, 0)?;
    }
    // A per-vhost document's vhost limits go to that vhost (RabbitMQ
    // imports its `parameters` there). Last: RabbitMQ's import declares
    // the document's queues whatever `max-queues` it sets.
    if let Some(vhost) = fixed {
        broker.change(DefCommand::ImportVhostLimits {
            vhost: vhost.to_string(),
            defs: d.access.clone(),
        })?;
    }
    Ok(())
}

async fn import_into(ctx: Ctx, raw: Bytes, fixed: Option<String>) -> ApiResult<StatusCode> {
    crate::common::blocking(move || import_document(&ctx.broker, &raw, fixed.as_deref())).await??;
    Ok(StatusCode::NO_CONTENT)
}

/// POST /api/definitions
pub async fn import(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    raw: Bytes,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    import_into(ctx, raw, None).await
}

/// POST /api/definitions/{vhost}
pub async fn import_vhost(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path(vhost): Path<String>,
    raw: Bytes,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    if ctx.broker.vhost(&vhost).is_err() {
        return Err(ApiError::NotFound);
    }
    import_into(ctx, raw, Some(vhost)).await
}

#[cfg(test)]
mod tests {
    use super::erlang_binary;

    #[test]
    fn erlang_binaries_print_as_rabbitmq_reports_them() {
        assert_eq!(
            erlang_binary("Validation failed\n\nwas &lt;&lt;\"x\"&gt;&gt;\n (v/c/n)"),
            r#"<<"Validation failed\n\nwas &lt;&lt;\"x\"&gt;&gt;\n (v/c/n)">>"#
        );
        assert_eq!(erlang_binary(r"a\b"), r#"<<"a\\b">>"#);
    }
}
