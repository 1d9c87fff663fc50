"""tx.select / tx.commit / tx.rollback: publishes and acks are buffered until commit."""

from __future__ import annotations

import socket

import pytest

from harness.expect import (
    channel_closed,
    counts,
    drain,
    ensure_confirms,
    eventually,
    message_count,
    sync,
)


def test_tx_commit_makes_publishes_visible(conn, uniq):
    q = uniq()
    observer = conn.channel()
    observer.queue_declare(q, exclusive=True)
    ch = conn.channel()
    ch.tx_select()
    ch.basic_publish("", q, b"t1")
    ch.basic_publish("", q, b"t2")
    assert message_count(observer, q) == 0          # nothing before commit
    ch.tx_commit()
    assert message_count(observer, q) == 2
    assert [b for _, _, b in drain(observer, q)] == [b"t1", b"t2"]


def test_tx_rollback_drops_publishes(conn, uniq):
    q = uniq()
    ch = conn.channel()
    ch.queue_declare(q, exclusive=True)
    ch.tx_select()
    ch.basic_publish("", q, b"rolled back 1")
    ch.basic_publish("", q, b"rolled back 2")
    ch.tx_rollback()
    assert message_count(ch, q) == 0
    ch.basic_publish("", q, b"kept")                # the channel stays transactional
    ch.tx_commit()
    assert [b for _, _, b in drain(ch, q)] == [b"kept"]


def test_tx_rollback_undoes_acks(conn, uniq):
    q = uniq()
    observer = conn.channel()
    observer.queue_declare(q, exclusive=True)
    ensure_confirms(observer)
    observer.basic_publish("", q, b"m")
    ch = conn.channel()
    ch.tx_select()
    m = ch.basic_get(q)[0]
    ch.basic_ack(m.delivery_tag)
    ch.tx_rollback()                                # the ack is forgotten: still unacked
    ch.close()                                      # ... so closing the channel requeues it
    assert eventually(lambda: counts(observer, q), (1, 0)) == (1, 0)
    m2, _, body = observer.basic_get(q, auto_ack=True)
    assert (body, m2.redelivered) == (b"m", True)


def test_tx_commit_applies_acks(conn, uniq):
    q = uniq()
    observer = conn.channel()
    observer.queue_declare(q, exclusive=True)
    ensure_confirms(observer)
    observer.basic_publish("", q, b"m")
    ch = conn.channel()
    ch.tx_select()
    m = ch.basic_get(q)[0]
    ch.basic_ack(m.delivery_tag)
    ch.tx_commit()
    ch.basic_recover(requeue=True)                  # would requeue it if the ack had not applied
    ch.close()
    assert message_count(observer, q) == 0
    assert observer.basic_get(q) == (None, None, None)


def test_tx_commit_and_rollback_need_tx_select_406(conn):
    with channel_closed(406, "PRECONDITION_FAILED - channel is not transactional"):
        conn.channel().tx_commit()
    with channel_closed(406, "PRECONDITION_FAILED - channel is not transactional"):
        conn.channel().tx_rollback()
    assert conn.is_open


def test_tx_select_is_idempotent(ch):
    ch.tx_select()
    ch.tx_select()
    ch.tx_commit()
    ch.tx_rollback()


def _drop_socket(c) -> None:
    """Cut the TCP connection under pika: no connection.close is sent."""
    c._impl._transport._sock.shutdown(socket.SHUT_RDWR)


@pytest.mark.parametrize("how", ["channel.close", "connection.close", "socket drop", "channel error"])
def test_close_discards_the_open_transaction(connect, uniq, how):
    """An uncommitted transaction dies with its channel: its publish is never routed, and its
    ack and reject are not applied, so both messages return to the queue, redelivered."""
    observer_conn = connect()
    observer = observer_conn.channel()
    q = uniq()
    observer.queue_declare(q)
    ensure_confirms(observer)
    observer.basic_publish("", q, b"one")
    observer.basic_publish("", q, b"two")
    conn = connect()
    ch = conn.channel()
    ch.tx_select()
    m1 = ch.basic_get(q)[0]
    m2 = ch.basic_get(q)[0]
    ch.basic_ack(m1.delivery_tag)
    ch.basic_reject(m2.delivery_tag, requeue=False)
    ch.basic_publish("", q, b"uncommitted")
    sync(ch)                                        # the broker has read all of it
    assert message_count(observer, q) == 0
    if how == "channel.close":
        ch.close()
    elif how == "connection.close":
        conn.close()
    elif how == "socket drop":
        _drop_socket(conn)
    else:
        with channel_closed(404, f"NOT_FOUND - no queue '{q}-missing' in vhost '/'"):
            ch.queue_declare(f"{q}-missing", passive=True)
    assert eventually(lambda: counts(observer, q), (2, 0)) == (2, 0)
    back = drain(observer, q)
    assert sorted(b for _, _, b in back) == [b"one", b"two"]
    assert all(m.redelivered for m, _, _ in back)
    assert message_count(observer, q) == 0          # "uncommitted" never arrives
    observer.queue_delete(q)
