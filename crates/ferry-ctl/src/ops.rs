//! Commands that change things: declare, delete, purge, publish, get,
//! users, vhosts, permissions, definitions.

use crate::args::{
    Add, BindingArgs, Clear, CtlArgs, Declare, Delete, GetArgs, PolicyArgs, PublishArgs, Set,
};
use crate::client::{api_path, base64, Client};
use crate::error::CtlError;
use crate::table::{col, render};
use crate::Output;
use serde_json::{json, Map, Value};
use std::io::Read;

/// `KEY=VALUE` pairs as a JSON object; VALUE is JSON when it parses as a
/// number, boolean or JSON text, else a string (so `x-max-length=10` is an
/// integer and `x-queue-type=classic` a string).
pub fn parse_pairs(flag: &str, pairs: &[String]) -> Result<Map<String, Value>, CtlError> {
    let mut map = Map::new();
    for p in pairs {
        let Some((k, v)) = p.split_once('=') else {
            return Err(CtlError::Usage(format!("{flag} {p:?}: expected KEY=VALUE")));
        };
        if k.is_empty() {
            return Err(CtlError::Usage(format!("{flag} {p:?}: empty key")));
        }
        let value = match serde_json::from_str::<Value>(v) {
            Ok(j @ (Value::Number(_) | Value::Bool(_) | Value::Array(_) | Value::Object(_))) => j,
            _ => Value::String(v.to_string()),
        };
        map.insert(k.to_string(), value);
    }
    Ok(map)
}

fn in_vhost(kind: &str, name: &str, vhost: &str) -> String {
    format!("{kind} '{name}' in vhost '{vhost}'")
}

pub fn declare(
    client: &Client,
    args: &CtlArgs,
    d: &Declare,
    out: &mut Output<'_>,
) -> Result<(), CtlError> {
    let v = args.vhost();
    let vhost_subject = format!("vhost '{v}'");
    match d {
        Declare::Queue {
            name,
            durable,
            auto_delete,
            args: a,
        } => {
            let body = json!({
                "durable": durable,
                "auto_delete": auto_delete,
                "arguments": parse_pairs("--arg", a)?,
            });
            client.put(&api_path(&["queues", v, name]), &body, &vhost_subject)?;
            out.done(&format!("declared {}", in_vhost("queue", name, v)))
        }
        Declare::Exchange {
            name,
            kind,
            durable,
            auto_delete,
            internal,
            args: a,
        } => {
            let body = json!({
                "type": kind,
                "durable": durable,
                "auto_delete": auto_delete,
                "internal": internal,
                "arguments": parse_pairs("--arg", a)?,
            });
            client.put(&api_path(&["exchanges", v, name]), &body, &vhost_subject)?;
            out.done(&format!("declared {}", in_vhost("exchange", name, v)))
        }
        Declare::Binding(b) => {
            let body = json!({
                "routing_key": b.routing_key,
                "arguments": parse_pairs("--arg", &b.args)?,
            });
            let path = api_path(&[
                "bindings",
                v,
                "e",
                &b.source,
                b.destination_type.letter(),
                &b.destination,
            ]);
            let subject = format!(
                "exchange '{}' or {} '{}' in vhost '{v}'",
                b.source,
                b.destination_type.word(),
                b.destination
            );
            client.post(&path, &body, &subject)?;
            out.done(&format!("declared binding {}", describe_binding(b, v)))
        }
    }
}

fn describe_binding(b: &BindingArgs, v: &str) -> String {
    format!(
        "from exchange '{}' to {} '{}' with routing key '{}' in vhost '{v}'",
        b.source,
        b.destination_type.word(),
        b.destination,
        b.routing_key
    )
}

