"""Queue features from issue 5: message TTL (x-message-ttl, per-message expiration), length
limits (x-max-length, x-max-length-bytes with x-overflow drop-head / reject-publish /
reject-publish-dlx) and dead-lettering (x-dead-letter-exchange, x-dead-letter-routing-key) with
the x-death header as RabbitMQ 3.10 writes it, and its cycle detection.

Every expectation here is RabbitMQ 3.10's (run with FERRY_ORACLE=1 to check them against it).
Times inside x-death differ between runs, so only their type and plausibility are checked.
"""

from __future__ import annotations

import struct
import time

import pika
import pika.exceptions as px
import pika.spec as spec
import pytest

from harness.expect import (bodies, channel_closed, drain, ensure_confirms, eventually,
                            message_count, sync, wait_for)
from harness.queues import deaths, dlx_args, open_ch
from harness.rawamqp import RawAMQP, recv_raw_frame

V = "in vhost '/'"


# -- helpers ---------------------------------------------------------------------------------------

def get_one(ch, q, auto_ack=True):
    m, p, body = ch.basic_get(q, auto_ack=auto_ack)
    assert m is not None, f"queue {q} is empty"
    return m, p, body


def decode_value(buf: bytes, at: int):
    """One field value as (type tag, value), keeping RabbitMQ's type tags."""
    tag = chr(buf[at])
    at += 1
    fixed = {"t": ">B", "b": ">b", "B": ">B", "s": ">h", "u": ">H", "I": ">i", "i": ">I",
             "l": ">q", "f": ">f", "d": ">d", "T": ">Q"}
    if tag in fixed:
        (v,) = struct.unpack_from(fixed[tag], buf, at)
        return (tag, v), at + struct.calcsize(fixed[tag])
    if tag in "Sx":
        (n,) = struct.unpack_from(">I", buf, at)
        return (tag, buf[at + 4:at + 4 + n]), at + 4 + n
    if tag == "D":
        scale, v = struct.unpack_from(">Bi", buf, at)
        return (tag, (scale, v)), at + 5
    if tag == "V":
        return (tag, None), at
    if tag == "A":
        (n,) = struct.unpack_from(">I", buf, at)
        end, at, items = at + 4 + n, at + 4, []
        while at < end:
            v, at = decode_value(buf, at)
            items.append(v)
        return (tag, items), end
    if tag == "F":
        (n,) = struct.unpack_from(">I", buf, at)
        return (tag, decode_table(buf[at + 4:at + 4 + n])), at + 4 + n
    raise ValueError(f"field type {tag!r}")


def decode_table(buf: bytes) -> dict:
    out, at = {}, 0
    while at < len(buf):
        n = buf[at]
        key = buf[at + 1:at + 1 + n].decode()
        out[key], at = decode_value(buf, at + 1 + n)
    return out


PROPERTY_NAMES = ["content_type", "content_encoding", "headers", "delivery_mode", "priority",
                  "correlation_id", "reply_to", "expiration", "message_id", "timestamp", "type",
                  "user_id", "app_id", "cluster_id"]


def raw_get(broker, queue: str) -> dict:
    """basic.get over a raw socket: the delivered properties with every header's type tag.
    Returns {property: value}, headers as {name: (tag, value)}."""
    with RawAMQP(broker.host, broker.port) as r:
        r.handshake()
        r.open_channel(1)
        r.send_method(1, spec.Basic.Get(queue=queue, no_ack=True))
        r.expect(spec.Basic.GetOk)
        ftype, _, payload = recv_raw_frame(r)
        assert ftype == 2
        (flags,) = struct.unpack_from(">H", payload, 12)
        at, props = 14, {}
        for i, name in enumerate(PROPERTY_NAMES):
            if not flags & (1 << (15 - i)):
                continue
            if name == "headers":
                (n,) = struct.unpack_from(">I", payload, at)
                props[name] = decode_table(payload[at + 4:at + 4 + n])
                at += 4 + n
            elif name in ("delivery_mode", "priority"):
                props[name] = payload[at]
                at += 1
            elif name == "timestamp":
                (props[name],) = struct.unpack_from(">Q", payload, at)
                at += 8
            else:
                n = payload[at]
                props[name] = payload[at + 1:at + 1 + n].decode()
                at += 1 + n
        return props


