//! Shared black-box test harness for the `ferry` binary.
//!
//! * [`Broker::start`] spawns the real binary (`ferry server --data-dir DIR --amqp-listen
//!   127.0.0.1:0`) on a fresh temporary data dir and waits for the single
//!   `FERRY_READY amqp=127.0.0.1:PORT` line on stdout.
//! * If `FERRY_TEST_AMQP_URL` is set (e.g. `amqp://guest:guest@127.0.0.1:5672/%2f`), no
//!   process is spawned: the handle points at that external broker (a RabbitMQ used as the
//!   reference implementation). Tests that need to restart or kill the broker call
//!   [`Broker::start_owned`], which returns `None` (after printing why) in that mode.
//! * `FERRY_TEST_BIN` overrides the binary path (default: `CARGO_BIN_EXE_ferry`), e.g. to run
//!   the restart/crash scenarios against a wrapper script around another broker.
//! * `FERRY_TEST_ECHO_STDERR=1` copies the broker's stderr to the test's stderr live.
//! * `FERRY_TEST_TIMEOUT_SECS` (default 60): a watchdog SIGKILLs a spawned broker that is
//!   still running after that long, so a hung call fails its test instead of the suite.
//! * When a test panics, the broker's stderr (last 64 KiB) is printed with its output.
//!
//! Each test binary compiles this module separately and uses a different subset of it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod raw;

