"""Resource alarms: publishers are blocked (connection.blocked), consumers are not.

Ferry-only: the limits are Ferry's settings (`FERRY_MEMORY_LIMIT`, `FERRY_DISK_FREE_LIMIT`);
RabbitMQ's watermarks come from its config file.
"""

from __future__ import annotations

import os
import re
import time

import pika
import pytest

from harness.publisher import ConfirmingPublisher, message_id

MIB = 1 << 20
GIB = 1 << 30

# The memory test publishes for this long (CI runs the default, 60 s).
MEMORY_SECONDS = float(os.environ.get("FERRY_FLOW_SECONDS", "60"))
# Limit = the broker's fixed footprint (measured by a first start; it varies by about
# 1 MiB from start to start) + this: what three publishers of 4 MiB messages hold
# mid-message crosses it often; what a blocked connection still buffers (one socket read,
# about 64 KiB) stays far below it.
MEMORY_HEADROOM = 4 * MIB
BODY = 4 * MIB
# The queue refuses publishes past this (x-overflow reject-publish: nacked, never
# confirmed), so a minute at full speed does not write tens of GB; the publishers keep
# going at full speed against the nacks.
QUEUE_BYTES = 1 * GIB
# Peak RSS allowed over the limit: allocator slack for the 4 MiB buffers in flight.
RSS_SLACK = 64 * MIB


@pytest.fixture
def ferry_only(broker_kind):
    if broker_kind != "ferry":
        pytest.skip("RabbitMQ's watermarks are set by its config file; covered for Ferry only")


@pytest.fixture
def alarmed_ferry(ferry_only, broker_factory):
    """A Ferry whose memory limit is below any real footprint: the memory alarm is on."""
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


# ---------------------------------------------------------------------------------------
# helpers

def fixed_footprint(b, timeout: float = 10) -> int:
    """The `base` the memory monitor of the broker's latest start logged."""
    deadline = time.monotonic() + timeout
    while True:
        found = re.findall(rb"memory alarm: fixed footprint base=(\d+)", b.log_path.read_bytes())
        if len(found) >= b.starts:
            return int(found[-1])
        if time.monotonic() > deadline:
            raise AssertionError(f"no footprint line for start #{b.starts} in {b.log_path}")
        time.sleep(0.05)   # the line is written by another process: poll the file


def vm_kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise AssertionError(f"{key} missing from /proc/{pid}/status")


