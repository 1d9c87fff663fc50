//! A raw AMQP 0-9-1 client connection: TCP, the handshake and channel 1,
//! then handed to a producer or consumer that frames by hand.
//!
//! The handshake and other rare methods use ferry-amqp's generic codec
//! (clear errors matter more than speed there); the hot paths live in
//! `producer.rs` and `consumer.rs`. Heartbeats are turned off (tune-ok 0):
//! busy connections need none, and a bench run is short.

use std::str::FromStr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ferry_amqp::amq_protocol::protocol::{channel, connection, AMQPClass};
use ferry_amqp::{
    check_frame, encode_method, parse_frame, AMQPValue, FieldTable, Frame, LongString,
    FRAME_MIN_SIZE, PROTOCOL_HEADER,
};
use lapin::uri::{AMQPScheme, AMQPUri};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::BenchError;

/// How long connecting plus the handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest frame this client asks for; brokers' default (RabbitMQ's
/// and Ferry's) is 131072.
const FRAME_MAX: u32 = 131_072;

/// The channel every bench connection uses.
pub const CHANNEL: u16 = 1;

/// Where to connect and as whom, from an `amqp://` URI.
#[derive(Clone, Debug)]
pub struct Target {
    /// The URI as given (lapin uses it for topology).
    pub uri: String,
    /// `host:port`.
    pub addr: String,
    /// SASL PLAIN user.
    pub user: String,
    /// SASL PLAIN password.
    pub password: String,
    /// Virtual host.
    pub vhost: String,
    /// `?frame_max=` from the URI, if any.
    pub frame_max: Option<u32>,
}

impl Target {
    /// Parses an AMQP URI (`amqp://user:pass@host:port/vhost`), with the
    /// same defaults as lapin and RabbitMQ's clients.
    pub fn parse(uri: &str) -> Result<Target, BenchError> {
        let parsed =
            AMQPUri::from_str(uri).map_err(|e| BenchError::Usage(format!("--uri {uri}: {e}")))?;
        if parsed.scheme == AMQPScheme::AMQPS {
            return Err(BenchError::Usage(
                "--uri: amqps (TLS) is not supported by ferry bench".into(),
            ));
        }
        let a = &parsed.authority;
        let host = if a.host.contains(':') && !a.host.starts_with('[') {
            format!("[{}]", a.host)
        } else {
            a.host.clone()
        };
        Ok(Target {
            uri: uri.to_string(),
            addr: format!("{host}:{}", a.port),
            user: a.userinfo.username.clone(),
            password: a.userinfo.password.clone(),
            vhost: parsed.vhost.clone(),
            frame_max: parsed.query.frame_max,
        })
    }
}

/// A connection with channel 1 open.
#[derive(Debug)]
pub struct RawConn {
    /// The socket.
    pub stream: TcpStream,
    /// Bytes read but not consumed yet (may already hold the next frames).
    pub rbuf: BytesMut,
    /// Negotiated frame_max.
    pub frame_max: u32,
    /// "producer 3", for error messages.
    pub name: String,
}

