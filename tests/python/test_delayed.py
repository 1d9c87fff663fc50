"""Delayed retry and delayed publishing (issue 5, "delayed retry"): Ferry's x-retry-* queue
arguments, and the x-delayed-message exchange type of the rabbitmq-delayed-message-exchange
plugin.

Ferry-only: RabbitMQ has no retry arguments, and the Debian RabbitMQ 3.10.8 oracle does not ship
the delayed-message plugin. The plugin behaviours checked here come from its README and source
(x-delayed-type required, else 406 "Invalid argument, 'x-delayed-type' must be an existing
exchange type"; x-delay > 0 holds, missing / negative routes at once; held messages are routed
with x-delay negated; mandatory holds are never returned).

Timing: the broker fixes a due time as its clock at the nack / publish plus the delay (whole ms),
and each stopwatch here starts before the nack / publish is sent, so nothing may arrive earlier
than delay - 1 ms (the broker truncates to ms). Upper bounds are generous (the machine is noisy).
Waiting is event-driven: the consumer's deliveries are awaited with a timeout, never slept for.
"""

from __future__ import annotations

import time

import pika
import pytest

from harness.expect import channel_closed, drain, ensure_confirms, message_count, sync, wait_for

V = "in vhost '/'"
PERSISTENT = pika.BasicProperties(delivery_mode=2)
SLACK = 5.0          # upper-bound slack, seconds
TRUNC = 0.001        # the broker's truncation to whole ms


@pytest.fixture(autouse=True)
def _ferry_only(request):
    b = request.getfixturevalue("broker_kind")
    if b != "ferry":
        pytest.skip("Ferry-only: x-retry-* arguments and the x-delayed-message exchange type "
                    "(the RabbitMQ oracle has no delayed-message plugin)")


class Inbox:
    """A consumer whose deliveries are awaited (with a deadline) instead of slept for."""

    def __init__(self, conn, ch, queue: str, auto_ack: bool = False):
        self.conn, self.ch, self.got = conn, ch, []
        self.tag = ch.basic_consume(queue, self._on, auto_ack=auto_ack)

    def _on(self, ch, method, props, body):
        self.got.append((time.monotonic(), method, props, body))

    def next(self, timeout: float):
        """The next delivery (arrival time, method, properties, body)."""
        wait_for(self.conn, lambda: self.got, timeout=timeout, what="a delivery")
        return self.got.pop(0)

    def quiet(self, seconds: float) -> None:
        """Nothing arrives for `seconds` (a bounded negative check)."""
        self.conn.process_data_events(time_limit=seconds)
        assert not self.got, f"unexpected delivery {self.got[0][3]!r}"


def assert_on_time(what: str, elapsed: float, delay: float) -> None:
    assert elapsed + TRUNC >= delay, f"{what}: back after {elapsed:.3f}s, before its {delay}s"
    assert elapsed <= delay + SLACK, f"{what}: back only after {elapsed:.3f}s (delay {delay}s)"


def retry_args(delay_ms: int, **extra) -> dict:
    return {"x-retry-delay": delay_ms, **extra}


def delayed(ch, name: str, kind: str = "direct", durable: bool = False) -> None:
    ch.exchange_declare(name, "x-delayed-message", durable=durable,
                        arguments={"x-delayed-type": kind})


def with_delay(ms, persistent: bool = False) -> pika.BasicProperties:
    return pika.BasicProperties(headers={"x-delay": ms}, delivery_mode=2 if persistent else None)


# -- delayed retry -------------------------------------------------------------------------------

def test_exponential_backoff_waits_longer_each_time_up_to_the_cap(conn, ch, uniq):
    q = uniq("retry")
    ch.queue_declare(q, arguments=retry_args(200, **{"x-retry-backoff": "exponential",
                                                     "x-retry-max-delay": 700}))
    ensure_confirms(ch)
    ch.basic_publish("", q, b"job")
    inbox = Inbox(conn, ch, q)
    _, m, p, _ = inbox.next(5)
    assert not m.redelivered
    waits = []
    for n in range(1, 5):
        start = time.monotonic()
        ch.basic_nack(m.delivery_tag, requeue=True)
        arrived, m, p, body = inbox.next(5 + SLACK)
        waits.append(arrived - start)
        assert body == b"job" and m.redelivered
        assert p.headers["x-delivery-count"] == n
    for got, want in zip(waits, [0.2, 0.4, 0.7, 0.7]):
        assert_on_time("retry", got, want)
    ch.basic_ack(m.delivery_tag)


