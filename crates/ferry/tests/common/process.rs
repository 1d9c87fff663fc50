//! The broker process's safety nets: a watchdog that SIGKILLs a broker
//! still running past the test's budget (a hung call then fails its test
//! instead of blocking the suite), process-group signals, and the parent
//! death signal so a killed test run leaves no broker behind.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Per-broker time budget: past it, the watchdog SIGKILLs the broker so that a hung test
/// (e.g. an RPC the broker never answers) fails promptly instead of blocking the suite.
pub fn test_budget() -> Duration {
    let secs = std::env::var("FERRY_TEST_TIMEOUT_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    Duration::from_secs(secs)
}

pub(super) struct Watchdog {
    pub(super) pid: Mutex<Option<u32>>,
    done: Mutex<bool>,
    cv: std::sync::Condvar,
}

impl Watchdog {
    pub(super) fn start(budget: Duration) -> Arc<Watchdog> {
        let w = Arc::new(Watchdog {
            pid: Mutex::new(None),
            done: Mutex::new(false),
            cv: std::sync::Condvar::new(),
        });
        let w2 = w.clone();
        std::thread::spawn(move || {
            let deadline = Instant::now() + budget;
            let mut done = w2.done.lock().unwrap();
            while !*done {
                let now = Instant::now();
                if now >= deadline {
                    if let Some(pid) = *w2.pid.lock().unwrap() {
                        eprintln!(
                            "WATCHDOG: test still running after {budget:?} (FERRY_TEST_TIMEOUT_SECS); \
                             SIGKILLing ferry (pid {pid}) so that hung calls fail"
                        );
                        kill_pgid(pid);
                    }
                    return;
                }
                done = w2.cv.wait_timeout(done, deadline - now).unwrap().0;
            }
        });
        w
    }

    pub(super) fn disarm(&self) {
        *self.done.lock().unwrap() = true;
        self.cv.notify_all();
    }
}

/// Lock the watchdog's pid slot (so it cannot fire at a pid being reaped), optionally
/// clearing it.
pub(super) fn lock_watchdog_pid(
    wd: &Option<Arc<Watchdog>>,
    clear: bool,
) -> Option<std::sync::MutexGuard<'_, Option<u32>>> {
    let mut g = wd.as_ref()?.pid.lock().unwrap();
    if clear {
        *g = None;
    }
    Some(g)
}

#[allow(unsafe_code)]
pub(super) fn kill_pgid(pid: u32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(-(pid as libc::pid_t), libc::SIGKILL);
    }
}

pub(super) fn wait_briefly(child: &mut Child) -> Option<ExitStatus> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[allow(unsafe_code)]
pub(super) fn send_signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
}

#[allow(unsafe_code)]
pub(super) fn kill_group(child: &mut Child) -> bool {
    let pid = child.id() as libc::pid_t;
    // SAFETY: kill(2) has no memory-safety preconditions. The child leads its own
    // process group (process_group(0)), so -pid addresses exactly its group.
    let rc = unsafe { libc::kill(-pid, libc::SIGKILL) };
    if rc != 0 {
        let _ = child.kill();
    }
    rc == 0
}

#[allow(unsafe_code)]
pub(super) fn set_parent_death_signal(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe; the closure allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}
