//! Mutual authentication of a node link with the cluster's shared secret
//! (HMAC-SHA256 over both sides' random nonces and node ids; the secret
//! never crosses the wire). A connection that fails it is dropped before
//! any Raft message is read.
//!
//! ```text
//! client → server  hello:   "FRYC" | ver u8 | id u64 | inc u64 | cluster [16] | nonce [16] | u16 len | name | u16 len | advertise
//! server → client  welcome: "FRYC" | ver u8 | id u64 | inc u64 | cluster [16] | nonce [16] | mac [32]
//!                           mac = HMAC("srv" | nc | ns | ci | si | cinc | sinc | ccl | scl)
//! client → server  proof:   mac [32] = HMAC("cli" | ns | nc | ci | si | cinc | sinc | ccl | scl)
//! ```
//!
//! `inc` is the node's incarnation: a random number its data directory got
//! when it was created. A node whose data directory was wiped comes back
//! with the same id and a new incarnation, which the others can tell
//! (`node::admission`). `cluster` is the cluster id its data directory
//! records (zeros: none yet, a fresh node or a cluster still forming):
//! two nodes that record different ones belong to different clusters and
//! never link (a node never joins a cluster its data does not belong to).

use crate::error::LinkError;
use ferry_raft::NodeId;
use rand::RngCore;
use ring::hmac;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const MAGIC: &[u8; 4] = b"FRYC";
const VERSION: u8 = 3;
const MAX_TEXT: usize = 1024;
/// The whole handshake must finish within this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The cluster's shared secret as an HMAC key.
#[derive(Clone)]
pub struct Secret(hmac::Key);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// A key from the secret's bytes (the file's contents, trimmed by the caller).
    pub fn new(bytes: &[u8]) -> Self {
        Secret(hmac::Key::new(hmac::HMAC_SHA256, bytes))
    }

    fn message(label: &[u8], a: &[u8; 16], b: &[u8; 16], ids: &Ids) -> Vec<u8> {
        let mut msg = Vec::with_capacity(112);
        msg.extend_from_slice(label);
        msg.extend_from_slice(a);
        msg.extend_from_slice(b);
        for x in ids.0 {
            msg.extend_from_slice(&x.to_le_bytes());
        }
        for c in &ids.1 {
            msg.extend_from_slice(c);
        }
        msg
    }

    fn mac(&self, label: &[u8], a: &[u8; 16], b: &[u8; 16], ids: &Ids) -> hmac::Tag {
        hmac::sign(&self.0, &Self::message(label, a, b, ids))
    }

    fn verify(&self, label: &[u8], a: &[u8; 16], b: &[u8; 16], ids: &Ids, tag: &[u8]) -> bool {
        hmac::verify(&self.0, &Self::message(label, a, b, ids), tag).is_ok()
    }
}

/// What both MACs cover besides the nonces: client id, server id, client
/// incarnation, server incarnation; client and server cluster ids.
type Ids = ([u64; 4], [[u8; 16]; 2]);

/// The cluster id a node's data directory records, shared by its links
/// and its listener and read at every handshake (set once the cluster
/// formed or this node joined; `None` before).
#[derive(Clone, Default)]
pub struct ClusterTag(std::sync::Arc<parking_lot::Mutex<Option<[u8; 16]>>>);

impl ClusterTag {
    /// A tag holding `id`.
    pub fn new(id: Option<[u8; 16]>) -> Self {
        ClusterTag(std::sync::Arc::new(parking_lot::Mutex::new(id)))
    }

    /// The id now.
    pub fn get(&self) -> Option<[u8; 16]> {
        *self.0.lock()
    }

    /// Records the id (every holder of this tag sees it).
    pub fn set(&self, id: [u8; 16]) {
        *self.0.lock() = Some(id);
    }

    /// On the wire: zeros for none.
    fn wire(&self) -> [u8; 16] {
        self.get().unwrap_or_default()
    }
}

impl PartialEq for ClusterTag {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl Eq for ClusterTag {}

impl std::fmt::Debug for ClusterTag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.get() {
            Some(id) => f.write_str(&hex(&id)),
            None => f.write_str("none"),
        }
    }
}

fn hex(id: &[u8; 16]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// Refuses a peer whose data directory records another cluster than this
/// node's (zeros: none recorded, never refused).
fn same_cluster(addr: &str, mine: [u8; 16], theirs: [u8; 16]) -> Result<(), LinkError> {
    let none = [0u8; 16];
    if mine == none || theirs == none || mine == theirs {
        return Ok(());
    }
    Err(fail(
        addr,
        format!(
            "the peer belongs to another cluster (its data records cluster {}, this node's {})",
            hex(&theirs),
            hex(&mine)
        ),
    ))
}

/// Who a node is on the links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Its Raft node id.
    pub id: NodeId,
    /// Its node name (`--node-name`).
    pub name: String,
    /// The address the others dial (`cluster_advertise`).
    pub advertise: String,
    /// Its data directory's incarnation (see the module docs).
    pub incarnation: u64,
    /// The cluster id its data directory records.
    pub cluster: ClusterTag,
}

