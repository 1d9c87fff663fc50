"""Policies and operator policies (RabbitMQ 3.10's /api/policies and /api/operator-policies).

Each scenario runs against Ferry and, with FERRY_ORACLE=1, against RabbitMQ with the management
plugin (the `api` fixture of test_management_api). Patterns are anchored on the test's unique
names so scenarios sharing a broker never match each other's queues; every policy is deleted
at the end of its test. RabbitMQ applies a policy change to running queues asynchronously, so
effects are awaited with `eventually`.
"""

from __future__ import annotations

import json
import shutil

import pika
import pytest

from harness.admin import rabbitmqadmin
from harness.expect import ensure_confirms, wait_for
from test_management_api import api, eventually, q  # noqa: F401  (the fixture)
from test_streams import Reader
from test_streams import declare as declare_stream
from test_streams import publish as publish_confirmed


def anchored(name: str) -> str:
    """A pattern matching exactly `name` (test names hold [A-Za-z0-9_.-])."""
    return "^" + name.replace(".", "\\.") + "$"


class Policies:
    """Sets policies and removes them when the test ends."""

    def __init__(self, api):
        self.api = api
        self.made: list[tuple[str, str]] = []

    def put(self, name, pattern, definition, kind="policies", expect=(201, 204), **extra):
        body = {"pattern": pattern, "definition": definition, **extra}
        path = f"/api/{kind}/%2F/{q(name)}"
        st, out = self.api.call("PUT", path, body)
        assert st in expect, f"PUT {path}: {st} {out}"
        self.made.append((kind, name))
        return st

    def delete(self, name, kind="policies"):
        assert self.api.call("DELETE", f"/api/{kind}/%2F/{q(name)}")[0] == 204
        self.made.remove((kind, name))

    def cleanup(self):
        for kind, name in self.made:
            self.api.call("DELETE", f"/api/{kind}/%2F/{q(name)}")


@pytest.fixture
def policies(api):
    p = Policies(api)
    yield p
    p.cleanup()


@pytest.fixture
def channel(api):
    conn = pika.BlockingConnection(api.broker.params())
    ch = conn.channel()
    yield ch
    if conn.is_open:
        conn.close()


def depth(ch, name: str) -> int:
    return ch.queue_declare(name, passive=True).method.message_count


def publish(ch, name: str, bodies):
    for b in bodies:
        ch.basic_publish("", name, b.encode() if isinstance(b, str) else b)


def drain(ch, name: str) -> list[bytes]:
    out = []
    while True:
        m, _, body = ch.basic_get(name, auto_ack=True)
        if m is None:
            return out
        out.append(body)


def test_set_list_show_delete(api, uniq, policies):
    name = uniq("pol")
    path = f"/api/policies/%2F/{q(name)}"
    body = {"pattern": anchored(uniq("never")), "definition": {"max-length": 3},
            "priority": 7, "apply-to": "queues"}
    assert api.call("PUT", path, body)[0] == 201
    policies.made.append(("policies", name))
    assert api.call("PUT", path, body)[0] == 204
    shown = api.ok("GET", path)
    assert shown == {"vhost": "/", "name": name, "pattern": body["pattern"],
                     "apply-to": "queues", "definition": {"max-length": 3}, "priority": 7}
    assert shown in api.ok("GET", "/api/policies")
    assert shown in api.ok("GET", "/api/policies/%2F")
    policies.delete(name)
    assert api.call("DELETE", path) == (404, {"error": "Object Not Found", "reason": "Not Found"})
    assert api.call("GET", path)[0] == 404
    assert api.call("PUT", f"/api/policies/no-such-vhost/{q(name)}", body) == (
        404, {"error": "not_found", "reason": "vhost_not_found"})
    assert api.call("GET", "/api/policies/no-such-vhost")[0] == 404
    # Defaults: apply-to all, priority 0.
    policies.put(name, "^x$", {"message-ttl": 5})
    assert api.ok("GET", path)["apply-to"] == "all" and api.ok("GET", path)["priority"] == 0


