"""Connection level: protocol header, Start/Tune contents, authentication, vhosts, heartbeats."""

from __future__ import annotations

import time

import pika
import pika.exceptions as px
import pika.spec as spec
import pytest

from harness.rawamqp import PROTOCOL_HEADER, Closed, RawAMQP

ACCESS_REFUSED = ("ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. "
                  "For details see the broker logfile.")


@pytest.mark.parametrize("header", [
    b"AMQP\x00\x01\x00\x00",          # AMQP 1.0
    b"AMQP\x03\x01\x00\x00",          # AMQP 1.0 SASL layer
    b"AMQP\x00\x00\x0a\x00",          # 0-10
    b"AMQP\x00\x00\x09\x00",          # 0-9 (not 0-9-1)
    b"AMQP\x00\x00\x09\x02",          # unknown revision
    b"AMQP\x00\x00\x08\x00",
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
], ids=["amqp1.0", "amqp1.0-sasl", "0-10", "0-9-0", "0-9-2", "0-8-0", "http"])
def test_wrong_protocol_header_gets_0_9_1_header_and_close(broker, header):
    with RawAMQP(broker.host, broker.port) as r:
        r.send(header)
        waited, data = r.wait_eof(5)
        assert data == b"AMQP\x00\x00\x09\x01"
        assert waited < 2


def test_connection_start_and_tune_values(broker):
    with RawAMQP(broker.host, broker.port) as r:
        r.send(PROTOCOL_HEADER)
        f = r.expect(spec.Connection.Start)
        assert f.channel_number == 0
        start = f.method
        assert (start.version_major, start.version_minor) == (0, 9)
        assert set(start.mechanisms.split(b" ")) >= {b"PLAIN", b"AMQPLAIN"}
        assert start.locales == b"en_US"
        caps = start.server_properties.get("capabilities", {})
        for cap in ("publisher_confirms", "exchange_exchange_bindings", "basic.nack",
                    "consumer_cancel_notify", "connection.blocked", "authentication_failure_close",
                    "per_consumer_qos"):
            assert caps.get(cap) is True, f"capability {cap!r} missing: {caps}"
        for key in ("product", "version", "platform"):
            assert isinstance(start.server_properties.get(key), str), key
        r.send_method(0, spec.Connection.StartOk(client_properties={}, mechanism="PLAIN",
                                                 response=b"\0guest\0guest", locale="en_US"))
        tune = r.expect(spec.Connection.Tune).method
        assert (tune.channel_max, tune.frame_max, tune.heartbeat) == (2047, 131072, 60)


def test_guest_login_from_loopback_works(broker):
    c = pika.BlockingConnection(broker.params())
    try:
        assert c.is_open
        ch = c.channel()
        ch.queue_declare("", exclusive=True)
    finally:
        c.close()


def test_amqplain_mechanism_login(broker):
    """AMQPLAIN: the response is a field table without its length prefix: LOGIN and PASSWORD."""
    from harness.rawamqp import fv, table
    resp = table([("LOGIN", fv("S", "guest")), ("PASSWORD", fv("S", "guest"))])[4:]
    with RawAMQP(broker.host, broker.port) as r:
        r.send(PROTOCOL_HEADER)
        r.expect(spec.Connection.Start)
        r.send_method(0, spec.Connection.StartOk(client_properties={}, mechanism="AMQPLAIN",
                                                 response=resp, locale="en_US"))
        r.expect(spec.Connection.Tune)


@pytest.mark.parametrize("user,password", [("guest", "wrong"), ("nobody", "guest")])
def test_bad_credentials_refused_with_access_refused(broker, user, password):
    params = broker.params(credentials=pika.PlainCredentials(user, password))
    with pytest.raises((px.ProbableAuthenticationError, px.AuthenticationError)) as ei:
        pika.BlockingConnection(params)
    assert "(403)" in str(ei.value) and ACCESS_REFUSED in str(ei.value), str(ei.value)


