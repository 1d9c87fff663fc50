"""Run one command against a throwaway RabbitMQ (the oracle), then stop it.

    .venv/bin/python tests/python/harness/with_rabbitmq.py -- cargo test -p ferry --test tx

Starts a RabbitBroker exactly as the pytest suite does (harness/brokers.py: own data dir and node
name on free loopback ports, a private epmd, the ORACLE_PLUGINS, ready after `rabbitmqctl
await_startup`), runs COMMAND with FERRY_TEST_AMQP_URL pointing at it (the Rust black-box tests'
switch for an external broker, crates/ferry/tests/README.md), stops the broker and the epmd, and
exits with COMMAND's status: 2 if RabbitMQ did not start, 124 if COMMAND ran past
FERRY_ORACLE_TIMEOUT seconds (default 900; it is then killed with its process group). SIGINT or
SIGTERM stops COMMAND and the broker too. The RabbitMQ log tail is printed when COMMAND fails.
scripts/lapin-oracle is the user: the lapin tests that run on both brokers in CI.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.brokers import BrokerError, Epmd, RabbitBroker, tail  # noqa: E402

TIMEOUT = float(os.environ.get("FERRY_ORACLE_TIMEOUT", "900"))


class Stop(Exception):
    """SIGINT / SIGTERM arrived."""


def _on_signal(signum, _frame):
    raise Stop(signal.Signals(signum).name)


def _server_version(broker: RabbitBroker) -> str:
    import pika
    c = pika.BlockingConnection(broker.params())
    try:
        props = getattr(c._impl, "server_properties", None) or {}  # pika keeps connection.start's
        v = props.get("version", b"?")
        return v.decode() if isinstance(v, bytes) else str(v)
    finally:
        c.close()


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM COMMAND's process group, SIGKILL it if it is still there after 10 s."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def main(argv: list[str]) -> int:
    if "--" in argv:
        argv = argv[argv.index("--") + 1:]
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    base = Path(tempfile.mkdtemp(prefix="ferry-oracle-"))
    epmd = Epmd(base)
    broker = RabbitBroker(base / "data", epmd)
    proc = None
    status = 2
    try:
        t0 = time.monotonic()
        try:
            broker.start()
        except BrokerError as e:
            print(f"with_rabbitmq: RabbitMQ did not start: {e}", file=sys.stderr)
            return 2
        url = f"amqp://guest:guest@{broker.host}:{broker.port}/%2f"
        print(f"with_rabbitmq: RabbitMQ {_server_version(broker)} ready at {url} "
              f"in {time.monotonic() - t0:.1f}s (log {broker.log_path})", flush=True)
        env = dict(os.environ, FERRY_TEST_AMQP_URL=url)
        proc = subprocess.Popen(argv, env=env, start_new_session=True)
        try:
            status = proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            print(f"with_rabbitmq: {' '.join(argv)} still running after {TIMEOUT:.0f}s "
                  "(FERRY_ORACLE_TIMEOUT): killing it", file=sys.stderr)
            _stop_group(proc)
            status = 124
        if status != 0:
            print(f"with_rabbitmq: exit status {status}; RabbitMQ log tail "
                  f"({broker.log_path}):\n{tail(broker.log_path)}", file=sys.stderr)
        return status
    except Stop as e:
        print(f"with_rabbitmq: {e}: stopping", file=sys.stderr)
        if proc is not None and proc.poll() is None:
            _stop_group(proc)
        return 130
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        code = broker.close()
        epmd.close()
        if code not in (0, None):
            print(f"with_rabbitmq: RabbitMQ exited with {code}", file=sys.stderr)
        if status == 0:
            shutil.rmtree(base, ignore_errors=True)
        else:
            print(f"with_rabbitmq: RabbitMQ data and logs kept in {base}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
