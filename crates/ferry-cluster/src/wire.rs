//! The node link's frames and the Raft messages they carry: pure codecs,
//! no I/O. Layouts are drawn in `docs/cluster-wire.md`.
//!
//! ```text
//! frame: | len u32 (bytes after this field) | kind u8 | corr u64 | group u64 | body … |
//! ```
//! A request's answer carries the request's `corr` and kind `kind | 0x80`,
//! or [`KIND_ERROR`] with a UTF-8 reason.

use crate::error::WireError;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use ferry_raft::codec::{self, decode_membership_prefix, encode_membership};
use ferry_raft::{Entry, LogId, NodeId, TypeConfig, Vote};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::storage::SnapshotMeta;
use openraft::{BasicNode, CommittedLeaderId, EntryPayload, StoredMembership};

/// Bytes of a frame before its body, after the length field.
pub const FRAME_HEADER: usize = 1 + 8 + 8;
/// Largest frame accepted (checked from the length field, before buffering).
pub const MAX_FRAME: usize = 64 << 20;

pub mod remote;
pub mod stream;

/// Raft AppendEntries.
pub const KIND_APPEND: u8 = 1;
/// Raft RequestVote.
pub const KIND_VOTE: u8 = 2;
/// A whole snapshot (openraft's `full_snapshot`).
pub const KIND_SNAPSHOT: u8 = 3;
/// A piece of a snapshot file, before the [`KIND_SNAPSHOT`] that
/// installs it (`encode_chunk`).
pub const KIND_SNAPSHOT_CHUNK: u8 = 14;
/// Is the node up? Answered with an empty body at once (the elector's
/// failure detector; group 0).
pub const KIND_ALIVE: u8 = 15;
/// A node asks to join the cluster (to the metadata leader).
pub const KIND_JOIN: u8 = 4;
/// Commands for a group, forwarded to its leader.
pub const KIND_PROPOSE: u8 = 5;
/// Is the node up? (empty body both ways)
pub const KIND_PING: u8 = 6;
/// Remove a (stopped) node from the cluster: `id u64` (to the metadata leader).
pub const KIND_FORGET: u8 = 7;
/// A wiped node asks a queue group's leader to take it back as a learner
/// (empty body; the requester is the node to rebuild).
pub const KIND_REBUILD: u8 = 13;
/// Stand for election in a group now (empty body; a rebalance asks a
/// member with few leaderships to take this group's).
pub const KIND_STAND: u8 = 16;
/// Take a node out of a group (to its leader): `id u64` (`crate::shrink`).
pub const KIND_SHRINK: u8 = 18;
/// Add a node to a group (to its leader): `id u64 | u16 len address`.
pub const KIND_GROW: u8 = 19;
/// An answer: the request's kind with this bit set.
pub const KIND_REPLY: u8 = 0x80;
/// A request failed on the receiver; the body is the reason.
pub const KIND_ERROR: u8 = 0xFF;

/// Frame bodies shorter than this are copied out of the read buffer
/// ([`Frame::decode`]).
pub const COPY_BELOW: usize = 32 * 1024;

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// What the body is.
    pub kind: u8,
    /// Pairs an answer with its request.
    pub corr: u64,
    /// The Raft group it is for.
    pub group: u64,
    /// The message.
    pub body: Bytes,
}

