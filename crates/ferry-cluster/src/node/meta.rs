//! The metadata group's commands and what every node knows about the
//! cluster from them: the cluster id and each member's name and address
//! ([`MetaState`], applied identically on every node from the group's
//! committed entries). Definition commands (users, vhosts, exchanges, ...)
//! travel opaque: the node's `DefinitionApplier` applies them
//! (`machine.rs`).
//!
//! Commands (one per command record, docs/cluster-wire.md):
//! ```text
//! 1 NodeInfo:   id u64 | u16 len name | u16 len advertise [| incarnation u64]
//! 2 ClusterId:  [16] random bytes (proposed once, by the first leader)
//! 3 Definition: the rest of the record, opaque (one per entry)
//! ```

use crate::error::WireError;
use bytes::{Buf, Bytes};
use ferry_raft::NodeId;
use std::collections::BTreeMap;

const CMD_NODE_INFO: u8 = 1;
const CMD_CLUSTER_ID: u8 = 2;
const CMD_DEFINITION: u8 = 3;

/// A metadata command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaCommand {
    /// A member's name and address.
    NodeInfo {
        /// Its Raft node id.
        id: NodeId,
        /// Its node name.
        name: String,
        /// The address the others dial.
        advertise: String,
        /// Its data directory's incarnation (0: not said, an older node).
        incarnation: u64,
    },
    /// The cluster's id (the first one applied wins).
    ClusterId([u8; 16]),
    /// A definition change, opaque here.
    Definition(Bytes),
}

fn put_text(b: &mut Vec<u8>, t: &str) {
    crate::wire::put_text(b, t, u16::MAX as usize);
}

impl MetaCommand {
    /// The command's bytes.
    pub fn encode(&self) -> Bytes {
        let mut b = Vec::with_capacity(64);
        match self {
            MetaCommand::NodeInfo {
                id,
                name,
                advertise,
                incarnation,
            } => {
                b.push(CMD_NODE_INFO);
                b.extend_from_slice(&id.to_le_bytes());
                put_text(&mut b, name);
                put_text(&mut b, advertise);
                b.extend_from_slice(&incarnation.to_le_bytes());
            }
            MetaCommand::ClusterId(id) => {
                b.push(CMD_CLUSTER_ID);
                b.extend_from_slice(id);
            }
            MetaCommand::Definition(d) => {
                b.push(CMD_DEFINITION);
                b.extend_from_slice(d);
            }
        }
        Bytes::from(b)
    }

    /// Decodes a command.
    pub fn decode(mut b: Bytes) -> Result<Self, WireError> {
        if b.is_empty() {
            return Err(WireError("empty metadata command".into()));
        }
        let cmd = match b.get_u8() {
            CMD_NODE_INFO => {
                if b.len() < 8 {
                    return Err(WireError("truncated node info".into()));
                }
                let id = b.get_u64_le();
                let name = crate::wire::take_text(&mut b)?;
                let advertise = crate::wire::take_text(&mut b)?;
                let incarnation = match b.len() {
                    0 => 0,
                    8 => b.get_u64_le(),
                    _ => return Err(WireError("bad node info incarnation".into())),
                };
                MetaCommand::NodeInfo {
                    id,
                    name,
                    advertise,
                    incarnation,
                }
            }
            CMD_CLUSTER_ID => {
                if b.len() != 16 {
                    return Err(WireError("cluster id is not 16 bytes".into()));
                }
                let mut id = [0u8; 16];
                b.copy_to_slice(&mut id);
                MetaCommand::ClusterId(id)
            }
            CMD_DEFINITION => return Ok(MetaCommand::Definition(b)),
            t => return Err(WireError(format!("unknown metadata command {t}"))),
        };
        if !b.is_empty() {
            return Err(WireError("trailing bytes in a metadata command".into()));
        }
        Ok(cmd)
    }
}

/// What the metadata group says about the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetaState {
    /// The cluster's id, once the first leader set it.
    pub cluster_id: Option<[u8; 16]>,
    /// The nodes that announced themselves.
    pub nodes: BTreeMap<NodeId, Member>,
}

/// What a node announced about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Member {
    /// Node name.
    pub name: String,
    /// Cluster address.
    pub advertise: String,
    /// Its data directory's incarnation (0: unknown).
    pub incarnation: u64,
}

impl MetaState {
    /// Applies a command (definitions are not this state's: ignored).
    pub(crate) fn apply_one(&mut self, cmd: MetaCommand) {
        match cmd {
            MetaCommand::NodeInfo {
                id,
                name,
                advertise,
                incarnation,
            } => {
                self.nodes.insert(
                    id,
                    Member {
                        name,
                        advertise,
                        incarnation,
                    },
                );
            }
            MetaCommand::ClusterId(id) => {
                self.cluster_id.get_or_insert(id);
            }
            MetaCommand::Definition(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::unwrap_used)]
    fn commands_round_trip_and_apply() {
        let cmds = [
            MetaCommand::NodeInfo {
                id: 7,
                name: "ferry@a".into(),
                advertise: "10.0.0.1:25672".into(),
                incarnation: 42,
            },
            MetaCommand::ClusterId([9; 16]),
            MetaCommand::Definition(Bytes::from_static(b"{\"op\":\"add_vhost\"}")),
            MetaCommand::Definition(Bytes::new()),
        ];
        let mut st = MetaState::default();
        for c in cmds {
            assert_eq!(MetaCommand::decode(c.encode()), Ok(c.clone()));
            st.apply_one(c);
        }
        assert_eq!(st.nodes[&7].incarnation, 42);
        // A node info of an older node (no incarnation) reads as 0.
        let mut old = MetaCommand::NodeInfo {
            id: 8,
            name: "n".into(),
            advertise: "a:1".into(),
            incarnation: 0,
        }
        .encode()
        .to_vec();
        old.truncate(old.len() - 8);
        st.apply_one(MetaCommand::decode(Bytes::from(old)).unwrap());
        assert_eq!(st.nodes[&8].incarnation, 0);
        st.apply_one(MetaCommand::ClusterId([1; 16]));
        assert_eq!(st.cluster_id, Some([9; 16]), "the first cluster id wins");
        assert!(MetaCommand::decode(Bytes::from_static(&[4])).is_err());
        assert!(MetaCommand::decode(Bytes::new()).is_err());
        assert!(MetaCommand::decode(Bytes::from_static(&[2, 1])).is_err());
        assert!(MetaCommand::decode(Bytes::from_static(&[1, 0, 0])).is_err());
    }
}
