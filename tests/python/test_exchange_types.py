"""Routing by exchange type: fanout (pub/sub), direct, topic, headers, and the default exchange.

The topic and headers tables are RabbitMQ 3.10's observed answers, one binding per queue.
"""

from __future__ import annotations

import pika
import pytest

from harness.expect import bodies, drain, ensure_confirms


def bind_queues(ch, exchange, bindings):
    """bindings: {label: (routing_key, arguments)} -> {label: queue}; one exclusive queue each."""
    out = {}
    for label, (key, args) in bindings.items():
        q = ch.queue_declare("", exclusive=True).method.queue
        ch.queue_bind(q, exchange, key, arguments=args)
        out[label] = q
    return out


def test_fanout_publish_subscribe_every_queue_gets_every_message(ch, uniq):
    ex = uniq("logs")
    ch.exchange_declare(ex, "fanout", auto_delete=True)
    qs = [ch.queue_declare("", exclusive=True).method.queue for _ in range(3)]
    for i, q in enumerate(qs):
        ch.queue_bind(q, ex, routing_key=f"ignored-{i}")
    ch.confirm_delivery()
    for i in range(5):
        ch.basic_publish(ex, "any.key", f"log {i}".encode())
    for q in qs:
        got = drain(ch, q)
        assert [b for _, _, b in got] == [f"log {i}".encode() for i in range(5)]
        assert {(m.exchange, m.routing_key) for m, _, _ in got} == {(ex, "any.key")}


def test_fanout_consumers_each_receive_a_copy(connect, uniq):
    ex = uniq("fan")
    pub = connect().channel()
    pub.exchange_declare(ex, "fanout", auto_delete=True)
    subs = []
    for _ in range(2):
        c = connect()
        ch = c.channel()
        q = ch.queue_declare("", exclusive=True).method.queue
        ch.queue_bind(q, ex)
        got = []
        ch.basic_consume(q, lambda ch_, m, p, b, got=got: got.append(b), auto_ack=True)
        subs.append((c, got))
    pub.confirm_delivery()
    pub.basic_publish(ex, "", b"hello subscribers")
    for c, got in subs:
        while not got:
            c.process_data_events(0.05)
        assert got == [b"hello subscribers"]


def test_direct_routing_by_exact_key(ch, uniq):
    ex = uniq("direct")
    ch.exchange_declare(ex, "direct", auto_delete=True)
    q_err = ch.queue_declare("", exclusive=True).method.queue
    q_all = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q_err, ex, "error")
    for sev in ("info", "warning", "error"):
        ch.queue_bind(q_all, ex, sev)
    ch.queue_bind(q_all, ex, "error")                # duplicate binding is idempotent
    ch.confirm_delivery()
    for sev in ("info", "warning", "error", "debug", "Error", "error.x", ""):
        ch.basic_publish(ex, sev, sev.encode())
    assert bodies(ch, q_err) == [b"error"]
    assert bodies(ch, q_all) == [b"info", b"warning", b"error"]  # once each, not twice


def test_direct_unbind_stops_routing(ch, uniq):
    ex = uniq("direct")
    ch.exchange_declare(ex, "direct")     # not auto_delete: that would vanish with the unbind
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, ex, "k")
    ensure_confirms(ch)
    ch.basic_publish(ex, "k", b"1")
    ch.queue_unbind(q, ex, "k")
    ch.basic_publish(ex, "k", b"2")
    assert bodies(ch, q) == [b"1"]
    ch.exchange_delete(ex)


def test_default_exchange_routes_by_queue_name(ch, uniq):
    q = uniq()
    ch.queue_declare(q, exclusive=True)
    ensure_confirms(ch)
    ch.basic_publish("", q, b"direct to queue")
    ch.basic_publish("amq.direct", q, b"not bound to amq.direct")
    m, _, body = ch.basic_get(q, auto_ack=True)
    assert body == b"direct to queue" and m.exchange == "" and m.routing_key == q
    assert ch.basic_get(q)[0] is None


