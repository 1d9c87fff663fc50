//! queue.declare of an existing queue: which properties and arguments must
//! match, and RabbitMQ's 406 texts when they do not.

use super::precondition;
use ferry_queue::error::Result;
use ferry_queue::queue::QueueSpec;
use ferry_route::{describe_bare, describe_typed, equivalent_arg};

/// Queue arguments RabbitMQ 3.10 checks on redeclaration.
const COMPARED_QUEUE_ARGS: &[&str] = &[
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-in-memory-length",
    "x-max-in-memory-bytes",
    "x-max-priority",
    "x-overflow",
    "x-queue-mode",
    "x-queue-type",
    "x-single-active-consumer",
    "x-quorum-initial-group-size",
    "x-delivery-limit",
    "x-queue-master-locator",
    // Streams.
    "x-max-age",
    "x-stream-max-segment-size-bytes",
    // Ferry's delayed retry.
    "x-retry-delay",
    "x-retry-backoff",
    "x-retry-multiplier",
    "x-retry-max-delay",
];

pub(super) fn check_queue_equivalent(cur: &QueueSpec, new: &QueueSpec, vhost: &str) -> Result<()> {
    let quoted = |b: bool| format!("'{b}'");
    let mismatch = |field: &str, got: String, have: String| {
        Err(precondition(format!(
            "inequivalent arg '{field}' for queue '{}' in vhost '{vhost}': received {got} but current is {have}",
            cur.name
        )))
    };
    if cur.durable != new.durable {
        return mismatch("durable", quoted(new.durable), quoted(cur.durable));
    }
    if cur.auto_delete != new.auto_delete {
        return mismatch(
            "auto_delete",
            quoted(new.auto_delete),
            quoted(cur.auto_delete),
        );
    }
    // RabbitMQ compares only the arguments it gives meaning to; others may
    // differ between declarations. Integers of any width are one type class.
    for key in COMPARED_QUEUE_ARGS {
        let got = new.arguments.get(key);
        let have = cur.arguments.get(key);
        match (got, have) {
            (None, None) => {}
            (Some(g), Some(h)) if equivalent_arg(h, g) => {}
            (Some(g), Some(h)) => return mismatch(key, describe_bare(g), describe_bare(h)),
            (Some(g), None) => return mismatch(key, describe_typed(g), "none".into()),
            (None, Some(h)) => return mismatch(key, "none".into(), describe_typed(h)),
        }
    }
    Ok(())
}
