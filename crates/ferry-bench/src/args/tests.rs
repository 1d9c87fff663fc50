#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    bench: BenchArgs,
}

fn plan(flags: &[&str]) -> Result<Plan, BenchError> {
    let argv = std::iter::once("bench").chain(flags.iter().copied());
    Plan::new(
        Cli::try_parse_from(argv)
            .map_err(|e| BenchError::Usage(e.to_string()))?
            .bench,
    )
}

#[test]
fn defaults() {
    let p = plan(&[]).unwrap();
    assert_eq!(p.mode, Mode::Normal);
    assert_eq!((p.producers, p.consumers), (1, 1));
    assert_eq!(p.queues, ["bench.0"]);
    assert_eq!(p.duration, Some(10.0));
    assert_eq!(p.args.prefetch, 500);
    assert!(p.progress);
    assert_eq!(p.route(0), (String::new(), "bench.0".to_string()));
    assert!(!plan(&["--json"]).unwrap().progress);
    assert!(plan(&["--json", "--progress"]).unwrap().progress);
}

#[test]
fn the_contracts_flags_parse() {
    let p = plan(&[
        "--uri",
        "amqp://u:p@127.0.0.1:5699/%2f",
        "--producers",
        "200",
        "--consumers",
        "200",
        "--queues",
        "200",
        "--queue-prefix",
        "s4",
        "--size",
        "4096",
        "--persistent",
        "--confirm",
        "256",
        "--prefetch",
        "500",
        "--multi-ack-every",
        "50",
        "--rate",
        "5000",
        "--duration",
        "2.5",
        "--queue-arg",
        "x-queue-type=quorum",
        "--queue-arg",
        "x-max-length=10",
        "--no-durable-queue",
        "--broker-pid",
        "1",
        "--json",
        "--threads",
        "2",
    ])
    .unwrap();
    assert_eq!((p.producers, p.consumers, p.queues.len()), (200, 200, 200));
    assert_eq!(p.queues[199], "s4.199");
    assert_eq!(p.route(7), (String::new(), "s4.7".to_string()));
    assert_eq!(p.consumer_queue(7), "s4.7");
    assert_eq!(p.duration, Some(2.5));
    assert_eq!(
        p.queue_args.inner().get("x-max-length"),
        Some(&AMQPValue::LongLongInt(10))
    );
    assert_eq!(
        p.queue_args.inner().get("x-queue-type"),
        Some(&AMQPValue::LongString("quorum".into()))
    );
}

#[test]
fn fan_out_routes_every_producer_to_the_exchange() {
    let p = plan(&[
        "--exchange-type",
        "fanout",
        "--queues",
        "10",
        "--consumers",
        "10",
    ])
    .unwrap();
    assert_eq!(p.route(0), ("bench.x".to_string(), String::new()));
    assert_eq!(p.expected_received(100), 1000);
    let t = plan(&["--exchange-type", "topic", "--queues", "2"]).unwrap();
    assert_eq!(t.route(0).1, "bench.bench");
    assert_eq!(t.binding_key(), "bench.#");
    let d = plan(&["--exchange-type", "direct"]).unwrap();
    assert_eq!(d.route(3), ("bench.x".to_string(), "bench".to_string()));
    assert_eq!(d.binding_key(), "bench");
}

#[test]
fn expected_received_follows_the_mapping() {
    // 3 producers on 2 queues: queue 0 gets producers 0 and 2.
    let p = plan(&["--producers", "3", "--queues", "2", "--consumers", "1"]).unwrap();
    assert_eq!(p.expected_received(10), 20);
    let p = plan(&["--producers", "3", "--queues", "2", "--consumers", "4"]).unwrap();
    assert_eq!(p.expected_received(10), 30);
}

#[test]
fn modes() {
    let p = plan(&["--publish-only", "--consumers", "5"]).unwrap();
    assert_eq!((p.mode, p.consumers), (Mode::PublishOnly, 0));
    let p = plan(&["--consume-only", "--producers", "5"]).unwrap();
    assert_eq!(
        (p.mode, p.producers, p.duration),
        (Mode::ConsumeOnly, 0, None)
    );
    let p = plan(&["--idle-connections", "5000", "--duration", "3"]).unwrap();
    assert_eq!(p.mode, Mode::IdleConnections);
    assert!(plan(&["--publish-only", "--consume-only"]).is_err());
}

#[test]
fn bad_combinations_are_usage_errors() {
    for flags in [
        &["--multi-ack-every", "600"][..],
        &["--producers", "0", "--consumers", "0"],
        &["--count", "0"],
        &["--rate", "-1"],
        &["--duration", "0"],
        &["--queues", "0"],
        &["--queue-arg", "novalue"],
        &["--exchange-type", "headers"],
    ] {
        assert!(
            matches!(plan(flags), Err(BenchError::Usage(_))),
            "{flags:?}"
        );
    }
    // With auto-ack the ack batch does not matter.
    assert!(plan(&["--multi-ack-every", "600", "--auto-ack"]).is_ok());
}

#[test]
fn queue_arg_types() {
    let t = parse_queue_args(&["a=-5".into(), "b=true".into(), "c=x=y".into()]).unwrap();
    assert_eq!(t.inner().get("a"), Some(&AMQPValue::LongLongInt(-5)));
    assert_eq!(t.inner().get("b"), Some(&AMQPValue::Boolean(true)));
    assert_eq!(
        t.inner().get("c"),
        Some(&AMQPValue::LongString("x=y".into()))
    );
}