pub fn delete(
    client: &Client,
    args: &CtlArgs,
    d: &Delete,
    out: &mut Output<'_>,
) -> Result<(), CtlError> {
    let v = args.vhost();
    match d {
        Delete::Queue {
            name,
            if_empty,
            if_unused,
        } => {
            let mut path = api_path(&["queues", v, name]);
            let mut query = Vec::new();
            if *if_empty {
                query.push("if-empty=true");
            }
            if *if_unused {
                query.push("if-unused=true");
            }
            if !query.is_empty() {
                path = format!("{path}?{}", query.join("&"));
            }
            let what = in_vhost("queue", name, v);
            client.delete(&path, &what)?;
            out.done(&format!("deleted {what}"))
        }
        Delete::Exchange { name } => {
            let what = in_vhost("exchange", name, v);
            client.delete(&api_path(&["exchanges", v, name]), &what)?;
            out.done(&format!("deleted {what}"))
        }
        Delete::Binding(b) => delete_binding(client, v, b, out),
        Delete::User { name } => {
            let what = format!("user '{name}'");
            client.delete(&api_path(&["users", name]), &what)?;
            out.done(&format!("deleted {what}"))
        }
        Delete::Vhost { name } => {
            let what = format!("vhost '{name}'");
            client.delete(&api_path(&["vhosts", name]), &what)?;
            out.done(&format!("deleted {what}"))
        }
        Delete::Connection { name } => {
            let what = format!("connection '{name}'");
            client.delete(&api_path(&["connections", name]), &what)?;
            out.done(&format!("closed {what}"))
        }
    }
}

/// The API deletes a binding by its `properties_key` (routing key plus a
/// hash of the arguments), so find it among the bindings between the two.
fn delete_binding(
    client: &Client,
    v: &str,
    b: &BindingArgs,
    out: &mut Output<'_>,
) -> Result<(), CtlError> {
    let letter = b.destination_type.letter();
    let base = api_path(&["bindings", v, "e", &b.source, letter, &b.destination]);
    let what = format!("binding {}", describe_binding(b, v));
    let wanted_args = parse_pairs("--arg", &b.args)?;
    let listed = client.get(&base, &what)?;
    let key = listed
        .as_array()
        .into_iter()
        .flatten()
        .filter(|row| row.get("routing_key").and_then(Value::as_str) == Some(&b.routing_key))
        .filter(|row| {
            let args = row.get("arguments").and_then(Value::as_object);
            args.map_or(wanted_args.is_empty(), |a| *a == wanted_args)
        })
        .find_map(|row| row.get("properties_key").and_then(Value::as_str))
        .ok_or_else(|| CtlError::NotFound { what: what.clone() })?
        .to_string();
    client.delete(&format!("{base}/{}", crate::client::seg(&key)), &what)?;
    out.done(&format!("deleted {what}"))
}

pub fn purge(
    client: &Client,
    args: &CtlArgs,
    name: &str,
    out: &mut Output<'_>,
) -> Result<(), CtlError> {
    let v = args.vhost();
    let what = in_vhost("queue", name, v);
    client.delete(&api_path(&["queues", v, name, "contents"]), &what)?;
    out.done(&format!("purged {what}"))
}

pub fn publish(
    client: &Client,
    args: &CtlArgs,
    p: &PublishArgs,
    stdin: &mut dyn Read,
    out: &mut Output<'_>,
) -> Result<(), CtlError> {
    let v = args.vhost();
    let (payload, encoding) = match &p.payload {
        Some(s) => (s.clone(), "string"),
        None => {
            let mut bytes = Vec::new();
            stdin
                .read_to_end(&mut bytes)
                .map_err(|e| CtlError::io("reading the payload from stdin", e))?;
            match String::from_utf8(bytes) {
                Ok(s) => (s, "string"),
                Err(e) => (base64(e.as_bytes()), "base64"),
            }
        }
    };
    let mut props = Map::new();
    if p.persistent {
        props.insert("delivery_mode".into(), json!(2));
    }
    if let Some(ct) = &p.content_type {
        props.insert("content_type".into(), json!(ct));
    }
    if !p.headers.is_empty() {
        props.insert(
            "headers".into(),
            Value::Object(parse_pairs("--header", &p.headers)?),
        );
    }
    // The API names the default exchange "amq.default" in paths.
    let exchange = if p.exchange.is_empty() {
        "amq.default"
    } else {
        p.exchange.as_str()
    };
    let body = json!({
        "properties": props,
        "routing_key": p.routing_key,
        "payload": payload,
        "payload_encoding": encoding,
    });
    let what = in_vhost("exchange", exchange, v);
    let path = api_path(&["exchanges", v, exchange, "publish"]);
    let answer = client.post(&path, &body, &what)?.unwrap_or(Value::Null);
    if args.json {
        return out.json(&answer);
    }
    match answer.get("routed").and_then(Value::as_bool) {
        Some(true) => out.done("published (routed)"),
        Some(false) => out.done("published, but NOT routed: no queue matched"),
        None => out.done("published"),
    }
}

