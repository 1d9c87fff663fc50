//! [`LogView`]: durable records read without holding the log.
//!
//! A caller that keeps its `Log` under a mutex captures a view under that
//! mutex (O(segments covered): shared file handles, sizes and one sparse
//! index hint, no I/O) and reads it after releasing the mutex, so blocking
//! file reads never extend the lock's hold time.
//!
//! Why this is safe: a view covers only durable records, which were flushed
//! to their segment file before the fsync that made them durable and are
//! never rewritten while they stay durable (appends go after them, the
//! seal write touches only the next segment's header). The exception is
//! `truncate_from` below the durable end (a replication conflict), which
//! may put other records with valid checksums at the same indexes: view
//! only records you never truncate (streams: committed ones; under Raft,
//! below the commit index). A segment that retention removes after the
//! capture stays readable through the captured handle (POSIX unlink
//! semantics, also `SimIo`'s).

use super::{SegmentSet, READER_CHUNK};
use crate::error::LogError;
use crate::index::IndexEntry;
use crate::io::IoFile;
use crate::record::Record;
use crate::scan::{self, Scanner, SegmentSpan};
use crate::segment::SEGMENT_HEADER_LEN;
use std::path::PathBuf;
use std::sync::Arc;

/// Smallest read size of a view's sequential reads.
const MIN_READ_CHUNK: usize = 16 * 1024;

/// Durable records `[from, end)` of a log, detached from it. Built by
/// [`Log::view`](crate::Log::view), read with [`LogView::records`].
#[derive(Debug)]
pub struct LogView {
    from: u64,
    end: u64,
    segments: Vec<ViewSegment>,
    seek_chunk: usize,
    read_chunk: usize,
}

#[derive(Debug)]
struct ViewSegment {
    file: Arc<dyn IoFile>,
    path: PathBuf,
    size: u64,
    base: u64,
    /// The view's end within this segment.
    end: u64,
    hint: Option<IndexEntry>,
}

impl LogView {
    /// Captures the segments covering `[from, limit)` (`limit` at most the
    /// durable end) until about `max_bytes` are covered; see
    /// [`Log::view`](crate::Log::view). No I/O.
    pub(super) fn capture(
        segs: &SegmentSet,
        from: u64,
        limit: u64,
        max_bytes: u64,
        seek_chunk: usize,
    ) -> LogView {
        let mut view = LogView {
            from,
            end: from,
            segments: Vec::new(),
            seek_chunk,
            read_chunk: usize::try_from(max_bytes)
                .unwrap_or(usize::MAX)
                .clamp(MIN_READ_CHUNK, READER_CHUNK),
        };
        if from >= limit {
            return view;
        }
        let mut covered = 0u64;
        for seg in segs.iter().skip_while(|s| s.end_index() <= from) {
            if seg.base >= limit || (covered >= max_bytes && !view.segments.is_empty()) {
                break;
            }
            let hint = (seg.base <= from)
                .then(|| seg.index.lookup((from - seg.base) as u32))
                .flatten();
            let start = hint.map_or(SEGMENT_HEADER_LEN, |h| u64::from(h.pos));
            covered = covered.saturating_add(seg.size.saturating_sub(start));
            let end = seg.end_index().min(limit);
            view.end = end;
            view.segments.push(ViewSegment {
                file: seg.file.clone(),
                path: seg.path.clone(),
                size: seg.size,
                base: seg.base,
                end,
                hint,
            });
        }
        view
    }

    /// The first index it covers.
    pub fn from(&self) -> u64 {
        self.from
    }

    /// The index after the last record it covers (`from` if empty).
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Its records in order, checksums verified; stops after the first
    /// error. Payloads share read buffers of up to a few hundred KiB: copy
    /// any you keep for long. Blocking file reads: not on an async worker.
    pub fn records(&self) -> ViewReader<'_> {
        ViewReader {
            view: self,
            segment: 0,
            next: self.from,
            scanner: None,
            done: false,
        }
    }
}

/// Iterator returned by [`LogView::records`].
#[derive(Debug)]
pub struct ViewReader<'a> {
    view: &'a LogView,
    segment: usize,
    next: u64,
    scanner: Option<Scanner<'a>>,
    done: bool,
}

