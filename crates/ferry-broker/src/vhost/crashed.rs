//! Crashed queues: a stored queue or stream whose log is damaged (a record
//! with a valid checksum that does not decode, a checksum failing in a
//! sealed segment) is kept as a definition only, so the rest of the node
//! starts and serves. A failing disk (I/O errors, a failed fsync) still
//! fails the boot: that is no single queue's problem.
//!
//! A running stream whose consumer reaches a record that does not decode
//! (or fails its checksum) in the middle of its log crashes the same way
//! at once: its consumers are cancelled (basic.cancel with
//! `consumer_cancel_notify`, as for a deleted queue), the corrupt record is
//! never delivered, and it is reported as below.
//!
//! What a crashed queue does, as RabbitMQ 3.10 does for a queue whose
//! process crashed and failed to restart:
//! - the boot (or the stream, when it finds the bad record) logs it at
//!   ERROR with the reason, once;
//! - the management API lists it with `"state": "crashed"`, the metrics
//!   count it (`ferry_queues_crashed`); the overview counts it among the
//!   queues (`object_totals`), its bindings are listed;
//! - queue.declare (passive or not), basic.consume, basic.get and
//!   queue.purge answer 404 `NOT_FOUND - queue 'q' in vhost '/' has
//!   crashed and failed to restart` (RabbitMQ's `absent(Q, crashed)`);
//! - publishes do not reach it (unroutable through it); bindings to it
//!   are kept, and can be added or removed;
//! - queue.delete (AMQP or HTTP) deletes it with its files (message
//!   count 0), which is how the operator recovers;
//! - its definition is kept in the definitions file and exports.
//!
//! Owns the [`CrashedQueue`] record; the registry (`registry.rs`) holds
//! the entries and answers for them, the vhost deletes them.

use ferry_queue::queue::QueueSpec;

/// A stored queue or stream that could not be opened.
#[derive(Debug, Clone)]
pub struct CrashedQueue {
    /// Its declared shape (from the definitions file).
    pub spec: QueueSpec,
    /// `classic`, `quorum` or `stream` (from `x-queue-type`).
    pub kind: &'static str,
    /// Why it could not be opened.
    pub reason: String,
}

