"""Malformed input, byte by byte: every case gets the reply RabbitMQ 3.10 gives it (exact reply
code, reply text and class/method ids), a clean close, and the broker keeps serving: a client
connection opened before the bad one still publishes and consumes afterwards.

RabbitMQ 3.10 answers bad input in one of five ways, and so must Ferry:

* connection.close with the error, then it waits for close-ok and closes the socket;
* a lost framing (a bad frame-end octet, a frame over frame_max): connection.close, nothing
  more is read, the socket closes ~3 s later;
* an unknown class/method id, or a field table whose contents do not parse: the connection
  process crashes, the socket just closes, nothing is sent;
* before connection.tune-ok (the client is not trusted yet): nothing is sent (except the 403 a
  client with the authentication_failure_close capability asked for) and the socket closes
  ~3 s later (SILENT_CLOSE_DELAY);
* a handshake not finished 10 s after the accept: the socket just closes.

Texts that quote a frame print its payload as Erlang's ~p does (<<"x">> when printable, else
<<0,60,...>>, at most 16 octets, line-broken at 80 columns), or its arguments as ~w
("cannot decode <<0,0,16,97>>").

Cases already covered elsewhere are not repeated here: the common wrong protocol headers, a
method on a never-opened channel, a second channel.open, PLAIN bad password with and without
authentication_failure_close, the vhost text via pika (test_connection.py, test_channels.py).
"""

from __future__ import annotations

import os
import struct
import threading
import time

import pika
import pika.spec as spec
import pytest

from conftest import close_quietly
from harness.expect import wait_for
from harness.rawamqp import (PROTOCOL_HEADER, RawAMQP, answer_close_and_wait_eof,
                             content_header_frame, expect_connection_close, fv, method_frame,
                             publish_frame, raw_frame, shortstr, table, wait_silent_eof)

#: RabbitMQ's SILENT_CLOSE_DELAY is 3 s; allow scheduling slack either way.
SILENT_MIN, SILENT_MAX = 2.0, 5.0
#: basic.qos arguments: prefetch-size 0, prefetch-count 1, global false.
QOS = struct.pack(">IHB", 0, 1, 0)


def w(b: bytes) -> str:
    """Erlang's ~w of a binary: the octets as numbers."""
    return "<<" + ",".join(str(x) for x in b) + ">>"


class Bystander:
    """A client connected before the malformed one; afterwards it must still publish (with a
    confirm) and consume."""

    def __init__(self, broker, queue: str):
        self.conn = pika.BlockingConnection(broker.params())
        self.ch = self.conn.channel()
        self.ch.confirm_delivery()
        self.queue = queue
        self.ch.queue_declare(queue, exclusive=True)

    def still_serves(self) -> None:
        body = os.urandom(16)
        self.ch.basic_publish("", self.queue, body)          # returns once confirmed
        got = []

        def on_message(ch, method, _props, b):
            got.append(b)
            ch.basic_ack(method.delivery_tag)

        tag = self.ch.basic_consume(self.queue, on_message)
        wait_for(self.conn, lambda: got, what="the bystander's delivery")
        self.ch.basic_cancel(tag)
        assert got == [body]


@pytest.fixture
def bystander(broker, uniq):
    b = Bystander(broker, uniq("bystander"))
    yield b
    close_quietly(b.conn)


@pytest.fixture
def raw(broker):
    """raw() -> a RawAMQP client on the session broker (closed after the test)."""
    clients = []

    def make(timeout: float = 5.0) -> RawAMQP:
        r = RawAMQP(broker.host, broker.port, timeout=timeout)
        clients.append(r)
        return r

    yield make
    for r in clients:
        r.close()


def opened(raw, **tune) -> RawAMQP:
    """A raw client after the handshake with channel 1 open."""
    r = raw().handshake(**tune)
    r.open_channel(1)
    return r


def assert_close(r: RawAMQP, code: int, text: str, class_id: int = 0, method_id: int = 0):
    """connection.close with exactly these values, then close-ok and the socket closes."""
    m = expect_connection_close(r)
    assert (m.reply_code, m.reply_text, m.class_id, m.method_id) == \
        (code, text, class_id, method_id), m
    return answer_close_and_wait_eof(r)


