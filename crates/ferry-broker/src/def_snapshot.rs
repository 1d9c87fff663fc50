//! The node's replicated definitions as a snapshot, and converging to one.
//!
//! A cluster's metadata group cuts its log behind a snapshot; a node that
//! is behind the cut installs the snapshot instead of the commands it
//! missed. The snapshot is the list of [`DefCommand`]s that rebuild every
//! replicated definition ([`export`]): vhosts, users, permissions, user
//! limits, policies and operator policies, durable exchanges, replicated
//! queues and streams, the bindings between those, vhost limits.
//! [`converge`] makes a node's definitions equal to such a list by
//! applying the difference — only through [`command::apply`], the one
//! apply path. [`encode`] / [`decode`] are its bytes
//! (`docs/definitions-snapshot.md`).
//!
//! Owns the canonical order and the diff. Must not touch node-local things
//! (transient exchanges, non-replicated queues and their bindings: not in
//! the list, never removed by converging, although a deleted exchange or
//! vhost takes its node-local bindings and queues with it, as the command
//! would), nor change anything other than through `command::apply`.
//!
//! Canonical order (dependencies first; within a kind sorted, so equal
//! definitions export equal lists): vhosts, users, permissions, user
//! limits, policies, operator policies, exchanges, replicated queues and
//! streams, bindings (by vhost and source exchange, each source's in the
//! order it stores them: a consistent-hash ring is its binding order, so
//! its exchange and queue bindings are not split), vhost limits last (a
//! `max-queues` below a vhost's queue count must not refuse its queues, as
//! the per-vhost definitions import applies them last too).

use crate::command::{self, DefCommand};
use crate::definitions::BindingDef;
use crate::policy::PolicyKind;
use crate::Broker;
use ferry_auth::{AccessDefs, User, UserDef};
use ferry_queue::error::CoreError;
use ferry_route::{Destination, ExchangeKind};
use std::collections::{HashMap, HashSet};

const MAGIC: &[u8; 8] = b"FRYDEFS1";

/// The node's replicated definitions as the commands that, applied in
/// order to a broker without definitions, rebuild them (module docs).
pub fn export(b: &Broker) -> Vec<DefCommand> {
    let mut out = Vec::new();
    let vhosts = b.vhost_names();
    for name in &vhosts {
        out.push(DefCommand::AddVhost { name: name.clone() });
    }
    let users = b.users().list();
    out.extend(users.into_iter().map(user_command));
    for (user, vhost, permissions) in b.permissions() {
        out.push(DefCommand::SetPermissions {
            user,
            vhost,
            permissions,
        });
    }
    for (user, limits) in b.user_limits() {
        for (name, value) in limits {
            out.push(DefCommand::UserLimit {
                user: user.clone(),
                name,
                value: Some(value),
            });
        }
    }
    for kind in [PolicyKind::Policy, PolicyKind::Operator] {
        for def in b.list_policies(kind) {
            out.push(DefCommand::PutPolicy { kind, def });
        }
    }
    let topology: Vec<_> = vhosts
        .iter()
        .filter_map(|n| Some((n, b.vhost(n).ok()?.replicated_definitions())))
        .collect();
    for (vhost, d) in &topology {
        for x in &d.exchanges {
            out.push(DefCommand::DeclareExchange {
                vhost: vhost.to_string(),
                name: x.name.clone(),
                kind: x.kind.clone(),
                auto_delete: x.auto_delete,
                internal: x.internal,
                arguments: x.arguments.clone(),
            });
        }
    }
    for (vhost, d) in &topology {
        for q in &d.queues {
            out.push(DefCommand::DeclareReplicatedQueue {
                vhost: vhost.to_string(),
                spec: q.spec.clone(),
                group: q.group,
                replicas: q.replicas.clone(),
            });
        }
    }
    for (vhost, d) in &topology {
        out.extend(d.bindings.iter().map(|x| bind_command(vhost, x)));
    }
    for (vhost, limits) in b.vhost_limits() {
        for (name, value) in limits {
            out.push(DefCommand::VhostLimit {
                vhost: vhost.clone(),
                name,
                value: Some(value),
            });
        }
    }
    out
}

