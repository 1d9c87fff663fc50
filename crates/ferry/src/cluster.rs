//! Starting a clustered node from the settings (`cluster_listen` on).

use crate::settings::Settings;
use ferry_broker::Broker;
use ferry_cluster::node::{ClusterNode, NodeConfig};
use ferry_cluster::Secret;
use ferry_log::StdIo;
use std::sync::Arc;
use std::time::Duration;

/// How long to wait for the cluster to form before saying so in the log
/// (the node keeps waiting).
const FORMING_NOTICE: Duration = Duration::from_secs(10);

/// The node's cluster settings, checked: None when `cluster_listen` is off.
pub fn node_config(s: &Settings) -> Result<Option<NodeConfig>, String> {
    let listen = s.cluster_listen.trim();
    if listen.is_empty() || listen == "off" {
        return Ok(None);
    }
    let secret = match &s.cluster_secret_file {
        Some(p) => std::fs::read(p)
            .map_err(|e| format!("cannot read cluster_secret_file {}: {e}", p.display()))?,
        None => s.cluster_secret.clone().into_bytes(),
    };
    let secret = secret.trim_ascii();
    if secret.is_empty() {
        return Err(
            "a clustered node needs the shared secret: set cluster_secret_file or cluster_secret"
                .into(),
        );
    }
    if s.node_name.trim().is_empty() {
        return Err("node_name must not be empty".into());
    }
    let advertise = match s.cluster_advertise.trim() {
        "" => listen.to_string(),
        a => a.to_string(),
    };
    if advertise.starts_with("0.0.0.0:") || advertise.starts_with("[::]:") {
        return Err(format!(
            "cluster_advertise must be an address the other nodes can dial, not {advertise} \
             (set cluster_advertise)"
        ));
    }
    Ok(Some(NodeConfig {
        dir: s.data_dir.join("cluster"),
        name: s.node_name.clone(),
        listen: listen.to_string(),
        advertise,
        seeds: s.cluster_seeds.clone(),
        secret: Secret::new(secret),
        heartbeat_ms: 200,
        election_ms: (1_000, 2_000),
    }))
}

/// Starts the node's cluster side and waits until it is a member of the
/// formed cluster (logging while it waits).
pub async fn start(cfg: NodeConfig, broker: &Broker) -> Result<ClusterNode, String> {
    let advertise = cfg.advertise.clone();
    let node = ClusterNode::start(cfg, Arc::new(StdIo), broker.syncer().clone())
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(cluster = %advertise, node_id = node.id(), "cluster port open; forming");
    loop {
        match node.wait_formed(FORMING_NOTICE).await {
            Ok(()) => break,
            Err(e) => tracing::warn!("{e}"),
        }
    }
    tracing::info!(node_id = node.id(), "member of the cluster");
    Ok(node)
}
