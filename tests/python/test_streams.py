"""Stream queues (issue 5): `x-queue-type: stream` over AMQP 0-9-1, as RabbitMQ 3.10 offers them.

Declaration rules and texts, `x-stream-offset` (first / last / next / offset / timestamp /
interval), the `x-stream-offset` header on every delivery, prefetch and manual acks as stream
consumers require, consumers following the tail, the operations streams refuse (basic.get,
queue.purge, nack / reject, auto-ack), restarts, and retention by `x-max-length-bytes`.

Every expectation is RabbitMQ 3.10's (FERRY_ORACLE=1 runs them against it) except where a test
says it is Ferry-only and why. RabbitMQ's message_count for a stream lags publishes (it comes
from stream statistics), so counts are polled with `eventually`.
"""

from __future__ import annotations

import datetime
import time

import pika
import pytest

from harness.expect import (channel_closed, connection_closed, ensure_confirms, eventually,
                            message_count, sync, wait_for)

V = "in vhost '/'"
STREAM = {"x-queue-type": "stream"}
PERSISTENT = pika.BasicProperties(delivery_mode=2)
TRANSIENT = pika.BasicProperties(delivery_mode=1)


# -- helpers ---------------------------------------------------------------------------------------

def declare(ch, name: str, **args) -> None:
    ch.queue_declare(name, durable=True, arguments={**STREAM, **args})


def publish(ch, name: str, bodies, props=PERSISTENT) -> None:
    """Confirmed publishes, one at a time (RabbitMQ then writes each in a chunk of its own)."""
    ensure_confirms(ch)
    for b in bodies:
        ch.basic_publish("", name, b if isinstance(b, bytes) else b.encode(), props)


class Reader:
    """A stream consumer on its own channel: prefetch, manual acks, what it received."""

    def __init__(self, conn, name: str, offset=None, prefetch: int = 100, ack: bool = True):
        self.conn, self.ch = conn, conn.channel()
        self.ch.basic_qos(prefetch_count=prefetch)
        self.got: list[tuple[int, bytes]] = []
        self.tags: list[int] = []
        self.ack = ack
        args = {} if offset is None else {"x-stream-offset": offset}
        self.tag = self.ch.basic_consume(name, self._on, arguments=args)

    def _on(self, ch, method, props, body):
        self.got.append((props.headers["x-stream-offset"], body))
        self.tags.append(method.delivery_tag)
        if self.ack:
            ch.basic_ack(method.delivery_tag)

    def wait(self, n: int, timeout: float = 10.0) -> list[tuple[int, bytes]]:
        wait_for(self.conn, lambda: len(self.got) >= n, timeout, f"{n} deliveries")
        return self.got

    def offsets(self) -> list[int]:
        return [o for o, _ in self.got]

    def quiet(self, seconds: float = 0.3) -> list[tuple[int, bytes]]:
        """What arrived after a round trip and a short wait (for 'nothing more comes')."""
        self.conn.process_data_events(time_limit=seconds)
        return self.got


def messages(name_count: int, prefix: str = "m") -> list[str]:
    return [f"{prefix}{i}" for i in range(name_count)]


# -- declaration -----------------------------------------------------------------------------------

@pytest.mark.parametrize("flags, prop", [
    ({"durable": False}, "non-durable"),
    ({"durable": True, "exclusive": True}, "exclusive-owner"),
    ({"durable": True, "auto_delete": True}, "auto-delete"),
])
def test_streams_must_be_durable_shared_and_kept(ch, uniq, flags, prop):
    q = uniq("s")
    with channel_closed(406, f"PRECONDITION_FAILED - invalid property '{prop}' for queue '{q}' {V}"):
        ch.queue_declare(q, arguments=STREAM, **flags)