/// A user as the command that stores it again as it is: `PutUser` for a
/// SHA-256 hash (what Ferry writes) or none; a SHA-512 hash imported from
/// RabbitMQ keeps its algorithm only through a one-user `ImportAccess`.
fn user_command(u: User) -> DefCommand {
    let hash = u.password_hash_b64();
    let algorithm = u.hashing_algorithm();
    if !hash.is_empty() && algorithm != ferry_auth::hash::SHA256 {
        let user = UserDef {
            name: u.name,
            password_hash: hash,
            password: None,
            hashing_algorithm: algorithm.to_string(),
            tags: u.tags,
            // Limits travel as `UserLimit`s (an entry without limits
            // leaves the user's as they are).
            limits: Default::default(),
        };
        let defs = AccessDefs {
            users: vec![user],
            ..AccessDefs::default()
        };
        return DefCommand::ImportAccess { defs };
    }
    DefCommand::PutUser {
        name: u.name,
        password_hash: (!hash.is_empty()).then_some(hash),
        tags: u.tags,
    }
}

fn bind_command(vhost: &str, b: &BindingDef) -> DefCommand {
    match &b.destination {
        Destination::Queue(q) => DefCommand::BindQueue {
            vhost: vhost.to_string(),
            bind: true,
            source: b.source.clone(),
            queue: q.to_string(),
            routing_key: b.routing_key.clone(),
            arguments: b.arguments.clone(),
        },
        Destination::Exchange(e) => DefCommand::BindExchanges {
            vhost: vhost.to_string(),
            bind: true,
            source: b.source.clone(),
            destination: e.to_string(),
            routing_key: b.routing_key.clone(),
            arguments: b.arguments.clone(),
        },
    }
}

/// What a command defines: two commands with the same key define the
/// same thing (a binding is all of its fields).
#[derive(Debug, PartialEq, Eq, Hash)]
enum Key<'a> {
    Vhost(&'a str),
    User(&'a str),
    Permissions(&'a str, &'a str),
    VhostLimit(&'a str, &'a str),
    UserLimit(&'a str, &'a str),
    /// (operator policy, vhost, name).
    Policy(bool, &'a str, &'a str),
    Exchange(&'a str, &'a str),
    Queue(&'a str, &'a str),
    /// (vhost, source, the command's bytes).
    Binding(&'a str, &'a str, Vec<u8>),
    /// Nothing an export makes: the command's bytes.
    Other(Vec<u8>),
}

/// The user a one-user `ImportAccess` (as [`user_command`] makes) stores.
fn imported_user(defs: &AccessDefs) -> Option<&str> {
    match (&defs.users[..], &defs.vhosts[..], &defs.permissions[..]) {
        ([u], [], []) if defs.parameters.is_empty() => Some(&u.name),
        _ => None,
    }
}

fn key(c: &DefCommand) -> Key<'_> {
    match c {
        DefCommand::AddVhost { name } => Key::Vhost(name),
        DefCommand::PutUser { name, .. } => Key::User(name),
        DefCommand::ImportAccess { defs } => match imported_user(defs) {
            Some(name) => Key::User(name),
            None => Key::Other(c.encode()),
        },
        DefCommand::SetPermissions { user, vhost, .. } => Key::Permissions(user, vhost),
        DefCommand::VhostLimit { vhost, name, .. } => Key::VhostLimit(vhost, name),
        DefCommand::UserLimit { user, name, .. } => Key::UserLimit(user, name),
        DefCommand::PutPolicy { kind, def } => {
            Key::Policy(*kind == PolicyKind::Operator, &def.vhost, &def.name)
        }
        DefCommand::DeclareExchange { vhost, name, .. } => Key::Exchange(vhost, name),
        DefCommand::DeclareReplicatedQueue { vhost, spec, .. } => Key::Queue(vhost, &spec.name),
        DefCommand::BindQueue { vhost, source, .. }
        | DefCommand::BindExchanges { vhost, source, .. } => {
            Key::Binding(vhost, source, c.encode())
        }
        _ => Key::Other(c.encode()),
    }
}

