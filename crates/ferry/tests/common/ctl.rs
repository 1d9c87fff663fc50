//! Running `ferry ctl` as a subprocess of the test binary, and finding the management API
//! it talks to (ctl.rs, ctl_policies.rs).

use super::Broker;
use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A ctl run that does not finish in this time is killed (and fails).
pub const RUN_LIMIT: Duration = Duration::from_secs(30);

/// Runs `ferry ctl --url URL ARGS` with `stdin` piped in.
pub fn ctl_with_stdin(url: &str, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("ctl")
        .arg("--url")
        .arg(url)
        .args(args)
        .env_remove("FERRY_USER")
        .env_remove("FERRY_PASSWORD")
        .env_remove("FERRY_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ferry ctl");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).unwrap();
    drop(input);
    let start = Instant::now();
    while child.try_wait().expect("try_wait").is_none() {
        if start.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            panic!("ferry ctl {args:?} ran over {RUN_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.wait_with_output().expect("wait")
}

/// Runs `ferry ctl --url URL ARGS` with an empty stdin.
pub fn ctl(url: &str, args: &[&str]) -> Output {
    ctl_with_stdin(url, args, b"")
}

/// Lossy UTF-8 of a captured stream.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The management API of the broker under test, or `None` (with a notice) while the
/// broker has none.
pub fn api(broker: &Broker, test: &str) -> Option<String> {
    if let Ok(url) = std::env::var("FERRY_TEST_HTTP_URL") {
        if !url.trim().is_empty() {
            return Some(url);
        }
    }
    let found = broker.endpoint("http").map(|a| format!("http://{a}"));
    if found.is_none() {
        let _ = writeln!(
            std::io::stderr(),
            "SKIP {test}: the broker reports no http= endpoint (set FERRY_TEST_HTTP_URL for an \
             external broker)"
        );
    }
    found
}