fn nonce() -> [u8; 16] {
    let mut n = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut n);
    n
}

fn fail(addr: &str, reason: impl Into<String>) -> LinkError {
    LinkError::Handshake {
        addr: addr.to_owned(),
        reason: reason.into(),
    }
}

async fn read_text<S: AsyncRead + Unpin>(s: &mut S, addr: &str) -> Result<String, LinkError> {
    let n = s
        .read_u16_le()
        .await
        .map_err(|e| fail(addr, e.to_string()))? as usize;
    if n > MAX_TEXT {
        return Err(fail(addr, format!("{n}-byte text field")));
    }
    let mut b = vec![0u8; n];
    s.read_exact(&mut b)
        .await
        .map_err(|e| fail(addr, e.to_string()))?;
    String::from_utf8(b).map_err(|_| fail(addr, "text field is not utf-8"))
}

fn put_text(out: &mut Vec<u8>, t: &str) {
    crate::wire::put_text(out, t, MAX_TEXT);
}

/// A peer's introduction: its id, incarnation, cluster id and nonce.
type Intro = (NodeId, u64, [u8; 16], [u8; 16]);

async fn read_intro<S: AsyncRead + Unpin>(s: &mut S, addr: &str) -> Result<Intro, LinkError> {
    let mut head = [0u8; 4 + 1 + 8 + 8 + 16 + 16];
    s.read_exact(&mut head)
        .await
        .map_err(|e| fail(addr, e.to_string()))?;
    if &head[..4] != MAGIC {
        return Err(fail(addr, "not a Ferry cluster connection"));
    }
    if head[4] != VERSION {
        return Err(fail(
            addr,
            format!(
                "cluster protocol version {} (this node speaks {VERSION})",
                head[4]
            ),
        ));
    }
    let mut id = [0u8; 8];
    id.copy_from_slice(&head[5..13]);
    let mut inc = [0u8; 8];
    inc.copy_from_slice(&head[13..21]);
    let mut cluster = [0u8; 16];
    cluster.copy_from_slice(&head[21..37]);
    let mut n = [0u8; 16];
    n.copy_from_slice(&head[37..53]);
    Ok((
        NodeId::from_le_bytes(id),
        u64::from_le_bytes(inc),
        cluster,
        n,
    ))
}

fn intro(me: &Identity, cluster: &[u8; 16], n: &[u8; 16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(96);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&me.id.to_le_bytes());
    out.extend_from_slice(&me.incarnation.to_le_bytes());
    out.extend_from_slice(cluster);
    out.extend_from_slice(n);
    out
}

/// The dialing side. Returns the peer's node id and incarnation once
/// both sides proved they hold the secret; a peer answering with another
/// id than `expect` (or this node's own), or recording another cluster,
/// is refused before this side sends its proof.
pub async fn dial<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    me: &Identity,
    secret: &Secret,
    addr: &str,
    expect: NodeId,
) -> Result<(NodeId, u64), LinkError> {
    let run = async {
        let nc = nonce();
        let mine = me.cluster.wire();
        let mut hello = intro(me, &mine, &nc);
        put_text(&mut hello, &me.name);
        put_text(&mut hello, &me.advertise);
        s.write_all(&hello)
            .await
            .map_err(|e| fail(addr, e.to_string()))?;
        let (sid, sinc, scl, ns) = read_intro(s, addr).await?;
        let mut tag = [0u8; 32];
        s.read_exact(&mut tag)
            .await
            .map_err(|e| fail(addr, e.to_string()))?;
        let ids = ([me.id, sid, me.incarnation, sinc], [mine, scl]);
        if !secret.verify(b"srv", &nc, &ns, &ids, &tag) {
            return Err(fail(addr, "the peer does not hold this cluster's secret"));
        }
        if sid != expect || sid == me.id {
            return Err(fail(
                addr,
                format!("the peer is node {sid}, not node {expect} (is its cluster_advertise the address the others dial?)"),
            ));
        }
        same_cluster(addr, mine, scl)?;
        let proof = secret.mac(b"cli", &ns, &nc, &ids);
        s.write_all(proof.as_ref())
            .await
            .map_err(|e| fail(addr, e.to_string()))?;
        Ok((sid, sinc))
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, run)
        .await
        .map_err(|_| fail(addr, "timed out"))?
}

