"""The x-consistent-hash exchange type (RabbitMQ's rabbitmq_consistent_hash_exchange plugin, which
the oracle runs with: harness/brokers.py ORACLE_PLUGINS).

Ferry's hash function is its own, so *which* queue a key lands on differs between the brokers;
what both must show: binding keys are integer weights (the plugin's 406 texts otherwise), each
message goes to exactly one queue, the spread follows the weights (statistical check with a
tolerance), a key always lands on the same queue while the bindings hold, a new binding takes
only its share of the keys (and only to itself), hash-header / hash-property hash on those
instead of the routing key (missing ones all go to one queue), the argument errors, and durable
exchanges keep their bindings over a restart (Ferry also keeps each key on its queue there;
RabbitMQ rebuilds its ring at boot and moves some keys).
"""

from __future__ import annotations

import pika
import pytest

from harness.expect import channel_closed, connection_closed, drain, ensure_confirms, sync
from test_management_api import api  # noqa: F401  (the module-scoped fixture)

CH = "x-consistent-hash"


def where(ch, queues: list[str]) -> dict[str, str]:
    """Drains the queues: routing key (or body, when it names itself) -> queue."""
    out = {}
    for q in queues:
        for _, _, body in drain(ch, q):
            key = body.decode()
            assert key not in out, f"{key} reached {out[key]} and {q}"
            out[key] = q
    return out


def setup(ch, uniq, weights: list[str], args=None, durable=False):
    x = uniq("chx")
    ch.exchange_declare(x, CH, durable=durable, arguments=args)
    queues = []
    for i, w in enumerate(weights):
        q = f"{x}.{i}"
        ch.queue_declare(q, durable=durable)
        ch.queue_bind(q, x, w)
        queues.append(q)
    ensure_confirms(ch)
    return x, queues


@pytest.mark.parametrize("key,text", [
    ("abc", 'The binding key must be an integer: <<"abc">>'),
    ("", "The binding key must be an integer: <<>>"),
    (" 5", 'The binding key must be an integer: <<" 5">>'),
    ("1.5", 'The binding key must be an integer: <<"1.5">>'),
    ("0", "The binding key must be greater than 0"),
    ("-1", "The binding key must be greater than 0"),
])
def test_binding_keys_must_be_positive_integers(connect, uniq, key, text):
    c = connect()
    ch = c.channel()
    x = uniq("chx")
    ch.exchange_declare(x, CH)
    q = ch.queue_declare("", exclusive=True).method.queue
    with channel_closed(406, f"PRECONDITION_FAILED - {text}"):
        ch.queue_bind(q, x, key)
    ch = c.channel()
    for ok in ("+5", "05", "1"):
        ch.queue_bind(q, x, ok)
    ch.exchange_delete(x)
    c.close()


@pytest.mark.parametrize("args,text", [
    ({"hash-header": "h", "hash-property": "message_id"},
     "hash-header and hash-property are mutually exclusive"),
    ({"hash-header": "h", "hash-property": "nope"},
     "hash-header and hash-property are mutually exclusive"),
    ({"hash-property": "foo"}, "Unsupported property: foo"),
])
def test_bad_arguments_are_refused(connect, uniq, args, text):
    c = connect()
    ch = c.channel()
    with channel_closed(406, f"PRECONDITION_FAILED - {text}"):
        ch.exchange_declare(uniq("chx"), CH, arguments=args)
    c.close()


@pytest.mark.parametrize("arg", ["hash-header", "hash-property"])
def test_a_non_string_argument_is_an_internal_error(connect, uniq, arg):
    c = connect()
    ch = c.channel()
    with connection_closed(541, "INTERNAL_ERROR"):
        ch.exchange_declare(uniq("chx"), CH, arguments={arg: 5})


def test_spread_follows_the_weights(ch, uniq):
    x, queues = setup(ch, uniq, ["1", "1", "2"])
    n = 2000
    for i in range(n):
        ch.basic_publish(x, f"key-{i}", f"key-{i}".encode())
    got = where(ch, queues)
    assert len(got) == n, "every message reaches exactly one queue"
    for q, share in zip(queues, (0.25, 0.25, 0.5)):
        have = sum(1 for v in got.values() if v == q) / n
        assert abs(have - share) < 0.06, f"{q}: {have:.3f}, expected about {share}"


def test_a_key_stays_put_and_a_new_binding_takes_only_its_share(ch, uniq):
    x, queues = setup(ch, uniq, ["10", "10", "10"])
    keys = [f"k{i}" for i in range(600)]
    for rnd in range(2):
        for k in keys:
            ch.basic_publish(x, k, k.encode())
        got = where(ch, queues)
        if rnd == 0:
            first = got
        else:
            assert got == first, "same key, same queue"
    new = f"{x}.new"
    ch.queue_declare(new)
    ch.queue_bind(new, x, "10")
    for k in keys:
        ch.basic_publish(x, k, k.encode())
    after = where(ch, queues + [new])
    moved = [k for k in keys if after[k] != first[k]]
    assert all(after[k] == new for k in moved), "keys move only to the new queue"
    assert 0.15 < len(moved) / len(keys) < 0.35, f"{len(moved)} of {len(keys)} moved"


