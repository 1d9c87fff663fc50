//! Smoke test of `ferry bench` (crates/ferry-bench): the real binary driving
//! the real broker for a few hundred messages, checking that the report is
//! coherent, plus a backlog fill/drain and the error paths. With
//! FERRY_TEST_AMQP_URL the runs go to that broker, without --broker-pid.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{unique, Broker};
use serde_json::Value;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A bench run that does not finish in this time is killed (and fails).
const RUN_LIMIT: Duration = Duration::from_secs(30);

/// Runs `ferry bench ARGS` and returns its output.
fn bench(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("bench")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ferry bench");
    let start = Instant::now();
    while child.try_wait().expect("try_wait").is_none() {
        if start.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            let out = child.wait_with_output().expect("wait");
            panic!(
                "ferry bench {args:?} ran over {RUN_LIMIT:?}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("wait")
}

/// Runs a bench that must succeed with `--json`; returns its one object.
fn bench_json(broker: &Broker, args: &[&str]) -> Value {
    let url = broker.amqp_url();
    let pid = (!broker.is_external()).then(|| broker.pid().to_string());
    let mut all = vec!["--uri", url.as_str(), "--json"];
    if let Some(pid) = &pid {
        all.extend(["--broker-pid", pid.as_str()]);
    }
    all.extend_from_slice(args);
    let out = bench(&all);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ferry bench {all:?} failed: {stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "exactly one JSON line: {stdout}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("bad JSON ({e}): {stdout}"))
}

fn num(v: &Value, field: &str) -> f64 {
    v[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} is not a number in {v}"))
}

fn assert_cpu_reported(broker: &Broker, r: &Value) {
    assert!(num(r, "client_cpu_us_per_msg") >= 0.0);
    if !broker.is_external() {
        assert!(num(r, "broker_cpu_us_per_msg") >= 0.0, "{r}");
        assert!(num(r, "broker_cpu_secs") >= 0.0, "{r}");
        assert!(num(r, "broker_peak_rss_kib") > 0.0, "{r}");
    }
}

#[tokio::test]
async fn bench_confirms_consumes_and_reports_coherent_numbers() {
    let broker = Broker::start().await;
    let prefix = unique("bench");
    let r = bench_json(
        &broker,
        &[
            "--queue-prefix",
            &prefix,
            "--count",
            "400",
            "--persistent",
            "--confirm",
            "64",
            "--prefetch",
            "100",
            "--multi-ack-every",
            "10",
        ],
    );
    assert_eq!(r["mode"], "normal");
    assert_eq!(r["complete"], true);
    for field in [
        "sent",
        "confirmed",
        "received",
        "latency_samples",
        "cpu_basis_msgs",
    ] {
        assert_eq!(num(&r, field), 400.0, "{field} in {r}");
    }
    assert_eq!(num(&r, "nacked"), 0.0);
    assert_eq!(r["cpu_basis"], "received");
    let (p50, p99, p999, max) = (
        num(&r, "latency_p50_us"),
        num(&r, "latency_p99_us"),
        num(&r, "latency_p999_us"),
        num(&r, "latency_max_us"),
    );
    assert!(0.0 < p50 && p50 <= p99 && p99 <= p999 && p999 <= max, "{r}");
    assert!(num(&r, "received_msgs_per_sec") > 0.0 && num(&r, "received_mb_per_sec") > 0.0);
    assert_cpu_reported(&broker, &r);

    // Fan-out: every message reaches each of the 3 queues.
    let r = bench_json(
        &broker,
        &[
            "--queue-prefix",
            &prefix,
            "--count",
            "100",
            "--exchange-type",
            "fanout",
            "--queues",
            "3",
            "--consumers",
            "3",
            "--auto-ack",
        ],
    );
    assert_eq!(
        (num(&r, "sent"), num(&r, "received")),
        (100.0, 300.0),
        "{r}"
    );
    assert_eq!(r["exchange_type"], "fanout");
    assert_cpu_reported(&broker, &r);

    // A refused login is a one-line error with the reply code.
    let url = broker.amqp_url().replacen("guest:guest", "guest:wrong", 1);
    let out = bench(&["--uri", &url, "--count", "1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("403"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

#[tokio::test]
async fn bench_fills_a_backlog_then_drains_it() {
    let broker = Broker::start().await;
    let prefix = unique("backlog");
    let base = [
        "--queue-prefix",
        prefix.as_str(),
        "--queues",
        "2",
        "--size",
        "1024",
    ];
    let mut fill = base.to_vec();
    fill.extend([
        "--publish-only",
        "--producers",
        "2",
        "--count",
        "150",
        "--persistent",
        "--confirm",
        "50",
    ]);
    let r = bench_json(&broker, &fill);
    assert_eq!(r["mode"], "publish_only");
    assert_eq!(
        (num(&r, "confirmed"), num(&r, "received")),
        (300.0, 0.0),
        "{r}"
    );
    assert_eq!(r["cpu_basis"], "confirmed");
    assert_cpu_reported(&broker, &r);

    let mut drain = base.to_vec();
    drain.extend([
        "--consume-only",
        "--consumers",
        "2",
        "--multi-ack-every",
        "25",
    ]);
    let r = bench_json(&broker, &drain);
    assert_eq!(r["mode"], "consume_only");
    assert_eq!((num(&r, "sent"), num(&r, "received")), (0.0, 300.0), "{r}");
    // Another process stamped these: no latency from them.
    assert_eq!(num(&r, "latency_samples"), 0.0);
    assert_cpu_reported(&broker, &r);

    // The drain deleted the queues.
    let (_conn, ch) = common::connect_channel(&broker.amqp_url()).await;
    let gone = ch
        .queue_declare(
            format!("{prefix}.0").as_str().into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await;
    assert_eq!(common::expect_amqp_err(gone, "passive declare").0, 404);
}

#[test]
fn bench_reports_an_unreachable_broker() {
    // A port nobody listens on: bind, note it, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = bench(&[
        "--uri",
        &format!("amqp://guest:guest@127.0.0.1:{port}/%2f"),
        "--json",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty());
    assert!(stderr.contains("cannot connect to 127.0.0.1"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}
