//! CPU time and memory from /proc: this process's own CPU, and the CPU and
//! RSS of a broker's whole process tree.
//!
//! A tree, not one PID, because brokers fork: RabbitMQ's start script runs
//! beam.smp as a child (plus helpers like erl_child_setup), so the PID a
//! script knows is often not the one that burns the CPU. Children that exit
//! during the run are not lost: once reaped, their time moves into the
//! parent's cutime/cstime, which is counted too.
//!
//! /proc reports times in USER_HZ ticks, which Linux fixes at 100 for user
//! space on every architecture (sysconf(_SC_CLK_TCK) would need `unsafe`):
//! a resolution of 10 ms, fine for runs of seconds.

use std::collections::HashMap;
use std::fs;

use crate::error::BenchError;

/// Ticks per second in /proc/*/stat.
pub const USER_HZ: u64 = 100;

/// The fields of one /proc/PID/stat line this crate uses (times in ticks).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcStat {
    /// Process id.
    pub pid: u32,
    /// Parent process id.
    pub ppid: u32,
    /// User time of the process itself.
    pub utime: u64,
    /// System time of the process itself.
    pub stime: u64,
    /// User time of its reaped children.
    pub cutime: u64,
    /// System time of its reaped children.
    pub cstime: u64,
}

impl ProcStat {
    /// Own user + system time.
    #[must_use]
    pub fn own_ticks(&self) -> u64 {
        self.utime + self.stime
    }

    /// Own plus reaped children's time.
    #[must_use]
    pub fn total_ticks(&self) -> u64 {
        self.own_ticks() + self.cutime + self.cstime
    }
}

/// Parses a /proc/PID/stat line. The command name (field 2) is in
/// parentheses and may itself contain spaces and parentheses, so the fields
/// are counted from the last ')'.
#[must_use]
pub fn parse_stat(line: &str) -> Option<ProcStat> {
    let open = line.find('(')?;
    let close = line.rfind(')')?;
    let pid = line.get(..open)?.trim().parse().ok()?;
    // After ')': field 3 (state) is index 0, so field n is index n - 3.
    let rest: Vec<&str> = line.get(close + 1..)?.split_whitespace().collect();
    let field = |n: usize| -> Option<u64> { rest.get(n - 3)?.parse().ok() };
    Some(ProcStat {
        pid,
        ppid: u32::try_from(field(4)?).ok()?,
        utime: field(14)?,
        stime: field(15)?,
        cutime: field(16)?,
        cstime: field(17)?,
    })
}

/// A `Key:   1234 kB` value from /proc/PID/status, in KiB.
#[must_use]
pub fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        let v = l.strip_prefix(key)?.strip_prefix(':')?;
        v.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

/// Ticks to seconds.
#[must_use]
pub fn ticks_to_secs(ticks: u64) -> f64 {
    ticks as f64 / USER_HZ as f64
}

/// This process's user + system CPU ticks so far.
pub fn self_ticks() -> Result<u64, BenchError> {
    let line = fs::read_to_string("/proc/self/stat")
        .map_err(|e| BenchError::Proc(format!("cannot read /proc/self/stat: {e}")))?;
    parse_stat(&line)
        .map(|s| s.own_ticks())
        .ok_or_else(|| BenchError::Proc("cannot parse /proc/self/stat".into()))
}

/// What one look at a broker's process tree found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TreeSample {
    /// User + system ticks of every process in the tree, reaped children
    /// included.
    pub cpu_ticks: u64,
    /// Sum of VmRSS over the tree, KiB.
    pub rss_kib: u64,
    /// The largest VmHWM (peak RSS) of any process in the tree, KiB.
    pub peak_rss_kib: u64,
    /// How many processes the tree had.
    pub processes: usize,
}

