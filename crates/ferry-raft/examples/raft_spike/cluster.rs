//! Three nodes × G groups in one process: setup, initial election, lookups.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_raft::{NodeId, TypeConfig};
use openraft::{BasicNode, Config, ServerState};

use crate::mem::{DurabilityRound, FlushMode, MemLogStore, MemStateMachine};
use crate::network::Router;
use crate::SpikeError;

/// Identifies one Raft group across the nodes (as in ferry-cluster's frames).
pub type GroupId = u64;

/// A Raft instance of ferry-raft's type configuration.
pub type Raft = openraft::Raft<TypeConfig>;

/// The three nodes.
pub const NODES: [NodeId; 3] = [1, 2, 3];

/// Timer settings shared by every group.
#[derive(clap::Args, Debug, Clone)]
pub struct TimerArgs {
    /// openraft `heartbeat_interval` (the tick fires every 1.5×).
    #[arg(long, default_value_t = 500)]
    pub heartbeat_ms: u64,
    /// Election timeout range "MIN-MAX" in ms; default 150-300 for a 50 ms
    /// heartbeat (openraft's defaults), else 4×-8× the heartbeat.
    #[arg(long)]
    pub election_ms: Option<String>,
    /// Quiescent groups: tick, heartbeats and elections off
    /// (`runtime_config().tick/heartbeat/elect(false)` from the start);
    /// elections only by `trigger().elect()`.
    #[arg(long)]
    pub quiescent: bool,
}

/// Resolved timers.
#[derive(Debug, Clone, Copy)]
pub struct Timers {
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    pub quiescent: bool,
}

impl Timers {
    pub fn from_args(args: &TimerArgs) -> Result<Self, SpikeError> {
        let hb = args.heartbeat_ms;
        let (min, max) = match &args.election_ms {
            Some(range) => {
                let bad = || SpikeError::Arg(format!("--election-ms {range}: want MIN-MAX"));
                let (a, b) = range.split_once('-').ok_or_else(bad)?;
                (
                    a.trim().parse().map_err(|_| bad())?,
                    b.trim().parse().map_err(|_| bad())?,
                )
            }
            None if hb == 50 => (150, 300),
            None => (4 * hb, 8 * hb),
        };
        Ok(Self {
            heartbeat_ms: hb,
            election_min_ms: min,
            election_max_ms: max,
            quiescent: args.quiescent,
        })
    }

    /// "heartbeat / election min-max", e.g. "500 / 2000-4000".
    pub fn label(&self) -> String {
        format!(
            "{} / {}-{}",
            self.heartbeat_ms, self.election_min_ms, self.election_max_ms
        )
    }

    fn config(&self) -> Result<Config, SpikeError> {
        let config = Config {
            cluster_name: "spike".to_string(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_min_ms,
            election_timeout_max: self.election_max_ms,
            enable_tick: !self.quiescent,
            enable_heartbeat: !self.quiescent,
            enable_elect: !self.quiescent,
            ..Config::default()
        };
        Ok(config.validate()?)
    }
}

/// How log appends become "durable".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushSpec {
    /// Callback before `append` returns.
    Immediate,
    /// Callback from a tokio task after this many µs (1 ms timer granularity).
    Task(u64),
    /// Callback at the end of a node-level round that sleeps this many µs.
    Round(u64),
}

impl FlushSpec {
    pub fn parse(s: &str) -> Result<Self, String> {
        let micros = |v: &str| v.parse::<u64>().map_err(|e| format!("{s}: {e}"));
        match s.split_once(':') {
            None if s == "immediate" => Ok(Self::Immediate),
            Some(("task", v)) => Ok(Self::Task(micros(v)?)),
            Some(("round", v)) => Ok(Self::Round(micros(v)?)),
            _ => Err(format!("{s}: want immediate, task:<µs> or round:<µs>")),
        }
    }

    pub fn label(&self) -> String {
        match self {
            Self::Immediate => "immediate".to_string(),
            Self::Task(us) => format!("task:{us}µs"),
            Self::Round(us) => format!("round:{us}µs"),
        }
    }
}

/// One group: its replica on each node, in [`NODES`] order.
pub struct Group {
    pub id: GroupId,
    pub rafts: Vec<Raft>,
}

/// All groups on all nodes.
pub struct Cluster {
    pub router: Arc<Router>,
    pub groups: Vec<Group>,
    pub rounds: Vec<DurabilityRound>,
}