def fresh(ch):
    """A channel in confirm mode (so counts and gets see every publish)."""
    ensure_confirms(ch)
    return ch


# -- message TTL -----------------------------------------------------------------------------------

def test_queue_ttl_expires_messages_in_order_into_the_dlx(ch, uniq):
    src, dead = uniq("src"), uniq("dead")
    ch.queue_declare(dead, exclusive=True)
    ch.queue_declare(src, exclusive=True, arguments=dlx_args(dead, **{"x-message-ttl": 150}))
    fresh(ch)
    for i in range(5):
        ch.basic_publish("", src, f"m{i}".encode())
    assert message_count(ch, src) == 5
    assert eventually(lambda: message_count(ch, dead), 5) == 5
    assert message_count(ch, src) == 0
    got = drain(ch, dead)
    assert [b for _, _, b in got] == [f"m{i}".encode() for i in range(5)]
    for _, p, _ in got:
        assert deaths(p) == [(src, "expired", 1)]
        assert p.expiration is None


def test_per_message_ttl_expires_only_from_the_head(ch, uniq):
    q = uniq()
    ch.queue_declare(q, exclusive=True)
    fresh(ch)
    ch.basic_publish("", q, b"long", pika.BasicProperties(expiration="60000"))
    ch.basic_publish("", q, b"short", pika.BasicProperties(expiration="50"))
    time.sleep(0.3)
    # "short" has expired but is not at the head: RabbitMQ only drops expired heads.
    assert message_count(ch, q) == 2
    _, p, body = get_one(ch, q)
    assert (body, p.expiration) == (b"long", "60000")
    m, _, _ = ch.basic_get(q, auto_ack=True)
    assert m is None
    assert eventually(lambda: message_count(ch, q), 0) == 0


def test_the_lower_of_queue_ttl_and_expiration_applies(ch, uniq):
    short_msg, short_queue, both_long = uniq("sm"), uniq("sq"), uniq("long")
    ch.queue_declare(short_msg, exclusive=True, arguments={"x-message-ttl": 60000})
    ch.queue_declare(short_queue, exclusive=True, arguments={"x-message-ttl": 100})
    ch.queue_declare(both_long, exclusive=True, arguments={"x-message-ttl": 60000})
    fresh(ch)
    ch.basic_publish("", short_msg, b"a", pika.BasicProperties(expiration="100"))
    ch.basic_publish("", short_queue, b"b", pika.BasicProperties(expiration="60000"))
    ch.basic_publish("", both_long, b"c", pika.BasicProperties(expiration="60000"))
    assert eventually(lambda: message_count(ch, short_msg), 0) == 0
    assert eventually(lambda: message_count(ch, short_queue), 0) == 0
    assert message_count(ch, both_long) == 1
    _, p, body = get_one(ch, both_long)
    assert (body, p.expiration) == (b"c", "60000")


def test_expired_messages_are_never_delivered(connect, uniq):
    c = connect()
    ch = fresh(c.channel())
    q = uniq()
    ch.queue_declare(q, exclusive=True, arguments={"x-message-ttl": 100})
    for i in range(3):
        ch.basic_publish("", q, f"old{i}".encode())
    time.sleep(0.3)
    got = []
    ch.basic_consume(q, lambda c_, m, p, body: got.append(body), auto_ack=True)
    c.process_data_events(time_limit=0.3)
    assert got == []
    ch.basic_publish("", q, b"fresh")
    wait_for(c, lambda: got == [b"fresh"], what="the fresh message")