VALIDATION = [
    ({"definition": {"message-ttl": -1}}, "-1 is not a valid message TTL"),
    ({"definition": {"message-ttl": "x"}}, '&lt;&lt;"x"&gt;&gt; is not a valid message TTL'),
    ({"definition": {"message-ttl": 1.5}}, "1.5 is not a valid message TTL"),
    ({"definition": {"message-ttl": True}}, "true is not a valid message TTL"),
    ({"definition": {"expires": 0}}, "0 is not a valid queue expiry"),
    ({"definition": {"max-length": "z", "message-ttl": -1}},
     '&lt;&lt;"z"&gt;&gt; is not a valid maximum length'),
    ({"definition": {"max-length-bytes": -1}}, "-1 is not a valid maximum length in bytes"),
    ({"definition": {"overflow": "x"}}, '&lt;&lt;"x"&gt;&gt; is not a valid overflow value'),
    ({"definition": {"delivery-limit": -2}}, "-2 is not a valid delivery limit"),
    ({"definition": {"dead-letter-exchange": 5}}, "5 is not a valid dead letter exchange name"),
    ({"definition": {"alternate-exchange": 5}}, "5 is not a valid alternate exchange name"),
    ({"definition": {"max-age": "1X"}}, '&lt;&lt;"1X"&gt;&gt; is not a valid max age'),
    ({"definition": {"foo": 1, "bar": 2}},
     '[{&lt;&lt;"bar"&gt;&gt;,2},{&lt;&lt;"foo"&gt;&gt;,1}] are not recognised policy settings'),
    ({"definition": {}}, "no policy provided"),
    ({"definition": {"message-ttl": 1}, "pattern": "("},
     'pattern should be regular expression but is invalid: {"missing )",1}'),
    ({"definition": {"message-ttl": 1}, "pattern": 5}, "pattern should be a binary but was 5"),
    # ~p breaks a long tuple after its first element.
    ({"definition": {"message-ttl": 1}, "pattern": "a)"},
     'pattern should be regular expression but is invalid: {"unmatched parentheses",\n'
     + " " * 54 + "1}"),
    ({"definition": {"ha-mode": "bogus"}}, '&lt;&lt;"bogus"&gt;&gt; is not a valid ha-mode value'),
    ({"definition": {"ha-mode": "exactly"}}, 'ha-mode="exactly" takes an integer, none given'),
    ({"definition": {"ha-sync-mode": "automatic"}},
     "ha-mode must be specified to specify ha-params, ha-sync-mode or ha-promote-on-shutdown"),
    ({"definition": {"stream-max-segment-size-bytes": -1}}, "-1 is not a valid segment size"),
    ({"definition": {"queue-master-locator": "x"}},
     '&lt;&lt;"x"&gt;&gt; invalid queue-master-locator value'),
    ({"definition": {"message-ttl": 1}, "priority": "5"},
     'priority should be a number, actually was &lt;&lt;"5"&gt;&gt;'),
    ({"definition": {"message-ttl": 1}, "apply-to": "bogus"},
     "apply-to 'bogus' unrecognised; should be 'queues', 'exchanges' or 'all'"),
]


@pytest.mark.parametrize("body,reason", VALIDATION, ids=[r[:60] for _, r in VALIDATION])
def test_validation_errors_are_rabbitmqs(api, uniq, body, reason):
    path = f"/api/policies/%2F/{q(uniq('bad'))}"
    st, err = api.call("PUT", path, {"pattern": "^nothing$", **body})
    assert (st, err) == (400, {"error": "bad_request",
                               "reason": f"Validation failed\n\n{reason}\n"})
    assert api.call("GET", path)[0] == 404


