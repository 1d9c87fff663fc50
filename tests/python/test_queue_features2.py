"""Queue features from issue 5, second part: priorities (x-max-priority), consumer priorities
(x-priority), single active consumer, queue expiry (x-expires), the delivery limit
(x-delivery-limit with the x-delivery-count header) and x-queue-type checks.

Every expectation is RabbitMQ 3.10's (run with FERRY_ORACLE=1 to check them against it), except
the tests that call `ferry_only`: their docstring says where and why Ferry deliberately differs.
"""

from __future__ import annotations

import time

import pika
import pika.exceptions as px
import pytest

from harness.expect import bodies, channel_closed, drain, ensure_confirms, eventually, sync, wait_for
from harness.queues import deaths, dlx_args, open_ch

V = "in vhost '/'"
PERSISTENT = pika.BasicProperties(delivery_mode=2)
QUORUM = {"x-queue-type": "quorum"}


def ferry_only(broker, why: str) -> None:
    """Skip against the oracle: RabbitMQ 3.10 does something else on purpose (see `why`)."""
    if broker.kind != "ferry":
        pytest.skip(f"Ferry-only: {why}")


def publish_all(ch, q, items):
    """Publish (body, priority) pairs with confirms, so they are all enqueued before a get."""
    ensure_confirms(ch)
    for body, prio in items:
        ch.basic_publish("", q, body.encode(), pika.BasicProperties(priority=prio))


def strs(bs) -> list[str]:
    return [b.decode() for b in bs]


# -- x-max-priority --------------------------------------------------------------------------------

def test_priorities_strict_fifo_within_one_and_capped_at_the_maximum(ch, uniq):
    q = uniq()
    ch.queue_declare(q, exclusive=True, arguments={"x-max-priority": 5})
    publish_all(ch, q, [("m0", None), ("m1", 1), ("m2", 9), ("m3", 5), ("m4", 0), ("m5", 3),
                        ("m6", 9)])
    got = drain(ch, q)
    # above the maximum counts as the maximum, none as 0; the property itself is kept
    assert [(b.decode(), p.priority) for _, p, b in got] == \
        [("m2", 9), ("m3", 5), ("m6", 9), ("m5", 3), ("m1", 1), ("m0", None), ("m4", 0)]


def test_a_requeued_message_goes_back_to_its_priority_s_place(ch, uniq):
    q = uniq()
    ch.queue_declare(q, exclusive=True, arguments={"x-max-priority": 5})
    publish_all(ch, q, [("a1", 1), ("b5", 5), ("c3", 3), ("d5", 5)])
    first, _, b1 = ch.basic_get(q)
    _, _, b2 = ch.basic_get(q)
    assert (b1, b2) == (b"b5", b"d5")
    ch.basic_nack(first.delivery_tag, multiple=False, requeue=True)
    ch.basic_publish("", q, b"e5", pika.BasicProperties(priority=5))
    got = drain(ch, q)
    assert [(b.decode(), m.redelivered) for m, _, b in got] == \
        [("b5", True), ("e5", False), ("c3", False), ("a1", False)]


def test_drop_head_drops_the_highest_priority_message(ch, uniq):
    """RabbitMQ's priority queue drops the message it would deliver next."""
    q = uniq()
    ch.queue_declare(q, exclusive=True, arguments={"x-max-priority": 5, "x-max-length": 2})
    publish_all(ch, q, [("m0", 1), ("m1", 5), ("m2", 3)])
    assert strs(bodies(ch, q)) == ["m2", "m0"]


def test_only_the_head_of_a_priority_queue_expires(ch, uniq):
    """An expired message of a lower level waits behind the head (counted), and is dropped,
    never delivered, once it reaches the head."""
    q = uniq()
    ch.queue_declare(q, exclusive=True, arguments={"x-max-priority": 2})
    ensure_confirms(ch)
    ch.basic_publish("", q, b"low", pika.BasicProperties(priority=0, expiration="100"))
    ch.basic_publish("", q, b"high", pika.BasicProperties(priority=2, expiration="100000"))
    time.sleep(0.4)                       # past the low one's deadline: nothing to await
    assert ch.queue_declare(q, passive=True).method.message_count == 2
    assert strs(bodies(ch, q)) == ["high"]
    assert ch.queue_declare(q, passive=True).method.message_count == 0