def test_fixed_retry_is_invisible_while_it_waits_and_comes_back_first(conn, ch, uniq):
    q = uniq("fixed")
    ch.queue_declare(q, arguments=retry_args(600))
    ensure_confirms(ch)
    for b in (b"a", b"b"):
        ch.basic_publish("", q, b)
    m, _, body = ch.basic_get(q)
    assert body == b"a"
    start = time.monotonic()
    ch.basic_reject(m.delivery_tag, requeue=True)
    sync(ch)
    # Waiting: not ready (message_count), not gettable; "b" is.
    assert message_count(ch, q) == 1
    assert [b for _, _, b in drain(ch, q)] == [b"b"]
    assert ch.basic_get(q)[0] is None
    ch.basic_publish("", q, b"c")
    inbox = Inbox(conn, ch, q, auto_ack=True)
    arrived, m, _, body = inbox.next(5)
    assert body == b"c", "published during the wait: delivered first"
    arrived, m, p, body = inbox.next(5 + SLACK)
    assert_on_time("reject", arrived - start, 0.6)
    assert (body, m.redelivered, p.headers["x-delivery-count"]) == (b"a", True, 1)


def test_retry_then_delivery_limit_dead_letters(conn, ch, uniq):
    q, dead = uniq("limited"), uniq("dead")
    ch.queue_declare(dead)
    ch.queue_declare(q, arguments=retry_args(100, **{"x-delivery-limit": 1,
                                                     "x-dead-letter-exchange": "",
                                                     "x-dead-letter-routing-key": dead}))
    ensure_confirms(ch)
    ch.basic_publish("", q, b"poison")
    inbox = Inbox(conn, ch, q)
    _, m, _, _ = inbox.next(5)
    ch.basic_nack(m.delivery_tag, requeue=True)          # return 1: waits 100 ms
    _, m, p, _ = inbox.next(5 + SLACK)
    assert p.headers["x-delivery-count"] == 1
    ch.basic_nack(m.delivery_tag, requeue=True)          # return 2: past the limit
    graveyard = Inbox(conn, ch, dead, auto_ack=True)
    _, _, p, body = graveyard.next(5)
    assert body == b"poison"
    assert p.headers["x-death"][0]["reason"] == "delivery_limit"
    inbox.quiet(0.3)


@pytest.mark.parametrize("key,args,text", [
    ("x-retry-delay", {"x-retry-delay": -1}, "{value_negative,-1}"),
    ("x-retry-delay", {"x-retry-delay": "soon"}, '"expected integer, got longstr"'),
    ("x-retry-backoff", {"x-retry-delay": 5, "x-retry-backoff": "linear"},
     "\"expected fixed or exponential, got 'linear'\""),
    ("x-retry-multiplier", {"x-retry-delay": 5, "x-retry-multiplier": 0}, "{value_zero,0}"),
    ("x-retry-max-delay", {"x-retry-max-delay": 5}, "\"needs a positive 'x-retry-delay'\""),
])
def test_bad_retry_arguments_are_refused(ch, uniq, key, args, text):
    q = uniq("bad")
    with channel_closed(406, f"PRECONDITION_FAILED - invalid arg '{key}' for queue '{q}' {V}: "
                             f"{text}"):
        ch.queue_declare(q, arguments=args)


def test_a_waiting_retry_survives_a_restart(restartable_broker):
    b = restartable_broker
    c = pika.BlockingConnection(b.params())
    ch = c.channel()
    ch.queue_declare("retry.durable", durable=True, arguments=retry_args(2000))
    ch.confirm_delivery()
    ch.basic_publish("", "retry.durable", b"r", PERSISTENT)
    m, _, _ = ch.basic_get("retry.durable")
    start = time.monotonic()
    ch.basic_nack(m.delivery_tag, requeue=True)
    sync(ch)
    # Closed first: a shutdown waits for an open connection's close-ok, and an idle pika
    # client answers only when called, which could outlast the 2 s wait.
    c.close()
    assert b.restart() == 0
    c = pika.BlockingConnection(b.params())
    ch = c.channel()
    assert message_count(ch, "retry.durable") == 0, "still waiting after the restart"
    inbox = Inbox(c, ch, "retry.durable", auto_ack=True)
    arrived, m, p, body = inbox.next(2 + SLACK)
    assert_on_time("retry across restart", arrived - start, 2.0)
    assert (body, m.redelivered, p.headers["x-delivery-count"]) == (b"r", True, 1)
    c.close()


# -- x-delayed-message exchange ------------------------------------------------------------------

