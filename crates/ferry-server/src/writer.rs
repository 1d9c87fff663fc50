//! The connection's writer task: drains the outbox, encodes many frames
//! into one buffer and writes them with one syscall; sends heartbeats when
//! the connection has been quiet.

use crate::outbox::{Outbound, OutboxShared};
use bytes::BytesMut;
use ferry_amqp::model::props_from_model_into;
use ferry_amqp::CodecError;
use ferry_amqp::{
    encode_basic_ack, encode_basic_deliver, encode_basic_get_ok, encode_basic_nack,
    encode_basic_return, encode_content_whole_header, encode_heartbeat, encode_method,
};
use ferry_model::Message;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// Settings the writer reads as the handshake negotiates them.
#[derive(Debug, Default)]
pub struct WriterParams {
    /// Negotiated frame_max (bodies are split by it).
    pub frame_max: AtomicU32,
    /// Heartbeat interval in seconds (0 = none).
    pub heartbeat: AtomicU32,
    /// Bytes written so far (metrics).
    pub bytes_out: AtomicU64,
}

const BATCH_BYTES: usize = 256 * 1024;
const CLASS_BASIC: u16 = 60;

/// Runs until the outbox closes or `Shutdown` is seen.
pub async fn run<W: AsyncWrite + Unpin>(
    mut sock: W,
    mut rx: mpsc::UnboundedReceiver<Outbound>,
    shared: Arc<OutboxShared>,
    params: Arc<WriterParams>,
) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        let hb = params.heartbeat.load(Ordering::Relaxed);
        let first = if hb == 0 {
            rx.recv().await
        } else {
            // Send at half the interval so the peer never sees a gap of a
            // whole interval.
            match tokio::time::timeout(Duration::from_millis(u64::from(hb) * 500), rx.recv()).await
            {
                Ok(item) => item,
                Err(_) => {
                    encode_heartbeat(&mut buf);
                    if sock.write_all(&buf).await.is_err() {
                        return;
                    }
                    buf.clear();
                    continue;
                }
            }
        };
        let Some(first) = first else { break };
        let frame_max = params.frame_max.load(Ordering::Relaxed);
        let mut delivered = 0usize;
        let mut shutdown = encode(&mut buf, first, frame_max, &mut delivered);
        while !shutdown && buf.len() < BATCH_BYTES {
            match rx.try_recv() {
                Ok(item) => shutdown = encode(&mut buf, item, frame_max, &mut delivered),
                Err(_) => break,
            }
        }
        if !buf.is_empty() {
            if sock.write_all(&buf).await.is_err() {
                return;
            }
            params
                .bytes_out
                .fetch_add(buf.len() as u64, Ordering::Relaxed);
            buf.clear();
            if buf.capacity() > 4 * BATCH_BYTES {
                buf = BytesMut::with_capacity(64 * 1024);
            }
        }
        if delivered > 0 {
            shared.written(delivered);
        }
        if shutdown {
            break;
        }
    }
    let _ = sock.flush().await;
    let _ = sock.shutdown().await;
}

/// The content header and body frames of a message. The header goes out
/// whole even if it does not fit frame_max (it was accepted within
/// RabbitMQ's 8-byte allowance, or on a connection with a larger
/// frame_max): refusing it would silently lose the delivery.
///
/// The stored properties (a props blob) become AMQP property bytes here,
/// in a per-thread scratch buffer reused for every delivery (no
/// allocation once it has grown), then go into the frame.
fn content(
    buf: &mut BytesMut,
    channel: u16,
    m: &Message,
    frame_max: u32,
) -> Result<(), CodecError> {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCRATCH.with_borrow_mut(|raw| {
        raw.clear();
        props_from_model_into(&m.properties, raw)?;
        let r = encode_content_whole_header(buf, channel, CLASS_BASIC, raw, &m.body, frame_max);
        // A huge header (up to frame_max) is not kept between deliveries.
        if raw.capacity() > 64 * 1024 {
            *raw = Vec::new();
        }
        r
    })
}

/// Encodes one item; returns true for `Shutdown`.
fn encode(buf: &mut BytesMut, item: Outbound, frame_max: u32, delivered: &mut usize) -> bool {
    let result = match item {
        Outbound::Method(ch, m) => encode_method(buf, ch, &m),
        Outbound::Deliver {
            channel,
            consumer_tag,
            delivery_tag,
            redelivered,
            message,
        } => {
            *delivered += message.weight();
            encode_basic_deliver(
                buf,
                channel,
                &consumer_tag,
                delivery_tag,
                redelivered,
                &message.exchange,
                &message.routing_key,
            )
            .and_then(|()| content(buf, channel, &message, frame_max))
        }
        Outbound::GetOk {
            channel,
            delivery_tag,
            redelivered,
            message_count,
            message,
        } => {
            *delivered += message.weight();
            encode_basic_get_ok(
                buf,
                channel,
                delivery_tag,
                redelivered,
                &message.exchange,
                &message.routing_key,
                message_count,
            )
            .and_then(|()| content(buf, channel, &message, frame_max))
        }
        Outbound::Return {
            channel,
            code,
            text,
            message,
        } => encode_basic_return(
            buf,
            channel,
            code,
            text,
            &message.exchange,
            &message.routing_key,
        )
        .and_then(|()| content(buf, channel, &message, frame_max)),
        Outbound::Confirm {
            channel,
            ack,
            tag,
            multiple,
        } => {
            if ack {
                encode_basic_ack(buf, channel, tag, multiple);
            } else {
                encode_basic_nack(buf, channel, tag, multiple, false);
            }
            Ok(())
        }
        Outbound::Raw(b) => {
            buf.extend_from_slice(&b);
            Ok(())
        }
        Outbound::Shutdown => return true,
    };
    if let Err(e) = result {
        // Everything encoded here was validated on the way in; an error
        // means a bug, not bad input. Drop the item, keep the connection.
        tracing::error!(error = %e, "cannot encode outbound frame");
    }
    false
}

#[cfg(test)]
mod tests;
