"""Acknowledgements: ack / nack / reject / recover, basic.get, delivery tags, redelivery order."""

from __future__ import annotations

from harness.expect import (channel_closed, connection_closed, counts, drain, ensure_confirms, eventually,
                            message_count, sync, wait_for)


def fill(ch, q, n, prefix="m"):
    ensure_confirms(ch)
    for i in range(n):
        ch.basic_publish("", q, f"{prefix}{i}".encode())


def test_basic_get_and_get_empty_with_message_count(ch, uniq):
    q = uniq()
    ch.queue_declare(q, exclusive=True)
    assert ch.basic_get(q) == (None, None, None)                    # basic.get-empty
    fill(ch, q, 3)
    seen = []
    for _ in range(3):
        m, p, body = ch.basic_get(q, auto_ack=True)
        seen.append((body, m.message_count, m.redelivered, m.exchange, m.routing_key))
    # message_count in get-ok = messages still ready AFTER this one
    assert seen == [(b"m0", 2, False, "", q), (b"m1", 1, False, "", q), (b"m2", 0, False, "", q)]
    assert ch.basic_get(q, auto_ack=True) == (None, None, None)


def test_delivery_tags_are_per_channel_and_increase_from_1(conn, uniq):
    q = uniq()
    ch1, ch2 = conn.channel(), conn.channel()
    ch1.queue_declare(q, exclusive=True)
    fill(ch1, q, 4)
    tags1 = [ch1.basic_get(q)[0].delivery_tag for _ in range(2)]
    tags2 = [ch2.basic_get(q)[0].delivery_tag for _ in range(2)]
    assert tags1 == [1, 2] and tags2 == [1, 2]


def test_nack_requeue_returns_message_to_its_original_position(ch, uniq):
    q = uniq()
    ch.queue_declare(q, exclusive=True)
    fill(ch, q, 5)                                                  # m0..m4
    g = [ch.basic_get(q) for _ in range(3)]                         # m0 m1 m2 unacked
    assert [b for _, _, b in g] == [b"m0", b"m1", b"m2"]
    ch.basic_nack(g[1][0].delivery_tag, requeue=True)               # m1 back, ahead of m3
    ch.basic_nack(g[0][0].delivery_tag, requeue=True)               # m0 back, ahead of m1
    ch.basic_ack(g[2][0].delivery_tag)
    got = [(b, m.redelivered, m.message_count) for m, _, b in drain(ch, q)]
    assert got == [(b"m0", True, 3), (b"m1", True, 2), (b"m3", False, 1), (b"m4", False, 0)]


def test_nack_multiple_requeues_all_up_to_tag_in_order(ch, uniq):
    q = uniq()
    ch.queue_declare(q, exclusive=True)
    fill(ch, q, 5)
    g = [ch.basic_get(q) for _ in range(4)]                         # tags 1..4 = m0..m3
    ch.basic_nack(g[2][0].delivery_tag, multiple=True, requeue=True)   # m0 m1 m2 back
    got = [(b, m.redelivered) for m, _, b in drain(ch, q)]
    assert got == [(b"m0", True), (b"m1", True), (b"m2", True), (b"m4", False)]
    ch.basic_ack(0, multiple=True)          # tag 0 + multiple = every outstanding delivery (m3)
    ch.basic_recover(requeue=True)          # would requeue m3 if it were still unacked
    assert ch.basic_get(q) == (None, None, None)


def test_nack_without_requeue_drops(ch, uniq):
    q = uniq()
    ch.queue_declare(q, exclusive=True)
    fill(ch, q, 2)
    m = ch.basic_get(q)[0]
    ch.basic_nack(m.delivery_tag, requeue=False)
    assert [b for _, _, b in drain(ch, q)] == [b"m1"]


def test_reject_without_requeue_drops_and_with_requeue_redelivers(ch, uniq):
    q = uniq()
    ch.queue_declare(q, exclusive=True)
    fill(ch, q, 1)
    m = ch.basic_get(q)[0]
    ch.basic_reject(m.delivery_tag, requeue=False)
    assert message_count(ch, q) == 0
    fill(ch, q, 1, prefix="r")
    m = ch.basic_get(q)[0]
    ch.basic_reject(m.delivery_tag, requeue=True)
    m, _, body = ch.basic_get(q, auto_ack=True)
    assert (body, m.redelivered) == (b"r0", True)


