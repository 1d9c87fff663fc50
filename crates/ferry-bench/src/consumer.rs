//! One consuming connection: reads deliveries with the two-step
//! `check_frame` + a borrowing deliver parser (no allocation per message),
//! records publish→deliver latency from the body stamp, and acks in
//! batches with `multiple`, one socket write per socket read at most.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use ferry_amqp::amq_protocol::protocol::{basic, AMQPClass};
use ferry_amqp::basic::parse_basic_deliver;
use ferry_amqp::{check_frame, encode_basic_ack, encode_method, FieldTable};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::conn::{self, RawConn, Target, CHANNEL};
use crate::error::BenchError;
use crate::frames::{now_ns, Stamp};
use crate::stats::Shared;

/// How long a clean connection.close may take at the end.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Latencies are recorded in nanoseconds, 3 significant digits, up to
/// 10 minutes (longer ones are clamped).
pub fn new_histogram() -> Result<Histogram<u64>, BenchError> {
    Histogram::new_with_bounds(100, 600_000_000_000, 3)
        .map_err(|e| BenchError::Protocol(format!("histogram: {e}")))
}

/// What one consumer consumes.
#[derive(Clone, Debug)]
pub struct ConsumerSpec {
    /// Index, for names and error messages.
    pub index: usize,
    /// Queue to consume.
    pub queue: String,
    /// basic.qos prefetch-count (0 = unlimited).
    pub prefetch: u16,
    /// no-ack consumer.
    pub auto_ack: bool,
    /// Ack every N deliveries with multiple (1 = single acks).
    pub multi_ack_every: u32,
    /// Only stamps with this run id give a latency.
    pub run_id: u64,
}

/// A connected consumer (qos set), ready to run.
#[derive(Debug)]
pub struct Consumer {
    conn: RawConn,
    spec: ConsumerSpec,
}

/// Where the frame reader is within a delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// A method (basic.deliver or anything else).
    Method,
    /// The content header of a delivery.
    Header,
    /// Body frames: bytes still to come, and whether none came yet.
    Body { remaining: u64, first: bool },
}

/// The per-connection delivery state machine, separate from I/O so that
/// it can be tested on bytes.
#[derive(Debug)]
struct Deliveries {
    spec: ConsumerSpec,
    expect: Expect,
    last_tag: u64,
    unacked: u32,
    received: u64,
    hist: Histogram<u64>,
    /// Set by connection.close-ok.
    closed: bool,
    /// After stop: parse (to find close-ok) but count, ack, record nothing.
    draining: bool,
}

impl Deliveries {
    fn new(spec: ConsumerSpec) -> Result<Self, BenchError> {
        Ok(Deliveries {
            spec,
            expect: Expect::Method,
            last_tag: 0,
            unacked: 0,
            received: 0,
            hist: new_histogram()?,
            closed: false,
            draining: false,
        })
    }

    /// Handles every whole frame at the start of `buf`; acks go to `out`.
    /// Returns how many bytes were consumed. `now` is the read's time.
    fn process(&mut self, buf: &[u8], now: u64, out: &mut BytesMut) -> Result<usize, BenchError> {
        let mut pos = 0;
        loop {
            let len = match check_frame(&buf[pos..], 0) {
                Ok(Some(len)) => len,
                Ok(None) => return Ok(pos),
                Err(e) => return Err(self.protocol(&e.to_string())),
            };
            self.frame(&buf[pos..pos + len], now, out)?;
            pos += len;
        }
    }

    fn protocol(&self, what: &str) -> BenchError {
        BenchError::Protocol(format!("consumer {}: {what}", self.spec.index))
    }

    fn frame(&mut self, frame: &[u8], now: u64, out: &mut BytesMut) -> Result<(), BenchError> {
        let payload = &frame[7..frame.len() - 1];
        match (frame[0], self.expect) {
            (1, Expect::Method) => {
                if let Some(d) = parse_basic_deliver(payload) {
                    self.last_tag = d.delivery_tag;
                    self.expect = Expect::Header;
                } else {
                    self.other_method(frame, payload)?;
                }
            }
            (2, Expect::Header) if payload.len() >= 12 => {
                let mut size = [0u8; 8];
                size.copy_from_slice(&payload[4..12]);
                match u64::from_be_bytes(size) {
                    0 => self.complete(None, now, out),
                    remaining => {
                        self.expect = Expect::Body {
                            remaining,
                            first: true,
                        }
                    }
                }
            }
            (3, Expect::Body { remaining, first }) => {
                let stamp = if first { Stamp::read(payload) } else { None };
                let got = payload.len() as u64;
                if got >= remaining {
                    // A longer body than announced is the broker's bug;
                    // counting it as one message keeps the run going.
                    self.complete(stamp, now, out);
                } else {
                    self.expect = Expect::Body {
                        remaining: remaining - got,
                        first: false,
                    };
                    if let Some(s) = stamp {
                        self.record(&s, now);
                    }
                }
            }
            (8, _) => {}
            (kind, expect) => {
                return Err(self.protocol(&format!("frame type {kind} while expecting {expect:?}")))
            }
        }
        Ok(())
    }

