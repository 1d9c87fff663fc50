"""exchange.declare / delete / bind semantics and their errors; alternate and internal exchanges."""

from __future__ import annotations

import pika
import pytest

from harness.expect import (bodies, channel_closed, connection_closed, ensure_confirms,
                            message_count, sync)

V = "in vhost '/'"


def test_passive_declare_of_missing_exchange_is_404(conn, ch, uniq):
    ex = uniq("x")
    with channel_closed(404, f"NOT_FOUND - no exchange '{ex}' {V}"):
        ch.exchange_declare(ex, passive=True)
    assert conn.is_open                         # a channel error leaves the connection usable
    conn.channel().exchange_declare("amq.topic", passive=True)


def test_passive_declare_ignores_type_and_flags(ch, uniq):
    ex = uniq("x")
    ch.exchange_declare(ex, "direct", auto_delete=True)
    ch.exchange_declare(ex, "fanout", passive=True, durable=True)   # only existence is checked


@pytest.mark.parametrize("field,first,second,text", [
    ("type", dict(exchange_type="direct"), dict(exchange_type="fanout"),
     "received 'fanout' but current is 'direct'"),
    ("durable", dict(), dict(durable=True), "received 'true' but current is 'false'"),
    ("auto_delete", dict(), dict(auto_delete=True), "received 'true' but current is 'false'"),
    ("internal", dict(), dict(internal=True), "received 'true' but current is 'false'"),
], ids=["type", "durable", "auto_delete", "internal"])
def test_redeclare_exchange_with_different_properties_is_406(conn, uniq, field, first, second, text):
    ex = uniq("x")
    ch = conn.channel()
    ch.exchange_declare(ex, **first)
    ch.exchange_declare(ex, **first)                                # same again: fine
    with channel_closed(406, f"PRECONDITION_FAILED - inequivalent arg '{field}' for exchange '{ex}' {V}: {text}"):
        ch.exchange_declare(ex, **second)
    conn.channel().exchange_delete(ex)


def test_unknown_exchange_type_is_connection_error_503(connect, uniq):
    c = connect()
    with connection_closed(503, "COMMAND_INVALID - unknown exchange type 'bogus'"):
        c.channel().exchange_declare(uniq("x"), "bogus")
    assert c.is_closed


def test_exchange_names_starting_with_amq_are_reserved(conn, uniq):
    name = "amq." + uniq("x")
    with channel_closed(403, f"ACCESS_REFUSED - exchange name '{name}' contains reserved prefix 'amq.*'"):
        conn.channel().exchange_declare(name, "direct")
    with channel_closed(403, "ACCESS_REFUSED - deletion of system exchange 'amq.direct' in vhost '/' not allowed"):
        conn.channel().exchange_delete("amq.direct")


def test_default_exchange_cannot_be_declared_bound_or_deleted(conn, uniq):
    text = "ACCESS_REFUSED - operation not permitted on the default exchange"
    with channel_closed(403, text):
        conn.channel().exchange_declare("", "direct")
    with channel_closed(403, text):
        conn.channel().exchange_declare("", passive=True)
    q = uniq()
    ch = conn.channel()
    ch.queue_declare(q, exclusive=True)
    with channel_closed(403, text):
        ch.queue_bind(q, "", "some-key")
    ch = conn.channel()
    with channel_closed(403, text):
        ch.queue_unbind(q, "", q)
    with channel_closed(403, text):
        conn.channel().exchange_delete("")
    assert conn.is_open


def test_exchange_delete_if_unused(conn, uniq):
    ex, q = uniq("x"), uniq()
    ch = conn.channel()
    ch.exchange_declare(ex, "fanout")
    ch.queue_declare(q, exclusive=True)
    ch.queue_bind(q, ex)
    with channel_closed(406, f"PRECONDITION_FAILED - exchange '{ex}' {V} in use"):
        ch.exchange_delete(ex, if_unused=True)
    ch = conn.channel()
    ch.exchange_declare(ex, passive=True)                          # still there
    ch.queue_unbind(q, ex)
    ch.exchange_delete(ex, if_unused=True)                         # now unused: deleted
    with channel_closed(404, f"NOT_FOUND - no exchange '{ex}' {V}"):
        ch.exchange_declare(ex, passive=True)


def test_exchange_delete_of_missing_exchange_is_ok(ch, uniq):
    ch.exchange_delete(uniq("x"))
    ch.exchange_delete(uniq("x"), if_unused=True)


def test_exchange_delete_removes_its_bindings(ch, uniq):
    ex, q = uniq("x"), uniq()
    ch.exchange_declare(ex, "fanout")
    ch.queue_declare(q, exclusive=True)
    ch.queue_bind(q, ex)
    ch.exchange_delete(ex)
    ch.exchange_declare(ex, "fanout", auto_delete=True)           # same name, fresh: no binding
    ensure_confirms(ch)
    ch.basic_publish(ex, "", b"x")
    assert message_count(ch, q) == 0


def test_auto_delete_exchange_goes_when_last_binding_goes(conn, uniq):
    ex, q = uniq("x"), uniq()
    ch = conn.channel()
    ch.exchange_declare(ex, "fanout", auto_delete=True)
    ch.queue_declare(q, exclusive=True)
    ch.queue_bind(q, ex)
    ch.queue_unbind(q, ex)
    with channel_closed(404, f"NOT_FOUND - no exchange '{ex}' {V}"):
        ch.exchange_declare(ex, passive=True)


