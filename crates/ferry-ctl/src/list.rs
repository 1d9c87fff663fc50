//! `ferry ctl list ...` and `ferry ctl overview`: GETs rendered as tables.

use crate::args::{CtlArgs, ListWhat};
use crate::client::{api_path, Client};
use crate::error::CtlError;
use crate::table::{col, lookup, render, Column};
use crate::Output;
use serde_json::Value;

/// The API path for a listing, scoped to `vhost` when given, with the
/// object a 404 refers to.
fn list_path(what: ListWhat, vhost: Option<&str>) -> String {
    let all = |kind: &str| api_path(&[kind]);
    match (what, vhost) {
        (ListWhat::Queues, Some(v)) => api_path(&["queues", v]),
        (ListWhat::Exchanges, Some(v)) => api_path(&["exchanges", v]),
        (ListWhat::Bindings, Some(v)) => api_path(&["bindings", v]),
        (ListWhat::Consumers, Some(v)) => api_path(&["consumers", v]),
        (ListWhat::Connections, Some(v)) => api_path(&["vhosts", v, "connections"]),
        (ListWhat::Channels, Some(v)) => api_path(&["vhosts", v, "channels"]),
        (ListWhat::Permissions, Some(v)) => api_path(&["vhosts", v, "permissions"]),
        (ListWhat::VhostLimits, Some(v)) => api_path(&["vhost-limits", v]),
        (ListWhat::VhostLimits, None) => all("vhost-limits"),
        (ListWhat::UserLimits, _) => all("user-limits"),
        (ListWhat::Queues, None) => all("queues"),
        (ListWhat::Exchanges, None) => all("exchanges"),
        (ListWhat::Bindings, None) => all("bindings"),
        (ListWhat::Consumers, None) => all("consumers"),
        (ListWhat::Connections, None) => all("connections"),
        (ListWhat::Channels, None) => all("channels"),
        (ListWhat::Permissions, None) => all("permissions"),
        (ListWhat::Policies, Some(v)) => api_path(&["policies", v]),
        (ListWhat::Policies, None) => all("policies"),
        (ListWhat::OperatorPolicies, Some(v)) => api_path(&["operator-policies", v]),
        (ListWhat::OperatorPolicies, None) => all("operator-policies"),
        // Users and vhosts are node-wide.
        (ListWhat::Users, _) => all("users"),
        (ListWhat::Vhosts, _) => all("vhosts"),
    }
}

/// Default columns, close to rabbitmqadmin's.
fn columns(what: ListWhat) -> &'static [Column] {
    const QUEUES: &[Column] = &[
        col("vhost", "vhost"),
        col("name", "name"),
        col("durable", "durable"),
        col("auto_delete", "auto_delete"),
        col("ready", "messages_ready"),
        col("unacked", "messages_unacknowledged"),
        col("messages", "messages"),
        col("consumers", "consumers"),
        col("arguments", "arguments"),
    ];
    const EXCHANGES: &[Column] = &[
        col("vhost", "vhost"),
        col("name", "name"),
        col("type", "type"),
        col("durable", "durable"),
        col("auto_delete", "auto_delete"),
        col("internal", "internal"),
        col("arguments", "arguments"),
    ];
    const BINDINGS: &[Column] = &[
        col("vhost", "vhost"),
        col("source", "source"),
        col("destination", "destination"),
        col("destination_type", "destination_type"),
        col("routing_key", "routing_key"),
        col("arguments", "arguments"),
    ];
    const CONNECTIONS: &[Column] = &[
        col("name", "name"),
        col("user", "user"),
        col("vhost", "vhost"),
        col("peer_host", "peer_host"),
        col("peer_port", "peer_port"),
        col("state", "state"),
        col("channels", "channels"),
    ];
    const CHANNELS: &[Column] = &[
        col("name", "name"),
        col("user", "user"),
        col("vhost", "vhost"),
        col("number", "number"),
        col("consumers", "consumer_count"),
        col("unacked", "messages_unacknowledged"),
        col("prefetch", "prefetch_count"),
        col("confirm", "confirm"),
    ];
    const CONSUMERS: &[Column] = &[
        col("vhost", "queue.vhost"),
        col("queue", "queue.name"),
        col("consumer_tag", "consumer_tag"),
        col("channel", "channel_details.name"),
        col("ack_required", "ack_required"),
        col("prefetch", "prefetch_count"),
        col("exclusive", "exclusive"),
    ];
    const USERS: &[Column] = &[col("name", "name"), col("tags", "tags")];
    const VHOSTS: &[Column] = &[col("name", "name"), col("messages", "messages")];
    const PERMISSIONS: &[Column] = &[
        col("user", "user"),
        col("vhost", "vhost"),
        col("configure", "configure"),
        col("write", "write"),
        col("read", "read"),
    ];
    const VHOST_LIMITS: &[Column] = &[col("vhost", "vhost"), col("limits", "value")];
    const USER_LIMITS: &[Column] = &[col("user", "user"), col("limits", "value")];
    // rabbitmqctl list_policies' columns.
    const POLICIES: &[Column] = &[
        col("vhost", "vhost"),
        col("name", "name"),
        col("pattern", "pattern"),
        col("apply-to", "apply-to"),
        col("definition", "definition"),
        col("priority", "priority"),
    ];
    match what {
        ListWhat::Policies | ListWhat::OperatorPolicies => POLICIES,
        ListWhat::Queues => QUEUES,
        ListWhat::Exchanges => EXCHANGES,
        ListWhat::Bindings => BINDINGS,
        ListWhat::Connections => CONNECTIONS,
        ListWhat::Channels => CHANNELS,
        ListWhat::Consumers => CONSUMERS,
        ListWhat::Users => USERS,
        ListWhat::Vhosts => VHOSTS,
        ListWhat::Permissions => PERMISSIONS,
        ListWhat::VhostLimits => VHOST_LIMITS,
        ListWhat::UserLimits => USER_LIMITS,
    }
}

