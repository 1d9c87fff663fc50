//! Pure encoding of Raft entries, votes and log ids (no I/O). The byte
//! layouts are drawn in `docs/raft-log.md`.
//!
//! An entry is stored as consecutive ferry-log records: one header record,
//! then one command record per command of a normal entry. Blank and
//! membership entries are a header record alone.

use crate::error::CodecError;
use crate::types::{Entry, LogId, Membership, NodeId, Vote};
use openraft::{BasicNode, CommittedLeaderId, EntryPayload};
use std::collections::{BTreeMap, BTreeSet};

/// First byte of an entry's header record.
pub const HEADER_KIND: u8 = b'R';
/// First byte of a command record.
pub const COMMAND_KIND: u8 = b'C';
/// Version of the header record layout.
const HEADER_VERSION: u8 = 1;
/// Bytes of a header record before the membership.
pub const HEADER_LEN: usize = 31;

/// Upper bounds a decoded membership must respect (a CRC-valid but wrong
/// record must not make us allocate without bound).
const MAX_CONFIGS: usize = 8;
const MAX_NODES: usize = 1024;
const MAX_ADDR: usize = 1024;

/// What an entry holds, as its header record says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadKind {
    /// A leader's blank entry.
    Blank,
    /// `count` commands follow.
    Normal,
    /// A membership change (in the header).
    Membership,
}

impl PayloadKind {
    fn byte(self) -> u8 {
        match self {
            PayloadKind::Blank => 0,
            PayloadKind::Normal => 1,
            PayloadKind::Membership => 2,
        }
    }

    fn from_byte(b: u8) -> Result<Self, CodecError> {
        match b {
            0 => Ok(PayloadKind::Blank),
            1 => Ok(PayloadKind::Normal),
            2 => Ok(PayloadKind::Membership),
            other => Err(CodecError(format!("unknown payload kind {other}"))),
        }
    }
}

/// A decoded header record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryHeader {
    /// The entry's log id.
    pub log_id: LogId,
    /// What it holds.
    pub kind: PayloadKind,
    /// Command records that follow (0 unless `Normal`).
    pub count: u32,
    /// The membership of a `Membership` entry.
    pub membership: Option<Membership>,
}

/// Appends the header record of `payload` at `log_id` to `buf`.
pub fn encode_header<C>(log_id: &LogId, payload: &EntryPayload<C>, buf: &mut Vec<u8>)
where
    C: openraft::RaftTypeConfig<NodeId = NodeId, Node = BasicNode, D = crate::types::Batch>,
{
    let (kind, count) = match payload {
        EntryPayload::Blank => (PayloadKind::Blank, 0),
        EntryPayload::Normal(batch) => (PayloadKind::Normal, batch.commands.len()),
        EntryPayload::Membership(_) => (PayloadKind::Membership, 0),
    };
    buf.push(HEADER_KIND);
    buf.push(HEADER_VERSION);
    buf.push(kind.byte());
    put_log_id(buf, log_id);
    // A batch never holds anywhere near 2^32 commands (the proposer caps it).
    buf.extend_from_slice(&u32::try_from(count).unwrap_or(u32::MAX).to_le_bytes());
    if let EntryPayload::Membership(m) = payload {
        encode_membership(m, buf);
    }
}

/// Decodes a header record.
pub fn decode_header(bytes: &[u8]) -> Result<EntryHeader, CodecError> {
    let mut r = Reader::new(bytes);
    if r.u8()? != HEADER_KIND {
        return Err(CodecError("not an entry header record".into()));
    }
    let version = r.u8()?;
    if version != HEADER_VERSION {
        return Err(CodecError(format!(
            "unknown entry header version {version}"
        )));
    }
    let kind = PayloadKind::from_byte(r.u8()?)?;
    let log_id = r.log_id()?;
    let count = r.u32()?;
    let membership = match kind {
        PayloadKind::Membership => Some(decode_membership(&mut r)?),
        _ => None,
    };
    if kind != PayloadKind::Normal && count != 0 {
        return Err(CodecError(format!(
            "{kind:?} entry claims {count} commands"
        )));
    }
    r.end()?;
    Ok(EntryHeader {
        log_id,
        kind,
        count,
        membership,
    })
}

