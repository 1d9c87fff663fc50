//! Configuration and logs of the real binary: `ferry.example.toml` starts a working broker,
//! `log_format = "json"` writes one JSON object per stderr line, and bad settings stop the
//! start with exit code 2. (That the example lists every setting is a unit test in
//! crates/ferry/src/settings.rs.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Broker;
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn example_path() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/../../ferry.example.toml").to_string()
}

#[tokio::test]
async fn example_config_starts_a_working_broker() {
    let example = example_path();
    // The harness's --data-dir/--amqp-listen flags and FERRY_*_LISTEN variables take
    // precedence over the file's ports, so this runs beside other tests.
    let Some(broker) = Broker::start_with_env(
        "example_config_starts_a_working_broker",
        &[("FERRY_CONFIG", example.as_str())],
    )
    .await
    else {
        return;
    };
    let (_conn, ch) = common::connect_channel(&broker.amqp_url()).await;
    let q = common::declare_queue(&ch, "example-config").await;
    let confirm = common::confirm_channel(&_conn).await;
    common::publish_settled(&confirm, &q, &["hello"]).await;
    assert_eq!(common::drain_get(&ch, &q).await, ["hello"]);
    // Text logs by default, without terminal colours on a pipe.
    let started = broker
        .wait_stderr_line(|l| l.contains("ferry started"))
        .await;
    assert!(
        !started.contains('\u{1b}'),
        "ANSI codes in a piped log: {started:?}"
    );
    assert!(
        serde_json::from_str::<Value>(&started).is_err(),
        "{started}"
    );
}

#[tokio::test]
async fn json_log_format_writes_one_object_per_line() {
    let Some(broker) = Broker::start_with_env(
        "json_log_format_writes_one_object_per_line",
        &[("FERRY_LOG_FORMAT", "json"), ("FERRY_LOG_LEVEL", "info")],
    )
    .await
    else {
        return;
    };
    let line = broker
        .wait_stderr_line(|l| l.contains("ferry started"))
        .await;
    let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(v["level"], "INFO", "{v}");
    assert_eq!(v["message"], "ferry started", "{v}");
    assert_eq!(v["amqp"], broker.amqp_addr(), "{v}");
    assert!(v["timestamp"].is_string(), "{v}");
    // Every log line is JSON (the harness's own "=== start #N ===" marker aside).
    for l in broker.stderr().lines().filter(|l| !l.starts_with("===")) {
        assert!(
            serde_json::from_str::<Value>(l).is_ok(),
            "not a JSON line: {l:?}"
        );
    }
}

/// Runs `ferry ARGS` (a start that must fail fast) and returns (exit code, stderr).
fn failed_start(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .arg("--data-dir")
        .arg(dir.path())
        .arg("--amqp-listen")
        .arg("127.0.0.1:0")
        .envs(env.iter().copied())
        .env("FERRY_HTTP_LISTEN", "127.0.0.1:0")
        .env("FERRY_METRICS_LISTEN", "127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + common::STEP;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("ferry {args:?} {env:?} started instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_log_settings_refuse_to_start() {
    let (code, stderr) = failed_start(&["server", "--log-format", "xml"], &[]);
    assert_eq!(code, Some(2), "{stderr}");
    let (code, stderr) = failed_start(&["server"], &[("FERRY_LOG_FORMAT", "xml")]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("FERRY_LOG_FORMAT"), "{stderr}");
    let (code, stderr) = failed_start(&["server"], &[("FERRY_LOG_LEVEL", "info,=[")]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("invalid log_level"), "{stderr}");
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "log_formatt = \"json\"\n").unwrap();
    let (code, stderr) = failed_start(&["server", "--config", bad.to_str().unwrap()], &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("log_formatt"), "{stderr}");
}