def test_ttl_zero_reaches_a_waiting_consumer_and_is_dropped_otherwise(connect, uniq):
    c = connect()
    ch = fresh(c.channel())
    q = uniq()
    ch.queue_declare(q, exclusive=True, arguments={"x-message-ttl": 0})
    ch.basic_publish("", q, b"nobody waits")
    assert message_count(ch, q) == 0
    got = []
    ch.basic_consume(q, lambda c_, m, p, body: got.append(body), auto_ack=True)
    ch.basic_publish("", q, b"delivered at once")
    wait_for(c, lambda: got == [b"delivered at once"], what="the delivery")


def test_requeued_message_keeps_its_deadline(ch, uniq):
    q = uniq()
    ch.queue_declare(q, exclusive=True)
    fresh(ch)
    ch.basic_publish("", q, b"x", pika.BasicProperties(expiration="200"))
    m, _, _ = get_one(ch, q, auto_ack=False)
    time.sleep(0.4)
    ch.basic_nack(m.delivery_tag, requeue=True)
    sync(ch)
    assert ch.basic_get(q, auto_ack=True)[0] is None
    assert eventually(lambda: message_count(ch, q), 0) == 0


def test_unacked_messages_do_not_expire(ch, uniq):
    q = uniq()
    ch.queue_declare(q, exclusive=True, arguments={"x-message-ttl": 100})
    fresh(ch)
    ch.basic_publish("", q, b"held")
    m, _, _ = get_one(ch, q, auto_ack=False)
    time.sleep(0.3)
    ch.basic_ack(m.delivery_tag)
    sync(ch)
    assert message_count(ch, q) == 0


# -- dead-lettering --------------------------------------------------------------------------------

def test_reject_and_nack_without_requeue_dead_letter(ch, uniq):
    src, dead, dlx = uniq("src"), uniq("dead"), uniq("dlx")
    ch.exchange_declare(dlx, "direct", auto_delete=True)
    ch.queue_declare(dead, exclusive=True)
    ch.queue_bind(dead, dlx, "dead")
    ch.queue_declare(src, exclusive=True, arguments={"x-dead-letter-exchange": dlx,
                                                     "x-dead-letter-routing-key": "dead"})
    fresh(ch)
    for i in range(5):
        ch.basic_publish("", src, f"m{i}".encode())
    m0, _, _ = get_one(ch, src, auto_ack=False)
    ch.basic_reject(m0.delivery_tag, requeue=False)
    m1, _, _ = get_one(ch, src, auto_ack=False)
    ch.basic_nack(m1.delivery_tag, requeue=True)                    # back in place
    m1, _, _ = get_one(ch, src, auto_ack=False)
    m2, _, _ = get_one(ch, src, auto_ack=False)
    m3, _, _ = get_one(ch, src, auto_ack=False)
    ch.basic_ack(m1.delivery_tag)                                   # acked: not dead-lettered
    ch.basic_nack(m3.delivery_tag, multiple=True, requeue=False)    # m2 and m3
    assert eventually(lambda: message_count(ch, dead), 3) == 3
    got = drain(ch, dead)
    assert [b for _, _, b in got] == [b"m0", b"m2", b"m3"]
    for m, p, _ in got:
        assert deaths(p) == [(src, "rejected", 1)]
        assert (m.exchange, m.routing_key) == (dlx, "dead")
        assert not m.redelivered
    assert bodies(ch, src) == [b"m4"]


