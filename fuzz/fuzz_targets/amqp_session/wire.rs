//! The client's end of the pipe: connecting (a real handshake), writing
//! client frames, and reading back everything the server writes until it
//! has answered (a marker round trip) or the connection has ended.
//!
//! The marker is connection.update-secret: the connection answers it on
//! channel 0 in the order it reads frames, so its update-secret-ok comes
//! after every reply to what was written before it. What the connection
//! sends once it waits for input again (held confirms) or what the writer's
//! wake-ups queue (deliveries resumed once the socket drained) can follow
//! the marker's answer: `settle` repeats the round trip until one brings
//! nothing else.

use super::*;

/// Virtual time the server gets to answer (time is paused: it only moves
/// while every task waits, so a legitimate answer takes none; the longest
/// legitimate wait is a 3 s close delay).
const ANSWER_WITHIN: Duration = Duration::from_secs(60);

/// How a round trip ended.
pub(crate) enum Trip {
    /// Only the marker's answer came back.
    Quiet,
    /// Other frames came back before it.
    Busy,
    /// The connection ended (a new one is open now).
    Gone,
}

/// What a server frame means to the client's reading loop.
pub(crate) enum Seen {
    Frame,
    /// update-secret-ok.
    SecretOk,
    /// connection.close: the server ends the connection (close-ok owed).
    Close,
    /// connection.close-ok: the server ends the connection.
    CloseOk,
}

/// The client's view of one connection.
pub(crate) struct Conn {
    pub(crate) client: DuplexStream,
    pub(crate) task: tokio::task::JoinHandle<()>,
    /// Bytes read and not yet cut into frames.
    pub(crate) out: BytesMut,
    /// A deliver / get-ok / return whose content is being read.
    pub(crate) content: Option<ServerContent>,
    /// Channels the server opened (open-ok seen) and did not close.
    pub(crate) open: HashSet<u16>,
    /// Channels the server closed (channel.close seen): close-ok owed.
    pub(crate) closing: HashSet<u16>,
    pub(crate) track: HashMap<u16, Track>,
    /// update-secret-oks owed to update-secrets inside the client's own
    /// (raw) frames, to skip before the marker's.
    pub(crate) extra_oks: u32,
    /// The client's own frames closed the connection (a close-ok to the
    /// server's close may then find the pipe shut).
    pub(crate) client_closing: bool,
}

fn secret() -> AMQPClass {
    AMQPClass::Connection(connection::AMQPMethod::UpdateSecret(
        connection::UpdateSecret {
            new_secret: "marker".into(),
            reason: "marker".into(),
        },
    ))
}

/// The client's frames in `bytes` as the server's framing loop cuts them
/// at `frame_max`, and whether they all parse and end on a frame boundary.
fn client_frames(bytes: &[u8], frame_max: u32) -> (Vec<Frame>, bool) {
    let stream = Bytes::copy_from_slice(bytes);
    let mut at = 0;
    let mut frames = Vec::new();
    loop {
        match check_frame(&stream[at..], frame_max) {
            Ok(Some(len)) => {
                let Ok(f) = parse_frame(stream.slice(at..at + len)) else {
                    return (frames, false);
                };
                at += len;
                frames.push(f);
            }
            Ok(None) => return (frames, at == stream.len()),
            Err(_) => return (frames, false),
        }
    }
}

