"""Sender-selected distribution: the `CC` and `BCC` headers (arrays of routing keys) route a
publish to extra keys on the same exchange, one copy per queue; BCC is stripped before the
message is stored (its keys stay with the message and route a dead letter again); another type is
a 406 with RabbitMQ 3.10's text; dead-lettering records the publish key and CC (not BCC) in
x-death."""

from __future__ import annotations

import pika
import pika.exceptions as px
import pytest

from harness.expect import channel_closed, drain, ensure_confirms, eventually, message_count


def props(**headers):
    return pika.BasicProperties(headers=headers)


def queues(ch, n):
    out = [ch.queue_declare("", exclusive=True).method.queue for _ in range(n)]
    ensure_confirms(ch)
    return out


def test_cc_and_bcc_add_routing_keys_one_copy_per_queue(ch, uniq):
    a, b, c, none = queues(ch, 4)
    x = uniq("x")
    ch.exchange_declare(x, "direct", auto_delete=True)
    ch.queue_bind(a, x, "a")
    ch.queue_bind(a, x, "b")                      # reached by two keys: still one copy
    ch.queue_bind(b, x, "b")
    ch.queue_bind(c, x, "c")
    ch.basic_publish(x, "a", b"m", props(CC=["b"], BCC=["c", "a"], h=1))
    for q in (a, b, c):
        (m, p, body), = drain(ch, q)
        assert (m.exchange, m.routing_key, body) == (x, "a", b"m")
        assert p.headers == {"CC": ["b"], "h": 1}   # BCC stripped, CC kept
    assert drain(ch, none) == []


def test_topic_and_exchange_to_exchange_bindings_route_every_key(ch, uniq):
    a, b = queues(ch, 2)
    top, inner = uniq("top"), uniq("inner")
    ch.exchange_declare(top, "topic", auto_delete=True)
    ch.exchange_declare(inner, "topic", auto_delete=True)
    ch.exchange_bind(inner, top, "#")
    ch.queue_bind(a, inner, "x.*")
    ch.queue_bind(b, inner, "y.#")
    ch.basic_publish(top, "nothing", b"m", props(CC=["x.1"], BCC=["y.2.3"]))
    assert [len(drain(ch, q)) for q in (a, b)] == [1, 1]


def test_fanout_and_headers_exchanges_deliver_one_copy(ch, uniq):
    a, b = queues(ch, 2)
    ch.queue_bind(a, "amq.fanout")
    ch.queue_bind(b, "amq.match", arguments={"x-match": "any", "h": 1})
    ch.basic_publish("amq.fanout", "k", b"f", props(CC=["k2", "k3"], BCC=["k4"]))
    ch.basic_publish("amq.match", "k", b"h", props(CC=["k2"], BCC=["k3"], h=1))
    assert [b for _, _, b in drain(ch, a)] == [b"f"]
    assert [b for _, _, b in drain(ch, b)] == [b"h"]


def test_default_exchange_routes_cc_and_bcc_to_queues_by_name(ch):
    a, b, c = queues(ch, 3)
    ch.basic_publish("", a, b"m", props(CC=[b, a], BCC=[c, "no-such-queue"]))
    for q in (a, b, c):
        (m, p, _), = drain(ch, q)
        assert (m.exchange, m.routing_key, p.headers) == ("", a, {"CC": [b, a]})


def test_bcc_only_leaves_an_empty_header_table(ch):
    a, b = queues(ch, 2)
    ch.basic_publish("", a, b"m", props(BCC=[b]))
    for q in (a, b):
        (_, p, _), = drain(ch, q)
        assert p.headers == {}


def test_non_string_elements_and_empty_arrays_are_ignored(ch):
    a, b = queues(ch, 2)
    ch.basic_publish("", a, b"m", props(CC=[1, b, {"t": 1}], BCC=[]))
    assert [len(drain(ch, q)) for q in (a, b)] == [1, 1]


def test_mandatory_counts_the_cc_and_bcc_routes(ch, uniq):
    (a,) = queues(ch, 1)
    key = uniq("k")
    ch.queue_bind(a, "amq.direct", key)
    ch.basic_publish("amq.direct", "nowhere", b"cc", props(CC=[key]), mandatory=True)
    ch.basic_publish("amq.direct", "nowhere", b"bcc", props(BCC=[key]), mandatory=True)
    with pytest.raises(px.UnroutableError) as ei:
        ch.basic_publish("amq.direct", "nowhere", b"none", props(CC=["x"], BCC=["y"]),
                         mandatory=True)
    (ret,) = ei.value.messages
    assert (ret.method.reply_code, ret.method.reply_text) == (312, "NO_ROUTE")
    assert ret.properties.headers == {"CC": ["x"]}          # returned without BCC too
    assert [b for _, _, b in drain(ch, a)] == [b"cc", b"bcc"]