def test_x_death_header_fields_and_types(broker, ch, uniq):
    src, dead = uniq("src"), uniq("dead")
    ch.queue_declare(dead, exclusive=False, auto_delete=False)
    ch.queue_declare(src, exclusive=True, arguments=dlx_args(dead))
    ch.queue_bind(src, "amq.direct", "k1")
    fresh(ch)
    props = pika.BasicProperties(content_type="text/plain", correlation_id="c-1",
                                 delivery_mode=2, expiration="60000", message_id="m-1",
                                 headers={"h": "v", "CC": ["k2"]})
    ch.basic_publish("amq.direct", "k1", b"body", props)
    m, _, _ = get_one(ch, src, auto_ack=False)
    before = int(time.time())
    ch.basic_reject(m.delivery_tag, requeue=False)
    try:
        assert eventually(lambda: message_count(ch, dead), 1) == 1
        p = raw_get(broker, dead)
    finally:
        ch.queue_delete(dead)
    after = int(time.time())
    assert "expiration" not in p
    assert (p["content_type"], p["correlation_id"], p["delivery_mode"], p["message_id"]) == \
        ("text/plain", "c-1", 2, "m-1")
    h = p["headers"]
    # the dead-letter routing key replaces the routing keys, so CC is removed
    assert sorted(h) == ["h", "x-death", "x-first-death-exchange", "x-first-death-queue",
                         "x-first-death-reason"]
    assert h["h"] == ("S", b"v")
    assert h["x-first-death-exchange"] == ("S", b"amq.direct")
    assert h["x-first-death-queue"] == ("S", src.encode())
    assert h["x-first-death-reason"] == ("S", b"rejected")
    tag, entries = h["x-death"]
    assert tag == "A" and len(entries) == 1 and entries[0][0] == "F"
    d = entries[0][1]
    assert sorted(d) == ["count", "exchange", "original-expiration", "queue", "reason",
                         "routing-keys", "time"]
    assert d["count"] == ("l", 1)
    assert d["reason"] == ("S", b"rejected")
    assert d["queue"] == ("S", src.encode())
    assert d["exchange"] == ("S", b"amq.direct")
    assert d["routing-keys"] == ("A", [("S", b"k1"), ("S", b"k2")])
    assert d["original-expiration"] == ("S", b"60000")
    assert d["time"][0] == "T" and before - 2 <= d["time"][1] <= after + 2


def test_without_dead_letter_routing_key_the_original_keys_route(ch, uniq):
    src, by_key, by_cc, dlx = uniq("src"), uniq("key"), uniq("cc"), uniq("dlx")
    ch.exchange_declare(dlx, "topic", auto_delete=True)
    ch.queue_declare(by_key, exclusive=True)
    ch.queue_declare(by_cc, exclusive=True)
    ch.queue_bind(by_key, dlx, "orig.#")
    ch.queue_bind(by_cc, dlx, "cc.#")
    ch.queue_declare(src, exclusive=True, arguments={"x-dead-letter-exchange": dlx,
                                                     "x-message-ttl": 50})
    ch.queue_bind(src, "amq.direct", "orig.a")
    fresh(ch)
    ch.basic_publish("amq.direct", "orig.a", b"x", pika.BasicProperties(headers={"CC": ["cc.b"]}))
    assert eventually(lambda: (message_count(ch, by_key), message_count(ch, by_cc)), (1, 1)) \
        == (1, 1)
    for q in (by_key, by_cc):
        m, p, _ = get_one(ch, q)
        assert (m.exchange, m.routing_key) == (dlx, "orig.a")
        assert p.headers["CC"] == ["cc.b"]                      # kept without a DL routing key
        assert p.headers["x-death"][0]["routing-keys"] == ["orig.a", "cc.b"]
        assert p.headers["x-death"][0]["exchange"] == "amq.direct"
        assert p.headers["x-first-death-reason"] == "expired"


def test_x_death_counts_and_order_over_repeated_rejections(ch, uniq):
    a, b, c = uniq("a"), uniq("b"), uniq("c")
    nxt = {a: b, b: c, c: a}
    for q in (a, b, c):
        ch.queue_declare(q, exclusive=True, arguments=dlx_args(nxt[q]))
    fresh(ch)
    ch.basic_publish("", a, b"x", pika.BasicProperties(expiration="60000", headers={"n": 1}))
    R = "rejected"
    # RabbitMQ 3.10 regroups the older entries on each death, which reverses their order.
    expected = [
        [(a, R, 1)],
        [(b, R, 1), (a, R, 1)],
        [(c, R, 1), (a, R, 1), (b, R, 1)],
        [(a, R, 2), (b, R, 1), (c, R, 1)],
        [(b, R, 2), (c, R, 1), (a, R, 2)],
    ]
    q = a
    m, p, _ = get_one(ch, q, auto_ack=False)
    assert deaths(p) == []
    for want in expected:
        ch.basic_reject(m.delivery_tag, requeue=False)
        q = nxt[q]
        assert eventually(lambda: message_count(ch, q), 1) == 1
        m, p, _ = get_one(ch, q, auto_ack=False)
        assert deaths(p) == want
        assert p.headers["x-first-death-queue"] == a
        assert p.headers["n"] == 1
        # the entry for `a` keeps the message's original expiration
        for d in p.headers["x-death"]:
            assert ("original-expiration" in d) == (d["queue"] == a)


