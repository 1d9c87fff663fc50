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
