#![allow(clippy::expect_used, clippy::unwrap_used)]

use super::*;
use ferry_raft::{Batch, Membership};
use std::collections::{BTreeMap, BTreeSet};

fn entries() -> Vec<Entry> {
    let m = Membership::new(
        vec![BTreeSet::from([1, 2, 3])],
        BTreeMap::from([
            (1, BasicNode { addr: "a:1".into() }),
            (2, BasicNode { addr: "b:2".into() }),
        ]),
    );
    vec![
        Entry {
            log_id: log_id(1, 1, 5),
            payload: EntryPayload::Blank,
        },
        Entry {
            log_id: log_id(1, 1, 6),
            payload: EntryPayload::Normal(Batch::new(vec![Bytes::from_static(b"x"), Bytes::new()])),
        },
        Entry {
            log_id: log_id(2, 3, 7),
            payload: EntryPayload::Membership(m),
        },
    ]
}

#[test]
fn frames_round_trip_and_are_cut_at_their_length() {
    let f = Frame {
        kind: KIND_VOTE,
        corr: 9,
        group: 77,
        body: Bytes::from_static(b"hello"),
    };
    let mut buf = BytesMut::new();
    f.encode(&mut buf);
    f.encode(&mut buf);
    let whole = buf.clone();
    for cut in 0..whole.len() / 2 {
        let mut part = BytesMut::from(&whole[..cut]);
        assert_eq!(Frame::decode(&mut part).expect("ok"), None);
    }
    assert_eq!(Frame::decode(&mut buf).expect("ok"), Some(f.clone()));
    assert_eq!(Frame::decode(&mut buf).expect("ok"), Some(f));
    assert!(buf.is_empty());
    let mut huge = BytesMut::from(&u32::MAX.to_le_bytes()[..]);
    assert!(
        Frame::decode(&mut huge).is_err(),
        "refused from the length alone"
    );
    let mut tiny = BytesMut::from(&3u32.to_le_bytes()[..]);
    assert!(Frame::decode(&mut tiny).is_err());
}

/// A small frame's body is its own allocation, not a slice of the read
/// buffer (which it would keep alive whole); a large one is a slice.
#[test]
fn small_bodies_are_copied_out_of_the_read_buffer() {
    let small = Frame {
        kind: KIND_VOTE,
        corr: 1,
        group: 2,
        body: Bytes::from(vec![7u8; 100]),
    };
    let large = Frame {
        body: Bytes::from(vec![8u8; COPY_BELOW]),
        ..small.clone()
    };
    let mut buf = BytesMut::with_capacity(64 * 1024);
    small.encode(&mut buf);
    large.encode(&mut buf);
    let (start, end) = (
        buf.as_ptr() as usize,
        buf.as_ptr() as usize + buf.capacity(),
    );
    let inside = |b: &Bytes| (start..end).contains(&(b.as_ptr() as usize));
    let a = Frame::decode(&mut buf).expect("ok").expect("a frame");
    let b = Frame::decode(&mut buf).expect("ok").expect("a frame");
    assert_eq!((&a, &b), (&small, &large));
    assert!(!inside(&a.body), "the small body was copied out");
    assert!(inside(&b.body), "the large body stays a slice");
}

