//! Definition changes as commands: users, vhosts, permissions, limits,
//! policies, durable exchanges and the bindings between them.
//!
//! Every front end changes these through [`crate::Broker::submit`], which
//! either applies the command here at once (a single node) or hands its
//! bytes to the [`Replicator`] (a cluster: the metadata Raft group), whose
//! every node then applies it with [`apply`] — the one apply path. So a
//! command carries only facts that are the same on every node: a clear
//! text password is hashed before it becomes a command, a policy body is
//! validated into its definition, and checks that depend on the caller
//! (permissions, reserved names) are made by the front end before.
//!
//! Applying must be deterministic: the same command on the same
//! definitions gives the same result on every node. Applying a command a
//! second time changes nothing more (a node that crashed between applying
//! one and recording that it did applies it again at restart).

use crate::broker::PolicyChangeError;
use crate::policy::{PolicyDef, PolicyKind};
use crate::vhost::ExchangeArgs;
use crate::Broker;
use ferry_auth::{AccessDefs, PasswordSpec, Permissions};
use ferry_model::Table;
use ferry_queue::error::{CoreError, ErrorKind};
use ferry_queue::queue::QueueSpec;
use ferry_route::Destination;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// One change of the definitions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum DefCommand {
    /// Creates a vhost (nothing if it exists).
    AddVhost {
        /// Its name.
        name: String,
    },
    /// Deletes a vhost with everything in it.
    DeleteVhost {
        /// Its name.
        name: String,
    },
    /// Creates or replaces a user (its permissions stay).
    PutUser {
        /// Login name.
        name: String,
        /// RabbitMQ's base64 salted SHA-256 hash; None: no password.
        password_hash: Option<String>,
        /// Tags.
        tags: Vec<String>,
    },
    /// Deletes a user with its permissions and limits.
    DeleteUser {
        /// Login name.
        name: String,
    },
    /// Sets a user's permissions in a vhost.
    SetPermissions {
        /// User.
        user: String,
        /// Vhost.
        vhost: String,
        /// The three expressions.
        permissions: Permissions,
    },
    /// Removes a user's permissions in a vhost.
    ClearPermissions {
        /// User.
        user: String,
        /// Vhost.
        vhost: String,
    },
    /// Sets (value ≥ 0) or clears (None) a vhost limit.
    VhostLimit {
        /// Vhost.
        vhost: String,
        /// `max-connections` or `max-queues`.
        name: String,
        /// The limit; negative: no limit; None: cleared.
        value: Option<i64>,
    },
    /// Sets or clears (None) a user limit.
    UserLimit {
        /// User.
        user: String,
        /// `max-connections` or `max-channels`.
        name: String,
        /// The limit; None: cleared.
        value: Option<i64>,
    },
    /// Adds or replaces a validated policy.
    PutPolicy {
        /// Policy or operator policy.
        kind: PolicyKind,
        /// The policy.
        def: PolicyDef,
    },
    /// Deletes a policy.
    DeletePolicy {
        /// Policy or operator policy.
        kind: PolicyKind,
        /// Its vhost.
        vhost: String,
        /// Its name.
        name: String,
    },
    /// Imports users, vhosts, permissions and limits (passwords hashed).
    ImportAccess {
        /// The definitions.
        defs: AccessDefs,
    },
    /// Replaces a vhost's limits from a per-vhost definitions document.
    ImportVhostLimits {
        /// The vhost.
        vhost: String,
        /// The document's access part.
        defs: AccessDefs,
    },
    /// Declares a durable exchange.
    DeclareExchange {
        /// Vhost.
        vhost: String,
        /// Name.
        name: String,
        /// Type.
        kind: String,
        /// Deleted with its last binding.
        auto_delete: bool,
        /// Not publishable by clients.
        internal: bool,
        /// x-arguments.
        #[serde(with = "ferry_route::table_serde", default)]
        arguments: Table,
    },
    /// Deletes an exchange.
    DeleteExchange {
        /// Vhost.
        vhost: String,
        /// Name.
        name: String,
        /// Only when it has no bindings.
        if_unused: bool,
    },
    /// Declares a replicated queue (a cluster's quorum queue).
    DeclareReplicatedQueue {
        /// Vhost.
        vhost: String,
        /// Its declaration.
        spec: QueueSpec,
        /// Its group's id (chosen where it was declared).
        group: u64,
        /// The nodes that hold it.
        replicas: Vec<u64>,
    },
    /// Records the nodes a replicated queue's or stream's group now has
    /// (after a member was taken out: `crate::shrink`).
    SetReplicas {
        /// Vhost.
        vhost: String,
        /// Name.
        name: String,
        /// Its group's id (a queue of that name in another group is left
        /// alone).
        group: u64,
        /// Its nodes.
        replicas: Vec<u64>,
    },
    /// Deletes a replicated queue.
    DeleteReplicatedQueue {
        /// Vhost.
        vhost: String,
        /// Name.
        name: String,
    },
    /// Binds (or unbinds) a replicated queue to a durable exchange.
    BindQueue {
        /// Vhost.
        vhost: String,
        /// true: bind; false: unbind.
        bind: bool,
        /// Source exchange.
        source: String,
        /// The queue.
        queue: String,
        /// Binding key.
        routing_key: String,
        /// Binding arguments.
        #[serde(with = "ferry_route::table_serde", default)]
        arguments: Table,
    },
    /// Binds (or unbinds) one durable exchange to another.
    BindExchanges {
        /// Vhost.
        vhost: String,
        /// true: bind; false: unbind.
        bind: bool,
        /// Source exchange.
        source: String,
        /// Destination exchange.
        destination: String,
        /// Binding key.
        routing_key: String,
        /// Binding arguments.
        #[serde(with = "ferry_route::table_serde", default)]
        arguments: Table,
    },
}

