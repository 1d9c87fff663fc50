//! One publishing connection: a writer loop that copies a pre-encoded
//! message per publish (stamp patched in) and writes many per syscall, and
//! a reader task that counts publisher confirms.
//!
//! The confirm window (`--confirm N`) is enforced between the two with an
//! atomic count of settled publishes and a `Notify`: the writer only waits
//! when N publishes are unconfirmed, so with a window of 256 it writes up
//! to 256 messages per syscall.
//!
//! Confirm latency: the writer notes each batch (last sequence number,
//! send time); when the settled count passes a batch, the reader records
//! now − send time once per message of the batch (same clock as the
//! publish→deliver stamps).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use ferry_amqp::amq_protocol::protocol::{confirm, AMQPClass};
use ferry_amqp::basic::{parse_basic_ack, parse_basic_nack};
use ferry_amqp::check_frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;

use crate::confirms::ConfirmTracker;
use crate::conn::{self, RawConn, Target, CHANNEL};
use crate::error::BenchError;
use crate::frames::{now_ns, PublishTemplate, Stamp};
use crate::stats::Shared;
use hdrhistogram::Histogram;

/// Bytes per socket write at most (when the window allows).
const WRITE_BATCH_BYTES: usize = 64 * 1024;
/// How long a clean connection.close may take at the end.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// What one producer publishes.
#[derive(Clone, Debug)]
pub struct ProducerSpec {
    /// Index, for names and error messages.
    pub index: usize,
    /// Exchange to publish to ("" = default exchange).
    pub exchange: String,
    /// Routing key.
    pub routing_key: String,
    /// delivery-mode 2.
    pub persistent: bool,
    /// Body size in bytes.
    pub size: usize,
    /// Max unconfirmed publishes; 0 = no confirm mode.
    pub confirm: u32,
    /// Publish exactly this many, then stop.
    pub count: Option<u64>,
    /// Messages per second for this producer; 0 = unlimited.
    pub rate: f64,
    /// Written into each stamp (see `frames.rs`).
    pub run_id: u64,
}

/// A connected producer, ready to run.
#[derive(Debug)]
pub struct Producer {
    conn: RawConn,
    spec: ProducerSpec,
    template: PublishTemplate,
}

/// Shared between the writer loop and the confirm reader.
#[derive(Debug, Default)]
struct Window {
    /// Publishes acked or nacked so far.
    settled: AtomicU64,
    /// Woken when `settled` grows.
    more: tokio::sync::Notify,
    /// We sent connection.close: EOF or close-ok is now expected.
    closing: AtomicBool,
    /// Confirm latency bookkeeping (`Latencies`).
    latencies: Mutex<Latencies>,
}

/// Batches sent and not yet confirmed, and the confirm latencies so far.
#[derive(Debug)]
struct Latencies {
    /// (last sequence number of the batch, messages in it, send time ns).
    batches: VecDeque<(u64, u64, u64)>,
    hist: Option<Histogram<u64>>,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies {
            batches: VecDeque::new(),
            hist: crate::consumer::new_histogram().ok(),
        }
    }
}

impl Latencies {
    /// Records the batches `settled` now covers (at `now` ns).
    fn settle(&mut self, settled: u64, now: u64, measuring: bool) {
        while let Some(&(last, n, sent)) = self.batches.front() {
            if last > settled {
                break;
            }
            self.batches.pop_front();
            if let (true, Some(h)) = (measuring, self.hist.as_mut()) {
                let _ = h.record_n(now.saturating_sub(sent).max(1), n);
            }
        }
    }
}

