//! Helpers shared by the fuzz targets: seed inputs (valid AMQP streams,
//! valid logs) and the container format for log directory images.
//!
//! Seeds are written by the targets themselves when started with
//! `FERRY_FUZZ_SEEDS=<dir>` (see `scripts/fuzz`), so they always match the
//! current input formats.

#[cfg(any(feature = "frames", feature = "session"))]
pub mod streams;

#[cfg(feature = "log")]
pub mod image;

use std::path::PathBuf;

/// If `FERRY_FUZZ_SEEDS` is set, writes `seeds` (name, bytes) there and
/// exits; otherwise returns.
pub fn write_seeds_and_exit_if_asked(seeds: impl FnOnce() -> Vec<(String, Vec<u8>)>) {
    let Some(dir) = std::env::var_os("FERRY_FUZZ_SEEDS").map(PathBuf::from) else {
        return;
    };
    std::fs::create_dir_all(&dir).expect("create seed directory");
    for (name, bytes) in seeds() {
        std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("write seed");
    }
    std::process::exit(0);
}

/// Whether to print the decoded input (`FERRY_FUZZ_DEBUG=1`, handy with
/// `cargo fuzz run <target> <crash file>`).
pub fn debug() -> bool {
    std::env::var_os("FERRY_FUZZ_DEBUG").is_some()
}
