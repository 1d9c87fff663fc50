#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use ferry_log::{SimIo, StdIo};
use ferry_queue::queue::state::{ImageRow, MarkRow};

fn meta(index: u64) -> SnapMeta {
    crate::testing::three_node_meta((2, 1, index), &format!("q-2-{index}"))
}

fn image(ids: &[u64]) -> StateImage {
    StateImage {
        rows: ids
            .iter()
            .map(|&id| ImageRow {
                id,
                len: 40,
                delivery_count: u16::from(id % 3 == 0),
                flags: 2,
                priority: 0,
                until: None,
                deadline: (id % 2 == 0).then_some(1_000 + id),
                body: 0,
            })
            .collect(),
        marks: Vec::new(),
    }
}

fn record(id: u64) -> Bytes {
    Bytes::from(format!("record {id} ").repeat(1 + (id as usize % 5)))
}

fn build(store: &SnapshotStore, index: u64, ids: &[u64]) -> Arc<SnapshotFile> {
    store
        .build(&meta(index), &image(ids), &mut |id| Ok(record(id)))
        .expect("build")
}

#[test]
fn a_built_snapshot_reopens_with_its_state_and_serves_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let io: Arc<dyn FileIo> = Arc::new(StdIo);
    let (store, img) = SnapshotStore::open(io.clone(), dir.path()).unwrap();
    assert!(img.is_none() && store.current().is_none());
    let first = build(&store, 10, &[2, 3, 7]);
    assert_eq!(first.records(), 3);
    assert_eq!(store.read(7).unwrap().unwrap(), record(7));
    assert!(store.read(4).is_none(), "not a live message");
    // A newer one replaces it (the old file goes).
    build(&store, 20, &[7, 11, 15]);
    assert!(!first.path().exists());
    assert!(store.read(2).is_none());
    // A write that never finished is dropped at the next open.
    std::fs::write(
        dir.path().join("snapshot-00000000000000000030.tmp"),
        b"half",
    )
    .unwrap();
    drop(store);
    let (store, img) = SnapshotStore::open(io, dir.path()).unwrap();
    assert_eq!(img.unwrap(), image(&[7, 11, 15]));
    let cur = store.current().unwrap();
    assert_eq!(cur.meta(), &meta(20));
    for id in [7, 11, 15] {
        assert_eq!(store.read(id).unwrap().unwrap(), record(id));
    }
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["snapshot-00000000000000000020.fqs".to_owned()]);
}

/// A build whose image is older than the current snapshot (an install
/// overtook it) writes nothing: the current one stays.
#[test]
fn an_older_build_leaves_a_newer_snapshot_current() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = SnapshotStore::open(Arc::new(StdIo), dir.path()).unwrap();
    build(&store, 20, &[7]);
    let mut asked = 0;
    let got = store
        .build(&meta(10), &image(&[1, 2]), &mut |id| {
            asked += 1;
            Ok(record(id))
        })
        .unwrap();
    assert_eq!(got.meta(), &meta(20));
    assert_eq!(asked, 0, "no record read");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn damaged_snapshots_are_refused_and_damaged_records_are_errors() {
    let sim = SimIo::new();
    let io = sim.shared();
    let dir = PathBuf::from("/g");
    io.create_dir_all(&dir).unwrap();
    let (store, _) = SnapshotStore::open(io.clone(), &dir).unwrap();
    let snap = build(&store, 5, &[1, 4]);
    // A bit of the last record's bytes flips.
    sim.flip_bit(snap.path(), snap.len() - 20, 3).unwrap();
    assert!(store.read(4).unwrap().is_err());
    assert_eq!(store.read(1).unwrap().unwrap(), record(1));
    let err = SnapshotStore::open(io.clone(), &dir).unwrap_err();
    assert!(err.to_string().contains("checksum"), "{err}");
    // The head is checked too.
    sim.flip_bit(snap.path(), snap.len() - 20, 3).unwrap();
    sim.flip_bit(snap.path(), 20, 0).unwrap();
    let err = SnapshotStore::open(io, &dir).unwrap_err();
    assert!(err.to_string().contains("head"), "{err}");
}

