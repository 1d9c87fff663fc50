//! Gives the memory that hibernating queue groups freed back to the
//! system. glibc's allocator keeps freed pages inside its heaps (only the
//! top of a heap shrinks by itself), and a hibernated group's openraft
//! instance frees tens of KiB scattered among what its queue keeps, so
//! without this a node's RSS would not fall when 1,000 idle queues go to
//! sleep. At most once per [`EVERY`], after groups hibernated, and at
//! least once per [`AT_LEAST_EVERY`] otherwise, the allocator releases
//! its free pages (`malloc_trim`, on the blocking pool: it walks the
//! heaps). The periodic one is for what the node's other threads free
//! while everything sleeps: glibc spreads threads over several arenas
//! (up to 8 per core), the blocking pool's among them (a Prometheus
//! scrape renders every group's figures there), and those arenas' free
//! pages stayed: the node's RSS crept up by ≈ 60 KB/s with 300 sleeping
//! queues scraped every 5 s.

use std::time::Duration;

/// How often hibernations are looked for.
pub const EVERY: Duration = Duration::from_secs(10);

/// The longest time between two releases.
pub const AT_LEAST_EVERY: Duration = Duration::from_secs(60);

/// Runs until `hibernations` returns None (the node's groups are gone):
/// trims after the count of hibernations rose, and every
/// [`AT_LEAST_EVERY`].
pub async fn after_hibernations(hibernations: impl Fn() -> Option<u64> + Send + 'static) {
    let mut seen = 0u64;
    let mut last = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(n) = hibernations() else { return };
        if n > seen || last.elapsed() >= AT_LEAST_EVERY {
            seen = n;
            last = tokio::time::Instant::now();
            let _ = tokio::task::spawn_blocking(release).await;
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn release() {
    let started = std::time::Instant::now();
    // SAFETY: malloc_trim only walks and trims the allocator's own heaps.
    let _ = unsafe { libc::malloc_trim(0) };
    tracing::debug!(took = ?started.elapsed(), "gave free memory back (malloc_trim)");
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release() {}