def test_expiry_cycle_back_to_the_same_queue_is_dropped(ch, uniq):
    q = uniq()
    # no dead-letter routing key: the message goes back to q through the default exchange
    ch.queue_declare(q, exclusive=True, arguments={"x-dead-letter-exchange": "",
                                                   "x-message-ttl": 30})
    fresh(ch)
    ch.basic_publish("", q, b"x")
    assert eventually(lambda: message_count(ch, q), 0) == 0
    seen = 0
    for _ in range(10):
        time.sleep(0.03)
        seen += message_count(ch, q)
    assert seen == 0


def test_expiry_cycle_over_two_queues_is_dropped(ch, uniq):
    a, b = uniq("a"), uniq("b")
    ch.queue_declare(a, exclusive=True, arguments=dlx_args(b, **{"x-message-ttl": 30}))
    ch.queue_declare(b, exclusive=True, arguments=dlx_args(a, **{"x-message-ttl": 30}))
    fresh(ch)
    ch.basic_publish("", a, b"x")
    assert eventually(lambda: (message_count(ch, a), message_count(ch, b)), (0, 0)) == (0, 0)
    seen = 0
    for _ in range(10):
        time.sleep(0.03)
        seen += message_count(ch, a) + message_count(ch, b)
    assert seen == 0


def test_cycle_through_a_rejection_is_not_dropped(ch, uniq):
    a, b = uniq("a"), uniq("b")
    ch.queue_declare(a, exclusive=True, arguments=dlx_args(b))
    ch.queue_declare(b, exclusive=True, arguments=dlx_args(a, **{"x-message-ttl": 30}))
    fresh(ch)
    ch.basic_publish("", a, b"x")
    m, _, _ = get_one(ch, a, auto_ack=False)
    ch.basic_reject(m.delivery_tag, requeue=False)
    assert eventually(lambda: message_count(ch, a), 1) == 1
    _, p, body = get_one(ch, a)
    assert body == b"x"
    assert deaths(p) == [(b, "expired", 1), (a, "rejected", 1)]
    assert p.headers["x-first-death-reason"] == "rejected"


def test_missing_dead_letter_exchange_drops_the_message(ch, uniq):
    q = uniq()
    ch.queue_declare(q, exclusive=True, arguments={"x-dead-letter-exchange": uniq("missing")})
    fresh(ch)
    ch.basic_publish("", q, b"x")
    m, _, _ = get_one(ch, q, auto_ack=False)
    ch.basic_reject(m.delivery_tag, requeue=False)
    sync(ch)
    assert eventually(lambda: message_count(ch, q), 0) == 0


# -- length limits ---------------------------------------------------------------------------------