def test_bad_password_raw_gets_connection_close_403(broker):
    """The client advertises authentication_failure_close, so the broker must send
    connection.close 403 (class 0, method 0) before closing the socket."""
    with RawAMQP(broker.host, broker.port) as r:
        r.send(PROTOCOL_HEADER)
        r.expect(spec.Connection.Start)
        r.send_method(0, spec.Connection.StartOk(
            client_properties={"capabilities": {"authentication_failure_close": True}},
            mechanism="PLAIN", response=b"\0guest\0not-the-password", locale="en_US"))
        close = r.expect(spec.Connection.Close).method
        assert (close.reply_code, close.reply_text, close.class_id, close.method_id) == \
            (403, ACCESS_REFUSED, 0, 0)
        r.send_method(0, spec.Connection.CloseOk())
        r.wait_eof(5)


def test_bad_password_without_capability_just_closes_socket(broker):
    with RawAMQP(broker.host, broker.port) as r:
        r.send(PROTOCOL_HEADER)
        r.expect(spec.Connection.Start)
        r.send_method(0, spec.Connection.StartOk(client_properties={}, mechanism="PLAIN",
                                                 response=b"\0guest\0nope", locale="en_US"))
        with pytest.raises(Closed):
            r.recv_frame(5)


def test_unknown_vhost_is_530(broker):
    with pytest.raises(px.ProbableAccessDeniedError) as ei:
        pika.BlockingConnection(broker.params(virtual_host="no-such-vhost"))
    assert "(530) 'NOT_ALLOWED - vhost no-such-vhost not found'" in str(ei.value)


def test_connection_close_handshake(broker):
    with RawAMQP(broker.host, broker.port) as r:
        r.handshake()
        r.send_method(0, spec.Connection.Close(reply_code=200, reply_text="Normal shutdown",
                                               class_id=0, method_id=0))
        r.expect(spec.Connection.CloseOk)
        # the client closes the socket now (RabbitMQ itself keeps it open until we do)


def test_pika_heartbeat_is_negotiated_to_client_value(broker):
    c = pika.BlockingConnection(broker.params(heartbeat=7))
    try:
        assert c._impl.params.heartbeat == 7          # pika's view of the tuned value
    finally:
        c.close()


@pytest.mark.slow
def test_pika_connection_with_heartbeat_1_stays_alive_while_idle(broker, uniq):
    c = pika.BlockingConnection(broker.params(heartbeat=1))
    try:
        q = uniq()
        ch = c.channel()
        ch.queue_declare(q, exclusive=True)
        c.sleep(3.5)                                   # idle, but pika sends heartbeats
        assert c.is_open
        ch.basic_publish("", q, b"still here")
        assert ch.basic_get(q, auto_ack=True)[2] == b"still here"
    finally:
        c.close()


@pytest.mark.slow
def test_silent_client_with_heartbeat_1_is_disconnected(broker):
    """Negotiate heartbeat=1 then say nothing: the broker must keep sending heartbeats and
    drop the connection after ~2-3 missed intervals (RabbitMQ: ~3 s), without connection.close."""
    with RawAMQP(broker.host, broker.port) as r:
        r.handshake(heartbeat=1)
        waited, data = r.wait_eof(10)
        heartbeat = b"\x08\x00\x00\x00\x00\x00\x00\xce"
        assert data.startswith(heartbeat) and len(data) % 8 == 0, data
        assert data == heartbeat * (len(data) // 8), "only heartbeat frames expected"
        assert 1.5 <= waited <= 5.0, f"disconnected after {waited:.2f}s"


@pytest.mark.slow
def test_client_sending_heartbeats_is_kept(broker):
    with RawAMQP(broker.host, broker.port) as r:
        r.handshake(heartbeat=1)
        heartbeat = b"\x08\x00\x00\x00\x00\x00\x00\xce"
        got = 0
        end = time.monotonic() + 3.5
        while time.monotonic() < end:
            r.send(heartbeat)
            try:
                data = r.recv_some(0.4)
            except TimeoutError:
                continue
            assert data, "broker closed a connection that was sending heartbeats"
            got += data.count(heartbeat)
        assert got >= 2, "broker should send heartbeats about once a second"
        r.open_channel(1)                              # and the connection still works


@pytest.mark.slow
def test_heartbeat_0_disables_heartbeats(broker):
    with RawAMQP(broker.host, broker.port) as r:
        r.handshake(heartbeat=0)
        with pytest.raises(TimeoutError):
            r.recv_some(2.5)                           # no heartbeat frames, no disconnect
        r.open_channel(1)

