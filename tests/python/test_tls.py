"""AMQPS (AMQP 0-9-1 over TLS): Ferry only; these tests start their own Ferry brokers.

Certificates are made per session with the ``openssl`` CLI (Debian's openssl package): a CA, a
server certificate for 127.0.0.1 / localhost and a client certificate, all signed by that CA.
RabbitMQ's TLS listener takes the same files (``listeners.ssl.default``, ``ssl_options.*``); the
oracle is not run here because its TLS setup needs a config of its own.
"""

from __future__ import annotations

import base64
import json
import shutil
import ssl
import subprocess
import urllib.request

import pika
import pytest

from harness.brokers import BrokerError, base_params

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")


def openssl(*args: str, cwd) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=ferry-test-ca", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    for name, ext in [("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                                 "extendedKeyUsage=serverAuth\n"),
                      ("client", "extendedKeyUsage=clientAuth\n")]:
        (d / f"{name}.ext").write_text("basicConstraints=CA:FALSE\n" + ext)
        openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN=ferry-test-{name}", cwd=d)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", "2",
                "-extfile", f"{name}.ext", cwd=d)
    return d


def tls_env(pki, **extra) -> dict:
    env = {"FERRY_TLS_CERT": str(pki / "server.pem"), "FERRY_TLS_KEY": str(pki / "server.key"),
           "FERRY_AMQPS_LISTEN": "127.0.0.1:0"}
    env.update(extra)
    return env


def tls_params(broker, pki, client_cert: bool = False) -> pika.ConnectionParameters:
    host, port = broker.endpoints["amqps"].rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    if client_cert:
        ctx.load_cert_chain(str(pki / "client.pem"), str(pki / "client.key"))
    return base_params(host, int(port), ssl_options=pika.SSLOptions(ctx, "localhost"))


def round_trip(conn: pika.BlockingConnection) -> bytes:
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.confirm_delivery()
    ch.basic_publish("", q, b"over tls", pika.BasicProperties(delivery_mode=2))
    got = []
    ch.basic_consume(q, lambda c, m, p, body: (got.append(body), c.basic_ack(m.delivery_tag)))
    conn.process_data_events(time_limit=0)
    while not got:
        conn.process_data_events(time_limit=1)
    return got[0]


def test_publish_and_consume_over_tls(broker_factory, pki):
    b = broker_factory.start(broker_factory.make("ferry", "tls", env=tls_env(pki)))
    assert "amqps" in b.endpoints, b.endpoints
    conn = pika.BlockingConnection(tls_params(b, pki))
    try:
        assert round_trip(conn) == b"over tls"
    finally:
        conn.close()
    # the plain listener stays on beside it
    plain = pika.BlockingConnection(b.params())
    assert plain.is_open
    plain.close()
    b.close()


def test_no_amqps_listener_without_a_certificate(broker_factory):
    b = broker_factory.start(broker_factory.make("ferry", "notls"))
    assert "amqps" not in b.endpoints
    b.close()


def test_required_client_certificate(broker_factory, pki):
    env = tls_env(pki, FERRY_TLS_CA=str(pki / "ca.pem"), FERRY_TLS_VERIFY_PEER="true")
    b = broker_factory.start(broker_factory.make("ferry", "mtls", env=env))
    conn = pika.BlockingConnection(tls_params(b, pki, client_cert=True))
    try:
        assert round_trip(conn) == b"over tls"
    finally:
        conn.close()
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        pika.BlockingConnection(tls_params(b, pki, client_cert=False))
    # a refused handshake does not hurt the broker
    again = pika.BlockingConnection(tls_params(b, pki, client_cert=True))
    again.close()
    b.close()


def test_an_unreadable_certificate_stops_the_broker_with_a_clear_error(broker_factory, pki):
    env = tls_env(pki, FERRY_TLS_CERT=str(pki / "missing.pem"))
    b = broker_factory.make("ferry", "badcert", env=env)
    with pytest.raises(BrokerError):
        b.start()
    assert b.last_exit_code not in (None, 0)
    log = b.log_path.read_text()
    assert f"ferry: cannot read tls_cert {pki / 'missing.pem'}: No such file" in log, log[-2000:]


def test_a_key_that_does_not_match_is_refused_at_startup(broker_factory, pki):
    env = tls_env(pki, FERRY_TLS_KEY=str(pki / "client.key"))
    b = broker_factory.make("ferry", "badkey", env=env)
    with pytest.raises(BrokerError):
        b.start()
    assert b.last_exit_code not in (None, 0)
    log = b.log_path.read_text()
    assert "ferry: TLS configuration: " in log and "client.key" in log, log[-2000:]


def test_verify_peer_without_a_ca_is_refused_at_startup(broker_factory, pki):
    b = broker_factory.make("ferry", "noca", env=tls_env(pki, FERRY_TLS_VERIFY_PEER="true"))
    with pytest.raises(BrokerError):
        b.start()
    assert "ferry: tls_verify_peer needs tls_ca" in b.log_path.read_text()


def test_a_ca_without_verify_peer_accepts_clients_with_or_without_a_certificate(broker_factory, pki):
    b = broker_factory.start(broker_factory.make(
        "ferry", "optca", env=tls_env(pki, FERRY_TLS_CA=str(pki / "ca.pem"))))
    for cert in (False, True):
        conn = pika.BlockingConnection(tls_params(b, pki, client_cert=cert))
        assert round_trip(conn) == b"over tls"
        conn.close()
    b.close()


def test_tls_connections_are_named_after_the_amqps_listener(broker_factory, pki):
    env = tls_env(pki, FERRY_TLS_CA=str(pki / "ca.pem"))
    b = broker_factory.start(broker_factory.make("ferry", "tlsnames", env=env))
    amqps_port = int(b.endpoints["amqps"].rsplit(":", 1)[1])
    tls_conn = pika.BlockingConnection(tls_params(b, pki, client_cert=True))
    plain = pika.BlockingConnection(b.params())
    try:
        url = f"http://{b.endpoints['http']}/api/connections"
        req = urllib.request.Request(url)
        req.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
        with urllib.request.urlopen(req, timeout=10) as r:
            conns = {c["ssl"]: c for c in json.loads(r.read())}
        t, p = conns[True], conns[False]
        assert t["name"].endswith(f" -> 127.0.0.1:{amqps_port}"), t["name"]
        assert t["port"] == amqps_port and p["port"] == b.port
        assert p["name"].endswith(f" -> 127.0.0.1:{b.port}")
        assert t["ssl_protocol"] in ("tlsv1.3", "tlsv1.2")
        assert t["ssl_cipher"] and t["ssl_hash"]
        assert t["peer_cert_subject"] == "CN=ferry-test-client"
        assert t["peer_cert_issuer"] == "CN=ferry-test-ca"
        assert p["ssl_protocol"] is None and p["peer_cert_subject"] is None
    finally:
        tls_conn.close()
        plain.close()
        b.close()
