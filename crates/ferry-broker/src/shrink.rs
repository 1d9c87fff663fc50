//! Taking a node out of every replicated queue's and stream's group it is
//! a member of (RabbitMQ's `rabbitmq-queues shrink`, what
//! `forget_cluster_node` does), or adding it to every group it is not in
//! (`rabbitmq-queues grow`): each group's leader changes the members
//! (`ReplicaHost::remove_member` / `add_member`), then the group's recorded
//! nodes change through the definitions (`DefCommand::SetReplicas`, the
//! one apply path), so every node, and a snapshot, knows them; the node
//! concerned starts (or stops) its replica when it applies that.
//!
//! Owns the walks over the vhosts and the reports; must not change a group
//! itself (the host does) nor a definition other than through `submit`.

use crate::command::DefCommand;
use crate::Broker;

/// What [`Broker::shrink_node`] or [`Broker::grow_node`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Shrunk {
    /// Groups the node was taken out of (or added to).
    pub changed: usize,
    /// Groups it is still in: (vhost, queue, why).
    pub failed: Vec<(String, String, String)>,
}

impl Broker {
    /// Takes node `who` out of every replicated queue's and stream's group
    /// whose recorded nodes name it (one at a time; each waits a few
    /// seconds for its group's leader). A group whose remaining members
    /// hold no majority of it stays as it is (reported). Blocking.
    pub fn shrink_node(&self, who: u64) -> Shrunk {
        self.change_groups(
            |nodes| nodes.contains(&who),
            |group, nodes| {
                self.replicas().remove_member(group, nodes, who)?;
                Ok(nodes.iter().copied().filter(|n| *n != who).collect())
            },
        )
    }

    /// Adds node `who` to every replicated queue's and stream's group
    /// whose recorded nodes do not name it (`even_only`: only those with
    /// an even number of nodes, RabbitMQ's `grow ... even`). A queue whose
    /// nodes were not recorded (declared before they were) is skipped.
    /// Blocking.
    pub fn grow_node(&self, who: u64, even_only: bool) -> Shrunk {
        self.change_groups(
            |nodes| {
                !nodes.is_empty() && !nodes.contains(&who) && (!even_only || nodes.len() % 2 == 0)
            },
            |group, nodes| {
                self.replicas().add_member(group, nodes, who)?;
                let mut now = nodes.to_vec();
                now.push(who);
                Ok(now)
            },
        )
    }

    /// For every replicated queue and stream whose recorded nodes `pick`
    /// takes: `change` changes its group and says its nodes now, which
    /// are then recorded through the definitions.
    fn change_groups(
        &self,
        pick: impl Fn(&[u64]) -> bool,
        change: impl Fn(u64, &[u64]) -> Result<Vec<u64>, String>,
    ) -> Shrunk {
        let mut out = Shrunk::default();
        for vhost in self.vhost_names() {
            let Ok(v) = self.vhost(&vhost) else { continue };
            for (name, group, nodes) in v.replicated_members() {
                if !pick(&nodes) {
                    continue;
                }
                let done = change(group, &nodes).and_then(|replicas| {
                    self.submit(DefCommand::SetReplicas {
                        vhost: vhost.clone(),
                        name: name.clone(),
                        group,
                        replicas,
                    })
                    .map(|_| ())
                    .map_err(|e| e.to_string())
                });
                match done {
                    Ok(()) => out.changed += 1,
                    Err(why) => {
                        tracing::warn!(%vhost, queue = %name, error = %why,
                            "could not change a replicated queue's group");
                        out.failed.push((vhost.clone(), name, why));
                    }
                }
            }
        }
        out
    }
}
