"""A quorum queue on three nodes, each in its own network namespace, under faults: its leader
cut off from both followers, then healed; its leader paused (SIGSTOP) for 20 s; every node
restarted in turn; its leader killed (-9) while a consumer on a follower's node consumes; a
follower cut off, healed, then the leader killed; a follower's data wiped, rebuilt, then the
leader killed (Ferry only).
Meanwhile a client keeps publishing through another node (and republishes what is nacked, as
a client does). A checker compares what was confirmed with what a consumer finally gets: no
confirmed message may be lost, none consumed that was never published, none out of its
publish order; a message appears twice only if its first publish was nacked (in doubt) and it
was published again, or if it came again flagged redelivered. Against Ferry
and (FERRY_ORACLE=1) a 3-node RabbitMQ 3.10 cluster with the same quorum queue."""

from __future__ import annotations

import os
import shutil
import signal
import time

import pika
import pytest

from conftest import FERRY_BIN, KINDS
from harness.cluster import http_json, netns_available, poll
from harness.lab_clients import (Consumer, check, drain, lab_cluster_of, never_nacked, params,
                                 publish)

pytestmark = pytest.mark.skipif(netns_available() is not None,
                                reason=f"cluster lab: {netns_available()}")

QUORUM = {"x-queue-type": "quorum"}
# Bodies, in the order a test publishes them (one publisher, one confirm at a time).
A = [f"a{i}" for i in range(200)]
B = [f"b{i}" for i in range(200)]
C = [f"c{i}" for i in range(20)]


@pytest.fixture(params=KINDS)
def lab_cluster(request, tmp_path):
    yield from lab_cluster_of(request.param, FERRY_BIN, tmp_path)


def leader_index(lab, c, asked: int) -> int:
    """The 0-based node that leads the queue, as node `asked` says."""
    def fetch():
        st, q = http_json(c.nodes[asked].endpoints["http"], "GET", "/api/queues/%2F/cq")
        return q if st == 200 else None
    q = poll("the queue's leader", fetch, lambda q: bool(q and q.get("leader")), timeout=30)
    leader = q["leader"]
    for i, n in enumerate(c.nodes):
        if leader in (f"n{i + 1}", f"rabbit@{lab.addr(i + 1)}"):
            return i
    raise AssertionError(f"unknown leader {leader}")


def declare(c) -> None:
    conn = pika.BlockingConnection(params(c.nodes[0]))
    conn.channel().queue_declare("cq", durable=True, arguments=QUORUM)
    conn.close()


def processes(kind: str, node) -> list[int]:
    """The broker's OS processes (RabbitMQ: its beam.smp, not the wrapper script)."""
    return node._beam_pids() if kind == "rabbitmq" else [node.proc.pid]


@pytest.mark.timeout(400)
def test_a_consumer_on_a_follower_keeps_consuming_through_its_leaders_kill(lab_cluster):
    kind, lab, c = lab_cluster
    declare(c)
    leader = leader_index(lab, c, 0)
    consumer_node, publisher_node = (leader + 1) % 3, (leader + 2) % 3
    consumer = Consumer(c.nodes[consumer_node])
    consumer.start()
    try:
        before, again1 = publish(c.nodes[publisher_node], "cq", A[:200], time.monotonic() + 60)
        c.nodes[leader].kill9()
        during, again2 = publish(c.nodes[publisher_node], "cq", B[:200], time.monotonic() + 90)
        poll("the consumer got every confirmed message", consumer.bodies,
             lambda got: (before | during) <= got, timeout=90)
    finally:
        consumer.done.set()
        consumer.join(15)
    got = [b for b, _ in consumer.got]
    redelivered = frozenset(b for b, r in consumer.got if r)
    check(kind, before | during, again1 | again2, got, redelivered, A[:200] + B[:200])
    never_nacked(kind, again1, again2)
    print(f"{kind}: the consumer reconnected {consumer.reconnects} times")


@pytest.mark.timeout(400)
def test_a_partitioned_leader_loses_no_confirmed_message(lab_cluster):
    kind, lab, c = lab_cluster
    declare(c)
    leader = leader_index(lab, c, 0)
    follower = (leader + 1) % 3
    before, again1 = publish(c.nodes[follower], "cq", A[:100], time.monotonic() + 60)

    lab.isolate(leader + 1)
    during, again2 = publish(c.nodes[follower], "cq", B[:50], time.monotonic() + 90)
    lab.heal()
    # The old leader rejoins: a publish through it is confirmed again.
    after, again3 = publish(c.nodes[leader], "cq", C[:10], time.monotonic() + 90)

    got = drain(c.nodes[leader_index(lab, c, follower)])
    check(kind, before | during | after, again1 | again2 | again3, got, order=A[:100] + B[:50] + C[:10])
    never_nacked(kind, again1, again2, again3)


