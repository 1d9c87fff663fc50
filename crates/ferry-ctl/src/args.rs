//! The `ferry ctl` command line (clap).

use clap::{Args, Subcommand, ValueEnum};
use std::path::PathBuf;

/// `ferry ctl`: manage a Ferry (or RabbitMQ) node through its management HTTP API.
///
/// Connection options (`--url`, `-u`, `-p`, TLS, timeout) go before the
/// command, so that `add user NAME --password P` and `set permissions
/// --user U` keep their own flags; `--json` and `--vhost` go anywhere.
#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Connection options (--url, -u, -p, --timeout, --cacert, --insecure) go \
before the command; --json and --vhost go anywhere.\n\
Exit codes: 0 ok, 1 refused by the API (4xx/5xx) or a local file problem, 2 usage, \
3 node unreachable."
)]
pub struct CtlArgs {
    /// Management API base URL.
    #[arg(long, env = "FERRY_URL", default_value = "http://127.0.0.1:15672")]
    pub url: String,
    /// User name.
    #[arg(short = 'u', long, env = "FERRY_USER", default_value = "guest")]
    pub user: String,
    /// Password.
    #[arg(
        short = 'p',
        long,
        env = "FERRY_PASSWORD",
        default_value = "guest",
        hide_default_value = true,
        hide_env_values = true
    )]
    pub password: String,
    /// Print the API's JSON instead of tables and messages.
    #[arg(long, global = true)]
    pub json: bool,
    /// Virtual host [default: "/"; `list`, `export` and `import` cover every vhost unless given].
    #[arg(long, global = true)]
    pub vhost: Option<String>,
    /// Request timeout, seconds.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
    /// PEM CA certificates to trust for an https:// URL.
    #[arg(long)]
    pub cacert: Option<PathBuf>,
    /// Do not verify the server's TLS certificate.
    #[arg(long)]
    pub insecure: bool,
    #[command(subcommand)]
    pub command: CtlCommand,
}

impl CtlArgs {
    /// The vhost for commands that address one object.
    #[must_use]
    pub fn vhost(&self) -> &str {
        self.vhost.as_deref().unwrap_or("/")
    }
}

#[derive(Debug, Clone, Subcommand)]
pub enum CtlCommand {
    /// List objects as a table (`--json`: the API's JSON).
    List {
        #[arg(value_enum)]
        what: ListWhat,
    },
    /// Node summary: versions, object and message totals.
    Overview,
    /// Runs a health check of the node (`/api/health/checks/CHECK`, as
    /// `rabbitmq-diagnostics`): exit 0 when it passes, 1 when it fails
    /// (with the reason), 3 when the node does not answer.
    Health {
        /// The check: `alarms`, `local-alarms`, `node-is-quorum-critical`.
        #[arg(default_value = "alarms")]
        check: String,
    },
    /// The cluster: its members as the node at --url sees them.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Replicated queues' and streams' members (RabbitMQ's `rabbitmq-queues`).
    #[command(subcommand)]
    Queues(QueuesCmd),
    /// Declare a queue, an exchange or a binding.
    #[command(subcommand)]
    Declare(Declare),
    /// Delete a queue, exchange, binding, user, vhost, or close a connection.
    #[command(subcommand)]
    Delete(Delete),
    /// Drop every ready message of a queue.
    #[command(subcommand)]
    Purge(Purge),
    /// Publish one message (payload from --payload or stdin).
    Publish(PublishArgs),
    /// Fetch messages from a queue (basic.get).
    Get(GetArgs),
    /// Create (or update) a user or a vhost.
    #[command(subcommand)]
    Add(Add),
    /// Set a user's permissions, a policy or an operator policy on a vhost,
    /// or a vhost / user limit.
    #[command(subcommand)]
    Set(Set),
    /// Remove a user's permissions, a policy or an operator policy on a
    /// vhost, or a vhost / user limit.
    #[command(subcommand)]
    Clear(Clear),
    /// Write the definitions (users, vhosts, permissions, queues, exchanges, bindings) as JSON.
    Export {
        /// File to write, or "-" for stdout.
        file: String,
    },
    /// Load definitions JSON (as written by `export` or RabbitMQ).
    Import {
        /// File to read, or "-" for stdin.
        file: String,
    },
}

