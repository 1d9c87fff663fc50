"""basic.consume / basic.cancel: exclusive consumers, cancel, server-sent cancel (consumer_cancel_notify)."""

from __future__ import annotations

import re

import pika.spec as spec

from harness.expect import channel_closed, counts, ensure_confirms, eventually, wait_for
from harness.rawamqp import RawAMQP

V = "in vhost '/'"


def test_exclusive_consumer_blocks_other_consumers_403(connect, uniq):
    q = uniq()
    c = connect()
    ch = c.channel()
    ch.queue_declare(q, auto_delete=True)
    ch.basic_consume(q, lambda *a: None, exclusive=True)
    with channel_closed(403, f"ACCESS_REFUSED - queue '{q}' {V} in exclusive use"):
        connect().channel().basic_consume(q, lambda *a: None)
    with channel_closed(403, f"ACCESS_REFUSED - queue '{q}' {V} in exclusive use"):
        c.channel().basic_consume(q, lambda *a: None)       # same connection, other channel


def test_exclusive_consume_refused_when_queue_has_consumers_403(connect, uniq):
    q = uniq()
    c = connect()
    ch = c.channel()
    ch.queue_declare(q, auto_delete=True)
    ch.basic_consume(q, lambda *a: None)
    with channel_closed(403, f"ACCESS_REFUSED - queue '{q}' {V} in exclusive use"):
        connect().channel().basic_consume(q, lambda *a: None, exclusive=True)


def test_consume_from_missing_queue_is_404(conn, uniq):
    q = uniq()
    with channel_closed(404, f"NOT_FOUND - no queue '{q}' {V}"):
        conn.channel().basic_consume(q, lambda *a: None)


def test_cancel_stops_deliveries_and_keeps_messages(conn, uniq):
    q = uniq()
    ch = conn.channel()
    ch.queue_declare(q, exclusive=True)
    got = []
    tag = ch.basic_consume(q, lambda c, m, p, b: got.append(b), auto_ack=True)
    ch.basic_publish("", q, b"before")
    wait_for(conn, lambda: got == [b"before"])
    assert counts(ch, q) == (0, 1)
    ch.basic_cancel(tag)
    assert counts(ch, q) == (0, 0)
    ensure_confirms(ch)
    ch.basic_publish("", q, b"after")
    conn.process_data_events(0.2)
    assert got == [b"before"]
    assert counts(ch, q) == (1, 0)


def test_server_sends_basic_cancel_when_queue_is_deleted(connect, uniq):
    q = uniq()
    c = connect()
    ch = c.channel()
    ch.queue_declare(q)
    cancelled = []
    ch.add_on_cancel_callback(lambda frame: cancelled.append(frame.method))
    tag = ch.basic_consume(q, lambda *a: None)
    connect().channel().queue_delete(q)                  # deleted by somebody else
    wait_for(c, lambda: cancelled, what="server-sent basic.cancel")
    assert isinstance(cancelled[0], spec.Basic.Cancel)
    assert cancelled[0].consumer_tag == tag
    assert ch.consumer_tags == []
    assert ch.is_open and c.is_open                      # the channel survives


def test_server_named_consumer_tag_and_cancel_of_unknown_tag(broker, uniq):
    q = uniq()
    with RawAMQP(broker.host, broker.port) as r:
        r.open_with_queue(q)
        r.send_method(1, spec.Basic.Consume(queue=q, consumer_tag=""))
        tag = r.expect(spec.Basic.ConsumeOk).method.consumer_tag
        assert re.fullmatch(r"amq\.ctag-[A-Za-z0-9_-]{22}", tag), tag
        r.send_method(1, spec.Basic.Cancel(consumer_tag="no-such-tag"))
        assert r.expect(spec.Basic.CancelOk).method.consumer_tag == "no-such-tag"
        r.send_method(1, spec.Basic.Cancel(consumer_tag=tag))
        assert r.expect(spec.Basic.CancelOk).method.consumer_tag == tag


def test_reusing_a_consumer_tag_on_a_channel_is_530(broker, uniq):
    q = uniq()
    with RawAMQP(broker.host, broker.port) as r:
        r.open_with_queue(q)
        r.send_method(1, spec.Basic.Consume(queue=q, consumer_tag="tag-1"))
        r.expect(spec.Basic.ConsumeOk)
        r.send_method(1, spec.Basic.Consume(queue=q, consumer_tag="tag-1"))
        close = r.expect(spec.Connection.Close).method
        assert (close.reply_code, close.reply_text, close.class_id, close.method_id) == \
            (530, "NOT_ALLOWED - attempt to reuse consumer tag 'tag-1'", 60, 20)


def test_consumer_count_follows_connection_close(connect, uniq):
    q = uniq()
    owner = connect().channel()
    owner.queue_declare(q, auto_delete=False)
    c = connect()
    c.channel().basic_consume(q, lambda *a: None)
    c.channel().basic_consume(q, lambda *a: None)
    assert counts(owner, q) == (0, 2)
    c.close()
    assert eventually(lambda: counts(owner, q), (0, 0)) == (0, 0)
    owner.queue_delete(q)