@pytest.mark.parametrize("arg, value, reason", [
    ("x-max-age", "10x", "invalid_max_age"),
    ("x-max-age", "0D", "invalid_max_age"),
    ("x-max-age", "1.5h", "invalid_max_age"),
    ("x-max-age", 5, "{unacceptable_type,signedint}"),
    ("x-max-length-bytes", -1, "{value_negative,-1}"),
    ("x-max-length-bytes", "10", '"expected integer, got longstr"'),
    ("x-stream-max-segment-size-bytes", -5, "{value_negative,-5}"),
])
def test_invalid_stream_arguments_are_refused(ch, uniq, arg, value, reason):
    q = uniq("s")
    with channel_closed(406, f"PRECONDITION_FAILED - invalid arg '{arg}' for queue '{q}' {V}: {reason}"):
        declare(ch, q, **{arg: value})


@pytest.mark.parametrize("arg, value", [
    ("x-max-length", 10), ("x-message-ttl", -1), ("x-overflow", "reject-publish"),
    ("x-dead-letter-exchange", "dlx"), ("x-dead-letter-routing-key", "k"), ("x-max-priority", 5),
    ("x-expires", 1000), ("x-single-active-consumer", True), ("x-delivery-limit", 3),
    ("x-queue-mode", "lazy"),
])
def test_arguments_streams_do_not_support_are_refused(ch, uniq, arg, value):
    q = uniq("s")
    with channel_closed(406, f"PRECONDITION_FAILED - invalid arg '{arg}' for queue '{q}' {V} "
                             "of queue type rabbit_stream_queue"):
        declare(ch, q, **{arg: value})


def test_valid_arguments_and_redeclaration(connect, uniq):
    q = uniq("s")
    c = connect()
    ch = c.channel()
    args = {"x-max-age": "7D", "x-max-length-bytes": 10_000_000,
            "x-stream-max-segment-size-bytes": 1_000_000, "x-initial-cluster-size": 1}
    ok = ch.queue_declare(q, durable=True, arguments={**STREAM, **args}).method
    assert (ok.queue, ok.message_count, ok.consumer_count) == (q, 0, 0)
    ch.queue_declare(q, durable=True, arguments={**STREAM, **args})
    with channel_closed(406, f"PRECONDITION_FAILED - inequivalent arg 'x-max-age' for queue '{q}' "
                             f"{V}: received '1h' but current is '7D'"):
        ch.queue_declare(q, durable=True, arguments={**STREAM, **args, "x-max-age": "1h"})
    ch = c.channel()
    with channel_closed(406, f"PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue '{q}' "
                             f"{V}: received none but current is the value 'stream' of type 'longstr'"):
        ch.queue_declare(q, durable=True, arguments=args)
    ch = c.channel()
    assert ch.queue_delete(q).method.message_count == 0


# -- reading ---------------------------------------------------------------------------------------

def test_offsets_and_the_x_stream_offset_header(connect, uniq):
    q = uniq("s")
    c = connect()
    ch = c.channel()
    declare(ch, q)
    publish(ch, q, messages(6))
    expect_all = [(i, f"m{i}".encode()) for i in range(6)]
    for offset, expected in [
        ("first", expect_all),
        (0, expect_all),
        (-1, expect_all),                       # negative: from the first
        (3, expect_all[3:]),
        ("last", expect_all[5:]),
        (datetime.datetime(2000, 1, 1), expect_all),
        ("1h", expect_all),                     # published within the last hour
    ]:
        r = Reader(c, q, offset)
        assert r.wait(len(expected)) == expected, offset
        r.ch.close()
    for offset in ["next", None, 100, datetime.datetime(2100, 1, 1)]:
        r = Reader(c, q, offset)
        assert r.quiet() == [], offset
        r.ch.close()


def test_message_count_is_the_stream_length_and_consumers_are_not_counted(connect, uniq):
    q = uniq("s")
    c = connect()
    ch = c.channel()
    declare(ch, q)
    publish(ch, q, messages(7))
    Reader(c, q, "first").wait(7)
    count = lambda: ch.queue_declare(q, passive=True).method.message_count  # noqa: E731
    assert eventually(count, 7) == 7
    ok = ch.queue_declare(q, durable=True, arguments=STREAM).method
    assert (ok.message_count, ok.consumer_count) == (7, 0)