def test_publish_to_missing_exchange_closes_channel_404(conn, uniq):
    ex = uniq("x")
    ch = conn.channel()
    ch.basic_publish(ex, "k", b"lost")
    with channel_closed(404, f"NOT_FOUND - no exchange '{ex}' {V}"):
        sync(ch)
    assert conn.is_open
    ch = conn.channel()
    ch.confirm_delivery()
    with channel_closed(404, f"NOT_FOUND - no exchange '{ex}' {V}"):
        ch.basic_publish(ex, "k", b"lost")


def test_bind_errors_missing_queue_or_exchange_404(conn, uniq):
    q, ex = uniq(), uniq("x")
    with channel_closed(404, f"NOT_FOUND - no queue '{q}' {V}"):
        conn.channel().queue_bind(q, "amq.direct", "k")
    ch = conn.channel()
    ch.queue_declare(q, exclusive=True)
    with channel_closed(404, f"NOT_FOUND - no exchange '{ex}' {V}"):
        ch.queue_bind(q, ex, "k")
    conn.channel().queue_unbind(q, "amq.direct", "never-bound")   # unbinding nothing is ok


def test_internal_exchange_cannot_be_published_to_403(conn, uniq):
    internal, front, q = uniq("internal"), uniq("front"), uniq()
    ch = conn.channel()
    ch.exchange_declare(internal, "fanout", internal=True, auto_delete=False)
    ch.exchange_declare(front, "fanout", auto_delete=False)
    ch.exchange_bind(internal, front)
    ch.queue_declare(q, exclusive=True)
    ch.queue_bind(q, internal)
    pub = conn.channel()
    ensure_confirms(pub)
    pub.basic_publish(front, "", b"via front")                   # routed through it: fine
    ch.basic_publish(internal, "", b"direct")
    with channel_closed(403, f"ACCESS_REFUSED - cannot publish to internal exchange '{internal}' {V}"):
        sync(ch)
    ch = conn.channel()
    assert bodies(ch, q) == [b"via front"]
    ch.exchange_delete(front)
    ch.exchange_delete(internal)


def test_exchange_to_exchange_bindings(ch, uniq):
    src, dst, q_dst, q_src = uniq("src"), uniq("dst"), uniq(), uniq()
    ch.exchange_declare(src, "topic", auto_delete=False)
    ch.exchange_declare(dst, "direct", auto_delete=False)
    ch.exchange_bind(destination=dst, source=src, routing_key="orders.*")
    for q in (q_dst, q_src):
        ch.queue_declare(q, exclusive=True)
    ch.queue_bind(q_dst, dst, "orders.new")
    ch.queue_bind(q_src, src, "#")
    ch.confirm_delivery()
    for k in ("orders.new", "orders.old", "users.new", "orders.new.x"):
        ch.basic_publish(src, k, k.encode())
    assert bodies(ch, q_dst) == [b"orders.new"]           # matched src binding AND dst binding
    assert len(bodies(ch, q_src)) == 4
    ch.exchange_unbind(destination=dst, source=src, routing_key="orders.*")
    ch.basic_publish(src, "orders.new", b"after unbind")
    assert bodies(ch, q_dst) == []
    ch.exchange_delete(src)
    ch.exchange_delete(dst)


def test_exchange_binding_cycle_delivers_once_per_queue(ch, uniq):
    e1, e2 = uniq("e1"), uniq("e2")
    for e in (e1, e2):
        ch.exchange_declare(e, "fanout", auto_delete=False)
    ch.exchange_bind(e2, e1)
    ch.exchange_bind(e1, e2)
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, e1)
    ch.queue_bind(q, e2)
    ch.confirm_delivery()
    ch.basic_publish(e1, "", b"loop")
    assert bodies(ch, q) == [b"loop"]
    ch.exchange_delete(e1)
    ch.exchange_delete(e2)


def test_exchange_bind_missing_source_404(conn, uniq):
    src = uniq("missing")
    with channel_closed(404, f"NOT_FOUND - no exchange '{src}' {V}"):
        conn.channel().exchange_bind("amq.fanout", src)


def test_alternate_exchange_receives_unroutable_messages(ch, uniq):
    ae, main, q_ae, q_main = uniq("ae"), uniq("main"), uniq(), uniq()
    ch.exchange_declare(ae, "fanout", auto_delete=False)
    ch.exchange_declare(main, "direct", auto_delete=False, arguments={"alternate-exchange": ae})
    ch.queue_declare(q_ae, exclusive=True)
    ch.queue_declare(q_main, exclusive=True)
    ch.queue_bind(q_ae, ae)
    ch.queue_bind(q_main, main, "known")
    ch.confirm_delivery()
    ch.basic_publish(main, "known", b"routed")
    ch.basic_publish(main, "unknown", b"to ae", mandatory=True)    # routed via AE: no return
    assert bodies(ch, q_main) == [b"routed"]
    m, _, body = ch.basic_get(q_ae, auto_ack=True)
    assert body == b"to ae"
    assert (m.exchange, m.routing_key) == (main, "unknown")       # original exchange and key
    ch.exchange_delete(main)
    ch.exchange_delete(ae)


def test_missing_alternate_exchange_means_unroutable(ch, uniq):
    main = uniq("main")
    ch.exchange_declare(main, "direct", auto_delete=False,
                        arguments={"alternate-exchange": uniq("does-not-exist")})
    ch.confirm_delivery()
    with pytest.raises(pika.exceptions.UnroutableError):
        ch.basic_publish(main, "k", b"x", mandatory=True)
    ch.exchange_delete(main)