/// The entry a header and its commands describe.
pub fn assemble(h: EntryHeader, commands: Vec<bytes::Bytes>) -> Result<Entry, CodecError> {
    if commands.len() != h.count as usize {
        return Err(CodecError(format!(
            "entry {} claims {} commands, {} given",
            h.log_id.index,
            h.count,
            commands.len()
        )));
    }
    let payload = match h.kind {
        PayloadKind::Blank => EntryPayload::Blank,
        PayloadKind::Normal => EntryPayload::Normal(crate::types::Batch::new(commands)),
        PayloadKind::Membership => match h.membership {
            Some(m) => EntryPayload::Membership(m),
            None => return Err(CodecError("membership entry without members".into())),
        },
    };
    Ok(Entry {
        log_id: h.log_id,
        payload,
    })
}

/// Appends a command record holding `command` to `buf`.
pub fn encode_command(command: &[u8], buf: &mut Vec<u8>) {
    buf.push(COMMAND_KIND);
    buf.extend_from_slice(command);
}

/// The command held by a command record.
pub fn command_body(record: &[u8]) -> Result<&[u8], CodecError> {
    match record.split_first() {
        Some((&COMMAND_KIND, body)) => Ok(body),
        _ => Err(CodecError("not a command record".into())),
    }
}

/// True if `record` is a header record (its first byte).
pub fn is_header(record: &[u8]) -> bool {
    record.first() == Some(&HEADER_KIND)
}

/// Appends a membership (the layout of a membership entry's tail).
pub fn encode_membership(m: &Membership, buf: &mut Vec<u8>) {
    let configs = m.get_joint_config();
    put_len(buf, configs.len());
    for c in configs {
        put_len(buf, c.len());
        for id in c {
            buf.extend_from_slice(&id.to_le_bytes());
        }
    }
    let nodes: Vec<(&NodeId, &BasicNode)> = m.nodes().collect();
    put_len(buf, nodes.len());
    for (id, node) in nodes {
        buf.extend_from_slice(&id.to_le_bytes());
        put_len(buf, node.addr.len());
        buf.extend_from_slice(node.addr.as_bytes());
    }
}

/// Decodes a membership written by [`encode_membership`], returning it and
/// the bytes after it.
pub fn decode_membership_prefix(bytes: &[u8]) -> Result<(Membership, &[u8]), CodecError> {
    let mut r = Reader::new(bytes);
    let m = decode_membership(&mut r)?;
    Ok((m, r.buf))
}

fn decode_membership(r: &mut Reader<'_>) -> Result<Membership, CodecError> {
    let nconfigs = r.len(MAX_CONFIGS)?;
    let mut configs = Vec::with_capacity(nconfigs);
    for _ in 0..nconfigs {
        let n = r.len(MAX_NODES)?;
        let mut c = BTreeSet::new();
        for _ in 0..n {
            c.insert(r.u64()?);
        }
        configs.push(c);
    }
    let nnodes = r.len(MAX_NODES)?;
    let mut nodes = BTreeMap::new();
    for _ in 0..nnodes {
        let id = r.u64()?;
        let len = r.len(MAX_ADDR)?;
        let addr = std::str::from_utf8(r.take(len)?)
            .map_err(|_| CodecError("node address is not utf-8".into()))?;
        nodes.insert(
            id,
            BasicNode {
                addr: addr.to_owned(),
            },
        );
    }
    Ok(Membership::new(configs, nodes))
}

/// The body of the vote file: `term u64 | node u64 | committed u8`.
pub fn encode_vote(vote: &Vote) -> Vec<u8> {
    let mut buf = Vec::with_capacity(17);
    buf.extend_from_slice(&vote.leader_id.term.to_le_bytes());
    buf.extend_from_slice(&vote.leader_id.node_id.to_le_bytes());
    buf.push(u8::from(vote.committed));
    buf
}

