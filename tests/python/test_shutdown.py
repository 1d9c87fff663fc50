"""Process lifecycle: SIGTERM is a clean shutdown (exit 0, clients get connection.close 320)."""

from __future__ import annotations

import pika
import pika.exceptions as px
import pika.spec as spec
import pytest

from harness.rawamqp import RawAMQP

pytestmark = pytest.mark.restart

FORCED = "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'"


def test_sigterm_closes_clients_with_320_and_exits_0(restartable_broker):
    b = restartable_broker
    raw = RawAMQP(b.host, b.port).handshake()
    raw.open_channel(1)
    c = pika.BlockingConnection(b.params())
    ch = c.channel()
    ch.queue_declare("", exclusive=True)
    code = b.stop()
    assert code == 0, f"{b.kind} exited {code} after SIGTERM"
    try:
        f = raw.expect(spec.Connection.Close)
    except (TimeoutError, ConnectionError):
        if b.kind == "rabbitmq":
            # Seen in CI under load: RabbitMQ 3.10 sometimes drops a connection at
            # shutdown without sending connection.close. Ferry must always send it.
            pytest.xfail("RabbitMQ dropped the connection without connection.close")
        raise
    assert f.channel_number == 0
    m = f.method
    assert (m.reply_code, m.reply_text, m.class_id, m.method_id) == (320, FORCED, 0, 0)
    raw.close()
    with pytest.raises(px.ConnectionClosedByBroker) as ei:
        c.process_data_events(1)
        c.process_data_events(1)
    assert (ei.value.reply_code, ei.value.reply_text) == (320, FORCED)


def test_broker_accepts_connections_again_after_restart(restartable_broker):
    b = restartable_broker
    port = b.port
    assert b.restart() == 0
    assert b.port == port                  # same address for reconnecting clients
    c = pika.BlockingConnection(b.params())
    c.channel().queue_declare("", exclusive=True)
    c.close()