def assert_dropped(r: RawAMQP) -> None:
    """The socket closes at once and nothing is sent (RabbitMQ's connection process crashed)."""
    waited = wait_silent_eof(r, 5)
    assert waited < 2, f"closed after {waited:.2f}s"


def assert_silent_refusal(r: RawAMQP, since: float) -> None:
    """Nothing is sent and the socket closes after RabbitMQ's 3 s silent-close delay."""
    wait_silent_eof(r, 8)
    waited = time.monotonic() - since
    assert SILENT_MIN <= waited <= SILENT_MAX, f"closed after {waited:.2f}s"


# -- protocol header ---------------------------------------------------------------------------

@pytest.mark.parametrize("header", [
    b"AMQP\x02\x01\x00\x00",                              # AMQP 1.0, unknown protocol id
    b"AMQP\x01\x01\x00\x0a",                              # old-style 0-10
    b"AMQX\x00\x00\x09\x01",
    b"\x00" * 8,
    bytes.fromhex("16030100a5010000a10303") + bytes(32),  # TLS ClientHello
], ids=["amqp1.0-id2", "0-10-old", "AMQX", "zeros", "tls-hello"])
def test_wrong_protocol_header_gets_0_9_1_header_then_close(broker, raw, bystander, header):
    r = raw()
    r.send(header)
    waited, data = r.wait_eof(5)
    assert data == PROTOCOL_HEADER
    assert waited < 2
    bystander.still_serves()


def test_0_9_header_is_taken_as_0_9_1(raw, bystander):
    r = raw()
    r.send(b"AMQP\x01\x01\x00\x09")
    start = r.expect(spec.Connection.Start).method
    assert (start.version_major, start.version_minor) == (0, 9)
    bystander.still_serves()


def test_protocol_header_in_single_bytes_is_fine(raw):
    r = raw()
    for b in PROTOCOL_HEADER:
        r.send(bytes([b]))
        time.sleep(0.02)
    r.expect(spec.Connection.Start)


# -- framing -----------------------------------------------------------------------------------

@pytest.mark.parametrize("frame_type,channel,payload,text", [
    (9, 1, b"x", 'type 9, all octets = <<"x">>: unknown_frame'),
    (0, 0, b"", "type 0, all octets = <<>>: unknown_frame"),
    (4, 1, b'a"b\\c\n\td', 'type 4, all octets = <<"a\\"b\\\\c\\n\\td">>: unknown_frame'),
    (9, 1, bytes(range(30)),
     "type 9, first 16 octets = <<0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15>>: unknown_frame"),
    # ~p breaks long binaries at 80 columns, continuation indented to after the "<<"
    (9, 1, b"\x80" * 17,
     "type 9, first 16 octets = <<" + "128," * 12 + "\n" + " " * 28 + "128,128,128,128>>: "
     "unknown_frame"),
    # a heartbeat with a payload, a method frame shorter than its ids: frames RabbitMQ
    # cannot classify are "unknown" too
    (8, 0, b"abc", 'type 8, all octets = <<"abc">>: unknown_frame'),
    (1, 1, b"\x00\x3c", "type 1, all octets = <<0,60>>: unknown_frame"),
], ids=["type9", "type0-empty", "escapes", "first16", "line-break", "heartbeat-payload",
        "short-method"])
def test_unknown_frame_is_501(raw, bystander, frame_type, channel, payload, text):
    r = opened(raw)
    r.send(raw_frame(frame_type, channel, payload))
    assert_close(r, 501, "FRAME_ERROR - " + text)
    bystander.still_serves()