impl Producer {
    /// Opens the connection, selects confirm mode, encodes the template.
    pub async fn connect(target: &Target, spec: ProducerSpec) -> Result<Producer, BenchError> {
        let name = format!("producer {}", spec.index);
        let mut conn = RawConn::open(target, &name).await?;
        if spec.confirm > 0 {
            conn.call(
                CHANNEL,
                AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select {
                    nowait: false,
                })),
                "confirm.select",
            )
            .await?;
        }
        let template = PublishTemplate::new(
            CHANNEL,
            &spec.exchange,
            &spec.routing_key,
            spec.persistent,
            spec.size,
            conn.frame_max,
        )
        .map_err(|e| BenchError::Usage(format!("cannot encode the message: {e}")))?;
        Ok(Producer {
            conn,
            spec,
            template,
        })
    }

    /// Publishes until stopped (or --count is done and confirmed), then
    /// closes the connection. Errors are also recorded in `shared`.
    /// Returns the confirm latencies (ns; None without confirms).
    pub async fn run(self, shared: Arc<Shared>) -> Option<Histogram<u64>> {
        let confirm = self.spec.confirm > 0;
        let window = Arc::new(Window::default());
        if let Err(e) = self.run_inner(&shared, &window).await {
            shared.fail(e);
        }
        let hist = window.latencies.lock().map_or(None, |mut l| l.hist.take());
        hist.filter(|_| confirm)
    }

    async fn run_inner(self, shared: &Arc<Shared>, window: &Arc<Window>) -> Result<(), BenchError> {
        let Producer {
            conn,
            spec,
            template,
        } = self;
        let RawConn {
            stream,
            rbuf,
            frame_max,
            name,
        } = conn;
        let (rd, mut wr) = stream.into_split();
        let mut reader = tokio::spawn(read_confirms(
            rd,
            rbuf,
            frame_max,
            name.clone(),
            window.clone(),
            shared.clone(),
        ));

        let per_batch = (WRITE_BATCH_BYTES / template.len().max(1)).max(1) as u64;
        let mut buf = Vec::with_capacity(template.len() * per_batch as usize);
        let started = Instant::now();
        let mut seq = 0u64;
        // The socket was left mid-frame: no clean close is possible.
        let mut torn = false;
        loop {
            if shared.stopping() || spec.count.is_some_and(|c| seq >= c) {
                break;
            }
            let mut n = per_batch;
            if let Some(c) = spec.count {
                n = n.min(c - seq);
            }
            if spec.confirm > 0 {
                let in_flight = seq - window.settled.load(Ordering::Acquire);
                let room = u64::from(spec.confirm).saturating_sub(in_flight);
                if room == 0 {
                    tokio::select! {
                        () = window.more.notified() => {}
                        () = shared.stopped() => {}
                    }
                    continue;
                }
                n = n.min(room);
            }
            if spec.rate > 0.0 {
                // Messages allowed by now; the first goes out at once.
                let allowed = (started.elapsed().as_secs_f64() * spec.rate) as u64 + 1;
                if allowed <= seq {
                    let next = started + Duration::from_secs_f64(seq as f64 / spec.rate);
                    tokio::select! {
                        () = tokio::time::sleep_until(next.into()) => {}
                        () = shared.stopped() => {}
                    }
                    continue;
                }
                n = n.min(allowed - seq);
            }
            // One clock read per batch: the batch leaves in one write.
            let sent_ns = now_ns();
            for _ in 0..n {
                seq += 1;
                let stamp = Stamp {
                    run_id: spec.run_id,
                    seq,
                    sent_ns,
                };
                template.append(&mut buf, &stamp);
            }
            if spec.confirm > 0 {
                if let Ok(mut l) = window.latencies.lock() {
                    l.batches.push_back((seq, n, sent_ns));
                }
            }
            // Partial writes are tracked (write is cancel-safe, write_all
            // is not): a stop that lands mid-batch must still leave whole
            // frames on the wire before connection.close.
            let mut written = 0;
            while written < buf.len() && !shared.stopping() {
                tokio::select! {
                    r = wr.write(&buf[written..]) => {
                        written += r.map_err(|e| BenchError::io(format!("{name}: publish"), e))?;
                    }
                    // A broker that stops reading must not hold the run.
                    () = shared.stopped() => {}
                }
            }
            if written < buf.len() {
                let rest = tokio::time::timeout(CLOSE_TIMEOUT, wr.write_all(&buf[written..])).await;
                torn = !matches!(rest, Ok(Ok(())));
                break;
            }
            buf.clear();
            Shared::add(&shared.sent, n);
        }

        // --count: wait for the last confirms (the run's wait is bounded).
        if spec.confirm > 0 && spec.count.is_some() {
            while window.settled.load(Ordering::Acquire) < seq && !shared.stopping() {
                tokio::select! {
                    () = window.more.notified() => {}
                    () = shared.stopped() => {}
                }
            }
        }
        if spec.count.is_some_and(|c| seq >= c) && !shared.stopping() {
            Shared::add(&shared.producers_done, 1);
        }
        if shared.failed() || torn {
            reader.abort();
            return Ok(());
        }
        // Clean close, bounded: the reader ends on close-ok (or EOF).
        window.closing.store(true, Ordering::Release);
        let close = conn::connection_close_frame();
        let closed = tokio::time::timeout(CLOSE_TIMEOUT, async {
            wr.write_all(&close).await.ok()?;
            (&mut reader).await.ok()
        })
        .await;
        if !matches!(closed, Ok(Some(()))) {
            reader.abort();
        }
        Ok(())
    }
}

