//! Gives the memory that hibernating queue groups freed back to the
//! system. glibc's allocator keeps freed pages inside its heaps (only the
//! top of a heap shrinks by itself), and a hibernated group's openraft
//! instance frees tens of KiB scattered among what its queue keeps, so
//! without this a node's RSS would not fall when 1,000 idle queues go to
//! sleep. At most once per [`EVERY`], after groups hibernated, the
//! allocator releases its free pages (`malloc_trim`, on the blocking
//! pool: it walks the heaps).

use std::time::Duration;

/// How often hibernations are looked for.
pub const EVERY: Duration = Duration::from_secs(10);

/// Runs until `hibernations` returns None (the node's groups are gone):
/// trims after the count of hibernations rose.
pub async fn after_hibernations(hibernations: impl Fn() -> Option<u64> + Send + 'static) {
    let mut seen = 0u64;
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(n) = hibernations() else { return };
        if n > seen {
            seen = n;
            let _ = tokio::task::spawn_blocking(release).await;
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn release() {
    // SAFETY: malloc_trim only walks and trims the allocator's own heaps.
    let _ = unsafe { libc::malloc_trim(0) };
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release() {}