@pytest.mark.parametrize("frame,text", [
    (method_frame(1, 60, 10, QOS)[:-1] + b"\x00",
     "type 1, all octets = <<0,60,0,10,0,0,0,0,0,1,0>>: {invalid_frame_end_marker,0}"),
    # 16 octets of a longer payload; the error term no longer fits on the line either
    (method_frame(1, 50, 10, b"\x00\x00" + shortstr("a-long-queue-name") + b"\x00"
                  + table([]))[:-1] + b"\x01",
     "type 1, first 16 octets = <<0,50,0,10,0,0,17,97,45,108,111,110,103,45,113,117>>: "
     "{invalid_frame_end_marker,\n" + " " * 82 + "1}"),
], ids=["short", "long"])
def test_bad_frame_end_is_fatal_501(raw, bystander, frame, text):
    """The framing is lost: connection.close, nothing more is read (a channel.open sent after
    it is not answered) and the socket closes ~3 s later."""
    r = opened(raw)
    r.send(frame)
    m = expect_connection_close(r)
    assert (m.reply_code, m.reply_text, m.class_id, m.method_id) == \
        (501, "FRAME_ERROR - " + text, 0, 0)
    r.send_method(2, spec.Channel.Open())
    waited = answer_close_and_wait_eof(r)
    assert SILENT_MIN <= waited <= SILENT_MAX, f"closed after {waited:.2f}s"
    bystander.still_serves()


@pytest.mark.parametrize("frame_max,header,text", [
    (4096, struct.pack(">BHI", 3, 1, 10000),
     "type 3, all octets = <<>>: {frame_too_large,10000,4088}"),
    (4096, struct.pack(">BHI", 1, 1, 4097),
     "type 1, all octets = <<>>: {frame_too_large,4097,4088}"),
    (None, struct.pack(">BHI", 9, 0, 0xFFFFFFFF),
     "type 9, all octets = <<>>: {frame_too_large,4294967295,131064}"),
], ids=["body", "method", "default-frame-max-unknown-type"])
def test_frame_over_frame_max_is_refused_from_its_header(raw, bystander, frame_max, header, text):
    """Only the 7-byte frame header is sent: the close must come without the payload."""
    r = opened(raw, frame_max=frame_max)
    r.send(header)
    m = expect_connection_close(r)
    assert (m.reply_code, m.reply_text, m.class_id, m.method_id) == \
        (501, "FRAME_ERROR - " + text, 0, 0)
    waited = answer_close_and_wait_eof(r)
    assert waited <= SILENT_MAX
    bystander.still_serves()


def test_frame_payload_of_exactly_frame_max_is_accepted(raw, uniq):
    """RabbitMQ's FRAME_SIZE_FUDGE: the limit is on the payload, not the whole frame."""
    q, body = uniq(), os.urandom(4096)
    r = opened(raw, frame_max=4096)
    r.send_method(1, spec.Queue.Declare(queue=q, exclusive=True))
    r.expect(spec.Queue.DeclareOk)
    r.send(publish_frame(1, q) + content_header_frame(1, len(body)) + raw_frame(3, 1, body))
    r.send_method(1, spec.Basic.Get(queue=q, no_ack=True))
    r.expect(spec.Basic.GetOk)
    r.recv_frame()                                           # content header
    got = b""
    while len(got) < len(body):
        got += r.recv_frame().fragment
    assert got == body


@pytest.mark.parametrize("channel_open", [True, False], ids=["open-channel", "never-opened"])
def test_heartbeat_on_a_nonzero_channel_is_505(raw, bystander, channel_open):
    r = opened(raw) if channel_open else raw().handshake()
    r.send(raw_frame(8, 1 if channel_open else 7, b""))
    assert_close(r, 505, "UNEXPECTED_FRAME - type 8, all octets = <<>>")
    bystander.still_serves()


# -- channels ----------------------------------------------------------------------------------

@pytest.mark.parametrize("frame", [
    content_header_frame(4, 4),
    raw_frame(3, 4, b"body"),
], ids=["content-header", "body"])
def test_content_frame_on_a_never_opened_channel_is_505(raw, bystander, frame):
    r = raw().handshake()
    r.send(frame)
    assert_close(r, 505, "UNEXPECTED_FRAME - expected method frame, got non method frame instead")
    bystander.still_serves()


def test_channel_numbers_above_channel_max_are_fine_while_few_are_open(raw, bystander):
    """RabbitMQ limits how many channels are open, not their numbers."""
    r = raw().handshake(channel_max=3)
    assert r.tune.channel_max == 2047
    for ch in (5, 65535):
        r.open_channel(ch)
        r.send_method(ch, spec.Basic.Qos(prefetch_count=1))
        assert r.expect(spec.Basic.QosOk).channel_number == ch
    bystander.still_serves()


