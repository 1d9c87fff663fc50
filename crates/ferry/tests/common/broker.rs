//! [`Broker`]: the `ferry` binary under test (spawned on a fresh data dir,
//! restarted, killed, its stderr kept for a failing test) or an external
//! broker named by `FERRY_TEST_AMQP_URL`.

use super::process::{
    kill_group, lock_watchdog_pid, send_signal, set_parent_death_signal, test_budget, wait_briefly,
    Watchdog,
};
use super::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

/// How long the broker may take to print its READY line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a SIGTERM'd broker may take to exit.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
const STDERR_KEEP: usize = 64 * 1024;

/// A broker under test: either a `ferry` child process or an external broker.
pub struct Broker {
    external_url: Option<String>,
    data_dir: Option<tempfile::TempDir>,
    child: Option<Child>,
    addr: Option<String>,
    stderr: Arc<Mutex<Vec<u8>>>,
    starts: u32,
    watchdog: Option<Arc<Watchdog>>,
    /// Extra environment for the ferry process (`FERRY_*` settings).
    env: Vec<(String, String)>,
    /// Every `key=addr` of the READY line (`amqp`, and e.g. `http`, `metrics`, `amqps`).
    endpoints: std::collections::HashMap<String, String>,
}

impl Broker {
    /// Start a broker for a test that works against any AMQP 0-9-1 broker.
    pub async fn start() -> Broker {
        if let Some(url) = external_url() {
            return Broker {
                external_url: Some(url),
                data_dir: None,
                child: None,
                addr: None,
                stderr: Arc::default(),
                starts: 0,
                watchdog: None,
                env: Vec::new(),
                endpoints: Default::default(),
            };
        }
        Broker::spawn_new(Vec::new()).await
    }

    async fn spawn_new(env: Vec<(String, String)>) -> Broker {
        let dir = tempfile::Builder::new()
            .prefix("ferry-test-")
            .tempdir()
            .expect("create temp data dir");
        let mut broker = Broker {
            external_url: None,
            data_dir: Some(dir),
            child: None,
            addr: None,
            stderr: Arc::default(),
            starts: 0,
            watchdog: Some(Watchdog::start(test_budget())),
            env,
            endpoints: Default::default(),
        };
        broker.spawn().await;
        broker
    }

    /// Start a ferry process this test owns with extra `FERRY_*` settings in its
    /// environment. `None` (with a skip notice) against an external broker.
    pub async fn start_with_env(test: &str, env: &[(&str, &str)]) -> Option<Broker> {
        if skip_on_external(test, "needs its own configured broker") {
            return None;
        }
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Some(Broker::spawn_new(env).await)
    }

    /// Start a ferry process this test owns (it may restart/kill it). Returns `None` and
    /// prints a skip notice when the suite runs against an external broker.
    pub async fn start_owned(test: &str) -> Option<Broker> {
        if skip_on_external(test, "needs to restart/kill the broker") {
            return None;
        }
        Some(Broker::start().await)
    }

    /// Start a ferry process for a test that checks Ferry itself, not AMQP behaviour any
    /// broker shares (its `/metrics`, its log lines, a Ferry-only feature): `why` says
    /// which. Returns `None` and prints `SKIP {test}: {why}` against an external broker.
    pub async fn start_ferry_only(test: &str, why: &str) -> Option<Broker> {
        if skip_on_external(test, why) {
            return None;
        }
        Some(Broker::start().await)
    }

    pub fn is_external(&self) -> bool {
        self.external_url.is_some()
    }

    /// `amqp://guest:guest@127.0.0.1:PORT/%2f` for the current incarnation.
    pub fn amqp_url(&self) -> String {
        if let Some(url) = &self.external_url {
            return url.clone();
        }
        let addr = self.addr.as_ref().expect("broker is not running");
        format!("amqp://guest:guest@{addr}/%2f")
    }

    /// The address the READY line gave for `key` (`http`, `metrics`, `amqps`, ...), for a
    /// spawned ferry; `None` for an external broker or a listener that is off.
    pub fn endpoint(&self, key: &str) -> Option<String> {
        self.addr.as_ref()?;
        self.endpoints.get(key).cloned()
    }