@pytest.mark.timeout(400)
def test_an_isolated_follower_catches_up_and_the_leaders_loss_loses_nothing(lab_cluster):
    """A follower cut off from both others while publishing goes on through the other
    follower (the leader and it are a majority); healed; then the leader is killed (-9): the
    two left elect a leader and every confirmed message is there, published through the
    follower that was cut off too."""
    kind, lab, c = lab_cluster
    declare(c)
    leader = leader_index(lab, c, 0)
    cut, other = (leader + 1) % 3, (leader + 2) % 3
    before, again1 = publish(c.nodes[other], "cq", A[:100], time.monotonic() + 60)
    lab.isolate(cut + 1)
    during, again2 = publish(c.nodes[other], "cq", B[:100], time.monotonic() + 90)
    lab.heal()
    c.nodes[leader].kill9()
    after, again3 = publish(c.nodes[cut], "cq", C[:20], time.monotonic() + 90)
    got = drain(c.nodes[cut])
    check(kind, before | during | after, again1 | again2 | again3, got, order=A[:100] + B[:100] + C[:20])
    never_nacked(kind, again1, again2, again3)


@pytest.mark.timeout(400)
def test_a_wiped_follower_is_rebuilt_and_the_leaders_loss_loses_nothing(lab_cluster):
    """A follower's data directory is lost (killed -9, wiped) while publishing goes on through
    the other follower; it comes back empty and is rebuilt from the others (a voter of the
    queue's group again); then the leader is killed (-9): the rebuilt node and the other elect
    a leader, and every confirmed message is there, published through the rebuilt node too."""
    kind, lab, c = lab_cluster
    if kind != "ferry":
        pytest.skip("RabbitMQ 3.10 does not rebuild a member whose data directory is gone (it "
                    "must be forgotten and joined again by hand): not comparable")
    declare(c)
    leader = leader_index(lab, c, 0)
    wiped, other = (leader + 1) % 3, (leader + 2) % 3
    before, again1 = publish(c.nodes[other], "cq", A[:100], time.monotonic() + 60)
    node = c.nodes[wiped]
    node.kill9()
    shutil.rmtree(node.data_dir)
    node.data_dir.mkdir()
    during, again2 = publish(c.nodes[other], "cq", B[:100], time.monotonic() + 90)
    c.start(wiped + 1)
    poll("the wiped node says it is rebuilt from the others",
         lambda: node.log_path.read_text(errors="replace"),
         lambda log: "lost its data; it is rebuilt from the others" in log, timeout=60)

    # A group's `members` are the voters of every configuration in force: while the rebuilt
    # node is made a voter again (a joint configuration, then the new one) it is listed only
    # once the new one is in that node's log. The two that survive the leader must both have
    # it, or they could not elect a leader without it (Raft: the old configuration's majority
    # needed the leader).
    def members_seen_from(i):
        st, q = http_json(c.nodes[i].endpoints["http"], "GET", "/api/queues/%2F/cq")
        return sorted(q.get("members") or []) if st == 200 else None
    for i in (wiped, other):
        poll(f"node {i + 1} has the wiped node among the queue's voters again",
             lambda i=i: members_seen_from(i), lambda m: m == ["n1", "n2", "n3"], timeout=90)
    c.nodes[leader].kill9()
    after, again3 = publish(node, "cq", C[:20], time.monotonic() + 90)
    got = drain(node)
    check(kind, before | during | after, again1 | again2 | again3, got,
          order=A[:100] + B[:100] + C[:20])
    never_nacked(kind, again1, again2, again3)


@pytest.mark.timeout(400)
def test_a_paused_leader_loses_no_confirmed_message(lab_cluster):
    kind, lab, c = lab_cluster
    declare(c)
    leader = leader_index(lab, c, 0)
    follower = (leader + 1) % 3
    before, again1 = publish(c.nodes[follower], "cq", A[:100], time.monotonic() + 60)
    pids = processes(kind, c.nodes[leader])
    paused_at = time.monotonic()
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        during, again2 = publish(c.nodes[follower], "cq", B[:50], time.monotonic() + 90)
        # Paused for 20 s in all.
        time.sleep(max(0.0, 20 - (time.monotonic() - paused_at)))
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    after, again3 = publish(c.nodes[leader], "cq", C[:10], time.monotonic() + 90)
    got = drain(c.nodes[leader_index(lab, c, follower)])
    check(kind, before | during | after, again1 | again2 | again3, got, order=A[:100] + B[:50] + C[:10])
    never_nacked(kind, again1, again2, again3)


@pytest.mark.timeout(600)
def test_a_rolling_restart_loses_no_confirmed_message(lab_cluster):
    kind, lab, c = lab_cluster
    declare(c)
    confirmed: set[str] = set()
    republished: set[str] = set()
    order = A[:50]
    ok, again = publish(c.nodes[0], "cq", order, time.monotonic() + 60)
    confirmed |= ok
    republished |= again
    for i in range(3):
        c.nodes[i].restart()
        # Through another node while this one comes back, then through it.
        for j, node in ((i + 1) % 3, c.nodes[(i + 1) % 3]), (i, c.nodes[i]):
            bodies = [f"r{i}n{j}m{k}" for k in range(30)]
            order = order + bodies
            ok, again = publish(node, "cq", bodies, time.monotonic() + 90)
            confirmed |= ok
            republished |= again
    got = drain(c.nodes[leader_index(lab, c, 0)])
    check(kind, confirmed, republished, got, order=order)