def test_delayed_messages_are_routed_in_due_order(conn, ch, uniq):
    x, q = uniq("dx"), uniq("dq")
    delayed(ch, x, "topic")
    ch.queue_declare(q)
    ch.queue_bind(q, x, "orders.*")
    ensure_confirms(ch)
    inbox = Inbox(conn, ch, q, auto_ack=True)
    start = time.monotonic()
    for body, ms in [(b"late", 900), (b"soon", 200), (b"middle", 500)]:
        ch.basic_publish(x, "orders.new", body, with_delay(ms))
    ch.basic_publish(x, "orders.new", b"now", pika.BasicProperties())
    ch.basic_publish(x, "orders.new", b"negative", with_delay(-10))
    ch.basic_publish(x, "other", b"unbound", with_delay(100))
    got = [inbox.next(5 + SLACK) for _ in range(5)]
    assert [g[3] for g in got] == [b"now", b"negative", b"soon", b"middle", b"late"]
    for (arrived, _, p, body), ms in zip(got[2:], [200, 500, 900]):
        assert_on_time(body.decode(), arrived - start, ms / 1000)
        assert p.headers["x-delay"] == -ms, "routed with x-delay negated, as the plugin does"
    assert "x-delay" not in (got[0][2].headers or {})
    assert got[1][2].headers["x-delay"] == -10
    inbox.quiet(0.3)


def test_held_messages_see_the_bindings_of_their_due_time(conn, ch, uniq):
    x, q = uniq("dx"), uniq("late-bound")
    delayed(ch, x, "fanout")
    ch.queue_declare(q)
    ensure_confirms(ch)
    ch.basic_publish(x, "", b"held", with_delay(400))
    ch.queue_bind(q, x)                                  # bound while the message waits
    inbox = Inbox(conn, ch, q, auto_ack=True)
    assert inbox.next(5 + SLACK)[3] == b"held"


def test_mandatory_holds_are_not_returned(conn, ch, uniq):
    x = uniq("dx")
    delayed(ch, x, "direct")
    ensure_confirms(ch)
    returned = []
    ch.add_on_return_callback(lambda *a: returned.append(a))
    ch.basic_publish(x, "nowhere", b"held", with_delay(50), mandatory=True)   # confirmed, kept
    sync(ch)
    assert not returned
    with pytest.raises(pika.exceptions.UnroutableError):
        ch.basic_publish(x, "nowhere", b"now", mandatory=True)             # routed at once


@pytest.mark.parametrize("arguments", [{}, {"x-delayed-type": "nope"},
                                       {"x-delayed-type": "x-delayed-message"}])
def test_a_delayed_exchange_needs_an_existing_type(ch, uniq, arguments):
    with channel_closed(406, "PRECONDITION_FAILED - Invalid argument, 'x-delayed-type' must be "
                             "an existing exchange type"):
        ch.exchange_declare(uniq("dx"), "x-delayed-message", arguments=arguments)


def test_deleting_a_delayed_exchange_drops_its_held_messages(conn, ch, uniq):
    x, q = uniq("dx"), uniq("dq")
    delayed(ch, x, "fanout")
    ch.queue_declare(q)
    ch.queue_bind(q, x)
    ensure_confirms(ch)
    ch.basic_publish(x, "", b"doomed", with_delay(300))
    ch.exchange_delete(x)
    delayed(ch, x, "fanout")                             # same name again: a fresh store
    ch.queue_bind(q, x)
    Inbox(conn, ch, q, auto_ack=True).quiet(0.8)


@pytest.mark.parametrize("crash", [False, True], ids=["restart", "kill9"])
def test_held_messages_survive_restart_and_kill9(restartable_broker, crash):
    b = restartable_broker
    c = pika.BlockingConnection(b.params())
    ch = c.channel()
    delayed(ch, "dx.durable", "direct", durable=True)
    ch.queue_declare("dq.durable", durable=True)
    ch.queue_bind("dq.durable", "dx.durable", "k")
    ch.confirm_delivery()
    start = time.monotonic()
    for body, ms in [(b"two", 2500), (b"one", 1500)]:
        ch.basic_publish("dx.durable", "k", body, with_delay(ms, persistent=True))
    if crash:
        b.definitions_on_disk()
        b.kill9()                                        # confirmed: fsynced
        b.start()
    else:
        assert b.restart() == 0
    b.await_queue("dq.durable")
    c = pika.BlockingConnection(b.params())
    ch = c.channel()
    inbox = Inbox(c, ch, "dq.durable", auto_ack=True)
    for want, secs in [(b"one", 1.5), (b"two", 2.5)]:
        arrived, _, p, body = inbox.next(3 + SLACK)
        assert body == want
        assert_on_time(want.decode(), arrived - start, secs)
        assert p.headers["x-delay"] == -int(secs * 1000)
    inbox.quiet(0.3)
    c.close()
