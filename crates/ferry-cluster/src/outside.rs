//! A replicated queue on a node outside its group (a cluster larger than
//! the queue's replicas): the node holds no copy, but its clients use the
//! queue as anywhere else — its publishes are forwarded to the group's
//! leader (confirmed once committed there), its consumers, acks, gets and
//! purges go through a [`FollowerPort`] — with the leader guessed among
//! the members and learnt from their answers (`leadership`). A replicated
//! stream there forwards its publishes the same way, and its consumers
//! read the group's committed records through a member
//! ([`StreamReaders`]: a reader per consumer, asking the guessed leader
//! first and the other members when one fails or refuses).

use crate::leadership::{Guess, Leadership};
use crate::link::Links;
use crate::port::{run_forwarder, run_puller, FollowerPort};
use crate::proposer::{run_proposer, GroupProposer};
use crate::stream_port::StreamReaders;
use bytes::Bytes;
use ferry_log::RecordPos;
use ferry_queue::error::{CoreError, ErrorKind, Result};
use ferry_queue::queue::{CommandLog, Proposer, Replica};
use ferry_queue::stream::Stream;
use ferry_raft::NodeId;
use parking_lot::Mutex;
use std::sync::Arc;
use tokio::task::JoinHandle;

/// A queue's tasks on a node outside its group.
pub struct OutsideGroup {
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// A queue's members (id, cluster address); empty for a stream.
    queue_members: Vec<(NodeId, String)>,
    /// A stream's consumers' readers.
    readers: Option<StreamReaders>,
}

impl std::fmt::Debug for OutsideGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutsideGroup").finish_non_exhaustive()
    }
}

/// The log of a node that holds no copy of the queue: nothing to read
/// (its replica applies nothing, so it never asks).
#[derive(Debug)]
struct NoCopy;

fn no_copy() -> CoreError {
    CoreError::request(ErrorKind::Internal, "this node holds no copy of the queue")
}

impl CommandLog for NoCopy {
    fn read(&self, _pos: &RecordPos) -> Result<Bytes> {
        Err(no_copy())
    }

    fn scan(&self, _from: u64, _f: &mut dyn FnMut(RecordPos, Bytes) -> Result<bool>) -> Result<()> {
        Err(no_copy())
    }
}

impl OutsideGroup {
    /// Serves `replica` (of group `group`, whose members are `members`:
    /// id and cluster address) through the group's leader; `bind` gets
    /// the log and proposer the replica works with.
    pub fn start(
        group: u64,
        members: Vec<(NodeId, String)>,
        links: Arc<Links>,
        replica: Replica,
        bind: impl FnOnce(Arc<dyn CommandLog>, Arc<dyn Proposer>),
    ) -> Self {
        let queue_members = members.clone();
        let lead = Leadership::Outside(Guess::new(members));
        let (proposer, proposals) = GroupProposer::new();
        bind(Arc::new(NoCopy), Arc::new(proposer));
        let name = replica.queue().name().clone();
        let (port, forwards) = FollowerPort::new(lead.clone(), links.clone(), group, name);
        replica.bind_leader(port.clone());
        let tasks = vec![
            // Outside the group it never leads: nothing to decide here.
            tokio::spawn(run_proposer(
                lead,
                links,
                group,
                proposals,
                (None, None),
                true,
            )),
            tokio::spawn(run_puller(port.clone(), replica)),
            tokio::spawn(run_forwarder(port, forwards)),
        ];
        OutsideGroup {
            tasks: Mutex::new(tasks),
            queue_members,
            readers: None,
        }
    }

    /// A queue's members (id, cluster address): one of them leads and
    /// has its figures. Empty for a stream.
    pub fn queue_members(&self) -> &[(NodeId, String)] {
        &self.queue_members
    }

    /// A replicated stream on a node outside its group (`stream` here
    /// holds no copy): publishes are forwarded to the group's leader
    /// (`bind` gets the proposer); consumers read through the members.
    pub fn start_stream(
        group: u64,
        members: Vec<(NodeId, String)>,
        links: Arc<Links>,
        stream: &Arc<Stream>,
        bind: impl FnOnce(Arc<dyn Proposer>),
    ) -> Self {
        let lead = Leadership::Outside(Guess::new(members));
        let (proposer, proposals) = GroupProposer::new();
        bind(Arc::new(proposer));
        // One guess for both: a member found down or refusing is passed
        // over by the reads and the proposals alike.
        let readers = StreamReaders::new(lead.clone(), links.clone(), group, stream);
        stream.read_through(Arc::new(readers.clone()));
        OutsideGroup {
            tasks: Mutex::new(vec![tokio::spawn(run_proposer(
                lead,
                links,
                group,
                proposals,
                (None, None),
                false,
            ))]),
            queue_members: Vec::new(),
            readers: Some(readers),
        }
    }

    /// Stops serving.
    pub fn shutdown(&self) {
        for t in self.tasks.lock().drain(..) {
            t.abort();
        }
        if let Some(r) = &self.readers {
            r.shutdown();
        }
    }
}