/// A command's name and what it names, for logs (never a password hash).
fn label(c: &DefCommand) -> String {
    match key(c) {
        Key::Binding(vhost, source, _) => format!("a binding from '{source}' in vhost '{vhost}'"),
        Key::Other(_) => "a definition command".to_string(),
        k => format!("{k:?}"),
    }
}

/// Makes this node's replicated definitions equal to `target` (an
/// [`export`] of another node): removes, dependents first, what the
/// current export has and `target` does not, then applies, in order,
/// every command of `target` the export (taken again) lacks. A command
/// the definitions refuse is logged and skipped; a storage failure is
/// returned (the caller tries again later: converging again finishes the
/// job, and converging an equal node changes nothing). Blocking (file
/// I/O; a replicated queue's group may start).
///
/// A command that replaces in place (user, permissions, user limit,
/// policy) is simply applied; an exchange or replicated queue whose
/// definition differs (another type, another group or declaration) is
/// deleted first; a replicated queue differing only in its recorded
/// nodes is kept (deleting it would drop this node's replica) and its
/// nodes recorded. A vhost
/// limit that changes is cleared first and set again after the queues.
/// Bindings of a consistent-hash exchange are rebound when their order
/// differs (its ring follows it).
pub fn converge(b: &Broker, target: &[DefCommand]) -> Result<(), CoreError> {
    let current = export(b);
    let removals = removals(&current, target);
    for cmd in &removals {
        run(b, cmd)?;
    }
    let now: HashSet<Vec<u8>> = export(b).iter().map(DefCommand::encode).collect();
    let mut applied = 0usize;
    for cmd in target {
        if !now.contains(&cmd.encode()) {
            run(b, cmd)?;
            applied += 1;
            if let DefCommand::DeclareReplicatedQueue {
                vhost,
                spec,
                group,
                replicas,
            } = cmd
            {
                // Kept (same group and declaration) but its nodes changed
                // (a member was taken out): record them.
                let set = DefCommand::SetReplicas {
                    vhost: vhost.clone(),
                    name: spec.name.to_string(),
                    group: *group,
                    replicas: replicas.clone(),
                };
                run(b, &set)?;
            }
        }
    }
    if removals.is_empty() && applied == 0 {
        return Ok(());
    }
    let after: HashSet<Vec<u8>> = export(b).iter().map(DefCommand::encode).collect();
    let wanted: HashSet<Vec<u8>> = target.iter().map(DefCommand::encode).collect();
    let left = after.symmetric_difference(&wanted).count();
    if left > 0 {
        // Refused commands (logged above), or a node-local queue or
        // transient exchange under a replicated one's name.
        tracing::warn!(
            left,
            "definitions converged with differences left from the snapshot"
        );
    }
    tracing::info!(
        removed = removals.len(),
        applied,
        "definitions converged to a snapshot"
    );
    Ok(())
}

/// Applies one command: a refusal is logged and skipped, a storage
/// failure returned.
fn run(b: &Broker, cmd: &DefCommand) -> Result<(), CoreError> {
    match command::apply(b, cmd) {
        Ok(_) => Ok(()),
        Err(e) => match CoreError::from(e) {
            e @ (CoreError::Storage(_) | CoreError::Io(_) | CoreError::Corrupt(_)) => Err(e),
            e => {
                let what = label(cmd);
                tracing::warn!(%what, error = %e, "a snapshot's definition command was refused; skipped");
                Ok(())
            }
        },
    }
}

/// Whether the bindings of exchange `x` (in `target`) route by their order.
fn ordered(target: &[DefCommand], vhost: &str, x: &str) -> bool {
    target.iter().any(|c| match c {
        DefCommand::DeclareExchange {
            vhost: v,
            name,
            kind,
            arguments,
            ..
        } if v == vhost && name == x => ExchangeKind::parse(kind).is_some_and(|k| {
            ferry_route::delayed::routing_kind(k, arguments) == ExchangeKind::ConsistentHash
        }),
        _ => false,
    })
}