def test_drop_head_dead_letters_the_oldest_ready_messages(ch, uniq):
    src, dead = uniq("src"), uniq("dead")
    ch.queue_declare(dead, exclusive=True)
    ch.queue_declare(src, exclusive=True, arguments=dlx_args(dead, **{"x-max-length": 2}))
    fresh(ch)
    for i in range(5):
        ch.basic_publish("", src, f"m{i}".encode())
    assert message_count(ch, src) == 2
    assert eventually(lambda: message_count(ch, dead), 3) == 3
    got = drain(ch, dead)
    assert [b for _, _, b in got] == [b"m0", b"m1", b"m2"]
    assert all(deaths(p) == [(src, "maxlen", 1)] for _, p, _ in got)
    # unacknowledged messages do not count against the limit
    m, _, body = get_one(ch, src, auto_ack=False)
    assert body == b"m3"
    ch.basic_publish("", src, b"m5")
    assert message_count(ch, src) == 2
    assert message_count(ch, dead) == 0
    ch.basic_publish("", src, b"m6")
    assert eventually(lambda: message_count(ch, dead), 1) == 1
    assert bodies(ch, dead) == [b"m4"]
    ch.basic_ack(m.delivery_tag)
    assert bodies(ch, src) == [b"m5", b"m6"]


def test_max_length_bytes_counts_message_bodies(ch, uniq):
    q = uniq()
    ch.queue_declare(q, exclusive=True, arguments={"x-max-length-bytes": 10})
    fresh(ch)
    for i in range(4):
        ch.basic_publish("", q, f"abc{i}".encode(), pika.BasicProperties(headers={"pad": "x" * 50}))
    assert bodies(ch, q) == [b"abc2", b"abc3"]
    ch.basic_publish("", q, b"x" * 11)                   # larger than the limit on its own
    assert message_count(ch, q) == 0


def test_max_length_zero_drops_unless_a_consumer_waits(connect, uniq):
    c = connect()
    ch = fresh(c.channel())
    q = uniq()
    ch.queue_declare(q, exclusive=True, arguments={"x-max-length": 0})
    ch.basic_publish("", q, b"dropped")
    assert message_count(ch, q) == 0
    got = []
    ch.basic_consume(q, lambda c_, m, p, body: got.append(body), auto_ack=True)
    ch.basic_publish("", q, b"taken")
    wait_for(c, lambda: got == [b"taken"], what="the delivery")


def test_reject_publish_nacks_confirming_publishers(connect, uniq):
    c = connect()
    ch = fresh(c.channel())
    q = uniq()
    ch.queue_declare(q, exclusive=True, arguments={"x-max-length": 2,
                                                   "x-overflow": "reject-publish"})
    ch.basic_publish("", q, b"1")
    ch.basic_publish("", q, b"2")
    with pytest.raises(px.NackError):
        ch.basic_publish("", q, b"3")
    with pytest.raises(px.NackError):
        ch.basic_publish("", q, b"4", mandatory=True)        # refused, but it was routed
    plain = c.channel()                                      # no confirms: dropped silently
    plain.basic_publish("", q, b"5")
    sync(plain)
    assert message_count(ch, q) == 2
    m, _, body = get_one(ch, q, auto_ack=False)              # unacked: no longer counted
    assert body == b"1"
    ch.basic_publish("", q, b"6")
    ch.basic_ack(m.delivery_tag)
    assert bodies(ch, q) == [b"2", b"6"]


def test_reject_publish_nacks_when_any_target_queue_is_full(ch, uniq):
    full, roomy, x = uniq("full"), uniq("roomy"), uniq("x")
    ch.exchange_declare(x, "fanout", auto_delete=True)
    ch.queue_declare(full, exclusive=True, arguments={"x-max-length": 1,
                                                      "x-overflow": "reject-publish"})
    ch.queue_declare(roomy, exclusive=True)
    ch.queue_bind(full, x)
    ch.queue_bind(roomy, x)
    fresh(ch)
    ch.basic_publish(x, "", b"1")
    with pytest.raises(px.NackError):
        ch.basic_publish(x, "", b"2")
    assert bodies(ch, full) == [b"1"]
    assert bodies(ch, roomy) == [b"1", b"2"]


