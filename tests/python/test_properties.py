"""Message properties and bodies: full round trip, field-table types, validation, large bodies."""

from __future__ import annotations

import pytest

import datetime
import decimal
import os
import struct

import pika
import pika.frame
import pika.spec as spec

from harness.expect import channel_closed, ensure_confirms, sync
from harness.rawamqp import (RawAMQP, basic_properties_payload, fv, raw_frame, recv_raw_frame,
                             shortstr, table)

V = "in vhost '/'"

HEADERS = {
    "str": "héllo wörld",
    "int": 42,
    "neg": -7,
    "big": 2 ** 40,
    "true": True,
    "false": False,
    "bytes": b"\x00\x01\xff",
    "decimal": decimal.Decimal("12.345"),
    "timestamp": datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
    "void": None,
    "array": [1, "two", [4, 5], {"six": 6}, True, None, b"\x07"],
    "nested": {"a": {"b": {"c": [1, 2, {"d": "deep"}]}}, "x": b"y"},
    "empty_array": [],
    "empty_table": {},
}


def test_all_basic_properties_round_trip(ch, uniq):
    q = uniq()
    ch.queue_declare(q, exclusive=True)
    ensure_confirms(ch)
    props = pika.BasicProperties(
        content_type="application/json", content_encoding="gzip", headers=HEADERS,
        delivery_mode=2, priority=7, correlation_id="corr-1", reply_to="reply-queue",
        expiration="60000", message_id="mid-1", timestamp=1700000000, type="order.created",
        user_id="guest", app_id="ferry-tests")
    ch.basic_publish("", q, b"{}", props)
    m, p, body = ch.basic_get(q, auto_ack=True)
    assert body == b"{}"
    for name in ("content_type", "content_encoding", "delivery_mode", "priority", "correlation_id",
                 "reply_to", "expiration", "message_id", "timestamp", "type", "user_id", "app_id"):
        assert getattr(p, name) == getattr(props, name), name
    assert p.cluster_id is None
    assert p.headers == HEADERS
    assert isinstance(p.headers["decimal"], decimal.Decimal)


def test_absent_properties_stay_absent(ch, uniq):
    q = uniq()
    ch.queue_declare(q, exclusive=True)
    ensure_confirms(ch)
    ch.basic_publish("", q, b"plain")
    _, p, _ = ch.basic_get(q, auto_ack=True)
    assert all(getattr(p, n) is None for n in (
        "content_type", "content_encoding", "headers", "delivery_mode", "priority", "correlation_id",
        "reply_to", "expiration", "message_id", "timestamp", "type", "user_id", "app_id", "cluster_id"))


def test_content_header_bytes_pass_through_unchanged(broker, uniq):
    """Every field-table type RabbitMQ knows (incl. float/double, int8/16/uint, which pika cannot
    send) in the headers, plus every other property: the consumer must get the producer's
    content-header payload byte for byte."""
    q = uniq()
    headers = table([
        ("bool", fv("t", 1)), ("int8", fv("b", -5)), ("uint8", fv("B", 250)),
        ("int16", fv("s", -300)), ("uint16", fv("u", 65000)), ("int32", fv("I", -70000)),
        ("uint32", fv("i", 4000000000)), ("int64", fv("l", -2 ** 40)), ("float", fv("f", 1.5)),
        ("double", fv("d", -2.25)), ("decimal", fv("D", (2, 12345))), ("longstr", fv("S", "héllo")),
        ("bytes", fv("x", b"\x00\xff")), ("timestamp", fv("T", 1700000000)), ("void", fv("V", None)),
        ("array", fv("A", [fv("I", 1), fv("S", "two"), fv("d", 3.5), fv("F", [("k", fv("t", 0))])])),
        ("table", fv("F", [("inner", fv("A", [])), ("f", fv("f", -0.5))])),
    ])
    props = {
        "content_type": shortstr("text/plain"), "content_encoding": shortstr("utf-8"),
        "headers": headers, "delivery_mode": b"\x01", "priority": b"\x03",
        "correlation_id": shortstr("c-1"), "reply_to": shortstr("r-1"),
        "expiration": shortstr("100000"), "message_id": shortstr("m-1"),
        "timestamp": struct.pack(">Q", 1700000001), "type": shortstr("t"),
        "user_id": shortstr("guest"), "app_id": shortstr("a"),
    }
    body = b"raw body"
    header_payload = basic_properties_payload(len(body), props)
    with RawAMQP(broker.host, broker.port) as r:
        r.open_with_queue(q)
        r.send_method(1, spec.Confirm.Select())
        r.expect(spec.Confirm.SelectOk)
        r.send_method(1, spec.Basic.Publish(exchange="", routing_key=q))
        r.send(raw_frame(2, 1, header_payload) + raw_frame(3, 1, body))
        r.expect(spec.Basic.Ack)
        r.send_method(1, spec.Basic.Get(queue=q, no_ack=True))
        r.expect(spec.Basic.GetOk)
        ftype, chan, payload = recv_raw_frame(r)
        assert (ftype, chan) == (2, 1)
        assert payload == header_payload
        ftype, chan, got_body = recv_raw_frame(r)
        assert (ftype, chan, got_body) == (3, 1, body)