def test_two_bad_keys_get_one_of_their_errors(api, uniq):
    # Which validator RabbitMQ runs first is not fixed (seen both ways across boots of
    # 3.10.8), so a definition with two bad keys may get either key's text.
    path = f"/api/policies/%2F/{q(uniq('bad'))}"
    st, err = api.call("PUT", path, {"pattern": "^nothing$",
                                     "definition": {"ha-mode": "bogus", "message-ttl": -1}})
    assert st == 400 and err["error"] == "bad_request"
    assert err["reason"] in {
        "Validation failed\n\n-1 is not a valid message TTL\n",
        'Validation failed\n\n&lt;&lt;"bogus"&gt;&gt; is not a valid ha-mode value\n',
    }
    assert api.call("GET", path)[0] == 404


def test_missing_fields_and_operator_texts(api, uniq):
    path = f"/api/policies/%2F/{q(uniq('bad'))}"
    assert api.call("PUT", path, {"definition": {"message-ttl": 1}}) == (
        400, {"error": "bad_request", "reason": "[{key_missing,pattern}]"})
    assert api.call("PUT", path, {"pattern": "a"}) == (
        400, {"error": "bad_request", "reason": "[{key_missing,definition}]"})
    op = f"/api/operator-policies/%2F/{q(uniq('op'))}"
    # Operator policies accept only the capping keys; their texts are not escaped.
    st, err = api.call("PUT", op, {"pattern": "a", "definition": {"message-ttl": 1,
                                                                   "overflow": "drop-head"}})
    assert (st, err["reason"]) == (400, 'Validation failed\n\n[{<<"overflow">>,<<"drop-head">>}]'
                                        ' are not recognised policy settings\n')
    st, err = api.call("PUT", op, {"pattern": "a", "definition": {"message-ttl": "x"}})
    assert (st, err["reason"]) == (400, 'Validation failed\n\n<<"x">> is not a valid message TTL\n')


def test_who_may_read_and_change_policies(api, uniq, policies):
    mgmt, maker = uniq("mgmt"), uniq("maker")
    pol = uniq("pol")
    policies.put(pol, "^never-matches$", {"max-length": 1})
    for user, tags in ((mgmt, "management"), (maker, "policymaker")):
        api.ok("PUT", f"/api/users/{q(user)}", {"password": "pw", "tags": tags})
        api.ok("PUT", f"/api/permissions/%2F/{q(user)}",
               {"configure": ".*", "write": ".*", "read": ".*"})
    try:
        body = {"pattern": "^never$", "definition": {"max-length": 1}}
        one = f"/api/policies/%2F/{q(pol)}"
        st, listed = api.call("GET", "/api/policies/%2F", auth=(mgmt, "pw"))
        assert st == 200 and pol in [p["name"] for p in listed]
        denied = (401, {"error": "not_authorised",
                        "reason": "User not authorised to access object"})
        assert api.call("GET", one, auth=(mgmt, "pw")) == denied
        assert api.call("PUT", one, body, auth=(mgmt, "pw")) == denied
        assert api.call("DELETE", one, auth=(mgmt, "pw")) == denied
        assert api.call("GET", one, auth=(maker, "pw"))[0] == 200
        assert api.call("PUT", one, body, auth=(maker, "pw"))[0] == 204
        not_admin = (401, {"error": "not_authorised", "reason": "Not administrator user"})
        op = f"/api/operator-policies/%2F/{q(uniq('op'))}"
        assert api.call("PUT", op, body, auth=(maker, "pw")) == not_admin
        assert api.call("GET", op, auth=(maker, "pw")) == not_admin
        assert api.call("GET", "/api/operator-policies", auth=(maker, "pw"))[0] == 200
    finally:
        api.call("DELETE", f"/api/users/{q(mgmt)}")
        api.call("DELETE", f"/api/users/{q(maker)}")


