//! Who leads a replicated queue's group, as this node sees it: a member
//! reads its own Raft's server metrics (the last it had, while the group
//! hibernates; `RaftSlot::with_leader`); a node outside the group (a cluster
//! larger than the queue's replicas) guesses among the members and learns
//! from their answers (a refusal moves the guess on, a redirect names the
//! leader).

use crate::slot::RaftSlot;
use ferry_raft::NodeId;
use std::sync::Arc;
use tokio::sync::watch;

/// How this node knows the group's leader.
#[derive(Clone)]
pub enum Leadership {
    /// This node is a member: its Raft knows.
    Member {
        /// The group's Raft instance here.
        slot: Arc<RaftSlot>,
        /// This node.
        me: NodeId,
    },
    /// This node is outside the group: a guess among its members.
    Outside(Arc<Guess>),
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Leadership::Member { me, .. } => write!(f, "Member({me})"),
            Leadership::Outside(g) => write!(f, "Outside({:?})", g.members),
        }
    }
}

/// An outside node's guess of the leader: one of the members, moved on
/// when the guess proves wrong.
#[derive(Debug)]
pub struct Guess {
    members: Vec<(NodeId, String)>,
    at: watch::Sender<usize>,
}

impl Guess {
    /// A guess among `members` (id, cluster address), the first first.
    pub fn new(members: Vec<(NodeId, String)>) -> Arc<Self> {
        Arc::new(Guess {
            members,
            at: watch::Sender::new(0),
        })
    }
}

/// Wakes when the leadership may have moved.
pub enum Changes {
    /// A member's Raft instance (bumped as its server metrics change —
    /// with the leadership, the vote, the role and the membership only —
    /// and as it wakes).
    Raft(watch::Receiver<u64>),
    /// An outside node's guess.
    Guess(watch::Receiver<usize>),
}

impl Changes {
    /// Waits for the next change; Err once nothing will change any more
    /// (the group stopped).
    pub async fn changed(&mut self) -> Result<(), ()> {
        match self {
            Changes::Raft(rx) => rx.changed().await.map_err(|_| ()),
            Changes::Guess(rx) => rx.changed().await.map_err(|_| ()),
        }
    }
}

impl Leadership {
    /// The leader and its address, if another node leads (or is
    /// guessed to).
    pub fn leader(&self) -> Option<(NodeId, String)> {
        match self {
            Leadership::Member { slot, me } => slot.with_leader(|leader, membership| {
                let l = leader.filter(|l| l != me)?;
                let addr = membership.membership().get_node(&l)?.addr.clone();
                Some((l, addr))
            }),
            Leadership::Outside(g) => {
                let at = *g.at.borrow();
                g.members.get(at % g.members.len().max(1)).cloned()
            }
        }
    }

    /// Whether this node leads the group (as its Raft says).
    pub fn leads_here(&self) -> bool {
        match self {
            Leadership::Member { slot, me } => slot.with_leader(|l, _| l == Some(*me)),
            Leadership::Outside(_) => false,
        }
    }

    /// Returns once this node does not lead the group (at once if it
    /// does not now), or the group stopped.
    pub async fn until_not_leading(&self) {
        let mut changes = self.changes();
        while self.leads_here() {
            if changes.changed().await.is_err() {
                return;
            }
        }
    }

    /// A receiver of changes.
    pub fn changes(&self) -> Changes {
        match self {
            Leadership::Member { slot, .. } => Changes::Raft(slot.changes()),
            Leadership::Outside(g) => Changes::Guess(g.at.subscribe()),
        }
    }

    /// Node `id` turned out not to lead (it refused, or cannot be
    /// reached): an outside node guesses `hint` (a redirect's address)
    /// if it names a member, else the next member. A member's Raft knows
    /// better: nothing changes.
    pub fn missed(&self, id: NodeId, hint: Option<&str>) {
        let Leadership::Outside(g) = self else {
            return;
        };
        let n = g.members.len().max(1);
        let named = hint.and_then(|a| g.members.iter().position(|(_, addr)| addr == a));
        g.at.send_modify(|at| {
            if g.members.get(*at % n).map(|m| m.0) == Some(id) {
                *at = named.unwrap_or((*at + 1) % n);
            }
        });
    }
}