def test_amq_builtin_exchanges_exist_with_their_types(ch):
    for name, kind in [("amq.direct", "direct"), ("amq.fanout", "fanout"), ("amq.topic", "topic"),
                       ("amq.headers", "headers"), ("amq.match", "headers")]:
        ch.exchange_declare(name, passive=True)
        ch.exchange_declare(name, kind, durable=True)  # equivalent redeclare is allowed


TOPIC_PATTERNS = ["#", "*", "a.#", "#.a", "a.#.b", "a.*", "*.a", "a.*.b", "#.#", "*.*",
                  "a.#.#.b", "#.*", "*.#", "", "a", "a..b", "a.*.#", "#.b.#", ".", "a.", ".a", "a.b"]
TOPIC_KEYS = ["", "a", "b", "a.b", "a.x.b", "a.x.y.b", "a..b", "a.", ".a", ".", "..", "b.a", "x.a",
              "a.b.c", "x.b.y", "A.b"]
# RabbitMQ 3.10: '#' matches zero or more words, '*' exactly one; words may be empty ("a..b",
# "a."); the empty routing key has ZERO words (so '*' and '#.*' do not match it); case matters.
TOPIC_EXPECTED = {
    "#": TOPIC_KEYS,
    "*": ["a", "b"],
    "a.#": ["a", "a.b", "a.x.b", "a.x.y.b", "a..b", "a.", "a.b.c"],
    "#.a": ["a", ".a", "b.a", "x.a"],
    "a.#.b": ["a.b", "a.x.b", "a.x.y.b", "a..b"],
    "a.*": ["a.b", "a."],
    "*.a": [".a", "b.a", "x.a"],
    "a.*.b": ["a.x.b", "a..b"],
    "#.#": TOPIC_KEYS,
    "*.*": ["a.b", "a.", ".a", ".", "b.a", "x.a", "A.b"],
    "a.#.#.b": ["a.b", "a.x.b", "a.x.y.b", "a..b"],
    "#.*": [k for k in TOPIC_KEYS if k != ""],
    "*.#": [k for k in TOPIC_KEYS if k != ""],
    "": [""],
    "a": ["a"],
    "a..b": ["a..b"],
    "a.*.#": ["a.b", "a.x.b", "a.x.y.b", "a..b", "a.", "a.b.c"],
    "#.b.#": ["b", "a.b", "a.x.b", "a.x.y.b", "a..b", "b.a", "a.b.c", "x.b.y", "A.b"],
    ".": ["."],
    "a.": ["a."],
    ".a": [".a"],
    "a.b": ["a.b"],
}


def test_topic_wildcards_match_reference_table(ch, uniq):
    ex = uniq("topic")
    ch.exchange_declare(ex, "topic", auto_delete=True)
    qs = bind_queues(ch, ex, {p: (p, None) for p in TOPIC_PATTERNS})
    ch.confirm_delivery()
    for k in TOPIC_KEYS:
        ch.basic_publish(ex, k, k.encode())
    wrong = {}
    for p, q in qs.items():
        got = [m.routing_key for m, _, _ in drain(ch, q)]
        if got != TOPIC_EXPECTED[p]:
            wrong[p] = {"got": got, "expected": TOPIC_EXPECTED[p]}
    assert not wrong, wrong


def test_topic_tutorial_example(ch, uniq):
    ex = uniq("topic_logs")
    ch.exchange_declare(ex, "topic", auto_delete=True)
    qs = bind_queues(ch, ex, {"kern": ("kern.*", None), "critical": ("*.critical", None),
                              "all": ("#", None), "lazy": ("lazy.#", None)})
    ch.queue_bind(qs["critical"], ex, "*.*.rabbit")     # second binding on the same queue
    ch.confirm_delivery()
    keys = ["kern.critical", "kern.info", "auth.critical", "quick.orange.rabbit", "lazy.orange.elephant",
            "lazy", "quick.brown.fox", "lazy.brown.fox.jumps", "orange"]
    for k in keys:
        ch.basic_publish(ex, k, k.encode())
    assert bodies(ch, qs["kern"]) == [b"kern.critical", b"kern.info"]
    assert bodies(ch, qs["critical"]) == [b"kern.critical", b"auth.critical", b"quick.orange.rabbit"]
    assert bodies(ch, qs["all"]) == [k.encode() for k in keys]
    assert bodies(ch, qs["lazy"]) == [b"lazy.orange.elephant", b"lazy", b"lazy.brown.fox.jumps"]


