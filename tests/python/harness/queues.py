"""Helpers the queue-feature suites share (test_queue_features*.py): dead-letter arguments,
x-death summaries, and a confirming channel on a broker a test restarts itself."""

from __future__ import annotations

import pika


def dlx_args(target: str, **extra) -> dict:
    """Arguments dead-lettering through the default exchange straight into `target`."""
    return {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": target, **extra}


def deaths(props) -> list[tuple[str, str, int]]:
    """(queue, reason, count) of every x-death entry, in header order."""
    return [(d["queue"], d["reason"], d["count"]) for d in (props.headers or {}).get("x-death", [])]


def open_ch(b):
    """A new connection to broker `b` and a channel on it with publisher confirms."""
    c = pika.BlockingConnection(b.params())
    ch = c.channel()
    ch.confirm_delivery()
    return c, ch
