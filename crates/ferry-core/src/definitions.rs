//! Durable definitions of a vhost: exchanges, queues and bindings.
//!
//! Definitions change rarely, so each change rewrites one small file
//! atomically (write a temp file, fsync, rename, fsync the directory):
//!
//! ```text
//! | magic "FRYDEF01" (8) | len u32 LE | crc32c u32 LE (of the JSON) | JSON (len bytes) |
//! ```
//! A file whose checksum does not match is refused at startup rather than
//! silently dropping entities (see `docs/storage.md`).

use crate::error::{CoreError, Result};
use crate::exchange::Destination;
use crate::queue::QueueSpec;
use amq_protocol_types::FieldTable;
use ferry_log::FileIo;
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
    #[serde(with = "crate::exchange::table_serde", default)]
    pub arguments: FieldTable,
}

/// A durable queue and where its log lives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueDef {
    /// Declared shape.
    pub spec: QueueSpec,
    /// Directory name of its log under the vhost's `queues/`.
    pub storage: String,
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
    #[serde(with = "crate::exchange::table_serde", default)]
    pub arguments: FieldTable,
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
    let mut buf = Vec::with_capacity(json.len() + 16);
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&(json.len() as u32).to_le_bytes());
    buf.extend_from_slice(&crc32c::crc32c(&json).to_le_bytes());
    buf.extend_from_slice(&json);
    io.create_dir_all(dir)?;
    let tmp = dir.join("definitions.tmp");
    let f = io.open(&tmp, true)?;
    f.set_len(0)?;
    f.write_all_at(&buf, 0)?;
    f.sync_data()?;
    drop(f);
    io.rename(&tmp, &dir.join("definitions"))?;
    io.sync_dir(dir)?;
    Ok(())
}

/// Reads `dir/definitions`; an absent file is an empty vhost.
pub fn load(io: &dyn FileIo, dir: &Path) -> Result<Definitions> {
    let path = dir.join("definitions");
    if !io.exists(&path) {
        return Ok(Definitions::default());
    }
    let f = io.open(&path, false)?;
    let len = f.len()? as usize;
    let mut buf = vec![0u8; len];
    let mut off = 0;
    while off < len {
        let n = f.read_at(&mut buf[off..], off as u64)?;
        if n == 0 {
            break;
        }
        off += n;
    }
    let bad = |w: &str| CoreError::Corrupt(format!("definitions file {}: {w}", path.display()));
    if off < 16 || &buf[..8] != MAGIC {
        return Err(bad("bad header"));
    }
    let n = u32::from_le_bytes([buf[8], buf[9], buf[10], buf[11]]) as usize;
    let crc = u32::from_le_bytes([buf[12], buf[13], buf[14], buf[15]]);
    let body = buf.get(16..16 + n).ok_or_else(|| bad("truncated"))?;
    if crc32c::crc32c(body) != crc {
        return Err(bad("checksum mismatch"));
    }
    serde_json::from_slice(body).map_err(|e| bad(&e.to_string()))
}
