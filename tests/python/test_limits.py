"""Vhost limits (max-connections, max-queues) and user limits (max-connections, max-channels):
the management API (/api/vhost-limits, /api/user-limits) and the AMQP refusals, on Ferry and on
RabbitMQ with the management plugin (the `api` fixture of test_management_api.py).

Each test works in a vhost and with a user of its own, so limits never leak into other tests.
RabbitMQ tracks connections and channels asynchronously, so a refusal right after a connection
or channel was opened (or closed) is awaited with a deadline instead of expected at once.
"""

from __future__ import annotations

import time

import pika
import pika.exceptions as px
import pytest

from harness.expect import channel_closed
from test_management_api import api, q  # noqa: F401  (the module-scoped fixture)

PASSWORD = "lim-pass"


@pytest.fixture
def space(api, uniq):  # noqa: F811
    """A fresh vhost and user (all permissions there); deleted afterwards."""
    v, u = uniq("lv"), uniq("lu")
    api.ok("PUT", f"/api/vhosts/{q(v)}")
    api.ok("PUT", f"/api/users/{q(u)}", {"password": PASSWORD, "tags": ""})
    api.ok("PUT", f"/api/permissions/{q(v)}/{q(u)}", {"configure": ".*", "write": ".*", "read": ".*"})
    yield v, u
    api.call("DELETE", f"/api/vhosts/{q(v)}")
    api.call("DELETE", f"/api/users/{q(u)}")


def open_as(api, vhost: str, user: str) -> pika.BlockingConnection:  # noqa: F811
    b = api.broker
    return pika.BlockingConnection(b.params(
        virtual_host=vhost, credentials=pika.PlainCredentials(user, PASSWORD)))


def refused(api, vhost, user, text: str, timeout: float = 10.0) -> None:  # noqa: F811
    """connection.open is refused with 530 and `text` (awaited: RabbitMQ counts late)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            c = open_as(api, vhost, user)
        except px.ProbableAccessDeniedError as e:
            assert f'(530) "NOT_ALLOWED - {text}"' in str(e) or \
                f"(530) 'NOT_ALLOWED - {text}'" in str(e), str(e)
            return
        c.close()
        assert time.monotonic() < deadline, f"connection not refused ({text})"
        time.sleep(0.2)


def opens(api, vhost, user, timeout: float = 10.0) -> pika.BlockingConnection:  # noqa: F811
    """connection.open succeeds (awaited: RabbitMQ forgets closed connections late)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return open_as(api, vhost, user)
        except px.ProbableAccessDeniedError:
            assert time.monotonic() < deadline, "connection still refused"
            time.sleep(0.2)


def test_vhost_limits_api(api, space):  # noqa: F811
    v, _ = space
    base = f"/api/vhost-limits/{q(v)}"
    assert api.ok("GET", base) == []
    assert api.call("PUT", f"{base}/max-connections", {"value": 5})[0] == 204
    assert api.call("PUT", f"{base}/max-queues", {"value": -1})[0] == 204
    want = {"vhost": v, "value": {"max-connections": 5, "max-queues": -1}}
    assert api.ok("GET", base) == [want]
    assert want in api.ok("GET", "/api/vhost-limits")
    assert api.call("GET", f"{base}/max-queues")[0] == 405
    bad = [
        ("max-foo", {"value": 5},
         'Validation failed\n\nUnrecognised terms [{<<"max-foo">>,5}] in limits\n'),
        ("max-connections", {"value": "5"},
         'Validation failed\n\nmax-connections should be a number, actually was <<"5">>\n'),
        ("max-connections", {"value": 1.5},
         "Validation failed\n\nmax-connections should be a number, actually was 1.5\n"),
        ("max-connections", {}, "[{key_missing,value}]"),
    ]
    for name, body, reason in bad:
        assert api.call("PUT", f"{base}/{name}", body) == \
            (400, {"error": "bad_request", "reason": reason}), name
    assert api.call("PUT", f"{base}/max-queues", raw=b"nope") == \
        (400, {"error": "bad_request", "reason": "not_json"})
    assert api.call("PUT", "/api/vhost-limits/no-such-vhost/max-queues", {"value": 1}) == \
        (404, {"error": "not_found", "reason": "vhost_not_found"})
    assert api.call("GET", "/api/vhost-limits/no-such-vhost")[0] == 404
    for _ in range(2):                                  # clearing an unset limit is fine
        assert api.call("DELETE", f"{base}/max-queues")[0] == 204
    assert api.ok("GET", base) == [{"vhost": v, "value": {"max-connections": 5}}]
    assert api.call("DELETE", f"{base}/max-connections")[0] == 204
    assert api.ok("GET", base) == []
    # RabbitMQ keeps the emptied parameter: the full list still shows it, with [].
    assert {"vhost": v, "value": []} in api.ok("GET", "/api/vhost-limits")