@pytest.mark.parametrize("method", [spec.Channel.Open(), spec.Basic.Qos(prefetch_count=1)],
                         ids=["channel.open", "basic.qos"])
def test_more_open_channels_than_channel_max_is_530(raw, bystander, method):
    """Any frame on a new channel counts, not only channel.open."""
    r = raw().handshake(channel_max=3)
    for ch in (1, 2, 700):
        r.open_channel(ch)
    r.send_method(4, method)
    assert_close(r, 530, "NOT_ALLOWED - number of channels opened (3) has reached the "
                         "negotiated channel_max (3)")
    bystander.still_serves()


# -- content -----------------------------------------------------------------------------------

def test_content_header_without_a_method_is_505(raw, bystander):
    r = opened(raw)
    r.send(content_header_frame(1, 4))
    assert_close(r, 505, "UNEXPECTED_FRAME - expected method frame, got non method frame instead")
    bystander.still_serves()


def test_body_without_a_method_is_505(raw, bystander):
    r = opened(raw)
    r.send(raw_frame(3, 1, b"body"))
    assert_close(r, 505, "UNEXPECTED_FRAME - expected method frame, got non method frame instead")
    bystander.still_serves()


def test_body_after_publish_without_a_header_is_505(raw, bystander):
    r = opened(raw)
    r.send(publish_frame(1, "nowhere") + raw_frame(3, 1, b"body"))
    assert_close(r, 505, "UNEXPECTED_FRAME - expected content header for class 60, got non "
                         "content header frame instead", 60, 40)
    bystander.still_serves()


def test_content_header_of_another_class_is_505(raw, bystander):
    r = opened(raw)
    r.send(publish_frame(1, "nowhere") + content_header_frame(1, 1, class_id=50))
    assert_close(r, 505, "UNEXPECTED_FRAME - expected content header for class 60, got one for "
                         "class 50 instead", 60, 40)
    bystander.still_serves()


def test_more_body_than_declared_never_completes_the_message(broker, raw, bystander, uniq):
    """RabbitMQ counts the remaining body size below zero and waits for it to reach zero: the
    message is never routed, more body frames are swallowed, and the next other frame on the
    channel is 505 naming basic.publish."""
    q = uniq()
    setup = pika.BlockingConnection(broker.params())
    try:
        setup.channel().queue_declare(q)
        r = opened(raw)
        r.send(publish_frame(1, q) + content_header_frame(1, 4) + raw_frame(3, 1, b"0123456789"))
        r.send(raw_frame(3, 1, b"more"))
        with pytest.raises(TimeoutError):
            r.recv_frame(0.5)                                # nothing to say yet
        r.send_method(1, spec.Basic.Qos(prefetch_count=1))
        assert_close(r, 505, "UNEXPECTED_FRAME - expected content body, got non content body "
                             "frame instead", 60, 40)
        ch = setup.channel()
        assert ch.queue_declare(q, passive=True).method.message_count == 0
        ch.queue_delete(q)
    finally:
        close_quietly(setup)
    bystander.still_serves()


@pytest.mark.parametrize("properties", [
    b"\x20\x00" + table([("k", b"Z\x00")]),     # headers table with an unknown type tag
    b"\x80\x00",                                # content-type flagged but absent
    b"\x00\x00zz",                              # bytes after the property list
    b"",                                        # no property flags at all
], ids=["bad-tag", "truncated", "trailing", "no-flags"])
def test_undecodable_properties_are_541_once_the_body_is_in(raw, bystander, properties):
    """RabbitMQ decodes properties only when the message is complete; its channel then fails
    and the connection is closed with a bare INTERNAL_ERROR."""
    r = opened(raw)
    r.send(publish_frame(1, "nowhere") + content_header_frame(1, 1, properties=properties))
    with pytest.raises(TimeoutError):
        r.recv_frame(0.3)                        # the header alone is not refused
    r.send(raw_frame(3, 1, b"x"))
    assert_close(r, 541, "INTERNAL_ERROR")
    bystander.still_serves()


