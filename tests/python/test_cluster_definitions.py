"""Cluster-wide definitions on three nodes, each in its own network namespace, against Ferry
and (FERRY_ORACLE=1) a 3-node RabbitMQ 3.10 cluster in the same kind of lab: what is made
through one node (a user, a vhost, a permission, a policy, a durable exchange and an
exchange-to-exchange binding) holds on every node, a conflicting declaration through another
node gets the same 406 on both brokers, and deletes travel too."""

from __future__ import annotations

import pika
import pytest

from conftest import FERRY_BIN, KINDS
from harness.cluster import FerryCluster, Lab, http_json, netns_available, poll
from harness.rabbit_cluster import RabbitCluster

pytestmark = pytest.mark.skipif(netns_available() is not None,
                                reason=f"cluster lab: {netns_available()}")


class Nodes:
    """The same view of either cluster: HTTP requests and AMQP parameters per node."""

    def __init__(self, kind: str, cluster):
        self.kind = kind
        self.c = cluster

    def http(self, i: int) -> str:
        return self.c.nodes[i - 1].endpoints["http"]

    def req(self, i: int, method: str, path: str, body=None, user=("guest", "guest")):
        return http_json(self.http(i), method, path, body, user)

    def until(self, i: int, path: str, what: str, ok, timeout: float = 20.0):
        """Polls GET path on node i: another node applies a change a moment later."""
        return poll(f"{what} (node {i} GET {path})", lambda: self.req(i, "GET", path),
                    lambda r: ok(*r), timeout, every=0.1)

    def params(self, i: int, user: str, password: str, vhost: str) -> pika.ConnectionParameters:
        n = self.c.nodes[i - 1]
        return pika.ConnectionParameters(n.host, n.port, vhost,
                                         pika.PlainCredentials(user, password),
                                         connection_attempts=1, socket_timeout=10)


@pytest.fixture(params=KINDS)
def nodes(request, tmp_path):
    lab = Lab(3)
    c = None
    try:
        if request.param == "ferry":
            c = FerryCluster(lab, FERRY_BIN, tmp_path)
        else:
            c = RabbitCluster(lab, tmp_path)
        c.start_all()
        yield Nodes(request.param, c)
    finally:
        if c is not None:
            c.close()
        lab.close()


@pytest.mark.timeout(300)  # a 3-node RabbitMQ takes ~25 s to form, more on a busy machine
def test_definitions_made_through_any_node_hold_on_every_node(nodes):
    perms = {"configure": ".*", "write": ".*", "read": ".*"}
    assert nodes.req(1, "PUT", "/api/users/alice", {"password": "pw", "tags": "administrator"})[0] == 201
    assert nodes.req(2, "PUT", "/api/vhosts/prod", {})[0] == 201
    assert nodes.req(3, "PUT", "/api/permissions/prod/alice", perms)[0] == 201
    for i in (1, 2, 3):
        nodes.until(i, "/api/permissions/prod/alice", "the permission", lambda st, _: st == 200)
        pika.BlockingConnection(nodes.params(i, "alice", "pw", "prod")).close()

    c = pika.BlockingConnection(nodes.params(2, "alice", "pw", "prod"))
    ch = c.channel()
    ch.exchange_declare("orders", "topic", durable=True)
    ch.exchange_declare("audit", "fanout", durable=True)
    ch.exchange_bind("audit", "orders", "eu.#")
    c.close()
    for i in (1, 3):
        nodes.until(i, "/api/bindings/prod/e/orders/e/audit", "the binding",
                    lambda st, b: st == 200 and [x["routing_key"] for x in b] == ["eu.#"])

    # The same refusal through another node on both brokers.
    c = pika.BlockingConnection(nodes.params(3, "alice", "pw", "prod"))
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        c.channel().exchange_declare("orders", "fanout", durable=True)
    assert e.value.reply_code == 406
    assert "inequivalent arg 'type'" in e.value.reply_text
    c.close()

    policy = {"pattern": "^t", "definition": {"message-ttl": 60000}, "apply-to": "queues"}
    assert nodes.req(3, "PUT", "/api/policies/prod/ttl", policy)[0] == 201
    nodes.until(1, "/api/policies/prod", "the policy",
                lambda st, b: st == 200 and [p["name"] for p in b] == ["ttl"])

    assert nodes.req(1, "DELETE", "/api/exchanges/prod/audit", user=("alice", "pw"))[0] == 204
    assert nodes.req(2, "DELETE", "/api/users/alice")[0] == 204
    for i in (1, 2, 3):
        nodes.until(i, "/api/exchanges/prod/audit", "audit gone", lambda st, _: st == 404)
        nodes.until(i, "/api/users/alice", "alice gone", lambda st, _: st == 404)
