"""`rabbitmqadmin` (the management plugin's CLI, from Debian's rabbitmq-server package) against
both brokers, for what issue 10 added: policies, operator policies, vhost limits, the
consistent-hash exchange (a binding's key is its weight) and publishing with CC headers.
Each scenario runs the same commands on Ferry and, with FERRY_ORACLE=1, on RabbitMQ 3.10 with
the management plugin (the `api` fixture of test_management_api), and checks the outcome through
the tool's own `raw_json` listings and the HTTP API."""

from __future__ import annotations

import json
import shutil

import pytest

from harness.admin import rabbitmqadmin
from test_management_api import api, eventually, q  # noqa: F401  (the fixture)

pytestmark = pytest.mark.skipif(shutil.which("rabbitmqadmin") is None,
                                reason="rabbitmqadmin not installed (Debian's rabbitmq-server)")


@pytest.fixture
def admin(api):  # noqa: F811
    return rabbitmqadmin(api)


def listed(admin, what):
    return json.loads(admin("list", what))


def test_policies(api, admin, uniq):  # noqa: F811
    pol = uniq("adm")
    try:
        admin("declare", "policy", f"name={pol}", "pattern=^adm-never$",
              'definition={"max-length": 9}', "priority=4", "apply-to=queues")
        mine = [p for p in listed(admin, "policies") if p["name"] == pol]
        assert mine == [{"vhost": "/", "name": pol, "pattern": "^adm-never$",
                         "apply-to": "queues", "definition": {"max-length": 9}, "priority": 4}]
        # A bad definition is refused with the broker's reason.
        r = admin.run("declare", "policy", f"name={pol}-bad", "pattern=x",
                      'definition={"max-length": "nine"}', ok=False)
        assert r.returncode == 1 and "Validation failed" in r.stderr
        assert '"nine"&gt;&gt; is not a valid maximum length' in r.stderr, r.stderr
        admin("delete", "policy", f"name={pol}")
        assert api.call("GET", f"/api/policies/%2F/{q(pol)}")[0] == 404
        assert not [p for p in listed(admin, "policies") if p["name"] == pol]
    finally:
        api.call("DELETE", f"/api/policies/%2F/{q(pol)}")


def test_operator_policies(api, admin, uniq):  # noqa: F811
    pol = uniq("adm-op")
    try:
        admin("declare", "operator_policy", f"name={pol}", "pattern=^adm-never$",
              'definition={"max-length": 5, "message-ttl": 1000}', "apply-to=queues")
        mine = [p for p in listed(admin, "operator_policies") if p["name"] == pol]
        assert mine == [{"vhost": "/", "name": pol, "pattern": "^adm-never$",
                         "apply-to": "queues", "priority": 0,
                         "definition": {"max-length": 5, "message-ttl": 1000}}]
        admin("delete", "operator_policy", f"name={pol}")
        assert api.call("GET", f"/api/operator-policies/%2F/{q(pol)}")[0] == 404
        assert not [p for p in listed(admin, "operator_policies") if p["name"] == pol]
    finally:
        api.call("DELETE", f"/api/operator-policies/%2F/{q(pol)}")


def test_vhost_limits(api, admin, uniq):  # noqa: F811
    v = uniq("adm-v")
    admin("declare", "vhost", f"name={v}")
    try:
        admin("declare", "vhost_limit", f"vhost={v}", "name=max-queues", "value=3")
        admin("declare", "vhost_limit", f"vhost={v}", "name=max-connections", "value=10")
        mine = [x for x in listed(admin, "vhost_limits") if x["vhost"] == v]
        assert mine == [{"vhost": v, "value": {"max-queues": 3, "max-connections": 10}}]
        assert api.ok("GET", f"/api/vhost-limits/{q(v)}") == mine
        admin("delete", "vhost_limit", f"vhost={v}", "name=max-queues")
        mine = [x for x in listed(admin, "vhost_limits") if x["vhost"] == v]
        assert mine == [{"vhost": v, "value": {"max-connections": 10}}]
        admin("delete", "vhost_limit", f"vhost={v}", "name=max-connections")
        # RabbitMQ keeps listing the vhost, with an empty list as its value (its own
        # /api/vhost-limits/{vhost} is empty).
        assert [x for x in listed(admin, "vhost_limits") if x["vhost"] == v] == [
            {"vhost": v, "value": []}]
        assert api.ok("GET", f"/api/vhost-limits/{q(v)}") == []
    finally:
        admin("delete", "vhost", f"name={v}")


