//! Test support (feature `test-support`): a recording state machine.

use crate::error::CodecError;
use crate::machine::{SmallMachine, SmallState};
use crate::types::Applied;
use bytes::{Buf, Bytes};

/// Every command applied, in order; its snapshot holds them all.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// The commands.
    pub commands: Vec<Bytes>,
}

impl SmallState for Recorded {
    fn apply(&mut self, commands: Vec<Bytes>) -> Applied {
        self.commands.extend(commands);
        Applied::default()
    }

    fn encode(&self) -> Bytes {
        let mut buf = Vec::new();
        for c in &self.commands {
            buf.extend_from_slice(&u32::try_from(c.len()).unwrap_or(u32::MAX).to_le_bytes());
            buf.extend_from_slice(c);
        }
        Bytes::from(buf)
    }

    fn decode(mut data: Bytes) -> Result<Self, CodecError> {
        let mut commands = Vec::new();
        while !data.is_empty() {
            if data.len() < 4 {
                return Err(CodecError("truncated recorded snapshot".into()));
            }
            let n = data.get_u32_le() as usize;
            if data.len() < n {
                return Err(CodecError("truncated recorded snapshot".into()));
            }
            commands.push(data.split_to(n));
        }
        Ok(Recorded { commands })
    }
}

/// A state machine that records the commands it applied (for tests of the
/// log store and the links).
pub type Recorder = SmallMachine<Recorded>;

/// A snapshot's meta over the three nodes 1..=3 (`10.0.0.N:25672`, their
/// membership logged at index 1 of term 1): last log id `(term, leader,
/// index)`, id `snapshot_id`.
pub fn three_node_meta(
    (term, leader, index): (u64, u64, u64),
    snapshot_id: &str,
) -> crate::codec::SnapMeta {
    use crate::types::LogId;
    use openraft::{BasicNode, CommittedLeaderId, Membership, StoredMembership};
    let nodes: std::collections::BTreeMap<u64, BasicNode> = (1..=3)
        .map(|i| {
            let addr = format!("10.0.0.{i}:25672");
            (i, BasicNode { addr })
        })
        .collect();
    let ids: std::collections::BTreeSet<u64> = nodes.keys().copied().collect();
    crate::codec::SnapMeta {
        last_log_id: Some(LogId::new(CommittedLeaderId::new(term, leader), index)),
        last_membership: StoredMembership::new(
            Some(LogId::new(CommittedLeaderId::new(1, 1), 1)),
            Membership::new(vec![ids], nodes),
        ),
        snapshot_id: snapshot_id.to_string(),
    }
}
