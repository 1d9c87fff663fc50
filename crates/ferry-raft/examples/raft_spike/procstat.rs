//! Process CPU time, RSS and load average from /proc (Linux only).

use std::io;
use std::time::Duration;

/// User + system CPU time of this process so far.
pub fn cpu_time() -> io::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Field 2 (comm) may contain spaces: fields are counted after its ')'.
    let after = stat
        .rfind(')')
        .and_then(|i| stat.get(i + 1..))
        .ok_or_else(|| io::Error::other("unexpected /proc/self/stat"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // after ')' field 3 (state) is index 0, so utime (14) is 11, stime (15) is 12.
    let field = |i: usize| -> io::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| io::Error::other("unexpected /proc/self/stat"))
    };
    let ticks = field(11)? + field(12)?;
    let hz = rustix::param::clock_ticks_per_second().max(1);
    Ok(Duration::from_nanos(
        ticks.saturating_mul(1_000_000_000) / hz,
    ))
}

/// Resident set size of this process, in bytes.
pub fn rss_bytes() -> io::Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| io::Error::other("unexpected /proc/self/statm"))?;
    Ok(pages * rustix::param::page_size() as u64)
}

/// The first three fields of /proc/loadavg ("" when unreadable).
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// CPU used over a wall-clock window, as a percentage of one core.
pub fn pct_of_core(cpu: Duration, wall: Duration) -> f64 {
    if wall.is_zero() {
        return 0.0;
    }
    100.0 * cpu.as_secs_f64() / wall.as_secs_f64()
}

/// The q-quantile (0..=1) of sorted samples.
pub fn quantile(sorted: &[Duration], q: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * (sorted.len() - 1) as f64).round() as usize;
    sorted.get(rank.min(sorted.len() - 1)).copied()
}