def test_max_length_by_policy_drops_the_head_of_an_existing_queue(api, uniq, policies, channel):
    name = uniq("q")
    channel.queue_declare(name)
    publish(channel, name, ["1", "2", "3", "4", "5"])
    pol = uniq("pol")
    policies.put(pol, anchored(name), {"max-length": 2}, **{"apply-to": "queues"})
    eventually(lambda: depth(channel, name) == 2)
    shown = eventually(lambda: (lambda x: x if x.get("policy") == pol else None)(
        api.ok("GET", f"/api/queues/%2F/{q(name)}")))
    assert shown["effective_policy_definition"] == {"max-length": 2}
    assert shown["operator_policy"] is None
    assert drain(channel, name) == [b"4", b"5"]
    # Removed with the policy.
    policies.delete(pol)
    eventually(lambda: api.ok("GET", f"/api/queues/%2F/{q(name)}").get("policy") is None)
    # RabbitMQ's queue process hears of the change asynchronously: publish until it shows.
    eventually(lambda: publish(channel, name, ["more"]) or depth(channel, name) > 2)


def test_max_length_bytes_by_policy_counts_queued_bodies(api, uniq, policies, channel):
    name = uniq("q")
    channel.queue_declare(name)
    publish(channel, name, ["0123456789", "abcdefghij", "ABCDEFGHIJ"])
    policies.put(uniq("pol"), anchored(name), {"max-length-bytes": 25})
    eventually(lambda: depth(channel, name) == 2)
    assert drain(channel, name) == [b"abcdefghij", b"ABCDEFGHIJ"]


def test_message_ttl_by_policy_expires_new_messages(api, uniq, policies, channel):
    name = uniq("q")
    channel.queue_declare(name)
    pol = uniq("pol")
    policies.put(pol, anchored(name), {"message-ttl": 50})
    eventually(lambda: api.ok("GET", f"/api/queues/%2F/{q(name)}").get("policy") == pol)
    publish(channel, name, ["gone"])
    eventually(lambda: depth(channel, name) == 0)
    policies.delete(pol)
    eventually(lambda: api.ok("GET", f"/api/queues/%2F/{q(name)}").get("policy") is None)
    publish(channel, name, ["kept"])
    assert drain(channel, name) == [b"kept"]


def test_dead_lettering_by_policy(api, uniq, policies, channel):
    src, dlq = uniq("src"), uniq("dlq")
    channel.queue_declare(dlq)
    channel.queue_declare(src)
    pol = uniq("pol")
    policies.put(pol, anchored(src), {"dead-letter-exchange": "", "dead-letter-routing-key": dlq})
    eventually(lambda: api.ok("GET", f"/api/queues/%2F/{q(src)}").get("policy") == pol)
    publish(channel, src, ["dead"])
    m, _, _ = channel.basic_get(src)
    channel.basic_reject(m.delivery_tag, requeue=False)
    eventually(lambda: depth(channel, dlq) == 1)
    m, props, body = channel.basic_get(dlq, auto_ack=True)
    assert body == b"dead" and props.headers["x-death"][0]["reason"] == "rejected"


def test_overflow_reject_publish_by_policy_nacks_the_publisher(api, uniq, policies, channel):
    name = uniq("q")
    pol = uniq("pol")
    # Set before the declaration, so the queue starts with it (no asynchronous update to await).
    policies.put(pol, anchored(name), {"max-length": 2, "overflow": "reject-publish"})
    channel.queue_declare(name)
    assert eventually(lambda: api.ok("GET", f"/api/queues/%2F/{q(name)}").get("policy") == pol)
    ensure_confirms(channel)
    publish(channel, name, ["1", "2"])
    with pytest.raises(pika.exceptions.NackError):
        channel.basic_publish("", name, b"3")
    assert depth(channel, name) == 2
    assert drain(channel, name) == [b"1", b"2"]
    publish(channel, name, ["4"])                # room again
    assert drain(channel, name) == [b"4"]


def exists(api, name: str) -> bool:
    """Asked of the management API: a passive queue.declare would count as using the queue."""
    return api.call("GET", f"/api/queues/%2F/{q(name)}")[0] == 200


