//! A deliberately tiny, hand-written AMQP 0-9-1 client for protocol-level tests (frames a
//! well-behaved client library would never send, and exact observation of what the broker
//! sends). Independent of amq-protocol on purpose.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const FRAME_METHOD: u8 = 1;
pub const FRAME_HEADER: u8 = 2;
pub const FRAME_BODY: u8 = 3;
pub const FRAME_HEARTBEAT: u8 = 8;
pub const FRAME_END: u8 = 0xCE;

pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: u8,
    pub channel: u16,
    pub payload: Vec<u8>,
}

impl Frame {
    /// (class id, method id) of a method frame.
    pub fn method_id(&self) -> Option<(u16, u16)> {
        if self.kind != FRAME_METHOD || self.payload.len() < 4 {
            return None;
        }
        Some((
            u16::from_be_bytes([self.payload[0], self.payload[1]]),
            u16::from_be_bytes([self.payload[2], self.payload[3]]),
        ))
    }

    pub fn is_method(&self, class: u16, method: u16) -> bool {
        self.method_id() == Some((class, method))
    }

    /// Arguments of a method frame.
    pub fn args(&self) -> Reader<'_> {
        Reader {
            buf: &self.payload[4..],
            pos: 0,
        }
    }
}

/// A (reply-code, reply-text, class-id, method-id) close, from connection.close or channel.close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    pub code: u16,
    pub text: String,
    pub class_id: u16,
    pub method_id: u16,
}

pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    pub fn u8(&mut self) -> u8 {
        let v = self.buf[self.pos];
        self.pos += 1;
        v
    }
    pub fn u16(&mut self) -> u16 {
        let v = u16::from_be_bytes(self.buf[self.pos..self.pos + 2].try_into().unwrap());
        self.pos += 2;
        v
    }
    pub fn u32(&mut self) -> u32 {
        let v = u32::from_be_bytes(self.buf[self.pos..self.pos + 4].try_into().unwrap());
        self.pos += 4;
        v
    }
    pub fn u64(&mut self) -> u64 {
        let v = u64::from_be_bytes(self.buf[self.pos..self.pos + 8].try_into().unwrap());
        self.pos += 8;
        v
    }
    pub fn shortstr(&mut self) -> String {
        let n = self.u8() as usize;
        let s = String::from_utf8_lossy(&self.buf[self.pos..self.pos + n]).into_owned();
        self.pos += n;
        s
    }
    pub fn table(&mut self) -> Vec<(String, Value)> {
        let n = self.u32() as usize;
        let end = self.pos + n;
        let mut out = Vec::new();
        while self.pos < end {
            let k = self.shortstr();
            let v = self.value();
            out.push((k, v));
        }
        assert_eq!(self.pos, end, "field table length mismatch");
        out
    }
    /// One field value (RabbitMQ's type letters).
    pub fn value(&mut self) -> Value {
        let t = self.u8();
        match t {
            b't' => Value::Bool(self.u8() != 0),
            b'b' | b'B' => Value::Int(self.u8() as i64),
            b's' | b'u' => Value::Int(self.u16() as i64),
            b'I' | b'i' => Value::Int(self.u32() as i64),
            b'l' | b'T' => Value::Int(self.u64() as i64),
            b'f' => Value::Other(self.u32() as u64),
            b'd' => Value::Other(self.u64()),
            b'D' => {
                let _scale = self.u8();
                Value::Other(self.u32() as u64)
            }
            b'S' | b'x' => Value::Str(self.longstr()),
            b'F' => Value::Table(self.table()),
            b'A' => {
                let n = self.u32() as usize;
                let end = self.pos + n;
                let mut items = Vec::new();
                while self.pos < end {
                    items.push(self.value());
                }
                Value::Array(items)
            }
            b'V' => Value::Void,
            other => panic!("unknown field type {:?}", other as char),
        }
    }
    pub fn longstr(&mut self) -> Vec<u8> {
        let n = self.u32() as usize;
        let s = self.buf[self.pos..self.pos + n].to_vec();
        self.pos += n;
        s
    }
}

/// A decoded field value (just enough for assertions).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Bool(bool),
    Int(i64),
    Other(u64),
    Str(Vec<u8>),
    Table(Vec<(String, Value)>),
    Array(Vec<Value>),
    Void,
}

/// Look a key up in a decoded table.
pub fn lookup<'a>(table: &'a [(String, Value)], key: &str) -> Option<&'a Value> {
    table.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// Method-argument encoder.
#[derive(Default)]
pub struct Args(pub Vec<u8>);

