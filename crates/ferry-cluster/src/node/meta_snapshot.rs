//! The metadata group's snapshot: what a node needs to stand where the
//! group's log was cut (docs/meta-snapshot.md). Pure codec plus the one
//! file it lives in; the state machine (`machine.rs`) decides when.
//!
//! The image is the cluster's own state as the commands that rebuild it
//! (the cluster id, then every member's node info) followed by the
//! definitions applier's export (opaque here: the broker's definitions,
//! docs/definitions-snapshot.md) and the log index of the last definition
//! command in it (after a restart the applier can be ahead of the group's
//! replay: a node installing the image skips the commands up to there):
//!
//! ```text
//! image: u32 n | n × (u32 len | metadata command)
//!        | u64 definitions' index | definitions (the rest)
//! file DIR/meta-snapshot: framed (magic FRYMSNP1, length, CRC32C) around
//!       snapshot head (last log id, membership, id: ferry_raft::codec) | image
//! ```

use super::meta::{MetaCommand, MetaState};
use crate::error::WireError;
use bytes::{Buf, Bytes};
use ferry_log::FileIo;
use ferry_raft::codec::{decode_snapshot_head, encode_snapshot_head, SnapMeta};
use std::path::Path;

const MAGIC: &[u8; 8] = b"FRYMSNP1";
/// The snapshot's file name in the cluster directory.
pub const FILE: &str = "meta-snapshot";

/// The definitions part of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Definitions {
    /// The log index of the last definition command they hold.
    pub index: u64,
    /// The applier's export.
    pub bytes: Bytes,
}

/// The image of `state` with the definitions `defs` (as of log `index`).
pub fn encode_image(state: &MetaState, index: u64, defs: &[u8]) -> Vec<u8> {
    let mut cmds = Vec::with_capacity(state.nodes.len() + 1);
    if let Some(id) = state.cluster_id {
        cmds.push(MetaCommand::ClusterId(id));
    }
    for (id, m) in &state.nodes {
        cmds.push(MetaCommand::NodeInfo {
            id: *id,
            name: m.name.clone(),
            advertise: m.advertise.clone(),
            incarnation: m.incarnation,
        });
    }
    let mut b = Vec::with_capacity(64 * cmds.len() + defs.len() + 4);
    b.extend_from_slice(&(cmds.len() as u32).to_le_bytes());
    for c in cmds {
        let c = c.encode();
        b.extend_from_slice(&(c.len() as u32).to_le_bytes());
        b.extend_from_slice(&c);
    }
    b.extend_from_slice(&index.to_le_bytes());
    b.extend_from_slice(defs);
    b
}

/// The cluster state and the definitions of an image.
pub fn decode_image(mut b: Bytes) -> Result<(MetaState, Definitions), WireError> {
    let short = || WireError("truncated metadata snapshot".into());
    if b.len() < 4 {
        return Err(short());
    }
    let n = b.get_u32_le();
    let mut state = MetaState::default();
    for _ in 0..n {
        if b.len() < 4 {
            return Err(short());
        }
        let len = b.get_u32_le() as usize;
        if b.len() < len {
            return Err(short());
        }
        match MetaCommand::decode(b.split_to(len))? {
            MetaCommand::Definition(_) => {
                return Err(WireError(
                    "a definition in a snapshot's cluster state".into(),
                ))
            }
            c => state.apply_one(c),
        }
    }
    if b.len() < 8 {
        return Err(short());
    }
    let index = b.get_u64_le();
    Ok((state, Definitions { index, bytes: b }))
}

/// Writes the snapshot file (synced, replaced atomically).
pub fn save(io: &dyn FileIo, dir: &Path, meta: &SnapMeta, image: &[u8]) -> Result<(), String> {
    let mut body = Vec::with_capacity(image.len() + 128);
    encode_snapshot_head(meta, image, &mut body);
    ferry_log::framed::save(io, dir, FILE, MAGIC, &body).map_err(|e| e.to_string())
}