def test_expires_by_policy_deletes_an_unused_queue(api, uniq, policies, channel):
    kept, name = uniq("kept"), uniq("q")
    channel.queue_declare(kept)
    channel.queue_declare(name)
    pol = uniq("pol")
    both = "^(" + kept.replace(".", "\\.") + "|" + name.replace(".", "\\.") + ")$"
    policies.put(pol, both, {"expires": 1000})
    # A consumer keeps a queue in use: it outlives its expiry.
    channel.basic_consume(kept, lambda *a: None)
    assert eventually(lambda: not exists(api, name))
    assert exists(api, kept)
    channel.queue_delete(kept)


def test_delivery_limit_by_policy_dead_letters_from_a_quorum_queue(api, uniq, policies, channel):
    name, dead = uniq("quorum"), uniq("dead")
    pol = uniq("pol")
    policies.put(pol, anchored(name), {"delivery-limit": 1, "dead-letter-exchange": "",
                                       "dead-letter-routing-key": dead})
    channel.queue_declare(dead)
    channel.queue_declare(name, durable=True, arguments={"x-queue-type": "quorum"})
    try:
        assert eventually(lambda: api.ok("GET", f"/api/queues/%2F/{q(name)}").get("policy") == pol)
        ensure_confirms(channel)
        channel.basic_publish("", name, b"x")
        counts = []
        for _ in range(2):
            # A quorum queue applies a return asynchronously: get until it is back.
            m, props, _ = eventually(lambda: (lambda r: r if r[0] else None)(
                channel.basic_get(name)))
            counts.append(props.headers["x-delivery-count"])
            channel.basic_nack(m.delivery_tag, requeue=True)
        # As with x-delivery-limit: counted from 0; the second return passes limit 1.
        assert counts == [0, 1]
        assert eventually(lambda: depth(channel, dead) == 1)
        assert depth(channel, name) == 0
        _, props, body = channel.basic_get(dead, auto_ack=True)
        assert body == b"x" and props.headers["x-death"][0]["reason"] == "delivery_limit"
        assert props.headers["x-first-death-reason"] == "delivery_limit"
    finally:
        channel.queue_delete(name)


def test_precedence_priority_and_arguments(api, uniq, policies, channel):
    name, capped = uniq("q"), uniq("capped")
    channel.queue_declare(name, arguments={"x-dead-letter-exchange": "amq.fanout"})
    channel.queue_declare(capped, arguments={"x-max-length": 2})
    low, high = uniq("low"), uniq("high")
    both = "^" + name.replace(".", "\\.") + "|" + capped.replace(".", "\\.") + "$"
    policies.put(low, both, {"max-length": 5, "dead-letter-exchange": "x"}, priority=1)
    policies.put(high, anchored(name), {"max-length": 1}, priority=10)

    def shown(n):
        return api.ok("GET", f"/api/queues/%2F/{q(n)}")

    eventually(lambda: shown(name).get("policy") == high and shown(capped).get("policy") == low)
    # The highest priority wins; the argument's lower max-length wins over the policy's.
    publish(channel, name, ["1", "2", "3"])
    publish(channel, capped, ["1", "2", "3", "4"])
    eventually(lambda: depth(channel, name) == 1 and depth(channel, capped) == 2)


def test_operator_policy_caps_with_the_lower_value(api, uniq, policies, channel):
    name = uniq("q")
    channel.queue_declare(name)
    pol, op = uniq("pol"), uniq("op")
    policies.put(pol, anchored(name), {"max-length": 10, "message-ttl": 60000})
    policies.put(op, anchored(name), {"max-length": 2, "message-ttl": 120000},
                 kind="operator-policies", **{"apply-to": "queues"})

    def shown():
        i = api.ok("GET", f"/api/queues/%2F/{q(name)}")
        return i if i.get("operator_policy") == op else None

    i = eventually(shown)
    assert (i["policy"], i["effective_policy_definition"]) == (
        pol, {"max-length": 2, "message-ttl": 60000})
    publish(channel, name, ["1", "2", "3", "4"])
    eventually(lambda: depth(channel, name) == 2)
    listed = api.ok("GET", "/api/operator-policies/%2F")
    assert {"vhost": "/", "name": op, "pattern": anchored(name), "apply-to": "queues",
            "definition": {"max-length": 2, "message-ttl": 120000}, "priority": 0} in listed


