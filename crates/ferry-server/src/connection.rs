//! One AMQP connection: protocol header, handshake (start / tune / open),
//! then the frame loop that feeds channels. Replies and deliveries leave
//! through the outbox and the writer task; this task only reads.
//!
//! Errors follow RabbitMQ's scoping: a soft error closes its channel
//! (channel.close, then everything on that channel but close/close-ok is
//! discarded until the client answers); a hard error closes the connection
//! (connection.close, wait briefly for close-ok, then drop the socket).
//!
//! Bad input is answered as RabbitMQ 3.10 answers it (see
//! `ferry_amqp::frame::rabbit`): a lost framing (bad frame end, frame over
//! frame_max) gets connection.close and nothing more is read; an unknown
//! method or an unparsable field table drops the socket without a word;
//! before connection.tune-ok nothing is sent back (the client is not
//! trusted yet) and the socket closes after 3 s; the whole handshake must
//! finish within 10 s of the accept.
//!
//! `Conn` (here) owns the open connection: its channels, the frame loop
//! and closing. Reading frames is `connection/reader.rs`, the handshake
//! `connection/handshake.rs` (a `Handshake` whose result
//! `Conn::open` takes over), vhost / user limits `connection/limits.rs`,
//! the confirm-flush set `connection/dirty.rs`.

use crate::channel::{Channel, ChannelCtx};
use crate::error::AmqpError;
use crate::outbox::{Outbound, Outbox};
use crate::writer::{self, WriterParams};
use crate::Shared;
use bytes::{Buf, Bytes, BytesMut};
use ferry_amqp::amq_protocol::protocol::{basic, channel, connection};
use ferry_amqp::frame::rabbit;
use ferry_amqp::{
    check_protocol_header, AMQPClass, Frame, HeaderCheck, ReplyCode, PROTOCOL_HEADER,
};
use ferry_auth::CompiledPermissions;
use ferry_broker::VHost;
use ferry_queue::ids::IdMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

mod dirty;
mod handshake;
mod limits;
mod reader;

use handshake::{Handshake, Opened};
use reader::{ReadEnd, Reader};

/// RabbitMQ's handshake_timeout: from the accept to connection.open.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const CLOSE_OK_TIMEOUT: Duration = Duration::from_secs(3);
/// RabbitMQ's SILENT_CLOSE_DELAY: how long a refused handshake, or a
/// connection whose framing is lost, is held before the socket closes.
const SILENT_CLOSE_DELAY: Duration = Duration::from_secs(3);
/// How often a connection checks consumer acknowledgement timeouts.
const CHECK_PERIOD: Duration = Duration::from_secs(1);
/// Frames a connection handles before letting other tasks run.
const FRAMES_PER_TURN: u32 = 64;

struct Conn {
    id: u64,
    shared: Arc<Shared>,
    outbox: Outbox,
    params: Arc<WriterParams>,
    vhost: Option<Arc<VHost>>,
    user: String,
    /// The user has the `impersonator` tag (read at login).
    impersonator: bool,
    /// The user's permissions in the vhost and the broker's access epoch
    /// they were read at (refreshed when it moves).
    perms: Arc<CompiledPermissions>,
    perms_epoch: u64,
    channel_max: u16,
    cancel_notify: bool,
    channels: IdMap<u16, Channel>,
    closing: IdMap<u16, ()>,
    /// Confirm-mode channels that handled frames since the last flush of
    /// their held confirms (`Channel::flush_confirms`).
    confirm_dirty: dirty::DirtyChannels,
    /// Has published: such connections are blocked under an alarm.
    published: bool,
    /// The client understands connection.blocked.
    blocked_cap: bool,
    /// Its vhost / user connection slot and channel count (from
    /// connection.open; given back when dropped).
    slot: Option<crate::registry::ConnSlot>,
    /// Registry entry (listed once the handshake is done).
    entry: Arc<crate::registry::ConnEntry>,
    /// Body bytes of messages still being assembled, for the memory alarm.
    assembling: crate::memory::Gauge,
}

fn conn_method(m: connection::AMQPMethod) -> AMQPClass {
    AMQPClass::Connection(m)
}

