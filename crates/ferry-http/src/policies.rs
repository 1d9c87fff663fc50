//! /api/policies and /api/operator-policies (RabbitMQ 3.10's shapes and
//! answers): listings for every management user (vhosts it may see), one
//! policy and changes for `policymaker` / `administrator` users
//! (operator policies: administrators), validation errors as RabbitMQ's
//! 400 `Validation failed` texts (HTML-escaped for policies, as
//! RabbitMQ's handler does), 201 on create and 204 on update. Also the
//! policy fields of `/api/queues`. Changes run on the blocking pool
//! (they fsync the policy file and walk the vhost's queues).

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::query::ListParams;
use crate::sources::QueueView;
use crate::state::Ctx;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use bytes::Bytes;
use ferry_broker::broker::PolicyChangeError;
use ferry_broker::policy::{PolicyDef, PolicyError, PolicyKind, Target};
use ferry_broker::DefCommand;
use serde_json::{json, Map, Value};

/// The routes of both kinds (merged into the authenticated API).
pub fn routes() -> Router<Ctx> {
    Router::new()
        .route("/api/policies", get(list_all))
        .route("/api/policies/{vhost}", get(list_vhost))
        .route(
            "/api/policies/{vhost}/{name}",
            get(show).put(put).delete(delete),
        )
        .route("/api/operator-policies", get(op_list_all))
        .route("/api/operator-policies/{vhost}", get(op_list_vhost))
        .route(
            "/api/operator-policies/{vhost}/{name}",
            get(op_show).put(op_put).delete(op_delete),
        )
}

/// A queue's `policy`, `operator_policy` and `effective_policy_definition`.
#[derive(Debug, Default)]
pub struct QueuePolicy {
    /// The policy's name.
    pub policy: Option<String>,
    /// The operator policy's name.
    pub operator_policy: Option<String>,
    /// Their merged definition.
    pub definition: Map<String, Value>,
}

/// What applies to a queue (nothing if its vhost is gone).
pub fn queue_policy(ctx: &Ctx, vhost: &str, q: &QueueView) -> QueuePolicy {
    let Ok(v) = ctx.broker.vhost(vhost) else {
        return QueuePolicy::default();
    };
    let e = v.effective_policy(q.name(), Target::of_queue_kind(q.kind));
    QueuePolicy {
        policy: e.policy,
        operator_policy: e.operator_policy,
        definition: e.definition,
    }
}

/// The policies of the definitions export (all vhosts, or one; entries
/// keep their `vhost` field in both, as RabbitMQ's do).
pub fn export(broker: &ferry_broker::Broker, vhost: Option<&str>) -> Value {
    let list = broker
        .list_policies(PolicyKind::Policy)
        .iter()
        .filter(|d| vhost.is_none_or(|v| d.vhost == v))
        .map(def_json)
        .collect();
    Value::Array(list)
}

/// The operator policies of the definitions export, as RabbitMQ exports
/// them: runtime parameters of component `operator_policy`.
pub fn export_operator(broker: &ferry_broker::Broker, vhost: Option<&str>) -> Value {
    let list = broker
        .list_policies(PolicyKind::Operator)
        .iter()
        .filter(|d| vhost.is_none_or(|v| d.vhost == v))
        .map(|d| {
            json!({
                "value": {"pattern": d.pattern, "definition": d.definition,
                          "priority": d.priority, "apply-to": d.apply_to},
                "vhost": d.vhost, "component": "operator_policy", "name": d.name,
            })
        })
        .collect();
    Value::Array(list)
}

/// Imports one policy of a definitions document (into `fixed` or the
/// entry's vhost).
pub fn import(
    broker: &ferry_broker::Broker,
    kind: PolicyKind,
    p: &Value,
    fixed: Option<&str>,
) -> ApiResult<()> {
    let field = |k: &str| p.get(k).and_then(Value::as_str);
    let vhost = fixed.or(field("vhost")).ok_or_else(|| {
        ApiError::BadRequest("policy without a vhost (use /api/definitions/{vhost})".into())
    })?;
    let name = field("name").ok_or_else(|| ApiError::BadRequest("policy without a name".into()))?;
    if broker.vhost(vhost).is_err() {
        return Err(ApiError::BadRequest(format!("vhost {vhost} not found")));
    }
    let bad = |e: String| ApiError::BadRequest(format!("policy '{name}' in vhost '{vhost}': {e}"));
    let def =
        ferry_broker::policy::validate(kind, vhost, name, p).map_err(|e| bad(e.to_string()))?;
    broker
        .submit(DefCommand::PutPolicy { kind, def })
        .map(|_| ())
        .map_err(|e| bad(PolicyChangeError::from(e).to_string()))
}

