//! The node's set of vhosts. The access file lists the vhosts that exist
//! (one atomic rename commits a create or a delete, `access.rs`); a
//! vhost's directory holds only its data. A data directory from before the
//! access file existed has its vhosts found by listing `DATA/vhosts/`.
//!
//! Owns the map from name to open [`VHost`] (its `vhosts` lock, a leaf:
//! held only to look up, insert or remove, never across a call into a
//! vhost), the vhosts' directories and the deletion hooks. Creating and
//! deleting a vhost is the broker's (it spans the access file and the
//! policies).

use super::{hex, unhex, VhostDeletedHook};
use crate::policy::VhostPolicies;
use crate::vhost::VHost;
use ferry_log::FileIo;
use ferry_queue::error::Result;
use ferry_queue::queue::QueueEnv;
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The open vhosts, by name.
pub(super) struct VhostSet {
    data_dir: PathBuf,
    env: QueueEnv,
    hub: Arc<crate::replicated::ReplicaHub>,
    vhosts: RwLock<HashMap<String, Arc<VHost>>>,
    hooks: Mutex<Vec<VhostDeletedHook>>,
}

impl VhostSet {
    /// No vhosts yet; their directories are below `data_dir`, their
    /// queues open with `env`.
    pub(super) fn new(
        data_dir: PathBuf,
        env: QueueEnv,
        hub: Arc<crate::replicated::ReplicaHub>,
    ) -> Self {
        VhostSet {
            data_dir,
            env,
            hub,
            vhosts: RwLock::new(HashMap::new()),
            hooks: Mutex::new(Vec::new()),
        }
    }

    /// The vhost called `name`.
    pub(super) fn get(&self, name: &str) -> Option<Arc<VHost>> {
        self.vhosts.read().get(name).cloned()
    }

    /// Whether a vhost called `name` exists.
    pub(super) fn contains(&self, name: &str) -> bool {
        self.vhosts.read().contains_key(name)
    }

    /// Every vhost.
    pub(super) fn all(&self) -> Vec<Arc<VHost>> {
        self.vhosts.read().values().cloned().collect()
    }

    /// Every vhost name, sorted.
    pub(super) fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.vhosts.read().keys().cloned().collect();
        v.sort();
        v
    }

    /// The vhosts to open: those the access file lists (`listed`), or on
    /// a fresh data directory every directory found plus the default `/`.
    /// A directory the access file does not list is what an interrupted
    /// `delete_vhost` left: it is removed.
    pub(super) fn to_open(
        &self,
        io: &dyn FileIo,
        vdir: &Path,
        listed: Option<Vec<String>>,
    ) -> Result<Vec<String>> {
        let on_disk: Vec<String> = io
            .list(vdir)?
            .iter()
            .filter_map(|p| p.file_name()?.to_str().and_then(unhex))
            .collect();
        Ok(match listed {
            Some(names) => {
                for stale in on_disk.iter().filter(|d| !names.contains(d)) {
                    tracing::info!(vhost = %stale, "removing the data of a deleted vhost");
                    io.remove_dir_all(&vdir.join(hex(stale)))?;
                }
                names
            }
            None => {
                let mut names = on_disk;
                if !names.iter().any(|n| n == "/") {
                    names.push("/".to_string());
                }
                names
            }
        })
    }

    /// Opens vhost `name` (creating its directory) with its policies and
    /// `max-queues` limit, and adds it to the set.
    pub(super) fn open(
        &self,
        name: &str,
        policies: Arc<VhostPolicies>,
        max_queues: Option<i64>,
    ) -> Result<Arc<VHost>> {
        let dir = self.data_dir.join("vhosts").join(hex(name));
        self.env.io.create_dir_all(&dir)?;
        let tdir = self.data_dir.join("transient").join(hex(name));
        let v = VHost::open(
            name,
            dir,
            tdir,
            self.env.clone(),
            policies,
            self.hub.clone(),
        )?;
        v.set_max_queues(max_queues);
        self.vhosts.write().insert(name.to_string(), v.clone());
        Ok(v)
    }

    /// Puts back a vhost whose deletion failed to commit.
    pub(super) fn insert(&self, name: &str, v: Arc<VHost>) {
        self.vhosts.write().insert(name.to_string(), v);
    }

    /// Takes vhost `name` out of the set.
    pub(super) fn remove(&self, name: &str) -> Option<Arc<VHost>> {
        self.vhosts.write().remove(name)
    }

    /// Removes the directories of deleted vhost `name`.
    pub(super) fn remove_data(&self, name: &str) -> Result<()> {
        let io = &self.env.io;
        let dir = self.data_dir.join("vhosts").join(hex(name));
        if io.exists(&dir) {
            io.remove_dir_all(&dir)?;
        }
        let tdir = self.data_dir.join("transient").join(hex(name));
        if io.exists(&tdir) {
            io.remove_dir_all(&tdir)?;
        }
        Ok(())
    }

    /// Registers a callback run after a vhost is deleted.
    pub(super) fn on_deleted(&self, hook: VhostDeletedHook) {
        self.hooks.lock().push(hook);
    }

    /// Runs the deletion hooks for `name` (the hook list is released
    /// first).
    pub(super) fn deleted(&self, name: &str) {
        let hooks: Vec<VhostDeletedHook> = self.hooks.lock().clone();
        for h in hooks {
            h(name);
        }
    }
}
