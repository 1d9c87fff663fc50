//! Durable definitions of a vhost: exchanges, queues and bindings.
//!
//! Definitions change rarely, so each change rewrites one small file
//! atomically through [`crate::framed`] with magic "FRYDEF01" and a JSON
//! body; a file whose checksum does not match is refused at startup rather
//! than silently dropping entities (see `docs/storage.md`).

use ferry_log::FileIo;
use ferry_model::Table;
use ferry_queue::error::{CoreError, Result};
use ferry_queue::queue::QueueSpec;
use ferry_route::Destination;
use serde::{Deserialize, Serialize};
use std::path::Path;

const MAGIC: &[u8; 8] = b"FRYDEF01";

/// A durable exchange.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExchangeDef {
    /// Name.
    pub name: String,
    /// "direct", "fanout", "topic" or "headers".
    pub kind: String,
    /// Deleted when its last binding goes.
    pub auto_delete: bool,
    /// Not publishable by clients.
    pub internal: bool,
    /// x-arguments.
    #[serde(with = "ferry_route::table_serde", default)]
    pub arguments: Table,
}

/// A durable queue and where its log lives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueDef {
    /// Declared shape.
    pub spec: QueueSpec,
    /// Directory name of its log under the vhost's `queues/`.
    pub storage: String,
    /// A replicated queue's nodes as its declaration chose them (absent:
    /// not replicated, or declared before they were recorded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<u64>,
}

/// A binding between durable entities.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BindingDef {
    /// Source exchange.
    pub source: String,
    /// Queue or exchange it routes to.
    pub destination: Destination,
    /// Binding key.
    pub routing_key: String,
    /// Binding arguments.
    #[serde(with = "ferry_route::table_serde", default)]
    pub arguments: Table,
}

/// Everything durable in one vhost.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Definitions {
    /// Format version of the JSON.
    pub version: u32,
    /// Durable exchanges (the predeclared `amq.*` ones are not stored).
    pub exchanges: Vec<ExchangeDef>,
    /// Durable queues.
    pub queues: Vec<QueueDef>,
    /// Bindings whose source and destination are both durable.
    pub bindings: Vec<BindingDef>,
}

/// Writes `defs` to `dir/definitions` atomically.
pub fn save(io: &dyn FileIo, dir: &Path, defs: &Definitions) -> Result<()> {
    let json = serde_json::to_vec(defs).map_err(|e| CoreError::Corrupt(e.to_string()))?;
    Ok(ferry_log::framed::save(
        io,
        dir,
        "definitions",
        MAGIC,
        &json,
    )?)
}

/// Reads `dir/definitions`; an absent file is an empty vhost.
pub fn load(io: &dyn FileIo, dir: &Path) -> Result<Definitions> {
    let path = dir.join("definitions");
    let Some(body) = ferry_log::framed::load(io, &path, MAGIC)? else {
        return Ok(Definitions::default());
    };
    serde_json::from_slice(&body)
        .map_err(|e| CoreError::Corrupt(format!("definitions file {}: {e}", path.display())))
}