def test_user_id_must_match_authenticated_user_406(conn, uniq):
    q = uniq()
    ch = conn.channel()
    ch.queue_declare(q, exclusive=True)
    ch.basic_publish("", q, b"x", pika.BasicProperties(user_id="bob"))
    with channel_closed(406, "PRECONDITION_FAILED - user_id property set to 'bob' but "
                             "authenticated user was 'guest'"):
        sync(ch)


def test_invalid_expiration_406(conn, uniq):
    q = uniq()
    ch = conn.channel()
    ch.queue_declare(q, exclusive=True)
    ch.basic_publish("", q, b"x", pika.BasicProperties(expiration="soon"))
    with channel_closed(406, "PRECONDITION_FAILED - invalid expiration 'soon': no_integer"):
        sync(ch)
    ch = conn.channel()
    ch.basic_publish("", q, b"x", pika.BasicProperties(expiration="-1"))
    with channel_closed(406, "PRECONDITION_FAILED - invalid expiration '-1': {value_negative,-1}"):
        sync(ch)


def test_expiration_zero_expires_unless_consumed_immediately(ch, uniq):
    q = uniq()
    ch.queue_declare(q, exclusive=True)
    ensure_confirms(ch)
    ch.basic_publish("", q, b"gone", pika.BasicProperties(expiration="0"))
    ch.basic_publish("", q, b"stays", pika.BasicProperties(expiration="600000"))
    m, _, body = ch.basic_get(q, auto_ack=True)
    assert body == b"stays" and m.message_count == 0


def test_empty_body_round_trip(ch, uniq):
    q = uniq()
    ch.queue_declare(q, exclusive=True)
    ensure_confirms(ch)
    ch.basic_publish("", q, b"")
    m, p, body = ch.basic_get(q, auto_ack=True)
    assert body == b"" and m is not None


def test_large_bodies_round_trip(connect, uniq):
    q = uniq()
    c = connect()
    ch = c.channel()
    ch.queue_declare(q, exclusive=True)
    ch.confirm_delivery()
    sizes = [131072 - 8, 131072 - 7, 131072, 3 * 1024 * 1024 + 1, 8 * 1024 * 1024]
    blobs = [os.urandom(n) for n in sizes]
    for b in blobs:
        ch.basic_publish("", q, b)
    for b in blobs:
        _, _, got = ch.basic_get(q, auto_ack=True)
        assert len(got) == len(b) and got == b
    # and through a consumer
    ch.basic_publish("", q, blobs[-1])
    received = []
    ch.basic_consume(q, lambda c_, m, p, body: received.append(body), auto_ack=True)
    while not received:
        c.process_data_events(0.1)
    assert received[0] == blobs[-1]


def test_large_body_with_small_frame_max(connect, uniq):
    q = uniq()
    c = connect(frame_max=4096)
    ch = c.channel()
    ch.queue_declare(q, exclusive=True)
    blob = os.urandom(2 * 1024 * 1024 + 17)
    ensure_confirms(ch)
    ch.basic_publish("", q, blob)
    _, _, got = ch.basic_get(q, auto_ack=True)
    assert got == blob


def test_broker_splits_bodies_at_negotiated_frame_max(broker, uniq):
    """With frame_max 4096 a 10000-byte body must come as body frames of at most 4088 bytes."""
    q, blob = uniq(), os.urandom(10000)
    with RawAMQP(broker.host, broker.port) as r:
        r.handshake(frame_max=4096)
        r.open_channel(1)
        r.send_method(1, spec.Queue.Declare(queue=q, exclusive=True))
        r.expect(spec.Queue.DeclareOk)
        r.send_method(1, spec.Basic.Publish(exchange="", routing_key=q))
        r.send_frame(pika.frame.Header(1, len(blob), spec.BasicProperties()))
        for i in range(0, len(blob), 4088):
            r.send_frame(pika.frame.Body(1, blob[i:i + 4088]))
        r.send_method(1, spec.Basic.Get(queue=q, no_ack=True))
        r.expect(spec.Basic.GetOk)
        ftype, _, _ = recv_raw_frame(r)
        assert ftype == 2
        got, sizes = b"", []
        while len(got) < len(blob):
            ftype, chan, payload = recv_raw_frame(r)
            assert (ftype, chan) == (3, 1)
            sizes.append(len(payload))
            got += payload
        assert got == blob
        assert max(sizes) <= 4088, sizes
        assert sizes == [4088, 4088, 10000 - 2 * 4088]


def test_frame_larger_than_frame_max_is_connection_error_501(broker, uniq):
    q = uniq()
    with RawAMQP(broker.host, broker.port) as r:
        r.handshake(frame_max=4096)
        r.open_channel(1)
        r.send_method(1, spec.Basic.Publish(exchange="", routing_key=q))
        r.send_frame(pika.frame.Header(1, 10000, spec.BasicProperties()))
        r.send_frame(pika.frame.Body(1, b"x" * 10000))           # one 10000-byte frame > 4096
        close = r.expect(spec.Connection.Close).method
        assert close.reply_code == 501, close
        assert close.reply_text.startswith("FRAME_ERROR - "), close.reply_text
