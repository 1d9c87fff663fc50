//! Records written by the release with the v1 formats (tests/fixtures/data-v1, written by
//! tests/fixtures/make_data_v1.py) decode with their facts intact. The Python test
//! tests/python/test_upgrade.py checks what a client sees after an upgrade; this one checks
//! the message deadlines, which it cannot (one of them passes some weeks after the fixture
//! was written, and then the message is gone), and that every record decodes, its AMQP
//! properties converted to the props blob by the converter the server installs.
#![allow(clippy::expect_used)]

use ferry_log::{Log, LogConfig, StdIo};
use ferry_queue::queue::record::{self, Record};
use ferry_queue::stream::record as stream_record;
use std::path::Path;
use std::sync::Arc;

/// The AMQP front end's converter for v1 properties, as `ferry-server` installs it.
fn install_converter() {
    ferry_queue::props::set_legacy_converter(|raw| {
        ferry_amqp::model::props_to_model(raw).map_err(|e| e.to_string())
    });
}

/// Checks a decoded message's properties: a blob that converts back to AMQP properties
/// that parse. Returns them.
fn amqp_properties(blob: &bytes::Bytes) -> ferry_amqp::BasicProperties {
    let raw = ferry_amqp::model::props_from_model(blob).expect("blob converts back");
    ferry_amqp::parse_properties(&raw).expect("AMQP properties parse")
}

/// (body, expires_at) of every Enqueue record with a deadline in the fixture's queues;
/// every record decodes, as a queue record or (the stream's log) a stream record, and
/// the number of messages seen is returned too.
fn deadlines(data: &Path) -> (Vec<(Vec<u8>, u64)>, usize) {
    let mut out = Vec::new();
    let mut messages = 0;
    let queues = data.join("vhosts").join("2f").join("queues");
    for dir in std::fs::read_dir(&queues).expect("fixture queues") {
        let dir = dir.expect("dir entry").path();
        let (log, _) = Log::open(Arc::new(StdIo), &dir, LogConfig::default()).expect("log opens");
        for item in log.reader(log.first_index()) {
            let (_, rec) = item.expect("record reads");
            // The stream's log holds stream records (tag 'S'), the queues queue records.
            if rec.payload.first() == Some(&b'S') {
                let (_, msg) = stream_record::decode(rec.payload).expect("stream record decodes");
                amqp_properties(&msg.properties);
                messages += 1;
                continue;
            }
            let Record::Enqueue {
                msg, expires_at, ..
            } = record::decode(rec.payload).expect("queue record decodes")
            else {
                continue;
            };
            messages += 1;
            let p = amqp_properties(&msg.properties);
            assert_eq!(
                msg.persistent,
                *p.delivery_mode() == Some(2),
                "delivery mode kept"
            );
            if let Some(at) = expires_at {
                out.push((msg.body.to_vec(), at));
            }
        }
    }
    out.sort();
    (out, messages)
}

#[test]
fn v1_enqueue_records_keep_their_deadlines() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/data-v1");
    let tmp = tempfile::tempdir().expect("tempdir");
    copy_dir(&fixture, tmp.path());
    install_converter();
    let (found, messages) = deadlines(tmp.path());
    assert!(messages > 10, "{messages} messages");
    // "hello": published with expiration 315360000000 (ten years); "ttl": the same expiration
    // in a queue whose x-message-ttl (2^32-1 ms) is smaller. Values as written on 2026-12-06.
    assert_eq!(
        found,
        vec![
            (b"hello".to_vec(), HELLO_DEADLINE),
            (b"ttl".to_vec(), TTL_DEADLINE)
        ]
    );
}

/// Published at 1796518976119 ms (2026-12-06T01:02:56.119Z) + 315360000000.
const HELLO_DEADLINE: u64 = 2_111_878_976_119;
/// Published 17 ms later + 4294967295 (the queue TTL, smaller than the expiration).
const TTL_DEADLINE: u64 = 1_800_813_943_431;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read fixture") {
        let e = e.expect("entry");
        let dest = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).expect("copy");
        }
    }
}

/// The v1 definitions files read into the model's argument tables and write back byte for
/// byte (the JSON form of arguments did not change with the move off amq-protocol's tables).
#[test]
fn v1_definitions_write_back_byte_for_byte() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/data-v1");
    let mut checked = 0;
    for vhost in std::fs::read_dir(fixture.join("vhosts")).expect("fixture vhosts") {
        let dir = vhost.expect("entry").path();
        let original = std::fs::read(dir.join("definitions")).expect("definitions file");
        let defs = ferry_broker::definitions::load(&StdIo, &dir).expect("v1 definitions load");
        let tmp = tempfile::tempdir().expect("tempdir");
        ferry_broker::definitions::save(&StdIo, tmp.path(), &defs).expect("save");
        let written = std::fs::read(tmp.path().join("definitions")).expect("written");
        assert_eq!(
            String::from_utf8_lossy(&written),
            String::from_utf8_lossy(&original),
            "{}",
            dir.display()
        );
        assert_eq!(written, original);
        checked += 1;
    }
    assert_eq!(checked, 2, "both fixture vhosts");
}
