"""Channel-level methods: channel.flow, basic.qos limits, channel numbering, use of closed channels."""

from __future__ import annotations

import pika.spec as spec

from harness.expect import connection_closed, ensure_confirms
from harness.rawamqp import RawAMQP


def test_channel_flow_active_true_is_acknowledged(ch):
    assert ch.flow(True) is True


def test_channel_flow_active_false_is_not_implemented_540(connect):
    c = connect()
    with connection_closed(540, "NOT_IMPLEMENTED - active=false"):
        c.channel().flow(False)


def test_basic_qos_prefetch_size_is_not_implemented_540(connect):
    c = connect()
    with connection_closed(540, "NOT_IMPLEMENTED - prefetch_size!=0 (5)"):
        c.channel().basic_qos(prefetch_size=5)


def test_basic_qos_global_is_accepted(ch):
    ch.basic_qos(prefetch_count=5, global_qos=True)
    ch.basic_qos(prefetch_count=0)


def test_many_channels_on_one_connection(conn, uniq):
    q = uniq()
    chans = [conn.channel() for _ in range(50)]
    chans[0].queue_declare(q, exclusive=True)
    for i, c in enumerate(chans):
        ensure_confirms(c)
        c.basic_publish("", q, str(i).encode())
    assert chans[-1].queue_declare(q, passive=True).method.message_count == 50
    for c in chans[1:]:
        c.close()
    assert conn.is_open


def test_method_on_unopened_channel_is_504_channel_error(broker):
    """Using a channel number that was never opened: connection.close 504 CHANNEL_ERROR."""
    with RawAMQP(broker.host, broker.port) as r:
        r.handshake()
        r.send_method(5, spec.Queue.Declare(queue="", exclusive=True))
        close = r.expect(spec.Connection.Close).method
        assert (close.reply_code, close.reply_text, close.class_id, close.method_id) == \
            (504, "CHANNEL_ERROR - expected 'channel.open'", 50, 10)


def test_reopening_an_open_channel_is_504(broker):
    with RawAMQP(broker.host, broker.port) as r:
        r.handshake()
        r.open_channel(1)
        r.send_method(1, spec.Channel.Open())
        close = r.expect(spec.Connection.Close).method
        assert (close.reply_code, close.reply_text) == \
            (504, "CHANNEL_ERROR - second 'channel.open' seen")


def test_channel_close_is_answered_with_close_ok(broker):
    with RawAMQP(broker.host, broker.port) as r:
        r.handshake()
        r.open_channel(3)
        r.send_method(3, spec.Channel.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0))
        f = r.expect(spec.Channel.CloseOk)
        assert f.channel_number == 3
        r.open_channel(3)                           # the number can be reused afterwards
        r.send_method(0, spec.Connection.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0))
        r.expect(spec.Connection.CloseOk)


def test_channel_error_reply_carries_failing_class_and_method(broker, uniq):
    """channel.close for a failed queue.declare names class 50 method 10."""
    q = uniq()
    with RawAMQP(broker.host, broker.port) as r:
        r.handshake()
        r.open_channel(1)
        r.send_method(1, spec.Queue.Declare(queue=q, passive=True))
        f = r.expect(spec.Channel.Close)
        m = f.method
        assert f.channel_number == 1
        assert (m.reply_code, m.reply_text, m.class_id, m.method_id) == \
            (404, f"NOT_FOUND - no queue '{q}' in vhost '/'", 50, 10)
        # until we answer close-ok, the broker ignores further methods on that channel
        r.send_method(1, spec.Channel.CloseOk())
        r.open_channel(1)