/// Reads the broker's side of a producer connection: confirms, and any
/// close (which ends the run with its reply code and text).
async fn read_confirms(
    mut rd: OwnedReadHalf,
    mut rbuf: BytesMut,
    frame_max: u32,
    name: String,
    window: Arc<Window>,
    shared: Arc<Shared>,
) {
    let mut tracker = ConfirmTracker::default();
    loop {
        let mut acked = 0;
        let mut nacked = 0;
        let mut frames = 0;
        let mut pos = 0;
        loop {
            let len = match check_frame(&rbuf[pos..], frame_max) {
                Ok(Some(len)) => len,
                Ok(None) => break,
                Err(e) => {
                    return shared.fail(BenchError::Protocol(format!("{name}: {e}")));
                }
            };
            let frame = &rbuf[pos..pos + len];
            pos += len;
            if frame[0] != 1 {
                // Heartbeats, and the content of a basic.return: ignored.
                continue;
            }
            let payload = &frame[7..len - 1];
            if let Some(a) = parse_basic_ack(payload) {
                acked += tracker.settle(a.delivery_tag, a.multiple);
                frames += 1;
            } else if let Some(n) = parse_basic_nack(payload) {
                nacked += tracker.settle(n.delivery_tag, n.multiple);
                frames += 1;
            } else if payload.starts_with(&[0, 10, 0, 51]) {
                // connection.close-ok: the clean end.
                return;
            } else if let Err(e) = rare_method(frame, &name) {
                return shared.fail(e);
            }
        }
        rbuf.advance(pos);
        if acked + nacked > 0 {
            if let Ok(mut l) = window.latencies.lock() {
                l.settle(tracker.settled(), now_ns(), !shared.stopping());
            }
            window.settled.store(tracker.settled(), Ordering::Release);
            window.more.notify_one();
            Shared::add(&shared.confirmed, acked);
            Shared::add(&shared.nacked, nacked);
        }
        Shared::add(&shared.confirm_frames, frames);
        rbuf.reserve(16 * 1024);
        match rd.read_buf(&mut rbuf).await {
            Ok(0) if window.closing.load(Ordering::Acquire) => return,
            Ok(0) => return shared.fail(conn::eof_error(&name, "publishing")),
            Ok(_) => {}
            Err(_) if window.closing.load(Ordering::Acquire) => return,
            Err(e) => return shared.fail(BenchError::io(format!("{name}: read"), e)),
        }
    }
}

/// Any other method: a close ends the run; the rest (basic.return,
/// connection.blocked, ...) is ignored.
fn rare_method(frame: &[u8], name: &str) -> Result<(), BenchError> {
    if let ferry_amqp::Frame::Method { method, .. } = conn::decode_rare(frame)? {
        if let Some(e) = conn::close_error(&method, name, "publishing") {
            return Err(e);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirm_latency_counts_each_message_of_a_covered_batch_once() {
        let mut l = Latencies::default();
        l.batches.push_back((10, 10, 1_000));
        l.batches.push_back((25, 15, 5_000));
        l.settle(9, 50_000, true);
        assert_eq!(l.hist.as_ref().map(Histogram::len), Some(0));
        l.settle(20, 50_000, true);
        assert_eq!(l.hist.as_ref().map(Histogram::len), Some(10));
        l.settle(25, 60_000, false);
        assert!(l.batches.is_empty(), "settled after the stop: dropped");
        let Some(h) = l.hist else {
            panic!("no histogram")
        };
        assert_eq!(h.len(), 10);
        assert!(h.equivalent(h.max(), 49_000));
    }
}
