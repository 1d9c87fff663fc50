//! Starting a clustered node from the settings (`cluster_listen` on).

use crate::settings::Settings;
use bytes::Bytes;
use ferry_broker::applied::ReplicatedDefinitions;
use ferry_broker::command::Replicator;
use ferry_broker::Broker;
use ferry_cluster::node::machine::DefinitionApplier;
use ferry_cluster::node::{ClusterNode, NodeConfig};
use ferry_cluster::{LinkTls, Secret};
use ferry_log::StdIo;
use std::sync::Arc;
use std::time::Duration;

/// How long a definition change waits for the metadata group (a leader
/// election, a partition healing) before the client gets an error.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// The broker's definitions as the metadata group's applier.
struct Applier(ReplicatedDefinitions);

impl DefinitionApplier for Applier {
    fn apply(&self, index: u64, command: &[u8]) -> Vec<u8> {
        self.0.apply(index, command)
    }

    fn export(&self) -> (u64, Vec<u8>) {
        self.0.snapshot()
    }

    fn install(&self, index: u64, definitions: &[u8]) -> Result<(), String> {
        self.0
            .install(index, definitions)
            .map_err(|e| e.to_string())
    }
}

/// The metadata group as the broker's replicator.
struct Proposer {
    node: ClusterNode,
    rt: tokio::runtime::Handle,
}

impl Replicator for Proposer {
    fn replicate(&self, command: Vec<u8>) -> Result<Vec<u8>, String> {
        // The broker calls this from the blocking pool or `block_in_place`.
        self.rt
            .block_on(
                self.node
                    .propose_definition(Bytes::from(command), CHANGE_TIMEOUT),
            )
            .map(|b| b.to_vec())
            .map_err(|e| e.to_string())
    }
}

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
    let tls = match (s.cluster_tls, &s.tls_cert, &s.tls_key, &s.tls_ca) {
        (false, ..) => None,
        (true, Some(cert), Some(key), Some(ca)) => {
            let (server, client) = ferry_server::tls::cluster_configs(cert, key, ca)
                .map_err(|e| format!("cluster_tls: {e}"))?;
            Some(LinkTls { server, client })
        }
        (true, ..) => {
            return Err("cluster_tls needs tls_cert, tls_key and tls_ca (the cluster's CA)".into())
        }
    };
    Ok(Some(NodeConfig {
        dir: s.data_dir.join("cluster"),
        name: s.node_name.clone(),
        listen: listen.to_string(),
        advertise,
        // A join (`ferry ctl cluster join`) recorded the other cluster's
        // address: it replaces the configured seeds.
        seeds: crate::join::recorded_seeds(&s.data_dir)?.unwrap_or_else(|| s.cluster_seeds.clone()),
        secret: Secret::new(secret),
        tls,
        heartbeat_ms: 200,
        election_ms: (1_000, 2_000),
        snapshot_bytes: s.queue_snapshot_bytes.max(1),
        meta_snapshot_interval: s.meta_snapshot_interval.max(1),
        hibernate_after: (s.queue_hibernate_after_ms > 0)
            .then(|| std::time::Duration::from_millis(s.queue_hibernate_after_ms)),
    }))
}

/// Starts the node's cluster side, waits until it is a member of the
/// formed cluster (logging while it waits) and has applied the
/// definitions logged so far, then sends the broker's definition changes
/// through the metadata group.
pub async fn start(
    cfg: NodeConfig,
    broker: &Arc<Broker>,
    replicas: usize,
) -> Result<ClusterNode, String> {
    let advertise = cfg.advertise.clone();
    let b = broker.clone();
    let defs = tokio::task::spawn_blocking(move || ReplicatedDefinitions::open(b))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let node = ClusterNode::start(
        cfg,
        Arc::new(StdIo),
        broker.syncer().clone(),
        Arc::new(Applier(defs)),
    )
    .await
    .map_err(|e| e.to_string())?;
    tracing::info!(cluster = %advertise, node_id = node.id(), "cluster port open; forming");
    loop {
        match node.wait_formed(FORMING_NOTICE).await {
            Ok(()) => break,
            Err(e @ ferry_cluster::NodeError::JoinRefused(_)) => return Err(e.to_string()),
            Err(e) => tracing::warn!("{e}"),
        }
    }
    tracing::info!(node_id = node.id(), "member of the cluster");
    broker.set_replicator(Arc::new(Proposer {
        node: node.clone(),
        rt: tokio::runtime::Handle::current(),
    }));
    // Replicated queues opened at start get their groups now (blocking:
    // each group's log is opened and its Raft started).
    let host = Arc::new(crate::replicas::GroupHost::new(
        node.clone(),
        tokio::runtime::Handle::current(),
        broker.syncer().clone(),
        replicas,
    ));
    let weak = Arc::downgrade(&host);
    node.set_group_stats(Arc::new(move || {
        weak.upgrade().map(|h| h.group_stats()).unwrap_or_default()
    }));
    let weak = Arc::downgrade(&host);
    tokio::spawn(crate::trim::after_hibernations(move || {
        weak.upgrade().map(|h| h.hibernations())
    }));
    let b = broker.clone();
    tokio::task::spawn_blocking(move || b.replicas().set_host(host))
        .await
        .map_err(|e| e.to_string())?;
    Ok(node)
}