/// Index of `node` in [`NODES`].
pub fn node_index(node: NodeId) -> usize {
    NODES.iter().position(|n| *n == node).unwrap_or(0)
}

impl Cluster {
    /// Create G groups × 3 replicas (not yet initialised).
    pub async fn start(groups: u64, timers: Timers, flush: FlushSpec) -> Result<Self, SpikeError> {
        let config = Arc::new(timers.config()?);
        let router = Router::new(NODES);
        let mut rounds = Vec::new();
        if let FlushSpec::Round(us) = flush {
            for node in NODES {
                let round = DurabilityRound::start(&format!("n{node}"), Duration::from_micros(us))?;
                rounds.push(round);
            }
        }
        let flush_mode = |i: usize| match flush {
            FlushSpec::Immediate => FlushMode::Immediate,
            FlushSpec::Task(us) => FlushMode::Delayed(Duration::from_micros(us)),
            FlushSpec::Round(_) => rounds
                .get(i)
                .cloned()
                .map_or(FlushMode::Immediate, FlushMode::Round),
        };
        let mut all = Vec::new();
        for g in 0..groups {
            let mut rafts = Vec::with_capacity(NODES.len());
            for (i, node) in NODES.into_iter().enumerate() {
                let log = MemLogStore::new(flush_mode(i));
                let network = router.factory(node, g);
                let raft = Raft::new(
                    node,
                    config.clone(),
                    network,
                    log,
                    MemStateMachine::default(),
                )
                .await?;
                router.register(node, g, raft.clone())?;
                rafts.push(raft);
            }
            all.push(Group { id: g, rafts });
        }
        Ok(Self {
            router,
            groups: all,
            rounds,
        })
    }

    /// The node that initialises (and so first leads) group `g`: g % 3 + 1.
    pub fn initial_leader(g: GroupId) -> NodeId {
        NODES[(g % NODES.len() as u64) as usize]
    }

    /// Initialise every group with members {1, 2, 3} on its initial leader.
    pub async fn initialize(&self) -> Result<(), SpikeError> {
        let members: BTreeMap<NodeId, BasicNode> = NODES
            .iter()
            .map(|n| (*n, BasicNode::new(format!("127.0.0.{n}:7000"))))
            .collect();
        for group in &self.groups {
            let node = Self::initial_leader(group.id);
            group.rafts[node_index(node)]
                .initialize(members.clone())
                .await?;
        }
        Ok(())
    }

    /// Wait until every replica of every group knows a leader.
    pub async fn wait_leaders(&self, timeout: Duration) -> Result<Duration, SpikeError> {
        let started = Instant::now();
        loop {
            let missing = self
                .groups
                .iter()
                .flat_map(|g| g.rafts.iter())
                .filter(|r| r.metrics().borrow().current_leader.is_none())
                .count();
            if missing == 0 {
                return Ok(started.elapsed());
            }
            if started.elapsed() > timeout {
                return Err(SpikeError::Timeout(format!(
                    "{missing} replicas still without a leader after {timeout:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The replica of `group` on a node not marked down that is Leader.
    pub fn live_leader(&self, group: &Group) -> Option<(NodeId, Raft)> {
        NODES.iter().zip(&group.rafts).find_map(|(node, raft)| {
            let is_leader = raft.metrics().borrow().state == ServerState::Leader;
            (is_leader && !self.router.is_down(*node)).then(|| (*node, raft.clone()))
        })
    }

    /// Leaders per node, in [`NODES`] order.
    pub fn leaders_per_node(&self) -> Vec<usize> {
        let mut per = vec![0; NODES.len()];
        for group in &self.groups {
            if let Some((node, _)) = self.live_leader(group) {
                per[node_index(node)] += 1;
            }
        }
        per
    }

    /// Sum over groups of the highest term any replica has seen.
    pub fn term_sum(&self) -> u64 {
        self.groups
            .iter()
            .map(|g| {
                g.rafts
                    .iter()
                    .map(|r| r.metrics().borrow().current_term)
                    .max()
                    .unwrap_or(0)
            })
            .sum()
    }

    /// Number of Raft instances.
    pub fn instances(&self) -> usize {
        self.groups.len() * NODES.len()
    }

    /// Stop the durability round threads (the Raft tasks die with the runtime).
    pub fn stop_rounds(&self) {
        for round in &self.rounds {
            round.stop();
        }
    }
}