impl Frame {
    /// Appends the frame's bytes to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        let len = FRAME_HEADER + self.body.len();
        out.reserve(4 + len);
        // Bodies are bounded by MAX_FRAME (the sender checks).
        out.put_u32_le(u32::try_from(len).unwrap_or(u32::MAX));
        out.put_u8(self.kind);
        out.put_u64_le(self.corr);
        out.put_u64_le(self.group);
        out.put_slice(&self.body);
    }

    /// Takes one whole frame off the front of `buf`, if it holds one.
    /// A length over [`MAX_FRAME`] or under the header is an error, found
    /// from the first four bytes. A body under [`COPY_BELOW`] is copied
    /// out: a slice of `buf` would keep its whole chunk (a connection's
    /// read buffer, 64 KiB at first) alive for as long as anything holds a part of
    /// it — a Raft log's tail cache keeps entries for a while, and one
    /// small entry per group pinned a chunk each.
    pub fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, WireError> {
        if buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if !(FRAME_HEADER..=MAX_FRAME).contains(&len) {
            return Err(WireError(format!("frame length {len}")));
        }
        if buf.len() < 4 + len {
            return Ok(None);
        }
        buf.advance(4);
        let mut f = buf.split_to(len);
        let kind = f.get_u8();
        let corr = f.get_u64_le();
        let group = f.get_u64_le();
        let body = if f.len() < COPY_BELOW {
            Bytes::copy_from_slice(&f)
        } else {
            f.freeze()
        };
        Ok(Some(Frame {
            kind,
            corr,
            group,
            body,
        }))
    }
}

// -- requests and answers ------------------------------------------------------------------------

/// Encodes an AppendEntries request.
pub fn encode_append(rpc: &AppendEntriesRequest<TypeConfig>) -> Bytes {
    let mut b = Vec::with_capacity(64);
    put_vote(&mut b, &rpc.vote);
    put_opt_log_id(&mut b, &rpc.prev_log_id);
    put_opt_log_id(&mut b, &rpc.leader_commit);
    put_u32(&mut b, rpc.entries.len());
    for e in &rpc.entries {
        put_entry(&mut b, e);
    }
    Bytes::from(b)
}

/// Decodes an AppendEntries request.
pub fn decode_append(body: Bytes) -> Result<AppendEntriesRequest<TypeConfig>, WireError> {
    let mut r = Reader::new(body);
    let vote = r.vote()?;
    let prev_log_id = r.opt_log_id()?;
    let leader_commit = r.opt_log_id()?;
    let n = r.u32()? as usize;
    // Each entry takes at least its length field and header.
    if n > r.remaining() / (4 + codec::HEADER_LEN) {
        return Err(WireError(format!("{n} entries in {} bytes", r.remaining())));
    }
    let mut entries = Vec::with_capacity(n);
    for _ in 0..n {
        entries.push(r.entry()?);
    }
    r.end()?;
    Ok(AppendEntriesRequest {
        vote,
        prev_log_id,
        entries,
        leader_commit,
    })
}

/// Encodes an AppendEntries answer.
pub fn encode_append_reply(resp: &AppendEntriesResponse<NodeId>) -> Bytes {
    let mut b = Vec::with_capacity(32);
    match resp {
        AppendEntriesResponse::Success => b.push(0),
        AppendEntriesResponse::PartialSuccess(id) => {
            b.push(1);
            put_opt_log_id(&mut b, id);
        }
        AppendEntriesResponse::Conflict => b.push(2),
        AppendEntriesResponse::HigherVote(v) => {
            b.push(3);
            put_vote(&mut b, v);
        }
    }
    Bytes::from(b)
}

/// Decodes an AppendEntries answer.
pub fn decode_append_reply(body: Bytes) -> Result<AppendEntriesResponse<NodeId>, WireError> {
    let mut r = Reader::new(body);
    let resp = match r.u8()? {
        0 => AppendEntriesResponse::Success,
        1 => AppendEntriesResponse::PartialSuccess(r.opt_log_id()?),
        2 => AppendEntriesResponse::Conflict,
        3 => AppendEntriesResponse::HigherVote(r.vote()?),
        t => return Err(WireError(format!("append reply tag {t}"))),
    };
    r.end()?;
    Ok(resp)
}

/// Encodes a RequestVote request.
pub fn encode_vote_req(rpc: &VoteRequest<NodeId>) -> Bytes {
    let mut b = Vec::with_capacity(48);
    put_vote(&mut b, &rpc.vote);
    put_opt_log_id(&mut b, &rpc.last_log_id);
    Bytes::from(b)
}

/// Decodes a RequestVote request.
pub fn decode_vote_req(body: Bytes) -> Result<VoteRequest<NodeId>, WireError> {
    let mut r = Reader::new(body);
    let vote = r.vote()?;
    let last_log_id = r.opt_log_id()?;
    r.end()?;
    Ok(VoteRequest { vote, last_log_id })
}

