"""Durability across broker restarts (clean SIGTERM restart and SIGKILL crash).

Durable queues + persistent (delivery_mode=2) messages + durable exchanges and bindings survive;
transient messages, non-durable queues and exchanges do not. Each test has its own broker.
"""

from __future__ import annotations

import time

import pika
import pytest

from harness.expect import channel_closed, drain

pytestmark = pytest.mark.restart

V = "in vhost '/'"


def open_ch(b):
    c = pika.BlockingConnection(b.params())
    return c, c.channel()


def setup_topology(ch):
    ch.exchange_declare("d.topic", "topic", durable=True)
    ch.exchange_declare("d.fanout", "fanout", durable=True)
    ch.exchange_declare("t.direct", "direct", durable=False)
    ch.queue_declare("d.q", durable=True)
    ch.queue_declare("d.q2", durable=True)
    ch.queue_declare("t.q", durable=False)
    ch.queue_bind("d.q", "d.topic", "orders.#")
    ch.queue_bind("d.q2", "d.topic", "orders.*", arguments={"x-extra": "kept"})
    ch.exchange_bind("d.topic", "d.fanout")                     # durable e2e binding
    ch.queue_bind("t.q", "d.topic", "orders.#")                 # dies with t.q


def publish_mixed(ch):
    ch.confirm_delivery()
    for i in range(5):
        ch.basic_publish("", "d.q", f"persistent {i}".encode(),
                         pika.BasicProperties(delivery_mode=2, message_id=f"p{i}",
                                              headers={"i": i, "nested": {"ok": True}},
                                              content_type="text/plain"))
        ch.basic_publish("", "d.q", f"transient {i}".encode(), pika.BasicProperties(delivery_mode=1))
        ch.basic_publish("", "d.q", f"no mode {i}".encode())
        ch.basic_publish("", "t.q", f"persistent in transient queue {i}".encode(),
                         pika.BasicProperties(delivery_mode=2))


