"""An upgrade keeps every message: today's Ferry starts on a data directory written by the release
with the v1 record formats (tests/fixtures/data-v1, written once by
tests/fixtures/make_data_v1.py; see that script for what went in) and serves all of it as it was.

Ferry-only: the data directory is Ferry's own. The message in v1.ttl expires ~49 days after the
fixture was written (a queue TTL is at most 2^32-1 ms), so only its queue is checked here;
crates/ferry-broker/tests/upgrade_v1.rs checks the deadlines in the records.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import json
import shutil
import urllib.request
from pathlib import Path

import pika
import pika.exceptions as px
import pytest

from harness.expect import channel_closed

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "data-v1"
BIG = bytes(range(256)) * 1200


@pytest.fixture
def upgraded(broker_kind, broker_factory):
    if broker_kind != "ferry":
        pytest.skip("Ferry's own data directory")
    b = broker_factory.make("ferry", "upgrade")
    shutil.copytree(FIXTURE, b.data_dir, dirs_exist_ok=True)
    broker_factory.start(b)
    yield b
    assert b.stop() == 0


def get_all(ch, queue: str):
    out = []
    while True:
        m, p, body = ch.basic_get(queue, auto_ack=True)
        if m is None:
            return out
        out.append((m, p, body))


def api(b, path: str):
    req = urllib.request.Request(f"http://{b.endpoints['http']}{path}")
    req.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def test_every_message_of_a_v1_data_directory_is_served(upgraded):
    c = pika.BlockingConnection(upgraded.params())
    ch = c.channel()

    plain = get_all(ch, "v1.plain")
    assert [(body if body != BIG else "BIG", m.redelivered) for m, _, body in plain] == [
        (b"hello", True), (b"", True), ("BIG", True), (b"returned", True),
        (b"topic", False), (b"headers", False)]
    p = plain[0][1]
    assert (p.content_type, p.content_encoding, p.delivery_mode, p.priority) == \
        ("text/plain", "utf-8", 2, 3)
    assert (p.correlation_id, p.reply_to, p.message_id, p.timestamp, p.type, p.user_id,
            p.app_id, p.expiration) == \
        ("corr-1", "replies", "m-1", 1_765_000_000, "greeting", "guest", "make_data_v1",
         "315360000000")
    assert p.headers == {
        "str": "s", "int": 42, "neg": -7, "big": 2**40, "yes": True, "no": False,
        "bytes": b"\x00\x01", "table": {"a": 1, "b": {"c": "deep"}}, "array": [1, "two", [3]],
        "decimal": decimal.Decimal("1.23"),
        "ts": datetime.datetime(2026, 12, 6, 1, 2, 3, tzinfo=datetime.timezone.utc),
        "void": None, "utf8": "é✓"}
    assert plain[4][1].headers is None and plain[5][1].headers == {"k": "v"}

    prio = get_all(ch, "v1.prio")
    assert [(body, p.priority) for _, p, body in prio] == [
        (b"p5", 5), (b"p9", 9), (b"p2", 2), (b"p0", 0), (b"pnone", None)]

    (m, p, body), = get_all(ch, "v1.quorum")
    assert (body, m.redelivered, p.headers["x-delivery-count"]) == (b"q", True, 2)

    (m, p, body), = get_all(ch, "v1.dlq")
    assert body == b"dead" and p.headers["h"] == 1
    (death,) = p.headers["x-death"]
    assert {k: death[k] for k in ["count", "reason", "queue", "exchange", "routing-keys"]} == {
        "count": 1, "reason": "rejected", "queue": "v1.src", "exchange": "",
        "routing-keys": ["v1.src"]}
    assert get_all(ch, "v1.src") == []

    for q in ["v1.cc1", "v1.cc2", "v1.bcc"]:
        (_, p, body), = get_all(ch, q)
        assert (body, p.headers) == (b"cc", {"CC": ["v1.cc2"]}), q
    assert [body for _, _, body in get_all(ch, "v1.pol")] == [b"pol1", b"pol2"]

    # The TTL queue keeps its arguments (its message is checked from the record).
    ch.queue_declare("v1.ttl", durable=True, arguments={"x-message-ttl": 2**32 - 1})

    ch.basic_qos(prefetch_count=10)
    seen = []
    for m, p, body in ch.consume("v1.stream", arguments={"x-stream-offset": "first"},
                                 inactivity_timeout=5):
        assert m is not None, f"the stream stopped after {seen}"
        seen.append((p.headers["x-stream-offset"], body, p.headers["i"]))
        ch.basic_ack(m.delivery_tag)
        if len(seen) == 5:
            break
    ch.cancel()
    assert seen == [(i, f"s{i}".encode(), i) for i in range(5)]

    # Exchanges and bindings route as before.
    ch.confirm_delivery()
    ch.basic_publish("v1.topic", "a.x.y", b"again")
    ch.basic_publish("v1.headers", "", b"again-h", pika.BasicProperties(headers={"k": "v"}))
    assert [body for _, _, body in get_all(ch, "v1.plain")] == [b"again", b"again-h"]
    c.close()

    # Users, permissions, the other vhost and its queue.
    creds = pika.PlainCredentials("v1user", "v1pass")
    c = pika.BlockingConnection(upgraded.params(virtual_host="v1", credentials=creds))
    ch = c.channel()
    assert [body for _, _, body in get_all(ch, "v1.other")] == [b"other"]
    with channel_closed(403, "ACCESS_REFUSED - access to queue 'elsewhere' in vhost 'v1' "
                             "refused for user 'v1user'"):
        ch.queue_declare("elsewhere", durable=True)
    c.close()
    with pytest.raises(px.ProbableAuthenticationError):
        wrong = pika.PlainCredentials("v1user", "wrong")
        pika.BlockingConnection(upgraded.params(virtual_host="v1", credentials=wrong))

    # Policies and limits.
    (pol,) = api(upgraded, "/api/policies/%2F")
    assert (pol["name"], pol["pattern"], pol["definition"]) == ("v1-len", "^v1\\.pol$",
                                                                 {"max-length": 2})
    (lim,) = api(upgraded, "/api/vhost-limits/v1")
    assert lim["value"] == {"max-queues": 100}