#[test]
fn raft_messages_round_trip() {
    let req = AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(3, 1),
        prev_log_id: Some(log_id(1, 1, 4)),
        entries: entries(),
        leader_commit: None,
    };
    let got = decode_append(encode_append(&req)).expect("append");
    assert_eq!(
        (got.vote, got.prev_log_id, got.leader_commit),
        (req.vote, req.prev_log_id, req.leader_commit)
    );
    assert_eq!(got.entries, req.entries);
    for r in [
        AppendEntriesResponse::Success,
        AppendEntriesResponse::PartialSuccess(Some(log_id(1, 2, 3))),
        AppendEntriesResponse::PartialSuccess(None),
        AppendEntriesResponse::Conflict,
        AppendEntriesResponse::HigherVote(Vote::new(9, 2)),
    ] {
        assert_eq!(
            decode_append_reply(encode_append_reply(&r)).expect("reply"),
            r
        );
    }
    let v = VoteRequest {
        vote: Vote::new(4, 2),
        last_log_id: Some(log_id(3, 1, 10)),
    };
    assert_eq!(decode_vote_req(encode_vote_req(&v)).expect("vote"), v);
    let vr = VoteResponse {
        vote: Vote::new(4, 2),
        vote_granted: true,
        last_log_id: None,
    };
    assert_eq!(
        decode_vote_reply(encode_vote_reply(&vr)).expect("vote reply"),
        vr
    );
    let meta = SnapshotMeta {
        last_log_id: Some(log_id(2, 1, 40)),
        last_membership: StoredMembership::new(
            Some(log_id(1, 1, 2)),
            Membership::new(vec![BTreeSet::from([1, 2])], ()),
        ),
        snapshot_id: "s-1".into(),
    };
    let bodies = [
        SnapshotBody::Inline(Bytes::from_static(b"state")),
        SnapshotBody::File { len: 1 << 40 },
    ];
    for body in bodies {
        let (vote, got_meta, got) =
            decode_snapshot(encode_snapshot(&Vote::new(5, 1), &meta, &body)).expect("snapshot");
        assert_eq!(vote, Vote::new(5, 1));
        assert_eq!(got_meta, meta);
        assert_eq!(got, body);
    }
    let (off, b) = decode_chunk(encode_chunk(7, b"abc")).expect("chunk");
    assert_eq!((off, &b[..]), (7, &b"abc"[..]));
    assert!(decode_chunk(encode_chunk(7, b"abc").slice(..10)).is_err());
    let sr = SnapshotResponse {
        vote: Vote::new(5, 1),
    };
    assert_eq!(
        decode_snapshot_reply(encode_snapshot_reply(&sr)).expect("snap reply"),
        sr
    );
}

#[test]
fn truncated_or_lying_bodies_are_errors() {
    let req = AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new(1, 1),
        prev_log_id: None,
        entries: entries(),
        leader_commit: Some(log_id(1, 1, 5)),
    };
    let body = encode_append(&req);
    for cut in 0..body.len() {
        assert!(decode_append(body.slice(..cut)).is_err(), "cut at {cut}");
    }
    // An entry count no body could hold is refused before allocating.
    let mut lying = body.to_vec();
    let at = 17 + 1 + 1 + 24;
    lying[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(decode_append(Bytes::from(lying)).is_err());
    let mut extra = body.to_vec();
    extra.push(0);
    assert!(decode_append(Bytes::from(extra)).is_err());
}

#[test]
fn figures_round_trip_and_a_lying_count_is_refused() {
    use ferry_queue::queue::Depth;
    let groups = vec![7u64, 9];
    assert_eq!(
        remote::decode_groups(remote::encode_groups(&groups)).unwrap(),
        groups
    );
    let d = Depth {
        ready: 7,
        unacked: 3,
        ready_bytes: 70,
        unacked_bytes: 30,
        consumers: 1,
        delayed: 2,
    };
    let body = remote::encode_figures(&[(7, d)]);
    assert_eq!(remote::decode_figures(body.clone()).unwrap(), vec![(7, d)]);
    let mut lying = body.to_vec();
    lying[..4].copy_from_slice(&1_000_000u32.to_le_bytes());
    assert!(remote::decode_figures(Bytes::from(lying)).is_err());
    assert!(remote::decode_groups(Bytes::from_static(&[9, 0, 0, 0])).is_err());
}

#[test]
fn proposal_answers_carry_the_refused_positions() {
    let b = encode_proposed(7, &[1, 3]);
    assert_eq!(decode_refused(b.clone(), 4).unwrap(), [1, 3]);
    assert_eq!(b.len(), 8 + 4 + 2 * 4);
    // The index alone (a stream group's, or an earlier version's answer).
    let bare = Bytes::copy_from_slice(&7u64.to_le_bytes());
    assert!(decode_refused(bare, 4).unwrap().is_empty());
    assert!(decode_refused(encode_proposed(0, &[]), 0)
        .unwrap()
        .is_empty());
    // A position outside the request, or not ascending, is an error.
    assert!(decode_refused(b.clone(), 3).is_err());
    assert!(decode_refused(encode_proposed(1, &[2, 2]), 4).is_err());
    assert!(decode_refused(encode_proposed(1, &[2, 1]), 4).is_err());
    // Truncated, trailing bytes, a lying count: errors, never panics.
    for cut in 0..b.len() {
        if cut != 8 {
            assert!(decode_refused(b.slice(..cut), 4).is_err(), "cut at {cut}");
        }
    }
    let mut long = b.to_vec();
    long.push(0);
    assert!(decode_refused(Bytes::from(long), 4).is_err());
    let mut lying = 7u64.to_le_bytes().to_vec();
    lying.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(decode_refused(Bytes::from(lying), 4).is_err());
}