def free_bytes(path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def declare(b, queue: str, arguments: dict | None = None) -> None:
    c = pika.BlockingConnection(b.params())
    c.channel().queue_declare(queue, durable=True, arguments=arguments)
    c.close()


def drain(b, queue: str, timeout: float = 60) -> list[str]:
    """Consumes every message of `queue`; returns the ids in delivery order."""
    c = pika.BlockingConnection(b.params())
    ch = c.channel()
    expected = ch.queue_declare(queue, passive=True).method.message_count
    ch.basic_qos(prefetch_count=256)
    got: list[str] = []
    deadline = time.monotonic() + timeout
    for _m, _p, body in ch.consume(queue, auto_ack=True, inactivity_timeout=5):
        if body is None or len(got) >= expected or time.monotonic() > deadline:
            break
        got.append(message_id(body))
        if len(got) == expected:
            break
    ch.cancel()
    c.close()
    assert len(got) == expected, f"consumed {len(got)} of {expected} messages"
    return got


# ---------------------------------------------------------------------------------------
# memory high watermark

@pytest.mark.slow
@pytest.mark.timeout(MEMORY_SECONDS + 90)
def test_a_full_speed_publisher_under_a_small_memory_limit_is_blocked_and_unblocked(
        ferry_only, broker_factory):
    b = broker_factory.make("ferry", "memory-watermark")
    # A first start measures the footprint the memory measure starts from (code, runtime,
    # threads); the real run sets the limit just above it.
    broker_factory.start(b)
    probe = fixed_footprint(b)
    assert b.stop() == 0
    limit = probe + MEMORY_HEADROOM
    b.extra_env["FERRY_MEMORY_LIMIT"] = str(limit)
    broker_factory.start(b)
    base = fixed_footprint(b)
    pid = b.proc.pid
    declare(b, "hwm", {"x-max-length-bytes": QUEUE_BYTES, "x-overflow": "reject-publish"})

    pub = ConfirmingPublisher(b.params(), "hwm", body_size=BODY, window=4, connections=3).start()
    end = time.monotonic() + MEMORY_SECONDS
    while time.monotonic() < end:
        assert b.running, "the broker died under the publishers"
        time.sleep(1)   # the test's duration: nothing to wait for but the clock
    pub.stop()
    assert b.running, "the broker died under the publishers"
    peak_kib = vm_kib(pid, "VmHWM")
    blocked, unblocked = pub.count("blocked"), pub.count("unblocked")
    confirmed, nacked = pub.confirmed, pub.nacked
    print(f"\nmemory watermark run: {MEMORY_SECONDS:.0f}s, 3 publishers x 4 MiB bodies, "
          f"limit {limit / MIB:.1f} MiB (footprint {base / MIB:.1f} MiB), "
          f"sent {pub.sent}, confirmed {len(confirmed)}, nacked {len(nacked)}, "
          f"blocked {blocked}x, unblocked {unblocked}x, peak RSS {peak_kib / 1024:.1f} MiB")

    assert not pub.errors, pub.errors
    assert blocked >= 1, "connection.blocked never came"
    assert unblocked >= 1, "connection.unblocked never came"
    assert peak_kib * 1024 < limit + RSS_SLACK, \
        f"peak RSS {peak_kib} KiB over the bound {(limit + RSS_SLACK) // 1024} KiB"
    got = drain(b, "hwm")
    assert len(got) == len(set(got)), "a message came back twice"
    assert confirmed <= set(got), f"{len(confirmed - set(got))} confirmed messages lost"
    assert not (nacked & set(got)), "a nacked message was enqueued"
    assert b.stop() == 0


# ---------------------------------------------------------------------------------------
# disk free limit

DISK_HEADROOM = 1 * GIB     # free space above the limit when the broker starts
FILLER = 2 * GIB            # takes free space 1 GiB below the limit


def fill(path, size: int) -> None:
    with open(path, "wb") as f:
        try:
            os.posix_fallocate(f.fileno(), 0, size)   # reserves the blocks at once
        except OSError:
            chunk = b"\0" * (16 * MIB)
            for _ in range(size // len(chunk)):
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_low_disk_blocks_publishers_until_space_returns(ferry_only, broker_factory):
    b = broker_factory.make("ferry", "disk-alarm")
    free = free_bytes(b.data_dir)
    if free < FILLER + 2 * GIB:
        pytest.skip(f"needs {(FILLER + 2 * GIB) // GIB} GiB free next to the data dir, has "
                    f"{free / GIB:.1f}")
    # The limit sits just below today's free space, so a filler file crosses it and
    # deleting the file brings the space back.
    b.extra_env["FERRY_DISK_FREE_LIMIT"] = str(free - DISK_HEADROOM)
    broker_factory.start(b)
    declare(b, "disk")
    filler = b.data_dir.parent / "filler"

    window = 1
    pub = ConfirmingPublisher(b.params(), "disk", body_size=256, window=window).start()
    try:
        pub.wait_for(lambda: pub.confirmed_count() >= 200, 30, "the first confirms")
        assert pub.count("blocked") == 0, "blocked before the disk filled up"

        fill(filler, FILLER)
        pub.wait_for(pub.blocked.is_set, 10, "connection.blocked")
        stalled = pub.confirmed_count()
        # Publishing stalls: the broker does not read the socket, so at most what was
        # already in flight gets confirmed.
        time.sleep(1)   # observing that nothing happens takes a stretch of time
        assert pub.confirmed_count() <= stalled + window, "publishing went on under the alarm"
        assert not pub.unblocked.is_set()

        filler.unlink()
        pub.wait_for(pub.unblocked.is_set, 10, "connection.unblocked")
        pub.wait_for(lambda: pub.confirmed_count() >= stalled + 200, 30,
                     "publishing to resume")
    finally:
        if filler.exists():
            filler.unlink()
        pub.stop()
    print(f"\ndisk alarm run: confirmed {pub.confirmed_count()}, "
          f"blocked {pub.count('blocked')}x, unblocked {pub.count('unblocked')}x")
    assert not pub.errors, pub.errors
    assert pub.count("blocked") == 1 and pub.count("unblocked") == 1
    got = drain(b, "disk")
    assert pub.confirmed <= set(got), f"{len(pub.confirmed - set(got))} confirmed messages lost"
    assert b.stop() == 0