def test_user_limits_api(api, space):  # noqa: F811
    _, u = space
    base = f"/api/user-limits/{q(u)}"
    assert api.ok("GET", base) == []
    assert api.call("PUT", f"{base}/max-channels", {"value": 3})[0] == 204
    assert api.call("PUT", f"{base}/max-connections", {"value": 10})[0] == 204
    want = {"user": u, "value": {"max-channels": 3, "max-connections": 10}}
    assert api.ok("GET", base) == [want]
    assert want in api.ok("GET", "/api/user-limits")
    assert api.ok("GET", f"/api/users/{q(u)}")["limits"] == want["value"]
    assert api.call("GET", f"{base}/max-channels")[0] == 405
    assert api.call("PUT", f"{base}/max-queues", {"value": 10}) == \
        (400, {"error": "bad_request",
               "reason": 'Unrecognised terms [{<<"max-queues">>,10}] in user-limits'})
    assert api.call("PUT", f"{base}/max-channels", {"value": "x"}) == \
        (400, {"error": "bad_request",
               "reason": 'max-channels should be a number, actually was <<"x">>'})
    assert api.call("PUT", "/api/user-limits/no-such-user/max-channels", {"value": 3}) == \
        (400, {"error": "bad_request", "reason": ["no_such_user", "no-such-user"]})
    assert api.call("GET", "/api/user-limits/no-such-user")[0] == 404
    for _ in range(2):
        assert api.call("DELETE", f"{base}/max-channels")[0] == 204
    assert api.ok("GET", base) == [{"user": u, "value": {"max-connections": 10}}]
    assert api.call("DELETE", f"{base}/max-connections")[0] == 204
    assert api.ok("GET", base) == []
    assert all(r["user"] != u for r in api.ok("GET", "/api/user-limits"))


def test_vhost_connection_limit(api, space):  # noqa: F811
    v, u = space
    base = f"/api/vhost-limits/{q(v)}/max-connections"
    api.ok("PUT", base, {"value": 1})
    first = opens(api, v, u)
    refused(api, v, u, f"access to vhost '{v}' refused for user '{u}': connection limit (1) is reached")
    first.close()
    opens(api, v, u).close()
    api.ok("PUT", base, {"value": 0})                   # 0: no connection at all
    refused(api, v, u, f"access to vhost '{v}' refused for user '{u}': connection limit (0) is reached")
    api.ok("PUT", base, {"value": -1})                  # negative: no limit
    a, b = opens(api, v, u), opens(api, v, u)
    a.close()
    b.close()


def test_user_connection_limit(api, space):  # noqa: F811
    v, u = space
    base = f"/api/user-limits/{q(u)}/max-connections"
    api.ok("PUT", base, {"value": 1})
    first = opens(api, v, u)
    refused(api, v, u, f"connection refused for user '{u}': user connection limit (1) is reached")
    first.close()
    api.ok("PUT", base, {"value": 0})
    refused(api, v, u, f"connection refused for user '{u}': user connection limit (0) is reached")
    api.ok("DELETE", base)
    opens(api, v, u).close()


def test_user_channel_limit(api, space):  # noqa: F811
    v, u = space
    api.ok("PUT", f"/api/user-limits/{q(u)}/max-channels", {"value": 2})
    c = opens(api, v, u)
    c.channel()
    c.channel().queue_declare("", exclusive=True)        # a round trip after both opens
    text = (f"NOT_ALLOWED - number of channels opened for user '{u}' has reached the "
            "maximum allowed user limit of (2)")
    with pytest.raises(px.ConnectionClosedByBroker) as ei:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:              # RabbitMQ may count the two late
            c.channel().close()
            time.sleep(0.2)
    assert (ei.value.reply_code, ei.value.reply_text) == (530, text)
    api.ok("PUT", f"/api/user-limits/{q(u)}/max-channels", {"value": 0})
    c = opens(api, v, u)
    with pytest.raises(px.ConnectionClosedByBroker) as ei:
        c.channel()
    assert ei.value.reply_code == 530 and ei.value.reply_text.endswith("limit of (0)")