/// Decodes the vote file's body.
pub fn decode_vote(bytes: &[u8]) -> Result<Vote, CodecError> {
    let mut r = Reader::new(bytes);
    let term = r.u64()?;
    let node = r.u64()?;
    let committed = match r.u8()? {
        0 => false,
        1 => true,
        other => return Err(CodecError(format!("vote committed flag {other}"))),
    };
    r.end()?;
    let mut vote = Vote::new(term, node);
    if committed {
        vote = Vote::new_committed(term, node);
    }
    Ok(vote)
}

/// The body of a log-id file (purged, committed): `term | node | index`.
pub fn encode_log_id(id: &LogId) -> Vec<u8> {
    let mut buf = Vec::with_capacity(24);
    put_log_id(&mut buf, id);
    buf
}

/// Decodes a log-id file's body.
pub fn decode_log_id(bytes: &[u8]) -> Result<LogId, CodecError> {
    let mut r = Reader::new(bytes);
    let id = r.log_id()?;
    r.end()?;
    Ok(id)
}

/// A snapshot's meta (what openraft knows of it), decoded.
pub type SnapMeta = openraft::SnapshotMeta<NodeId, BasicNode>;

/// The head of a queue snapshot file (`docs/queue-snapshot.md`): its
/// last log id, its membership and that membership's log id, its id,
/// then the state image (the rest of the head).
pub fn encode_snapshot_head(meta: &SnapMeta, image: &[u8], buf: &mut Vec<u8>) {
    put_opt_log_id(buf, meta.last_log_id.as_ref());
    put_opt_log_id(buf, meta.last_membership.log_id().as_ref());
    encode_membership(meta.last_membership.membership(), buf);
    put_len(buf, meta.snapshot_id.len());
    buf.extend_from_slice(meta.snapshot_id.as_bytes());
    buf.extend_from_slice(image);
}

/// Decodes [`encode_snapshot_head`]'s bytes: the meta and the image.
pub fn decode_snapshot_head(bytes: &[u8]) -> Result<(SnapMeta, &[u8]), CodecError> {
    let mut r = Reader::new(bytes);
    let last = r.opt_log_id()?;
    let mlog = r.opt_log_id()?;
    let m = decode_membership(&mut r)?;
    let n = r.len(MAX_ADDR)?;
    let id = std::str::from_utf8(r.take(n)?)
        .map_err(|_| CodecError("snapshot id is not utf-8".into()))?
        .to_owned();
    let meta = SnapMeta {
        last_log_id: last,
        last_membership: openraft::StoredMembership::new(mlog, m),
        snapshot_id: id,
    };
    Ok((meta, r.buf))
}

fn put_opt_log_id(buf: &mut Vec<u8>, id: Option<&LogId>) {
    match id {
        Some(id) => {
            buf.push(1);
            put_log_id(buf, id);
        }
        None => buf.push(0),
    }
}

fn put_log_id(buf: &mut Vec<u8>, id: &LogId) {
    buf.extend_from_slice(&id.leader_id.term.to_le_bytes());
    buf.extend_from_slice(&id.leader_id.node_id.to_le_bytes());
    buf.extend_from_slice(&id.index.to_le_bytes());
}

fn put_len(buf: &mut Vec<u8>, n: usize) {
    // Callers bound n far below 2^32 (membership sizes).
    buf.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
}

/// A bounds-checked little-endian reader.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.buf.len() < n {
            return Err(CodecError(format!(
                "truncated: {n} bytes wanted, {} left",
                self.buf.len()
            )));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, CodecError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, CodecError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }

    fn len(&mut self, max: usize) -> Result<usize, CodecError> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(CodecError(format!("count {n} exceeds {max}")));
        }
        Ok(n)
    }

    fn log_id(&mut self) -> Result<LogId, CodecError> {
        let term = self.u64()?;
        let node = self.u64()?;
        let index = self.u64()?;
        Ok(LogId::new(CommittedLeaderId::new(term, node), index))
    }

    fn opt_log_id(&mut self) -> Result<Option<LogId>, CodecError> {
        match self.u8()? {
            0 => Ok(None),
            1 => self.log_id().map(Some),
            other => Err(CodecError(format!("log id flag {other}"))),
        }
    }

    fn end(&self) -> Result<(), CodecError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(CodecError(format!("{} trailing bytes", self.buf.len())))
        }
    }
}

#[cfg(test)]
mod tests;