def test_alternate_exchange_by_policy(api, uniq, policies, channel):
    x, ae, dest = uniq("x"), uniq("ae"), uniq("q")
    channel.exchange_declare(x, "direct")
    channel.exchange_declare(ae, "fanout")
    channel.queue_declare(dest)
    channel.queue_bind(dest, ae)
    pol = uniq("pol")
    policies.put(pol, anchored(x), {"alternate-exchange": ae}, **{"apply-to": "exchanges"})
    eventually(lambda: api.ok("GET", f"/api/exchanges/%2F/{q(x)}").get("policy") == pol)
    ensure_confirms(channel)
    channel.basic_publish(x, "unrouted", b"to-ae", mandatory=True)   # routed by the AE: no return
    eventually(lambda: depth(channel, dest) == 1)
    assert "policy" not in api.ok("GET", f"/api/exchanges/%2F/{q(ae)}")
    # Removing the policy stops the alternate routing: the message comes back unroutable.
    policies.delete(pol)
    eventually(lambda: "policy" not in api.ok("GET", f"/api/exchanges/%2F/{q(x)}"))
    with pytest.raises(pika.exceptions.UnroutableError):
        channel.basic_publish(x, "unrouted", b"returned", mandatory=True)
    assert depth(channel, dest) == 1


def test_definitions_round_trip(api, uniq, policies):
    pol, op = uniq("pol"), uniq("op")
    policies.put(pol, "^never-defs$", {"max-length": 4}, priority=3, **{"apply-to": "queues"})
    policies.put(op, "^never-defs$", {"max-length": 4}, kind="operator-policies")
    exported = api.ok("GET", "/api/definitions")
    mine = [p for p in exported["policies"] if p["name"] == pol]
    assert mine == [{"vhost": "/", "name": pol, "pattern": "^never-defs$", "apply-to": "queues",
                     "definition": {"max-length": 4}, "priority": 3}]
    # Operator policies travel as runtime parameters.
    ops = [p for p in exported["parameters"] if p.get("name") == op]
    assert ops == [{"vhost": "/", "name": op, "component": "operator_policy",
                    "value": {"pattern": "^never-defs$", "definition": {"max-length": 4},
                              "priority": 0, "apply-to": "all"}}]
    per_vhost = api.ok("GET", "/api/definitions/%2F")
    assert mine[0] in per_vhost["policies"] and ops[0] in per_vhost["parameters"]
    policies.delete(pol)
    policies.delete(op, kind="operator-policies")
    assert api.call("POST", "/api/definitions", {"policies": mine, "parameters": ops})[0] in (
        200, 201, 204)
    policies.made += [("policies", pol), ("operator-policies", op)]
    assert api.ok("GET", f"/api/policies/%2F/{q(pol)}") == mine[0]
    assert api.ok("GET", f"/api/operator-policies/%2F/{q(op)}")["definition"] == {"max-length": 4}


@pytest.mark.skipif(shutil.which("rabbitmqadmin") is None, reason="rabbitmqadmin not installed")
def test_rabbitmqadmin_policies(api, uniq, policies):
    pol = uniq("adm")
    admin = rabbitmqadmin(api)

    admin("declare", "policy", f"name={pol}", "pattern=^adm-never$",
          'definition={"max-length": 9}', "apply-to=queues")
    policies.made.append(("policies", pol))
    listed = json.loads(admin("list", "policies"))
    assert any(p["name"] == pol and p["definition"] == {"max-length": 9} for p in listed)
    admin("delete", "policy", f"name={pol}")
    policies.made.remove(("policies", pol))
    assert api.call("GET", f"/api/policies/%2F/{q(pol)}")[0] == 404