/// The snapshot file's meta and image, if there is one.
pub fn load(io: &dyn FileIo, dir: &Path) -> Result<Option<(SnapMeta, Bytes)>, String> {
    let path = dir.join(FILE);
    let Some(body) = ferry_log::framed::load(io, &path, MAGIC).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let (meta, image) =
        decode_snapshot_head(&body).map_err(|e| format!("{}: {}", path.display(), e.0))?;
    Ok(Some((meta, Bytes::copy_from_slice(image))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::meta::Member;
    use ferry_log::StdIo;

    fn fixture_meta() -> SnapMeta {
        ferry_raft::testing::three_node_meta((3, 1, 4096), "meta-4096-1")
    }

    fn fixture_state() -> MetaState {
        let mut st = MetaState {
            cluster_id: Some(*b"ferry-cluster-id"),
            ..MetaState::default()
        };
        for i in 1..=3u64 {
            st.nodes.insert(
                i,
                Member {
                    name: format!("n{i}"),
                    advertise: format!("10.0.0.{i}:25672"),
                    incarnation: 100 + i,
                },
            );
        }
        st
    }

    /// The committed version-1 file (`tests/fixtures/meta-snapshot-v1`):
    /// today's reader loads it, today's writer writes the same bytes (a
    /// format change must bump the magic and keep reading this one).
    /// `FERRY_WRITE_FIXTURES=1` rewrites it.
    #[test]
    #[allow(clippy::unwrap_used, clippy::expect_used)]
    fn the_version_1_fixture_reads_back_and_is_what_the_writer_writes() {
        let fixture =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/meta-snapshot-v1");
        // Opaque definitions here: an empty FRYDEFS1 list.
        let defs = b"FRYDEFS1\0\0\0\0";
        let image = encode_image(&fixture_state(), 4090, defs);
        let dir = tempfile::tempdir().unwrap();
        save(&StdIo, dir.path(), &fixture_meta(), &image).unwrap();
        let written = std::fs::read(dir.path().join(FILE)).unwrap();
        if std::env::var_os("FERRY_WRITE_FIXTURES").is_some() {
            std::fs::write(&fixture, &written).unwrap();
        }
        let committed = std::fs::read(&fixture).expect("the committed fixture");
        assert_eq!(written, committed, "the writer's bytes changed");
        let copy = tempfile::tempdir().unwrap();
        std::fs::copy(&fixture, copy.path().join(FILE)).unwrap();
        let (meta, image) = load(&StdIo, copy.path()).unwrap().expect("a snapshot");
        assert_eq!(meta, fixture_meta());
        let (state, d) = decode_image(image).unwrap();
        assert_eq!(state, fixture_state());
        assert_eq!((d.index, &d.bytes[..]), (4090, &defs[..]));
        // A damaged file is an error, never trusted.
        let mut bad = committed;
        let at = bad.len() - 3;
        bad[at] ^= 1;
        std::fs::write(copy.path().join(FILE), &bad).unwrap();
        assert!(load(&StdIo, copy.path()).is_err());
    }

    #[test]
    #[allow(clippy::unwrap_used)]
    fn an_image_round_trips_and_lies_are_refused() {
        let mut st = MetaState {
            cluster_id: Some([7; 16]),
            ..MetaState::default()
        };
        st.nodes.insert(
            3,
            Member {
                name: "n3".into(),
                advertise: "10.0.0.3:25672".into(),
                incarnation: 9,
            },
        );
        let image = encode_image(&st, 41, b"DEFS");
        let (back, defs) = decode_image(Bytes::from(image.clone())).unwrap();
        assert_eq!(back, st);
        assert_eq!((defs.index, &defs.bytes[..]), (41, &b"DEFS"[..]));
        assert!(decode_image(Bytes::copy_from_slice(&image[..image.len() - 9])).is_err());
        // A lying count or length is refused, never read past the end.
        let mut lying = image.clone();
        lying[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_image(Bytes::from(lying)).is_err());
        let mut lying = image;
        lying[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_image(Bytes::from(lying)).is_err());
        assert!(decode_image(Bytes::from_static(&[1, 0])).is_err());
        // An empty state.
        let (back, defs) =
            decode_image(Bytes::from(encode_image(&MetaState::default(), 0, b""))).unwrap();
        assert_eq!(back, MetaState::default());
        assert!(defs.bytes.is_empty());
    }
}