/// The bindings of `cmds`, by (vhost, source), each source's in order.
fn bindings_by_source(cmds: &[DefCommand]) -> HashMap<(&str, &str), Vec<&DefCommand>> {
    let mut out: HashMap<(&str, &str), Vec<&DefCommand>> = HashMap::new();
    for c in cmds {
        if let Key::Binding(vhost, source, _) = key(c) {
            out.entry((vhost, source)).or_default().push(c);
        }
    }
    out
}

/// The unbinds of `current`'s bindings that `target` lacks, in `current`'s
/// order; of a consistent-hash exchange, all those after the longest run
/// that starts `target`'s list for it.
fn unbinds(
    current: &[DefCommand],
    target: &[DefCommand],
    gone_vhost: &dyn Fn(&str) -> bool,
) -> Vec<DefCommand> {
    let wanted = bindings_by_source(target);
    let mut drop: HashSet<Vec<u8>> = HashSet::new();
    for ((vhost, source), have) in bindings_by_source(current) {
        if gone_vhost(vhost) {
            continue; // deleting the vhost removes them
        }
        let want = wanted.get(&(vhost, source)).cloned().unwrap_or_default();
        let kept: Vec<&DefCommand> = have.iter().copied().filter(|c| want.contains(c)).collect();
        let in_order = !ordered(target, vhost, source) || want.starts_with(&kept);
        for c in have {
            if !in_order || !want.contains(&c) {
                drop.insert(c.encode());
            }
        }
    }
    current
        .iter()
        .filter(|c| drop.contains(&c.encode()))
        .filter_map(|c| match c.clone() {
            DefCommand::BindQueue {
                vhost,
                source,
                queue,
                routing_key,
                arguments,
                ..
            } => Some(DefCommand::BindQueue {
                vhost,
                bind: false,
                source,
                queue,
                routing_key,
                arguments,
            }),
            DefCommand::BindExchanges {
                vhost,
                source,
                destination,
                routing_key,
                arguments,
                ..
            } => Some(DefCommand::BindExchanges {
                vhost,
                bind: false,
                source,
                destination,
                routing_key,
                arguments,
            }),
            _ => None,
        })
        .collect()
}

/// What converging removes first (see [`converge`]), dependents first:
/// vhost limits, bindings, replicated queues, exchanges, policies, user
/// limits, permissions, users, vhosts. What a removed vhost or user takes
/// with it is not removed one by one — except replicated queues, whose
/// delete also stops this node's member of their group.
fn removals(current: &[DefCommand], target: &[DefCommand]) -> Vec<DefCommand> {
    let wanted: HashMap<Key<'_>, &DefCommand> = target.iter().map(|c| (key(c), c)).collect();
    let absent = |c: &DefCommand| !wanted.contains_key(&key(c));
    let differs = |c: &DefCommand| wanted.get(&key(c)).is_none_or(|t| *t != c);
    let gone_vhosts: HashSet<&str> = current
        .iter()
        .filter_map(|c| match c {
            DefCommand::AddVhost { name } if absent(c) => Some(name.as_str()),
            _ => None,
        })
        .collect();
    let gone_users: HashSet<&str> = current
        .iter()
        .filter(|c| absent(c))
        .filter_map(|c| match key(c) {
            Key::User(name) => Some(name),
            _ => None,
        })
        .collect();
    let gone_vhost = |v: &str| gone_vhosts.contains(v);
    let gone_user = |u: &str| gone_users.contains(u);
    let mut out = Vec::new();
    // 9 kinds, in removal order.
    let mut by_kind: [Vec<DefCommand>; 9] = Default::default();
    for c in current {
        let (slot, cmd) = match c {
            DefCommand::VhostLimit { vhost, name, .. } if differs(c) && !gone_vhost(vhost) => (
                0,
                DefCommand::VhostLimit {
                    vhost: vhost.clone(),
                    name: name.clone(),
                    value: None,
                },
            ),
            DefCommand::DeclareReplicatedQueue {
                vhost, spec, group, ..
            } => {
                let same = match wanted.get(&key(c)) {
                    Some(DefCommand::DeclareReplicatedQueue {
                        spec: s, group: g, ..
                    }) => s == spec && g == group,
                    _ => false,
                };
                if same {
                    continue;
                }
                let name = spec.name.to_string();
                let vhost = vhost.clone();
                (2, DefCommand::DeleteReplicatedQueue { vhost, name })
            }
            DefCommand::DeclareExchange { vhost, name, .. } if differs(c) && !gone_vhost(vhost) => {
                (
                    3,
                    DefCommand::DeleteExchange {
                        vhost: vhost.clone(),
                        name: name.clone(),
                        if_unused: false,
                    },
                )
            }
            DefCommand::PutPolicy { kind, def } if absent(c) && !gone_vhost(&def.vhost) => (
                4,
                DefCommand::DeletePolicy {
                    kind: *kind,
                    vhost: def.vhost.clone(),
                    name: def.name.clone(),
                },
            ),
            DefCommand::UserLimit { user, name, .. } if absent(c) && !gone_user(user) => (
                5,
                DefCommand::UserLimit {
                    user: user.clone(),
                    name: name.clone(),
                    value: None,
                },
            ),
            DefCommand::SetPermissions { user, vhost, .. }
                if absent(c) && !gone_user(user) && !gone_vhost(vhost) =>
            {
                (
                    6,
                    DefCommand::ClearPermissions {
                        user: user.clone(),
                        vhost: vhost.clone(),
                    },
                )
            }
            DefCommand::AddVhost { name } if absent(c) => {
                (8, DefCommand::DeleteVhost { name: name.clone() })
            }
            _ => match key(c) {
                Key::User(name) if absent(c) => (
                    7,
                    DefCommand::DeleteUser {
                        name: name.to_string(),
                    },
                ),
                _ => continue,
            },
        };
        by_kind[slot].push(cmd);
    }
    by_kind[1] = unbinds(current, target, &gone_vhost);
    for list in by_kind {
        out.extend(list);
    }
    out
}