#[derive(Debug, Clone, Subcommand)]
pub enum ClusterCmd {
    /// Every member: name, running, voter, metadata leader, address and the
    /// members it cannot reach. Exits 1 when a member is not running.
    Status,
    /// Spread the leaders of replicated queues and streams evenly over the
    /// nodes (RabbitMQ's `rabbitmq-queues rebalance`; `POST
    /// /api/rebalance/queues`).
    Rebalance,
    /// Remove a stopped member (by node name or cluster address) from the
    /// cluster, and from every replicated queue's and stream's group.
    Forget {
        /// Node name or cluster address.
        node: String,
    },
    /// The node at --url leaves the cluster (RabbitMQ's `stop_app` +
    /// `reset`): it hands its leaderships over, leaves every queue's and
    /// stream's group and the cluster, then stops (`POST /api/cluster/leave`).
    Leave,
    /// The node at --url, a cluster of one, joins the cluster of the node
    /// whose cluster address is NODE (RabbitMQ's `join_cluster`): it resets
    /// its data directory (its definitions and messages are gone), starts
    /// again and joins; waits until it is a member (`POST /api/cluster/join`).
    Join {
        /// HOST:PORT: a running node's cluster address (its cluster_listen).
        node: String,
        /// Seconds to wait for the node to be a member again.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
}

#[derive(Debug, Clone, Subcommand)]
pub enum QueuesCmd {
    /// Add a replica on NODE to every replicated queue and stream that has
    /// none there (`POST /api/queues/quorum/replicas/on/{node}/grow`).
    Grow {
        /// Node name.
        node: String,
        /// Only those with an even number of replicas (RabbitMQ's `even`).
        #[arg(long)]
        even: bool,
    },
    /// Remove NODE's replica from every replicated queue and stream
    /// (`DELETE /api/queues/quorum/replicas/on/{node}/shrink`).
    Shrink {
        /// Node name.
        node: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ListWhat {
    Queues,
    Exchanges,
    Bindings,
    Connections,
    Channels,
    Consumers,
    Users,
    Vhosts,
    Permissions,
    /// Vhost limits (`--vhost` for one vhost).
    VhostLimits,
    /// User limits.
    UserLimits,
    /// Policies (`--vhost` for one vhost).
    Policies,
    /// Operator policies (`--vhost` for one vhost).
    OperatorPolicies,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Declare {
    /// Declare a queue.
    Queue {
        name: String,
        /// Survive a broker restart.
        #[arg(long)]
        durable: bool,
        /// Delete when the last consumer goes.
        #[arg(long)]
        auto_delete: bool,
        /// Queue argument KEY=VALUE (repeatable; VALUE is read as JSON when it parses, e.g.
        /// x-max-length=10, else as a string).
        #[arg(long = "arg", value_name = "KEY=VALUE")]
        args: Vec<String>,
    },
    /// Declare an exchange.
    Exchange {
        name: String,
        /// direct, fanout, topic or headers.
        #[arg(long = "type", default_value = "direct")]
        kind: String,
        #[arg(long)]
        durable: bool,
        #[arg(long)]
        auto_delete: bool,
        /// Only exchanges may publish to it.
        #[arg(long)]
        internal: bool,
        #[arg(long = "arg", value_name = "KEY=VALUE")]
        args: Vec<String>,
    },
    /// Bind a queue (or exchange) to an exchange.
    Binding(BindingArgs),
}

#[derive(Debug, Clone, Args)]
pub struct BindingArgs {
    /// Source exchange.
    #[arg(long)]
    pub source: String,
    /// Destination queue or exchange.
    #[arg(long)]
    pub destination: String,
    #[arg(long, value_enum, default_value = "queue")]
    pub destination_type: DestinationType,
    #[arg(long, default_value = "")]
    pub routing_key: String,
    /// Binding argument KEY=VALUE (repeatable).
    #[arg(long = "arg", value_name = "KEY=VALUE")]
    pub args: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DestinationType {
    Queue,
    Exchange,
}

impl DestinationType {
    /// The API's path letter and JSON word.
    #[must_use]
    pub fn letter(self) -> &'static str {
        match self {
            DestinationType::Queue => "q",
            DestinationType::Exchange => "e",
        }
    }

    #[must_use]
    pub fn word(self) -> &'static str {
        match self {
            DestinationType::Queue => "queue",
            DestinationType::Exchange => "exchange",
        }
    }
}

#[derive(Debug, Clone, Subcommand)]
pub enum Delete {
    Queue {
        name: String,
        /// Refuse if the queue has messages.
        #[arg(long)]
        if_empty: bool,
        /// Refuse if the queue has consumers.
        #[arg(long)]
        if_unused: bool,
    },
    Exchange {
        name: String,
    },
    Binding(BindingArgs),
    User {
        name: String,
    },
    Vhost {
        name: String,
    },
    /// Close a connection (its name as `list connections` shows it).
    Connection {
        name: String,
    },
}

#[derive(Debug, Clone, Subcommand)]
pub enum Purge {
    Queue { name: String },
}

#[derive(Debug, Clone, Args)]
pub struct PublishArgs {
    /// Exchange ("" or amq.default: the default exchange).
    #[arg(long, default_value = "")]
    pub exchange: String,
    #[arg(long, default_value = "")]
    pub routing_key: String,
    /// Message body; read from stdin when absent.
    #[arg(long)]
    pub payload: Option<String>,
    /// delivery_mode 2.
    #[arg(long)]
    pub persistent: bool,
    #[arg(long)]
    pub content_type: Option<String>,
    /// Header KEY=VALUE (repeatable).
    #[arg(long = "header", value_name = "KEY=VALUE")]
    pub headers: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct GetArgs {
    #[arg(long)]
    pub queue: String,
    /// Most messages to fetch.
    #[arg(long, default_value_t = 1)]
    pub count: u32,
    /// Put the messages back (redelivered) instead of removing them.
    #[arg(long)]
    pub requeue: bool,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Add {
    User {
        name: String,
        #[arg(long)]
        password: String,
        /// Comma-separated tags, e.g. administrator or management.
        #[arg(long, default_value = "")]
        tags: String,
    },
    Vhost {
        name: String,
    },
}

/// What `set policy` / `set operator-policy` send (rabbitmqctl's
/// `set_policy NAME PATTERN DEFINITION [--priority N] [--apply-to X]`).
#[derive(Debug, Clone, Args)]
pub struct PolicyArgs {
    /// Policy name.
    pub name: String,
    /// Regular expression matched against queue / exchange names.
    pub pattern: String,
    /// The definition, a JSON object, e.g. '{"max-length":1000}'.
    pub definition: String,
    /// Higher wins when several policies match.
    #[arg(long, default_value_t = 0)]
    pub priority: i64,
    /// queues, exchanges or all (RabbitMQ 4 also: classic_queues, quorum_queues, streams).
    #[arg(long, default_value = "all")]
    pub apply_to: String,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Set {
    /// A policy on --vhost (rabbitmqctl set_policy).
    #[command(alias = "policies")]
    Policy(PolicyArgs),
    /// An operator policy on --vhost (rabbitmqctl set_operator_policy).
    #[command(alias = "operator-policies")]
    OperatorPolicy(PolicyArgs),
    /// Regular expressions for configure, write and read access on --vhost.
    Permissions {
        #[arg(long)]
        user: String,
        #[arg(long)]
        configure: String,
        #[arg(long)]
        write: String,
        #[arg(long)]
        read: String,
    },
    /// A limit of --vhost: max-connections or max-queues (negative: no limit).
    VhostLimits {
        name: String,
        #[arg(allow_negative_numbers = true)]
        value: i64,
    },
    /// A limit of a user: max-connections or max-channels (negative: no limit).
    UserLimits {
        #[arg(long)]
        user: String,
        name: String,
        #[arg(allow_negative_numbers = true)]
        value: i64,
    },
}

#[derive(Debug, Clone, Subcommand)]
pub enum Clear {
    /// Delete a policy on --vhost (rabbitmqctl clear_policy).
    #[command(alias = "policies")]
    Policy { name: String },
    /// Delete an operator policy on --vhost.
    #[command(alias = "operator-policies")]
    OperatorPolicy { name: String },
    Permissions {
        #[arg(long)]
        user: String,
    },
    /// Remove a limit of --vhost.
    VhostLimits { name: String },
    /// Remove a limit of a user.
    UserLimits {
        #[arg(long)]
        user: String,
        name: String,
    },
}