/// `&`, `<` and `>` as HTML entities (RabbitMQ's validation texts).
pub(crate) fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn refused(kind: PolicyKind) -> ApiError {
    match kind {
        PolicyKind::Policy => {
            ApiError::NotAuthorised("User not authorised to access object".into())
        }
        PolicyKind::Operator => ApiError::NotAuthorised("Not administrator user".into()),
    }
}

/// A caller allowed to read one policy or change policies of `kind` in
/// `vhost`.
fn require_maker(ctx: &Ctx, caller: &Caller, kind: PolicyKind, vhost: &str) -> ApiResult<()> {
    let allowed = match kind {
        PolicyKind::Policy => caller.is_admin() || caller.tags.iter().any(|t| t == "policymaker"),
        PolicyKind::Operator => caller.is_admin(),
    };
    if !allowed {
        return Err(refused(kind));
    }
    if kind == PolicyKind::Policy && !caller.is_admin() && !caller.sees_vhost(ctx, vhost) {
        return Err(refused(kind));
    }
    Ok(())
}

fn def_json(d: &PolicyDef) -> Value {
    json!({
        "vhost": d.vhost, "name": d.name, "pattern": d.pattern, "apply-to": d.apply_to,
        "definition": d.definition, "priority": d.priority,
    })
}

fn listing(
    ctx: &Ctx,
    caller: &Caller,
    kind: PolicyKind,
    vhost: Option<&str>,
    p: &ListParams,
) -> ApiResult<Json<Value>> {
    if let Some(v) = vhost {
        caller.require_vhost(ctx, v)?;
    }
    let mut list: Vec<PolicyDef> = ctx
        .broker
        .list_policies(kind)
        .into_iter()
        .filter(|d| vhost.is_none_or(|v| d.vhost == v) && caller.sees_vhost(ctx, &d.vhost))
        .collect();
    list.sort_by(|a, b| (&a.name, &a.vhost).cmp(&(&b.name, &b.vhost)));
    Ok(Json(p.apply(list.iter().map(def_json).collect())?))
}

fn show_one(
    ctx: &Ctx,
    caller: &Caller,
    kind: PolicyKind,
    vhost: &str,
    name: &str,
) -> ApiResult<Json<Value>> {
    require_maker(ctx, caller, kind, vhost)?;
    ctx.broker
        .list_policies(kind)
        .iter()
        .find(|d| d.vhost == vhost && d.name == name)
        .map(|d| Json(def_json(d)))
        .ok_or(ApiError::NotFound)
}

fn change_error(kind: PolicyKind, e: PolicyChangeError) -> Response {
    match e {
        PolicyChangeError::NoVhost(_) => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "not_found", "reason": "vhost_not_found"})),
        )
            .into_response(),
        PolicyChangeError::NotFound => ApiError::NotFound.into_response(),
        PolicyChangeError::Invalid(PolicyError::KeyMissing(r)) => {
            ApiError::BadRequest(r).into_response()
        }
        PolicyChangeError::Invalid(e) => {
            let text = e.to_string();
            ApiError::BadRequest(match kind {
                PolicyKind::Policy => escape_html(&text),
                PolicyKind::Operator => text,
            })
            .into_response()
        }
        PolicyChangeError::Core(e) => ApiError::from(e).into_response(),
    }
}

