"""A tiny raw-socket AMQP 0-9-1 client for the tests that pika cannot express
(bad protocol headers, a client that goes silent after negotiating heartbeats, reading the
exact Connection.Start / Connection.Tune the broker sends, methods pika refuses to send).

Frames are encoded and decoded with pika's own codec (pika.frame / pika.spec), so the
bytes on the wire are the standard ones.
"""

from __future__ import annotations

import socket
import struct
import time

import pika.frame
import pika.spec as spec

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"


class Closed(Exception):
    """The broker closed the TCP connection."""


class RawAMQP:
    def __init__(self, host: str, port: int, timeout: float = 5.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.start: spec.Connection.Start | None = None
        self.tune: spec.Connection.Tune | None = None
        self.frames_seen: list = []

    # -- bytes -----------------------------------------------------------------
    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv_some(self, timeout: float) -> bytes:
        """Up to 64 KiB; b'' means EOF. Raises socket.timeout."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(65536)
        except ConnectionResetError:
            return b""

    def read_exactly(self, n: int, timeout: float = 5.0) -> bytes:
        deadline = time.monotonic() + timeout
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"wanted {n} bytes, have {len(self.buf)}: {self.buf!r}")
            chunk = self.recv_some(left)
            if not chunk:
                break
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def wait_eof(self, timeout: float) -> tuple[float, bytes]:
        """Read (and keep) everything until EOF; returns (seconds waited, bytes read)."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        data = b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"socket still open after {timeout}s")
            try:
                chunk = self.recv_some(left)
            except socket.timeout:
                continue
            if not chunk:
                return time.monotonic() - t0, data
            data += chunk

    # -- frames ----------------------------------------------------------------
    def send_frame(self, frame) -> None:
        self.send(frame.marshal())

    def send_method(self, channel: int, method) -> None:
        self.send_frame(pika.frame.Method(channel, method))

    def recv_frame(self, timeout: float = 5.0):
        deadline = time.monotonic() + timeout
        while True:
            if self.buf:
                consumed, frame = pika.frame.decode_frame(self.buf)
                if frame is not None:
                    self.buf = self.buf[consumed:]
                    self.frames_seen.append(frame)
                    return frame
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no complete frame")
            chunk = self.recv_some(left)
            if not chunk:
                raise Closed(f"EOF; unparsed bytes {self.buf!r}")
            self.buf += chunk

    def recv_method(self, timeout: float = 5.0, skip_heartbeats: bool = True):
        while True:
            f = self.recv_frame(timeout)
            if isinstance(f, pika.frame.Heartbeat) and skip_heartbeats:
                continue
            if not isinstance(f, pika.frame.Method):
                raise AssertionError(f"expected a method frame, got {f!r}")
            return f

    def expect(self, method_cls, timeout: float = 5.0):
        f = self.recv_method(timeout)
        assert isinstance(f.method, method_cls), f"expected {method_cls.NAME}, got {f.method!r}"
        return f

    # -- handshake -------------------------------------------------------------
    def handshake(self, user: str = "guest", password: str = "guest", heartbeat: int | None = None,
                  frame_max: int | None = None, channel_max: int | None = None,
                  vhost: str = "/", open_connection: bool = True):
        """Header, Start/StartOk (PLAIN), Tune/TuneOk, Open/OpenOk. Values of None accept the
        broker's proposal."""
        self.send(PROTOCOL_HEADER)
        self.start = self.expect(spec.Connection.Start).method
        self.send_method(0, spec.Connection.StartOk(
            client_properties={"product": "ferry-tests-raw",
                               "capabilities": {"authentication_failure_close": True}},
            mechanism="PLAIN", response=b"\0" + user.encode() + b"\0" + password.encode(),
            locale="en_US"))
        self.tune = self.expect(spec.Connection.Tune).method
        self.send_method(0, spec.Connection.TuneOk(
            channel_max=self.tune.channel_max if channel_max is None else channel_max,
            frame_max=self.tune.frame_max if frame_max is None else frame_max,
            heartbeat=self.tune.heartbeat if heartbeat is None else heartbeat))
        if open_connection:
            self.send_method(0, spec.Connection.Open(virtual_host=vhost))
            self.expect(spec.Connection.OpenOk)
        return self

    def open_channel(self, channel: int = 1) -> None:
        self.send_method(channel, spec.Channel.Open())
        self.expect(spec.Channel.OpenOk)

    def open_with_queue(self, queue: str) -> None:
        """Handshake, open channel 1 and declare the exclusive queue `queue` on it."""
        self.handshake()
        self.open_channel(1)
        self.send_method(1, spec.Queue.Declare(queue=queue, exclusive=True))
        self.expect(spec.Queue.DeclareOk)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# -- raw frames and hand-encoded field tables (every AMQP 0-9-1 / RabbitMQ field type) ----------

def recv_raw_frame(r: RawAMQP, timeout: float = 5.0) -> tuple[int, int, bytes]:
    """(frame_type, channel, payload) without decoding the payload; skips heartbeats."""
    deadline = time.monotonic() + timeout
    while True:
        while len(r.buf) < 7 or len(r.buf) < 8 + struct.unpack(">I", r.buf[3:7])[0]:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no complete frame")
            chunk = r.recv_some(left)
            if not chunk:
                raise Closed("EOF")
            r.buf += chunk
        ftype, chan, size = struct.unpack(">BHI", r.buf[:7])
        payload, end = r.buf[7:7 + size], r.buf[7 + size]
        assert end == 0xCE, f"bad frame end byte {end:#x}"
        r.buf = r.buf[8 + size:]
        if ftype == 8:
            continue
        return ftype, chan, payload


def shortstr(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    assert len(b) < 256
    return struct.pack(">B", len(b)) + b


def longstr(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack(">I", len(b)) + b


def fv(tag: str, value) -> bytes:
    """One field value with an explicit type tag (RabbitMQ's tags, see rabbit_binary_parser)."""
    t = tag.encode()
    if tag in "tbB":
        return t + struct.pack({"t": ">B", "b": ">b", "B": ">B"}[tag], int(value))
    if tag in "su":
        return t + struct.pack(">h" if tag == "s" else ">H", value)
    if tag in "Ii":
        return t + struct.pack(">i" if tag == "I" else ">I", value)
    if tag == "l":
        return t + struct.pack(">q", value)
    if tag == "f":
        return t + struct.pack(">f", value)
    if tag == "d":
        return t + struct.pack(">d", value)
    if tag == "D":
        scale, unscaled = value
        return t + struct.pack(">Bi", scale, unscaled)
    if tag in "Sx":
        return t + longstr(value)
    if tag == "T":
        return t + struct.pack(">Q", value)
    if tag == "V":
        return t
    if tag == "A":                       # value: list of already-encoded field values
        body = b"".join(value)
        return t + struct.pack(">I", len(body)) + body
    if tag == "F":                       # value: list of (name, encoded field value)
        return t + table(value)
    raise ValueError(tag)


def table(items) -> bytes:
    body = b"".join(shortstr(k) + v for k, v in items)
    return struct.pack(">I", len(body)) + body


def basic_properties_payload(body_size: int, props: dict) -> bytes:
    """A content-header payload for class basic with the given raw-encoded properties.
    props maps property name -> already-encoded bytes."""
    order = ["content_type", "content_encoding", "headers", "delivery_mode", "priority",
             "correlation_id", "reply_to", "expiration", "message_id", "timestamp", "type",
             "user_id", "app_id", "cluster_id"]
    flags, parts = 0, []
    for i, name in enumerate(order):
        if name in props:
            flags |= 1 << (15 - i)
            parts.append(props[name])
    assert set(props) <= set(order), set(props) - set(order)
    return struct.pack(">HHQH", 60, 0, body_size, flags) + b"".join(parts)


def raw_frame(ftype: int, channel: int, payload: bytes) -> bytes:
    return struct.pack(">BHI", ftype, channel, len(payload)) + payload + b"\xce"


# -- malformed input (test_malformed.py) ---------------------------------------------------------

def method_frame(channel: int, class_id: int, method_id: int, args: bytes = b"") -> bytes:
    """A method frame from raw ids and raw argument bytes (which may be deliberately wrong)."""
    return raw_frame(1, channel, struct.pack(">HH", class_id, method_id) + args)


def content_header_frame(channel: int, body_size: int, class_id: int = 60, weight: int = 0,
                         properties: bytes = b"\x00\x00") -> bytes:
    """A content-header frame; `properties` is the raw flags word plus property list."""
    return raw_frame(2, channel, struct.pack(">HHQ", class_id, weight, body_size) + properties)


def publish_frame(channel: int, routing_key: str, exchange: str = "") -> bytes:
    """basic.publish (mandatory and immediate off) as raw bytes."""
    return method_frame(channel, 60, 40, struct.pack(">H", 0) + shortstr(exchange)
                        + shortstr(routing_key) + b"\x00")


def expect_connection_close(r: RawAMQP, timeout: float = 5.0):
    """The next method (heartbeats skipped) must be connection.close on channel 0; returns it."""
    f = r.recv_method(timeout)
    assert f.channel_number == 0 and isinstance(f.method, spec.Connection.Close), \
        f"expected connection.close on channel 0, got {f!r}"
    return f.method


def answer_close_and_wait_eof(r: RawAMQP, timeout: float = 5.0) -> float:
    """Answer connection.close with close-ok, then the broker must close the socket within
    `timeout` seconds without sending anything more. Returns the seconds waited."""
    try:
        r.send_method(0, spec.Connection.CloseOk())
    except OSError:
        pass                                   # the broker may have closed already
    waited, rest = r.wait_eof(timeout)
    assert rest == b"", f"bytes after connection.close: {rest!r}"
    return waited


def wait_silent_eof(r: RawAMQP, timeout: float) -> float:
    """The broker must close the socket within `timeout` seconds without sending a byte
    (besides whatever is already buffered, which must be empty). Returns the seconds waited."""
    waited, data = r.wait_eof(timeout)
    assert r.buf == b"" and data == b"", f"expected a silent close, got {r.buf + data!r}"
    return waited