def test_a_consumer_gets_a_long_mixed_backlog_in_priority_order(conn, uniq):
    """4,000 messages over three levels: more than a level keeps in memory, so most of each
    level is read back from the log."""
    q = uniq()
    ch = conn.channel()
    ch.queue_declare(q, exclusive=True, arguments={"x-max-priority": 9})
    prios = [0, 4, 9]
    n = 4000
    publish_all(ch, q, [(f"p{prios[i % 3]}-{i}", prios[i % 3]) for i in range(n)])
    expect = [f"p{p}-{i}" for p in (9, 4, 0) for i in range(n) if prios[i % 3] == p]
    got = []
    ch.basic_qos(prefetch_count=500)
    ch.basic_consume(q, lambda c, m, p, b: (got.append(b.decode()), c.basic_ack(m.delivery_tag)))
    wait_for(conn, lambda: len(got) == n, timeout=60, what=f"{n} deliveries")
    assert got == expect


@pytest.mark.parametrize("value,reason", [
    (256, "{max_value_exceeded,256}"),
    (-1, "{value_negative,-1}"),
    ("a", "\"expected integer, got longstr\""),
])
def test_invalid_max_priority_is_refused(conn, uniq, value, reason):
    q = uniq()
    with channel_closed(406, f"PRECONDITION_FAILED - invalid arg 'x-max-priority' for queue "
                             f"'{q}' {V}: {reason}"):
        conn.channel().queue_declare(q, exclusive=True, arguments={"x-max-priority": value})
    for ok in (0, 255):
        conn.channel().queue_declare(uniq(), exclusive=True, arguments={"x-max-priority": ok})


# -- consumer priorities, single active consumer ---------------------------------------------------

def collector(conn, q, prefetch, **consume_args):
    ch = conn.channel()
    ch.basic_qos(prefetch_count=prefetch)
    got = []
    ch.basic_consume(q, lambda c, m, p, b: got.append((m.delivery_tag, b.decode())),
                     arguments=consume_args or None)
    return ch, got


def test_higher_priority_consumers_get_messages_while_they_have_credit(connect, uniq):
    q = uniq()
    conn = connect()
    conn.channel().queue_declare(q, exclusive=True)
    _, low = collector(conn, q, 100)
    _, high = collector(conn, q, 3, **{"x-priority": 10})
    pub = conn.channel()
    publish_all(pub, q, [(f"m{i}", None) for i in range(10)])
    wait_for(conn, lambda: len(low) + len(high) == 10, what="10 deliveries")
    assert [b for _, b in high] == ["m0", "m1", "m2"]
    assert [b for _, b in low] == [f"m{i}" for i in range(3, 10)]


def test_equal_priority_consumers_share_round_robin(connect, uniq):
    q = uniq()
    conn = connect()
    conn.channel().queue_declare(q, exclusive=True)
    _, a = collector(conn, q, 100, **{"x-priority": 5})
    _, b = collector(conn, q, 100, **{"x-priority": 5})
    _, low = collector(conn, q, 100)
    publish_all(conn.channel(), q, [(f"m{i}", None) for i in range(6)])
    wait_for(conn, lambda: len(a) + len(b) == 6, what="6 deliveries")
    assert ([x for _, x in a], [x for _, x in b], low) == \
        (["m0", "m2", "m4"], ["m1", "m3", "m5"], [])


def test_invalid_consumer_priority_is_refused(conn, uniq):
    q = uniq()
    ch = conn.channel()
    ch.queue_declare(q, exclusive=True)
    with channel_closed(406, f"PRECONDITION_FAILED - invalid arg 'x-priority' for queue '{q}' "
                             f"{V}: \"expected integer, got longstr\""):
        ch.basic_consume(q, lambda *a: None, arguments={"x-priority": "high"})
    conn.channel().basic_consume(q, lambda *a: None, arguments={"x-priority": 2 ** 40})


def test_single_active_consumer_hands_over_in_registration_order(connect, uniq):
    q = uniq()
    conn = connect()
    conn.channel().queue_declare(q, exclusive=True,
                                 arguments={"x-single-active-consumer": True})
    ch_a, a = collector(conn, q, 2)
    _, b = collector(conn, q, 100)
    _, c = collector(conn, q, 100)
    pub = conn.channel()
    publish_all(pub, q, [(f"m{i}", None) for i in range(5)])
    wait_for(conn, lambda: len(a) == 2, what="2 deliveries to the active consumer")
    sync(pub)
    assert ([x for _, x in a], b, c) == (["m0", "m1"], [], [])
    assert pub.queue_declare(q, passive=True).method.consumer_count == 3
    # the active consumer's channel closes: its unacked messages return, the next one takes over
    ch_a.close()
    wait_for(conn, lambda: len(b) == 5, what="the next consumer to get everything")
    assert sorted(x for _, x in b) == [f"m{i}" for i in range(5)]
    assert c == []