def test_reject_publish_dlx_dead_letters_the_refused_message(ch, uniq):
    src, dead = uniq("src"), uniq("dead")
    ch.queue_declare(dead, exclusive=True)
    ch.queue_declare(src, exclusive=True, arguments=dlx_args(
        dead, **{"x-max-length": 1, "x-overflow": "reject-publish-dlx"}))
    fresh(ch)
    ch.basic_publish("", src, b"kept")
    with pytest.raises(px.NackError):
        ch.basic_publish("", src, b"refused")
    assert eventually(lambda: message_count(ch, dead), 1) == 1
    _, p, body = get_one(ch, dead)
    assert body == b"refused"
    assert deaths(p) == [(src, "maxlen", 1)]
    assert bodies(ch, src) == [b"kept"]


# -- validation ------------------------------------------------------------------------------------

@pytest.mark.parametrize("args,text", [
    ({"x-message-ttl": -1}, "invalid arg 'x-message-ttl' for queue '{q}' {v}: {{value_negative,-1}}"),
    ({"x-message-ttl": "a"},
     "invalid arg 'x-message-ttl' for queue '{q}' {v}: \"expected integer, got longstr\""),
    ({"x-message-ttl": 315360000001},
     "invalid arg 'x-message-ttl' for queue '{q}' {v}: {{value_too_large,315360000001}}"),
    ({"x-max-length": -2}, "invalid arg 'x-max-length' for queue '{q}' {v}: {{value_negative,-2}}"),
    ({"x-max-length-bytes": "a"},
     "invalid arg 'x-max-length-bytes' for queue '{q}' {v}: \"expected integer, got longstr\""),
    ({"x-overflow": "x"}, "invalid arg 'x-overflow' for queue '{q}' {v}: invalid_overflow"),
    ({"x-overflow": 1},
     "invalid arg 'x-overflow' for queue '{q}' {v}: {{unacceptable_type,signedint}}"),
    ({"x-dead-letter-routing-key": "k"},
     "invalid arg 'x-dead-letter-routing-key' for queue '{q}' {v}: routing_key_but_no_dlx_defined"),
    ({"x-dead-letter-exchange": "", "x-dead-letter-routing-key": 5},
     "invalid arg 'x-dead-letter-routing-key' for queue '{q}' {v}: {{unacceptable_type,signedint}}"),
    ({"x-dead-letter-exchange": 5},
     "invalid type 'signedint' for arg 'x-dead-letter-exchange' in queue '{q}' {v}"),
    ({"x-dead-letter-exchange": "", "x-message-ttl": "a", "x-max-length": -1},
     "invalid arg 'x-message-ttl' for queue '{q}' {v}: \"expected integer, got longstr\""),
])
def test_invalid_queue_arguments_are_refused(conn, uniq, args, text):
    q = uniq()
    ch = conn.channel()
    with channel_closed(406, "PRECONDITION_FAILED - " + text.format(q=q, v=V)):
        ch.queue_declare(q, exclusive=True, arguments=args)
    ch = conn.channel()
    ch.queue_declare(q, exclusive=True, arguments={"x-message-ttl": 315360000000,
                                                   "x-max-length": 2 ** 40,
                                                   "x-overflow": "reject-publish-dlx",
                                                   "x-dead-letter-exchange": "nowhere"})


@pytest.mark.parametrize("value,reason", [
    ("315360000001", "{value_too_large,315360000001}"),
    ("100000000000000000", "{value_too_large,100000000000000000}"),
    # RabbitMQ prints the reason with ~p, which breaks lines past 78 columns
    ("1000000000000000000", "{value_too_large,\n" + " " * 43 + "1000000000000000000}"),
])
def test_expiration_above_ten_years_is_refused(conn, uniq, value, reason):
    q = uniq()
    ch = conn.channel()
    ch.queue_declare(q, exclusive=True)
    ch.confirm_delivery()
    ch.basic_publish("", q, b"x", pika.BasicProperties(expiration="315360000000"))
    ch = conn.channel()
    ch.basic_publish("", q, b"x", pika.BasicProperties(expiration=value))
    with channel_closed(406, f"PRECONDITION_FAILED - invalid expiration '{value}': {reason}"):
        sync(ch)


# -- restarts --------------------------------------------------------------------------------------

PERSISTENT = pika.BasicProperties(delivery_mode=2)