pub fn list(
    client: &Client,
    args: &CtlArgs,
    what: ListWhat,
    out: &mut Output<'_>,
) -> Result<(), CtlError> {
    let vhost = args.vhost.as_deref();
    let path = list_path(what, vhost);
    let subject = format!("vhost '{}'", vhost.unwrap_or("/"));
    let body = client.get(&path, &subject)?;
    if args.json {
        return out.json(&body);
    }
    let rows = match body {
        Value::Array(rows) => rows,
        other => {
            return Err(CtlError::BadResponse {
                path,
                detail: format!("expected a JSON array, got {}", kind_of(&other)),
            })
        }
    };
    out.text(&render(columns(what), &rows))
}

/// `ferry ctl health CHECK`: the check's verdict (an error, with the
/// node's reason, when it fails).
pub fn health(client: &Client, check: &str, out: &mut Output<'_>) -> Result<(), CtlError> {
    let path = crate::client::api_path(&["health", "checks", check]);
    let body = client.get(&path, "the health check")?;
    if out.json {
        return out.json(&body);
    }
    out.text(&format!(
        "{check}: {}\n",
        body["status"].as_str().unwrap_or("ok")
    ))
}

pub fn overview(client: &Client, args: &CtlArgs, out: &mut Output<'_>) -> Result<(), CtlError> {
    let body = client.get("/api/overview", "the overview")?;
    if args.json {
        return out.json(&body);
    }
    const FIELDS: &[(&str, &str)] = &[
        ("node", "node"),
        ("cluster", "cluster_name"),
        ("product", "product_name"),
        ("version", "product_version"),
        ("rabbitmq_version", "rabbitmq_version"),
        ("management_version", "management_version"),
        ("queues", "object_totals.queues"),
        ("exchanges", "object_totals.exchanges"),
        ("connections", "object_totals.connections"),
        ("channels", "object_totals.channels"),
        ("consumers", "object_totals.consumers"),
        ("messages", "queue_totals.messages"),
        ("messages_ready", "queue_totals.messages_ready"),
        ("messages_unacked", "queue_totals.messages_unacknowledged"),
    ];
    let width = FIELDS.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    let mut text = String::new();
    for (label, path) in FIELDS {
        let value = crate::table::cell(lookup(&body, path));
        if !value.is_empty() {
            text.push_str(&format!("{label:<width$}  {value}\n"));
        }
    }
    if let Some(Value::Array(listeners)) = body.get("listeners") {
        for l in listeners {
            let proto = crate::table::cell(l.get("protocol"));
            let ip = crate::table::cell(l.get("ip_address"));
            let port = crate::table::cell(l.get("port"));
            text.push_str(&format!("{:<width$}  {proto} {ip}:{port}\n", "listener"));
        }
    }
    out.text(&text)
}

pub(crate) fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