/// Encodes a RequestVote answer.
pub fn encode_vote_reply(resp: &VoteResponse<NodeId>) -> Bytes {
    let mut b = Vec::with_capacity(48);
    put_vote(&mut b, &resp.vote);
    b.push(u8::from(resp.vote_granted));
    put_opt_log_id(&mut b, &resp.last_log_id);
    Bytes::from(b)
}

/// Decodes a RequestVote answer.
pub fn decode_vote_reply(body: Bytes) -> Result<VoteResponse<NodeId>, WireError> {
    let mut r = Reader::new(body);
    let vote = r.vote()?;
    let vote_granted = r.bool()?;
    let last_log_id = r.opt_log_id()?;
    r.end()?;
    Ok(VoteResponse {
        vote,
        vote_granted,
        last_log_id,
    })
}

/// What a snapshot request carries besides its meta.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotBody {
    /// The state itself (a small state).
    Inline(Bytes),
    /// A file of `len` bytes, sent before in [`KIND_SNAPSHOT_CHUNK`]s.
    File {
        /// Its bytes.
        len: u64,
    },
}

/// Encodes a snapshot's meta and `body` with the sender's vote.
pub fn encode_snapshot(
    vote: &Vote,
    meta: &SnapshotMeta<NodeId, BasicNode>,
    body: &SnapshotBody,
) -> Bytes {
    let mut b = Vec::with_capacity(96);
    put_vote(&mut b, vote);
    put_opt_log_id(&mut b, &meta.last_log_id);
    put_opt_log_id(&mut b, meta.last_membership.log_id());
    encode_membership(meta.last_membership.membership(), &mut b);
    put_bytes(&mut b, meta.snapshot_id.as_bytes());
    match body {
        SnapshotBody::Inline(data) => {
            b.push(0);
            put_bytes(&mut b, data);
        }
        SnapshotBody::File { len } => {
            b.push(1);
            b.extend_from_slice(&len.to_le_bytes());
        }
    }
    Bytes::from(b)
}

/// Decodes a snapshot request: the sender's vote, the meta, the body.
pub fn decode_snapshot(
    body: Bytes,
) -> Result<(Vote, SnapshotMeta<NodeId, BasicNode>, SnapshotBody), WireError> {
    let mut r = Reader::new(body);
    let vote = r.vote()?;
    let last_log_id = r.opt_log_id()?;
    let membership_log_id = r.opt_log_id()?;
    let (membership, rest) = decode_membership_prefix(&r.buf).map_err(|e| WireError(e.0))?;
    let used = r.buf.len() - rest.len();
    r.buf.advance(used);
    let id = r.bytes()?;
    let snapshot_id = std::str::from_utf8(&id)
        .map_err(|_| WireError("snapshot id is not utf-8".into()))?
        .to_owned();
    let data = match r.u8()? {
        0 => SnapshotBody::Inline(r.bytes()?),
        1 => SnapshotBody::File { len: r.u64()? },
        other => return Err(WireError(format!("snapshot body kind {other}"))),
    };
    r.end()?;
    let meta = SnapshotMeta {
        last_log_id,
        last_membership: StoredMembership::new(membership_log_id, membership),
        snapshot_id,
    };
    Ok((vote, meta, data))
}

/// Encodes a piece of a snapshot file: `offset u64 | bytes`.
pub fn encode_chunk(offset: u64, bytes: &[u8]) -> Bytes {
    let mut b = Vec::with_capacity(12 + bytes.len());
    b.extend_from_slice(&offset.to_le_bytes());
    put_bytes(&mut b, bytes);
    Bytes::from(b)
}

/// Decodes [`encode_chunk`]'s body.
pub fn decode_chunk(body: Bytes) -> Result<(u64, Bytes), WireError> {
    let mut r = Reader::new(body);
    let offset = r.u64()?;
    let bytes = r.bytes()?;
    r.end()?;
    Ok((offset, bytes))
}