pub fn get(
    client: &Client,
    args: &CtlArgs,
    g: &GetArgs,
    out: &mut Output<'_>,
) -> Result<(), CtlError> {
    let v = args.vhost();
    let ackmode = if g.requeue {
        "ack_requeue_true"
    } else {
        "ack_requeue_false"
    };
    let body = json!({"count": g.count, "ackmode": ackmode, "encoding": "auto"});
    let what = in_vhost("queue", &g.queue, v);
    let path = api_path(&["queues", v, &g.queue, "get"]);
    let answer = client.post(&path, &body, &what)?.unwrap_or(json!([]));
    if args.json {
        return out.json(&answer);
    }
    let rows = answer.as_array().cloned().unwrap_or_default();
    if rows.is_empty() {
        return out.done(&format!("{what} has no ready message"));
    }
    let cols = [
        col("routing_key", "routing_key"),
        col("exchange", "exchange"),
        col("remaining", "message_count"),
        col("redelivered", "redelivered"),
        col("bytes", "payload_bytes"),
        col("encoding", "payload_encoding"),
        col("payload", "payload"),
    ];
    out.text(&render(&cols, &rows))
}

pub fn add(client: &Client, a: &Add, out: &mut Output<'_>) -> Result<(), CtlError> {
    match a {
        Add::User {
            name,
            password,
            tags,
        } => {
            let tags: Vec<&str> = tags
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .collect();
            let body = json!({"password": password, "tags": tags.join(",")});
            client.put(
                &api_path(&["users", name]),
                &body,
                &format!("user '{name}'"),
            )?;
            out.done(&format!("added user '{name}'"))
        }
        Add::Vhost { name } => {
            client.put(
                &api_path(&["vhosts", name]),
                &json!({}),
                &format!("vhost '{name}'"),
            )?;
            out.done(&format!("added vhost '{name}'"))
        }
    }
}

pub fn set(client: &Client, args: &CtlArgs, s: &Set, out: &mut Output<'_>) -> Result<(), CtlError> {
    let v = args.vhost();
    match s {
        Set::Policy(p) => set_policy(client, v, "policies", "policy", p, out),
        Set::OperatorPolicy(p) => {
            set_policy(client, v, "operator-policies", "operator policy", p, out)
        }
        Set::Permissions {
            user,
            configure,
            write,
            read,
        } => {
            let body = json!({"configure": configure, "write": write, "read": read});
            let what = format!("user '{user}' or vhost '{v}'");
            client.put(&api_path(&["permissions", v, user]), &body, &what)?;
            out.done(&format!("set permissions of user '{user}' on vhost '{v}'"))
        }
        Set::VhostLimits { .. } | Set::UserLimits { .. } => {
            crate::limits::set(client, args, s, out)
        }
    }
}

pub fn clear(
    client: &Client,
    args: &CtlArgs,
    c: &Clear,
    out: &mut Output<'_>,
) -> Result<(), CtlError> {
    let v = args.vhost();
    match c {
        Clear::Policy { name } => clear_policy(client, v, "policies", "policy", name, out),
        Clear::OperatorPolicy { name } => {
            clear_policy(client, v, "operator-policies", "operator policy", name, out)
        }
        Clear::Permissions { user } => {
            let what = format!("permissions of user '{user}' on vhost '{v}'");
            client.delete(&api_path(&["permissions", v, user]), &what)?;
            out.done(&format!("cleared {what}"))
        }
        Clear::VhostLimits { .. } | Clear::UserLimits { .. } => {
            crate::limits::clear(client, args, c, out)
        }
    }
}

