//! What the memory alarm measures: the memory the broker holds for its
//! clients, counted by the broker itself, on top of the fixed footprint it
//! had before any client came.
//!
//! Why not process RSS: bodies live in the logs, not in RAM, so a backlog
//! does not grow memory, and RSS never falls once glibc has the pages
//! (freed memory is kept for reuse; returning it needs `malloc_trim`, an
//! FFI call this workspace does not make). An alarm on RSS set once stays
//! set. RabbitMQ faces the same problem and can measure with its
//! allocator's view instead of RSS; this is Ferry's equivalent: bytes the
//! broker holds and gives back when publishers stop or caches shed.
//!
//! Counted (`Usage`):
//! - `base`: RSS when the alarm monitor starts (code, runtime, threads,
//!   indexes recovered at boot);
//! - `cache`: message bodies the queues cache (the core's shared cache);
//! - `connections`: per connection, bytes read from the socket and not yet
//!   handled, plus the body of a message still being assembled; and bytes
//!   of deliveries queued for the socket.
//!
//! Not counted: the logs' sparse indexes (8 bytes per 4 KiB of log, kept
//! for reads; they fall as segments are removed) and the allocator's
//! retained free memory. The process-wide counter is shared by every
//! server in the process, like RSS would be.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Bytes held by every connection of this process.
static CONNECTIONS: AtomicI64 = AtomicI64::new(0);

/// One owner's share of [`connection_bytes`]: `set` moves the global count
/// by the difference, and dropping the gauge gives its share back, so a
/// connection that dies mid-message leaves nothing counted.
#[derive(Debug, Default)]
pub struct Gauge {
    bytes: i64,
}

impl Gauge {
    /// Sets this owner's share to `bytes`.
    pub fn set(&mut self, bytes: usize) {
        let new = i64::try_from(bytes).unwrap_or(i64::MAX);
        let delta = new - self.bytes;
        if delta != 0 {
            CONNECTIONS.fetch_add(delta, Ordering::Relaxed);
            self.bytes = new;
        }
    }

    /// Adds `bytes` to this owner's share.
    pub fn add(&mut self, bytes: usize) {
        let now = usize::try_from(self.bytes).unwrap_or(0);
        self.set(now.saturating_add(bytes));
    }

    /// This owner's share.
    pub fn get(&self) -> usize {
        usize::try_from(self.bytes).unwrap_or(0)
    }
}

impl Drop for Gauge {
    fn drop(&mut self) {
        self.set(0);
    }
}

/// Counts `bytes` of deliveries queued in an outbox.
pub fn outbox_queued(bytes: usize) {
    CONNECTIONS.fetch_add(i64::try_from(bytes).unwrap_or(i64::MAX), Ordering::Relaxed);
}

/// Uncounts `bytes` of deliveries written (or dropped with their outbox).
pub fn outbox_written(bytes: usize) {
    CONNECTIONS.fetch_sub(i64::try_from(bytes).unwrap_or(i64::MAX), Ordering::Relaxed);
}

/// Bytes the connections of this process hold now.
pub fn connection_bytes() -> u64 {
    u64::try_from(CONNECTIONS.load(Ordering::Relaxed)).unwrap_or(0)
}

/// The latest `Usage::total` the alarm monitor measured (0 before its
/// first tick): what the management API should report as memory used.
static LAST_USED: AtomicU64 = AtomicU64::new(0);

/// The memory measure as of the monitor's latest tick.
pub fn used_bytes() -> u64 {
    LAST_USED.load(Ordering::Relaxed)
}

pub(crate) fn record_used(bytes: u64) {
    LAST_USED.store(bytes, Ordering::Relaxed);
}

/// One reading of the memory measure.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// RSS when the monitor started.
    pub base: u64,
    /// Cached message bodies.
    pub cache: u64,
    /// Connection buffers, bodies in assembly, queued deliveries.
    pub connections: u64,
}

impl Usage {
    /// What the alarm compares with the limit.
    pub fn total(&self) -> u64 {
        self.base
            .saturating_add(self.cache)
            .saturating_add(self.connections)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gauge_tracks_its_share() {
        // The global count is shared with other tests in this binary, so
        // only the gauge's own share is checked here; the Python flow
        // control tests see the global one rise and fall.
        let mut g = Gauge::default();
        g.set(1000);
        g.add(500);
        assert_eq!(g.get(), 1500);
        g.set(200);
        assert_eq!(g.get(), 200);
        assert!(connection_bytes() >= 200);
    }

    #[test]
    fn usage_adds_its_parts() {
        let u = Usage {
            base: 10,
            cache: 5,
            connections: 7,
        };
        assert_eq!(u.total(), 22);
    }
}