def test_policies_survive_a_restart(api, uniq, policies, request):
    name = uniq("q")
    conn = pika.BlockingConnection(api.broker.params())
    ch = conn.channel()
    ch.queue_declare(name, durable=True)
    pol = uniq("pol")
    policies.put(pol, anchored(name), {"max-length": 1})
    eventually(lambda: api.ok("GET", f"/api/queues/%2F/{q(name)}").get("policy") == pol)
    conn.close()
    api.broker.restart()
    api.base = f"http://{api.broker.endpoints['http']}"   # Ferry listens on a new port
    eventually(lambda: api.call("GET", f"/api/policies/%2F/{q(pol)}")[0] == 200)
    assert api.ok("GET", f"/api/policies/%2F/{q(pol)}")["definition"] == {"max-length": 1}
    conn = pika.BlockingConnection(api.broker.params())
    try:
        ch = conn.channel()
        for b in ("1", "2", "3"):
            ch.basic_publish("", name, b.encode())
        eventually(lambda: depth(ch, name) == 1)
        ch.queue_delete(name)
    finally:
        conn.close()


def test_stream_retention_policy_is_shown(api, uniq, policies, channel):
    name = uniq("stream")
    channel.queue_declare(name, durable=True, arguments={"x-queue-type": "stream"})
    try:
        pol = uniq("pol")
        policies.put(pol, anchored(name), {"max-age": "1D", "max-length-bytes": 1000000},
                     **{"apply-to": "queues"})
        shown = eventually(lambda: (lambda i: i if i.get("policy") == pol else None)(
            api.ok("GET", f"/api/queues/%2F/{q(name)}")))
        assert shown["type"] == "stream"
        assert shown["effective_policy_definition"] == {"max-age": "1D",
                                                        "max-length-bytes": 1000000}
    finally:
        channel.queue_delete(name)


def retained(api, name: str) -> list[tuple[int, bytes]]:
    """(offset, first 4 body bytes) of every message a new consumer from "first" reads, up to
    the last one published (bodies "0000"...)."""
    conn = pika.BlockingConnection(api.broker.params())
    try:
        r = Reader(conn, name, "first", prefetch=200)
        wait_for(conn, lambda: r.got and r.got[-1][1].startswith(b"0099"), 10, "the last message")
        return [(o, b[:4]) for o, b in r.got]
    finally:
        conn.close()


def test_a_retention_policy_trims_a_running_stream(api, uniq, policies, channel):
    """A max-length-bytes policy set on a running stream trims it at once on both brokers
    (whole segments, oldest first; the segment size is small so that segments roll). The
    retained messages keep their offsets. RabbitMQ's offsets count its tracking chunks too
    (0099 was offset 118 there, 99 in Ferry), and its segments hold a little less: with these
    sizes it kept 15 messages, Ferry 16 (measured), so the test checks a range."""
    name = uniq("stream")
    declare_stream(channel, name, **{"x-stream-max-segment-size-bytes": 5000})
    try:
        publish_confirmed(channel, name, [b"%04d" % i + b"x" * 1000 for i in range(100)])
        before = retained(api, name)
        assert [b for _, b in before] == [b"%04d" % i for i in range(100)]
        pol = uniq("pol")
        policies.put(pol, anchored(name), {"max-length-bytes": 20000}, **{"apply-to": "queues"})
        after = eventually(lambda: (lambda g: g if len(g) < 100 else None)(retained(api, name)))
        assert 10 <= len(after) <= 25, after
        assert after == before[-len(after):]
        shown = eventually(lambda: (lambda i: i if i.get("policy") == pol else None)(
            api.ok("GET", f"/api/queues/%2F/{q(name)}")))
        assert shown["effective_policy_definition"] == {"max-length-bytes": 20000}
    finally:
        channel.queue_delete(name)


def test_a_leading_lookahead_pattern_matches_as_in_pcre(api, uniq, policies, channel):
    base = uniq("la")
    skipped = base + ".skip"
    channel.queue_declare(base)
    channel.queue_declare(skipped)
    esc = base.replace(".", "\\.")
    pol = uniq("pol")
    policies.put(pol, f"^(?!{esc}\\.skip){esc}", {"max-length": 3})

    def policy_of(n):
        return api.ok("GET", f"/api/queues/%2F/{q(n)}").get("policy")

    eventually(lambda: policy_of(base) == pol)
    assert policy_of(skipped) is None