/// Serves one accepted socket until it closes.
/// `local` is the socket's own address (the listener it came through);
/// `tls` the handshake's facts of an AMQPS connection.
pub async fn serve<S>(
    stream: S,
    (peer, local): (SocketAddr, Option<SocketAddr>),
    shared: Arc<Shared>,
    id: u64,
    tls: Option<crate::registry::TlsInfo>,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (rd, mut wr) = tokio::io::split(stream);
    let entry = crate::registry::ConnEntry::new(id, peer, local, tls);
    let deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
    let mut reader = Reader {
        rd,
        buf: BytesMut::with_capacity(64 * 1024),
        last: Bytes::new(),
        frame_max: shared.config.frame_max,
        // The handshake deadline bounds the handshake; heartbeats start
        // with connection.tune-ok.
        idle_limit: None,
        shutdown: shared.shutdown.clone(),
        tick: tokio::time::interval_at(tokio::time::Instant::now() + CHECK_PERIOD, CHECK_PERIOD),
        last_data: tokio::time::Instant::now(),
        entry: entry.clone(),
        held: crate::memory::Gauge::default(),
    };
    loop {
        match check_protocol_header(&reader.buf) {
            HeaderCheck::Ok => {
                reader.buf.advance(8);
                break;
            }
            // RabbitMQ answers only once it has 8 bytes: a shorter bad
            // prefix waits (for the handshake timeout, at worst).
            HeaderCheck::Bad if reader.buf.len() >= 8 => {
                let _ = wr.write_all(PROTOCOL_HEADER).await;
                let _ = wr.shutdown().await;
                return;
            }
            HeaderCheck::Bad | HeaderCheck::Incomplete => {
                match tokio::time::timeout_at(deadline, reader.fill()).await {
                    Ok(Ok(())) | Ok(Err(ReadEnd::Tick)) => {}
                    // Handshake timeout: closed without a word.
                    _ => return,
                }
            }
        }
    }
    let (outbox, rx, oshared) = Outbox::new(shared.config.socket_buffer_limit);
    let params = Arc::new(WriterParams::default());
    params
        .frame_max
        .store(shared.config.frame_max, Ordering::Relaxed);
    let writer = tokio::spawn(writer::run(wr, rx, oshared, params.clone()));
    let mut conn = Conn {
        id,
        shared: shared.clone(),
        outbox,
        params,
        vhost: None,
        user: String::new(),
        impersonator: false,
        perms: Arc::new(CompiledPermissions::deny_all()),
        perms_epoch: u64::MAX,
        channel_max: shared.config.channel_max,
        cancel_notify: false,
        channels: IdMap::default(),
        closing: IdMap::default(),
        confirm_dirty: dirty::DirtyChannels::default(),
        published: false,
        blocked_cap: false,
        slot: None,
        entry: entry.clone(),
        assembling: crate::memory::Gauge::default(),
    };
    tracing::debug!(conn = id, %peer, "connection accepted");
    let handshake = Handshake {
        shared: &conn.shared,
        outbox: &conn.outbox,
        params: &conn.params,
        entry: &conn.entry,
        peer,
    };
    let end = match tokio::time::timeout_at(deadline, handshake.run(&mut reader)).await {
        Ok(Ok(opened)) => {
            conn.open(opened);
            let vhost = conn.vhost.as_ref().map_or("", |v| v.name()).to_string();
            entry.set_identity(&conn.user, &vhost, conn.params.clone());
            shared.registry.insert(entry.clone());
            conn.run(&mut reader).await
        }
        Ok(Err(end)) => end,
        Err(_) => {
            tracing::info!(conn = id, %peer, "handshake timeout, closing connection");
            ReadEnd::Gone
        }
    };
    match end {
        ReadEnd::Bad(e) => conn.close_connection(&mut reader, e).await,
        ReadEnd::Fatal(e) => {
            tracing::info!(conn = id, %peer, text = %e.text, "framing lost, closing connection");
            conn.send_close(&e);
            reader.discard_until_eof(SILENT_CLOSE_DELAY).await;
        }
        ReadEnd::Refused(close) => {
            tracing::info!(conn = id, %peer, "handshake refused, closing connection");
            if let Some(e) = &close {
                conn.send_close(e);
            }
            // Nothing is read meanwhile, as in RabbitMQ.
            let mut shutdown = reader.shutdown.clone();
            tokio::select! {
                _ = tokio::time::sleep(SILENT_CLOSE_DELAY) => {}
                _ = shutdown.changed() => {}
            }
        }
        ReadEnd::Drop => {
            tracing::info!(conn = id, %peer, "unparsable input, dropping connection");
        }
        ReadEnd::Shutdown => {
            let e = AmqpError::new(
                ReplyCode::CONNECTION_FORCED,
                "broker forced connection closure with reason 'shutdown'",
            );
            conn.close_connection(&mut reader, e).await;
        }
        ReadEnd::Silent => {
            tracing::info!(conn = id, %peer, "missed heartbeats from client, closing connection");
        }
        ReadEnd::Gone | ReadEnd::Tick => {}
    }
    shared.registry.remove(id);
    conn.cleanup();
    conn.outbox.send(Outbound::Shutdown);
    drop(conn);
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
    tracing::debug!(conn = id, %peer, "connection closed");
}