    /// `127.0.0.1:PORT` of the AMQP listener (for raw-socket tests).
    pub fn amqp_addr(&self) -> String {
        if let Some(addr) = &self.addr {
            return addr.clone();
        }
        let url = self.external_url.as_ref().expect("no address");
        let rest = url.split("://").nth(1).unwrap_or(url);
        let rest = rest.rsplit('@').next().unwrap_or(rest);
        let hostport = rest.split('/').next().unwrap_or(rest);
        if hostport.contains(':') {
            hostport.to_string()
        } else {
            format!("{hostport}:5672")
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("no ferry child process").id()
    }

    pub fn data_dir(&self) -> &Path {
        self.data_dir.as_ref().expect("external broker").path()
    }

    /// Empties the data directory (a disk replaced, a volume wiped) while
    /// the broker is stopped.
    pub fn wipe_data_dir(&self) {
        assert!(self.child.is_none(), "wipe only a stopped broker");
        for e in std::fs::read_dir(self.data_dir()).expect("data dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                std::fs::remove_dir_all(&p).expect("wipe");
            } else {
                std::fs::remove_file(&p).expect("wipe");
            }
        }
    }

    /// Everything the broker printed on stderr so far (the last 64 KiB).
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Waits (bounded by `STEP`) until a stderr line satisfies `pred` and returns it: the
    /// broker's log reaches us through a pipe and a reader thread, so a line written just
    /// before an event the test saw (READY, a reply) may not be in the buffer yet.
    pub async fn wait_stderr_line(&self, pred: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + STEP;
        loop {
            let stderr = self.stderr();
            if let Some(l) = stderr.lines().find(|l| pred(l)) {
                return l.to_string();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no such stderr line within {STEP:?} in:\n{stderr}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, wait for a clean exit (code 0), then start again on the same data dir.
    pub async fn restart(&mut self) {
        let status = self.terminate().await;
        assert!(
            status.success(),
            "ferry did not exit cleanly after SIGTERM: {status}\n--- ferry stderr ---\n{}",
            self.stderr()
        );
        self.start_again().await;
    }

    /// SIGTERM and wait (bounded) for the process to exit; returns its exit status.
    pub async fn terminate(&mut self) -> ExitStatus {
        self.assert_owned("terminate");
        let pid = self.pid();
        send_signal(pid, libc::SIGTERM);
        let status = self.wait_exit(SHUTDOWN_TIMEOUT).await;
        self.addr = None;
        status
    }

    /// Waits (bounded) for the process to exit by itself (a node that
    /// left its cluster); returns its exit status.
    pub async fn wait_exited(&mut self) -> ExitStatus {
        self.assert_owned("wait_exited");
        let status = self.wait_exit(SHUTDOWN_TIMEOUT).await;
        self.addr = None;
        status
    }

    /// SIGKILL the broker (its whole process group) and reap it.
    pub async fn kill9(&mut self) {
        self.assert_owned("kill9");
        let mut child = self.child.take().expect("ferry is not running");
        let wd = self.watchdog.clone();
        let _guard = lock_watchdog_pid(&wd, true);
        kill_group(&mut child);
        let _ = child.wait();
        self.addr = None;
    }

    /// Start the binary again on the same data dir (after `kill9`/`terminate`).
    pub async fn start_again(&mut self) {
        self.assert_owned("start_again");
        assert!(self.child.is_none(), "ferry is still running");
        self.spawn().await;
    }

    fn assert_owned(&self, what: &str) {
        assert!(
            self.external_url.is_none(),
            "{what}() is impossible on an external broker; use Broker::start_owned"
        );
    }

    async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let wd = self.watchdog.clone();
                let mut guard = lock_watchdog_pid(&wd, false);
                let child = self.child.as_mut().expect("ferry is not running");
                if let Some(status) = child.try_wait().expect("try_wait") {
                    if let Some(g) = guard.as_mut() {
                        **g = None;
                    }
                    drop(guard);
                    self.child = None;
                    return status;
                }
            }
            if Instant::now() >= deadline {
                let mut child = self.child.take().unwrap();
                let wd = self.watchdog.clone();
                let guard = lock_watchdog_pid(&wd, true);
                kill_group(&mut child);
                let _ = child.wait();
                drop(guard);
                panic!(
                    "ferry did not exit within {timeout:?} after SIGTERM (killed it)\n--- ferry stderr ---\n{}",
                    self.stderr()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn spawn(&mut self) {
        let bin = binary_path();
        let dir = self.data_dir().to_path_buf();
        let mut cmd = Command::new(&bin);
        cmd.arg("server")
            .arg("--data-dir")
            .arg(&dir)
            .arg("--amqp-listen")
            .arg("127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Own process group: kill9 takes down any helper processes too, and a
            // Ctrl-C aimed at cargo does not race our own shutdown handling.
            .process_group(0);
        // Management and metrics listeners on ephemeral ports so parallel tests never
        // collide on 15672/15692; a test's own env (below) may override them.
        cmd.env("FERRY_HTTP_LISTEN", "127.0.0.1:0")
            .env("FERRY_METRICS_LISTEN", "127.0.0.1:0");
        cmd.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        set_parent_death_signal(&mut cmd);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", bin.display()));
        self.starts += 1;

        // stderr: keep the tail for diagnostics.
        let stderr = child.stderr.take().unwrap();
        let buf = self.stderr.clone();
        let echo = std::env::var_os("FERRY_TEST_ECHO_STDERR").is_some();
        let start_no = self.starts;
        {
            let mut b = buf.lock().unwrap();
            b.extend_from_slice(format!("=== start #{start_no} ===\n").as_bytes());
        }
        std::thread::spawn(move || {
            let mut stderr = stderr;
            let mut chunk = [0u8; 8192];
            loop {
                match stderr.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if echo {
                            eprint!("{}", String::from_utf8_lossy(&chunk[..n]));
                        }
                        let mut b = buf.lock().unwrap();
                        b.extend_from_slice(&chunk[..n]);
                        if b.len() > STDERR_KEEP {
                            let cut = b.len() - STDERR_KEEP;
                            b.drain(..cut);
                        }
                    }
                }
            }
        });

        // stdout: the first FERRY_READY line, then keep draining.
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<String>();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            let mut seen = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.trim().strip_prefix("FERRY_READY ") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(rest.to_string());
                    }
                } else if tx.is_some() && seen.len() < 20 {
                    seen.push(line);
                }
            }
        });

        let ready = tokio::time::timeout(READY_TIMEOUT, rx).await;
        let fields = match ready {
            Ok(Ok(fields)) => fields,
            Ok(Err(_)) => {
                // stdout closed without READY: the process most likely exited.
                let status = wait_briefly(&mut child);
                let _ = kill_group(&mut child);
                let _ = child.wait();
                // Give the stderr thread a moment to collect the last output.
                std::thread::sleep(Duration::from_millis(50));
                panic!(
                    "ferry ({}) closed stdout without printing `FERRY_READY amqp=...` ({}).\n\
                     Is the binary implemented yet? (src/main.rs may still be a placeholder.)\n\
                     To run the broker-agnostic tests against RabbitMQ, set FERRY_TEST_AMQP_URL.\n\
                     --- ferry stderr ---\n{}",
                    bin.display(),
                    status.map_or("still running".to_string(), |s| s.to_string()),
                    self.stderr()
                );
            }
            Err(_) => {
                kill_group(&mut child);
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(50));
                panic!(
                    "ferry did not print `FERRY_READY amqp=...` within {READY_TIMEOUT:?}\n--- ferry stderr ---\n{}",
                    self.stderr()
                );
            }
        };
        self.endpoints = fields
            .split_whitespace()
            .filter_map(|f| f.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let addr = self
            .endpoints
            .get("amqp")
            .unwrap_or_else(|| panic!("malformed READY line: `FERRY_READY {fields}`"))
            .clone();
        assert!(
            !addr.ends_with(":0"),
            "READY line must carry the bound port, got {addr}"
        );
        self.addr = Some(addr);
        if let Some(w) = &self.watchdog {
            *w.pid.lock().unwrap() = Some(child.id());
        }
        self.child = Some(child);
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(w) = &self.watchdog {
            w.disarm();
            *w.pid.lock().unwrap() = None;
        }
        if std::thread::panicking() && self.external_url.is_none() {
            // Shown by libtest with the failing test's output.
            eprintln!(
                "--- ferry stderr (data dir {}) ---\n{}",
                self.data_dir().display(),
                self.stderr()
            );
        }
        if let Some(mut child) = self.child.take() {
            kill_group(&mut child);
            let _ = child.wait();
        }
    }
}

/// True (after printing `SKIP {test}: {why}, impossible with FERRY_TEST_AMQP_URL`) when
/// the suite runs against an external broker. Straight to the process's stderr, so the
/// reason shows without --nocapture.
fn skip_on_external(test: &str, why: &str) -> bool {
    if external_url().is_none() {
        return false;
    }
    let _ = writeln!(
        std::io::stderr(),
        "SKIP {test}: {why}, impossible with FERRY_TEST_AMQP_URL"
    );
    true
}

pub fn external_url() -> Option<String> {
    std::env::var("FERRY_TEST_AMQP_URL")
        .ok()
        .filter(|s| !s.trim().is_empty())
}

fn binary_path() -> PathBuf {
    match std::env::var_os("FERRY_TEST_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_ferry")),
    }
}
