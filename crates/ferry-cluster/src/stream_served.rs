//! A member's side of a stream read ([`serve`]): a node outside a
//! replicated stream's group asks any member for the committed records
//! from an offset, for one of its consumers (`stream_port` on that node).
//! The member answers from its own copy through the stream's pull API
//! (`Stream::read`, `Stream::wait_for`): no consumer is registered here
//! and nothing is kept between requests, so any member serves any read
//! and a reader moves between members freely (every replica holds the
//! same records at the same offsets).
//!
//! * A consumer's `x-stream-offset` is resolved here, on the copy.
//! * An offset retention removed starts at the first one retained, as a
//!   member's own consumer moves up.
//! * Nothing committed at the offset yet (the tail, or this replica is
//!   behind the reader): the request waits for it, up to its wait, then
//!   is answered with no records.
//!
//! File reads run on the blocking pool, never on an async worker.

use crate::wire::stream::{self, ReadAnswer, ReadStart};
use crate::wire::{FRAME_HEADER, MAX_FRAME};
use bytes::Bytes;
use ferry_queue::stream::{record, ReadBatch, ReadLimits, Stream, WaitOutcome};
use std::sync::Arc;
use tokio::time::Instant;

/// Reads one request makes at most (each after a wait for a commit), so
/// a replica whose committed end runs ahead of what it can read answers
/// rather than spins.
const MAX_READS: usize = 16;

/// What one read on the blocking pool found.
enum Found {
    /// Records: the answer.
    Answer(ReadAnswer),
    /// Retention removed the offset: go on from `first`.
    Gone { first: u64 },
    /// Nothing committed at the offset yet.
    Wait { first: u64, end: u64 },
}

/// Answers a stream read of `stream` (this node's replica).
pub(crate) async fn serve(stream: Arc<Stream>, body: Bytes) -> Result<Bytes, String> {
    let req = stream::decode_read(body).map_err(|e| e.to_string())?;
    let (limits, wait) = req.limits().map_err(|e| e.to_string())?;
    let deadline = Instant::now() + wait;
    let mut from = match req.start {
        ReadStart::At(n) => n,
        ReadStart::Spec(spec) => {
            on_pool(&stream, move |s| {
                s.resolve_start(spec).map_err(|e| e.to_string())
            })
            .await?
        }
    };
    let mut last = (0, 0);
    for _ in 0..MAX_READS {
        match on_pool(&stream, move |s| read(s, from, limits)).await? {
            Found::Answer(a) => return answer(&a),
            Found::Gone { first } => {
                from = first;
                continue;
            }
            Found::Wait { first, end } => last = (first, end),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match tokio::time::timeout(left, stream.wait_for(from)).await {
            Ok(WaitOutcome::Committed) => {}
            Ok(WaitOutcome::Closed) => {
                return Err(format!("stream '{}' is gone on this node", stream.name()))
            }
            Err(_) => break,
        }
    }
    answer(&ReadAnswer {
        first: last.0,
        end: last.1,
        start: from,
        records: Vec::new(),
    })
}

/// The committed records of `s` from `from`, as its log holds them.
fn read(s: &Stream, from: u64, limits: ReadLimits) -> Result<Found, String> {
    let (first, end, records) = match s.read(from, limits).map_err(|e| e.to_string())? {
        ReadBatch::Records {
            first,
            end,
            records,
        } => (first, end, records),
        ReadBatch::OffsetOutOfRange { first, .. } if from < first => {
            return Ok(Found::Gone { first })
        }
        // Past this replica's end: it is behind the reader.
        ReadBatch::OffsetOutOfRange { first, end } => return Ok(Found::Wait { first, end }),
    };
    if records.is_empty() {
        return Ok(Found::Wait { first, end });
    }
    let mut out = Vec::with_capacity(records.len());
    for r in &records {
        // The record as stored: what `read` decoded, written again
        // (the same bytes for every record written since format v2).
        let mut b = Vec::with_capacity(r.bytes as usize);
        record::encode(&r.message, &r.message.properties, r.timestamp_ms, &mut b)
            .map_err(|e| e.to_string())?;
        out.push(Bytes::from(b));
    }
    Ok(Found::Answer(ReadAnswer {
        first,
        end,
        start: from,
        records: out,
    }))
}

/// The answer's bytes; a record too large for a frame cannot cross the
/// link (nor could it have been replicated through one).
fn answer(a: &ReadAnswer) -> Result<Bytes, String> {
    let b = stream::encode_read_answer(a);
    if b.len() + FRAME_HEADER > MAX_FRAME {
        return Err(format!(
            "stream record at offset {} exceeds the cluster frame limit",
            a.start
        ));
    }
    Ok(b)
}

/// Runs `f` on the blocking pool (file reads).
async fn on_pool<T: Send + 'static>(
    s: &Arc<Stream>,
    f: impl FnOnce(&Stream) -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let s = s.clone();
    tokio::task::spawn_blocking(move || f(&s))
        .await
        .map_err(|e| e.to_string())?
}
