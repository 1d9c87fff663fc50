//! `ferry ctl cluster status`: the members as one node sees them
//! (`/api/nodes`), and an exit status that says whether all are running;
//! `cluster rebalance` (queue leaders spread over the nodes),
//! `cluster forget`, `cluster leave` and `cluster join`; `queues grow | shrink` (a node's
//! replicas of the replicated queues and streams).

use crate::args::CtlArgs;
use crate::client::Client;
use crate::error::CtlError;
use crate::table::{col, render, Column};
use crate::Output;
use serde_json::Value;

const MEMBERS: &[Column] = &[
    col("name", "name"),
    col("running", "running"),
    col("voter", "voter"),
    col("metadata_leader", "metadata_leader"),
    col("cluster_address", "cluster_address"),
    col("partitions", "partitions"),
];

pub fn status(client: &Client, args: &CtlArgs, out: &mut Output<'_>) -> Result<(), CtlError> {
    let body = client.get("/api/nodes", "the nodes")?;
    let Value::Array(rows) = &body else {
        return Err(CtlError::BadResponse {
            path: "/api/nodes".into(),
            detail: "expected a JSON array".into(),
        });
    };
    if args.json {
        out.json(&body)?;
    } else {
        out.text(&render(MEMBERS, rows))?;
    }
    let down: Vec<&str> = rows
        .iter()
        .filter(|n| n["running"] != true)
        .filter_map(|n| n["name"].as_str())
        .collect();
    if down.is_empty() {
        Ok(())
    } else {
        Err(CtlError::Input(format!(
            "{} of {} nodes not running: {}",
            down.len(),
            rows.len(),
            down.join(", ")
        )))
    }
}

pub fn forget(client: &Client, node: &str, out: &mut Output<'_>) -> Result<(), CtlError> {
    let path = crate::client::api_path(&["nodes", node]);
    client.delete(&path, &format!("cluster member '{node}'"))?;
    out.done(&format!("forgot cluster member {node}"))
}

pub fn leave(client: &Client, out: &mut Output<'_>) -> Result<(), CtlError> {
    client.post(
        "/api/cluster/leave",
        &serde_json::json!({}),
        "leaving the cluster",
    )?;
    out.done("the node left the cluster and stops")
}

/// Asks the node to join the cluster of `node`, then waits until the node
/// (starting over on a reset data directory) lists that node among the
/// members of its cluster.
pub fn join(
    client: &Client,
    node: &str,
    timeout: u64,
    out: &mut Output<'_>,
) -> Result<(), CtlError> {
    client.post(
        "/api/cluster/join",
        &serde_json::json!({ "node": node }),
        "joining the cluster",
    )?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(timeout);
    loop {
        // Refused while the node starts over: ask again until it answers.
        if let Ok(Value::Array(rows)) = client.get("/api/nodes", "the nodes") {
            let joined = rows.len() > 1
                && rows
                    .iter()
                    .any(|n| n["cluster_address"].as_str() == Some(node.trim()));
            if joined {
                return out.done(&format!(
                    "joined the cluster of {node}: {} members",
                    rows.len()
                ));
            }
        }
        if std::time::Instant::now() >= deadline {
            return Err(CtlError::Input(format!(
                "the node reset its data and started again, but is not a member of {node}'s \
                 cluster after {timeout} s: see its log"
            )));
        }
        // Polling a process that is starting over: nothing to await.
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
}

pub fn grow(client: &Client, node: &str, even: bool, out: &mut Output<'_>) -> Result<(), CtlError> {
    let path = crate::client::api_path(&["queues", "quorum", "replicas", "on", node, "grow"]);
    let strategy = if even { "even" } else { "all" };
    let r = client.post(
        &path,
        &serde_json::json!({ "strategy": strategy }),
        "the grow",
    )?;
    let n = r.as_ref().and_then(|v| v["changed"].as_u64()).unwrap_or(0);
    out.done(&format!(
        "{n} queue and stream groups got a replica on {node}"
    ))
}

pub fn shrink(client: &Client, node: &str, out: &mut Output<'_>) -> Result<(), CtlError> {
    let path = crate::client::api_path(&["queues", "quorum", "replicas", "on", node, "shrink"]);
    client.delete(&path, &format!("{node}'s replicas"))?;
    out.done(&format!("{node}'s replicas removed"))
}

pub fn rebalance(client: &Client, out: &mut Output<'_>) -> Result<(), CtlError> {
    let r = client.post(
        "/api/rebalance/queues",
        &serde_json::json!({}),
        "the rebalance",
    )?;
    let field = |k: &str| r.as_ref().and_then(|v| v[k].as_u64()).unwrap_or(0);
    out.done(&format!(
        "rebalance: {} of {} queue and stream leaders asked to move",
        field("moved"),
        field("groups")
    ))
}