/// Encodes a snapshot answer.
pub fn encode_snapshot_reply(resp: &SnapshotResponse<NodeId>) -> Bytes {
    let mut b = Vec::with_capacity(17);
    put_vote(&mut b, &resp.vote);
    Bytes::from(b)
}

/// Decodes a snapshot answer.
pub fn decode_snapshot_reply(body: Bytes) -> Result<SnapshotResponse<NodeId>, WireError> {
    let mut r = Reader::new(body);
    let vote = r.vote()?;
    r.end()?;
    Ok(SnapshotResponse { vote })
}

/// Encodes commands forwarded to a group's leader.
pub fn encode_commands(cmds: &[Bytes]) -> Bytes {
    let mut b = Vec::with_capacity(8 + cmds.iter().map(|c| c.len() + 4).sum::<usize>());
    put_u32(&mut b, cmds.len());
    for c in cmds {
        put_bytes(&mut b, c);
    }
    Bytes::from(b)
}

/// Decodes forwarded commands.
pub fn decode_commands(body: Bytes) -> Result<Vec<Bytes>, WireError> {
    let mut r = Reader::new(body);
    let n = r.u32()? as usize;
    if n > r.remaining() / 4 {
        return Err(WireError(format!(
            "{n} commands in {} bytes",
            r.remaining()
        )));
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(r.bytes()?);
    }
    r.end()?;
    Ok(out)
}

/// The answer to a batch forwarded to a queue group's leader: the index
/// of the entry it proposed (0 if it proposed none) and the positions of
/// the records it refused (`crate::admission`), ascending.
pub fn encode_proposed(index: u64, refused: &[u32]) -> Bytes {
    let mut b = Vec::with_capacity(12 + 4 * refused.len());
    b.extend_from_slice(&index.to_le_bytes());
    put_u32(&mut b, refused.len());
    for at in refused {
        b.extend_from_slice(&at.to_le_bytes());
    }
    Bytes::from(b)
}

/// The refused positions of an answer to `commands` forwarded commands
/// (`encode_proposed`). The index alone — a stream group's answer, or a
/// leader of an earlier version — refuses nothing. Positions must be
/// ascending and within the request.
pub fn decode_refused(body: Bytes, commands: usize) -> Result<Vec<u32>, WireError> {
    let mut r = Reader::new(body);
    r.u64()?;
    if r.remaining() == 0 {
        return Ok(Vec::new());
    }
    let n = r.count(4, "refused commands")?;
    let mut out: Vec<u32> = Vec::with_capacity(n);
    for _ in 0..n {
        let at = r.u32()?;
        if at as usize >= commands || out.last().is_some_and(|l| *l >= at) {
            return Err(WireError(format!(
                "refused position {at} (of {commands} commands, after {:?})",
                out.last()
            )));
        }
        out.push(at);
    }
    r.end()?;
    Ok(out)
}

/// Appends `u16 len | UTF-8 bytes` of `t`, cut at a character boundary
/// to at most `max` bytes (names and addresses; callers bound them far
/// below).
pub(crate) fn put_text(b: &mut Vec<u8>, t: &str, max: usize) {
    let mut end = t.len().min(max).min(u16::MAX as usize);
    while !t.is_char_boundary(end) {
        end -= 1;
    }
    b.extend_from_slice(&(end as u16).to_le_bytes());
    b.extend_from_slice(&t.as_bytes()[..end]);
}

/// Takes a `u16 len | UTF-8 bytes` text off the front of `b`.
pub(crate) fn take_text(b: &mut Bytes) -> Result<String, WireError> {
    if b.len() < 2 {
        return Err(WireError("truncated text".into()));
    }
    let n = b.get_u16_le() as usize;
    if b.len() < n {
        return Err(WireError("truncated text".into()));
    }
    String::from_utf8(b.split_to(n).to_vec()).map_err(|_| WireError("text is not utf-8".into()))
}

// -- pieces ---------------------------------------------------------------------------------------

fn put_u32(b: &mut Vec<u8>, n: usize) {
    // Callers bound n below MAX_FRAME.
    b.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
}