impl RawConn {
    /// Connects, logs in and opens channel 1, within [`HANDSHAKE_TIMEOUT`].
    pub async fn open(target: &Target, name: &str) -> Result<RawConn, BenchError> {
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, Self::open_inner(target, name)).await {
            Ok(r) => r,
            Err(_) => Err(BenchError::Timeout(format!(
                "{name}: no answer from {} within {HANDSHAKE_TIMEOUT:?} during the AMQP handshake",
                target.addr
            ))),
        }
    }

    async fn open_inner(target: &Target, name: &str) -> Result<RawConn, BenchError> {
        let stream =
            TcpStream::connect(&target.addr)
                .await
                .map_err(|source| BenchError::Connect {
                    addr: target.addr.clone(),
                    source,
                })?;
        // Frames are batched by the caller: never delay a write.
        stream
            .set_nodelay(true)
            .map_err(|e| BenchError::io("set TCP_NODELAY", e))?;
        let mut c = RawConn {
            stream,
            rbuf: BytesMut::with_capacity(64 * 1024),
            frame_max: FRAME_MIN_SIZE,
            name: name.to_string(),
        };
        c.write(PROTOCOL_HEADER, "protocol header").await?;
        let start = c.recv_method(0, "connection.start").await?;
        let AMQPClass::Connection(connection::AMQPMethod::Start(start)) = start else {
            return Err(c.unexpected("connection.start", &start));
        };
        if !start
            .mechanisms
            .to_string()
            .split_whitespace()
            .any(|m| m == "PLAIN")
        {
            return Err(BenchError::Protocol(format!(
                "the broker does not offer SASL PLAIN (offers: {})",
                start.mechanisms
            )));
        }
        let response = format!("\0{}\0{}", target.user, target.password);
        c.send(
            0,
            AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                client_properties: client_properties(name),
                mechanism: "PLAIN".into(),
                response: LongString::from(response.as_str()),
                locale: "en_US".into(),
            })),
        )
        .await?;
        let tune = c.recv_method(0, "login").await?;
        let AMQPClass::Connection(connection::AMQPMethod::Tune(tune)) = tune else {
            return Err(c.unexpected("connection.tune", &tune));
        };
        let mut frame_max = target.frame_max.unwrap_or(FRAME_MAX);
        if tune.frame_max != 0 {
            frame_max = frame_max.min(tune.frame_max);
        }
        c.frame_max = frame_max.max(FRAME_MIN_SIZE);
        c.send(
            0,
            AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
                channel_max: tune.channel_max,
                frame_max: c.frame_max,
                heartbeat: 0,
            })),
        )
        .await?;
        c.send(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
                virtual_host: target.vhost.as_str().into(),
            })),
        )
        .await?;
        let open_ok = c.recv_method(0, "connection.open").await?;
        if !matches!(
            open_ok,
            AMQPClass::Connection(connection::AMQPMethod::OpenOk(_))
        ) {
            return Err(c.unexpected("connection.open-ok", &open_ok));
        }
        c.call(
            CHANNEL,
            AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
            "channel.open",
        )
        .await?;
        Ok(c)
    }

    fn unexpected(&self, wanted: &str, got: &AMQPClass) -> BenchError {
        BenchError::Protocol(format!(
            "{}: expected {wanted}, got {}",
            self.name,
            method_label(got)
        ))
    }

    async fn write(&mut self, bytes: &[u8], during: &str) -> Result<(), BenchError> {
        self.stream
            .write_all(bytes)
            .await
            .map_err(|e| BenchError::io(format!("{}: {during}", self.name), e))
    }

    /// Sends one method frame.
    pub async fn send(&mut self, channel: u16, method: AMQPClass) -> Result<(), BenchError> {
        let mut buf = BytesMut::new();
        encode_method(&mut buf, channel, &method)
            .map_err(|e| BenchError::Protocol(format!("cannot encode a method: {e}")))?;
        let label = method_label(&method);
        self.write(&buf, &label).await
    }

    /// Sends a synchronous method and waits for its reply (any method on
    /// the same channel that is not a close).
    pub async fn call(
        &mut self,
        channel: u16,
        method: AMQPClass,
        during: &str,
    ) -> Result<AMQPClass, BenchError> {
        self.send(channel, method).await?;
        self.recv_method(channel, during).await
    }

    /// Reads frames until a method on `channel` arrives. A close on the
    /// connection or on `channel` becomes [`BenchError::Closed`] (after
    /// answering it); heartbeats are skipped.
    pub async fn recv_method(
        &mut self,
        channel: u16,
        during: &str,
    ) -> Result<AMQPClass, BenchError> {
        loop {
            match self.recv_frame(during).await? {
                Frame::Method {
                    channel: ch,
                    method,
                } if ch == channel || ch == 0 => {
                    if let Some(err) = close_error(&method, &self.name, during) {
                        let _ = self.send(ch, close_ok(&method)).await;
                        return Err(err);
                    }
                    if ch == channel {
                        return Ok(method);
                    }
                }
                Frame::Heartbeat { .. } => {}
                other => {
                    return Err(BenchError::Protocol(format!(
                        "{}: unexpected frame on channel {} during {during}",
                        self.name,
                        other.channel()
                    )))
                }
            }
        }
    }

    async fn recv_frame(&mut self, during: &str) -> Result<Frame, BenchError> {
        loop {
            let found = check_frame(&self.rbuf, self.frame_max.max(FRAME_MAX))
                .map_err(|e| not_amqp(&self.rbuf, &e.to_string()))?;
            if let Some(len) = found {
                let frame = self.rbuf.split_to(len).freeze();
                return parse_frame(frame)
                    .map_err(|e| BenchError::Protocol(format!("{}: {e}", self.name)));
            }
            self.rbuf.reserve(16 * 1024);
            let n = self
                .stream
                .read_buf(&mut self.rbuf)
                .await
                .map_err(|e| BenchError::io(format!("{}: {during}", self.name), e))?;
            if n == 0 {
                return Err(eof_error(&self.name, during));
            }
        }
    }
}

/// What a socket closed without an AMQP close most likely means.
pub fn eof_error(name: &str, during: &str) -> BenchError {
    let hint = if during == "login" {
        " (login refused?)"
    } else {
        ""
    };
    BenchError::Eof(format!("{name}: during {during}{hint}"))
}