/// The root and every descendant of `root`, from (pid, ppid) pairs.
#[must_use]
pub fn descendants(root: u32, stats: &[ProcStat]) -> Vec<usize> {
    let mut children: HashMap<u32, Vec<usize>> = HashMap::new();
    let mut root_at = None;
    for (i, s) in stats.iter().enumerate() {
        if s.pid == root {
            root_at = Some(i);
        } else {
            children.entry(s.ppid).or_default().push(i);
        }
    }
    let Some(root_at) = root_at else {
        return Vec::new();
    };
    let mut out = vec![root_at];
    let mut next = 0;
    while next < out.len() {
        let pid = stats[out[next]].pid;
        out.extend(children.get(&pid).into_iter().flatten().copied());
        next += 1;
    }
    out
}

/// Samples the CPU and memory of `root` and all its descendants.
pub fn sample_tree(root: u32) -> Result<TreeSample, BenchError> {
    let dir = fs::read_dir("/proc").map_err(|e| BenchError::Proc(format!("/proc: {e}")))?;
    let mut stats = Vec::new();
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        // Processes come and go while we scan: a vanished one is skipped.
        if let Some(s) = fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|l| parse_stat(&l))
        {
            stats.push(s);
        }
    }
    let tree = descendants(root, &stats);
    if tree.is_empty() {
        return Err(BenchError::Proc(format!(
            "--broker-pid {root}: no such process"
        )));
    }
    let mut sample = TreeSample {
        processes: tree.len(),
        ..TreeSample::default()
    };
    for i in tree {
        let s = stats[i];
        sample.cpu_ticks += s.total_ticks();
        if let Ok(status) = fs::read_to_string(format!("/proc/{}/status", s.pid)) {
            sample.rss_kib += parse_status_kib(&status, "VmRSS").unwrap_or(0);
            let hwm = parse_status_kib(&status, "VmHWM").unwrap_or(0);
            sample.peak_rss_kib = sample.peak_rss_kib.max(hwm);
        }
    }
    Ok(sample)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    // A real line from beam.smp, with a command name that has a space and
    // a parenthesis in it to check that fields are counted from the last ')'.
    const LINE: &str = "4242 (beam.smp (x) y) S 4200 4200 4200 0 -1 4194560 123 0 0 0 \
                        1500 250 30 7 20 0 27 0 1234 3000000000 50000 18446744073709551615";

    #[test]
    fn parses_a_stat_line() {
        let s = parse_stat(LINE).unwrap();
        assert_eq!(
            s,
            ProcStat {
                pid: 4242,
                ppid: 4200,
                utime: 1500,
                stime: 250,
                cutime: 30,
                cstime: 7,
            }
        );
        assert_eq!(s.own_ticks(), 1750);
        assert_eq!(s.total_ticks(), 1787);
        assert!((ticks_to_secs(s.own_ticks()) - 17.5).abs() < 1e-9);
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_stat("").is_none());
        assert!(parse_stat("12 (x) S 1 2").is_none());
        assert!(parse_stat("x (y) S 1 1 1 0 -1 0 0 0 0 0 1 2 3 4").is_none());
    }

    #[test]
    fn parses_status_values() {
        let status = "Name:\tbeam.smp\nVmHWM:\t  123456 kB\nVmRSS:\t   99999 kB\n";
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(123_456));
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(99_999));
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
    }

    #[test]
    fn finds_the_whole_tree() {
        let p = |pid, ppid| ProcStat {
            pid,
            ppid,
            ..ProcStat::default()
        };
        // 10 → 11 → 13, 10 → 12; 20 is unrelated; 1 is init.
        let stats = [p(1, 0), p(13, 11), p(10, 1), p(11, 10), p(20, 1), p(12, 10)];
        let mut pids: Vec<u32> = descendants(10, &stats)
            .into_iter()
            .map(|i| stats[i].pid)
            .collect();
        pids.sort_unstable();
        assert_eq!(pids, [10, 11, 12, 13]);
        assert!(descendants(99, &stats).is_empty());
    }

    #[test]
    fn samples_this_process() {
        let me = std::process::id();
        let s = sample_tree(me).unwrap();
        assert!(s.processes >= 1);
        assert!(s.rss_kib > 0 && s.peak_rss_kib > 0);
        assert!(self_ticks().is_ok());
        assert!(matches!(sample_tree(u32::MAX), Err(BenchError::Proc(_))));
    }
}