async fn put_one(
    ctx: Ctx,
    caller: &Caller,
    kind: PolicyKind,
    vhost: String,
    name: String,
    raw: &[u8],
) -> Response {
    if let Err(e) = require_maker(&ctx, caller, kind, &vhost) {
        return e.into_response();
    }
    let body: Value = match crate::common::object(raw) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let done = crate::common::blocking(move || -> Result<bool, PolicyChangeError> {
        if ctx.broker.vhost(&vhost).is_err() {
            return Err(PolicyChangeError::NoVhost(vhost));
        }
        // Validated here: the change carries the checked definition.
        let def = ferry_broker::policy::validate(kind, &vhost, &name, &body)?;
        Ok(ctx.broker.submit(DefCommand::PutPolicy { kind, def })?)
    });
    match done.await {
        Ok(Ok(true)) => StatusCode::NO_CONTENT.into_response(),
        Ok(Ok(false)) => StatusCode::CREATED.into_response(),
        Ok(Err(e)) => change_error(kind, e),
        Err(e) => e.into_response(),
    }
}

async fn delete_one(
    ctx: Ctx,
    caller: &Caller,
    kind: PolicyKind,
    vhost: String,
    name: String,
) -> Response {
    if let Err(e) = require_maker(&ctx, caller, kind, &vhost) {
        return e.into_response();
    }
    let done = crate::common::blocking(move || -> Result<(), PolicyChangeError> {
        let cmd = DefCommand::DeletePolicy { kind, vhost, name };
        Ok(ctx.broker.submit(cmd).map(|_| ())?)
    });
    match done.await {
        Ok(Ok(())) => StatusCode::NO_CONTENT.into_response(),
        Ok(Err(PolicyChangeError::NoVhost(_))) => ApiError::NotFound.into_response(),
        Ok(Err(e)) => change_error(kind, e),
        Err(e) => e.into_response(),
    }
}

type Ext = Extension<Caller>;

async fn list_all(
    State(ctx): State<Ctx>,
    Extension(c): Ext,
    Query(p): Query<ListParams>,
) -> ApiResult<Json<Value>> {
    listing(&ctx, &c, PolicyKind::Policy, None, &p)
}

async fn list_vhost(
    State(ctx): State<Ctx>,
    Extension(c): Ext,
    Path(v): Path<String>,
    Query(p): Query<ListParams>,
) -> ApiResult<Json<Value>> {
    listing(&ctx, &c, PolicyKind::Policy, Some(&v), &p)
}

async fn show(
    State(ctx): State<Ctx>,
    Extension(c): Ext,
    Path((v, n)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    show_one(&ctx, &c, PolicyKind::Policy, &v, &n)
}

async fn put(
    State(ctx): State<Ctx>,
    Extension(c): Ext,
    Path((v, n)): Path<(String, String)>,
    raw: Bytes,
) -> Response {
    put_one(ctx, &c, PolicyKind::Policy, v, n, &raw).await
}

async fn delete(
    State(ctx): State<Ctx>,
    Extension(c): Ext,
    Path((v, n)): Path<(String, String)>,
) -> Response {
    delete_one(ctx, &c, PolicyKind::Policy, v, n).await
}

async fn op_list_all(
    State(ctx): State<Ctx>,
    Extension(c): Ext,
    Query(p): Query<ListParams>,
) -> ApiResult<Json<Value>> {
    listing(&ctx, &c, PolicyKind::Operator, None, &p)
}

async fn op_list_vhost(
    State(ctx): State<Ctx>,
    Extension(c): Ext,
    Path(v): Path<String>,
    Query(p): Query<ListParams>,
) -> ApiResult<Json<Value>> {
    listing(&ctx, &c, PolicyKind::Operator, Some(&v), &p)
}

async fn op_show(
    State(ctx): State<Ctx>,
    Extension(c): Ext,
    Path((v, n)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    show_one(&ctx, &c, PolicyKind::Operator, &v, &n)
}

async fn op_put(
    State(ctx): State<Ctx>,
    Extension(c): Ext,
    Path((v, n)): Path<(String, String)>,
    raw: Bytes,
) -> Response {
    put_one(ctx, &c, PolicyKind::Operator, v, n, &raw).await
}

async fn op_delete(
    State(ctx): State<Ctx>,
    Extension(c): Ext,
    Path((v, n)): Path<(String, String)>,
) -> Response {
    delete_one(ctx, &c, PolicyKind::Operator, v, n).await
}
