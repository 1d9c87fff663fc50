"""A Ferry cluster of three real processes, each in its own network namespace (harness/cluster.py):
the metadata group forms from the seeds, survives a partition of its leader from both
followers and a paused (SIGSTOP) leader, and heals by itself. Ferry only: these are Ferry's
metadata group's own behaviours (the RabbitMQ 3-node oracle, harness/rabbit_cluster.py, runs
where the behaviours are comparable: test_cluster_definitions.py)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from conftest import FERRY_BIN
from harness.cluster import FerryCluster, Lab, netns_available

pytestmark = pytest.mark.skipif(netns_available() is not None,
                                reason=f"cluster lab: {netns_available()}")


@pytest.fixture
def cluster(tmp_path):
    lab = Lab(3)
    c = FerryCluster(lab, FERRY_BIN, tmp_path)
    try:
        c.start_all()
        yield c
    finally:
        c.close()
        lab.close()


def leaders(view: list[dict]) -> list[str]:
    return [n["name"] for n in view if n.get("metadata_leader")]


def all_up(view: list[dict]) -> bool:
    return len(view) == 3 and all(n["running"] for n in view) and len(leaders(view)) == 1


def settled(cluster, what: str, timeout: float = 30.0) -> str:
    """Polls every node until all three are running and name the same single leader (right
    after a heal a node may still start an election: openraft 0.9 has no pre-vote)."""
    deadline = time.monotonic() + timeout
    while True:
        views = [cluster.nodes_view(i) for i in (1, 2, 3)]
        named = {tuple(leaders(v)) for v in views}
        if all(all_up(v) for v in views) and len(named) == 1:
            return leaders(views[0])[0]
        assert time.monotonic() < deadline, f"{what}: {views}"
        time.sleep(0.2)  # polling interval of a state that changes on its own


def test_the_cluster_forms_across_namespaces(cluster):
    views = [cluster.until(i, "three running members and one leader", all_up) for i in (1, 2, 3)]
    assert {leaders(v)[0] for v in views} == {leaders(views[0])[0]}, "everyone names one leader"
    assert len({n["cluster_id"] for v in views for n in v}) == 1, "one cluster id"
    assert sorted(n["name"] for n in views[0]) == ["n1", "n2", "n3"]
    assert {n["cluster_address"] for n in views[0]} == {
        f"{cluster.lab.addr(i)}:25672" for i in (1, 2, 3)}


def test_a_leader_cut_off_from_both_followers_is_replaced_and_heals(cluster):
    first = leaders(cluster.until(1, "a leader", all_up))[0]
    k = int(first[1:])
    others = [i for i in (1, 2, 3) if i != k]
    cluster.lab.isolate(k)
    view = cluster.until(others[0], "a new leader on the majority side",
                         lambda v: leaders(v) and leaders(v)[0] != first
                         and any(n["name"] == first and not n["running"] for n in v))
    new = leaders(view)[0]
    cluster.until(others[1], "the other follower agrees",
                  lambda v: leaders(v) == [new])
    cluster.until(k, "the isolated node sees it is cut off",
                  lambda v: next(n for n in v if n["name"] == first)["partitions"]
                  and all(not n["running"] for n in v if n["name"] != first))
    cluster.lab.heal()
    settled(cluster, "healed: everyone running, one leader named by all")


def test_a_paused_leader_is_replaced_and_rejoins(cluster):
    first = leaders(cluster.until(1, "a leader", all_up))[0]
    k = int(first[1:])
    other = next(i for i in (1, 2, 3) if i != k)
    pid = cluster.nodes[k - 1].proc.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        cluster.until(other, "a new leader while the old one is paused",
                      lambda v: leaders(v) and leaders(v)[0] != first)
    finally:
        os.kill(pid, signal.SIGCONT)
    settled(cluster, "the paused node back, one leader named by all")