impl Conn {
    /// Takes over what the handshake established and answers
    /// connection.open.
    fn open(&mut self, opened: Opened) {
        let Opened {
            user,
            impersonator,
            cancel_notify,
            blocked_cap,
            channel_max,
            vhost,
            slot,
        } = opened;
        self.user = user;
        self.impersonator = impersonator;
        self.cancel_notify = cancel_notify;
        self.blocked_cap = blocked_cap;
        self.channel_max = channel_max;
        self.vhost = Some(vhost);
        self.slot = Some(slot);
        self.refresh_perms();
        self.outbox.method(
            0,
            conn_method(connection::AMQPMethod::OpenOk(connection::OpenOk {})),
        );
    }

    /// Re-reads the user's permissions when users, permissions or vhosts
    /// changed since the last read: one atomic load per frame otherwise.
    fn refresh_perms(&mut self) {
        let broker = &self.shared.broker;
        let epoch = broker.access_epoch();
        if epoch == self.perms_epoch {
            return;
        }
        self.perms_epoch = epoch;
        let vhost = self.vhost.as_ref().map_or("", |v| v.name());
        self.perms = broker
            .permissions_for(&self.user, vhost)
            .unwrap_or_else(|| Arc::new(CompiledPermissions::deny_all()));
    }

    /// Sends the confirms the channels hold (see `confirm_dirty`).
    fn flush_confirms(&mut self) {
        for ch in self.confirm_dirty.drain() {
            if let Some(c) = self.channels.get(&ch) {
                c.flush_confirms();
            }
        }
    }

    async fn run<R: AsyncRead + Unpin>(&mut self, r: &mut Reader<R>) -> ReadEnd {
        let mut handled = 0u32;
        loop {
            handled += 1;
            if handled % FRAMES_PER_TURN == 0 {
                self.flush_confirms();
                // A publisher's socket always has data, and a 64 KiB read holds
                // hundreds of frames; without an explicit yield one fast
                // publisher would starve the tasks that deliver and ack.
                tokio::task::yield_now().await;
            }
            // Blocked only between messages: a publish whose content is
            // still arriving completes first (and gets its confirm).
            if self.published
                && self.shared.alarms.borrow().any()
                && !self.channels.values().any(Channel::mid_content)
            {
                self.flush_confirms();
                if let Err(end) = self.blocked(r).await {
                    return end;
                }
            }
            if !r.has_frame() {
                // About to wait for input: what was read is handled, so
                // its confirms go out together.
                self.flush_confirms();
            }
            let frame = match r.frame().await {
                Ok(f) => f,
                Err(ReadEnd::Tick) => {
                    self.check_consumer_timeouts();
                    continue;
                }
                Err(end) => return end,
            };
            let body = match &frame {
                Frame::Body { channel, payload } => Some((*channel, payload.len())),
                _ => None,
            };
            let handled_ok = self.handle(frame, r.last_payload());
            if let Some((ch, len)) = body {
                self.count_assembly(ch, len);
            }
            match handled_ok {
                Ok(true) => {}
                Ok(false) => return ReadEnd::Gone,
                Err(e) => return ReadEnd::Bad(e),
            }
        }
    }