# -- methods -----------------------------------------------------------------------------------

@pytest.mark.parametrize("channel,class_id,method_id", [(1, 999, 10), (1, 60, 999), (0, 10, 99)],
                         ids=["class", "method", "method-on-channel-0"])
def test_unknown_method_ids_drop_the_connection(raw, bystander, channel, class_id, method_id):
    """RabbitMQ's connection process crashes on the lookup: no connection.close, just EOF."""
    r = opened(raw)
    r.send(method_frame(channel, class_id, method_id))
    assert_dropped(r)
    bystander.still_serves()


@pytest.mark.parametrize("class_id,method_id,args", [
    (60, 10, QOS[:-1]),                                    # basic.qos one octet short
    (60, 10, QOS + b"zz"),                                 # ... two octets too many
    (50, 10, b"\x00\x00\x10abc"),                          # queue.declare, short string cut
    (50, 10, b"\x00\x00" + shortstr("q-probe") + b"\x08"   # table length runs past the frame
     + struct.pack(">I", 100) + shortstr("k") + fv("t", 1)),
    (50, 10, b"\x00\x00" + shortstr("q-probe") + b"\x08"   # table shorter than its contents
     + struct.pack(">I", 2) + shortstr("k") + fv("t", 1)),
], ids=["qos-short", "qos-long", "declare-cut", "table-overruns-frame", "table-too-short"])
def test_arguments_not_matching_the_method_are_501(raw, bystander, class_id, method_id, args):
    r = opened(raw)
    r.send(method_frame(1, class_id, method_id, args))
    assert_close(r, 501, "FRAME_ERROR - cannot decode " + w(args), class_id, method_id)
    bystander.still_serves()


@pytest.mark.parametrize("class_id,method_id,head", [
    (50, 10, b"\x00\x00" + shortstr("q-probe") + b"\x00"),                      # queue.declare
    (60, 20, b"\x00\x00" + shortstr("q-probe") + shortstr("") + b"\x00"),       # basic.consume
    (40, 10, b"\x00\x00" + shortstr("x-probe") + shortstr("direct") + b"\x00"),  # exchange.declare
], ids=["queue.declare", "basic.consume", "exchange.declare"])
@pytest.mark.parametrize("tbl", [
    table([("k", b"Z\x00")]),                                  # unknown type tag
    table([("k", b"S" + struct.pack(">I", 50) + b"abc")]),     # value runs past the table
    table([("k", fv("t", 1)), ("x", b"")]),                    # entry cut after its name
], ids=["bad-tag", "value-overrun", "cut-entry"])
def test_unparsable_field_table_drops_the_connection(raw, bystander, class_id, method_id, head,
                                                     tbl):
    """The method's layout is right but its table does not parse: RabbitMQ's table parser
    crashes the connection process, so the socket just closes."""
    r = opened(raw)
    r.send(method_frame(1, class_id, method_id, head + tbl))
    assert_dropped(r)
    bystander.still_serves()


def test_channel_method_on_channel_0_is_504(raw, bystander):
    r = raw().handshake()
    r.send_method(0, spec.Queue.Declare(queue="q-probe"))
    assert_close(r, 504, "CHANNEL_ERROR - unexpected method in connection state running", 50, 10)
    bystander.still_serves()


def test_handshake_method_after_the_handshake_is_504(raw, bystander):
    r = raw().handshake()
    r.send_method(0, spec.Connection.TuneOk(channel_max=10, frame_max=131072, heartbeat=0))
    assert_close(r, 504, "CHANNEL_ERROR - unexpected method in connection state running", 10, 31)
    bystander.still_serves()


@pytest.mark.parametrize("method", [
    spec.Queue.DeclareOk(queue="x", message_count=0, consumer_count=0),
    spec.Channel.OpenOk(),
    spec.Connection.Open(virtual_host="/"),
], ids=["queue.declare-ok", "channel.open-ok", "connection.open-on-channel-1"])
def test_server_method_from_a_client_is_503(raw, bystander, method):
    r = opened(raw)
    r.send_method(1, method)
    assert_close(r, 503, "COMMAND_INVALID - unimplemented method", method.INDEX >> 16,
                 method.INDEX & 0xFFFF)
    bystander.still_serves()