#[test]
fn a_snapshot_received_in_chunks_installs_and_serves() {
    let from = tempfile::tempdir().unwrap();
    let to = tempfile::tempdir().unwrap();
    let io: Arc<dyn FileIo> = Arc::new(StdIo);
    let (src, _) = SnapshotStore::open(io.clone(), from.path()).unwrap();
    let ids: Vec<u64> = (1..200).map(|i| i * 3).collect();
    let snap = build(&src, 900, &ids);
    let (dst, _) = SnapshotStore::open(io.clone(), to.path()).unwrap();
    let mut buf = vec![0u8; 1000];
    let mut off = 0;
    while off < snap.len() {
        let n = snap.file().read_at(&mut buf, off).unwrap();
        dst.receive_chunk(off, &buf[..n]).unwrap();
        off += n as u64;
    }
    // A chunk that does not follow what was received is refused.
    assert!(dst.receive_chunk(off + 5, b"x").is_err());
    assert!(dst.received(snap.len() + 1).is_err());
    let (path, _) = dst.received(snap.len()).unwrap();
    let (m, img) = dst.install(&path).unwrap();
    assert_eq!(m, meta(900));
    assert_eq!(img, image(&ids));
    assert_eq!(dst.read(300).unwrap().unwrap(), record(300));
    drop(dst);
    let (dst, img) = SnapshotStore::open(io, to.path()).unwrap();
    assert_eq!(img.unwrap().rows.len(), ids.len());
    assert_eq!(dst.read(597).unwrap().unwrap(), record(597));
}

#[test]
fn a_power_cut_leaves_the_old_snapshot_or_the_new_one_whole() {
    for seed in 0..40 {
        let sim = SimIo::new();
        let io = sim.shared();
        let dir = PathBuf::from("/g");
        io.create_dir_all(&dir).unwrap();
        let (store, _) = SnapshotStore::open(io.clone(), &dir).unwrap();
        build(&store, 10, &[1, 2, 3]);
        if seed % 2 == 0 {
            // The new snapshot's sync fails: it never became current.
            sim.fail_next_sync();
            assert!(store
                .build(&meta(20), &image(&[3, 9]), &mut |id| Ok(record(id)))
                .is_err());
        } else {
            build(&store, 20, &[3, 9]);
        }
        sim.crash(seed);
        let (store, img) = SnapshotStore::open(io.clone(), &dir).unwrap();
        let img = img.expect("a snapshot survives");
        let want: &[u64] = if seed % 2 == 0 { &[1, 2, 3] } else { &[3, 9] };
        assert_eq!(img, image(want), "seed {seed}");
        for &id in want {
            assert_eq!(store.read(id).unwrap().unwrap(), record(id));
        }
    }
}

/// The committed files of `tests/fixtures/`: today's reader opens each
/// with its meta, state and records intact, and today's writer still
/// writes the newest one's bytes (a format change must bump the version
/// and keep reading the older files). `FERRY_WRITE_FIXTURES=1` rewrites
/// the newest.
#[test]
fn the_committed_fixtures_read_back_and_the_writer_writes_the_newest() {
    let mut img = image(&[5, 8, 13]);
    img.rows[1].until = Some(77_000);
    img.rows[2].priority = 4;
    img.rows[2].body = 9;
    // Version 1: the state image without marks.
    check_fixture("queue-snapshot-v1.fqs", &img, false);
    // Version 2 (image version 2): with each proposer's last batch.
    img.marks = vec![
        MarkRow {
            proposer: 0x1111,
            seq: 3,
            index: 12,
            refused: vec![(2, vec![1, 4])],
        },
        MarkRow {
            proposer: 0xfeed,
            seq: 1,
            index: 20,
            refused: vec![],
        },
    ];
    check_fixture("queue-snapshot-v2.fqs", &img, true);
}

fn check_fixture(name: &str, img: &StateImage, newest: bool) {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name);
    let io: Arc<dyn FileIo> = Arc::new(StdIo);
    if newest {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = SnapshotStore::open(io.clone(), dir.path()).unwrap();
        let built = store
            .build(&meta(21), img, &mut |id| Ok(record(id)))
            .unwrap();
        let written = std::fs::read(built.path()).unwrap();
        if std::env::var_os("FERRY_WRITE_FIXTURES").is_some() {
            std::fs::write(&fixture, &written).unwrap();
        }
        let committed = std::fs::read(&fixture).expect("the committed fixture");
        assert_eq!(written, committed, "the writer's bytes changed");
    }
    let copy = tempfile::tempdir().unwrap();
    let path = copy.path().join("snapshot-00000000000000000021.fqs");
    std::fs::copy(&fixture, &path).unwrap();
    let (store, got) = SnapshotStore::open(io, copy.path()).unwrap();
    assert_eq!(&got.unwrap(), img, "{name}");
    assert_eq!(store.current().unwrap().meta(), &meta(21));
    for id in [5, 8, 13] {
        assert_eq!(store.read(id).unwrap().unwrap(), record(id));
    }
}
