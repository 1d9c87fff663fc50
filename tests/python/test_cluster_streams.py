"""A replicated stream on three nodes, each in its own network namespace, under faults: its
leader cut off from both followers while a client publishes through a follower (republishing
what is nacked), then healed; its leader killed (-9). A checker reads the stream from its
first offset through every node: every confirmed message is there, each node has the same
message at the same offset (offsets dense from 0), and a message appears twice only if it was
published again after a nack. Against Ferry and (FERRY_ORACLE=1) a 3-node RabbitMQ 3.10
cluster with the same stream."""

from __future__ import annotations

import time

import pika
import pytest

from conftest import KINDS, FERRY_BIN
from harness.cluster import http_json, netns_available, poll
from harness.lab_clients import lab_cluster_of, params, publish

pytestmark = pytest.mark.skipif(netns_available() is not None,
                                reason=f"cluster lab: {netns_available()}")

STREAM = {"x-queue-type": "stream"}


@pytest.fixture(params=KINDS)
def lab_cluster(request, tmp_path):
    yield from lab_cluster_of(request.param, FERRY_BIN, tmp_path)


def declare(c) -> None:
    conn = pika.BlockingConnection(params(c.nodes[0]))
    conn.channel().queue_declare("st", durable=True, arguments=STREAM)
    conn.close()


def leader_index(kind, lab, c, asked: int) -> int:
    """The 0-based node that leads the stream, as node `asked` says (RabbitMQ 3.10 shows a
    stream's leader as its `node` only)."""
    key = "leader" if kind == "ferry" else "node"

    def fetch():
        st, q = http_json(c.nodes[asked].endpoints["http"], "GET", "/api/queues/%2F/st")
        return q if st == 200 else None
    q = poll("the stream's leader", fetch, lambda q: bool(q and q.get(key)), timeout=60)
    for i in range(len(c.nodes)):
        if q[key] in (f"n{i + 1}", f"rabbit@{lab.addr(i + 1)}"):
            return i
    raise AssertionError(f"unknown leader {q[key]}")


def read_all(node, at_least: int, timeout: float = 90) -> list[tuple[int, str]]:
    """(offset, body) from the first offset on, through `node`, until `at_least` messages and
    then 2 s without more (a replica may still be catching up: it is read again until then)."""
    deadline = time.monotonic() + timeout
    while True:
        got: list[tuple[int, str]] = []
        try:
            conn = pika.BlockingConnection(params(node))
            ch = conn.channel()
            ch.basic_qos(prefetch_count=200)
            idle_since = time.monotonic()
            for method, props, body in ch.consume("st", arguments={"x-stream-offset": "first"},
                                                  inactivity_timeout=0.5):
                if method is None:
                    if time.monotonic() - idle_since > 2:
                        break
                    continue
                idle_since = time.monotonic()
                got.append((int(props.headers["x-stream-offset"]), body.decode()))
                ch.basic_ack(method.delivery_tag)
            conn.close()
        except pika.exceptions.AMQPError:
            pass
        if len(got) >= at_least or time.monotonic() > deadline:
            return got
        time.sleep(0.5)


def check(kind: str, c, confirmed: set[str], republished: set[str]) -> None:
    logs = [read_all(n, len(confirmed)) for n in c.nodes]
    first = logs[0]
    for i, log in enumerate(logs):
        offsets = [o for o, _ in log]
        assert offsets == list(range(offsets[0] if offsets else 0, (offsets[0] if offsets else 0) + len(offsets))), \
            f"{kind}: node {i + 1}: offsets not dense"
        common = min(len(log), len(first))
        assert log[:common] == first[:common], f"{kind}: node {i + 1} differs from node 1"
        bodies = [b for _, b in log]
        lost = confirmed - set(bodies)
        assert not lost, f"{kind}: node {i + 1}: confirmed and lost: {sorted(lost)[:10]}"
        seen: set[str] = set()
        twice = {b for b in bodies if b in seen or seen.add(b)}
        assert twice <= republished, f"{kind}: duplicates not republished: {sorted(twice - republished)[:10]}"
    print(f"{kind}: {len(confirmed)} confirmed, {[len(x) for x in logs]} read per node, "
          f"{len(republished)} republished")


@pytest.mark.timeout(400)
def test_a_partitioned_stream_leader_keeps_every_confirmed_message_at_one_offset(lab_cluster):
    kind, lab, c = lab_cluster
    if kind == "rabbitmq":
        # Seen here (2026-12-06, RabbitMQ 3.10.8, net_ticktime 10 s): publishes through a
        # follower while the leader is isolated got 541 INTERNAL_ERROR, then 506 "Stream
        # coordinator unavailable", then one waited for its confirm for over 5 minutes.
        pytest.skip("RabbitMQ 3.10 streams do not recover publishing within this test's bounds")
    declare(c)
    leader = leader_index(kind, lab, c, 0)
    follower = (leader + 1) % 3
    before, again1 = publish(c.nodes[follower], "st", [f"a{i}" for i in range(100)], time.monotonic() + 60)
    lab.isolate(leader + 1)
    during, again2 = publish(c.nodes[follower], "st", [f"b{i}" for i in range(50)], time.monotonic() + 120)
    lab.heal()
    after, again3 = publish(c.nodes[leader], "st", [f"c{i}" for i in range(10)], time.monotonic() + 120)
    check(kind, c, before | during | after, again1 | again2 | again3)


@pytest.mark.timeout(400)
def test_a_killed_stream_leader_loses_no_confirmed_message(lab_cluster):
    kind, lab, c = lab_cluster
    declare(c)
    leader = leader_index(kind, lab, c, 0)
    publisher = (leader + 1) % 3
    before, again1 = publish(c.nodes[publisher], "st", [f"a{i}" for i in range(200)], time.monotonic() + 60)
    c.nodes[leader].kill9()
    during, again2 = publish(c.nodes[publisher], "st", [f"b{i}" for i in range(200)], time.monotonic() + 120)
    c.nodes[leader].start()
    check(kind, c, before | during, again1 | again2)
