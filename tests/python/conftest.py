"""Fixtures for the Ferry AMQP 0-9-1 compatibility suite.

Every test that takes ``broker`` (or ``restartable_broker`` / ``localhost_broker``) runs once
per broker kind:

* ``ferry``     always; the binary is $FERRY_BIN or <repo>/target/debug/ferry
* ``rabbitmq``  when FERRY_ORACLE=1: the oracle. The suite must pass against it unchanged.

Select one with ``-k ferry`` / ``-k rabbitmq``.
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
import socket
import threading
from pathlib import Path

import pika
import pytest

from harness.rawamqp import RawAMQP
from harness.brokers import (BrokerError, Epmd, FerryBroker, RabbitBroker, port_accepts,
                             port_is_free, rabbitmq_available, tail, RABBITMQ_SERVER)

REPO = Path(__file__).resolve().parents[2]
FERRY_BIN = Path(os.environ.get("FERRY_BIN") or REPO / "target" / "debug" / "ferry")
ORACLE = os.environ.get("FERRY_ORACLE") == "1"
KINDS = ["ferry"] + (["rabbitmq"] if ORACLE else [])



class BrokerFactory:
    """Creates brokers in per-broker temp dirs and makes sure every one of them is stopped."""

    def __init__(self, tmp_path_factory):
        self.tmp = tmp_path_factory
        self.epmd: Epmd | None = None
        self.created: list = []

    def make(self, kind: str, name: str, port: int | None = None, env: dict | None = None):
        if kind == "ferry":
            if not FERRY_BIN.is_file():
                pytest.fail(f"ferry binary not found at {FERRY_BIN}: run `cargo build --bin ferry` "
                            f"or set FERRY_BIN (use -k rabbitmq to run only the oracle)",
                            pytrace=False)
            base = self.tmp.mktemp(f"ferry-{name}")
            b = FerryBroker(FERRY_BIN, base / "data", base, port=port or 0, extra_env=env)
        elif kind == "rabbitmq":
            if not rabbitmq_available():
                pytest.skip(f"FERRY_ORACLE=1 but {RABBITMQ_SERVER} is missing "
                            "(apt-get install rabbitmq-server)")
            if self.epmd is None:
                self.epmd = Epmd(self.tmp.mktemp("epmd"))
            base = self.tmp.mktemp(f"rabbitmq-{name}")
            b = RabbitBroker(base, self.epmd, port=port)
        else:
            raise ValueError(kind)
        self.created.append(b)
        return b

    def start(self, broker):
        try:
            broker.start()
            return broker
        except BrokerError as e:
            msg = str(e)
        pytest.fail(msg, pytrace=False)

    def close(self):
        for b in self.created:
            b.close()
        if self.epmd is not None:
            self.epmd.close()


@pytest.fixture(scope="session")
def broker_factory(tmp_path_factory, pytestconfig):
    f = BrokerFactory(tmp_path_factory)
    pytestconfig._ferry_broker_factory = f  # for the log list in the terminal summary
    yield f
    f.close()


@pytest.fixture(scope="session", params=KINDS)
def broker_kind(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def broker(broker_kind, broker_factory):
    """One broker per kind for the whole session, on a free loopback port."""
    b = broker_factory.start(broker_factory.make(broker_kind, "session"))
    yield b
    b.close()


@pytest.fixture
def restartable_broker(broker_kind, broker_factory):
    """A private broker for this test only, with .restart(), .stop(), .kill9() and .start()."""
    b = broker_factory.start(broker_factory.make(broker_kind, "restartable"))
    yield b
    b.close()


@pytest.fixture(scope="session")
def localhost_broker(broker_kind, broker_factory):
    """A broker on 127.0.0.1:5672, for code that hard-codes ConnectionParameters('localhost')."""
    busy = [p for p in ([5672] + ([25672] if broker_kind == "rabbitmq" else []))
            if not port_is_free(p)]
    if busy or port_accepts(5672, "::1"):
        pytest.skip(f"port 5672 is already in use on this machine ({'127.0.0.1' if busy else '::1'}"
                    f"{', dist port 25672' if 25672 in busy else ''}); the seed snippets "
                    "hard-code localhost:5672, so they cannot be pointed at a test broker")
    b = broker_factory.make(broker_kind, "localhost5672", port=5672)
    try:
        b.start()
    except BrokerError as e:
        if not port_is_free(5672) and not b.running:   # somebody else took it meanwhile
            pytest.skip("port 5672 was taken by another process while the broker started")
        pytest.fail(str(e), pytrace=False)
    yield b
    b.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)      # lets fixtures see whether the test failed
    return rep


def _answers_amqp(b, timeout: float = 5.0) -> bool:
    try:
        with RawAMQP(b.host, b.port, timeout=timeout) as r:
            r.handshake()
            r.open_channel(1)
        return True
    except Exception:
        return False


@pytest.fixture(autouse=True)
def _session_broker_health(request):
    """Keep one broken test from turning every later test into noise. If the shared broker
    died during a test, or stopped answering new connections after a failed test, fail that
    test with the exit code and log tail, and start the broker again for the next tests."""
    if "broker" not in request.fixturenames:
        yield
        return
    b = request.getfixturevalue("broker")
    if b.reap() is not None:                   # died outside any test (e.g. during a teardown)
        b.start()
    yield
    code = b.reap()
    rep = getattr(request.node, "rep_call", None)
    if code is None and rep is not None and rep.failed and not _answers_amqp(b):
        b.kill9()
        code = "wedged: no AMQP handshake within 5s, killed with SIGKILL"
    if code is None:
        return
    log = b.log_path
    log_tail = tail(log)
    try:
        b.start()
        again = "restarted it for the next tests"
    except BrokerError as e:
        again = f"could not restart it: {e}"
    pytest.fail(f"the {b.kind} broker broke during this test ({code}); {again}.\n"
                f"log {log}:\n{log_tail}", pytrace=False)


# -- helpers for tests -----------------------------------------------------------------------------

@pytest.fixture
def uniq(request):
    """uniq('q') -> a fresh, readable, collision-free queue/exchange name for this test."""
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)[:40]
    token = secrets.token_hex(3)
    counter = itertools.count()

    def make(prefix: str = "q") -> str:
        return f"ferrytest.{base}.{prefix}{next(counter)}.{token}"

    return make


@pytest.fixture
def connect(broker):
    """connect(**params) -> an open pika BlockingConnection to the session broker; closed after."""
    conns = []

    def make(target=None, **kw) -> pika.BlockingConnection:
        c = pika.BlockingConnection((target or broker).params(**kw))
        conns.append(c)
        return c

    yield make
    for c in conns:
        close_quietly(c)


def close_quietly(c: pika.BlockingConnection, timeout: float = 5.0) -> None:
    """Close a pika connection without ever hanging the run: pika waits forever for
    connection.close-ok, so if the broker does not answer within `timeout` the socket is
    shut down underneath it."""
    if not c.is_open:
        return
    sock = getattr(getattr(getattr(c, "_impl", None), "_transport", None), "_sock", None)

    def cut():
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except Exception:
            pass

    timer = threading.Timer(timeout, cut) if sock is not None else None
    if timer:
        timer.daemon = True
        timer.start()
    try:
        c.close()
    except Exception:
        pass
    finally:
        if timer:
            timer.cancel()


@pytest.fixture
def conn(connect):
    return connect()


@pytest.fixture
def ch(conn):
    return conn.channel()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """On failure, say where each broker's logs are."""
    f = getattr(config, "_ferry_broker_factory", None)
    if exitstatus != 0 and f is not None and f.created:
        terminalreporter.section("broker logs")
        for b in f.created:
            terminalreporter.write_line(f"{b.kind} {b.host}:{b.port}: {b.log_path}")


@pytest.fixture(autouse=True)
def _ferry_pending(request):
    """`@pytest.mark.ferry_pending("issue N: ...")`: the scenario is RabbitMQ
    behaviour Ferry does not have yet; it still runs against the oracle, and
    is skipped (with the reason) against Ferry until that issue lands."""
    m = request.node.get_closest_marker("ferry_pending")
    if m is not None and "broker_kind" in request.fixturenames:
        if request.getfixturevalue("broker_kind") == "ferry":
            pytest.skip(f"pending in Ferry: {m.args[0]}")
