"""Assertions on AMQP errors: exact reply code and exact reply text (as RabbitMQ 3.10 sends them).

Set FERRY_LAX_REPLY_TEXT=1 to compare only the symbolic prefix of the text (``NOT_FOUND``,
``PRECONDITION_FAILED`` ...) while the exact wording is still being matched.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager

import pika.exceptions as px
import pytest

LAX = os.environ.get("FERRY_LAX_REPLY_TEXT") == "1"


def amqp_reply_text(text: str) -> str:
    """reply-text is a shortstr: RabbitMQ cuts texts longer than 255 bytes to their first
    252 bytes followed by '...'."""
    raw = text.encode()
    if len(raw) <= 255:
        return text
    return (raw[:252] + b"...").decode(errors="replace")


def ensure_confirms(ch) -> None:
    """Put a pika BlockingChannel in confirm mode (once), so each publish returns only after
    the broker has enqueued it. Without confirms, a count or get right after a publish may
    race the broker (RabbitMQ gives no such ordering guarantee)."""
    if not ch._delivery_confirmation:
        ch.confirm_delivery()


def check_reply(exc, code: int, text: str) -> None:
    text = amqp_reply_text(text)
    got_code, got_text = exc.reply_code, exc.reply_text
    assert got_code == code, f"reply code {got_code} ({got_text!r}), expected {code} ({text!r})"
    if LAX:
        assert got_text.split(" - ")[0] == text.split(" - ")[0], \
            f"reply text {got_text!r}, expected prefix of {text!r}"
    else:
        assert got_text == text, f"reply text\n  got      {got_text!r}\n  expected {text!r}"


@contextmanager
def channel_closed(code: int, text: str):
    """The block must end with the broker closing the channel (channel.close) with code/text."""
    with pytest.raises(px.ChannelClosedByBroker) as ei:
        yield ei
    check_reply(ei.value, code, text)


@contextmanager
def connection_closed(code: int, text: str):
    """The block must end with the broker closing the whole connection (connection.close)."""
    with pytest.raises(px.ConnectionClosedByBroker) as ei:
        yield ei
    check_reply(ei.value, code, text)


def sync(ch) -> None:
    """A synchronous round trip on ch, so everything sent before it has been processed
    (and an asynchronous channel error has arrived)."""
    ch.basic_qos(prefetch_count=0)


def wait_for(conn, predicate, timeout: float = 5.0, what: str = "condition"):
    """Process pika events on conn until predicate() is true (no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        conn.process_data_events(time_limit=min(0.05, left))


def drain(ch, queue: str, auto_ack: bool = True, limit: int = 100000):
    """basic.get until get-empty; returns [(method, properties, body)]."""
    out = []
    for _ in range(limit):
        m, p, b = ch.basic_get(queue, auto_ack=auto_ack)
        if m is None:
            return out
        out.append((m, p, b))
    raise AssertionError(f"more than {limit} messages in {queue}")


def bodies(ch, queue: str) -> list[bytes]:
    return [b for _, _, b in drain(ch, queue)]


def message_count(ch, queue: str) -> int:
    return ch.queue_declare(queue, passive=True).method.message_count


def eventually(fn, expected, timeout: float = 5.0):
    """Poll fn() until it returns expected (for effects the broker applies asynchronously,
    e.g. requeueing after a connection closes); returns the last value seen."""
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if got == expected or time.monotonic() > deadline:
            return got
        time.sleep(0.02)


def counts(ch, queue: str) -> tuple[int, int]:
    """(message_count, consumer_count) from a passive queue.declare."""
    ok = ch.queue_declare(queue, passive=True).method
    return ok.message_count, ok.consumer_count
