"""queue.declare / purge / delete semantics and their errors; exclusive and auto-delete queues."""

from __future__ import annotations

import re

import pytest

from harness.expect import bodies, channel_closed, counts, ensure_confirms, eventually, message_count

V = "in vhost '/'"
LOCKED = ("RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{q}' in vhost '/'. "
          "It could be originally declared on another connection or the exclusive property value "
          "does not match that of the original declaration.")


def test_server_named_exclusive_queue_is_amq_gen(ch):
    ok = ch.queue_declare("", exclusive=True).method
    assert re.fullmatch(r"amq\.gen-[A-Za-z0-9_-]{22}", ok.queue), ok.queue
    assert (ok.message_count, ok.consumer_count) == (0, 0)
    other = ch.queue_declare("", exclusive=True).method.queue
    assert other != ok.queue
    ensure_confirms(ch)
    ch.basic_publish("", ok.queue, b"x")
    assert message_count(ch, ok.queue) == 1


def test_declare_ok_reports_message_and_consumer_counts(connect, uniq):
    q = uniq()
    c = connect()
    ch = c.channel()
    ok = ch.queue_declare(q, auto_delete=False).method
    assert (ok.queue, ok.message_count, ok.consumer_count) == (q, 0, 0)
    ch.confirm_delivery()
    for i in range(3):
        ch.basic_publish("", q, str(i).encode())
    ok = ch.queue_declare(q).method                                   # non-passive redeclare
    assert (ok.message_count, ok.consumer_count) == (3, 0)
    c2 = connect()
    c2.channel().basic_consume(q, lambda *a: None)                   # takes all 3 (unacked)
    c2.channel().basic_consume(q, lambda *a: None)
    # message_count counts ready messages only: the 3 are now delivered-unacked
    assert eventually(lambda: counts(ch, q), (0, 2)) == (0, 2)
    c2.close()
    assert eventually(lambda: counts(ch, q), (3, 0)) == (3, 0)
    assert ch.queue_delete(q).method.message_count == 3


def test_passive_declare_of_missing_queue_is_404_channel_close(conn, uniq):
    q = uniq()
    ch = conn.channel()
    with channel_closed(404, f"NOT_FOUND - no queue '{q}' {V}"):
        ch.queue_declare(q, passive=True)
    assert ch.is_closed and conn.is_open
    conn.channel().queue_declare(q, exclusive=True)                  # connection still usable


@pytest.mark.parametrize("first,second,text", [
    (dict(), dict(durable=True),
     "inequivalent arg 'durable' for queue '{q}' in vhost '/': received 'true' but current is 'false'"),
    (dict(durable=True), dict(),
     "inequivalent arg 'durable' for queue '{q}' in vhost '/': received 'false' but current is 'true'"),
    (dict(), dict(auto_delete=True),
     "inequivalent arg 'auto_delete' for queue '{q}' in vhost '/': received 'true' but current is 'false'"),
    (dict(), dict(arguments={"x-max-length": 10}),
     "inequivalent arg 'x-max-length' for queue '{q}' in vhost '/': received the value '10' of type "
     "'signedint' but current is none"),
    (dict(arguments={"x-max-length": 10}), dict(arguments={"x-max-length": 11}),
     "inequivalent arg 'x-max-length' for queue '{q}' in vhost '/': received '11' but current is '10'"),
    (dict(arguments={"x-message-ttl": 1000}), dict(),
     "inequivalent arg 'x-message-ttl' for queue '{q}' in vhost '/': received none but current is "
     "the value '1000' of type 'signedint'"),
], ids=["durable-false-then-true", "durable-true-then-false", "auto_delete", "args-added",
        "args-changed", "args-removed"])
def test_redeclare_queue_with_different_properties_is_406(conn, uniq, first, second, text):
    q = uniq()
    ch = conn.channel()
    ch.queue_declare(q, **first)
    ch.queue_declare(q, **first)                                     # equivalent: fine
    with channel_closed(406, "PRECONDITION_FAILED - " + text.format(q=q)):
        ch.queue_declare(q, **second)
    ch = conn.channel()
    ch.queue_declare(q, passive=True, durable=not first.get("durable", False))  # passive: no check
    ch.queue_delete(q)


def test_long_reply_text_is_cut_to_255_bytes(conn):
    """reply-text is a shortstr: texts over 255 bytes are cut to 252 bytes + '...'."""
    q = "q" * 240
    with pytest.raises(Exception) as ei:
        conn.channel().queue_declare(q, passive=True)
    text = ei.value.reply_text
    assert ei.value.reply_code == 404
    assert len(text.encode()) == 255
    assert text == (f"NOT_FOUND - no queue '{q}' {V}".encode()[:252] + b"...").decode()


def test_queue_names_starting_with_amq_are_reserved(conn, uniq):
    name = "amq." + uniq()
    with channel_closed(403, f"ACCESS_REFUSED - queue name '{name}' contains reserved prefix 'amq.*'"):
        conn.channel().queue_declare(name)
    with channel_closed(404, f"NOT_FOUND - no queue '{name}' {V}"):
        conn.channel().queue_declare(name, passive=True)


