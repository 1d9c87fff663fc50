//! Log directory images: the files of a log directory packed into one
//! fuzz input, so seeds can be real logs whose bytes the fuzzer mutates.
//!
//! ```text
//! segment_extra u16 LE | interval u8 | first_index u8 |
//! (name_len u8 | name | len u32 LE | bytes)*
//! ```
//! The first four bytes choose the `LogConfig` as the structured inputs do.

use ferry_log::{FileIo, Log, LogConfig, SimIo};
use std::path::Path;

/// A parsed image: config bytes and files.
pub struct Image {
    /// Added to the smallest valid segment size.
    pub segment_extra: u16,
    /// Index interval (0 means 1).
    pub interval: u8,
    /// First index of a new log.
    pub first: u8,
    /// (file name, contents).
    pub files: Vec<(String, Vec<u8>)>,
}

impl Image {
    /// The log configuration the image asks for.
    pub fn config(&self) -> LogConfig {
        LogConfig {
            segment_bytes: 56 + u64::from(self.segment_extra % 2048),
            index_interval_bytes: u32::from(self.interval).max(1),
            first_index: u64::from(self.first),
        }
    }

    /// Parses as much of `data` as forms whole entries.
    pub fn parse(data: &[u8]) -> Option<Image> {
        let (head, mut rest) = (data.get(..4)?, data.get(4..)?);
        let mut files = Vec::new();
        while let Some((&n, r)) = rest.split_first() {
            let n = usize::from(n);
            let Some(name) = r.get(..n) else { break };
            let Some(len) = r.get(n..n + 4) else { break };
            let len = u32::from_le_bytes(len.try_into().ok()?) as usize;
            let body = &r[n + 4..];
            let take = len.min(body.len());
            files.push((
                String::from_utf8_lossy(name).into_owned(),
                body[..take].to_vec(),
            ));
            rest = &body[take..];
        }
        Some(Image {
            segment_extra: u16::from_le_bytes([head[0], head[1]]),
            interval: head[2],
            first: head[3],
            files,
        })
    }

    /// Packs an image.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.segment_extra.to_le_bytes().to_vec();
        out.push(self.interval);
        out.push(self.first);
        for (name, bytes) in &self.files {
            out.push(name.len() as u8);
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            out.extend_from_slice(bytes);
        }
        out
    }

    /// Writes the files into `dir` (names with a `/` are skipped).
    pub fn write_to(&self, io: &SimIo, dir: &Path) {
        for (name, bytes) in &self.files {
            if name.is_empty() || name.contains('/') || name == "." || name == ".." {
                continue;
            }
            let Ok(f) = io.open(&dir.join(name), true) else {
                continue;
            };
            let _ = f.set_len(0);
            let _ = f.write_all_at(bytes, 0);
            let _ = f.sync_data();
        }
        let _ = io.sync_dir(dir);
    }

    /// Reads every file of `dir`.
    pub fn read_from(io: &SimIo, dir: &Path, cfg: (u16, u8, u8)) -> Image {
        let mut files = Vec::new();
        let mut paths = io.list(dir).unwrap_or_default();
        paths.sort();
        for p in paths {
            let Ok(f) = io.open(&p, false) else { continue };
            let len = f.len().unwrap_or(0) as usize;
            let mut buf = vec![0u8; len];
            let n = f.read_at(&mut buf, 0).unwrap_or(0);
            buf.truncate(n);
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            files.push((name, buf));
        }
        Image {
            segment_extra: cfg.0,
            interval: cfg.1,
            first: cfg.2,
            files,
        }
    }
}

fn sync(log: &mut Log) {
    if let Ok(Some(job)) = log.prepare_sync() {
        let out = job.run();
        log.complete_sync(out);
    }
}

/// Real logs, built with the log's own API: several segments (sealed and
/// not), index entries, a purge, a truncation, unsynced tails.
pub fn seed_logs() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    // (name, segment_extra, interval, first, records, sync every, purge, truncate)
    type Plan = (&'static str, u16, u8, u8, usize, usize, bool, bool);
    let plans: &[Plan] = &[
        ("log-one-segment", 2000, 64, 0, 20, 5, false, false),
        ("log-many-segments", 200, 16, 0, 40, 3, false, false),
        ("log-purged", 150, 8, 5, 40, 1, true, false),
        ("log-truncated", 300, 32, 0, 30, 4, false, true),
        ("log-unsynced-tail", 250, 16, 0, 25, 0, false, false),
    ];
    for &(name, extra, interval, first, n, every, purge, truncate) in plans {
        let io = SimIo::new();
        let dir = Path::new("/seed");
        let _ = io.create_dir_all(dir);
        let cfg = Image {
            segment_extra: extra,
            interval,
            first,
            files: Vec::new(),
        }
        .config();
        let Ok((mut log, _)) = Log::open(io.shared(), dir, cfg) else {
            continue;
        };
        for i in 0..n {
            let payload: Vec<u8> = (0..(i * 7) % 90).map(|b| b as u8 ^ i as u8).collect();
            let _ = log.append(&payload);
            if every > 0 && i % every == every - 1 {
                sync(&mut log);
            }
        }
        if every > 0 {
            sync(&mut log);
        } else {
            let _ = log.flush();
        }
        if purge {
            let upto = log.first_index() + 20;
            let _ = log.purge_before(upto);
            sync(&mut log);
        }
        if truncate {
            let at = log.first_index() + 17;
            let _ = log.truncate_from(at);
            let _ = log.append(b"after truncation");
            sync(&mut log);
        }
        drop(log);
        out.push((
            name.to_string(),
            Image::read_from(&io, dir, (extra, interval, first)).encode(),
        ));
    }
    out
}
