//! [`LogReader`]: sequential replay across segments.

use crate::error::LogError;
use crate::log::{Log, READER_CHUNK};
use crate::record::{Record, RecordPos};
use crate::scan::Scanner;
use std::path::Path;

/// Iterator returned by [`Log::reader`]. Stops after the first error.
#[derive(Debug)]
pub struct LogReader<'a> {
    log: &'a Log,
    next: u64,
    current: Option<Current<'a>>,
    done: bool,
}

#[derive(Debug)]
struct Current<'a> {
    scanner: Scanner<'a>,
    base: u64,
    end: u64,
    path: &'a Path,
}

impl<'a> LogReader<'a> {
    pub(crate) fn new(log: &'a Log, from: u64) -> Self {
        LogReader {
            log,
            next: from,
            current: None,
            done: false,
        }
    }

    fn fail(&mut self, err: LogError) -> Option<Result<(RecordPos, Record), LogError>> {
        self.done = true;
        Some(Err(err))
    }
}

impl Iterator for LogReader<'_> {
    type Item = Result<(RecordPos, Record), LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done || self.next >= self.log.next_index() {
                return None;
            }
            let mut cur = match self.current.take() {
                Some(c) => c,
                None => match self.log.scanner_at(self.next, READER_CHUNK) {
                    Ok((scanner, seg)) => Current {
                        scanner,
                        base: seg.base,
                        end: seg.end_index(),
                        path: &seg.path,
                    },
                    Err(e) => return self.fail(e),
                },
            };
            match cur.scanner.next_record() {
                Ok(Some(r)) => {
                    self.next = r.index + 1;
                    let pos = RecordPos {
                        index: r.index,
                        segment: cur.base,
                        offset: r.pos,
                        len: r.len,
                    };
                    self.current = Some(cur);
                    return Some(Ok((
                        pos,
                        Record {
                            index: r.index,
                            payload: r.payload,
                        },
                    )));
                }
                Ok(None) if cur.scanner.next_index() >= cur.end => {}
                Ok(None) => {
                    let err = LogError::corrupt(cur.path, cur.scanner.pos(), "segment ends early");
                    return self.fail(err);
                }
                Err(e) => {
                    let err = e.into_log_error(cur.path);
                    return self.fail(err);
                }
            }
        }
    }
}
