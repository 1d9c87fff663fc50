//! The end of a vhost's life: `Broker::delete_vhost` empties it, and a
//! connection still holding it must fail cleanly instead of writing its
//! directory back into existence.

use super::VHost;
use ferry_queue::error::{CoreError, ErrorKind, Result};
use ferry_queue::source::QueueRef;
use std::sync::atomic::Ordering;

impl VHost {
    /// Deletes every queue (cancelling its consumers) and exchange with
    /// their data, for `Broker::delete_vhost`. Later declares fail.
    pub fn delete_all(&self) -> Result<()> {
        let _d = self.defs_lock.lock();
        self.deleted.store(true, Ordering::Release);
        let taken = self.registry.drain();
        self.exchanges.write().clear();
        let mut first_err = None;
        if let Err(e) = self.delayed.remove_all() {
            first_err.get_or_insert(e);
        }
        for r in taken.iter().filter_map(|slot| slot.open()) {
            let deleted = match r {
                QueueRef::Queue(q) => q.delete().map(drop),
                QueueRef::Stream(s) => s.delete().map(drop),
            };
            if let Err(e) = deleted {
                tracing::warn!(queue = %r.name(), error = %e, "cannot delete queue of deleted vhost");
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    pub(super) fn check_alive(&self) -> Result<()> {
        if self.deleted.load(Ordering::Acquire) {
            return Err(CoreError::request(
                ErrorKind::NotAllowed,
                format!("vhost {} is being deleted", self.name),
            ));
        }
        Ok(())
    }
}