impl Harness {
    /// Opens a new connection through the front end: protocol header,
    /// start-ok (PLAIN guest), tune-ok (frame_max, heartbeats off), open
    /// "/", and reads start, tune and open-ok back.
    pub(crate) fn connect(&mut self) {
        let (client, server) = tokio::io::duplex(1 << 20);
        let peer = SocketAddr::from(([127, 0, 0, 1], 40_000u16.wrapping_add(self.next_conn)));
        self.next_conn = self.next_conn.wrapping_add(1);
        let front = self.front.as_ref().expect("a running front end");
        let task = self.rt.spawn(front.serve(server, peer));
        self.conn = Some(Conn {
            client,
            task,
            out: BytesMut::new(),
            content: None,
            open: HashSet::new(),
            closing: HashSet::new(),
            track: HashMap::new(),
            extra_oks: 0,
            client_closing: false,
        });
        let mut hello = BytesMut::from(&PROTOCOL_HEADER[..]);
        ferry_fuzz::streams::handshake_with(&mut hello, self.frame_max(), 0);
        assert!(self.write(&hello), "the server did not read the handshake");
        let mut tuned = false;
        loop {
            let frame = match self.next_frame() {
                Some(f) => f,
                None => panic!("the server ended the handshake (tuned: {tuned})"),
            };
            let len = frame.len();
            match parse_frame(frame) {
                Ok(Frame::Method {
                    channel: 0,
                    method: AMQPClass::Connection(m),
                }) => match m {
                    connection::AMQPMethod::Start(_) => {}
                    connection::AMQPMethod::Tune(t) => {
                        assert_eq!(t.frame_max, self.frame_max(), "connection.tune frame_max");
                        tuned = true;
                    }
                    connection::AMQPMethod::OpenOk(_) if tuned => break,
                    other => panic!("handshake: unexpected {other:?}"),
                },
                other => panic!("handshake: unexpected frame ({len} bytes): {other:?}"),
            }
        }
    }

    pub(crate) fn conn(&mut self) -> &mut Conn {
        self.conn.as_mut().expect("a connection")
    }

    /// Writes to the server; false if it no longer reads.
    pub(crate) fn write(&mut self, bytes: &[u8]) -> bool {
        let Some(conn) = self.conn.as_mut() else {
            return false;
        };
        let write =
            async { tokio::time::timeout(ANSWER_WITHIN, conn.client.write_all(bytes)).await };
        match self.rt.block_on(write) {
            Ok(r) => r.is_ok(),
            Err(_) => panic!("the server stopped reading (pipe full for {ANSWER_WITHIN:?})"),
        }
    }

    /// The next whole frame the server wrote; None at the end of the
    /// stream.
    pub(crate) fn next_frame(&mut self) -> Option<Bytes> {
        let Harness { rt, conn, .. } = self;
        let conn = conn.as_mut()?;
        loop {
            if let Some(len) = check_frame(&conn.out, 0).expect("server frame header") {
                return Some(conn.out.split_to(len).freeze());
            }
            let read = async {
                tokio::time::timeout(ANSWER_WITHIN, conn.client.read_buf(&mut conn.out)).await
            };
            match rt.block_on(read) {
                Ok(Ok(0) | Err(_)) => {
                    assert!(
                        conn.out.is_empty(),
                        "the server's stream ends inside a frame: {:?}",
                        &conn.out[..]
                    );
                    return None;
                }
                Ok(Ok(_)) => {}
                Err(_) => panic!("the server did not answer within {ANSWER_WITHIN:?}"),
            }
        }
    }

    /// Sends client frames (already encoded) and waits for the server to
    /// have handled them. Returns false if the connection ended (a new one
    /// is open then).
    pub(crate) fn send_bytes(&mut self, bytes: &[u8]) -> bool {
        let (frames, whole) = client_frames(bytes, self.frame_max());
        for f in &frames {
            self.note_content(f);
            let conn = self.conn();
            match f {
                Frame::Method {
                    channel,
                    method: AMQPClass::Channel(channel::AMQPMethod::CloseOk(_)),
                } => {
                    conn.closing.remove(channel);
                }
                Frame::Method {
                    channel: 0,
                    method: AMQPClass::Connection(connection::AMQPMethod::UpdateSecret(_)),
                } => conn.extra_oks += 1,
                Frame::Method {
                    channel: 0,
                    method:
                        AMQPClass::Connection(
                            connection::AMQPMethod::Close(_) | connection::AMQPMethod::CloseOk(_),
                        ),
                } => conn.client_closing = true,
                _ => {}
            }
        }
        if !whole {
            // The server would wait for the rest of a frame (or has lost
            // the framing): end the connection to keep ops independent.
            self.write(bytes);
            self.end_connection();
            return false;
        }
        let mut buf = BytesMut::from(bytes);
        encode_method(&mut buf, 0, &secret()).expect("encoding the marker");
        if !self.write(&buf) {
            self.end_connection();
            return false;
        }
        !matches!(self.read_to_marker(), Trip::Gone)
    }

    pub(crate) fn send_method(&mut self, ch: u16, m: AMQPClass) -> bool {
        let mut buf = BytesMut::new();
        encode_method(&mut buf, ch, &m).expect("encoding a client method");
        self.send_bytes(&buf)
    }