/// RabbitMQ escapes `<`, `>` and `&` in policy validation texts; the
/// terminal gets them plain.
fn unescape_html(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

fn set_policy(
    client: &Client,
    vhost: &str,
    kind: &str,
    word: &str,
    p: &PolicyArgs,
    out: &mut Output<'_>,
) -> Result<(), CtlError> {
    let definition: Value = serde_json::from_str(&p.definition)
        .map_err(|e| CtlError::Usage(format!("the definition is not JSON: {e}")))?;
    if !definition.is_object() {
        return Err(CtlError::Usage(
            "the definition must be a JSON object".into(),
        ));
    }
    let body = json!({
        "pattern": p.pattern, "definition": definition,
        "priority": p.priority, "apply-to": p.apply_to,
    });
    let what = format!("vhost '{vhost}'");
    let path = api_path(&[kind, vhost, &p.name]);
    match client.put(&path, &body, &what) {
        Err(CtlError::Http {
            status,
            method,
            path,
            reason,
        }) => Err(CtlError::Http {
            status,
            method,
            path,
            reason: unescape_html(&reason),
        }),
        Err(e) => Err(e),
        Ok(_) => out.done(&format!("set {word} '{}' on vhost '{vhost}'", p.name)),
    }
}

fn clear_policy(
    client: &Client,
    vhost: &str,
    kind: &str,
    word: &str,
    name: &str,
    out: &mut Output<'_>,
) -> Result<(), CtlError> {
    let what = format!("{word} '{name}' on vhost '{vhost}'");
    client.delete(&api_path(&[kind, vhost, name]), &what)?;
    out.done(&format!("cleared {what}"))
}

fn definitions_path(args: &CtlArgs) -> (String, String) {
    match args.vhost.as_deref() {
        Some(v) => (api_path(&["definitions", v]), format!("vhost '{v}'")),
        None => (
            "/api/definitions".to_string(),
            "the definitions".to_string(),
        ),
    }
}

pub fn export(
    client: &Client,
    args: &CtlArgs,
    file: &str,
    out: &mut Output<'_>,
) -> Result<(), CtlError> {
    let (path, what) = definitions_path(args);
    let defs = client.get(&path, &what)?;
    let mut text = serde_json::to_string_pretty(&defs)
        .map_err(|e| CtlError::Input(format!("cannot encode the definitions: {e}")))?;
    text.push('\n');
    if file == "-" {
        return out.text(&text);
    }
    std::fs::write(file, text).map_err(|e| CtlError::io(format!("cannot write {file}"), e))?;
    out.done(&format!("exported definitions to {file}"))
}

pub fn import(
    client: &Client,
    args: &CtlArgs,
    file: &str,
    stdin: &mut dyn Read,
    out: &mut Output<'_>,
) -> Result<(), CtlError> {
    let mut text = String::new();
    if file == "-" {
        stdin
            .read_to_string(&mut text)
            .map_err(|e| CtlError::io("reading definitions from stdin", e))?;
    } else {
        text = std::fs::read_to_string(file)
            .map_err(|e| CtlError::io(format!("cannot read {file}"), e))?;
    }
    let defs: Value = serde_json::from_str(&text)
        .map_err(|e| CtlError::Input(format!("{file} is not valid JSON: {e}")))?;
    if !defs.is_object() {
        return Err(CtlError::Input(format!(
            "{file}: definitions must be a JSON object, not {}",
            crate::list::kind_of(&defs)
        )));
    }
    let (path, what) = definitions_path(args);
    client.post(&path, &defs, &what)?;
    out.done(&format!("imported definitions from {file}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_infer_json_scalars() {
        let m = parse_pairs(
            "--arg",
            &[
                "x-max-length=10".into(),
                "x-queue-type=classic".into(),
                "flag=true".into(),
                "eq=a=b".into(),
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m["x-max-length"], json!(10));
        assert_eq!(m["x-queue-type"], json!("classic"));
        assert_eq!(m["flag"], json!(true));
        assert_eq!(m["eq"], json!("a=b"));
    }

    #[test]
    fn pairs_without_equals_are_usage_errors() {
        let e = parse_pairs("--arg", &["novalue".into()]).err();
        assert!(matches!(e, Some(CtlError::Usage(_))), "{e:?}");
    }
}
