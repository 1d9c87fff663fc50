//! A stream on a node outside its group (`remote.rs`): consumers go to
//! the port with their `x-stream-offset`, what a member sends is handed
//! over within the consumer's credit (the rest waits in order), acks and
//! cancellations wake the reader; a member resolves a spec where its own
//! consumer would start.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::tests::{consume_at, msg, Fixture};
use super::*;
use crate::test_support::ms as s;
use ferry_model::Value;
use parking_lot::Mutex;
use std::sync::Arc;

/// Records what the stream asks of its port.
#[derive(Debug, Default)]
struct Port {
    attached: Mutex<Vec<(u64, OffsetSpec)>>,
    woken: Mutex<Vec<u64>>,
}

impl StreamPort for Port {
    fn attach(&self, id: u64, start: OffsetSpec) {
        self.attached.lock().push((id, start));
    }
    fn wake(&self, id: u64) {
        self.woken.lock().push(id);
    }
}

fn outside(f: &Fixture) -> (Arc<Stream>, Arc<Port>) {
    let st = f.open();
    let port = Arc::new(Port::default());
    st.read_through(port.clone());
    (st, port)
}

/// Records at offsets `from..to`, as a member would send them.
fn records(from: u64, to: u64) -> Vec<StreamRecord> {
    (from..to)
        .map(|o| StreamRecord {
            offset: o,
            timestamp_ms: 1_000_000 + o,
            bytes: 10,
            message: (*msg(&format!("m{o}"), true)).clone(),
        })
        .collect()
}

#[test]
fn a_consumer_outside_the_group_gets_what_a_member_sends_within_its_credit() {
    let f = Fixture::new(&[]);
    let (st, port) = outside(&f);
    assert!(!st.holds_copy());
    let c = consume_at(&st, 3, Some(Value::I64(7)));
    let id = port.attached.lock()[0].0;
    assert_eq!(port.attached.lock()[0].1, OffsetSpec::Offset(7));
    assert_eq!(st.consumer_count(), 1);
    // Nothing read here: the local (empty) log is not its source.
    assert!(c.offsets().is_empty());
    assert_eq!(
        port.woken.lock().as_slice(),
        &[id],
        "its dispatch asks the reader"
    );
    assert_eq!(st.remote_room(id, 256), Some(3));
    assert_eq!(st.remote_room(id, 2), Some(2), "at most the cap");

    // The member resolved offset 7 and sent five: three go out, two wait.
    assert!(st.deliver_remote(id, 12, records(7, 12)));
    assert_eq!(c.offsets(), vec![7, 8, 9]);
    assert_eq!(c.bodies(), vec!["m7", "m8", "m9"]);
    assert_eq!(st.remote_room(id, 256), Some(0));
    assert_eq!(st.consumer_offsets()[0].1, 10);
    // An ack returns credit: what waits goes first, then the reader asks.
    port.woken.lock().clear();
    c.grant(4);
    st.settle(&[7, 8, 9]).unwrap();
    assert_eq!(c.offsets(), vec![7, 8, 9, 10, 11]);
    assert_eq!(st.remote_room(id, 256), Some(2));
    assert_eq!(port.woken.lock().as_slice(), &[id]);
    // A read with nothing yet only moves where it goes on.
    assert!(st.deliver_remote(id, 12, Vec::new()));
    assert_eq!(st.consumer_offsets()[0].1, 12);

    // Cancelled: its reader is woken to find it gone.
    port.woken.lock().clear();
    st.cancel(id);
    assert_eq!(port.woken.lock().as_slice(), &[id]);
    assert_eq!(st.remote_room(id, 256), None);
    assert!(!st.deliver_remote(id, 13, records(12, 13)));
    assert_eq!(c.offsets().len(), 5);
}

#[test]
fn deleting_the_stream_stops_its_readers_and_pull_reads_are_refused() {
    let f = Fixture::new(&[]);
    let (st, port) = outside(&f);
    let c = consume_at(&st, 10, Some(s("first")));
    let d = consume_at(&st, 10, None);
    let ids: Vec<u64> = port.attached.lock().iter().map(|(id, _)| *id).collect();
    assert_eq!(
        port.attached
            .lock()
            .iter()
            .map(|(_, s)| *s)
            .collect::<Vec<_>>(),
        vec![OffsetSpec::First, OffsetSpec::Next]
    );
    let err = st.read(0, ReadLimits::bytes(1 << 20)).unwrap_err();
    assert!(
        err.to_string().contains("has no replica on this node"),
        "{err}"
    );
    port.woken.lock().clear();
    st.delete().unwrap();
    let mut woken = port.woken.lock().clone();
    woken.sort_unstable();
    assert_eq!(woken, ids);
    assert!(ids.iter().all(|id| st.remote_room(*id, 256).is_none()));
    assert!(!st.deliver_remote(ids[0], 1, records(0, 1)));
    assert!(*c.cancelled.lock() && *d.cancelled.lock());
}

#[test]
fn a_member_resolves_a_start_where_its_own_consumer_would_begin() {
    let f = Fixture::new(&[]);
    let st = f.open();
    for i in 0..6 {
        st.publish(&msg(&format!("m{i}"), false), None).unwrap();
        f.clock.advance(1_000);
    }
    let at = |spec| st.resolve_start(spec).unwrap();
    assert_eq!(at(OffsetSpec::First), 0);
    assert_eq!(at(OffsetSpec::Last), 5);
    assert_eq!(at(OffsetSpec::Next), 6);
    assert_eq!(at(OffsetSpec::Offset(4)), 4);
    assert_eq!(at(OffsetSpec::Offset(99)), 6);
    assert_eq!(at(OffsetSpec::Timestamp(1_003_000)), 3);
    // A node that holds no copy resolves nothing.
    let (no_copy, _) = outside(&Fixture::new(&[]));
    assert!(no_copy.resolve_start(OffsetSpec::First).is_err());
}