/// The broker answered something that is not a frame: most likely the
/// protocol header of another AMQP version, or not AMQP at all.
fn not_amqp(buf: &[u8], why: &str) -> BenchError {
    if buf.starts_with(b"AMQP") {
        BenchError::Protocol(format!(
            "the broker does not speak AMQP 0-9-1 (it answered with header {:?})",
            Bytes::copy_from_slice(&buf[..buf.len().min(8)])
        ))
    } else {
        BenchError::Protocol(format!("not an AMQP 0-9-1 broker ({why})"))
    }
}

fn client_properties(name: &str) -> FieldTable {
    let mut caps = FieldTable::default();
    for cap in [
        "authentication_failure_close",
        "publisher_confirms",
        "basic.nack",
        "consumer_cancel_notify",
    ] {
        caps.insert(cap.into(), AMQPValue::Boolean(true));
    }
    let mut props = FieldTable::default();
    props.insert(
        "product".into(),
        AMQPValue::LongString("ferry-bench".into()),
    );
    props.insert("connection_name".into(), AMQPValue::LongString(name.into()));
    props.insert("capabilities".into(), AMQPValue::FieldTable(caps));
    props
}

/// `class.method` of a decoded method, for messages.
pub fn method_label(m: &AMQPClass) -> String {
    ferry_amqp::method_name(m.get_amqp_class_id(), m.get_amqp_method_id())
        .map_or_else(|| "an unknown method".to_string(), str::to_string)
}

/// connection.close / channel.close from the broker as an error.
pub fn close_error(method: &AMQPClass, name: &str, during: &str) -> Option<BenchError> {
    let (scope, code, text) = match method {
        AMQPClass::Connection(connection::AMQPMethod::Close(c)) => {
            ("connection", c.reply_code, c.reply_text.as_str())
        }
        AMQPClass::Channel(channel::AMQPMethod::Close(c)) => {
            ("channel", c.reply_code, c.reply_text.as_str())
        }
        _ => return None,
    };
    Some(BenchError::Closed {
        scope,
        during: format!("{name}: {during}"),
        code,
        text: text.to_string(),
    })
}

/// The close-ok answering a close.
fn close_ok(close: &AMQPClass) -> AMQPClass {
    match close {
        AMQPClass::Channel(_) => {
            AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {}))
        }
        _ => AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
    }
}

/// Decodes a rare method frame met on a hot path (a close, a cancel) to
/// report it. `frame` is the whole frame as delimited by `check_frame`.
pub fn decode_rare(frame: &[u8]) -> Result<Frame, BenchError> {
    parse_frame(Bytes::copy_from_slice(frame))
        .map_err(|e| BenchError::Protocol(format!("bad frame from the broker: {e}")))
}

/// The bytes of a client connection.close (reply 200), to end a run.
pub fn connection_close_frame() -> BytesMut {
    let mut buf = BytesMut::new();
    // Encoding a constant method cannot fail; if it somehow did, the
    // socket is simply dropped instead.
    let _ = encode_method(
        &mut buf,
        0,
        &AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
            reply_code: 200,
            reply_text: "bench done".into(),
            class_id: 0,
            method_id: 0,
        })),
    );
    buf
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn parses_uris() {
        let t = Target::parse("amqp://guest:guest@127.0.0.1:5672/%2f").unwrap();
        assert_eq!(t.addr, "127.0.0.1:5672");
        assert_eq!((t.user.as_str(), t.password.as_str()), ("guest", "guest"));
        assert_eq!(t.vhost, "/");
        let t = Target::parse("amqp://u:p@localhost/v?frame_max=8192").unwrap();
        assert_eq!(t.addr, "localhost:5672");
        assert_eq!(t.vhost, "v");
        assert_eq!(t.frame_max, Some(8192));
        assert!(matches!(
            Target::parse("amqps://localhost"),
            Err(BenchError::Usage(_))
        ));
        assert!(matches!(
            Target::parse("http://x"),
            Err(BenchError::Usage(_))
        ));
    }

    #[test]
    fn close_becomes_an_error_with_code_and_text() {
        let close = AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
            reply_code: 403,
            reply_text: "ACCESS_REFUSED - Login was refused".into(),
            class_id: 0,
            method_id: 0,
        }));
        let e = close_error(&close, "probe", "login").unwrap();
        let msg = e.to_string();
        assert!(
            msg.contains("403 ACCESS_REFUSED - Login was refused"),
            "{msg}"
        );
        assert!(msg.contains("connection"), "{msg}");
        let frame = connection_close_frame();
        assert!(matches!(decode_rare(&frame).unwrap(), Frame::Method { .. }));
    }
}