def publish_routed(b, ch, exchange: str, key: str, body: bytes, timeout: float = 15.0) -> None:
    """A mandatory publish on a confirming channel. RabbitMQ 3.10.8 was seen (once in CI,
    after kill -9) returning a publish through an exchange-to-exchange binding as unroutable
    right after its restart: it is retried there until routed, as a client would. Ferry
    recovers every binding before FERRY_READY: one try decides."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            ch.basic_publish(exchange, key, body, mandatory=True)
            return
        except pika.exceptions.UnroutableError:
            if b.kind != "rabbitmq" or time.monotonic() > deadline:
                raise
        time.sleep(0.1)  # polling interval, not a settle delay


def check_after_restart(b):
    b.await_queue("d.q")      # before the declare below, which would create a missing queue
    c, ch = open_ch(b)
    try:
        ok = ch.queue_declare("d.q", durable=True).method             # same flags: no 406
        assert ok.message_count == 5
        got = drain(ch, "d.q")
        assert [body for _, _, body in got] == [f"persistent {i}".encode() for i in range(5)]
        for i, (m, p, _) in enumerate(got):
            assert (p.delivery_mode, p.message_id, p.headers, p.content_type) == \
                (2, f"p{i}", {"i": i, "nested": {"ok": True}}, "text/plain")
        with channel_closed(406, "PRECONDITION_FAILED - inequivalent arg 'durable' for queue 'd.q' "
                                 "in vhost '/': received 'false' but current is 'true'"):
            ch.queue_declare("d.q", durable=False)
        ch = c.channel()
        with channel_closed(404, f"NOT_FOUND - no queue 't.q' {V}"):
            ch.queue_declare("t.q", passive=True)
        ch = c.channel()
        with channel_closed(404, f"NOT_FOUND - no exchange 't.direct' {V}"):
            ch.exchange_declare("t.direct", passive=True)
        ch = c.channel()
        with channel_closed(406, "PRECONDITION_FAILED - inequivalent arg 'type' for exchange "
                                 "'d.topic' in vhost '/': received 'direct' but current is 'topic'"):
            ch.exchange_declare("d.topic", "direct", durable=True)
        ch = c.channel()
        ch.exchange_declare("d.fanout", "fanout", durable=True)
        # bindings survived: queue binding, binding with arguments, exchange-to-exchange binding
        ch.confirm_delivery()
        ch.basic_publish("d.topic", "orders.new", b"via topic")
        publish_routed(b, ch, "d.fanout", "orders.eu.new", b"via e2e")
        assert [x for _, _, x in drain(ch, "d.q")] == [b"via topic", b"via e2e"]
        assert [x for _, _, x in drain(ch, "d.q2")] == [b"via topic"]
    finally:
        c.close()


def test_durable_state_survives_clean_restart(restartable_broker):
    b = restartable_broker
    c, ch = open_ch(b)
    setup_topology(ch)
    publish_mixed(ch)
    c.close()
    assert b.restart() == 0
    check_after_restart(b)


def test_persistent_confirmed_messages_survive_kill9(restartable_broker):
    b = restartable_broker
    c, ch = open_ch(b)
    setup_topology(ch)
    publish_mixed(ch)                       # confirmed: must be on disk
    b.definitions_on_disk()
    b.kill9()
    b.start()
    check_after_restart(b)


def test_acked_messages_stay_acked_and_unacked_come_back_redelivered(restartable_broker):
    b = restartable_broker
    c, ch = open_ch(b)
    ch.queue_declare("work", durable=True)
    ch.confirm_delivery()
    for i in range(4):
        ch.basic_publish("", "work", f"job {i}".encode(), pika.BasicProperties(delivery_mode=2))
    held = ch.basic_get("work")[0]                                   # job 0: unacked at shutdown
    done = ch.basic_get("work")[0]                                   # job 1: acked
    ch.basic_ack(done.delivery_tag)
    ch.basic_qos(prefetch_count=0)                                   # round trip: ack processed
    assert held.delivery_tag == 1
    assert b.restart() == 0                                          # connection still open
    c2, ch2 = open_ch(b)
    got = [(body, m.redelivered) for m, _, body in drain(ch2, "work")]
    assert got == [(b"job 0", True), (b"job 2", False), (b"job 3", False)]
    c2.close()


def test_purged_and_deleted_state_stays_gone_after_restart(restartable_broker):
    b = restartable_broker
    c, ch = open_ch(b)
    ch.queue_declare("purged", durable=True)
    ch.queue_declare("deleted", durable=True)
    ch.exchange_declare("deleted.x", "fanout", durable=True)
    ch.queue_bind("purged", "amq.fanout")
    ch.confirm_delivery()
    for q in ("purged", "deleted"):
        ch.basic_publish("", q, b"x", pika.BasicProperties(delivery_mode=2))
    assert ch.queue_purge("purged").method.message_count == 1
    ch.queue_unbind("purged", "amq.fanout")
    ch.queue_delete("deleted")
    ch.exchange_delete("deleted.x")
    c.close()
    assert b.restart() == 0
    c, ch = open_ch(b)
    assert ch.queue_declare("purged", passive=True).method.message_count == 0
    ch.basic_publish("amq.fanout", "", b"unbound")
    assert ch.queue_declare("purged", passive=True).method.message_count == 0
    with channel_closed(404, f"NOT_FOUND - no queue 'deleted' {V}"):
        ch.queue_declare("deleted", passive=True)
    with channel_closed(404, f"NOT_FOUND - no exchange 'deleted.x' {V}"):
        c.channel().exchange_declare("deleted.x", passive=True)
    c.close()


def test_restart_twice_is_stable(restartable_broker):
    b = restartable_broker
    c, ch = open_ch(b)
    ch.queue_declare("twice", durable=True)
    ch.confirm_delivery()
    ch.basic_publish("", "twice", b"1", pika.BasicProperties(delivery_mode=2))
    c.close()
    assert b.restart() == 0
    c, ch = open_ch(b)
    ch.confirm_delivery()
    ch.basic_publish("", "twice", b"2", pika.BasicProperties(delivery_mode=2))
    c.close()
    assert b.restart() == 0
    c, ch = open_ch(b)
    assert [x for _, _, x in drain(ch, "twice")] == [b"1", b"2"]
    c.close()
