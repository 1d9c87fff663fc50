//! The process side of `ferry ctl cluster join`: a node that is a cluster
//! of one asked to join another cluster writes a marker into its data
//! directory and starts over (the same binary and arguments, in place);
//! at start, before anything opens the data directory, a marker there
//! resets it (everything but the marker is removed, as RabbitMQ's
//! `join_cluster` resets the node) and records the other cluster's
//! address as this node's seeds, which then replace `cluster_seeds` (the
//! node joins through them like any node started later). Crash-safe: the
//! marker goes last, so a reset cut short is done again at the next start.

use std::path::{Path, PathBuf};

/// The marker: the address of the cluster to join.
const MARKER: &str = "join-pending";
/// The seeds a join recorded, one address per line (under `cluster/`).
const SEEDS: &str = "seeds";

fn seeds_file(data_dir: &Path) -> PathBuf {
    data_dir.join("cluster").join(SEEDS)
}

/// Writes the marker (synced): the next start resets the data directory
/// and joins the cluster at `addr`.
pub fn mark(data_dir: &Path, addr: &str) -> std::io::Result<()> {
    write_synced(&data_dir.join(MARKER), addr.as_bytes())?;
    sync_dir(data_dir)
}

/// Carries out a pending join's reset, if the marker is there.
pub fn apply_pending(data_dir: &Path) -> Result<(), String> {
    let marker = data_dir.join(MARKER);
    let addr = match std::fs::read_to_string(&marker) {
        Ok(a) => a.trim().to_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("cannot read {}: {e}", marker.display())),
    };
    if addr.is_empty() {
        return Err(format!(
            "{} is empty: remove it to start without joining",
            marker.display()
        ));
    }
    let err = |p: &Path, e: std::io::Error| format!("resetting {}: {e}", p.display());
    for entry in std::fs::read_dir(data_dir).map_err(|e| err(data_dir, e))? {
        let entry = entry.map_err(|e| err(data_dir, e))?;
        if entry.file_name() == MARKER {
            continue;
        }
        let path = entry.path();
        let removed = if entry.file_type().map_err(|e| err(&path, e))?.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(|e| err(&path, e))?;
    }
    let seeds = seeds_file(data_dir);
    let dir = data_dir.join("cluster");
    std::fs::create_dir_all(&dir).map_err(|e| err(&dir, e))?;
    write_synced(&seeds, format!("{addr}\n").as_bytes()).map_err(|e| err(&seeds, e))?;
    sync_dir(&dir).map_err(|e| err(&dir, e))?;
    sync_dir(data_dir).map_err(|e| err(data_dir, e))?;
    std::fs::remove_file(&marker).map_err(|e| err(&marker, e))?;
    sync_dir(data_dir).map_err(|e| err(data_dir, e))?;
    tracing::warn!(cluster = %addr, data_dir = %data_dir.display(),
        "data directory reset to join another cluster");
    Ok(())
}

/// The seeds a join recorded in this data directory, if any: they replace
/// the configured `cluster_seeds`.
pub fn recorded_seeds(data_dir: &Path) -> Result<Option<Vec<String>>, String> {
    let path = seeds_file(data_dir);
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok(Some(
            s.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect(),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Replaces this process by a new run of the same binary with the same
/// arguments and environment (returns only if that fails).
pub fn start_over() -> std::io::Error {
    use std::os::unix::process::CommandExt;
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => return e,
    };
    std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .exec()
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn a_pending_join_resets_the_directory_and_records_the_seed() {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(d.path().join("vhosts/x")).expect("mkdir");
        std::fs::write(d.path().join("vhosts/x/data"), b"old").expect("write");
        std::fs::create_dir_all(d.path().join("cluster/meta")).expect("mkdir");
        std::fs::write(d.path().join("users"), b"old").expect("write");
        assert_eq!(recorded_seeds(d.path()).expect("read"), None);
        apply_pending(d.path()).expect("nothing pending");
        assert!(
            d.path().join("users").exists(),
            "no marker: nothing removed"
        );

        mark(d.path(), "10.0.0.1:25672").expect("mark");
        apply_pending(d.path()).expect("reset");
        let left: Vec<_> = std::fs::read_dir(d.path())
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("cluster")]);
        assert_eq!(
            recorded_seeds(d.path()).expect("read"),
            Some(vec!["10.0.0.1:25672".to_owned()])
        );
        assert!(!d.path().join("cluster/meta").exists());
        // Done: a second start keeps what the joined node writes.
        std::fs::write(d.path().join("users"), b"new").expect("write");
        apply_pending(d.path()).expect("nothing pending");
        assert!(d.path().join("users").exists());
    }
}