def test_consistent_hash_exchange_and_weights(api, admin, uniq):  # noqa: F811
    x, qa, qb = uniq("adm-hash"), uniq("adm-ha"), uniq("adm-hb")
    try:
        admin("declare", "exchange", f"name={x}", "type=x-consistent-hash", "durable=false")
        shown = api.ok("GET", f"/api/exchanges/%2F/{q(x)}")
        assert shown["type"] == "x-consistent-hash"
        for name, weight in ((qa, "1"), (qb, "3")):
            admin("declare", "queue", f"name={name}", "durable=false")
            admin("declare", "binding", f"source={x}", f"destination={name}",
                  f"routing_key={weight}")
        keys = {b["destination"]: b["routing_key"] for b in listed(admin, "bindings")
                if b["source"] == x}
        assert keys == {qa: "1", qb: "3"}
        for i in range(40):
            admin("publish", f"exchange={x}", f"routing_key=k{i}", f"payload=m{i}")

        def counts():
            c = [api.ok("GET", f"/api/queues/%2F/{q(n)}").get("messages", 0) for n in (qa, qb)]
            return c if sum(c) == 40 else None

        a, b = eventually(counts)
        assert a > 0 and b > 0, (a, b)
        # The same routing key always lands on the same queue.
        for _ in range(3):
            admin("publish", f"exchange={x}", "routing_key=k7", "payload=again")
        got = {}
        for n in (qa, qb):
            got[n] = [m["payload"] for m in json.loads(admin(
                "get", f"queue={n}", "count=100", "ackmode=ack_requeue_false"))]
        home = [n for n in (qa, qb) if "m7" in got[n]]
        assert len(home) == 1 and got[home[0]].count("again") == 3
    finally:
        for n in (qa, qb):
            admin.run("delete", "queue", f"name={n}", ok=False)
        admin.run("delete", "exchange", f"name={x}", ok=False)


def test_publish_with_cc_headers(api, admin, uniq):  # noqa: F811
    main_q, cc_q, bcc_q = uniq("adm-main"), uniq("adm-cc"), uniq("adm-bcc")
    try:
        for n in (main_q, cc_q, bcc_q):
            admin("declare", "queue", f"name={n}", "durable=false")
        props = json.dumps({"headers": {"CC": [cc_q], "BCC": [bcc_q]}})
        out = admin("publish", "exchange=amq.default", f"routing_key={main_q}",
                    "payload=fan", f"properties={props}")
        assert out == "Message published\n"
        for n in (main_q, cc_q, bcc_q):
            got = json.loads(admin("get", f"queue={n}", "ackmode=ack_requeue_false"))
            assert [m["payload"] for m in got] == ["fan"], n
            headers = got[0]["properties"].get("headers", {})
            assert headers.get("CC") == [cc_q] and "BCC" not in headers, (n, headers)
        # CC of another type than an array: RabbitMQ refuses the publish with its channel error.
        bad = json.dumps({"headers": {"CC": cc_q}})
        r = admin.run("publish", "exchange=amq.default", f"routing_key={main_q}",
                      "payload=bad", f"properties={bad}", ok=False)
        assert (r.returncode, r.stderr.strip()) == (
            1, '*** 406 PRECONDITION_FAILED - invalid message: '
               '{unacceptable_type_in_header,"CC",longstr}')
    finally:
        for n in (main_q, cc_q, bcc_q):
            admin.run("delete", "queue", f"name={n}", ok=False)
