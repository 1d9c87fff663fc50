#![allow(clippy::unwrap_used, clippy::expect_used)]

//! A client over an in-process pipe, served by the real connection code.

use super::*;
use bytes::BytesMut;
use ferry_amqp::amq_protocol::protocol::{basic, channel, connection, queue, AMQPClass};
use ferry_amqp::{
    check_frame, encode_content, encode_method, encode_properties, parse_frame, AMQPValue,
    BasicProperties, FieldTable, Frame, LongString, PROTOCOL_HEADER,
};
use ferry_broker::BrokerConfig;
use ferry_log::SimIo;
use std::path::PathBuf;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

const FRAME_MAX: u32 = 4096;

fn front() -> Frontend {
    let broker = Broker::open(
        BrokerConfig::new(PathBuf::from("/data")),
        SimIo::new().shared(),
    )
    .unwrap();
    let config = ServerConfig {
        frame_max: FRAME_MAX,
        ..ServerConfig::default()
    };
    Frontend::new(broker, config)
}

fn method(buf: &mut BytesMut, ch: u16, m: AMQPClass) {
    encode_method(buf, ch, &m).unwrap();
}

struct Client {
    pipe: DuplexStream,
    buf: BytesMut,
}

impl Client {
    async fn send(&mut self, bytes: &[u8]) {
        self.pipe.write_all(bytes).await.unwrap();
    }

    /// The next frame the server writes; None at the end of the stream.
    async fn frame(&mut self) -> Option<Frame> {
        loop {
            if let Some(len) = check_frame(&self.buf, FRAME_MAX).unwrap() {
                return Some(parse_frame(self.buf.split_to(len).freeze()).unwrap());
            }
            if self.pipe.read_buf(&mut self.buf).await.unwrap() == 0 {
                return None;
            }
        }
    }

    /// The next method frame, on `ch`.
    async fn method(&mut self, ch: u16) -> AMQPClass {
        match self.frame().await {
            Some(Frame::Method { channel, method }) if channel == ch => method,
            other => panic!("expected a method on channel {ch}, got {other:?}"),
        }
    }
}

/// Connects `front` to a client that has done the handshake (guest from
/// a loopback address, heartbeats off).
async fn connect(front: &Frontend) -> (Client, tokio::task::JoinHandle<()>) {
    let (pipe, server) = tokio::io::duplex(64 * 1024);
    let task = tokio::spawn(front.serve(server, SocketAddr::from(([127, 0, 0, 1], 5000))));
    let mut c = Client {
        pipe,
        buf: BytesMut::new(),
    };
    let mut out = BytesMut::from(&PROTOCOL_HEADER[..]);
    let mut props = FieldTable::default();
    props.insert("product".into(), AMQPValue::LongString("test".into()));
    method(
        &mut out,
        0,
        AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
            client_properties: props,
            mechanism: "PLAIN".into(),
            response: LongString::from("\0guest\0guest"),
            locale: "en_US".into(),
        })),
    );
    method(
        &mut out,
        0,
        AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
            channel_max: 16,
            frame_max: FRAME_MAX,
            heartbeat: 0,
        })),
    );
    method(
        &mut out,
        0,
        AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
            virtual_host: "/".into(),
        })),
    );
    c.send(&out).await;
    assert!(matches!(
        c.method(0).await,
        AMQPClass::Connection(connection::AMQPMethod::Start(_))
    ));
    assert!(matches!(
        c.method(0).await,
        AMQPClass::Connection(connection::AMQPMethod::Tune(t)) if t.frame_max == FRAME_MAX
    ));
    assert!(matches!(
        c.method(0).await,
        AMQPClass::Connection(connection::AMQPMethod::OpenOk(_))
    ));
    (c, task)
}

/// A stream that is not a socket gets the whole connection: handshake,
/// channel routing, content assembly, the writer's content frames, and
/// the front end's shutdown closing it with 320 and waiting for close-ok
/// (found by the wire-level fuzz harness: the wait's stand-in shutdown
/// receiver had no sender, so it ended at once and the client's close-ok
/// hit a closed socket).
#[tokio::test]
async fn serves_a_connection_over_an_in_process_pipe() {
    let front = front();
    let (mut c, task) = connect(&front).await;
    assert_eq!(front.live_connections(), 1);
    let mut out = BytesMut::new();
    method(
        &mut out,
        1,
        AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
    );
    method(
        &mut out,
        1,
        AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: "q".into(),
            passive: false,
            durable: false,
            exclusive: false,
            auto_delete: false,
            nowait: false,
            arguments: FieldTable::default(),
        })),
    );
    method(
        &mut out,
        1,
        AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: "".into(),
            routing_key: "q".into(),
            mandatory: false,
            immediate: false,
        })),
    );
    let raw = encode_properties(&BasicProperties::default()).unwrap();
    let body = vec![7u8; 10_000];
    encode_content(&mut out, 1, 60, &raw, &body, FRAME_MAX).unwrap();
    method(
        &mut out,
        1,
        AMQPClass::Basic(basic::AMQPMethod::Get(basic::Get {
            queue: "q".into(),
            no_ack: true,
        })),
    );
    c.send(&out).await;
    assert!(matches!(
        c.method(1).await,
        AMQPClass::Channel(channel::AMQPMethod::OpenOk(_))
    ));
    assert!(matches!(
        c.method(1).await,
        AMQPClass::Queue(queue::AMQPMethod::DeclareOk(_))
    ));
    assert!(matches!(
        c.method(1).await,
        AMQPClass::Basic(basic::AMQPMethod::GetOk(g)) if g.delivery_tag == 1
    ));
    let Some(Frame::Header { body_size, .. }) = c.frame().await else {
        panic!("no content header");
    };
    assert_eq!(body_size, body.len() as u64);
    let mut got = Vec::new();
    while got.len() < body.len() {
        match c.frame().await {
            Some(Frame::Body {
                channel: 1,
                payload,
            }) => got.extend_from_slice(&payload),
            other => panic!("expected a body frame, got {other:?}"),
        }
    }
    assert_eq!(got, body);

    let stop = tokio::spawn(front.shutdown());
    match c.method(0).await {
        AMQPClass::Connection(connection::AMQPMethod::Close(close)) => {
            assert_eq!(close.reply_code, 320)
        }
        other => panic!("expected connection.close, got {other:?}"),
    }
    let mut ok = BytesMut::new();
    method(
        &mut ok,
        0,
        AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
    );
    // Anything but close-ok is ignored meanwhile; the pipe stays open.
    let mut heartbeat = BytesMut::new();
    ferry_amqp::encode_heartbeat(&mut heartbeat);
    c.send(&heartbeat).await;
    c.send(&ok).await;
    assert!(c.frame().await.is_none(), "the server closes its end");
    task.await.unwrap();
    stop.await.unwrap();
}

/// A connection counts as live from `serve` until it ends, whatever ends
/// it (here: the client goes away mid-handshake).
#[tokio::test]
async fn a_connection_is_live_until_it_ends() {
    let front = front();
    let (pipe, server) = tokio::io::duplex(1024);
    let serve = front.serve(server, SocketAddr::from(([127, 0, 0, 1], 5001)));
    assert_eq!(front.live_connections(), 1);
    drop(pipe);
    serve.await;
    assert_eq!(front.live_connections(), 0);
}