def test_a_cancelled_active_consumer_keeps_its_unacked_messages(broker, connect, uniq):
    """Ferry-only: RabbitMQ 3.10.8's classic queue, after basic.cancel of the active consumer
    while it still holds an unacked message, delivers nothing to the next consumer (not even
    after a publish or the ack: observed with the oracle). Ferry hands over at once."""
    ferry_only(broker, "RabbitMQ 3.10.8 stalls the hand-over after basic.cancel")
    q = uniq()
    conn = connect()
    conn.channel().queue_declare(q, exclusive=True,
                                 arguments={"x-single-active-consumer": True})
    ch_a = conn.channel()
    ch_a.basic_qos(prefetch_count=1)
    a = []
    tag = ch_a.basic_consume(q, lambda c, m, p, b: a.append((m.delivery_tag, b.decode())))
    _, b = collector(conn, q, 100)
    publish_all(conn.channel(), q, [("m0", None), ("m1", None)])
    wait_for(conn, lambda: len(a) == 1, what="a delivery to the active consumer")
    ch_a.basic_cancel(tag)
    wait_for(conn, lambda: len(b) == 1, what="the next consumer to take over")
    assert b[0][1] == "m1"
    ch_a.basic_ack(a[0][0])                       # still the cancelled consumer's to settle
    sync(ch_a)
    assert a == [(1, "m0")]


def test_single_active_consumer_queues_refuse_exclusive_consumers(conn, uniq):
    q = uniq()
    ch = conn.channel()
    ch.queue_declare(q, exclusive=True, arguments={"x-single-active-consumer": True})
    with channel_closed(403, f"ACCESS_REFUSED - queue '{q}' {V} in exclusive use"):
        ch.basic_consume(q, lambda *a: None, exclusive=True)
    conn.channel().basic_consume(q, lambda *a: None)


@pytest.mark.parametrize("value,kind", [("yes", "longstr"), (1, "signedint")])
def test_single_active_consumer_must_be_a_boolean(conn, uniq, value, kind):
    q = uniq()
    with channel_closed(406, f"PRECONDITION_FAILED - invalid arg 'x-single-active-consumer' for "
                             f"queue '{q}' {V}: {{unacceptable_type,{kind}}}"):
        conn.channel().queue_declare(q, exclusive=True,
                                     arguments={"x-single-active-consumer": value})


# -- x-expires -------------------------------------------------------------------------------------

def exists(connect, q) -> bool:
    """Whether q exists, asked without using it: a passive declare would restart its x-expires
    countdown, a binding does not."""
    try:
        connect().channel().queue_bind(q, "amq.fanout")
        return True
    except px.ChannelClosedByBroker as e:
        assert e.reply_code == 404
        return False


def test_an_unused_queue_is_deleted_after_x_expires(connect, uniq):
    q = uniq()
    ch = connect().channel()
    ch.queue_declare(q, arguments={"x-expires": 300})
    ch.basic_publish("", q, b"lost with the queue")
    started = time.monotonic()
    assert eventually(lambda: exists(connect, q), False, timeout=5) is False
    assert time.monotonic() - started < 3


def test_a_consumer_keeps_an_expiring_queue_and_its_cancel_restarts_the_clock(connect, uniq):
    q = uniq()
    conn = connect()
    ch = conn.channel()
    ch.queue_declare(q, arguments={"x-expires": 400})
    tag = ch.basic_consume(q, lambda *a: None)
    conn.sleep(0.8)                                     # twice x-expires, consumed all along
    assert ch.queue_declare(q, passive=True).method.consumer_count == 1
    ch.basic_cancel(tag)
    assert eventually(lambda: exists(connect, q), False, timeout=5) is False