def test_hash_header_decides_and_missing_headers_go_to_one_queue(ch, uniq):
    x, queues = setup(ch, uniq, ["1", "1", "1", "1"], args={"hash-header": "user"})
    for i in range(40):
        ch.basic_publish(x, f"rk{i}", f"same-{i}".encode(),
                         pika.BasicProperties(headers={"user": "alice"}))
    got = where(ch, queues)
    assert len(set(got.values())) == 1, "one header value, one queue, whatever the key"
    for i in range(200):
        ch.basic_publish(x, "rk", f"spread-{i}".encode(),
                         pika.BasicProperties(headers={"user": f"u{i}"}))
    assert len(set(where(ch, queues).values())) == 4, "header values spread"
    for i in range(40):
        ch.basic_publish(x, f"rk{i}", f"none-{i}".encode())
    got = where(ch, queues)
    assert len(got) == 40 and len(set(got.values())) == 1


@pytest.mark.parametrize("prop", ["message_id", "correlation_id", "timestamp"])
def test_hash_property_decides(ch, uniq, prop):
    x, queues = setup(ch, uniq, ["1", "1", "1", "1"], args={"hash-property": prop})

    def props(i):
        value = 1_700_000_000 + i if prop == "timestamp" else f"v{i}"
        return pika.BasicProperties(**{prop: value})

    for i in range(40):
        ch.basic_publish(x, f"rk{i}", f"same-{i}".encode(), props(7))
    assert len(set(where(ch, queues).values())) == 1
    for i in range(200):
        ch.basic_publish(x, "rk", f"spread-{i}".encode(), props(i))
    assert len(set(where(ch, queues).values())) == 4


def test_routes_through_exchange_bindings_and_unbinding(ch, uniq):
    x, queues = setup(ch, uniq, ["1", "1"])
    front = uniq("front")
    ch.exchange_declare(front, "fanout")
    ch.exchange_bind(x, front)
    for i in range(100):
        ch.basic_publish(front, f"k{i}", f"k{i}".encode())
    assert len(where(ch, queues)) == 100
    ch.queue_unbind(queues[0], x, "1")
    for i in range(100):
        ch.basic_publish(x, f"k{i}", f"k{i}".encode())
    assert set(where(ch, queues).values()) == {queues[1]}
    ch.queue_unbind(queues[1], x, "1")
    sync(ch)
    for i in range(10):
        ch.basic_publish(x, f"k{i}", b"nowhere")
    assert where(ch, queues) == {}


@pytest.mark.restart
def test_durable_exchange_keeps_its_bindings_over_a_restart(restartable_broker):
    b = restartable_broker
    c = pika.BlockingConnection(b.params())
    ch = c.channel()
    ch.exchange_declare("chx.d", CH, durable=True)
    queues = ["chx.d.c", "chx.d.a", "chx.d.b"]      # bound out of name order
    for q, w in zip(queues, ["1", "2", "3"]):
        ch.queue_declare(q, durable=True)
        ch.queue_bind(q, "chx.d", w)
    ensure_confirms(ch)
    keys = [f"k{i}" for i in range(300)]
    for k in keys:
        ch.basic_publish("chx.d", k, k.encode())
    before = where(ch, queues)
    c.close()
    assert b.restart() == 0
    c = pika.BlockingConnection(b.params())
    ch = c.channel()
    ch.exchange_declare("chx.d", CH, passive=True)
    ensure_confirms(ch)
    for k in keys:
        ch.basic_publish("chx.d", k, k.encode())
    after = where(ch, queues)
    assert len(after) == len(keys) and set(after.values()) == set(queues)
    if b.kind == "ferry":
        # Ferry stores the ring's binding order, so keys stay put; RabbitMQ rebuilds its ring
        # at boot in its own order and moves some keys (seen on 3.10.8).
        assert after == before
    c.close()


def test_management_api_answers(api, uniq):  # noqa: F811
    x, qn = uniq("chx"), uniq("chq")
    st, err = api.call("PUT", f"/api/exchanges/%2F/{x}",
                       {"type": CH, "arguments": {"hash-header": "a", "hash-property": "message_id"}})
    assert (st, err) == (400, {"error": "bad_request",
                               "reason": "hash-header and hash-property are mutually exclusive"})
    st, err = api.call("PUT", f"/api/exchanges/%2F/{x}", {"type": CH, "arguments": {"hash-header": 5}})
    assert st == 400 and err["error"] == "bad_request"   # RabbitMQ's reason is an Erlang crash
    assert api.call("PUT", f"/api/exchanges/%2F/{x}", {"type": CH})[0] == 201
    assert api.ok("GET", f"/api/exchanges/%2F/{x}")["type"] == CH
    assert api.call("PUT", f"/api/queues/%2F/{qn}", {})[0] == 201
    path = f"/api/bindings/%2F/e/{x}/q/{qn}"
    assert api.call("POST", path, {"routing_key": "abc"}) == \
        (400, {"error": "bad_request", "reason": 'The binding key must be an integer: <<"abc">>'})
    assert api.call("POST", path, {"routing_key": "3"})[0] == 201
    types = [t["name"] for t in api.ok("GET", "/api/overview")["exchange_types"]]
    assert CH in types
    api.ok("DELETE", f"/api/exchanges/%2F/{x}")
    api.ok("DELETE", f"/api/queues/%2F/{qn}")


def test_definitions_import_of_a_non_string_hash_header_is_a_400(api, uniq):  # noqa: F811
    x = uniq("chx")
    defs = {"exchanges": [{"name": x, "vhost": "/", "type": CH, "durable": True,
                           "auto_delete": False, "internal": False,
                           "arguments": {"hash-header": 5}}]}
    st, err = api.call("POST", "/api/definitions", defs)
    # A client error, never a 500 (RabbitMQ's reason is an Erlang crash).
    assert st == 400 and err["error"] == "bad_request", (st, err)
    assert api.call("GET", f"/api/exchanges/%2F/{x}")[0] == 404
