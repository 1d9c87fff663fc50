"""Work queues (tutorial 2): competing consumers, round robin, prefetch / fair dispatch."""

from __future__ import annotations

import pika

from harness.expect import ensure_confirms, wait_for


def publish_n(ch, queue, n, persistent=False):
    ensure_confirms(ch)
    props = pika.BasicProperties(delivery_mode=2) if persistent else None
    for i in range(n):
        ch.basic_publish("", queue, f"task {i}".encode(), props)


def test_prefetch_1_fair_dispatch_busy_consumer_gets_one(connect, uniq):
    """Two consumers with basic.qos(prefetch_count=1). The slow one holds its first message
    unacked, so every other message must go to the fast one."""
    q = uniq()
    setup = connect().channel()
    setup.queue_declare(q, durable=True)
    conn_slow, conn_fast = connect(), connect()
    ch_slow, ch_fast = conn_slow.channel(), conn_fast.channel()
    slow, fast = [], []

    def on_slow(ch, m, p, body):
        slow.append((m.delivery_tag, body))            # busy: does not ack yet

    def on_fast(ch, m, p, body):
        fast.append(body)
        ch.basic_ack(m.delivery_tag)

    for ch, cb in ((ch_slow, on_slow), (ch_fast, on_fast)):
        ch.basic_qos(prefetch_count=1)
        ch.basic_consume(q, cb)
    assert setup.queue_declare(q, passive=True).method.consumer_count == 2

    n = 20
    setup.confirm_delivery()
    publish_n(setup, q, n, persistent=True)

    def pump():
        conn_slow.process_data_events(0)
        conn_fast.process_data_events(0)
        return len(slow) + len(fast) == n

    wait_for(conn_fast, pump, what="all tasks dispatched")
    assert len(slow) == 1, f"busy consumer got {len(slow)} with prefetch=1"
    assert len(fast) == n - 1
    assert sorted([b for _, b in slow] + fast) == sorted(f"task {i}".encode() for i in range(n))
    ch_slow.basic_ack(slow[0][0])
    conn_slow.process_data_events(0.1)
    info = setup.queue_declare(q, passive=True).method
    assert (info.message_count, info.consumer_count) == (0, 2)
    setup.queue_delete(q)


def test_round_robin_without_prefetch_alternates_exactly(connect, uniq):
    q = uniq()
    setup = connect().channel()
    setup.queue_declare(q, auto_delete=True)
    c1, c2 = connect(), connect()
    got1, got2 = [], []
    c1.channel().basic_consume(q, lambda ch, m, p, b: got1.append(b), auto_ack=True)
    c2.channel().basic_consume(q, lambda ch, m, p, b: got2.append(b), auto_ack=True)
    setup.confirm_delivery()
    publish_n(setup, q, 10)

    def pump():
        c1.process_data_events(0)
        c2.process_data_events(0)
        return len(got1) + len(got2) == 10

    wait_for(c1, pump, what="10 deliveries")
    assert len(got1) == 5 and len(got2) == 5
    # strict alternation: each consumer sees every other message
    both = sorted([(int(b.split()[1]), 1) for b in got1] + [(int(b.split()[1]), 2) for b in got2])
    owners = [o for _, o in both]
    assert all(owners[i] != owners[i + 1] for i in range(9)), owners


def test_prefetch_count_limits_unacked_deliveries(connect, uniq):
    q = uniq()
    c = connect()
    ch = c.channel()
    ch.queue_declare(q, exclusive=True)
    publish_n(ch, q, 10)
    ch.basic_qos(prefetch_count=3)
    got = []
    ch.basic_consume(q, lambda ch_, m, p, b: got.append(m))
    wait_for(c, lambda: len(got) >= 3, what="3 deliveries")
    c.process_data_events(0.3)                         # give it a chance to over-deliver
    assert len(got) == 3
    assert ch.queue_declare(q, passive=True).method.message_count == 7
    ch.basic_ack(got[-1].delivery_tag, multiple=True)  # frees all three slots
    wait_for(c, lambda: len(got) >= 6, what="3 more deliveries")
    c.process_data_events(0.3)
    assert len(got) == 6
    assert [m.delivery_tag for m in got] == [1, 2, 3, 4, 5, 6]


def test_unacked_messages_requeued_when_consumer_connection_closes(connect, uniq):
    q = uniq()
    owner = connect().channel()
    owner.queue_declare(q, auto_delete=False)
    publish_n(owner, q, 3)
    worker = connect()
    got = []
    wch = worker.channel()
    wch.basic_consume(q, lambda ch_, m, p, b: got.append(b))
    wait_for(worker, lambda: len(got) == 3, what="3 deliveries")
    assert owner.queue_declare(q, passive=True).method.message_count == 0
    worker.close()
    # requeued, in the original order, flagged redelivered
    out = []
    while len(out) < 3:
        m, p, b = owner.basic_get(q, auto_ack=True)
        if m is not None:
            out.append((b, m.redelivered))
    assert out == [(b"task 0", True), (b"task 1", True), (b"task 2", True)]
    owner.queue_delete(q)