impl CrashedQueue {
    pub(super) fn new(spec: QueueSpec, reason: String) -> Self {
        let kind = match spec
            .arguments
            .get("x-queue-type")
            .and_then(ferry_model::args::text)
        {
            Some("stream") => "stream",
            Some("quorum") => "quorum",
            _ => "classic",
        };
        CrashedQueue { spec, kind, reason }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use crate::test_support::{broker, message, ms as s, mtable as table, spec, T0};
    use ferry_log::{Log, SimIo};
    use ferry_model::Table;
    use ferry_queue::clock::ManualClock;
    use ferry_queue::error::ErrorKind;
    use ferry_route::Destination;
    use std::sync::Arc;

    /// Appends `payload` as one whole record (valid CRC) to the log of
    /// `name` in vhost `/` of the broker stored in `io`.
    fn append_record(io: &SimIo, v: &crate::VHost, name: &str, payload: &[u8]) {
        let storage = v.registry.get(name).unwrap().storage;
        let dir = v.dir.join("queues").join(storage);
        let (mut log, _) = Log::open(io.shared(), &dir, v.env.log.clone()).unwrap();
        log.append(payload).unwrap();
        log.flush().unwrap();
    }

    /// An Enqueue record whose routing key is not UTF-8: what a cut
    /// in the middle of a character produced before the limits.
    const BAD_ENQUEUE: &[u8] = &[1, 1, 1, b'x', 2, 0xC3, 0x28, 0, 0, 0, 0, b'b'];

    fn bad_stream_record() -> Vec<u8> {
        let mut r = vec![b'S'];
        r.extend_from_slice(&T0.to_le_bytes());
        r.extend_from_slice(&[1, 0, 2, 0xC3, 0x28, 0, 0, 0, 0]);
        r
    }

    #[test]
    fn undecodable_records_crash_their_queue_not_the_node() {
        let io = SimIo::new();
        let clock = ManualClock::new(T0);
        let b = broker(&io, &clock);
        let v = b.vhost("/").unwrap();
        let stream = table(&[("x-queue-type", s("stream"))]);
        for (name, args) in [
            ("good", Table::new()),
            ("bad", Table::new()),
            ("bad-stream", stream.clone()),
        ] {
            v.declare_queue(spec(name, true, args), false, 1).unwrap();
            let d = Destination::queue(name);
            v.binding(true, "amq.fanout", d, "", Table::new(), 1)
                .unwrap();
        }
        for q in ["good", "bad", "bad-stream"] {
            let m = Arc::new(ferry_model::Message {
                routing_key: Arc::from(q),
                ..message("m", true)
            });
            let mut out = Vec::new();
            v.route("", &m, None, &mut out).unwrap();
            out[0].publish(&m, None).unwrap();
        }
        b.shutdown();
        append_record(&io, &v, "bad", BAD_ENQUEUE);
        append_record(&io, &v, "bad-stream", &bad_stream_record());
        drop((v, b));

        let b = broker(&io, &clock);
        let v = b.vhost("/").unwrap();
        let crashed: Vec<(String, &str)> = v
            .crashed_queues()
            .iter()
            .map(|c| (c.spec.name.to_string(), c.kind))
            .collect();
        assert_eq!(
            crashed,
            [
                ("bad".to_string(), "classic"),
                ("bad-stream".to_string(), "stream")
            ]
        );
        assert!(v.crashed_queue("bad").unwrap().reason.contains("utf-8"));
        // The rest serves.
        let good = v.queue_for("good", 1).unwrap();
        assert_eq!(good.counts().0, 1);
        // Every use of a crashed queue: RabbitMQ's 404.
        let text = "queue 'bad' in vhost '/' has crashed and failed to restart";
        for passive in [true, false] {
            let e = v
                .declare_queue(spec("bad", true, Table::new()), passive, 1)
                .unwrap_err();
            assert_eq!(
                (e.kind(), e.to_string()),
                (ErrorKind::NotFound, text.into())
            );
        }
        assert_eq!(v.queue_for("bad", 1).unwrap_err().to_string(), text);
        assert_eq!(v.purge_queue("bad", 1).unwrap_err().to_string(), text);
        // Publishes do not reach it; the others still get theirs.
        let mut out = Vec::new();
        v.route("amq.fanout", &message("n", true), None, &mut out)
            .unwrap();
        assert_eq!(out.len(), 1, "only 'good' is routable");
        // A later definitions save keeps the crashed ones.
        v.declare_queue(spec("other", true, Table::new()), false, 1)
            .unwrap();
        b.shutdown();
        drop((v, b));
        let b = broker(&io, &clock);
        let v = b.vhost("/").unwrap();
        assert_eq!(v.crashed_queues().len(), 2);
        assert!(v.queue_for("other", 1).is_ok());
        // One name space: crashed entries count against `max-queues` (as
        // RabbitMQ counts every queue record of the vhost): 2 + 2 taken.
        v.set_max_queues(Some(4));
        let e = v
            .declare_queue(spec("fifth", true, Table::new()), false, 1)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::PreconditionFailed);
        v.set_max_queues(None);
        // Deleting is the way out: the name is free again.
        assert_eq!(v.delete_queue("bad", false, false, 1).unwrap(), 0);
        assert_eq!(v.delete_queue("bad-stream", false, false, 1).unwrap(), 0);
        assert!(v.crashed_queues().is_empty());
        v.declare_queue(spec("bad", true, Table::new()), false, 1)
            .unwrap();
        v.declare_queue(spec("bad-stream", true, stream), false, 1)
            .unwrap();
        b.shutdown();
        drop((v, b));
        let b = broker(&io, &clock);
        let v = b.vhost("/").unwrap();
        assert!(v.crashed_queues().is_empty());
        assert_eq!(v.queue_for("bad", 1).unwrap().counts().0, 0);
        b.shutdown();
    }

    #[test]
    fn a_flipped_bit_in_a_sealed_segment_crashes_the_queue_at_boot() {
        let io = SimIo::new();
        let clock = ManualClock::new(T0);
        let mut cfg = crate::BrokerConfig::new(std::path::PathBuf::from("/data"));
        cfg.log = ferry_log::LogConfig {
            segment_bytes: 2048,
            index_interval_bytes: 256,
            first_index: 0,
        };
        let open =
            || crate::Broker::open_with_clock(cfg.clone(), io.shared(), clock.clone()).unwrap();
        let b = open();
        let v = b.vhost("/").unwrap();
        v.declare_queue(spec("flip", true, Table::new()), false, 1)
            .unwrap();
        let q = v.queue_for("flip", 1).unwrap();
        for i in 0..90 {
            q.publish(&Arc::new(message(&format!("m{i:04}"), true)), None)
                .unwrap();
        }
        b.shutdown();
        let storage = v.registry.get("flip").unwrap().storage;
        let dir = v.dir.join("queues").join(storage);
        drop((q, v, b));
        let mut segs: Vec<_> = ferry_log::FileIo::list(&io, &dir)
            .unwrap()
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        segs.sort();
        assert!(segs.len() >= 2, "want a sealed segment: {segs:?}");
        // Past the 40-byte segment header and the first record's header.
        io.flip_bit(&segs[0], 60, 3).unwrap();

        let b = open();
        let v = b.vhost("/").unwrap();
        let c = v.crashed_queue("flip").expect("crashed, not a failed boot");
        assert!(c.reason.contains("checksum mismatch"), "{}", c.reason);
        // Undo the flip: after a restart it opens again with everything.
        b.shutdown();
        drop((v, b));
        io.flip_bit(&segs[0], 60, 3).unwrap();
        let b = open();
        let v = b.vhost("/").unwrap();
        assert!(v.crashed_queues().is_empty());
        assert_eq!(v.queue_for("flip", 1).unwrap().counts().0, 90);
        b.shutdown();
    }
}