@pytest.mark.parametrize("header", ["CC", "BCC"])
@pytest.mark.parametrize("value,type_name", [
    ("k", "longstr"), (5, "signedint"), ({"a": 1}, "table"), (None, "void"), (True, "bool"),
])
def test_a_cc_or_bcc_that_is_not_an_array_is_406(ch, header, value, type_name):
    ensure_confirms(ch)
    with channel_closed(406, f'PRECONDITION_FAILED - invalid message: '
                             f'{{unacceptable_type_in_header,"{header}",{type_name}}}'):
        ch.basic_publish("amq.direct", "k", b"x", props(**{header: value}))


def test_the_exchange_is_checked_before_the_headers(ch):
    with channel_closed(404, "NOT_FOUND - no exchange 'no-such-x' in vhost '/'"):
        ch.basic_publish("no-such-x", "k", b"x", props(CC="k"))
        ch.basic_qos(prefetch_count=0)


def test_dead_letters_keep_the_publish_key_and_cc_not_bcc(ch, uniq):
    """x-death routing-keys are the publish key and the CC keys (BCC left the headers at the
    publish); without a dead-letter routing key the dead letter is routed again by all the
    message's keys, the BCC keys included (RabbitMQ keeps them in its message record)."""
    by_key, by_cc, by_bcc = queues(ch, 3)
    dlx = uniq("dlx")
    ch.exchange_declare(dlx, "direct", auto_delete=True)
    ch.queue_bind(by_key, dlx, "k")
    ch.queue_bind(by_cc, dlx, "cc")
    ch.queue_bind(by_bcc, dlx, "bcc")
    src = ch.queue_declare("", exclusive=True,
                           arguments={"x-dead-letter-exchange": dlx}).method.queue
    ch.queue_bind(src, "amq.direct", "k")
    ch.basic_publish("amq.direct", "k", b"m", props(CC=["cc"], BCC=["bcc"]))
    m, _, _ = ch.basic_get(src, auto_ack=False)
    ch.basic_reject(m.delivery_tag, requeue=False)
    both = (by_key, by_cc, by_bcc)
    assert eventually(lambda: [message_count(ch, q) for q in both], [1, 1, 1]) == [1, 1, 1]
    for q in both:
        (m, p, _), = drain(ch, q)
        assert (m.exchange, m.routing_key) == (dlx, "k")
        assert "BCC" not in p.headers and p.headers["CC"] == ["cc"]
        assert p.headers["x-death"][0]["routing-keys"] == ["k", "cc"]


def test_bcc_keys_route_a_second_death_too(ch, uniq):
    """The BCC keys stay with the dead letter: when it dies again (no dead-letter routing key)
    they route it once more."""
    (last,) = queues(ch, 1)
    dlx1, dlx2 = uniq("dlx1"), uniq("dlx2")
    ch.exchange_declare(dlx1, "direct", auto_delete=True)
    ch.exchange_declare(dlx2, "direct", auto_delete=True)
    mid = ch.queue_declare("", exclusive=True,
                           arguments={"x-dead-letter-exchange": dlx2}).method.queue
    ch.queue_bind(mid, dlx1, "hidden")
    ch.queue_bind(last, dlx2, "hidden")
    src = ch.queue_declare("", exclusive=True,
                           arguments={"x-dead-letter-exchange": dlx1}).method.queue
    ch.basic_publish("", src, b"m", props(BCC=["hidden"]))
    m, _, _ = ch.basic_get(src, auto_ack=False)
    ch.basic_reject(m.delivery_tag, requeue=False)
    assert eventually(lambda: message_count(ch, mid), 1) == 1
    m, _, _ = ch.basic_get(mid, auto_ack=False)
    ch.basic_reject(m.delivery_tag, requeue=False)
    assert eventually(lambda: message_count(ch, last), 1) == 1
    (m, p, _), = drain(ch, last)
    assert (m.exchange, m.routing_key) == (dlx2, src)
    assert [d["routing-keys"] for d in p.headers["x-death"]] == [[src], [src]]


def test_a_dead_letter_routing_key_replaces_cc(ch, uniq):
    (dead,) = queues(ch, 1)
    src = ch.queue_declare("", exclusive=True, arguments={
        "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead}).method.queue
    ch.basic_publish("", src, b"m", props(CC=["zz"], BCC=["yy"]))
    m, _, _ = ch.basic_get(src, auto_ack=False)
    ch.basic_reject(m.delivery_tag, requeue=False)
    assert eventually(lambda: message_count(ch, dead), 1) == 1
    (m, p, _), = drain(ch, dead)
    assert m.routing_key == dead
    assert sorted(p.headers) == ["x-death", "x-first-death-exchange", "x-first-death-queue",
                                 "x-first-death-reason"]
    assert p.headers["x-death"][0]["routing-keys"] == [src, "zz"]
