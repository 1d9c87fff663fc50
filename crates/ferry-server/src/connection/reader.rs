//! Reading frames off the socket for one connection: [`Reader`] buffers
//! bytes, cuts frames (checked against the negotiated frame_max), enforces
//! the heartbeat deadline and wakes for ticks, shutdown and forced closes;
//! [`ReadEnd`] says why reading stopped; bad input becomes the answer
//! RabbitMQ 3.10 gives (`input_fault`).

use crate::error::AmqpError;
use bytes::{Bytes, BytesMut};
use ferry_amqp::frame::frame_extent;
use ferry_amqp::frame::rabbit::{self, Fault};
use ferry_amqp::{check_frame, parse_frame, CodecError, Frame, ReplyCode};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::watch;

/// Why reading stopped.
pub(super) enum ReadEnd {
    /// Peer closed or socket error.
    Gone,
    /// No traffic for two heartbeat intervals.
    Silent,
    /// A hard error: connection.close, then wait for close-ok.
    Bad(AmqpError),
    /// The framing is lost: connection.close, read nothing more, close.
    Fatal(AmqpError),
    /// Close the socket without a word (where RabbitMQ's reader crashes).
    Drop,
    /// The handshake failed before connection.tune-ok: send nothing (or
    /// the 403 a client with authentication_failure_close asked for), hold
    /// the socket for SILENT_CLOSE_DELAY, close.
    Refused(Option<AmqpError>),
    /// The broker is shutting down.
    Shutdown,
    /// Time to run periodic checks (not an end: reading resumes).
    Tick,
}

pub(super) struct Reader<R> {
    pub(super) rd: R,
    pub(super) buf: BytesMut,
    /// The last frame read, whole: some reply texts quote its payload.
    pub(super) last: Bytes,
    pub(super) frame_max: u32,
    pub(super) idle_limit: Option<Duration>,
    pub(super) shutdown: watch::Receiver<bool>,
    pub(super) tick: tokio::time::Interval,
    pub(super) last_data: tokio::time::Instant,
    /// Registry entry: byte counter, close requests from the management API.
    pub(super) entry: Arc<crate::registry::ConnEntry>,
    /// Bytes read and not yet handled, for the memory alarm.
    pub(super) held: crate::memory::Gauge,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    pub(super) async fn fill(&mut self) -> Result<(), ReadEnd> {
        if self.buf.capacity() - self.buf.len() < 8192 {
            self.buf.reserve(64 * 1024);
        }
        let read = self.rd.read_buf(&mut self.buf);
        let n = tokio::select! {
            r = async {
                // The deadline counts from the last byte received, not from
                // this call: periodic ticks must not reset it.
                match self.idle_limit {
                    Some(d) => tokio::time::timeout_at(self.last_data + d, read)
                        .await
                        .map_err(|_| ReadEnd::Silent)?,
                    None => read.await,
                }
                .map_err(|_| ReadEnd::Gone)
            } => r?,
            _ = self.shutdown.changed() => return Err(ReadEnd::Shutdown),
            _ = self.tick.tick() => return Err(ReadEnd::Tick),
            reason = self.entry.forced() => {
                return Err(ReadEnd::Bad(AmqpError::new(ReplyCode::CONNECTION_FORCED, reason)))
            }
        };
        if n == 0 {
            return Err(ReadEnd::Gone);
        }
        self.entry.received(n);
        self.held.set(self.buf.len());
        self.last_data = tokio::time::Instant::now();
        Ok(())
    }

    pub(super) async fn frame(&mut self) -> Result<Frame, ReadEnd> {
        loop {
            let extent = match check_frame(&self.buf, self.frame_max) {
                // RabbitMQ reads a frame of an unknown type whole (its
                // reply quotes the payload) before refusing it.
                Err(CodecError::UnknownFrameType { .. }) => frame_extent(&self.buf, self.frame_max),
                other => other,
            };
            match extent {
                Ok(Some(len)) => {
                    let bytes = self.buf.split_to(len).freeze();
                    self.last = bytes.clone();
                    return parse_frame(bytes).or_else(|e| input_fault(&e, &self.last));
                }
                Ok(None) => self.fill().await?,
                // Too large: refused from the 7-byte header alone.
                Err(e) => {
                    let header = &self.buf[..self.buf.len().min(7)];
                    return input_fault(&e, header);
                }
            }
        }
    }

    /// A whole frame is buffered: `frame` will not wait for the socket.
    pub(super) fn has_frame(&self) -> bool {
        matches!(check_frame(&self.buf, self.frame_max), Ok(Some(_)))
    }

    /// The payload of the last frame read.
    pub(super) fn last_payload(&self) -> &[u8] {
        self.last
            .get(7..self.last.len().saturating_sub(1))
            .unwrap_or(&[])
    }

    /// After a fatal error: reads and drops whatever comes until the peer
    /// closes or `grace` is over (so that the connection.close just sent
    /// is not lost to a reset caused by unread data).
    pub(super) async fn discard_until_eof(&mut self, grace: Duration) {
        self.idle_limit = None;
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            self.buf.clear();
            match tokio::time::timeout_at(deadline, self.fill()).await {
                Ok(Ok(())) | Ok(Err(ReadEnd::Tick)) => {}
                _ => return,
            }
        }
    }
}

/// RabbitMQ's answer to a frame the codec refused (see
/// `ferry_amqp::frame::rabbit`). A content header whose properties do not
/// decode becomes a header with empty `raw_properties` (a decodable one
/// always has its 2 flag bytes), which the channel fails with 541 once the
/// message is complete, as RabbitMQ does.
fn input_fault(e: &CodecError, frame: &[u8]) -> Result<Frame, ReadEnd> {
    Err(match rabbit::classify(e, frame) {
        Fault::Close {
            code,
            detail,
            class_id,
            method_id,
        } => ReadEnd::Bad(AmqpError::new(code, detail).on(class_id, method_id)),
        Fault::Fatal { code, detail } => ReadEnd::Fatal(AmqpError::new(code, detail)),
        Fault::UndecodableHeader {
            class_id,
            body_size,
        } => {
            return Ok(Frame::Header {
                channel: u16::from_be_bytes([frame[1], frame[2]]),
                class_id,
                body_size,
                props: Bytes::new(),
                raw_properties: Bytes::new(),
            })
        }
        _ => ReadEnd::Drop,
    })
}
