"""Membership changes under load, in the namespace lab: a fourth node joins a running 3-node
cluster while a client publishes (with confirms, republishing what is nacked) through one
node and a consumer consumes through another; a queue declared through the new node is
replicated onto it and used; then a node that holds a replica of the first queue is stopped
and forgotten (`DELETE /api/nodes/{name}`) while the load goes on. A checker compares what
was confirmed with what the consumers got: nothing confirmed may be lost, a message comes
twice only if it was republished or redelivered. Ferry only (adding a node to the lab's
RabbitMQ cluster is not scripted)."""

from __future__ import annotations

import threading
import time

import pika
import pytest

from conftest import FERRY_BIN
from harness.cluster import FerryCluster, Lab, http_json, netns_available, poll
from harness.lab_clients import Consumer, check, drain, params, publish

pytestmark = pytest.mark.skipif(netns_available() is not None,
                                reason=f"cluster lab: {netns_available()}")


class Publisher(threading.Thread):
    """Publishes batches of 20 to `queue` through `node` until told to stop."""

    def __init__(self, node, queue: str, tag: str):
        super().__init__(daemon=True)
        self.node, self.queue, self.tag = node, queue, tag
        self.confirmed: set[str] = set()
        self.again: set[str] = set()
        self.done = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        k = 0
        try:
            while not self.done.is_set():
                batch = [f"{self.tag}{k + i}" for i in range(20)]
                k += 20
                ok, again = publish(self.node, self.queue, batch, time.monotonic() + 90)
                self.confirmed |= ok
                self.again |= again
        except BaseException as e:  # reported by the test
            self.error = e


def declare(node, queue: str) -> None:
    conn = pika.BlockingConnection(params(node))
    conn.channel().queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
    conn.close()


def members(node, queue: str) -> list[str]:
    st, q = http_json(node.endpoints["http"], "GET", f"/api/queues/%2F/{queue}")
    return sorted(q.get("members") or []) if st == 200 else []


@pytest.mark.timeout(600)
def test_a_node_joins_and_a_node_is_forgotten_under_load(tmp_path):
    lab = Lab(4)
    c = FerryCluster(lab, FERRY_BIN, tmp_path, seeds=3)
    try:
        c.start(1, 2, 3)
        declare(c.nodes[0], "cq")
        poll("the queue's three members", lambda: members(c.nodes[0], "cq"),
             lambda m: m == ["n1", "n2", "n3"], timeout=30)
        pub = Publisher(c.nodes[1], "cq", "a")
        consumer = Consumer(c.nodes[2], "cq")
        pub.start()
        consumer.start()
        poll("load flows", lambda: len(consumer.got), lambda n: n >= 100, timeout=60)

        # A fourth node joins under load.
        c.start(4)
        c.until(2, "four members running",
                lambda v: len(v) == 4 and all(n["running"] for n in v), timeout=60)
        # A queue declared through it is placed on it and works.
        declare(c.nodes[3], "cq4")
        poll("cq4 has three members, n4 among them", lambda: members(c.nodes[3], "cq4"),
             lambda m: len(m) == 3 and "n4" in m, timeout=30)
        ok4, again4 = publish(c.nodes[3], "cq4", [f"n{i}" for i in range(100)], time.monotonic() + 60)
        got4 = drain(c.nodes[0], "cq4")
        check("ferry cq4", ok4, again4, got4)

        # n1 (a member of cq) leaves for good under load: stopped, then forgotten.
        seen = len(consumer.got)
        c.nodes[0].stop()
        st, body = http_json(c.nodes[1].endpoints["http"], "DELETE", "/api/nodes/n1")
        assert st == 204, (st, body)
        c.until(2, "three members left", lambda v: sorted(n["name"] for n in v) == ["n2", "n3", "n4"],
                timeout=30)
        poll("the load flows on without n1", lambda: len(consumer.got),
             lambda n: n >= seen + 200, timeout=90)
    finally:
        if "pub" in locals():
            pub.done.set()
            pub.join(120)
        if "consumer" in locals():
            # Let the consumer take what the last publishes confirmed.
            if "pub" in locals() and pub.error is None:
                poll("the consumer got every confirmed message", consumer.bodies,
                     lambda got: pub.confirmed <= got, timeout=90)
            consumer.done.set()
            consumer.join(15)
        c.close()
        lab.close()
    assert pub.error is None, pub.error
    got = [b for b, _ in consumer.got]
    redelivered = frozenset(b for b, r in consumer.got if r)
    check("ferry cq", pub.confirmed, pub.again, got, redelivered)
    print(f"ferry: the consumer reconnected {consumer.reconnects} times")