def test_ack_multiple(ch, uniq):
    q = uniq()
    ch.queue_declare(q, exclusive=True)
    fill(ch, q, 4)
    tags = [ch.basic_get(q)[0].delivery_tag for _ in range(4)]
    ch.basic_ack(tags[2], multiple=True)                           # acks 1..3
    ch.basic_nack(tags[3], requeue=True)                           # only 4 left to settle
    assert [b for _, _, b in drain(ch, q)] == [b"m3"]


def test_ack_of_unknown_delivery_tag_is_406(conn, uniq):
    ch = conn.channel()
    ch.basic_ack(99)
    with channel_closed(406, "PRECONDITION_FAILED - unknown delivery tag 99"):
        sync(ch)
    ch = conn.channel()
    ch.basic_nack(7, requeue=True)
    with channel_closed(406, "PRECONDITION_FAILED - unknown delivery tag 7"):
        sync(ch)
    assert conn.is_open


def test_double_ack_is_406(conn, uniq):
    q = uniq()
    ch = conn.channel()
    ch.queue_declare(q, exclusive=True)
    fill(ch, q, 1)
    m = ch.basic_get(q)[0]
    ch.basic_ack(m.delivery_tag)
    ch.basic_ack(m.delivery_tag)
    with channel_closed(406, f"PRECONDITION_FAILED - unknown delivery tag {m.delivery_tag}"):
        sync(ch)


def test_ack_on_another_channel_is_406(conn, uniq):
    q = uniq()
    ch1, ch2 = conn.channel(), conn.channel()
    ch1.queue_declare(q, exclusive=True)
    fill(ch1, q, 1)
    m = ch1.basic_get(q)[0]
    ch2.basic_ack(m.delivery_tag)
    with channel_closed(406, f"PRECONDITION_FAILED - unknown delivery tag {m.delivery_tag}"):
        sync(ch2)
    ch1.basic_ack(m.delivery_tag)
    sync(ch1)


def test_unacked_requeued_when_channel_closes(conn, uniq):
    q = uniq()
    keep = conn.channel()
    keep.queue_declare(q, exclusive=True)
    fill(keep, q, 3)
    ch = conn.channel()
    for _ in range(2):
        ch.basic_get(q)
    assert message_count(keep, q) == 1
    ch.close()
    assert eventually(lambda: message_count(keep, q), 3) == 3
    got = [(b, m.redelivered) for m, _, b in drain(keep, q)]
    assert got == [(b"m0", True), (b"m1", True), (b"m2", False)]


def test_basic_recover_requeue_redelivers_unacked(conn, uniq):
    q = uniq()
    ch = conn.channel()
    ch.queue_declare(q, exclusive=True)
    fill(ch, q, 3)
    got = []
    ch.basic_consume(q, lambda c, m, p, b: got.append((b, m.redelivered, m.delivery_tag)))
    wait_for(conn, lambda: len(got) == 3)
    ch.basic_recover(requeue=True)
    wait_for(conn, lambda: len(got) == 6)
    assert got == [(b"m0", False, 1), (b"m1", False, 2), (b"m2", False, 3),
                   (b"m0", True, 4), (b"m1", True, 5), (b"m2", True, 6)]
    ch.basic_ack(6, multiple=True)
    sync(ch)
    assert counts(ch, q) == (0, 1)


def test_basic_recover_without_requeue_is_not_implemented_540(connect):
    c = connect()
    with connection_closed(540, "NOT_IMPLEMENTED - requeue=false"):
        c.channel().basic_recover(requeue=False)


def test_auto_ack_consumer_never_redelivers(connect, uniq):
    q = uniq()
    owner = connect().channel()
    owner.queue_declare(q)
    fill(owner, q, 3)
    c = connect()
    got = []
    c.channel().basic_consume(q, lambda ch, m, p, b: got.append(b), auto_ack=True)
    wait_for(c, lambda: len(got) == 3)
    c.close()
    assert message_count(owner, q) == 0
    owner.queue_delete(q)