# -- handshake ---------------------------------------------------------------------------------

ACCESS_REFUSED = "ACCESS_REFUSED - Login was refused using authentication mechanism {}. " \
                 "For details see the broker logfile."
CAPS = {"capabilities": {"authentication_failure_close": True}}


def start_ok(r: RawAMQP, mechanism: str, response: bytes, client_properties=None) -> None:
    r.send(PROTOCOL_HEADER)
    r.expect(spec.Connection.Start)
    r.send_method(0, spec.Connection.StartOk(client_properties=client_properties or {},
                                             mechanism=mechanism, response=response,
                                             locale="en_US"))


@pytest.mark.parametrize("mechanism,response", [
    ("PLAIN", b"\0nobody\0guest"),
    ("AMQPLAIN", table([("LOGIN", fv("S", "guest")), ("PASSWORD", fv("S", "wrong"))])[4:]),
], ids=["plain-unknown-user", "amqplain-bad-password"])
def test_bad_credentials_with_failure_close_capability_get_403(raw, bystander, mechanism,
                                                               response):
    """connection.close 403, then the socket closes within RabbitMQ's 3 s delay."""
    r = raw()
    start_ok(r, mechanism, response, CAPS)
    waited = assert_close(r, 403, ACCESS_REFUSED.format(mechanism))
    assert waited <= SILENT_MAX
    bystander.still_serves()


def test_bad_credentials_without_the_capability_close_silently_after_3s(raw, bystander):
    r = raw()
    start_ok(r, "PLAIN", b"\0guest\0wrong")
    assert_silent_refusal(r, time.monotonic())
    bystander.still_serves()


def _before_tune_ok(r: RawAMQP) -> None:
    start_ok(r, "PLAIN", b"\0guest\0guest")
    r.expect(spec.Connection.Tune)


def _tune_ok(channel_max, frame_max):
    return pika.frame.Method(0, spec.Connection.TuneOk(channel_max=channel_max,
                                                       frame_max=frame_max, heartbeat=0)).marshal()


@pytest.mark.parametrize("setup,data", [
    # authentication problems other than bad credentials: silent even with the capability
    (lambda r: start_ok(r, "CRAM-MD5", b"x", CAPS), b""),
    (lambda r: start_ok(r, "PLAIN", b"guestguest", CAPS), b""),
    (lambda r: start_ok(r, "AMQPLAIN", b"\x05LOGIN\x5a", CAPS), b""),
    # protocol violations before tune-ok
    (lambda r: (r.send(PROTOCOL_HEADER), r.expect(spec.Connection.Start)),
     pika.frame.Method(0, spec.Connection.Open(virtual_host="/")).marshal()),
    (lambda r: (r.send(PROTOCOL_HEADER), r.expect(spec.Connection.Start)),
     raw_frame(9, 0, b"x")),
    (lambda r: (r.send(PROTOCOL_HEADER), r.expect(spec.Connection.Start)),
     method_frame(0, 10, 11, b"\x00\x00")),                # truncated start-ok
    (_before_tune_ok, pika.frame.Method(1, spec.Channel.Open()).marshal()),
    # tune-ok values outside RabbitMQ's limits (0 = "no limit" is above any limit)
    (_before_tune_ok, _tune_ok(0, 131072)),
    (_before_tune_ok, _tune_ok(4000, 131072)),
    (_before_tune_ok, _tune_ok(10, 100)),
    (_before_tune_ok, _tune_ok(10, 0)),
    (_before_tune_ok, _tune_ok(10, 1 << 20)),
], ids=["unknown-mechanism", "plain-without-nuls", "amqplain-garbage", "open-before-start-ok",
        "bad-frame-before-start-ok", "truncated-start-ok", "channel-frame-before-tune-ok",
        "tune-channel-max-0", "tune-channel-max-too-big", "tune-frame-max-too-small",
        "tune-frame-max-0", "tune-frame-max-too-big"])