impl ViewReader<'_> {
    fn fail(&mut self, err: LogError) -> Option<Result<Record, LogError>> {
        self.done = true;
        Some(Err(err))
    }
}

impl Iterator for ViewReader<'_> {
    type Item = Result<Record, LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        let view = self.view;
        loop {
            if self.done || self.next >= view.end {
                return None;
            }
            let seg = view.segments.get(self.segment)?;
            let mut scanner = match self.scanner.take() {
                Some(s) => s,
                None => {
                    let span = SegmentSpan {
                        file: &*seg.file,
                        size: seg.size,
                        tail: &[],
                        base: seg.base,
                        end: seg.end,
                        hint: seg.hint,
                    };
                    match scan::seek(span, self.next, view.seek_chunk, &seg.path) {
                        Ok(mut s) => {
                            s.set_chunk_size(view.read_chunk);
                            s
                        }
                        Err(e) => return self.fail(e),
                    }
                }
            };
            match scanner.next_record() {
                Ok(Some(r)) => {
                    self.next = r.index + 1;
                    self.scanner = Some(scanner);
                    return Some(Ok(Record {
                        index: r.index,
                        payload: r.payload,
                    }));
                }
                Ok(None) if scanner.next_index() >= seg.end => self.segment += 1,
                Ok(None) => {
                    let err = LogError::corrupt(&seg.path, scanner.pos(), "segment ends early");
                    return self.fail(err);
                }
                Err(e) => {
                    let err = e.into_log_error(&seg.path);
                    return self.fail(err);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::config::LogConfig;
    use crate::io::SimIo;
    use crate::log::Log;
    use std::path::Path;

    fn open(sim: &SimIo) -> Log {
        let cfg = LogConfig {
            segment_bytes: 512,
            index_interval_bytes: 64,
            first_index: 0,
        };
        Log::open(sim.shared(), Path::new("/v"), cfg).unwrap().0
    }

    fn sync(log: &mut Log) {
        if let Some(job) = log.prepare_sync().unwrap() {
            let outcome = job.run();
            log.complete_sync(outcome);
        }
    }

    fn append(log: &mut Log, n: usize) {
        for _ in 0..n {
            let i = log.next_index();
            log.append(format!("record {i:04}").as_bytes()).unwrap();
        }
    }

    fn read(view: &LogView) -> Vec<u64> {
        view.records()
            .map(|r| {
                let r = r.unwrap();
                assert_eq!(r.payload, format!("record {:04}", r.index).as_bytes());
                r.index
            })
            .collect()
    }

    #[test]
    fn covers_durable_records_across_segments_from_any_index() {
        let sim = SimIo::new();
        let mut log = open(&sim);
        append(&mut log, 100);
        sync(&mut log);
        append(&mut log, 10);
        assert!(log.segments().len() > 3);
        for from in [0, 1, 17, 50, 99] {
            let v = log.view(from, u64::MAX, u64::MAX).unwrap();
            assert_eq!(v.end(), 100, "only durable records");
            assert_eq!(read(&v), (from..100).collect::<Vec<_>>());
        }
        let v = log.view(100, u64::MAX, u64::MAX).unwrap();
        assert_eq!((v.end(), read(&v)), (100, vec![]));
        // A byte budget stops at a segment end; the next view goes on.
        let v = log.view(0, u64::MAX, 1).unwrap();
        let seg_end = log.segments()[1].base;
        assert_eq!(v.end(), seg_end);
        let w = log.view(v.end(), 60, 1).unwrap();
        assert_eq!(read(&w).first(), Some(&seg_end));
        assert!(w.end() <= 60);
    }

    #[test]
    fn a_view_outlives_purge_and_later_appends() {
        let sim = SimIo::new();
        let mut log = open(&sim);
        append(&mut log, 60);
        sync(&mut log);
        sync(&mut log);
        let v = log.view(0, 60, u64::MAX).unwrap();
        log.purge_before(40).unwrap();
        assert!(log.first_index() > 0);
        append(&mut log, 30);
        sync(&mut log);
        assert_eq!(read(&v), (0..60).collect::<Vec<_>>());
        assert!(matches!(
            log.view(0, 60, 1),
            Err(LogError::OutOfRange { index: 0, .. })
        ));
    }
}
