"""Clients of the namespace-lab cluster suites (test_cluster_queues.py,
test_cluster_streams.py): the lab fixture's cluster of either kind, connection parameters
for one node, and a publisher that republishes what is nacked, as a client does."""

from __future__ import annotations

import time

import pika

from harness.cluster import FerryCluster, Lab
from harness.rabbit_cluster import RabbitCluster


def lab_cluster_of(kind: str, ferry_bin, tmp_path):
    """Yields (kind, lab, cluster): three namespaces and a started cluster of `kind`."""
    lab = Lab(3)
    c = None
    try:
        c = FerryCluster(lab, ferry_bin, tmp_path) if kind == "ferry" else RabbitCluster(lab, tmp_path)
        c.start_all()
        yield kind, lab, c
    finally:
        if c is not None:
            c.close()
        lab.close()


def params(node) -> pika.ConnectionParameters:
    return pika.ConnectionParameters(node.host, node.port, "/", pika.PlainCredentials("guest", "guest"),
                                     connection_attempts=1, socket_timeout=10,
                                     blocked_connection_timeout=30)


def publish(node, queue: str, bodies: list[str], deadline: float) -> tuple[set[str], set[str]]:
    """Publishes each body to `queue` with confirms, republishing a nacked (or unanswered) one
    on a new connection until it is confirmed or `deadline` passes. Returns (confirmed,
    published more than once)."""
    confirmed: set[str] = set()
    again: set[str] = set()
    pending = list(bodies)
    while pending and time.monotonic() < deadline:
        try:
            conn = pika.BlockingConnection(params(node))
            ch = conn.channel()
            ch.confirm_delivery()
            while pending and time.monotonic() < deadline:
                b = pending[0]
                try:
                    ch.basic_publish("", queue, b.encode(),
                                     pika.BasicProperties(delivery_mode=2), mandatory=True)
                    confirmed.add(b)
                    pending.pop(0)
                except (pika.exceptions.NackError, pika.exceptions.UnroutableError):
                    # In doubt: publish it again on a fresh connection (RabbitMQ 3.10
                    # keeps nacking on a channel whose queue client lost its leader).
                    again.add(b)
                    break
            conn.close()
            if pending:
                time.sleep(0.2)  # a client's pause before it reconnects
        except pika.exceptions.AMQPError:
            # The channel or connection went away under the partition: in doubt.
            if pending:
                again.add(pending[0])
            time.sleep(0.2)  # a client's reconnect pause
    assert not pending, f"not confirmed by the deadline: {pending[:5]}..."
    return confirmed, again
