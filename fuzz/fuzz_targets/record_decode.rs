//! Queue and stream records: decoding any payload, and booting a broker
//! whose logs hold records with valid checksums but fuzz-chosen payloads
//! (decode faults inside otherwise valid records).
//!
//! Input: a mode byte, then
//! - `Q` + bytes: `queue::record::decode` never panics; a record it
//!   accepts re-encodes (names fit by construction) and decodes to the same
//!   record.
//! - `S` + bytes: the same for `stream::record::decode` / `encode`.
//! - anything else: `Boot` (arbitrary): a broker on `SimIo` with a durable
//!   queue `q`, a stream `s` and a durable queue `good` holding one
//!   message; after a clean stop, the fuzz payloads are appended to the
//!   logs of `q` and `s` as whole records (valid CRC32C). The broker must
//!   open again (a damaged record never keeps the node down); `q` and `s`
//!   are each either open or `crashed`, never both nor gone; `good` serves
//!   its message; a crashed one can be deleted and declared again.

#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use ferry_queue::queue::record::{self, Record};
use ferry_queue::queue::QueueSpec;
use ferry_broker::{Broker, BrokerConfig};
use ferry_model::Message;
use ferry_log::{Log, SimIo};
use libfuzzer_sys::fuzz_target;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Arbitrary)]
struct Boot {
    queue: Vec<Vec<u8>>,
    stream: Vec<Vec<u8>>,
}

fn queue_record(data: &[u8]) {
    let Ok(rec) = record::decode(Bytes::copy_from_slice(data)) else {
        return;
    };
    let mut out = Vec::new();
    match &rec {
        Record::Enqueue {
            msg,
            expires_at,
            priority,
            not_before,
        } => record::encode_enqueue_held(msg, *expires_at, *priority, *not_before, &mut out)
            .expect("a decoded message re-encodes"),
        Record::Settle(ids) => record::encode_ids(false, ids, &mut out),
        Record::Requeue(ids) => record::encode_ids(true, ids, &mut out),
        Record::Drop { reason, ids } => record::encode_drop(*reason, ids, &mut out),
        Record::Retry(items) => record::encode_retry(items, &mut out),
        Record::Purge { upto, keep } => record::encode_purge(*upto, keep, &mut out),
    }
    let again = record::decode(Bytes::from(out)).expect("a re-encoded record decodes");
    assert_eq!(again, rec);
}

fn stream_record(data: &[u8]) {
    use ferry_queue::stream::record as srec;
    let Ok((ts, msg)) = srec::decode(Bytes::copy_from_slice(data)) else {
        return;
    };
    let mut out = Vec::new();
    srec::encode(&msg, &msg.properties, ts, &mut out).expect("a decoded message re-encodes");
    let (ts2, msg2) = srec::decode(Bytes::from(out)).expect("a re-encoded record decodes");
    assert_eq!((ts2, msg2), (ts, msg));
}

const VHOST_DIR: &str = "/data/vhosts/2f";
fn spec(name: &str, stream: bool) -> QueueSpec {
    let mut arguments = ferry_model::Table::new();
    if stream {
        arguments.insert("x-queue-type", ferry_model::Value::str("stream"));
    }
    QueueSpec {
        name: Arc::from(name),
        durable: true,
        exclusive_owner: None,
        auto_delete: false,
        arguments,
    }
}

/// The log directory of stored queue `name` (from the vhost's definitions file).
fn storage_dir(io: &SimIo, name: &str) -> PathBuf {
    let vhost = Path::new(VHOST_DIR);
    let defs = ferry_broker::definitions::load(io, vhost).expect("definitions");
    let q = defs
        .queues
        .iter()
        .find(|q| &*q.spec.name == name)
        .expect("stored queue");
    vhost.join("queues").join(&q.storage)
}

fn boot(input: &Boot) {
    let io = SimIo::new();
    // v1 records (fuzz payloads may be any version) upgrade through the
    // AMQP converter, as in the server.
    ferry_queue::props::set_legacy_converter(|raw| {
        ferry_amqp::model::props_to_model(raw).map_err(|e| e.to_string())
    });
    let cfg = BrokerConfig::new(PathBuf::from("/data"));
    let b = Broker::open(cfg.clone(), io.shared()).expect("first open");
    let v = b.vhost("/").expect("vhost /");
    for (name, stream) in [("q", false), ("s", true), ("good", false)] {
        v.declare_queue(spec(name, stream), false, 1)
            .expect("declare");
    }
    let (q, s) = (storage_dir(&io, "q"), storage_dir(&io, "s"));
    let m = Arc::new(Message {
        exchange: Arc::from(""),
        routing_key: Arc::from("good"),
        properties: Bytes::new(),
        body: Bytes::from_static(b"m"),
        persistent: true,
        expiration_ms: None,
        bcc: Vec::new(),
    });
    v.queue_for("good", 1)
        .expect("good")
        .publish(&m, None)
        .expect("publish");
    b.shutdown();
    drop((v, b));
    for (dir, payloads) in [(&q, &input.queue), (&s, &input.stream)] {
        let (mut log, _) = Log::open(io.shared(), dir, cfg.log.clone()).expect("log opens");
        for p in payloads {
            if log.append(p).is_err() {
                break;
            }
        }
        log.flush().expect("flush");
    }
    let b = Broker::open(cfg, io.shared()).expect("a damaged record must not stop the node");
    let v = b.vhost("/").expect("vhost /");
    for name in ["q", "s"] {
        let open = v.queue_ref(name).is_some();
        let crashed = v.crashed_queue(name).is_some();
        assert!(open != crashed, "{name}: open {open}, crashed {crashed}");
        if crashed {
            assert_eq!(v.delete_queue(name, false, false, 1).ok(), Some(0));
            v.declare_queue(spec(name, name == "s"), false, 1)
                .expect("declared again after the delete");
        }
    }
    let got = v
        .queue_for("good", 1)
        .expect("good")
        .get(true)
        .expect("get");
    assert!(got.is_some(), "the intact queue serves its message");
    b.shutdown();
}

fuzz_target!(
    init: {
        ferry_fuzz::write_seeds_and_exit_if_asked(|| {
            vec![
                ("queue-bad-utf8".into(), b"Q\x01\x01\x01x\x02\xc3\x28\0\0\0\0b".to_vec()),
                ("queue-settle".into(), b"Q\x02\x01\0\0\0\x07\0\0\0\0\0\0\0".to_vec()),
                ("stream".into(), {
                    let mut v = b"SS".to_vec();
                    v.extend_from_slice(&[0; 8]);
                    v.extend_from_slice(&[1, 0, 1, b'k', 0, 0, 0, 0, b'x']);
                    v
                }),
                ("boot".into(), b"B\x01\x0c\x01\x01\x01x\x02\xc3\x28\0\0\0\0b".to_vec()),
            ]
        });
    },
    |data: &[u8]| {
        match data.split_first() {
            Some((b'Q', rest)) => queue_record(rest),
            Some((b'S', rest)) => stream_record(rest),
            Some((_, rest)) => {
                let Ok(input) = Boot::arbitrary_take_rest(Unstructured::new(rest)) else {
                    return;
                };
                if ferry_fuzz::debug() {
                    eprintln!("{input:#?}");
                }
                boot(&input);
            }
            None => {}
        }
    }
);