fn put_bytes(b: &mut Vec<u8>, bytes: &[u8]) {
    put_u32(b, bytes.len());
    b.extend_from_slice(bytes);
}

fn put_vote(b: &mut Vec<u8>, v: &Vote) {
    b.extend_from_slice(&codec::encode_vote(v));
}

fn put_opt_log_id(b: &mut Vec<u8>, id: &Option<LogId>) {
    match id {
        None => b.push(0),
        Some(id) => {
            b.push(1);
            b.extend_from_slice(&codec::encode_log_id(id));
        }
    }
}

/// An entry: `u32 len | header record | per command: u32 len | bytes`.
fn put_entry(b: &mut Vec<u8>, e: &Entry) {
    let mut head = Vec::with_capacity(codec::HEADER_LEN);
    codec::encode_header(&e.log_id, &e.payload, &mut head);
    put_bytes(b, &head);
    if let EntryPayload::Normal(batch) = &e.payload {
        for c in &batch.commands {
            put_bytes(b, c);
        }
    }
}

/// A bounds-checked reader over a frame body (slices share its buffer).
struct Reader {
    buf: Bytes,
}

impl Reader {
    fn new(buf: Bytes) -> Self {
        Reader { buf }
    }

    fn remaining(&self) -> usize {
        self.buf.len()
    }

    fn need(&self, n: usize) -> Result<(), WireError> {
        if self.buf.len() < n {
            Err(WireError(format!(
                "truncated: {n} bytes wanted, {} left",
                self.buf.len()
            )))
        } else {
            Ok(())
        }
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        self.need(1)?;
        Ok(self.buf.get_u8())
    }

    fn bool(&mut self) -> Result<bool, WireError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(WireError(format!("bool byte {b}"))),
        }
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        self.need(4)?;
        Ok(self.buf.get_u32_le())
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        self.need(8)?;
        Ok(self.buf.get_u64_le())
    }

    /// A `u32` count of items of at least `min` bytes each, checked
    /// against the bytes left (a lying count allocates nothing).
    fn count(&mut self, min: usize, what: &str) -> Result<usize, WireError> {
        let n = self.u32()? as usize;
        if n > self.remaining() / min.max(1) {
            return Err(WireError(format!(
                "{n} {what} in {} bytes",
                self.remaining()
            )));
        }
        Ok(n)
    }

    fn bytes(&mut self) -> Result<Bytes, WireError> {
        let n = self.u32()? as usize;
        self.need(n)?;
        Ok(self.buf.split_to(n))
    }

    fn vote(&mut self) -> Result<Vote, WireError> {
        self.need(17)?;
        let v = self.buf.split_to(17);
        codec::decode_vote(&v).map_err(|e| WireError(e.0))
    }

    fn opt_log_id(&mut self) -> Result<Option<LogId>, WireError> {
        if !self.bool()? {
            return Ok(None);
        }
        self.need(24)?;
        let b = self.buf.split_to(24);
        codec::decode_log_id(&b)
            .map(Some)
            .map_err(|e| WireError(e.0))
    }

    fn entry(&mut self) -> Result<Entry, WireError> {
        let head = self.bytes()?;
        let h = codec::decode_header(&head).map_err(|e| WireError(e.0))?;
        // Each command takes at least its length field.
        if h.count as usize > self.remaining() / 4 {
            return Err(WireError(format!(
                "{} commands in {} bytes",
                h.count,
                self.remaining()
            )));
        }
        let mut commands = Vec::with_capacity(h.count as usize);
        for _ in 0..h.count {
            commands.push(self.bytes()?);
        }
        codec::assemble(h, commands).map_err(|e| WireError(e.0))
    }

    fn end(&self) -> Result<(), WireError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(WireError(format!("{} trailing bytes", self.buf.len())))
        }
    }
}

/// A log id for tests and callers building requests by hand.
pub fn log_id(term: u64, node: NodeId, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, node), index)
}

/// The node type of this configuration.
pub type Node = BasicNode;

#[cfg(test)]
mod tests;