def test_vhost_queue_limit(api, space):  # noqa: F811
    v, u = space
    api.ok("PUT", f"/api/vhost-limits/{q(v)}/max-queues", {"value": 2})
    c = opens(api, v, u)
    ch = c.channel()
    ch.queue_declare("q1")
    ch.queue_declare("q2", durable=True)
    ch.queue_declare("q1")                               # redeclaring an existing one is fine
    ch.queue_declare("q1", passive=True)
    with channel_closed(406, f"PRECONDITION_FAILED - cannot declare queue 'q3': "
                             f"queue limit in vhost '{v}' (2) is reached"):
        ch.queue_declare("q3")
    ch = c.channel()
    with pytest.raises(px.ChannelClosedByBroker) as ei:
        ch.queue_declare("", exclusive=True)
    assert ei.value.reply_code == 406
    assert ei.value.reply_text.startswith("PRECONDITION_FAILED - cannot declare queue 'amq.gen-")
    assert ei.value.reply_text.endswith(f"': queue limit in vhost '{v}' (2) is reached")
    ch = c.channel()
    ch.queue_delete("q1")
    ch.queue_declare("q3")
    api.ok("PUT", f"/api/vhost-limits/{q(v)}/max-queues", {"value": 0})
    with channel_closed(406, f"PRECONDITION_FAILED - cannot declare queue 'q4': "
                             f"queue limit in vhost '{v}' (0) is reached"):
        ch.queue_declare("q4")
    api.ok("DELETE", f"/api/vhost-limits/{q(v)}/max-queues")
    c.channel().queue_declare("q4")
    c.close()


def test_limits_are_exported_and_imported(api, space):  # noqa: F811
    v, u = space
    api.ok("PUT", f"/api/vhost-limits/{q(v)}/max-queues", {"value": 7})
    api.ok("PUT", f"/api/user-limits/{q(u)}/max-channels", {"value": 9})
    d = api.ok("GET", "/api/definitions")
    assert {"vhost": v, "component": "vhost-limits", "name": "limits",
            "value": {"max-queues": 7}} in d["parameters"]
    assert [x["limits"] for x in d["users"] if x["name"] == u] == [{"max-channels": 9}]
    api.ok("DELETE", f"/api/vhost-limits/{q(v)}/max-queues")
    api.ok("DELETE", f"/api/user-limits/{q(u)}/max-channels")
    doc = {"parameters": [{"vhost": v, "component": "vhost-limits", "name": "limits",
                           "value": {"max-connections": 3}}],
           "users": [x for x in d["users"] if x["name"] == u]}
    api.ok("POST", "/api/definitions", doc)
    assert api.ok("GET", f"/api/vhost-limits/{q(v)}") == \
        [{"vhost": v, "value": {"max-connections": 3}}]
    assert api.ok("GET", f"/api/user-limits/{q(u)}") == \
        [{"user": u, "value": {"max-channels": 9}}]