def test_headers_and_properties_are_kept_and_the_offset_added(connect, uniq):
    q = uniq("s")
    c = connect()
    ch = c.channel()
    declare(ch, q)
    props = pika.BasicProperties(delivery_mode=2, content_type="text/plain", message_id="id-1",
                                 headers={"h": 1, "x-stream-offset": "ignored"})
    publish(ch, q, ["a"], props)
    got = []
    ch2 = c.channel()
    ch2.basic_qos(prefetch_count=1)
    ch2.basic_consume(q, lambda c_, m, p, b: got.append((m, p, b)),
                      arguments={"x-stream-offset": "first"})
    wait_for(c, lambda: got, what="delivery")
    m, p, b = got[0]
    assert (b, m.redelivered, p.content_type, p.message_id) == (b"a", False, "text/plain", "id-1")
    assert p.headers == {"h": 1, "x-stream-offset": 0}


def test_consumers_at_different_offsets_read_independently(connect, uniq):
    q = uniq("s")
    c = connect()
    ch = c.channel()
    declare(ch, q)
    publish(ch, q, messages(10))
    a = Reader(c, q, "first", prefetch=3)
    b = Reader(c, q, 7, prefetch=1)
    other = connect()
    d = Reader(other, q, 4)
    assert [o for o, _ in a.wait(10)] == list(range(10))
    assert [o for o, _ in b.wait(3)] == [7, 8, 9]
    assert [o for o, _ in d.wait(6)] == list(range(4, 10))
    # Reading removed nothing.
    e = Reader(other, q, "first")
    assert len(e.wait(10)) == 10


def test_a_consumer_follows_the_tail_as_messages_arrive(connect, uniq):
    q = uniq("s")
    c = connect()
    ch = c.channel()
    declare(ch, q)
    publish(ch, q, ["old"])
    tail = Reader(c, q)                         # default: next
    sync(tail.ch)
    pub = connect().channel()
    for i in range(3):
        publish(pub, q, [f"new{i}"])
        got = tail.wait(i + 1)
        assert got[-1] == (i + 1, f"new{i}".encode())


def test_prefetch_bounds_unacked_deliveries_and_acks_return_credit(connect, uniq):
    q = uniq("s")
    c = connect()
    ch = c.channel()
    declare(ch, q)
    publish(ch, q, messages(5))
    r = Reader(c, q, "first", prefetch=2, ack=False)
    r.wait(2)
    assert r.quiet() == [(0, b"m0"), (1, b"m1")]
    r.ch.basic_ack(r.tags[1], multiple=True)
    assert r.offsets()[:2] == [0, 1]
    assert [o for o, _ in r.wait(4)] == [0, 1, 2, 3]


# -- what streams refuse ---------------------------------------------------------------------------

def test_consumers_need_a_prefetch_and_manual_acks(connect, uniq):
    q = uniq("s")
    c = connect()
    declare(c.channel(), q)
    ch = c.channel()
    with channel_closed(406, f"PRECONDITION_FAILED - consumer prefetch count is not set for "
                             f"'queue '{q}' {V}'"):
        ch.basic_consume(q, lambda *a: None, auto_ack=True)
    ch = c.channel()
    ch.basic_qos(prefetch_count=10, global_qos=True)
    with channel_closed(406, f"PRECONDITION_FAILED - consumer prefetch count is not set for "
                             f"'queue '{q}' {V}'"):
        ch.basic_consume(q, lambda *a: None)
    ch = c.channel()
    ch.basic_qos(prefetch_count=10)
    with channel_closed(406, f"PRECONDITION_FAILED - invalid arg 'x-priority' for queue '{q}' {V} "
                             "of queue type rabbit_stream_queue"):
        ch.basic_consume(q, lambda *a: None, arguments={"x-priority": 5})
    ch = c.channel()
    ch.basic_qos(prefetch_count=10)
    with connection_closed(540, f"NOT_IMPLEMENTED - automatic acknowledgement not supported by "
                                f"stream queues queue '{q}' {V}"):
        ch.basic_consume(q, lambda *a: None, auto_ack=True)