/// The accepting side. Returns the dialer's identity once both sides
/// proved they hold the secret; on any failure the caller drops the
/// connection.
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    me: &Identity,
    secret: &Secret,
    addr: &str,
) -> Result<Identity, LinkError> {
    let run = async {
        let (cid, cinc, ccl, nc) = read_intro(s, addr).await?;
        if cid == me.id {
            return Err(fail(addr, "the dialer claims this node's own id"));
        }
        let name = read_text(s, addr).await?;
        let advertise = read_text(s, addr).await?;
        let ns = nonce();
        let mine = me.cluster.wire();
        let ids = ([cid, me.id, cinc, me.incarnation], [ccl, mine]);
        let mut welcome = intro(me, &mine, &ns);
        welcome.extend_from_slice(secret.mac(b"srv", &nc, &ns, &ids).as_ref());
        s.write_all(&welcome)
            .await
            .map_err(|e| fail(addr, e.to_string()))?;
        let mut tag = [0u8; 32];
        s.read_exact(&mut tag).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                // What a dialer does when this node's proof or cluster id
                // fails its checks.
                same_cluster(addr, mine, ccl).err().unwrap_or_else(|| {
                    fail(
                        addr,
                        "the dialer hung up (it does not hold this cluster's secret?)",
                    )
                })
            } else {
                fail(addr, e.to_string())
            }
        })?;
        if !secret.verify(b"cli", &ns, &nc, &ids, &tag) {
            return Err(fail(addr, "the dialer does not hold this cluster's secret"));
        }
        same_cluster(addr, mine, ccl)?;
        Ok(Identity {
            id: cid,
            name,
            advertise,
            incarnation: cinc,
            cluster: ClusterTag::new((ccl != [0u8; 16]).then_some(ccl)),
        })
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, run)
        .await
        .map_err(|_| fail(addr, "timed out"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(id: NodeId, incarnation: u64) -> Identity {
        Identity {
            id,
            name: format!("n{id}"),
            advertise: format!("10.0.0.{id}:25672"),
            incarnation,
            cluster: ClusterTag::default(),
        }
    }

    #[tokio::test]
    async fn both_sides_learn_each_others_id_and_incarnation_or_fail() {
        let (a, b) = (who(1, 0xAA), who(2, 0xBB));
        let secret = Secret::new(b"s");
        let (mut c, mut s) = tokio::io::duplex(1024);
        let (dialed, accepted) = tokio::join!(
            dial(&mut c, &a, &secret, "x", 2),
            accept(&mut s, &b, &secret, "y")
        );
        assert!(matches!(dialed, Ok((2, 0xBB))), "{dialed:?}");
        assert_eq!(accepted.ok(), Some(a.clone()));
        // Another secret on one side: both fail.
        let (mut c, mut s) = tokio::io::duplex(1024);
        let other = Secret::new(b"other");
        let (dialed, accepted) = tokio::join!(
            dial(&mut c, &a, &other, "x", 2),
            accept(&mut s, &b, &secret, "y")
        );
        assert!(dialed.is_err() && accepted.is_err());
    }

    #[tokio::test]
    async fn nodes_recording_different_clusters_do_not_link() {
        let (a, b) = (who(1, 0xAA), who(2, 0xBB));
        let secret = Secret::new(b"s");
        // One side without a cluster id yet (a fresh node): linked, and the
        // acceptor learns the dialer's.
        a.cluster.set([1; 16]);
        let (mut c, mut s) = tokio::io::duplex(1024);
        let (dialed, accepted) = tokio::join!(
            dial(&mut c, &a, &secret, "x", 2),
            accept(&mut s, &b, &secret, "y")
        );
        assert!(dialed.is_ok(), "{dialed:?}");
        assert_eq!(
            accepted.map(|who| who.cluster.get()).ok(),
            Some(Some([1; 16]))
        );
        // The same cluster: linked.
        b.cluster.set([1; 16]);
        let (mut c, mut s) = tokio::io::duplex(1024);
        let (dialed, accepted) = tokio::join!(
            dial(&mut c, &a, &secret, "x", 2),
            accept(&mut s, &b, &secret, "y")
        );
        assert!(dialed.is_ok() && accepted.is_ok());
        // Another cluster: neither side links, both say why.
        b.cluster.set([2; 16]);
        let (c, mut s) = tokio::io::duplex(1024);
        let (dialed, accepted) = tokio::join!(
            // The dialer hangs up once refused (drops its end).
            async {
                let mut c = c;
                dial(&mut c, &a, &secret, "x", 2).await
            },
            accept(&mut s, &b, &secret, "y")
        );
        let why = format!("{:?}", dialed.err());
        assert!(why.contains("another cluster"), "{why}");
        assert!(accepted.is_err());
        // The other way round too.
        let (c, mut s) = tokio::io::duplex(1024);
        let (dialed, accepted) = tokio::join!(
            async {
                let mut c = c;
                dial(&mut c, &b, &secret, "x", 1).await
            },
            accept(&mut s, &a, &secret, "y")
        );
        assert!(dialed.is_err());
        let why = format!("{:?}", accepted.err());
        assert!(why.contains("another cluster"), "{why}");
    }
}