def test_bad_input_before_tune_ok_closes_silently_after_3s(raw, bystander, setup, data):
    r = raw()
    setup(r)
    r.send(data)
    assert_silent_refusal(r, time.monotonic())
    bystander.still_serves()


def test_unknown_vhost_is_530_naming_connection_open(raw, bystander):
    r = raw().handshake(vhost="no-such-vhost", open_connection=False)
    r.send_method(0, spec.Connection.Open(virtual_host="no-such-vhost"))
    assert_close(r, 530, "NOT_ALLOWED - vhost no-such-vhost not found", 10, 40)
    bystander.still_serves()


def test_frame_on_a_channel_before_connection_open_is_505(raw, bystander):
    r = raw().handshake(open_connection=False)
    r.send_method(1, spec.Channel.Open())
    assert_close(r, 505, "UNEXPECTED_FRAME - type 1, all octets = <<0,20,0,10,0>>")
    bystander.still_serves()


def test_wrong_method_after_tune_ok_is_504(raw, bystander):
    r = raw().handshake(open_connection=False)
    r.send_method(0, spec.Connection.TuneOk(channel_max=10, frame_max=131072, heartbeat=0))
    assert_close(r, 504, "CHANNEL_ERROR - unexpected method in connection state opening", 10, 31)
    bystander.still_serves()


# -- clients that go silent --------------------------------------------------------------------

@pytest.mark.slow
def test_handshake_timeout_closes_silently_after_10s(broker, bystander):
    """RabbitMQ's handshake_timeout: 10 s from the accept to connection.open, however far the
    client got; the socket just closes. The variants run side by side."""
    variants = {
        "nothing sent": lambda r: None,
        "protocol header only": lambda r: (r.send(PROTOCOL_HEADER),
                                           r.expect(spec.Connection.Start)),
        # a bad header is answered only once 8 bytes are in
        "7 bytes of a bad header": lambda r: r.send(b"GET /\r\n"),
        "start-ok sent": lambda r: (start_ok(r, "PLAIN", b"\0guest\0guest"),
                                    r.expect(spec.Connection.Tune)),
        "tune-ok (heartbeat 0), no open": lambda r: r.handshake(heartbeat=0,
                                                                open_connection=False),
    }
    results: dict = {}

    def run(name, setup):
        r = RawAMQP(broker.host, broker.port)
        t0 = time.monotonic()
        try:
            setup(r)
            waited, data = r.wait_eof(20)
            results[name] = (time.monotonic() - t0, r.buf + data)
        except Exception as e:                     # reported below
            results[name] = e
        finally:
            r.close()

    threads = [threading.Thread(target=run, args=item) for item in variants.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for name in variants:
        res = results.get(name)
        assert isinstance(res, tuple), f"{name}: {res!r}"
        elapsed, data = res
        assert data == b"", f"{name}: sent {data!r}"
        assert 9.0 <= elapsed <= 13.0, f"{name}: closed after {elapsed:.2f}s"
    bystander.still_serves()


@pytest.mark.slow
@pytest.mark.parametrize("partial", [
    struct.pack(">BHI", 1, 1, 20) + b"\x00\x3c",   # frame header and 2 of 20 payload octets
    b"\x01\x00",                                    # 2 octets of a frame header
], ids=["half-payload", "half-header"])
def test_half_a_frame_then_silence_is_dropped_after_missed_heartbeats(raw, bystander, partial):
    """heartbeat=1 negotiated: the broker keeps sending heartbeats, then drops the connection
    after missed heartbeats (RabbitMQ ~3 s), without connection.close."""
    r = opened(raw, heartbeat=1)
    r.send(partial)
    t0 = time.monotonic()
    _, data = r.wait_eof(10)
    waited = time.monotonic() - t0
    heartbeat = b"\x08\x00\x00\x00\x00\x00\x00\xce"
    data = r.buf + data
    assert data == heartbeat * (len(data) // 8) and data, f"only heartbeats expected: {data!r}"
    assert 1.5 <= waited <= 5.0, f"dropped after {waited:.2f}s"
    bystander.still_serves()