@pytest.mark.parametrize("op, text", [
    ("get", "basic.get"),
    ("purge", "queue.purge"),
])
def test_get_and_purge_are_not_implemented(connect, uniq, op, text):
    q = uniq("s")
    c = connect()
    ch = c.channel()
    declare(ch, q)
    publish(ch, q, ["a"])
    with connection_closed(540, f"NOT_IMPLEMENTED - {text} not supported by stream queues "
                                f"queue '{q}' {V}"):
        ch.basic_get(q) if op == "get" else ch.queue_purge(q)


@pytest.mark.parametrize("how", ["nack", "reject"])
@pytest.mark.parametrize("requeue", [True, False])
def test_nack_and_reject_close_the_connection(connect, uniq, how, requeue):
    q = uniq("s")
    c = connect()
    ch = c.channel()
    declare(ch, q)
    publish(ch, q, ["a"])
    r = Reader(c, q, "first", ack=False)
    r.wait(1)
    with connection_closed(540, f"NOT_IMPLEMENTED - basic.nack and basic.reject not supported by "
                                f"stream queues queue '{q}' {V}"):
        if how == "nack":
            r.ch.basic_nack(r.tags[0], requeue=requeue)
        else:
            r.ch.basic_reject(r.tags[0], requeue=requeue)
        c.process_data_events(time_limit=5)
        r.ch.basic_qos(prefetch_count=1)


def test_publishing_through_an_exchange_reaches_the_stream(connect, uniq):
    q, x = uniq("s"), uniq("x")
    c = connect()
    ch = c.channel()
    declare(ch, q)
    ch.exchange_declare(x, "fanout")
    ch.queue_bind(q, x)
    ensure_confirms(ch)
    ch.basic_publish(x, "any", b"via-exchange", PERSISTENT)
    assert Reader(c, q, "first").wait(1) == [(0, b"via-exchange")]


def test_dead_letters_do_not_reach_a_stream(connect, uniq):
    """Observed on RabbitMQ 3.10.8: a classic queue's dead letter routed to a stream and a queue
    reaches only the queue."""
    q, dlq, x, src = uniq("s"), uniq("dlq"), uniq("dlx"), uniq("src")
    c = connect()
    ch = c.channel()
    declare(ch, q)
    ch.exchange_declare(x, "fanout")
    ch.queue_declare(dlq)
    ch.queue_bind(q, x)
    ch.queue_bind(dlq, x)
    ch.queue_declare(src, arguments={"x-dead-letter-exchange": x, "x-message-ttl": 0})
    publish(ch, src, ["dead"])
    publish(ch, q, ["live"])
    got = eventually(lambda: ch.basic_get(dlq, auto_ack=True)[2], b"dead")
    assert got == b"dead"
    r = Reader(c, q, "first")
    assert r.wait(1) == [(0, b"live")]
    assert r.quiet() == [(0, b"live")]


# -- restarts and retention ------------------------------------------------------------------------

def _open(b):
    c = pika.BlockingConnection(pika.ConnectionParameters(b.host, b.port))
    return c, c.channel()


def _reopen_stream(b, name: str):
    """RabbitMQ answers 404 "home node ... is down or inaccessible" until the stream's
    process has recovered after a restart: `await_queue` retries there, as a client would."""
    b.await_queue(name)
    return _open(b)


@pytest.mark.parametrize("how", ["restart", "kill9"])
def test_a_stream_and_its_offsets_survive_a_restart(restartable_broker, broker_kind, how):
    if how == "kill9" and broker_kind != "ferry":
        pytest.skip("after kill -9 a single-node RabbitMQ 3.10 answers 404 'home node ... is down "
                    "or inaccessible' for this stream for more than 150 s (measured): Ferry only")
    b = restartable_broker
    c, ch = _open(b)
    declare(ch, "st", **{"x-max-age": "1D"})
    publish(ch, "st", messages(50))
    publish(ch, "st", ["transient"], pika.BasicProperties(delivery_mode=1))
    c.close()
    if how == "restart":
        assert b.restart() == 0
    else:
        b.kill9()
        b.start()
    c, ch = _reopen_stream(b, "st")
    r = Reader(c, "st", "first")
    got = r.wait(51)
    assert got[:50] == [(i, f"m{i}".encode()) for i in range(50)]
    publish(ch, "st", ["after"])
    assert r.wait(52)[51][0] == 51 and r.got[51][1] == b"after"