use futures_lite::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
use lapin::protocol::AMQPErrorKind;
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties, Consumer, ErrorKind};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long the broker may take to print its READY line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a SIGTERM'd broker may take to exit.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// Default bound for "this should happen promptly" waits.
pub const STEP: Duration = Duration::from_secs(10);

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
        if external_url().is_some() {
            let _ = writeln!(
                std::io::stderr(),
                "SKIP {test}: needs its own configured broker, impossible with FERRY_TEST_AMQP_URL"
            );
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
        if external_url().is_some() {
            // Straight to the process's stderr, so the reason shows without --nocapture.
            let _ = writeln!(
                std::io::stderr(),
                "SKIP {test}: needs to restart/kill the broker, impossible with FERRY_TEST_AMQP_URL"
            );
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

    /// Everything the broker printed on stderr so far (the last 64 KiB).
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
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

/// Per-broker time budget: past it, the watchdog SIGKILLs the broker so that a hung test
/// (e.g. an RPC the broker never answers) fails promptly instead of blocking the suite.
pub fn test_budget() -> Duration {
    let secs = std::env::var("FERRY_TEST_TIMEOUT_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    Duration::from_secs(secs)
}

struct Watchdog {
    pid: Mutex<Option<u32>>,
    done: Mutex<bool>,
    cv: std::sync::Condvar,
}

impl Watchdog {
    fn start(budget: Duration) -> Arc<Watchdog> {
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

    fn disarm(&self) {
        *self.done.lock().unwrap() = true;
        self.cv.notify_all();
    }
}

/// Lock the watchdog's pid slot (so it cannot fire at a pid being reaped), optionally
/// clearing it.
fn lock_watchdog_pid(
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
fn kill_pgid(pid: u32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(-(pid as libc::pid_t), libc::SIGKILL);
    }
}

fn wait_briefly(child: &mut Child) -> Option<ExitStatus> {
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

#[allow(unsafe_code)]
fn send_signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
}

#[allow(unsafe_code)]
fn kill_group(child: &mut Child) -> bool {
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
fn set_parent_death_signal(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe; the closure allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

// ---------------------------------------------------------------------------
// lapin helpers

/// Connect with lapin (tokio), failing with a clear message after a deadline.
pub async fn connect(url: &str) -> Connection {
    match tokio::time::timeout(
        STEP,
        Connection::connect(url, ConnectionProperties::default()),
    )
    .await
    {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => panic!("cannot connect to {url}: {e}"),
        Err(_) => panic!("connecting to {url} timed out"),
    }
}

/// A connection plus one channel.
pub async fn connect_channel(url: &str) -> (Connection, Channel) {
    let conn = connect(url).await;
    let ch = conn.create_channel().await.expect("create channel");
    (conn, ch)
}

/// A name unique across test processes and runs (safe on a shared external broker).
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("ferry-test.{prefix}.{}.{nanos:x}.{n}", std::process::id())
}

/// Declare a plain (non-durable, non-exclusive) queue with a unique name.
pub async fn declare_queue(ch: &Channel, prefix: &str) -> String {
    let name = unique(prefix);
    ch.queue_declare(
        name.as_str().into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("queue.declare");
    name
}

/// Ready message count of a queue (passive declare).
pub async fn message_count(ch: &Channel, queue: &str) -> u32 {
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("passive queue.declare")
    .message_count()
}

pub async fn consume(ch: &Channel, queue: &str, options: BasicConsumeOptions) -> Consumer {
    ch.basic_consume(queue.into(), "".into(), options, FieldTable::default())
        .await
        .expect("basic.consume")
}

/// Receive exactly `n` deliveries within `timeout` (panics with the count so far otherwise).
pub async fn recv_n(consumer: &mut Consumer, n: usize, timeout: Duration) -> Vec<Delivery> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match tokio::time::timeout_at(deadline, consumer.next()).await {
            Ok(Some(Ok(d))) => out.push(d),
            Ok(Some(Err(e))) => panic!("consumer error after {} of {n} deliveries: {e}", out.len()),
            Ok(None) => panic!("consumer ended after {} of {n} deliveries", out.len()),
            Err(_) => panic!(
                "timed out after {timeout:?} with {} of {n} deliveries",
                out.len()
            ),
        }
    }
    out
}

/// Receive one delivery within `timeout`.
pub async fn recv_one(consumer: &mut Consumer, timeout: Duration) -> Delivery {
    recv_n(consumer, 1, timeout).await.pop().unwrap()
}

/// Assert that nothing is delivered for `quiet` (a bounded negative check).
pub async fn assert_no_delivery(consumer: &mut Consumer, quiet: Duration) {
    if let Ok(item) = tokio::time::timeout(quiet, consumer.next()).await {
        match item {
            Some(Ok(d)) => panic!(
                "unexpected delivery (tag {}, body {:?})",
                d.delivery_tag,
                String::from_utf8_lossy(&d.data)
            ),
            Some(Err(e)) => panic!("unexpected consumer error: {e}"),
            None => panic!("consumer unexpectedly ended"),
        }
    }
}

/// Wait (bounded) for the consumer stream to end, skipping nothing: any delivery is an error.
pub async fn expect_consumer_end(consumer: &mut Consumer, timeout: Duration) {
    match tokio::time::timeout(timeout, consumer.next()).await {
        Ok(None) => {}
        Ok(Some(Ok(d))) => panic!("expected consumer end, got delivery {}", d.delivery_tag),
        Ok(Some(Err(e))) => panic!("expected a clean consumer end, got error {e}"),
        Err(_) => panic!("consumer did not end within {timeout:?}"),
    }
}

/// The (reply code, reply text) of an AMQP error returned by lapin; panics otherwise.
pub fn amqp_error(err: &lapin::Error) -> (u16, String) {
    match err.kind() {
        ErrorKind::ProtocolError(e) => (e.get_id(), e.get_message().to_string()),
        other => panic!("expected an AMQP protocol error, got {other:?} ({err})"),
    }
}

/// Whether the AMQP error is connection-level (hard).
pub fn is_hard(err: &lapin::Error) -> bool {
    match err.kind() {
        ErrorKind::ProtocolError(e) => matches!(e.kind(), AMQPErrorKind::Hard(_)),
        _ => false,
    }
}

/// Unwrap an expected AMQP error from a lapin result and return (code, text).
pub fn expect_amqp_err<T: std::fmt::Debug>(res: lapin::Result<T>, what: &str) -> (u16, String) {
    match res {
        Ok(v) => panic!("{what}: expected an AMQP error, got Ok({v:?})"),
        Err(e) => amqp_error(&e),
    }
}

/// Deterministic pseudo-random bytes (xorshift), for large bodies.
pub fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn body_str(d: &Delivery) -> String {
    String::from_utf8_lossy(&d.data).into_owned()
}

pub fn bodies(ds: &[Delivery]) -> Vec<String> {
    ds.iter().map(body_str).collect()
}

// ---------------------------------------------------------------------------
// publishing helpers
//
// NOTE (RabbitMQ behaviour the tests must tolerate): a publish is routed to the queue
// asynchronously, and RabbitMQ answers queue.declare(passive)/basic.get/queue.purge from the
// queue process with *priority* over pending deliveries, so a count taken right after a
// plain publish on the same channel may not include it yet. Tests that count therefore
// publish on a confirm-mode channel and wait for the confirms first (`settle`).

/// A new channel in confirm mode.
pub async fn confirm_channel(conn: &Connection) -> Channel {
    let ch = conn.create_channel().await.expect("create channel");
    ch.confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await
        .expect("confirm.select");
    ch
}

/// Publish with default properties (does not wait for a confirm).
pub async fn publish(ch: &Channel, exchange: &str, routing_key: &str, body: &[u8]) {
    publish_props(
        ch,
        exchange,
        routing_key,
        body,
        lapin::BasicProperties::default(),
    )
    .await;
}

pub async fn publish_props(
    ch: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    props: lapin::BasicProperties,
) {
    let _confirm = ch
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            lapin::options::BasicPublishOptions::default(),
            body,
            props,
        )
        .await
        .expect("basic.publish");
}

/// Wait for every outstanding confirm on a confirm-mode channel; panics on a nack or return.
pub async fn settle(ch: &Channel) {
    let returned = tokio::time::timeout(Duration::from_secs(30), ch.wait_for_confirms())
        .await
        .expect("confirms did not arrive in time")
        .expect("wait_for_confirms");
    assert!(
        returned.is_empty(),
        "unexpected returned messages: {returned:?}"
    );
}

/// Publish `bodies` to a queue via the default exchange on a confirm channel and settle.
pub async fn publish_settled(ch: &Channel, queue: &str, bodies: &[&str]) {
    for b in bodies {
        publish(ch, "", queue, b.as_bytes()).await;
    }
    settle(ch).await;
}

/// Drain a queue with basic.get (no-ack) and return the bodies in order.
pub async fn drain_get(ch: &Channel, queue: &str) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(m) = ch
        .basic_get(
            queue.into(),
            lapin::options::BasicGetOptions { no_ack: true },
        )
        .await
        .expect("basic.get")
    {
        out.push(body_str(&m.delivery));
        assert!(out.len() < 1_000_000, "queue never drains");
    }
    out
}

/// Declare an exchange (non-durable unless `durable`).
pub async fn declare_exchange(
    ch: &Channel,
    name: &str,
    kind: lapin::ExchangeKind,
    args: FieldTable,
) {
    ch.exchange_declare(
        name.into(),
        kind,
        lapin::options::ExchangeDeclareOptions::default(),
        args,
    )
    .await
    .expect("exchange.declare");
}

pub async fn bind(ch: &Channel, queue: &str, exchange: &str, key: &str, args: FieldTable) {
    ch.queue_bind(
        queue.into(),
        exchange.into(),
        key.into(),
        lapin::options::QueueBindOptions::default(),
        args,
    )
    .await
    .expect("queue.bind");
}

/// Watch a channel for a server-initiated channel.close.
///
/// lapin quirk: after an asynchronous channel error (e.g. a bad ack or a publish to a missing
/// exchange) the *next* RPC on that channel may fail client-side with
/// `InvalidChannelState(Closing)` instead of the broker's error, depending on timing. The
/// reliable way to read the broker's code/text is a consumer on the channel: lapin hands the
/// close error to every consumer of the channel.
pub async fn watch_channel(ch: &Channel) -> Consumer {
    let q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("watch queue.declare");
    consume(
        ch,
        q.name().as_str(),
        BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        },
    )
    .await
}

/// The (code, text) of the channel.close observed by a `watch_channel` consumer.
pub async fn expect_channel_error(watch: &mut Consumer) -> (u16, String) {
    match tokio::time::timeout(STEP, watch.next()).await {
        Ok(Some(Err(e))) => amqp_error(&e),
        Ok(Some(Ok(d))) => panic!("expected a channel error, got delivery {}", d.delivery_tag),
        Ok(None) => panic!("expected a channel error, the consumer just ended"),
        Err(_) => panic!("no channel error within {STEP:?}"),
    }
}
