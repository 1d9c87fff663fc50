"""Clients of the namespace-lab cluster suites (test_cluster_queues.py,
test_cluster_streams.py): the lab fixture's cluster of either kind, connection parameters
for one node, and a publisher that republishes what is nacked, as a client does."""

from __future__ import annotations

import threading
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


def check(kind: str, confirmed: set[str], republished: set[str], got: list[str],
          redelivered: frozenset[str] = frozenset(), order: list[str] | None = None) -> None:
    """The checker: lost (confirmed, never consumed), phantom (consumed, never published),
    duplicated (consumed twice, neither republished nor redelivered) and, given the publish
    `order` (one publisher, each publish confirmed before the next), reordered (consumed
    before a message published earlier; republished and redelivered ones aside) — each must
    be none. `redelivered`: bodies that came (again) flagged redelivered, as after a
    failover."""
    lost = confirmed - set(got)
    assert not lost, f"{kind}: confirmed and lost: {sorted(lost)[:10]}"
    published = set(order) if order is not None else confirmed | republished
    phantom = set(got) - published
    assert not phantom, f"{kind}: consumed but never published: {sorted(phantom)[:10]}"
    seen: set[str] = set()
    twice = {b for b in got if b in seen or seen.add(b)}
    unexplained = twice - republished - redelivered
    assert not unexplained, f"{kind}: duplicates neither republished nor redelivered: {sorted(unexplained)}"
    reordered = []
    if order is not None:
        at = {b: i for i, b in enumerate(order)}
        firsts: list[str] = []
        seen = set()
        for b in got:
            if b not in seen and b not in republished and b not in redelivered:
                firsts.append(b)
            seen.add(b)
        reordered = [b for prev, b in zip(firsts, firsts[1:]) if at[b] < at[prev]]
        assert not reordered, f"{kind}: consumed out of publish order: {reordered[:10]}"
    print(f"{kind}: {len(confirmed)} confirmed, {len(got)} consumed, {len(twice)} duplicates "
          f"(republished after a nack or redelivered), {len(republished)} republished, "
          f"0 lost, 0 phantom" + (", 0 reordered" if order is not None else ""))


def never_nacked(kind: str, *again: set[str]) -> None:
    """Ferry: a publish through a node that stays up is never nacked nor in doubt: a batch
    whose fate is unknown after a failover is sent again, numbered, and applied once
    (publisher deduplication, docs/cluster.md). RabbitMQ may nack them."""
    if kind == "ferry":
        republished = set().union(*again)
        assert not republished, f"ferry nacked: {sorted(republished)[:10]}"


def drain(node, queue: str = "cq") -> list[str]:
    """Consumes `queue` through `node` (acking) until 3 s pass without a message."""
    conn = pika.BlockingConnection(params(node))
    ch = conn.channel()
    got = []
    idle_since = time.monotonic()
    for method, _, body in ch.consume(queue, inactivity_timeout=1.0):
        if method is None:
            if time.monotonic() - idle_since > 3:
                break
            continue
        idle_since = time.monotonic()
        got.append(body.decode())
        ch.basic_ack(method.delivery_tag)
    ch.cancel()
    conn.close()
    return got


class Consumer(threading.Thread):
    """Consumes a queue through one node with a prefetch of 50, acking each message; after the
    broker cancels it or its connection fails it reconnects, as a client does. Records each
    delivery as (body, redelivered)."""

    def __init__(self, node, queue: str = "cq"):
        super().__init__(daemon=True)
        self.node = node
        self.queue = queue
        self.got: list[tuple[str, bool]] = []
        self.reconnects = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                conn = pika.BlockingConnection(params(self.node))
                ch = conn.channel()
                ch.basic_qos(prefetch_count=50)
                for method, _, body in ch.consume(self.queue, inactivity_timeout=0.5):
                    if self.done.is_set():
                        break
                    if method is not None:
                        self.got.append((body.decode(), bool(method.redelivered)))
                        ch.basic_ack(method.delivery_tag)
                conn.close()
            except pika.exceptions.AMQPError:
                pass
            if not self.done.is_set():
                self.reconnects += 1
                time.sleep(0.2)  # a client's reconnect pause

    def bodies(self) -> set[str]:
        return {b for b, _ in list(self.got)}