    /// Handles a frame after the handshake (`payload`: its payload as
    /// received, quoted by some errors). Ok(false) = connection closed
    /// cleanly by the client.
    fn handle(&mut self, frame: Frame, payload: &[u8]) -> Result<bool, AmqpError> {
        let ch = frame.channel();
        if ch == 0 {
            return self.connection_frame(frame, payload);
        }
        if let Frame::Heartbeat { .. } = frame {
            return Err(AmqpError::new(
                ReplyCode::UNEXPECTED_FRAME,
                rabbit::unexpected_frame_detail(8, &[]),
            ));
        }
        if self.closing.contains_key(&ch) {
            // After channel.close only close / close-ok count.
            match frame {
                Frame::Method {
                    method: AMQPClass::Channel(channel::AMQPMethod::CloseOk(_)),
                    ..
                } => {
                    self.closing.remove(&ch);
                }
                Frame::Method {
                    method: AMQPClass::Channel(channel::AMQPMethod::Close(_)),
                    ..
                } => {
                    self.outbox.method(
                        ch,
                        AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                    );
                }
                _ => {}
            }
            return Ok(true);
        }
        if !self.channels.contains_key(&ch) {
            // RabbitMQ limits how many channels are open (those closing
            // included), not their numbers, and counts a channel from its
            // first frame, whatever it is.
            let open = self.channels.len() + self.closing.len();
            if self.channel_max != 0 && open >= usize::from(self.channel_max) {
                return Err(AmqpError::new(
                    ReplyCode::NOT_ALLOWED,
                    format!(
                        "number of channels opened ({open}) has reached the negotiated channel_max ({})",
                        self.channel_max
                    ),
                ));
            }
            return match frame {
                Frame::Method {
                    method: AMQPClass::Channel(channel::AMQPMethod::Open(_)),
                    ..
                } => {
                    let Some(slot) = self.slot.as_mut() else {
                        return Err(AmqpError::new(ReplyCode::INTERNAL_ERROR, "no vhost"));
                    };
                    limits::open_channel(&self.shared.broker, slot, &self.user)?;
                    let channel = Channel::new(ch, self.outbox.clone(), self.cancel_notify);
                    self.entry.add_channel(ch, channel.shared().clone());
                    self.channels.insert(ch, channel);
                    self.outbox.method(
                        ch,
                        AMQPClass::Channel(channel::AMQPMethod::OpenOk(channel::OpenOk {})),
                    );
                    Ok(true)
                }
                Frame::Method { method, .. } => Err(AmqpError::new(
                    ReplyCode::CHANNEL_ERROR,
                    "expected 'channel.open'",
                )
                .on(method.get_amqp_class_id(), method.get_amqp_method_id())),
                _ => Err(AmqpError::new(
                    ReplyCode::UNEXPECTED_FRAME,
                    "expected method frame, got non method frame instead",
                )),
            };
        }
        if let Frame::Method {
            method: AMQPClass::Channel(channel::AMQPMethod::Close(_)),
            ..
        } = &frame
        {
            self.drop_channel(ch);
            self.outbox.method(
                ch,
                AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
            );
            return Ok(true);
        }
        if let Frame::Method {
            method: AMQPClass::Basic(basic::AMQPMethod::Publish(_)),
            ..
        } = &frame
        {
            self.published = true;
        }
        let Some(vhost) = self.vhost.clone() else {
            return Err(AmqpError::new(ReplyCode::INTERNAL_ERROR, "no vhost"));
        };
        self.refresh_perms();
        let ctx = ChannelCtx {
            broker: &self.shared.broker,
            vhost: &vhost,
            conn_id: self.id,
            user: &self.user,
            impersonator: self.impersonator,
            perms: &self.perms,
            config: &self.shared.config,
            replies: &self.shared.replies,
        };
        let Some(channel) = self.channels.get_mut(&ch) else {
            return Ok(true);
        };
        if channel.confirming() {
            self.confirm_dirty.mark(ch);
        }
        match channel.handle(&ctx, frame) {
            Ok(()) => Ok(true),
            Err(e) if e.is_connection_error() => Err(e),
            Err(e) => {
                self.channel_error(ch, e);
                Ok(true)
            }
        }
    }