HEADER_BINDINGS = {
    "all2": {"x-match": "all", "format": "pdf", "type": "report"},
    "any2": {"x-match": "any", "format": "pdf", "type": "report"},
    "default_is_all": {"format": "pdf", "type": "report"},
    "no_args": {},
    "all_empty": {"x-match": "all"},
    "any_empty": {"x-match": "any"},
    "int1": {"n": 1},
    "str1": {"n": "1"},
    "void": {"v": None},
    "x_keys_ignored": {"x-match": "all", "x-foo": "bar"},
    "all_with_x": {"x-match": "all-with-x", "x-foo": "bar"},
    "any_with_x": {"x-match": "any-with-x", "x-foo": "bar", "zz": 1},
    "bool": {"b": True},
}
HEADER_MESSAGES = {
    "none": None, "empty": {}, "pdf": {"format": "pdf"}, "pdfreport": {"format": "pdf", "type": "report"},
    "pdfreport_extra": {"format": "pdf", "type": "report", "z": 1}, "pdflog": {"format": "pdf", "type": "log"},
    "n1": {"n": 1}, "n_str1": {"n": "1"}, "v_void": {"v": None}, "v_str": {"v": "x"},
    "xfoo": {"x-foo": "bar"}, "b_true": {"b": True}, "b_int1": {"b": 1},
}
ALL_MSGS = list(HEADER_MESSAGES)
# RabbitMQ 3.10: values compare with their types (1 != "1" != true); a void binding value
# only requires the header to be present; x-* binding args are ignored unless x-match is
# all-with-x / any-with-x; 'all' with nothing to match matches everything, 'any' nothing.
HEADER_EXPECTED = {
    "all2": ["pdfreport", "pdfreport_extra"],
    "any2": ["pdf", "pdfreport", "pdfreport_extra", "pdflog"],
    "default_is_all": ["pdfreport", "pdfreport_extra"],
    "no_args": ALL_MSGS,
    "all_empty": ALL_MSGS,
    "any_empty": [],
    "int1": ["n1"],
    "str1": ["n_str1"],
    "void": ["v_void", "v_str"],
    "x_keys_ignored": ALL_MSGS,
    "all_with_x": ["xfoo"],
    "any_with_x": ["xfoo"],
    "bool": ["b_true"],
}


def test_headers_exchange_x_match_all_any_table(ch, uniq):
    ex = uniq("headers")
    ch.exchange_declare(ex, "headers", auto_delete=True)
    qs = bind_queues(ch, ex, {k: ("routing key is ignored", v) for k, v in HEADER_BINDINGS.items()})
    ch.confirm_delivery()
    for label, headers in HEADER_MESSAGES.items():
        ch.basic_publish(ex, "whatever", label.encode(), pika.BasicProperties(headers=headers))
    wrong = {}
    for label, q in qs.items():
        got = [b.decode() for b in bodies(ch, q)]
        if got != HEADER_EXPECTED[label]:
            wrong[label] = {"got": got, "expected": HEADER_EXPECTED[label]}
    assert not wrong, wrong


def test_headers_exchange_rejects_unknown_x_match(ch, conn, uniq):
    from harness.expect import channel_closed
    ex = uniq("headers")
    ch.exchange_declare(ex, "headers", auto_delete=True)
    q = ch.queue_declare("", exclusive=True).method.queue
    with channel_closed(406, 'PRECONDITION_FAILED - Invalid x-match field value <<"bogus">>; '
                             'expected all, any, all-with-x, or any-with-x'):
        ch.queue_bind(q, ex, "", arguments={"x-match": "bogus"})
    assert conn.is_open


@pytest.mark.parametrize("kind", ["direct", "fanout", "topic", "headers"])
def test_exchange_with_no_bindings_drops_unroutable_messages(ch, uniq, kind):
    ex = uniq(kind)
    ch.exchange_declare(ex, kind, auto_delete=False)
    ch.confirm_delivery()
    ch.basic_publish(ex, "k", b"dropped")                 # confirmed (acked) even though unroutable
    ch.exchange_delete(ex)
