//! Vhost lifecycle. The access file lists the vhosts that exist (one
//! atomic rename commits a create or a delete); a vhost's directory holds
//! only its data. A data directory from before the access file existed has
//! its vhosts found by listing `DATA/vhosts/`.

use super::{hex, unhex, Broker, VhostDeletedHook};
use crate::vhost::VHost;
use ferry_log::FileIo;
use ferry_queue::error::{CoreError, ErrorKind, Result};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

impl Broker {
    /// Opens the vhosts the access file lists (`listed`), or on a fresh
    /// data directory every directory found plus the default `/`. A
    /// directory the access file does not list is what an interrupted
    /// `delete_vhost` left: it is removed.
    pub(super) fn open_vhosts(
        &self,
        io: &dyn FileIo,
        vdir: &Path,
        listed: Option<Vec<String>>,
    ) -> Result<()> {
        let on_disk: Vec<String> = io
            .list(vdir)?
            .iter()
            .filter_map(|p| p.file_name()?.to_str().and_then(unhex))
            .collect();
        let names = match listed {
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
        };
        for n in names {
            self.open_vhost(&n)?;
        }
        Ok(())
    }

    fn open_vhost(&self, name: &str) -> Result<Arc<VHost>> {
        let dir = self.config.data_dir.join("vhosts").join(hex(name));
        self.env.io.create_dir_all(&dir)?;
        let tdir = self.config.data_dir.join("transient").join(hex(name));
        let policies = self.policies.read().vhost(name);
        let v = VHost::open(name, dir, tdir, self.env.clone(), policies)?;
        v.set_max_queues(self.users.read().vhost_limit(name, "max-queues"));
        self.vhosts.write().insert(name.to_string(), v.clone());
        Ok(v)
    }

    /// Creates (or returns the existing) vhost, persisted before it
    /// returns.
    pub fn add_vhost(&self, name: &str) -> Result<Arc<VHost>> {
        if let Some(v) = self.vhosts.read().get(name) {
            return Ok(v.clone());
        }
        if name.is_empty() {
            return Err(CoreError::request(
                ErrorKind::CommandInvalid,
                "vhost name must not be empty",
            ));
        }
        let _w = self.access_write.lock();
        if let Some(v) = self.vhosts.read().get(name) {
            return Ok(v.clone());
        }
        let v = self.open_vhost(name)?;
        if let Err(e) = self.update_users_locked(|_| Ok(())) {
            self.vhosts.write().remove(name);
            return Err(e);
        }
        Ok(v)
    }

    /// Deletes a vhost: its queues (consumers are cancelled), exchanges,
    /// data and permissions. Connections still on it fail their next
    /// declare; the hooks (see [`Broker::on_vhost_deleted`]) close them.
    pub fn delete_vhost(&self, name: &str) -> Result<()> {
        let _w = self.access_write.lock();
        let v = self.vhosts.write().remove(name).ok_or_else(|| {
            CoreError::request(ErrorKind::NotFound, format!("vhost {name} not found"))
        })?;
        // The commit point: the access file no longer lists it.
        if let Err(e) = self.update_users_locked(|u| {
            u.remove_vhost(name);
            Ok(())
        }) {
            self.vhosts.write().insert(name.to_string(), v);
            return Err(e);
        }
        self.forget_vhost_policies(name);
        let deleted = v.delete_all();
        let io = &self.env.io;
        let dir = self.config.data_dir.join("vhosts").join(hex(name));
        if io.exists(&dir) {
            io.remove_dir_all(&dir)?;
        }
        let tdir = self.config.data_dir.join("transient").join(hex(name));
        if io.exists(&tdir) {
            io.remove_dir_all(&tdir)?;
        }
        let hooks: Vec<VhostDeletedHook> = self.vhost_hooks.lock().clone();
        for h in hooks {
            h(name);
        }
        self.access_epoch.fetch_add(1, Ordering::Release);
        deleted
    }

    /// Registers a callback run after a vhost is deleted.
    pub fn on_vhost_deleted(&self, hook: VhostDeletedHook) {
        self.vhost_hooks.lock().push(hook);
    }

    /// Every vhost name, sorted.
    pub fn vhost_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.vhosts.read().keys().cloned().collect();
        v.sort();
        v
    }
}
