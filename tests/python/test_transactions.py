"""tx.select / tx.commit / tx.rollback: publishes and acks are buffered until commit."""

from __future__ import annotations

from harness.expect import channel_closed, counts, drain, ensure_confirms, eventually, message_count


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
