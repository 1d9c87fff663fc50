"""The users' starting point: the pika snippets from the seed documents, run unmodified.

They hard-code ``pika.ConnectionParameters('localhost')`` (port 5672), so they run against a
broker started on 127.0.0.1:5672 (skipped if that port is taken on this machine).
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import pika
import pytest

from harness.expect import message_count

SEEDS = Path(__file__).parent / "seeds"


def run_seed(name: str, timeout: float = 30) -> str:
    r = subprocess.run([sys.executable, str(SEEDS / name)], capture_output=True, text=True,
                       timeout=timeout, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert r.returncode == 0, f"{name} exited {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    return r.stdout


class SeedProcess:
    """A long-running seed (a consumer calling start_consuming) whose stdout we read line by line."""

    def __init__(self, name: str):
        self.name = name
        self.proc = subprocess.Popen([sys.executable, str(SEEDS / name)], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True,
                                     env=dict(os.environ, PYTHONUNBUFFERED="1"))
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def read_line(self, timeout: float = 15) -> str:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.name}: no output within {timeout}s") from None
        if line is None:
            self.proc.wait()
            raise AssertionError(f"{self.name} exited {self.proc.returncode}: {self.proc.stderr.read()}")
        return line

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()          # no clean close: like Ctrl+C'ing a consumer abruptly
        self.proc.wait(10)


def reset_hello(b) -> pika.BlockingConnection:
    c = pika.BlockingConnection(b.params())
    ch = c.channel()
    ch.queue_declare("hello")         # same (default) flags as the seeds use
    ch.queue_purge("hello")
    return c


def wait_count(b, n: int, timeout: float = 10.0) -> int:
    """Poll queue 'hello' until it holds n ready messages (requeue after a kill is asynchronous)."""
    deadline = time.monotonic() + timeout
    while True:
        c = pika.BlockingConnection(b.params())
        try:
            got = message_count(c.channel(), "hello")
        finally:
            c.close()
        if got == n or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def test_hello_world_seed_send_and_auto_ack_receive(localhost_broker):
    c = reset_hello(localhost_broker)
    ch = c.channel()
    assert run_seed("seed000_send.py") == " [x] Sent 'Hello World!'\n"
    assert run_seed("seed003_send.py") == " [x] Sent 'Hello World!'\n"
    assert message_count(ch, "hello") == 2

    consumer = SeedProcess("seed001_receive.py")
    try:
        assert consumer.read_line() == " [x] Received b'Hello World!'"
        assert consumer.read_line() == " [x] Received b'Hello World!'"
        info = ch.queue_declare("hello", passive=True).method
        assert (info.message_count, info.consumer_count) == (0, 1)
    finally:
        consumer.kill()
    # auto_ack: nothing comes back when the consumer dies
    assert wait_count(localhost_broker, 0) == 0
    c.close()


@pytest.mark.slow
def test_seed_producer_and_unacking_consumer(localhost_broker):
    """seed 002: ten short-lived producer connections; a consumer that never acks. Its ten
    deliveries stay unacked while it lives and are requeued when it dies."""
    c = reset_hello(localhost_broker)
    ch = c.channel()
    consumer = SeedProcess("seed002_consumer.py")
    try:
        assert consumer.read_line() == " [*] Waiting for messages. To exit press CTRL+C"
        out = run_seed("seed002_producer.py", timeout=40)
        assert out.splitlines() == [f" [x] Sent Hello World {i}" for i in range(10)]
        got = [consumer.read_line() for _ in range(10)]
        assert got == [f" [x] Received b'Hello World {i}'" for i in range(10)]
        info = ch.queue_declare("hello", passive=True).method
        assert (info.message_count, info.consumer_count) == (0, 1)   # all 10 delivered, unacked
    finally:
        consumer.kill()
    assert wait_count(localhost_broker, 10) == 10
    msgs = []
    while True:
        m, _, body = ch.basic_get("hello", auto_ack=True)
        if m is None:
            break
        msgs.append((body, m.redelivered))
    assert msgs == [(f"Hello World {i}".encode(), True) for i in range(10)]
    c.close()
