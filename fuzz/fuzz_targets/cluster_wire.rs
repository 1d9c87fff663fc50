//! What a node reads from its peers and its cluster files: frames off a
//! byte stream, every Raft message body, forwarded commands, metadata
//! commands, entry header records, votes and log ids. Nothing panics on
//! any bytes, and whatever decodes encodes back to bytes that decode to
//! the same value.
//!
//! Input: a mode byte, then
//! - `F` + bytes: a connection's byte stream: `Frame::decode` until it
//!   needs more or refuses; each frame's body through the decoder its kind
//!   names.
//! - `A`, `a`, `V`, `v`, `S`, `s`, `C` + bytes: one body through the
//!   AppendEntries request / answer, RequestVote request / answer,
//!   snapshot / answer, forwarded-commands decoder.
//! - `H` + bytes: an entry header record; `M` + bytes: a metadata command;
//!   `X` + bytes: a vote, then a log id.

#![no_main]

use bytes::{Bytes, BytesMut};
use ferry_cluster::node::meta::MetaCommand;
use ferry_cluster::wire::{self, Frame};
use ferry_raft::codec;
use libfuzzer_sys::fuzz_target;

fn body(kind: u8, b: Bytes) {
    match kind {
        wire::KIND_APPEND | b'A' => {
            if let Ok(req) = wire::decode_append(b) {
                let again = wire::decode_append(wire::encode_append(&req)).expect("re-decodes");
                assert_eq!(again.entries, req.entries);
                assert_eq!((again.vote, again.prev_log_id, again.leader_commit), (req.vote, req.prev_log_id, req.leader_commit));
            }
        }
        b'a' => {
            if let Ok(r) = wire::decode_append_reply(b) {
                assert_eq!(wire::decode_append_reply(wire::encode_append_reply(&r)).expect("re-decodes"), r);
            }
        }
        wire::KIND_VOTE | b'V' => {
            if let Ok(r) = wire::decode_vote_req(b) {
                assert_eq!(wire::decode_vote_req(wire::encode_vote_req(&r)).expect("re-decodes"), r);
            }
        }
        b'v' => {
            if let Ok(r) = wire::decode_vote_reply(b) {
                assert_eq!(wire::decode_vote_reply(wire::encode_vote_reply(&r)).expect("re-decodes"), r);
            }
        }
        wire::KIND_SNAPSHOT | b'S' => {
            if let Ok((vote, snap)) = wire::decode_snapshot(b) {
                let (v2, s2) = wire::decode_snapshot(wire::encode_snapshot(&vote, &snap)).expect("re-decodes");
                assert_eq!((v2, &s2.meta, &s2.snapshot), (vote, &snap.meta, &snap.snapshot));
            }
        }
        b's' => {
            if let Ok(r) = wire::decode_snapshot_reply(b) {
                assert_eq!(wire::decode_snapshot_reply(wire::encode_snapshot_reply(&r)).expect("re-decodes"), r);
            }
        }
        wire::KIND_PROPOSE | b'C' => {
            if let Ok(cmds) = wire::decode_commands(b) {
                assert_eq!(wire::decode_commands(wire::encode_commands(&cmds)).expect("re-decodes"), cmds);
            }
        }
        _ => {}
    }
}

fn stream(bytes: &[u8]) {
    let mut buf = BytesMut::from(bytes);
    while let Ok(Some(f)) = Frame::decode(&mut buf) {
        let mut out = BytesMut::new();
        f.encode(&mut out);
        assert_eq!(Frame::decode(&mut out).expect("re-decodes"), Some(f.clone()));
        body(f.kind, f.body);
    }
}

fn header(bytes: &[u8]) {
    if let Ok(h) = codec::decode_header(bytes) {
        // The count is a claim about the records that follow (checked where
        // they are read); the harness makes that many empty commands.
        if h.count > 4096 {
            return;
        }
        let commands = vec![Bytes::new(); h.count as usize];
        let entry = codec::assemble(h.clone(), commands).expect("a decoded header assembles");
        let mut again = Vec::new();
        codec::encode_header(&entry.log_id, &entry.payload, &mut again);
        assert_eq!(codec::decode_header(&again).expect("re-decodes"), h);
    }
}

fuzz_target!(
    init: {
        ferry_fuzz::write_seeds_and_exit_if_asked(|| {
            let vote = wire::encode_vote_req(&openraft::raft::VoteRequest {
                vote: ferry_raft::Vote::new(3, 1),
                last_log_id: Some(wire::log_id(2, 1, 9)),
            });
            let mut framed = BytesMut::new();
            Frame { kind: wire::KIND_VOTE, corr: 1, group: 0, body: vote.clone() }.encode(&mut framed);
            let cmds = wire::encode_commands(&[Bytes::from_static(b"x"), Bytes::new()]);
            let meta = MetaCommand::NodeInfo { id: 7, name: "n1".into(), advertise: "10.0.0.1:25672".into() }.encode();
            vec![
                ("frame-vote".into(), [b"F".as_slice(), &framed].concat()),
                ("vote".into(), [b"V".as_slice(), &vote].concat()),
                ("commands".into(), [b"C".as_slice(), &cmds].concat()),
                ("meta".into(), [b"M".as_slice(), &meta].concat()),
            ]
        });
    },
    |data: &[u8]| {
        match data.split_first() {
            Some((b'F', rest)) => stream(rest),
            Some((b'H', rest)) => header(rest),
            Some((b'M', rest)) => {
                if let Ok(c) = MetaCommand::decode(Bytes::copy_from_slice(rest)) {
                    assert_eq!(MetaCommand::decode(c.encode()).expect("re-decodes"), c);
                }
            }
            Some((b'X', rest)) => {
                if let Ok(v) = codec::decode_vote(rest) {
                    assert_eq!(codec::decode_vote(&codec::encode_vote(&v)).expect("re-decodes"), v);
                }
                if let Ok(id) = codec::decode_log_id(rest) {
                    assert_eq!(codec::decode_log_id(&codec::encode_log_id(&id)).expect("re-decodes"), id);
                }
            }
            Some((&kind, rest)) => body(kind, Bytes::copy_from_slice(rest)),
            None => {}
        }
    }
);