def test_basic_get_restarts_the_clock(connect, uniq):
    q = uniq()
    ch = connect().channel()
    ch.queue_declare(q, arguments={"x-expires": 600})
    for _ in range(5):                                   # 1 s of use, spaced below x-expires
        time.sleep(0.2)
        ch.basic_get(q)
    assert exists(connect, q)
    ch.queue_delete(q)


@pytest.mark.parametrize("value,reason", [
    (0, "{value_zero,0}"),
    (-1, "{value_negative,-1}"),
    (315360000001, "{value_too_large,315360000001}"),
    ("a", "\"expected integer, got longstr\""),
])
def test_invalid_x_expires_is_refused(conn, uniq, value, reason):
    q = uniq()
    with channel_closed(406, f"PRECONDITION_FAILED - invalid arg 'x-expires' for queue '{q}' "
                             f"{V}: {reason}"):
        conn.channel().queue_declare(q, exclusive=True, arguments={"x-expires": value})


# -- x-delivery-limit, x-delivery-count ------------------------------------------------------------

def get_eventually(ch, q, timeout: float = 5.0):
    """basic.get until a message comes (a quorum queue applies a return asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        m, p, body = ch.basic_get(q)
        if m is not None:
            return m, p, body
        assert time.monotonic() < deadline, f"nothing in {q}"
        time.sleep(0.02)


def declare_limited(ch, uniq, limit, **extra):
    dead, q = uniq("dead"), uniq()
    ch.queue_declare(dead, durable=True)
    ch.queue_declare(q, durable=True, arguments=dlx_args(dead, **{"x-queue-type": "quorum",
                                                                   "x-delivery-limit": limit},
                                                         **extra))
    return q, dead


def test_quorum_delivery_limit_counts_returns_and_dead_letters_past_it(ch, uniq):
    q, dead = declare_limited(ch, uniq, 2)
    ensure_confirms(ch)
    ch.basic_publish("", q, b"x", pika.BasicProperties(headers={"a": 1}))
    seen = []
    for _ in range(3):
        m, p, _ = get_eventually(ch, q)
        seen.append((m.redelivered, p.headers))
        ch.basic_nack(m.delivery_tag, requeue=True)
    # x-delivery-count on every delivery, 0 on the first; the third return passes limit 2
    assert seen == [(False, {"a": 1, "x-delivery-count": 0}),
                    (True, {"a": 1, "x-delivery-count": 1}),
                    (True, {"a": 1, "x-delivery-count": 2})]
    assert eventually(lambda: ch.queue_declare(dead, passive=True).method.message_count, 1) == 1
    assert ch.queue_declare(q, passive=True).method.message_count == 0
    _, p, body = ch.basic_get(dead, auto_ack=True)
    assert body == b"x"
    assert deaths(p) == [(q, "delivery_limit", 1)]
    assert "x-delivery-count" not in p.headers, "the header is not part of the stored message"
    assert p.headers["x-first-death-reason"] == "delivery_limit"
    ch.queue_delete(q)
    ch.queue_delete(dead)


def test_a_closed_channel_s_return_counts_too(connect, uniq):
    conn = connect()
    ch = conn.channel()
    q, dead = declare_limited(ch, uniq, 1)
    ensure_confirms(ch)
    ch.basic_publish("", q, b"y")
    counts = []
    for _ in range(2):
        other = conn.channel()
        _, p, _ = get_eventually(other, q)
        counts.append(p.headers["x-delivery-count"])
        other.close()                                  # unacked: returned to the queue
    assert counts == [0, 1]
    assert eventually(lambda: ch.queue_declare(dead, passive=True).method.message_count, 1) == 1
    ch.queue_delete(q)
    ch.queue_delete(dead)


def test_a_consumer_s_first_delivery_has_no_delivery_count(connect, uniq):
    """basic.get carries x-delivery-count from 0 (above); a consumer delivery only once the
    message was returned (RabbitMQ 3.10.8's quorum queue; found by the lapin suite's oracle run)."""
    conn = connect()
    ch = conn.channel()
    q, dead = declare_limited(ch, uniq, 5)
    ensure_confirms(ch)
    ch.basic_publish("", q, b"z", pika.BasicProperties(headers={"a": 1}))
    got = []
    ch.basic_consume(q, lambda c, m, p, b: got.append((m, p.headers)))
    wait_for(conn, lambda: got, what="the first delivery")
    m, headers = got.pop()
    assert (m.redelivered, headers) == (False, {"a": 1})
    ch.basic_nack(m.delivery_tag, requeue=True)
    wait_for(conn, lambda: got, what="the redelivery")
    m, headers = got.pop()
    assert (m.redelivered, headers) == (True, {"a": 1, "x-delivery-count": 1})
    ch.basic_ack(m.delivery_tag)
    ch.queue_delete(q)
    ch.queue_delete(dead)


def test_classic_queues_honour_x_delivery_limit(broker, ch, uniq):
    """Ferry-only: RabbitMQ 3.10 refuses x-delivery-limit on classic queues (406 "… of queue
    type rabbit_classic_queue"); Ferry honours it on every queue type."""
    ferry_only(broker, "x-delivery-limit on a classic queue")
    dead, q = uniq("dead"), uniq()
    ch.queue_declare(dead, exclusive=True)
    ch.queue_declare(q, exclusive=True, arguments=dlx_args(dead, **{"x-delivery-limit": 0}))
    ensure_confirms(ch)
    ch.basic_publish("", q, b"once")
    m, p, _ = ch.basic_get(q)
    assert p.headers == {"x-delivery-count": 0}
    ch.basic_reject(m.delivery_tag, requeue=True)
    assert eventually(lambda: ch.queue_declare(dead, passive=True).method.message_count, 1) == 1
    assert deaths(ch.basic_get(dead, auto_ack=True)[1]) == [(q, "delivery_limit", 1)]


def test_quorum_queues_default_to_a_limit_of_20_and_minus_one_is_unlimited(broker, ch, uniq):
    """Ferry-only: as RabbitMQ 4, a quorum queue without x-delivery-limit has a limit of 20 and
    -1 means unlimited; RabbitMQ 3.10 has no default limit. Without a DLX the message is
    dropped."""
    ferry_only(broker, "RabbitMQ 4's default delivery limit")
    ensure_confirms(ch)
    for args, expect in ((QUORUM, 21), ({**QUORUM, "x-delivery-limit": -1}, 30)):
        q = uniq()
        ch.queue_declare(q, durable=True, arguments=args)
        ch.basic_publish("", q, b"x")
        delivered = 0
        for _ in range(30):
            m, _, _ = ch.basic_get(q)
            if m is None:
                break
            delivered += 1
            ch.basic_nack(m.delivery_tag, requeue=True)
        assert delivered == expect
        ch.queue_delete(q)


# -- x-queue-type ----------------------------------------------------------------------------------

@pytest.mark.parametrize("kw,args,text", [
    (dict(exclusive=True), {"x-queue-type": "foo"},
     "invalid arg 'x-queue-type' for queue '{q}' {v}: \"unsupported queue type 'foo'\""),
    (dict(exclusive=True), {"x-queue-type": 5},
     "invalid arg 'x-queue-type' for queue '{q}' {v}: {{unacceptable_type,signedint}}"),
    (dict(exclusive=True), {"x-queue-type": "x", "x-expires": 0},
     "invalid arg 'x-queue-type' for queue '{q}' {v}: \"unsupported queue type 'x'\""),
    (dict(durable=False), QUORUM, "invalid property 'non-durable' for queue '{q}' {v}"),
    (dict(durable=True, auto_delete=True), QUORUM,
     "invalid property 'auto-delete' for queue '{q}' {v}"),
    (dict(durable=True, exclusive=True), QUORUM,
     "invalid property 'exclusive-owner' for queue '{q}' {v}"),
    (dict(durable=True, exclusive=True, auto_delete=True), QUORUM,
     "invalid property 'auto-delete' for queue '{q}' {v}"),
    (dict(durable=True), {**QUORUM, "x-max-priority": 3},
     "invalid arg 'x-max-priority' for queue '{q}' {v} of queue type rabbit_quorum_queue"),
    (dict(durable=False), {**QUORUM, "x-message-ttl": -1},
     "invalid arg 'x-message-ttl' for queue '{q}' {v}: {{value_negative,-1}}"),
], ids=["unknown", "not-a-string", "type-first", "non-durable", "auto-delete", "exclusive",
        "auto-delete-first", "classic-only-arg", "args-before-properties"])
def test_queue_type_checks(conn, uniq, kw, args, text):
    q = uniq()
    with channel_closed(406, "PRECONDITION_FAILED - " + text.format(q=q, v=V)):
        conn.channel().queue_declare(q, arguments=args, **kw)


def test_declared_queue_types_are_accepted(conn, uniq):
    ch = conn.channel()
    ch.queue_declare(uniq(), exclusive=True, arguments={"x-queue-type": "classic"})
    q = uniq()
    ch.queue_declare(q, durable=True, arguments={**QUORUM, "x-single-active-consumer": True,
                                                 "x-expires": 60000})
    ch.queue_delete(q)


# -- restarts --------------------------------------------------------------------------------------

@pytest.mark.restart
def test_priorities_survive_a_kill(restartable_broker):
    b = restartable_broker
    c, ch = open_ch(b)
    ch.queue_declare("prio", durable=True, arguments={"x-max-priority": 3})
    ch.confirm_delivery()      # only confirmed messages are promised to survive kill -9
    for body, prio in [("a0", 0), ("b3", 3), ("c1", 1), ("d9", 9), ("e", None)]:
        ch.basic_publish("", "prio", body.encode(),
                         pika.BasicProperties(delivery_mode=2, priority=prio))
    m, _, body = ch.basic_get("prio")
    assert body == b"b3"
    ch.basic_nack(m.delivery_tag, requeue=True)
    c.close()
    b.definitions_on_disk()
    b.kill9()
    b.start()
    b.await_queue("prio")
    c, ch = open_ch(b)
    assert strs(bodies(ch, "prio")) == ["b3", "d9", "c1", "a0", "e"]
    c.close()


@pytest.mark.restart
def test_delivery_counts_survive_a_restart(restartable_broker):
    b = restartable_broker
    c, ch = open_ch(b)
    ch.queue_declare("dead", durable=True)
    ch.queue_declare("limited", durable=True,
                     arguments=dlx_args("dead", **{**QUORUM, "x-delivery-limit": 1}))
    ch.basic_publish("", "limited", b"x", PERSISTENT)
    m, p, _ = get_eventually(ch, "limited")
    assert p.headers["x-delivery-count"] == 0
    ch.basic_nack(m.delivery_tag, requeue=True)
    m, p, _ = get_eventually(ch, "limited")
    assert p.headers["x-delivery-count"] == 1
    c.close()                                            # returned by the close: count 2 > 1
    assert eventually(lambda: message_count(b, "dead"), 1) == 1
    c, ch = open_ch(b)
    ch.basic_publish("", "limited", b"y", PERSISTENT)
    m, _, _ = get_eventually(ch, "limited")
    ch.basic_nack(m.delivery_tag, requeue=True)          # returned once
    assert eventually(lambda: ch.queue_declare("limited", passive=True).method.message_count,
                      1) == 1
    c.close()
    assert b.restart() == 0
    c, ch = open_ch(b)
    m, p, body = get_eventually(ch, "limited", timeout=15)
    assert (body, p.headers["x-delivery-count"]) == (b"y", 1)
    ch.basic_nack(m.delivery_tag, requeue=True)           # the second return: dead
    assert eventually(lambda: ch.queue_declare("dead", passive=True).method.message_count, 2) == 2
    assert ch.queue_declare("limited", passive=True).method.message_count == 0
    c.close()


def message_count(b, q) -> int:
    c = pika.BlockingConnection(b.params())
    try:
        return c.channel().queue_declare(q, passive=True).method.message_count
    finally:
        c.close()


@pytest.mark.restart
def test_queue_expiry_restarts_with_the_broker(restartable_broker):
    """Both brokers count x-expires from the moment the queue comes back: time spent stopped
    does not count."""
    b = restartable_broker
    c, ch = open_ch(b)
    ch.queue_declare("expiring", durable=True, arguments={"x-expires": 3000})
    c.close()
    b.stop()
    time.sleep(3.5)
    # The queue's countdown restarts somewhere inside start() (RabbitMQ starts it while
    # booting, before it answers AMQP): it expires at least 3 s after start() began.
    starting = time.monotonic()
    b.start()
    started = time.monotonic()

    def gone():
        c2, ch2 = open_ch(b)
        try:
            ch2.queue_bind("expiring", "amq.fanout")      # does not count as a use
            return False
        except px.ChannelClosedByBroker:
            return True
        finally:
            if c2.is_open:
                c2.close()
    assert not gone(), "time spent stopped counted"
    while not gone():
        assert time.monotonic() - started < 8, "not deleted"
        time.sleep(0.2)
    assert time.monotonic() - starting >= 3.0
