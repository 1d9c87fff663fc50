//! Resource alarms, as in RabbitMQ: when the broker's memory use passes the
//! high watermark, or free disk space falls below the limit, publishing
//! connections are blocked (connection.blocked, and their sockets are not
//! read) until the alarm clears. Consumers keep flowing, which is what
//! relieves the pressure. Under a memory alarm queues also drop the message
//! bodies they cache, so memory falls back to the index.
//!
//! Memory is measured as `crate::memory` describes (the fixed footprint
//! plus what the broker counts as held for clients), not as RSS: RSS does
//! not fall once the allocator has the pages, so an RSS alarm would never
//! clear.

use crate::memory::Usage;
use ferry_broker::Broker;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Which alarms are raised.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Alarms {
    /// Memory above the high watermark.
    pub memory: bool,
    /// Free disk below the limit.
    pub disk: bool,
}

impl Alarms {
    /// Any alarm raised.
    pub fn any(self) -> bool {
        self.memory || self.disk
    }

    /// The reason text of connection.blocked.
    pub fn reason(self) -> &'static str {
        match (self.memory, self.disk) {
            (true, true) => "low on memory and disk",
            (true, false) => "low on memory",
            (false, true) => "low on disk",
            (false, false) => "",
        }
    }
}

/// Limits the monitor enforces.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Memory (see `crate::memory::Usage`) above which publishers are
    /// blocked (bytes).
    pub memory_bytes: u64,
    /// Free disk below which publishers are blocked (bytes).
    pub disk_free_bytes: u64,
    /// Directory whose file system is watched.
    pub data_dir: PathBuf,
}

const PERIOD: Duration = Duration::from_millis(200);

/// Resident set size of this process, from /proc/self/statm.
pub fn rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * rustix::param::page_size() as u64)
}

/// Total memory of the machine, from /proc/meminfo.
pub fn total_memory_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = s
        .lines()
        .find(|l| l.starts_with("MemTotal:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

fn disk_free_bytes(dir: &PathBuf) -> Option<u64> {
    let st = rustix::fs::statvfs(dir).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Watches memory and disk and publishes the alarm state until `stop`.
pub async fn monitor(
    limits: Limits,
    broker: Arc<Broker>,
    tx: watch::Sender<Alarms>,
    mut stop: watch::Receiver<bool>,
) {
    // Sampled before any client: the footprint of code, runtime, threads
    // and recovered indexes, which no client can make the broker give back.
    let base = rss_bytes().unwrap_or(0);
    tracing::info!(base, "memory alarm: fixed footprint");
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let before = *tx.borrow();
        let usage = Usage {
            base,
            cache: broker.cache_bytes(),
            connections: crate::memory::connection_bytes(),
        };
        let used = usage.total();
        crate::memory::record_used(used);
        let free = disk_free_bytes(&limits.data_dir).unwrap_or(u64::MAX);
        let now = Alarms {
            memory: used > limits.memory_bytes,
            disk: free < limits.disk_free_bytes,
        };
        if now.memory != before.memory {
            let rss = rss_bytes().unwrap_or(0);
            let limit = limits.memory_bytes;
            let (cache, connections) = (usage.cache, usage.connections);
            if now.memory {
                tracing::warn!(
                    used,
                    base,
                    cache,
                    connections,
                    rss,
                    limit,
                    "memory alarm set: blocking publishers"
                );
            } else {
                tracing::info!(
                    used,
                    base,
                    cache,
                    connections,
                    rss,
                    limit,
                    "memory alarm cleared"
                );
            }
        }
        if now.disk && !before.disk {
            tracing::warn!(
                free,
                limit = limits.disk_free_bytes,
                "disk alarm set: blocking publishers"
            );
        }
        if !now.disk && before.disk {
            tracing::info!(free, limit = limits.disk_free_bytes, "disk alarm cleared");
        }
        if now.memory {
            broker.shed_memory();
        }
        if now != before {
            let _ = tx.send(now);
        }
    }
}
