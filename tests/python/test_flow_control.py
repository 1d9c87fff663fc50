"""Resource alarms: publishers are blocked (connection.blocked), consumers are not."""

from __future__ import annotations

import time

import pika
import pytest



@pytest.fixture
def alarmed_ferry(broker_kind, broker_factory):
    """A Ferry whose memory limit is below any real footprint: the memory alarm is on."""
    if broker_kind != "ferry":
        pytest.skip("RabbitMQ's watermark is set by its config file; covered for Ferry only")
    b = broker_factory.start(broker_factory.make("ferry", "alarmed", env={"FERRY_MEMORY_LIMIT": "1"}))
    yield b
    b.close()


def test_memory_alarm_blocks_publishers_but_not_consumers(alarmed_ferry):
    b = alarmed_ferry
    pub = pika.BlockingConnection(b.params())
    blocked = []
    pub.add_on_connection_blocked_callback(lambda _c, frame: blocked.append(frame.method.reason))
    ch = pub.channel()
    ch.queue_declare("alarm-q", durable=True)
    ch.confirm_delivery()
    # The alarm check runs on a short period; the first confirmed publish goes through
    # (a connection is blocked only once it has published).
    ch.basic_publish("", "alarm-q", b"before", pika.BasicProperties(delivery_mode=2))
    deadline = time.monotonic() + 10
    while not blocked and time.monotonic() < deadline:
        pub.process_data_events(0.1)
    assert blocked == ["low on memory"]

    # A connection that only consumes keeps working and gets the confirmed message.
    con = pika.BlockingConnection(b.params())
    cch = con.channel()
    m, _, body = cch.basic_get("alarm-q", auto_ack=True)
    assert body == b"before"
    assert cch.queue_declare("alarm-q", passive=True).method.message_count == 0
    con.close()

    # A blocked publisher still sees a clean shutdown.
    assert b.stop() == 0