/// Why a command was refused: the error of the layer that refused it.
#[derive(Debug, thiserror::Error)]
pub enum DefError {
    /// The core refused (unknown vhost, inequivalent exchange, ...).
    #[error(transparent)]
    Core(#[from] CoreError),
    /// A policy change was refused.
    #[error(transparent)]
    Policy(#[from] PolicyChangeError),
}

impl From<DefError> for CoreError {
    fn from(e: DefError) -> Self {
        match e {
            DefError::Core(e) | DefError::Policy(PolicyChangeError::Core(e)) => e,
            DefError::Policy(PolicyChangeError::NoVhost(v)) => {
                CoreError::request(ErrorKind::NotFound, format!("vhost {v} not found"))
            }
            DefError::Policy(e @ PolicyChangeError::NotFound) => {
                CoreError::request(ErrorKind::NotFound, e.to_string())
            }
            DefError::Policy(PolicyChangeError::Invalid(e)) => {
                CoreError::request(ErrorKind::CommandInvalid, e.to_string())
            }
        }
    }
}

impl From<DefError> for PolicyChangeError {
    fn from(e: DefError) -> Self {
        match e {
            DefError::Core(e) => PolicyChangeError::Core(e),
            DefError::Policy(e) => e,
        }
    }
}

impl DefCommand {
    /// A user change with its password hashed here (see the module docs).
    pub fn put_user(name: &str, password: PasswordSpec, tags: Vec<String>) -> Self {
        DefCommand::PutUser {
            name: name.to_string(),
            password_hash: match password.salted() {
                PasswordSpec::HashB64(h) => Some(h),
                _ => None,
            },
            tags,
        }
    }

    /// The command's bytes.
    pub fn encode(&self) -> Vec<u8> {
        // Serializing these types cannot fail (string keys, no maps with
        // other keys); an empty command is refused by `decode` anyway.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// A command from its bytes.
    pub fn decode(b: &[u8]) -> Result<Self, CoreError> {
        serde_json::from_slice(b)
            .map_err(|e| CoreError::Corrupt(format!("definition command: {e}")))
    }
}

/// What applying a command gave, as it travels back to the node that
/// proposed it.
#[derive(Debug, Serialize, Deserialize)]
enum Outcome {
    Done { replaced: bool },
    Refused { kind: ErrorKind, text: String },
    NoVhost(String),
    PolicyNotFound,
}

/// An apply result's bytes.
pub fn encode_result(r: &Result<bool, DefError>) -> Vec<u8> {
    let o = match r {
        Ok(replaced) => Outcome::Done {
            replaced: *replaced,
        },
        Err(DefError::Policy(PolicyChangeError::NoVhost(v))) => Outcome::NoVhost(v.clone()),
        Err(DefError::Policy(PolicyChangeError::NotFound)) => Outcome::PolicyNotFound,
        Err(DefError::Policy(PolicyChangeError::Invalid(e))) => Outcome::Refused {
            kind: ErrorKind::CommandInvalid,
            text: e.to_string(),
        },
        Err(DefError::Core(e) | DefError::Policy(PolicyChangeError::Core(e))) => Outcome::Refused {
            kind: e.kind(),
            text: e.to_string(),
        },
    };
    serde_json::to_vec(&o).unwrap_or_default()
}

/// An apply result from its bytes.
pub fn decode_result(b: &[u8]) -> Result<bool, DefError> {
    match serde_json::from_slice(b) {
        Ok(Outcome::Done { replaced }) => Ok(replaced),
        Ok(Outcome::Refused { kind, text }) => Err(CoreError::request(kind, text).into()),
        Ok(Outcome::NoVhost(v)) => Err(PolicyChangeError::NoVhost(v).into()),
        Ok(Outcome::PolicyNotFound) => Err(PolicyChangeError::NotFound.into()),
        Err(e) => Err(CoreError::Corrupt(format!("definition outcome: {e}")).into()),
    }
}

/// Carries definition commands to every node of a cluster.
pub trait Replicator: Send + Sync {
    /// Proposes a command's bytes and waits until this node applied it;
    /// returns the bytes of the result ([`encode_result`]). Blocks the
    /// calling thread (callers are on the blocking pool or in
    /// `block_in_place`).
    fn replicate(&self, command: Vec<u8>) -> Result<Vec<u8>, String>;
}

/// A shared replicator.
pub type SharedReplicator = Arc<dyn Replicator>;

/// Applies one command to this node's definitions (see the module docs);
/// true when a policy change replaced an existing policy.
pub fn apply(b: &Broker, cmd: &DefCommand) -> Result<bool, DefError> {
    match cmd {
        DefCommand::AddVhost { name } => {
            b.add_vhost(name)?;
        }
        DefCommand::DeleteVhost { name } => b.delete_vhost(name)?,
        DefCommand::PutUser {
            name,
            password_hash,
            tags,
        } => {
            let password = match password_hash {
                Some(h) => PasswordSpec::HashB64(h.clone()),
                None => PasswordSpec::NoPassword,
            };
            b.put_user(name, password, tags.clone())?
        }
        DefCommand::DeleteUser { name } => b.delete_user(name)?,
        DefCommand::SetPermissions {
            user,
            vhost,
            permissions,
        } => b.set_permissions(user, vhost, permissions.clone())?,
        DefCommand::ClearPermissions { user, vhost } => b.clear_permissions(user, vhost)?,
        DefCommand::VhostLimit { vhost, name, value } => match value {
            Some(n) => b.set_vhost_limit(vhost, name, *n)?,
            None => b.clear_vhost_limit(vhost, name)?,
        },
        DefCommand::UserLimit { user, name, value } => match value {
            Some(n) => b.set_user_limit(user, name, *n)?,
            None => b.clear_user_limit(user, name)?,
        },
        DefCommand::PutPolicy { kind, def } => return Ok(b.put_policy_def(*kind, def.clone())?),
        DefCommand::DeletePolicy { kind, vhost, name } => b.delete_policy(*kind, vhost, name)?,
        DefCommand::ImportAccess { defs } => b.import_access(defs)?,
        DefCommand::ImportVhostLimits { vhost, defs } => b.import_vhost_limits(vhost, defs)?,
        DefCommand::DeclareExchange {
            vhost,
            name,
            kind,
            auto_delete,
            internal,
            arguments,
        } => b.vhost(vhost)?.declare_exchange(
            name,
            kind,
            false,
            ExchangeArgs {
                durable: true,
                auto_delete: *auto_delete,
                internal: *internal,
                arguments: arguments.clone(),
            },
        )?,
        DefCommand::DeleteExchange {
            vhost,
            name,
            if_unused,
        } => b.vhost(vhost)?.delete_exchange(name, *if_unused)?,
        DefCommand::DeclareReplicatedQueue {
            vhost,
            spec,
            group,
            replicas,
        } => b
            .vhost(vhost)?
            .declare_replicated(spec.clone(), *group, replicas.clone())?,
        DefCommand::SetReplicas {
            vhost,
            name,
            group,
            replicas,
        } => b.vhost(vhost)?.set_replicas(name, *group, replicas)?,
        DefCommand::DeleteReplicatedQueue { vhost, name } => {
            let v = b.vhost(vhost)?;
            let group = v.replicated_group(name);
            v.delete_queue(name, false, false, 0)?;
            if let Some(g) = group {
                b.replicas().remove(g);
            }
        }
        DefCommand::BindQueue {
            vhost,
            bind,
            source,
            queue,
            routing_key,
            arguments,
        } => b.vhost(vhost)?.binding(
            *bind,
            source,
            Destination::Queue(Arc::from(queue.as_str())),
            routing_key,
            arguments.clone(),
            0,
        )?,
        DefCommand::BindExchanges {
            vhost,
            bind,
            source,
            destination,
            routing_key,
            arguments,
        } => b.vhost(vhost)?.binding(
            *bind,
            source,
            Destination::Exchange(Arc::from(destination.as_str())),
            routing_key,
            arguments.clone(),
            0,
        )?,
    }
    Ok(false)
}

/// exchange.declare (not passive) as a front end makes it: a durable
/// exchange is a definition ([`DefCommand::DeclareExchange`], cluster-wide
/// in a cluster); a transient one lives on this node only.
pub fn declare_exchange(
    b: &Broker,
    vhost: &crate::VHost,
    name: &str,
    kind: &str,
    args: ExchangeArgs,
) -> Result<(), CoreError> {
    if !args.durable {
        return vhost.declare_exchange(name, kind, false, args);
    }
    b.change(DefCommand::DeclareExchange {
        vhost: vhost.name().to_string(),
        name: name.to_string(),
        kind: kind.to_string(),
        auto_delete: args.auto_delete,
        internal: args.internal,
        arguments: args.arguments,
    })
}

/// exchange.delete as a front end makes it (see [`declare_exchange`]).
pub fn delete_exchange(
    b: &Broker,
    vhost: &crate::VHost,
    name: &str,
    if_unused: bool,
) -> Result<(), CoreError> {
    if vhost.exchange_durable(name) == Some(false) {
        return vhost.delete_exchange(name, if_unused);
    }
    b.change(DefCommand::DeleteExchange {
        vhost: vhost.name().to_string(),
        name: name.to_string(),
        if_unused,
    })
}

/// A binding (`bind`) or unbinding as a front end makes it: between two
/// durable exchanges it is a definition ([`DefCommand::BindExchanges`]);
/// a binding to a queue, or with a transient end, is this node's (queues
/// are not replicated yet).
pub fn binding(
    b: &Broker,
    vhost: &crate::VHost,
    bind: bool,
    (source, destination): (&str, Destination),
    routing_key: &str,
    arguments: Table,
    conn: u64,
) -> Result<(), CoreError> {
    let durable = |x: &str| vhost.exchange_durable(x) == Some(true);
    match destination {
        Destination::Exchange(d) if durable(source) && durable(&d) => {
            b.change(DefCommand::BindExchanges {
                vhost: vhost.name().to_string(),
                bind,
                source: source.to_string(),
                destination: d.to_string(),
                routing_key: routing_key.to_string(),
                arguments,
            })
        }
        Destination::Queue(q) if durable(source) && vhost.replicated_group(&q).is_some() => b
            .change(DefCommand::BindQueue {
                vhost: vhost.name().to_string(),
                bind,
                source: source.to_string(),
                queue: q.to_string(),
                routing_key: routing_key.to_string(),
                arguments,
            }),
        d => vhost.binding(bind, source, d, routing_key, arguments, conn),
    }
}

/// Whether queue.declare of `spec` makes a replicated queue, while this
/// node runs replicated groups (a cluster): a durable, non-exclusive quorum
/// queue, or a durable classic queue that is not auto-delete (whose
/// deletion would depend on consumers of every node), or a stream.
/// Exclusive, non-durable and auto-delete queues stay on the node they
/// were declared on.
fn replicated(b: &Broker, spec: &QueueSpec) -> bool {
    let kind = spec
        .arguments
        .get("x-queue-type")
        .and_then(|v| v.as_str_bytes());
    let replicable = match kind {
        Some(b"quorum") | Some(b"stream") => true,
        None | Some(b"classic") => !spec.auto_delete,
        Some(_) => false,
    };
    spec.durable
        && spec.exclusive_owner.is_none()
        && !spec.name.is_empty()
        && b.replicas().active()
        && replicable
}

/// The nodes of a new replicated queue: the host's placement, cut to
/// `x-quorum-initial-group-size` (a stream: `x-initial-cluster-size`)
/// when the declaration gives one (at least one node: this one).
fn placement(b: &Broker, spec: &QueueSpec) -> Vec<u64> {
    let mut nodes = b.replicas().placement();
    let key = match ferry_queue::stream::StreamArgs::is_stream(&spec.arguments) {
        true => "x-initial-cluster-size",
        false => "x-quorum-initial-group-size",
    };
    let wanted = spec
        .arguments
        .get(key)
        .and_then(|v| v.as_i64())
        .and_then(|n| usize::try_from(n).ok())
        .filter(|n| *n >= 1);
    if let Some(n) = wanted {
        nodes.truncate(n);
    }
    nodes
}

/// queue.declare as a front end makes it: a replicated queue is declared
/// through the definitions (every node of its group opens its replica),
/// then answered from this node's replica. Returns (name, ready
/// messages, consumers).
pub fn declare_queue(
    b: &Broker,
    vhost: &crate::VHost,
    spec: QueueSpec,
    passive: bool,
    conn: u64,
) -> Result<(Arc<str>, u32, u32), CoreError> {
    if !passive && replicated(b, &spec) && !vhost.has_queue_name(&spec.name) {
        b.change(DefCommand::DeclareReplicatedQueue {
            vhost: vhost.name().to_string(),
            spec: spec.clone(),
            group: rand::random::<u64>(),
            replicas: placement(b, &spec),
        })?;
    }
    vhost.declare_queue(spec, passive, conn)
}

/// queue.delete as a front end makes it: a replicated queue through the
/// definitions (its `if-unused` / `if-empty` checked here first).
pub fn delete_queue(
    b: &Broker,
    vhost: &crate::VHost,
    name: &str,
    (if_unused, if_empty): (bool, bool),
    conn: u64,
) -> Result<u32, CoreError> {
    if vhost.replicated_group(name).is_none() || !b.replicas().active() {
        return vhost.delete_queue(name, if_unused, if_empty, conn);
    }
    let ready = match vhost.queue_ref(name) {
        Some(ferry_queue::source::QueueRef::Stream(s)) => {
            vhost.check_stream_deletable(&s, if_unused)?;
            0
        }
        _ => {
            let q = vhost.queue_for(name, conn)?;
            vhost.check_deletable(&q, (if_unused, if_empty), conn)?;
            q.counts().0
        }
    };
    b.change(DefCommand::DeleteReplicatedQueue {
        vhost: vhost.name().to_string(),
        name: name.to_string(),
    })?;
    Ok(ready)
}