/// The snapshot's bytes: magic `FRYDEFS1`, the number of commands (u32
/// LE), then each command as its length (u32 LE) and its bytes
/// ([`DefCommand::encode`]).
pub fn encode(cmds: &[DefCommand]) -> Vec<u8> {
    let bodies: Vec<Vec<u8>> = cmds.iter().map(DefCommand::encode).collect();
    let size = 12 + bodies.iter().map(|x| 4 + x.len()).sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(MAGIC);
    // Never that many (a decode would refuse the count).
    out.extend_from_slice(
        &u32::try_from(bodies.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    for body in bodies {
        out.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(&body);
    }
    out
}

fn corrupt(text: &str) -> CoreError {
    CoreError::Corrupt(format!("definitions snapshot: {text}"))
}

/// Reads 4 bytes at `*at` as u32 LE and moves past them.
fn read_u32(b: &[u8], at: &mut usize) -> Result<usize, CoreError> {
    let end = at.checked_add(4).ok_or_else(|| corrupt("truncated"))?;
    let bytes: [u8; 4] = b
        .get(*at..end)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| corrupt("truncated"))?;
    *at = end;
    usize::try_from(u32::from_le_bytes(bytes)).map_err(|_| corrupt("length"))
}

/// The commands of a snapshot's bytes ([`encode`]); `Corrupt` for a bad
/// magic, a count or length beyond the bytes, trailing bytes or a
/// command that does not decode.
pub fn decode(b: &[u8]) -> Result<Vec<DefCommand>, CoreError> {
    if b.get(..MAGIC.len()) != Some(&MAGIC[..]) {
        return Err(corrupt("bad magic"));
    }
    let mut at = MAGIC.len();
    let count = read_u32(b, &mut at)?;
    // Each command takes at least its 4-byte length: a count the bytes
    // cannot hold is refused before anything is allocated for it.
    let left = b.len() - at;
    if count > left / 4 {
        return Err(corrupt("count beyond the bytes"));
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let len = read_u32(b, &mut at)?;
        let body = at
            .checked_add(len)
            .and_then(|end| b.get(at..end))
            .ok_or_else(|| corrupt("command length beyond the bytes"))?;
        out.push(DefCommand::decode(body)?);
        at += len;
    }
    if at != b.len() {
        return Err(corrupt("trailing bytes"));
    }
    Ok(out)
}