@pytest.mark.parametrize("apply_to, kind", [
    ("classic_queues", "classic"), ("quorum_queues", "quorum"), ("streams", "stream"),
])
def test_rabbitmq4_apply_to_kinds(api, uniq, policies, channel, apply_to, kind):
    """RabbitMQ 4's apply-to values pick one queue type. Ferry-only past the PUT: RabbitMQ 3.10
    refuses them (400). The policy is shown on the queue of that type only, and acts there: its
    max-length caps a classic or quorum queue (a stream ignores that key)."""
    names = {k: uniq(k) for k in ("classic", "quorum", "stream")}
    channel.queue_declare(names["classic"])
    channel.queue_declare(names["quorum"], durable=True, arguments={"x-queue-type": "quorum"})
    channel.queue_declare(names["stream"], durable=True, arguments={"x-queue-type": "stream"})
    try:
        pol = uniq("pol")
        pattern = "^(" + "|".join(n.replace(".", "\\.") for n in names.values()) + ")$"
        definition = {"max-length": 3, "max-age": "1D"}
        body = {"pattern": pattern, "definition": definition, "apply-to": apply_to}
        st, err = api.call("PUT", f"/api/policies/%2F/{q(pol)}", body)
        if api.broker.kind == "rabbitmq":
            # RabbitMQ 3.10 knows only queues / exchanges / all (Ferry takes RabbitMQ 4's too).
            assert (st, err["reason"]) == (400, f"Validation failed\n\napply-to '{apply_to}' "
                                                "unrecognised; should be 'queues', 'exchanges' or 'all'\n")
            return
        assert st == 201
        policies.made.append(("policies", pol))
        shown = {k: api.ok("GET", f"/api/queues/%2F/{q(n)}") for k, n in names.items()}
        assert {k: i["type"] for k, i in shown.items()} == {
            "classic": "classic", "quorum": "quorum", "stream": "stream"}
        assert {k: (i.get("policy"), i.get("effective_policy_definition"))
                for k, i in shown.items()} == {
            k: (pol, definition) if k == kind else (None, {}) for k in names}
        ensure_confirms(channel)
        for k in ("classic", "quorum"):
            publish(channel, names[k], ["1", "2", "3", "4", "5"])
            assert depth(channel, names[k]) == (3 if k == kind else 5), k
    finally:
        channel.queue_delete(names["quorum"])
        channel.queue_delete(names["stream"])


@pytest.mark.parametrize("key", ["dead-letter-exchange", "dead-letter-routing-key"])
def test_dead_letter_names_longer_than_255_bytes(api, uniq, policies, key):
    """RabbitMQ 3.10 accepts such a policy (and would dead-letter with a key no AMQP client
    can receive); Ferry refuses it where it enters (PUT, definitions import): a deliberate
    difference, documented in the README."""
    name = uniq("long")
    long = "é" * 150  # 300 bytes
    path = f"/api/policies/%2F/{q(name)}"
    body = {"pattern": "^nothing$", "definition": {key: long}}
    if api.broker.kind == "rabbitmq":
        policies.put(name, "^nothing$", {key: long})
        assert api.ok("GET", path)["definition"] == {key: long}
        return
    reason = f"Validation failed\n\n{key} should be less than 255 bytes, actually was 300\n"
    assert api.call("PUT", path, body) == (400, {"error": "bad_request", "reason": reason})
    assert api.call("GET", path)[0] == 404
    imported = {"policies": [{"vhost": "/", "name": name, "priority": 0, "apply-to": "all",
                              **body}]}
    st, err = api.call("POST", "/api/definitions", imported)
    assert st == 400 and f"{key} should be less than 255 bytes" in err["reason"], (st, err)
    assert api.call("GET", path)[0] == 404
    # 255 bytes fit.
    policies.put(name, "^nothing$", {key: "k" * 255})