    /// One marker round trip.
    pub(crate) fn round_trip(&mut self) -> Trip {
        let mut buf = BytesMut::new();
        encode_method(&mut buf, 0, &secret()).expect("encoding the marker");
        if !self.write(&buf) {
            self.end_connection();
            return Trip::Gone;
        }
        self.read_to_marker()
    }

    /// Reads and checks server frames until the marker's answer, or until
    /// the connection ends (then opens a new one).
    fn read_to_marker(&mut self) -> Trip {
        let mut busy = false;
        loop {
            let Some(frame) = self.next_frame() else {
                self.gone();
                return Trip::Gone;
            };
            match self.check_server_frame(frame) {
                Seen::Frame => busy = true,
                Seen::SecretOk if self.conn().extra_oks > 0 => {
                    self.conn().extra_oks -= 1;
                    busy = true;
                }
                Seen::SecretOk => {
                    // The writer writes each item whole: a message cut
                    // short here was dropped halfway.
                    if let Some(c) = &self.conn().content {
                        panic!(
                            "the server sent a {} without all of its content: {c:?}",
                            c.method
                        );
                    }
                    return if busy { Trip::Busy } else { Trip::Quiet };
                }
                Seen::Close => {
                    let strict = !self.conn().client_closing;
                    self.answer_close(strict);
                    self.end_connection();
                    return Trip::Gone;
                }
                Seen::CloseOk => {
                    self.end_connection();
                    return Trip::Gone;
                }
            }
        }
    }

    /// Answers the server's connection.close. It waits for close-ok (or,
    /// having lost the framing, reads until the end of the stream): the
    /// pipe must still take it, unless both sides closed at once
    /// (`strict` false).
    pub(crate) fn answer_close(&mut self, strict: bool) {
        let mut buf = BytesMut::new();
        let ok = AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {}));
        encode_method(&mut buf, 0, &ok).expect("close-ok");
        let written = self.write(&buf);
        assert!(
            written || !strict,
            "the server closed its end without waiting for close-ok"
        );
    }

    /// Stops writing, reads (and checks) what the server still sends
    /// until it closes its end, then opens a new connection.
    pub(crate) fn end_connection(&mut self) {
        self.close_stream();
        self.gone();
    }

    /// Shuts our writing half and reads to the end of the stream, checking
    /// every frame.
    pub(crate) fn close_stream(&mut self) {
        let Harness { rt, conn, .. } = self;
        if let Some(conn) = conn.as_mut() {
            let _ = rt.block_on(conn.client.shutdown());
        }
        // Our end is shut: a connection.close now cannot be answered.
        while let Some(frame) = self.next_frame() {
            self.check_server_frame(frame);
        }
    }

    /// The stream ended: the server task must end too; then a new
    /// connection.
    fn gone(&mut self) {
        self.finish_connection();
        self.stats.reconnects += 1;
        self.connect();
    }

    /// Waits for the server's connection task to end (its stream is at
    /// its end) and checks nothing was cut short.
    pub(crate) fn finish_connection(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        if let Some(c) = &conn.content {
            panic!(
                "the connection ended inside a {} (content missing): {c:?}",
                c.method
            );
        }
        let joined = self
            .rt
            .block_on(async { tokio::time::timeout(ANSWER_WITHIN, conn.task).await });
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("the connection task failed: {e}"),
            Err(_) => panic!("the connection task did not end after its stream closed"),
        }
    }

    /// The client closes the connection (connection.close, close-ok, the
    /// end of the stream).
    pub(crate) fn client_close(&mut self) {
        let mut buf = BytesMut::new();
        let close = AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
            reply_code: 200,
            reply_text: short("bye"),
            class_id: 0,
            method_id: 0,
        }));
        encode_method(&mut buf, 0, &close).expect("connection.close");
        if self.write(&buf) {
            while let Some(frame) = self.next_frame() {
                match self.check_server_frame(frame) {
                    Seen::CloseOk => break,
                    // Both sides closed at once: answer and go on.
                    Seen::Close => self.answer_close(false),
                    Seen::Frame | Seen::SecretOk => {}
                }
            }
        }
        self.close_stream();
        self.finish_connection();
    }
}