    fn other_method(&mut self, frame: &[u8], payload: &[u8]) -> Result<(), BenchError> {
        let name = format!("consumer {}", self.spec.index);
        match payload.get(..4) {
            // basic.consume-ok, basic.qos-ok, connection.(un)blocked.
            Some([0, 60, 0, 21] | [0, 60, 0, 11] | [0, 10, 0, 60] | [0, 10, 0, 61]) => Ok(()),
            Some([0, 10, 0, 51]) => {
                self.closed = true;
                Ok(())
            }
            Some([0, 60, 0, 30]) => Err(BenchError::Protocol(format!(
                "{name}: the broker cancelled the consumer of queue {} (deleted?)",
                self.spec.queue
            ))),
            _ => match conn::decode_rare(frame)? {
                ferry_amqp::Frame::Method { method, .. } => {
                    match conn::close_error(&method, &name, "consuming") {
                        Some(e) => Err(e),
                        None => Err(BenchError::Protocol(format!(
                            "{name}: unexpected {}",
                            conn::method_label(&method)
                        ))),
                    }
                }
                _ => Ok(()),
            },
        }
    }

    fn record(&mut self, stamp: &Stamp, now: u64) {
        if stamp.run_id == self.spec.run_id && !self.draining {
            self.hist
                .saturating_record(now.saturating_sub(stamp.sent_ns).max(1));
        }
    }

    fn complete(&mut self, stamp: Option<Stamp>, now: u64, out: &mut BytesMut) {
        self.expect = Expect::Method;
        if self.draining {
            return;
        }
        self.received += 1;
        if let Some(s) = stamp {
            self.record(&s, now);
        }
        if !self.spec.auto_ack {
            self.unacked += 1;
            if self.unacked >= self.spec.multi_ack_every {
                encode_basic_ack(out, CHANNEL, self.last_tag, self.spec.multi_ack_every > 1);
                self.unacked = 0;
            }
        }
    }

    /// Acks what the last batch left unacked.
    fn flush_acks(&mut self, out: &mut BytesMut) {
        if !self.spec.auto_ack && self.unacked > 0 {
            encode_basic_ack(out, CHANNEL, self.last_tag, true);
            self.unacked = 0;
        }
    }
}

impl Consumer {
    /// Opens the connection and sets the prefetch. Consuming starts in
    /// [`Consumer::run`], so that the broker's work falls in the measured
    /// window.
    pub async fn connect(target: &Target, spec: ConsumerSpec) -> Result<Consumer, BenchError> {
        let name = format!("consumer {}", spec.index);
        let mut conn = RawConn::open(target, &name).await?;
        if !spec.auto_ack {
            conn.call(
                CHANNEL,
                AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
                    prefetch_count: spec.prefetch,
                    global: false,
                })),
                "basic.qos",
            )
            .await?;
        }
        Ok(Consumer { conn, spec })
    }

    /// Consumes until stopped; returns the latency histogram. Errors are
    /// also recorded in `shared`.
    pub async fn run(self, shared: Arc<Shared>) -> Option<Histogram<u64>> {
        match self.run_inner(&shared).await {
            Ok(h) => Some(h),
            Err(e) => {
                shared.fail(e);
                None
            }
        }
    }

    async fn run_inner(self, shared: &Arc<Shared>) -> Result<Histogram<u64>, BenchError> {
        let Consumer { conn, spec } = self;
        let RawConn {
            mut stream,
            mut rbuf,
            name,
            ..
        } = conn;
        let mut out = BytesMut::with_capacity(4096);
        encode_method(
            &mut out,
            CHANNEL,
            &AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
                queue: spec.queue.as_str().into(),
                consumer_tag: format!("bench-{}", spec.index).as_str().into(),
                no_local: false,
                no_ack: spec.auto_ack,
                exclusive: false,
                nowait: false,
                arguments: FieldTable::default(),
            })),
        )
        .map_err(|e| BenchError::Usage(format!("--queue-prefix: {e}")))?;
        let mut d = Deliveries::new(spec)?;
        rbuf.reserve(256 * 1024);
        loop {
            if !out.is_empty() {
                stream
                    .write_all(&out)
                    .await
                    .map_err(|e| BenchError::io(format!("{name}: ack"), e))?;
                out.clear();
            }
            let n = tokio::select! {
                biased;
                () = shared.stopped() => break,
                r = stream.read_buf(&mut rbuf) => {
                    r.map_err(|e| BenchError::io(format!("{name}: read"), e))?
                }
            };
            // Counters were read at the end of the window: what arrives
            // after it must not reach the latency histogram either.
            if shared.stopping() {
                break;
            }
            if n == 0 {
                return Err(conn::eof_error(&name, "consuming"));
            }
            let before = d.received;
            let used = d.process(&rbuf, now_ns(), &mut out)?;
            rbuf.advance(used);
            // Room for the next read without shrinking reads to crumbs.
            rbuf.reserve(64 * 1024);
            Shared::add(&shared.received, d.received - before);
        }
        if shared.failed() {
            return Ok(d.hist);
        }
        // Clean close, bounded: ack the tail (so nothing is requeued that
        // was counted), close, and discard deliveries until close-ok.
        d.flush_acks(&mut out);
        out.extend_from_slice(&conn::connection_close_frame());
        d.draining = true;
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            stream.write_all(&out).await.ok()?;
            out.clear();
            // A process error here only means we stop looking.
            while let Ok(used) = d.process(&rbuf, 0, &mut out) {
                rbuf.advance(used);
                if d.closed || stream.read_buf(&mut rbuf).await.ok()? == 0 {
                    break;
                }
            }
            Some(())
        })
        .await;
        Ok(d.hist)
    }
}

#[cfg(test)]
mod tests;