@pytest.mark.restart
def test_deadlines_survive_a_restart(restartable_broker):
    b = restartable_broker
    c, ch = open_ch(b)
    ch.queue_declare("dead", durable=True)
    ch.queue_declare("ttl", durable=True, arguments=dlx_args("dead", **{"x-message-ttl": 3000}))
    ch.queue_declare("per-msg", durable=True, arguments=dlx_args("dead"))
    ch.queue_declare("long", durable=True, arguments={"x-message-ttl": 600000})
    published = time.monotonic()
    ch.basic_publish("", "ttl", b"queue ttl", PERSISTENT)
    ch.basic_publish("", "per-msg", b"message ttl",
                     pika.BasicProperties(delivery_mode=2, expiration="3000"))
    ch.basic_publish("", "long", b"stays", PERSISTENT)
    c.close()
    assert b.restart() == 0
    restarted = time.monotonic()
    c, ch = open_ch(b)
    # the deadline was fixed at publish time: it is not restarted by the restart
    assert eventually(lambda: message_count(ch, "dead"), 2, timeout=10) == 2
    assert time.monotonic() <= max(published + 3.0, restarted) + 1.5
    got = drain(ch, "dead")
    assert sorted((body, deaths(p)[0][0]) for _, p, body in got) == \
        [(b"message ttl", "per-msg"), (b"queue ttl", "ttl")]
    assert all(deaths(p)[0][1] == "expired" for _, p, _ in got)
    assert bodies(ch, "long") == [b"stays"]
    c.close()


@pytest.mark.restart
def test_expired_while_stopped_is_never_delivered(restartable_broker):
    b = restartable_broker
    c, ch = open_ch(b)
    ch.queue_declare("q", durable=True, arguments={"x-message-ttl": 300})
    ch.basic_publish("", "q", b"x", PERSISTENT)
    c.close()
    assert b.stop() == 0
    time.sleep(0.5)
    b.start()
    c, ch = open_ch(b)
    assert ch.basic_get("q", auto_ack=True)[0] is None
    assert message_count(ch, "q") == 0
    c.close()


@pytest.mark.restart
def test_dead_lettered_messages_and_limits_survive_a_restart(restartable_broker):
    b = restartable_broker
    c, ch = open_ch(b)
    ch.queue_declare("dead", durable=True)
    ch.queue_declare("src", durable=True, arguments=dlx_args("dead", **{"x-max-length": 2}))
    ch.queue_declare("full", durable=True, arguments={"x-max-length": 1,
                                                      "x-overflow": "reject-publish"})
    for i in range(3):
        ch.basic_publish("", "src", f"m{i}".encode(), PERSISTENT)     # m0 dropped to dead
    ch.basic_publish("", "full", b"f0", PERSISTENT)
    m, _, _ = get_one(ch, "src", auto_ack=False)
    ch.basic_reject(m.delivery_tag, requeue=False)                     # m1 rejected to dead
    assert eventually(lambda: message_count(ch, "dead"), 2) == 2
    _, before, _ = get_one(ch, "dead", auto_ack=False)
    ch.basic_recover(requeue=True)
    c.close()
    assert b.restart() == 0
    c, ch = open_ch(b)
    got = drain(ch, "dead", auto_ack=False)
    assert [(body, deaths(p)) for _, p, body in got] == \
        [(b"m0", [("src", "maxlen", 1)]), (b"m1", [("src", "rejected", 1)])]
    assert got[0][1].headers == before.headers
    ch.basic_recover(requeue=True)
    ch.basic_publish("", "src", b"m3", PERSISTENT)                     # limit still applies
    ch.basic_publish("", "src", b"m4", PERSISTENT)
    assert eventually(lambda: message_count(ch, "dead"), 3) == 3
    assert bodies(ch, "src") == [b"m3", b"m4"]
    with pytest.raises(px.NackError):
        ch.basic_publish("", "full", b"f1", PERSISTENT)
    assert bodies(ch, "full") == [b"f0"]
    c.close()