def test_a_confirmed_transient_message_survives_kill_9(restartable_broker, broker_kind):
    """A stream stores every message whatever its delivery mode (as RabbitMQ's do), so the
    confirm of a transient one waits for the durability round that makes it readable, like a
    persistent one's. Ferry once confirmed a transient stream publish on append: here the 16 MB
    append before it keeps the round busy, and kill -9 right after the confirm lost "t"
    (3 runs of 3 before the fix)."""
    if broker_kind != "ferry":
        pytest.skip("after kill -9 a single-node RabbitMQ 3.10 answers 404 for a stream for more "
                    "than 150 s (see test_a_stream_and_its_offsets_survive_a_restart)")
    b = restartable_broker
    c, ch = _open(b)
    declare(ch, "st")
    publish(ch, "st", ["p0"])
    bulk = c.channel()
    bulk.basic_publish("", "st", b"B" * 16_000_000, TRANSIENT)
    bulk.basic_qos(prefetch_count=1)            # a round trip: the big append is done
    publish(ch, "st", ["t"], TRANSIENT)         # returns with the confirm
    b.kill9()
    b.start()
    c, ch = _reopen_stream(b, "st")
    r = Reader(c, "st", "first")
    r.wait(3)
    assert [(o, body[:2]) for o, body in r.quiet()] == [(0, b"p0"), (1, b"BB"), (2, b"t")]


def test_retention_by_bytes_deletes_the_oldest_segments(connect, uniq, broker_kind):
    if broker_kind != "ferry":
        pytest.skip("RabbitMQ 3.10 sizes segments and retention by its own chunk layout: with "
                    "these limits it kept none of the 100 messages (measured: 'first' delivered "
                    "offset 102, message_count 0), so the expected range is Ferry's only")
    q = uniq("s")
    c = connect()
    ch = c.channel()
    declare(ch, q, **{"x-max-length-bytes": 20_000, "x-stream-max-segment-size-bytes": 5_000})
    body = "x" * 1000
    publish(ch, q, [f"{i:04}{body}" for i in range(100)])
    r = Reader(c, q, "first")
    first = r.wait(1)[0][0]
    assert first > 50, f"old segments still there: first offset {first}"
    got = r.wait(100 - first)
    assert [o for o, _ in got] == list(range(first, 100))
    assert got[-1][1].startswith(b"0099")


def _vm_kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise AssertionError(f"{key} missing from /proc/{pid}/status")


def test_reading_a_large_stream_from_the_start_does_not_load_it(broker_kind, broker_factory):
    if broker_kind != "ferry":
        pytest.skip("measures the Ferry process's peak RSS")
    b = broker_factory.start(broker_factory.make("ferry", "stream-memory"))
    pid = b.proc.pid
    c = pika.BlockingConnection(b.params())
    ch = c.channel()
    declare(ch, "big")
    n, body = 20_000, b"x" * 10_000             # 200 MB
    for _ in range(n):                          # no confirms: 20,000 rounds would be slow
        ch.basic_publish("", "big", body)
    assert eventually(lambda: message_count(ch, "big"), n, timeout=60) == n
    rss_before = _vm_kib(pid, "VmRSS")
    r = Reader(c, "big", "first", prefetch=50)
    r.wait(n, timeout=120)
    assert r.offsets() == list(range(n))
    peak = _vm_kib(pid, "VmHWM")
    print(f"\nstream read of {n * len(body) // 10**6} MB from 'first': RSS before "
          f"{rss_before // 1024} MiB, peak {peak // 1024} MiB")
    assert peak < rss_before + 48 * 1024, f"peak RSS {peak} KiB, {rss_before} KiB before reading"
    c.close()
    b.close()
