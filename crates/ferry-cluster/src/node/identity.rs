//! Who this node is, kept in its data directory: a node never starts with
//! data that belongs to another node.
//!
//! A node's Raft id is derived from its advertised cluster address (the
//! first 8 bytes of its SHA-256), so every seed knows every seed's id from
//! the seed list alone and all of them can start the metadata group with
//! the same configuration.
//!
//! File `<data>/cluster/node` (framed, "FRYNODE1"):
//! `id u64 | u16 len name | u16 len advertise | has_cluster u8 | cluster id [16]`
//!
//! File `<data>/cluster/incarnation` (framed, "FRYINCA1"): `incarnation u64`,
//! random and non-zero, made with the directory: a node whose directory was
//! wiped comes back with the same id but another incarnation (so the others
//! can tell it lost its Raft state; `node::admission`).

use crate::error::NodeError;
use bytes::{Buf, Bytes};
use ferry_log::FileIo;
use ferry_raft::NodeId;
use std::path::Path;

const FILE: &str = "node";
const MAGIC: &[u8; 8] = b"FRYNODE1";
const INC_FILE: &str = "incarnation";
const INC_MAGIC: &[u8; 8] = b"FRYINCA1";

/// This data directory's incarnation, made (at random, fsynced) the first
/// time: for a new directory, or one a version without incarnations
/// made (its Raft state is intact, so any new value will do). Blocking.
pub fn incarnation(io: &dyn FileIo, dir: &Path) -> Result<u64, NodeError> {
    let path = dir.join(INC_FILE);
    let bad = |e: String| NodeError::Identity(format!("{}: {e}", path.display()));
    match ferry_log::framed::load(io, &path, INC_MAGIC).map_err(|e| bad(e.to_string()))? {
        Some(b) => match <[u8; 8]>::try_from(b.as_slice()) {
            Ok(x) if u64::from_le_bytes(x) != 0 => Ok(u64::from_le_bytes(x)),
            _ => Err(bad("not a non-zero u64".into())),
        },
        None => {
            let inc = rand::random::<u64>().max(1);
            ferry_log::framed::save(io, dir, INC_FILE, INC_MAGIC, &inc.to_le_bytes())
                .map_err(|e| bad(e.to_string()))?;
            Ok(inc)
        }
    }
}

/// The Raft node id of the node that advertises `addr`.
pub fn node_id(addr: &str) -> NodeId {
    let d = ring::digest::digest(&ring::digest::SHA256, addr.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d.as_ref()[..8]);
    NodeId::from_le_bytes(b)
}

/// The identity recorded in a data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// Raft node id.
    pub id: NodeId,
    /// Node name.
    pub name: String,
    /// Advertised cluster address.
    pub advertise: String,
    /// The cluster it belongs to, once known.
    pub cluster: Option<[u8; 16]>,
}

impl Recorded {
    fn encode(&self) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&self.id.to_le_bytes());
        for t in [&self.name, &self.advertise] {
            crate::wire::put_text(&mut b, t, u16::MAX as usize);
        }
        match self.cluster {
            Some(c) => {
                b.push(1);
                b.extend_from_slice(&c);
            }
            None => b.push(0),
        }
        b
    }

    fn decode(body: Vec<u8>) -> Option<Self> {
        let mut b = Bytes::from(body);
        if b.len() < 8 {
            return None;
        }
        let id = b.get_u64_le();
        let name = crate::wire::take_text(&mut b).ok()?;
        let advertise = crate::wire::take_text(&mut b).ok()?;
        let cluster = match (b.first(), b.len()) {
            (Some(0), 1) => None,
            (Some(1), 17) => {
                let mut c = [0u8; 16];
                c.copy_from_slice(&b[1..17]);
                Some(c)
            }
            _ => return None,
        };
        Some(Recorded {
            id,
            name,
            advertise,
            cluster,
        })
    }

    /// Reads the recorded identity; `None` for a directory never used by
    /// a clustered node.
    pub fn load(io: &dyn FileIo, dir: &Path) -> Result<Option<Self>, NodeError> {
        match ferry_log::framed::load(io, &dir.join(FILE), MAGIC) {
            Ok(None) => Ok(None),
            Ok(Some(body)) => Recorded::decode(body).map(Some).ok_or_else(|| {
                NodeError::Identity(format!("{}: undecodable", dir.join(FILE).display()))
            }),
            Err(e) => Err(NodeError::Identity(format!(
                "{}: {e}",
                dir.join(FILE).display()
            ))),
        }
    }

    /// Writes it (fsynced). Blocking.
    pub fn save(&self, io: &dyn FileIo, dir: &Path) -> Result<(), NodeError> {
        ferry_log::framed::save(io, dir, FILE, MAGIC, &self.encode())
            .map_err(|e| NodeError::Identity(format!("{}: {e}", dir.join(FILE).display())))
    }

    /// Refuses to start node `name` at `advertise` with this data.
    pub fn check(&self, name: &str, advertise: &str) -> Result<(), NodeError> {
        if self.name != name || self.advertise != advertise {
            return Err(NodeError::Identity(format!(
                "this data directory belongs to node {:?} advertising {} (started as {name:?} \
                 advertising {advertise}); start it with its own name and address, or use an \
                 empty data directory",
                self.name, self.advertise
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_the_file_round_trips() {
        assert_eq!(node_id("10.77.0.1:25672"), node_id("10.77.0.1:25672"));
        assert_ne!(node_id("10.77.0.1:25672"), node_id("10.77.0.2:25672"));
        let r = Recorded {
            id: 5,
            name: "n1".into(),
            advertise: "a:1".into(),
            cluster: Some([3; 16]),
        };
        assert_eq!(Recorded::decode(r.encode()), Some(r.clone()));
        let none = Recorded {
            cluster: None,
            ..r.clone()
        };
        assert_eq!(Recorded::decode(none.encode()), Some(none));
        assert!(r.check("n1", "a:1").is_ok());
        assert!(r.check("n2", "a:1").is_err());
        assert!(r.check("n1", "a:2").is_err());
        let mut bad = r.encode();
        bad.pop();
        assert_eq!(Recorded::decode(bad), None);
    }
}
