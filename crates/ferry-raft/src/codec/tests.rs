#![allow(clippy::expect_used)]

use super::*;
use crate::types::{Batch, TypeConfig};
use bytes::Bytes;
use openraft::EntryPayload;

fn id(term: u64, node: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, node), index)
}

#[test]
fn headers_round_trip_for_each_payload_kind() {
    let members = Membership::new(
        vec![BTreeSet::from([1, 2, 3])],
        BTreeMap::from([
            (
                1,
                BasicNode {
                    addr: "10.0.0.1:7000".into(),
                },
            ),
            (
                2,
                BasicNode {
                    addr: "10.0.0.2:7000".into(),
                },
            ),
            (
                3,
                BasicNode {
                    addr: "10.0.0.3:7000".into(),
                },
            ),
            (
                4,
                BasicNode {
                    addr: "learner:7000".into(),
                },
            ),
        ]),
    );
    let cases: Vec<(EntryPayload<TypeConfig>, PayloadKind, u32)> = vec![
        (EntryPayload::Blank, PayloadKind::Blank, 0),
        (
            EntryPayload::Normal(Batch::new(vec![Bytes::from_static(b"a"), Bytes::new()])),
            PayloadKind::Normal,
            2,
        ),
        (
            EntryPayload::Membership(members.clone()),
            PayloadKind::Membership,
            0,
        ),
    ];
    for (payload, kind, count) in cases {
        let mut buf = Vec::new();
        encode_header(&id(7, 2, 42), &payload, &mut buf);
        assert!(is_header(&buf));
        let h = decode_header(&buf).expect("decodes");
        assert_eq!((h.log_id, h.kind, h.count), (id(7, 2, 42), kind, count));
        if kind == PayloadKind::Membership {
            assert_eq!(h.membership.as_ref(), Some(&members));
        }
    }
}

#[test]
fn the_header_layout_is_the_documented_one() {
    let mut buf = Vec::new();
    encode_header::<TypeConfig>(
        &id(1, 2, 3),
        &EntryPayload::Normal(Batch::new(vec![Bytes::new(); 5])),
        &mut buf,
    );
    let mut want = vec![b'R', 1, 1];
    want.extend_from_slice(&1u64.to_le_bytes());
    want.extend_from_slice(&2u64.to_le_bytes());
    want.extend_from_slice(&3u64.to_le_bytes());
    want.extend_from_slice(&5u32.to_le_bytes());
    assert_eq!(buf, want);
    assert_eq!(buf.len(), HEADER_LEN);
}

#[test]
fn commands_votes_and_log_ids_round_trip() {
    let mut buf = Vec::new();
    encode_command(b"payload", &mut buf);
    assert_eq!(command_body(&buf).expect("command"), b"payload");
    assert!(!is_header(&buf));
    for v in [Vote::new(3, 1), Vote::new_committed(9, 2)] {
        assert_eq!(decode_vote(&encode_vote(&v)).expect("vote"), v);
    }
    assert_eq!(
        decode_log_id(&encode_log_id(&id(4, 5, 6))).expect("id"),
        id(4, 5, 6)
    );
}

#[test]
fn damaged_records_are_errors_not_panics() {
    let mut buf = Vec::new();
    let m = Membership::new(vec![BTreeSet::from([1])], ());
    encode_header::<TypeConfig>(&id(1, 1, 1), &EntryPayload::Membership(m), &mut buf);
    for cut in 0..buf.len() {
        assert!(decode_header(&buf[..cut]).is_err(), "cut at {cut}");
    }
    let mut extra = buf.clone();
    extra.push(0);
    assert!(decode_header(&extra).is_err());
    let mut bad_kind = buf.clone();
    bad_kind[2] = 9;
    assert!(decode_header(&bad_kind).is_err());
    let mut bad_version = buf.clone();
    bad_version[1] = 2;
    assert!(decode_header(&bad_version).is_err());
    // A blank entry claiming commands.
    let mut blank = Vec::new();
    encode_header::<TypeConfig>(&id(1, 1, 1), &EntryPayload::Blank, &mut blank);
    blank[27] = 1;
    assert!(decode_header(&blank).is_err());
    // A huge membership count is refused before allocating.
    let mut huge = blank.clone();
    huge[2] = 2;
    huge[27] = 0;
    huge.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(decode_header(&huge).is_err());
    assert!(command_body(b"Rx").is_err());
    assert!(command_body(b"").is_err());
    assert!(decode_vote(&[0; 17][..16]).is_err());
    let mut v = encode_vote(&Vote::new(1, 1));
    v[16] = 7;
    assert!(decode_vote(&v).is_err());
}
