//! Applying a cluster's replicated definition commands on this node, each
//! exactly once across restarts.
//!
//! The metadata group hands every committed command to
//! [`ReplicatedDefinitions::apply`] with its log index, in log order, on
//! every node. The broker persists its definitions itself (access file,
//! policy file, each vhost's definitions), so replaying the group's whole
//! log at restart would apply old commands to today's definitions — and
//! some are destructive (a vhost deleted and created again would lose the
//! queues declared since). So the index of the last applied command is
//! recorded in `DATA/meta-applied` after the command took effect, and
//! commands at or below it are skipped. A crash between the two applies
//! that one command again, which changes nothing (`crate::command`).
//!
//! Once the group cuts its log, a node behind the cut installs a snapshot
//! instead ([`ReplicatedDefinitions::snapshot`] /
//! [`ReplicatedDefinitions::install`]): every replicated definition as
//! `crate::def_snapshot` exports it, taken with the index it reflects;
//! installing converges this node's definitions to it, then records its
//! index like an applied command's.
//!
//! `DATA/meta-applied`: a framed file (`ferry_log::framed`, magic
//! "FRYMAP01") holding the index as u64 little endian.

use crate::command::{self, DefCommand};
use crate::def_snapshot;
use crate::Broker;
use ferry_queue::error::CoreError;
use parking_lot::Mutex;
use std::sync::Arc;

const MAGIC: &[u8; 8] = b"FRYMAP01";
const FILE: &str = "meta-applied";

/// Applies replicated definition commands to one broker.
pub struct ReplicatedDefinitions {
    broker: Arc<Broker>,
    /// The last applied index; held while applying (one at a time).
    applied: Mutex<u64>,
}

impl std::fmt::Debug for ReplicatedDefinitions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicatedDefinitions")
            .field("applied", &*self.applied.lock())
            .finish_non_exhaustive()
    }
}

impl ReplicatedDefinitions {
    /// Reads the applied index recorded in the broker's data directory.
    pub fn open(broker: Arc<Broker>) -> Result<Self, CoreError> {
        let path = broker.config().data_dir.join(FILE);
        let applied = match ferry_log::framed::load(&**broker.io(), &path, MAGIC)? {
            None => 0,
            Some(b) => u64::from_le_bytes(
                b.as_slice()
                    .try_into()
                    .map_err(|_| CoreError::Corrupt(format!("{}: not 8 bytes", path.display())))?,
            ),
        };
        Ok(ReplicatedDefinitions {
            broker,
            applied: Mutex::new(applied),
        })
    }

    /// The index of the last command applied here.
    pub fn applied(&self) -> u64 {
        *self.applied.lock()
    }

    /// Applies the command at log `index` (skipped if it was applied
    /// before) and returns its result's bytes (`command::encode_result`).
    /// Blocks on file I/O.
    pub fn apply(&self, index: u64, bytes: &[u8]) -> Vec<u8> {
        let mut applied = self.applied.lock();
        if index <= *applied {
            return command::encode_result(&Ok(false));
        }
        let result = DefCommand::decode(bytes)
            .map_err(Into::into)
            .and_then(|cmd| command::apply(&self.broker, &cmd));
        if let Err(e) = &result {
            // Refusals are the same on every node (the proposer reports
            // it); only a storage fault here is this node's own.
            tracing::debug!(index, error = %e, "definition command refused");
        }
        let b = self.broker.config().data_dir.clone();
        match ferry_log::framed::save(&**self.broker.io(), &b, FILE, MAGIC, &index.to_le_bytes()) {
            Ok(()) => *applied = index,
            Err(e) => tracing::error!(
                index,
                error = %e,
                "could not record the applied definitions index; the command is applied again at restart"
            ),
        }
        command::encode_result(&result)
    }

    /// The applied index and the definitions as of it
    /// (`def_snapshot::encode` of `def_snapshot::export`), both taken
    /// while no command applies, so they match. Blocks on the broker's
    /// locks.
    pub fn snapshot(&self) -> (u64, Vec<u8>) {
        let applied = self.applied.lock();
        let bytes = def_snapshot::encode(&def_snapshot::export(&self.broker));
        (*applied, bytes)
    }

    /// Installs a snapshot taken at log `index` ([`snapshot`](Self::snapshot)
    /// of another node): converges this node's definitions to it, then
    /// records `index` as applied. A snapshot at or below the applied
    /// index changes nothing (this node's definitions already include
    /// what it holds, and the same log's commands after it). An error (bad
    /// bytes, a storage failure) records nothing: the definitions may be
    /// partly converged, and installing again finishes. Blocks on file
    /// I/O.
    pub fn install(&self, index: u64, bytes: &[u8]) -> Result<(), CoreError> {
        let target = def_snapshot::decode(bytes)?;
        let mut applied = self.applied.lock();
        if index <= *applied {
            tracing::info!(
                index,
                applied = *applied,
                "definitions snapshot not newer than what was applied: skipped"
            );
            return Ok(());
        }
        def_snapshot::converge(&self.broker, &target)?;
        let dir = self.broker.config().data_dir.clone();
        ferry_log::framed::save(&**self.broker.io(), &dir, FILE, MAGIC, &index.to_le_bytes())?;
        *applied = index;
        Ok(())
    }
}