impl Args {
    pub fn new() -> Self {
        Args(Vec::new())
    }
    pub fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    pub fn u16(mut self, v: u16) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn shortstr(mut self, s: &str) -> Self {
        assert!(s.len() < 256);
        self.0.push(s.len() as u8);
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    pub fn longstr(mut self, s: &[u8]) -> Self {
        self.0.extend_from_slice(&(s.len() as u32).to_be_bytes());
        self.0.extend_from_slice(s);
        self
    }
    pub fn empty_table(self) -> Self {
        self.u32(0)
    }
}

pub fn method_payload(class: u16, method: u16, args: Args) -> Vec<u8> {
    let mut p = Vec::with_capacity(4 + args.0.len());
    p.extend_from_slice(&class.to_be_bytes());
    p.extend_from_slice(&method.to_be_bytes());
    p.extend_from_slice(&args.0);
    p
}

pub fn encode_frame(kind: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(payload.len() + 8);
    f.push(kind);
    f.extend_from_slice(&channel.to_be_bytes());
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f.push(FRAME_END);
    f
}

/// What came back from the socket.
#[derive(Debug)]
pub enum Event {
    Frame(Frame),
    /// The peer closed the TCP connection.
    Eof,
    /// Nothing within the timeout.
    Timeout,
}

pub struct RawConn {
    pub stream: TcpStream,
    buf: Vec<u8>,
    pub frame_max: u32,
    pub channel_max: u16,
}

impl RawConn {
    /// TCP connect only (no protocol header sent).
    pub async fn tcp(addr: &str) -> RawConn {
        let stream = tokio::time::timeout(super::STEP, TcpStream::connect(addr))
            .await
            .expect("tcp connect timed out")
            .unwrap_or_else(|e| panic!("tcp connect {addr}: {e}"));
        stream.set_nodelay(true).unwrap();
        RawConn {
            stream,
            buf: Vec::new(),
            frame_max: 131072,
            channel_max: 2047,
        }
    }

    /// Full handshake as guest/guest on vhost "/" (heartbeats off).
    pub async fn open(addr: &str) -> RawConn {
        RawConn::open_with_heartbeat(addr, 0).await
    }

    /// Full handshake, answering tune with the given heartbeat (seconds).
    pub async fn open_with_heartbeat(addr: &str, heartbeat: u16) -> RawConn {
        let mut c = RawConn::tcp(addr).await;
        c.send_bytes(PROTOCOL_HEADER).await;
        let start = c.expect_method(0, 10, 10).await; // connection.start
        let mut a = start.args();
        assert_eq!((a.u8(), a.u8()), (0, 9), "connection.start version");
        let ok = Args::new()
            .empty_table() // client-properties
            .shortstr("PLAIN")
            .longstr(b"\0guest\0guest")
            .shortstr("en_US");
        c.send_method(0, 10, 11, ok).await; // start-ok
        let tune = c.expect_method(0, 10, 30).await;
        let mut a = tune.args();
        let channel_max = a.u16();
        let frame_max = a.u32();
        let _heartbeat = a.u16();
        c.channel_max = if channel_max == 0 { 2047 } else { channel_max };
        c.frame_max = if frame_max == 0 { 131072 } else { frame_max };
        let tune_ok = Args::new()
            .u16(c.channel_max)
            .u32(c.frame_max)
            .u16(heartbeat);
        c.send_method(0, 10, 31, tune_ok).await;
        let open = Args::new().shortstr("/").shortstr("").u8(0);
        c.send_method(0, 10, 40, open).await;
        c.expect_method(0, 10, 41).await; // open-ok
        c
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("socket write");
    }

    /// Write, ignoring errors (the broker may already have closed the socket).
    pub async fn try_send_bytes(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).await.is_ok()
    }

    pub async fn send_frame(&mut self, kind: u8, channel: u16, payload: &[u8]) {
        let f = encode_frame(kind, channel, payload);
        self.send_bytes(&f).await;
    }

    pub async fn send_method(&mut self, channel: u16, class: u16, method: u16, args: Args) {
        let p = method_payload(class, method, args);
        self.send_frame(FRAME_METHOD, channel, &p).await;
    }

    /// channel.open and wait for open-ok.
    pub async fn open_channel(&mut self, channel: u16) {
        self.send_method(channel, 20, 10, Args::new().shortstr(""))
            .await;
        self.expect_method(channel, 20, 11).await;
    }

    /// basic.publish + header + body frames (split at frame_max), no properties.
    pub async fn publish(
        &mut self,
        channel: u16,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        flags: u8,
    ) {
        let mut out = Vec::new();
        let m = method_payload(
            60,
            40,
            Args::new()
                .u16(0)
                .shortstr(exchange)
                .shortstr(routing_key)
                .u8(flags),
        );
        out.extend(encode_frame(FRAME_METHOD, channel, &m));
        let header = Args::new().u16(60).u16(0).u64(body.len() as u64).u16(0);
        out.extend(encode_frame(FRAME_HEADER, channel, &header.0));
        let max = self.frame_max as usize - 8;
        for chunk in body.chunks(max) {
            out.extend(encode_frame(FRAME_BODY, channel, chunk));
        }
        self.send_bytes(&out).await;
    }

