"""Publisher confirms (confirm.select, basic.ack from the broker) and mandatory returns (312 NO_ROUTE)."""

from __future__ import annotations

import pika
import pika.frame
import pika.spec as spec
import pytest

from harness.expect import channel_closed, message_count, wait_for
from harness.rawamqp import RawAMQP


def test_confirm_delivery_many_messages_all_acked(ch, uniq):
    q = uniq()
    ch.queue_declare(q, exclusive=True)
    ch.confirm_delivery()
    for i in range(500):
        ch.basic_publish("", q, f"{i}".encode())        # raises on nack / unroutable
    assert message_count(ch, q) == 500


def _publish_pipelined_with_confirms(r: RawAMQP, q: str, n: int, props: spec.BasicProperties,
                                     **declare) -> None:
    """On a fresh raw connection: channel 1, queue `q` declared (with `declare`), confirm.select,
    then n publishes "m0".."m{n-1}" to `q` with `props`, sent as one write."""
    r.handshake()
    r.open_channel(1)
    r.send_method(1, spec.Queue.Declare(queue=q, **declare))
    r.expect(spec.Queue.DeclareOk)
    r.send_method(1, spec.Confirm.Select())
    r.expect(spec.Confirm.SelectOk)
    payload = bytearray()
    for i in range(n):
        body = f"m{i}".encode()
        payload += pika.frame.Method(1, spec.Basic.Publish(exchange="", routing_key=q)).marshal()
        payload += pika.frame.Header(1, len(body), props).marshal()
        payload += pika.frame.Body(1, body).marshal()
    r.send(bytes(payload))


def test_confirms_raw_sequence_numbers_cover_every_publish(broker, uniq):
    """Pipelined publishes: the acks (possibly 'multiple') must cover delivery tags 1..N exactly."""
    q, n = uniq(), 200
    with RawAMQP(broker.host, broker.port) as r:
        _publish_pipelined_with_confirms(r, q, n, spec.BasicProperties(), exclusive=True)
        acked, last = set(), 0
        while last < n:
            m = r.expect(spec.Basic.Ack).method
            assert m.delivery_tag > last, "acks must arrive in increasing order"
            if m.multiple:
                acked.update(range(last + 1, m.delivery_tag + 1))
            else:
                acked.add(m.delivery_tag)
            last = m.delivery_tag
        assert acked == set(range(1, n + 1)) and last == n


@pytest.mark.parametrize("durable", [True, False], ids=["durable", "transient"])
def test_pipelined_confirms_are_coalesced_into_multiple_acks(broker, uniq, durable):
    """Many pipelined publishes are confirmed with far fewer basic.ack frames (`multiple`), both
    when one fsync covers them (durable queue, persistent messages) and when the queue confirms
    on enqueue (non-durable); every tag is confirmed exactly once, reading `multiple` strictly
    (it covers the tags from the first unconfirmed one up to its own)."""
    q, n = uniq(), 2000
    with RawAMQP(broker.host, broker.port) as r:
        _publish_pipelined_with_confirms(r, q, n, spec.BasicProperties(delivery_mode=2), durable=durable)
        acked, floor, frames = set(), 0, 0
        while floor < n:
            m = r.expect(spec.Basic.Ack, timeout=30).method
            frames += 1
            first = floor + 1 if m.multiple else m.delivery_tag
            assert first <= m.delivery_tag <= n, f"ack {m!r} after {floor}"
            tags = set(range(first, m.delivery_tag + 1))
            assert not tags & acked, f"tags confirmed twice: {sorted(tags & acked)[:5]}"
            acked |= tags
            while floor + 1 in acked:
                floor += 1
        assert acked == set(range(1, n + 1))
        assert frames <= n // 2, f"{frames} ack frames for {n} publishes"
        r.send_method(1, spec.Queue.Delete(queue=q))
        assert r.expect(spec.Queue.DeleteOk).method.message_count == n


def test_confirm_select_twice_is_allowed(broker):
    with RawAMQP(broker.host, broker.port) as r:
        r.handshake()
        r.open_channel(1)
        for _ in range(2):
            r.send_method(1, spec.Confirm.Select())
            r.expect(spec.Confirm.SelectOk)


def test_mandatory_publish_to_nowhere_raises_unroutable_312(ch):
    ch.confirm_delivery()
    with pytest.raises(pika.exceptions.UnroutableError) as ei:
        ch.basic_publish("amq.direct", "no-binding-for-this-key", b"x", mandatory=True)
    (returned,) = ei.value.messages
    m = returned.method
    assert (m.reply_code, m.reply_text, m.exchange, m.routing_key) == \
        (312, "NO_ROUTE", "amq.direct", "no-binding-for-this-key")
    assert returned.body == b"x"
    ch.basic_publish("amq.direct", "no-binding-for-this-key", b"y")  # not mandatory: silently dropped
    assert ch.is_open


def test_mandatory_return_without_confirms_via_callback(conn, uniq):
    ch = conn.channel()
    returns = []
    ch.add_on_return_callback(lambda c, m, p, b: returns.append((m, p, b)))
    missing = uniq("no-such-queue")
    ch.basic_publish("", missing, b"m1", pika.BasicProperties(message_id="id-1"), mandatory=True)
    ch.basic_publish("", missing, b"m2", mandatory=False)
    ch.basic_publish("amq.topic", "a.b", b"m3", mandatory=True)
    wait_for(conn, lambda: len(returns) >= 2, what="basic.return")
    conn.process_data_events(0.2)
    got = [(m.reply_code, m.reply_text, m.exchange, m.routing_key, b) for m, p, b in returns]
    assert got == [(312, "NO_ROUTE", "", missing, b"m1"), (312, "NO_ROUTE", "amq.topic", "a.b", b"m3")]
    assert returns[0][1].message_id == "id-1"


def test_mandatory_routed_message_is_not_returned(ch, uniq):
    q = uniq()
    ch.queue_declare(q, exclusive=True)
    ch.confirm_delivery()
    ch.basic_publish("", q, b"ok", mandatory=True)
    assert message_count(ch, q) == 1


def test_confirm_and_tx_modes_are_mutually_exclusive_406(conn):
    ch = conn.channel()
    ch.confirm_delivery()
    with channel_closed(406, "PRECONDITION_FAILED - cannot switch from confirm to tx mode"):
        ch.tx_select()
    ch = conn.channel()
    ch.tx_select()
    with channel_closed(406, "PRECONDITION_FAILED - cannot switch from tx to confirm mode"):
        ch.confirm_delivery()
