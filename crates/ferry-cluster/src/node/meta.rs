//! The metadata group's state machine: what every node knows about the
//! cluster. For now: the cluster id and each member's name and address
//! (vhosts, users, exchanges, bindings and the queue table follow). It is
//! applied identically on every node from the group's committed entries;
//! its snapshot is its whole (small) state.
//!
//! Commands (one per command record, docs/cluster-wire.md):
//! ```text
//! 1 NodeInfo:  id u64 | u16 len name | u16 len advertise
//! 2 ClusterId: [16] random bytes (proposed once, by the first leader)
//! ```

use crate::error::WireError;
use bytes::{Buf, Bytes};
use ferry_raft::machine::{SmallMachine, SmallState};
use ferry_raft::{Applied, CodecError, NodeId};
use std::collections::BTreeMap;

const CMD_NODE_INFO: u8 = 1;
const CMD_CLUSTER_ID: u8 = 2;

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
    },
    /// The cluster's id (the first one applied wins).
    ClusterId([u8; 16]),
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
            } => {
                b.push(CMD_NODE_INFO);
                b.extend_from_slice(&id.to_le_bytes());
                put_text(&mut b, name);
                put_text(&mut b, advertise);
            }
            MetaCommand::ClusterId(id) => {
                b.push(CMD_CLUSTER_ID);
                b.extend_from_slice(id);
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
                MetaCommand::NodeInfo {
                    id,
                    name,
                    advertise,
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
    /// Names and addresses of the nodes that announced themselves.
    pub nodes: BTreeMap<NodeId, (String, String)>,
}

impl MetaState {
    fn apply_one(&mut self, cmd: MetaCommand) {
        match cmd {
            MetaCommand::NodeInfo {
                id,
                name,
                advertise,
            } => {
                self.nodes.insert(id, (name, advertise));
            }
            MetaCommand::ClusterId(id) => {
                self.cluster_id.get_or_insert(id);
            }
        }
    }
}

impl SmallState for MetaState {
    fn apply(&mut self, commands: Vec<Bytes>) -> Applied {
        for c in commands {
            match MetaCommand::decode(c) {
                Ok(cmd) => self.apply_one(cmd),
                // Skipped the same way on every node: applying stays deterministic.
                Err(e) => tracing::error!(error = %e, "metadata command skipped"),
            }
        }
        Applied::default()
    }

    fn encode(&self) -> Bytes {
        let mut b = Vec::new();
        let mut cmds = Vec::new();
        if let Some(id) = self.cluster_id {
            cmds.push(MetaCommand::ClusterId(id));
        }
        for (id, (name, advertise)) in &self.nodes {
            cmds.push(MetaCommand::NodeInfo {
                id: *id,
                name: name.clone(),
                advertise: advertise.clone(),
            });
        }
        for c in cmds {
            let e = c.encode();
            b.extend_from_slice(&(e.len() as u32).to_le_bytes());
            b.extend_from_slice(&e);
        }
        Bytes::from(b)
    }

    fn decode(mut b: Bytes) -> Result<Self, CodecError> {
        let mut st = MetaState::default();
        while !b.is_empty() {
            if b.len() < 4 {
                return Err(CodecError("truncated metadata snapshot".into()));
            }
            let n = b.get_u32_le() as usize;
            if b.len() < n {
                return Err(CodecError("truncated metadata snapshot".into()));
            }
            st.apply_one(MetaCommand::decode(b.split_to(n)).map_err(|e| CodecError(e.0))?);
        }
        Ok(st)
    }
}

/// The metadata state machine; clones share the state.
pub type MetaSm = SmallMachine<MetaState>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_state_round_trip() {
        let cmds = [
            MetaCommand::NodeInfo {
                id: 7,
                name: "ferry@a".into(),
                advertise: "10.0.0.1:25672".into(),
            },
            MetaCommand::ClusterId([9; 16]),
        ];
        let mut st = MetaState::default();
        for c in cmds {
            assert_eq!(MetaCommand::decode(c.encode()), Ok(c.clone()));
            st.apply(vec![c.encode()]);
        }
        assert_eq!(MetaState::decode(st.encode()), Ok(st.clone()));
        st.apply(vec![MetaCommand::ClusterId([1; 16]).encode()]);
        assert_eq!(st.cluster_id, Some([9; 16]), "the first cluster id wins");
        assert!(MetaCommand::decode(Bytes::from_static(&[3])).is_err());
        assert!(MetaCommand::decode(Bytes::from_static(&[2, 1])).is_err());
        assert!(MetaCommand::decode(Bytes::from_static(&[1, 0, 0])).is_err());
    }
}