    /// Read one frame, EOF or timeout. Heartbeat frames are returned like any other.
    pub async fn next_event(&mut self, timeout: Duration) -> Event {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(frame) = self.parse_buffered() {
                return Event::Frame(frame);
            }
            self.buf.reserve(64 * 1024);
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Err(_) => return Event::Timeout,
                Ok(Ok(0)) => return Event::Eof,
                Ok(Ok(_)) => {}
                // A reset after the broker closed counts as the connection ending.
                Ok(Err(_)) => return Event::Eof,
            }
        }
    }

    /// Raw bytes until EOF/timeout (for the protocol-header negotiation test).
    pub async fn read_raw(&mut self, timeout: Duration) -> (Vec<u8>, bool) {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut out = std::mem::take(&mut self.buf);
        loop {
            out.reserve(4096);
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut out)).await {
                Err(_) => return (out, false),
                Ok(Ok(0)) | Ok(Err(_)) => return (out, true),
                Ok(Ok(_)) => {}
            }
        }
    }

    fn parse_buffered(&mut self) -> Option<Frame> {
        if self.buf.len() < 7 {
            return None;
        }
        let size = u32::from_be_bytes(self.buf[3..7].try_into().unwrap()) as usize;
        if self.buf.len() < size + 8 {
            return None;
        }
        assert_eq!(
            self.buf[7 + size],
            FRAME_END,
            "broker sent a frame without frame-end"
        );
        let frame = Frame {
            kind: self.buf[0],
            channel: u16::from_be_bytes([self.buf[1], self.buf[2]]),
            payload: self.buf[7..7 + size].to_vec(),
        };
        self.buf.drain(..size + 8);
        Some(frame)
    }

    /// Next frame that is not a heartbeat; panics on EOF/timeout.
    pub async fn next_frame(&mut self) -> Frame {
        loop {
            match self.next_event(super::STEP).await {
                Event::Frame(f) if f.kind == FRAME_HEARTBEAT => continue,
                Event::Frame(f) => return f,
                other => panic!("expected a frame, got {other:?}"),
            }
        }
    }

    /// Next frame must be the given method on the given channel.
    pub async fn expect_method(&mut self, channel: u16, class: u16, method: u16) -> Frame {
        let f = self.next_frame().await;
        assert!(
            f.channel == channel && f.is_method(class, method),
            "expected method {class}.{method} on channel {channel}, got {} {:?} (close: {:?})",
            f.channel,
            f.method_id(),
            parse_close(&f)
        );
        f
    }

    /// Expect connection.close (skipping frames for other traffic), reply close-ok, then
    /// expect the broker to close the socket. Returns the close.
    pub async fn expect_connection_close(&mut self) -> Close {
        let close = self.expect_connection_close_no_eof().await;
        self.expect_eof().await;
        close
    }

    /// Expect connection.close and reply close-ok, without waiting for the socket to close
    /// (after a framing error RabbitMQ keeps the socket open for a few seconds).
    pub async fn expect_connection_close_no_eof(&mut self) -> Close {
        let close = loop {
            let f = self.next_frame().await;
            if f.channel == 0 && f.is_method(10, 50) {
                break parse_close(&f).unwrap();
            }
        };
        self.try_send_bytes(&encode_frame(
            FRAME_METHOD,
            0,
            &method_payload(10, 51, Args::new()),
        ))
        .await;
        close
    }

    /// Expect channel.close on `channel` and answer close-ok.
    pub async fn expect_channel_close(&mut self, channel: u16) -> Close {
        let f = self.next_frame().await;
        assert!(
            f.channel == channel && f.is_method(20, 40),
            "expected channel.close on {channel}, got channel {} method {:?} (close: {:?})",
            f.channel,
            f.method_id(),
            parse_close(&f)
        );
        let close = parse_close(&f).unwrap();
        self.send_method(channel, 20, 41, Args::new()).await;
        close
    }

    /// The broker must close the TCP connection (bounded wait, frames in between ignored).
    pub async fn expect_eof(&mut self) {
        loop {
            match self.next_event(super::STEP).await {
                Event::Eof => return,
                Event::Frame(_) => continue,
                Event::Timeout => panic!("broker did not close the socket"),
            }
        }
    }
}

/// Parse connection.close (10.50) or channel.close (20.40).
pub fn parse_close(f: &Frame) -> Option<Close> {
    if !(f.is_method(10, 50) || f.is_method(20, 40)) {
        return None;
    }
    let mut a = f.args();
    Some(Close {
        code: a.u16(),
        text: a.shortstr(),
        class_id: a.u16(),
        method_id: a.u16(),
    })
}