def test_exclusive_queue_is_locked_to_its_connection_405(connect, uniq):
    q = uniq()
    owner = connect()
    och = owner.channel()
    och.queue_declare(q, exclusive=True)
    ensure_confirms(och)
    och.basic_publish("", q, b"from owner")
    other = connect()
    ops = {
        "passive declare": lambda ch: ch.queue_declare(q, passive=True),
        "declare": lambda ch: ch.queue_declare(q, exclusive=True),
        "consume": lambda ch: ch.basic_consume(q, lambda *a: None),
        "get": lambda ch: ch.basic_get(q),
        "purge": lambda ch: ch.queue_purge(q),
        "delete": lambda ch: ch.queue_delete(q),
        "bind": lambda ch: ch.queue_bind(q, "amq.fanout"),
    }
    for what, op in ops.items():
        with channel_closed(405, LOCKED.format(q=q)):
            op(other.channel())
    assert other.is_open
    # publishing to it from elsewhere is allowed
    pch = other.channel()
    pch.confirm_delivery()
    pch.basic_publish("", q, b"from other")
    assert message_count(och, q) == 2
    # and the same connection may not redeclare it as non-exclusive either
    with channel_closed(405, LOCKED.format(q=q)):
        owner.channel().queue_declare(q)


def test_exclusive_queue_deleted_when_its_connection_closes(connect, uniq):
    q = uniq()
    owner = connect()
    owner.channel().queue_declare(q, exclusive=True)
    owner.close()
    with channel_closed(404, f"NOT_FOUND - no queue '{q}' {V}"):
        connect().channel().queue_declare(q, passive=True)


def test_auto_delete_queue_deleted_after_last_consumer_cancels(connect, uniq):
    q = uniq()
    c = connect()
    ch = c.channel()
    ch.queue_declare(q, auto_delete=True)
    assert ch.queue_declare(q, passive=True).method.consumer_count == 0  # never consumed: stays
    t1 = ch.basic_consume(q, lambda *a: None)
    t2 = ch.basic_consume(q, lambda *a: None)
    ch.basic_cancel(t1)
    assert ch.queue_declare(q, passive=True).method.consumer_count == 1
    ch.basic_cancel(t2)
    with channel_closed(404, f"NOT_FOUND - no queue '{q}' {V}"):
        ch.queue_declare(q, passive=True)


def test_queue_purge_returns_count_and_keeps_unacked(connect, uniq):
    q = uniq()
    c = connect()
    ch = c.channel()
    ch.queue_declare(q, exclusive=True)
    ensure_confirms(ch)
    for i in range(7):
        ch.basic_publish("", q, str(i).encode())
    held = ch.basic_get(q)[0]                                        # 1 unacked, 6 ready
    assert ch.queue_purge(q).method.message_count == 6
    assert ch.queue_purge(q).method.message_count == 0
    ch.basic_nack(held.delivery_tag, requeue=True)                  # unacked survives the purge
    # (nack has no reply, and RabbitMQ answers a passive declare ahead of queued work: poll)
    assert eventually(lambda: message_count(ch, q), 1) == 1


def test_queue_purge_of_missing_queue_is_404(conn, uniq):
    q = uniq()
    with channel_closed(404, f"NOT_FOUND - no queue '{q}' {V}"):
        conn.channel().queue_purge(q)


def test_queue_delete_returns_message_count(ch, uniq):
    q = uniq()
    ch.queue_declare(q)
    ensure_confirms(ch)
    for i in range(4):
        ch.basic_publish("", q, b"x")
    assert ch.queue_delete(q).method.message_count == 4
    assert ch.queue_delete(q).method.message_count == 0              # missing queue: ok, 0


def test_queue_delete_if_unused_406(conn, uniq):
    q = uniq()
    ch = conn.channel()
    ch.queue_declare(q)
    tag = ch.basic_consume(q, lambda *a: None)
    with channel_closed(406, f"PRECONDITION_FAILED - queue '{q}' {V} in use"):
        conn.channel().queue_delete(q, if_unused=True)
    ch.basic_cancel(tag)
    assert conn.channel().queue_delete(q, if_unused=True).method.message_count == 0


def test_queue_delete_if_empty_406(conn, uniq):
    q = uniq()
    ch = conn.channel()
    ch.queue_declare(q)
    ensure_confirms(ch)
    ch.basic_publish("", q, b"x")
    with channel_closed(406, f"PRECONDITION_FAILED - queue '{q}' {V} not empty"):
        conn.channel().queue_delete(q, if_empty=True)
    ch = conn.channel()
    ch.queue_purge(q)
    assert ch.queue_delete(q, if_empty=True).method.message_count == 0


def test_queue_bound_to_exchange_also_reachable_by_default_exchange(ch, uniq):
    q = uniq()
    ch.queue_declare(q, exclusive=True)
    ch.queue_bind(q, "amq.direct", "other-key")
    ensure_confirms(ch)
    ch.basic_publish("amq.direct", "other-key", b"1")
    ch.basic_publish("", q, b"2")
    assert message_count(ch, q) == 2


def test_max_length_drops_oldest(ch, uniq):
    q = uniq()
    ch.queue_declare(q, exclusive=True, arguments={"x-max-length": 3})
    ensure_confirms(ch)
    for i in range(5):
        ch.basic_publish("", q, str(i).encode())
    assert bodies(ch, q) == [b"2", b"3", b"4"]