    /// Closes one channel with a soft error; the connection goes on.
    fn channel_error(&mut self, ch: u16, e: AmqpError) {
        tracing::debug!(conn = self.id, channel = ch, error = %e, "channel error");
        self.drop_channel(ch);
        self.closing.insert(ch, ());
        self.outbox.method(
            ch,
            AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
                reply_code: e.code_u16(),
                reply_text: e.text.into(),
                class_id: e.class_id,
                method_id: e.method_id,
            })),
        );
    }

    /// RabbitMQ's consumer acknowledgement timeout: a channel whose oldest
    /// unacked delivery is too old is closed with 406.
    fn check_consumer_timeouts(&mut self) {
        let default = self.shared.config.consumer_timeout;
        let expired: Vec<(u16, u64)> = self
            .channels
            .iter()
            .filter_map(|(ch, c)| c.expired_delivery(default).map(|ms| (*ch, ms)))
            .collect();
        for (ch, ms) in expired {
            tracing::warn!(
                conn = self.id,
                channel = ch,
                timeout_ms = ms,
                "consumer ack timed out"
            );
            self.channel_error(
                ch,
                AmqpError::new(
                    ReplyCode::PRECONDITION_FAILED,
                    format!("delivery acknowledgement on channel {ch} timed out. Timeout value used: {ms} ms. This timeout value can be configured, see consumers doc guide to learn more"),
                ),
            );
        }
    }

    /// Counts a body frame of `len` bytes on channel `ch` while its message
    /// is assembled; once no channel is mid-message nothing is.
    fn count_assembly(&mut self, ch: u16, len: usize) {
        if self.channels.get(&ch).is_some_and(Channel::mid_content) {
            self.assembling.add(len);
        } else if !self.channels.values().any(Channel::mid_content) {
            self.assembling.set(0);
        }
    }

    /// Under a resource alarm a publishing connection is not read until the
    /// alarm clears (deliveries and heartbeats still go out).
    async fn blocked<R: AsyncRead + Unpin>(&mut self, r: &mut Reader<R>) -> Result<(), ReadEnd> {
        // What stays buffered while blocked is all this connection holds.
        r.held.set(r.buf.len());
        let mut alarms = self.shared.alarms.clone();
        let reason = alarms.borrow().reason();
        tracing::info!(conn = self.id, reason, "connection blocked");
        if self.blocked_cap {
            self.outbox.method(
                0,
                conn_method(connection::AMQPMethod::Blocked(connection::Blocked {
                    reason: reason.into(),
                })),
            );
        }
        loop {
            if !alarms.borrow_and_update().any() {
                break;
            }
            tokio::select! {
                changed = alarms.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                _ = r.shutdown.changed() => return Err(ReadEnd::Shutdown),
                _ = r.tick.tick() => self.check_consumer_timeouts(),
                reason = r.entry.forced() => {
                    return Err(ReadEnd::Bad(AmqpError::new(ReplyCode::CONNECTION_FORCED, reason)))
                }
            }
        }
        tracing::info!(conn = self.id, "connection unblocked");
        if self.blocked_cap {
            self.outbox.method(
                0,
                conn_method(connection::AMQPMethod::Unblocked(connection::Unblocked {})),
            );
        }
        Ok(())
    }

    fn connection_frame(&mut self, frame: Frame, payload: &[u8]) -> Result<bool, AmqpError> {
        match frame {
            Frame::Heartbeat { .. } => Ok(true),
            Frame::Method {
                method: AMQPClass::Connection(m),
                ..
            } => match m {
                connection::AMQPMethod::Close(_) => {
                    self.cleanup();
                    self.outbox.method(
                        0,
                        conn_method(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
                    );
                    Ok(false)
                }
                connection::AMQPMethod::CloseOk(_) => Ok(false),
                connection::AMQPMethod::UpdateSecret(_) => {
                    self.outbox.method(
                        0,
                        conn_method(connection::AMQPMethod::UpdateSecretOk(
                            connection::UpdateSecretOk {},
                        )),
                    );
                    Ok(true)
                }
                connection::AMQPMethod::Blocked(_) | connection::AMQPMethod::Unblocked(_) => {
                    Ok(true)
                }
                other => Err(unexpected_method("running", &conn_method(other))),
            },
            Frame::Method { method, .. } => Err(unexpected_method("running", &method)),
            content => {
                let frame_type = if let Frame::Header { .. } = content {
                    2
                } else {
                    3
                };
                Err(AmqpError::new(
                    ReplyCode::UNEXPECTED_FRAME,
                    rabbit::unexpected_frame_detail(frame_type, payload),
                ))
            }
        }
    }

    /// Sends connection.close for `e`.
    fn send_close(&self, e: &AmqpError) {
        self.outbox.method(
            0,
            conn_method(connection::AMQPMethod::Close(connection::Close {
                reply_code: e.code_u16(),
                reply_text: e.text.clone().into(),
                class_id: e.class_id,
                method_id: e.method_id,
            })),
        );
    }

    fn drop_channel(&mut self, ch: u16) {
        self.entry.remove_channel(ch);
        if let Some(mut c) = self.channels.remove(&ch) {
            if let Some(slot) = self.slot.as_mut() {
                slot.close_channel();
            }
            if let Some(vhost) = self.vhost.clone() {
                let ctx = ChannelCtx {
                    broker: &self.shared.broker,
                    vhost: &vhost,
                    conn_id: self.id,
                    user: &self.user,
                    impersonator: self.impersonator,
                    perms: &self.perms,
                    config: &self.shared.config,
                    replies: &self.shared.replies,
                };
                c.cleanup(&ctx);
            }
        }
    }

    /// Sends connection.close and waits (briefly) for close-ok.
    async fn close_connection<R: AsyncRead + Unpin>(&mut self, r: &mut Reader<R>, e: AmqpError) {
        tracing::info!(conn = self.id, code = e.code_u16(), text = %e.text, "closing connection");
        self.cleanup();
        self.send_close(&e);
        r.idle_limit = Some(CLOSE_OK_TIMEOUT);
        r.last_data = tokio::time::Instant::now();
        // A shutdown already fired; don't let it cut the wait short. The
        // sender lives as long as the wait: a receiver whose sender is gone
        // reports a change at once (the wait used to end right there).
        let (_quiet_tx, quiet) = watch::channel(false);
        r.shutdown = quiet;
        let deadline = tokio::time::Instant::now() + CLOSE_OK_TIMEOUT;
        while tokio::time::Instant::now() < deadline {
            match r.frame().await {
                Ok(Frame::Method {
                    channel: 0,
                    method: AMQPClass::Connection(connection::AMQPMethod::CloseOk(_)),
                }) => return,
                Ok(Frame::Method {
                    channel: 0,
                    method: AMQPClass::Connection(connection::AMQPMethod::Close(_)),
                }) => {
                    self.outbox.method(
                        0,
                        conn_method(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
                    );
                    return;
                }
                // Anything but close / close-ok is ignored, even frames
                // that are bad in themselves (they were consumed).
                Ok(_) | Err(ReadEnd::Tick | ReadEnd::Bad(_)) => {}
                Err(_) => return,
            }
        }
    }

    fn cleanup(&mut self) {
        let chans: Vec<u16> = self.channels.keys().copied().collect();
        for ch in chans {
            self.drop_channel(ch);
        }
        if let Some(v) = &self.vhost {
            // Exclusive queues go with their files.
            crate::blocking::run(|| v.connection_closed(self.id));
        }
        // Before close-ok goes out: a client that saw it may reconnect at once.
        self.slot = None;
    }
}

fn bad(code: ReplyCode, text: impl AsRef<str>) -> ReadEnd {
    ReadEnd::Bad(AmqpError::new(code, text))
}

/// RabbitMQ's answer to a method on channel 0 that the connection's state
/// does not expect.
fn unexpected_method(state: &str, method: &AMQPClass) -> AmqpError {
    AmqpError::new(
        ReplyCode::CHANNEL_ERROR,
        format!("unexpected method in connection state {state}"),
    )
    .on(method.get_amqp_class_id(), method.get_amqp_method_id())
}