def test_per_vhost_import_takes_limits_and_policies(api, space):  # noqa: F811
    """POST /api/definitions/{vhost}: as RabbitMQ 3.10, the vhost limits and operator policies
    in `parameters`, the policies and the queues all go to that vhost, whatever vhost the
    entries name; users and permissions are not imported; the document's queues are declared
    even past the `max-queues` it sets."""
    v, _ = space
    other = v + "-nouser"
    doc = {"parameters": [
        {"vhost": "/", "component": "vhost-limits", "name": "limits", "value": {"max-queues": 1}},
        {"vhost": "/", "component": "operator_policy", "name": "vop",
         "value": {"pattern": "^never$", "definition": {"max-length": 3}, "priority": 0,
                   "apply-to": "queues"}}],
        "policies": [{"vhost": "/", "name": "vpol", "pattern": "^never$", "apply-to": "queues",
                      "definition": {"max-length": 4}, "priority": 1}],
        "users": [{"name": other, "password_hash": "", "tags": ""}],
        "queues": [{"name": n, "vhost": "/", "durable": True, "auto_delete": False,
                    "arguments": {}} for n in ("vq1", "vq2")]}
    st, out = api.call("POST", f"/api/definitions/{q(v)}", doc)
    assert st in (201, 204), out
    assert api.ok("GET", f"/api/vhost-limits/{q(v)}") == [{"vhost": v, "value": {"max-queues": 1}}]
    assert [(p["name"], p["vhost"], p["definition"]) for p in
            api.ok("GET", f"/api/policies/{q(v)}")] == [("vpol", v, {"max-length": 4})]
    assert [(p["name"], p["vhost"], p["definition"]) for p in
            api.ok("GET", f"/api/operator-policies/{q(v)}")] == [("vop", v, {"max-length": 3})]
    assert sorted(x["name"] for x in api.ok("GET", f"/api/queues/{q(v)}")) == ["vq1", "vq2"]
    assert not [p for p in api.ok("GET", "/api/policies/%2F") if p["name"] == "vpol"]
    assert not [p for p in api.ok("GET", "/api/operator-policies/%2F") if p["name"] == "vop"]
    assert api.ok("GET", "/api/vhost-limits/%2F") == []
    assert api.call("GET", f"/api/users/{q(other)}")[0] == 404
    exported = api.ok("GET", f"/api/definitions/{q(v)}")
    assert {"vhost": v, "component": "vhost-limits", "name": "limits",
            "value": {"max-queues": 1}} in exported["parameters"]
    # RabbitMQ checks the document's new queues against the current limit first: nothing is
    # imported.
    bad = {"parameters": [{"vhost": v, "component": "vhost-limits", "name": "limits",
                           "value": {"max-queues": "many"}}],
           "queues": [{"name": "vq3", "vhost": v, "durable": True, "auto_delete": False,
                       "arguments": {}}]}
    st, out = api.call("POST", f"/api/definitions/{q(v)}", bad)
    assert (st, out) == (400, {"error": "bad_request", "reason":
                               f'Adding 1 queue(s) to virtual host "{v}" would exceed the limit '
                               "of 1 queue(s).\n\nThis virtual host currently has 2 queue(s) "
                               "defined.\n\nImport aborted!"})
    assert api.call("GET", f"/api/queues/{q(v)}/vq3")[0] == 404
    # Queues already there do not count as added; a bad limit refuses the import too.
    bad["queues"][0]["name"] = "vq1"
    st, out = api.call("POST", f"/api/definitions/{q(v)}", bad)
    assert (st, out) == (400, {"error": "bad_request", "reason":
                               '<<"Validation failed\\n\\nmax-queues should be a number, '
                               'actually was &lt;&lt;\\"many\\"&gt;&gt;\\n '
                               f'({v}/vhost-limits/limits)">>'})
    assert api.call("GET", f"/api/queues/{q(v)}/vq3")[0] == 404
    assert api.ok("GET", f"/api/vhost-limits/{q(v)}") == [{"vhost": v, "value": {"max-queues": 1}}]


@pytest.mark.restart
def test_limits_survive_a_restart(restartable_broker):
    b = restartable_broker
    if "http" not in b.endpoints:
        pytest.skip("the restartable RabbitMQ oracle runs without the management plugin")
    from test_management_api import Api
    a = Api(b)
    a.ok("PUT", "/api/vhost-limits/%2F/max-queues", {"value": 0})
    a.ok("PUT", "/api/user-limits/guest/max-channels", {"value": 4})
    assert b.restart() == 0
    a = Api(b)                                           # the HTTP port may have changed
    assert a.ok("GET", "/api/vhost-limits/%2F") == [{"vhost": "/", "value": {"max-queues": 0}}]
    assert a.ok("GET", "/api/user-limits/guest") == [{"user": "guest", "value": {"max-channels": 4}}]
    c = pika.BlockingConnection(b.params())
    with channel_closed(406, "PRECONDITION_FAILED - cannot declare queue 'after': "
                             "queue limit in vhost '/' (0) is reached"):
        c.channel().queue_declare("after")
    c.close()
