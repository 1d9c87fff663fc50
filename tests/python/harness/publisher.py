"""A confirming pika publisher that runs at full speed on its own thread.

`ConfirmingPublisher` opens `connections` SelectConnections on one IOLoop (a background
thread), declares nothing, puts each channel in confirm mode and keeps up to `window`
unconfirmed messages per channel in flight: a new message goes out the moment a confirm
comes back, with no sleeps anywhere. Bodies start with "<connection>:<seq>;" so a consumer
can tell exactly which messages came back. Blocked/unblocked callbacks and every
ack/nack are recorded; `confirmed` and `nacked` are sets of ids.

Only the IOLoop thread touches pika objects; other threads read the sets and events under
a condition variable (`wait_for` sleeps on it until a confirm or a blocked/unblocked
frame changes something) and call `stop()`, which hops onto the loop thread-safely.
"""

from __future__ import annotations

import threading
import time

import pika
from pika.adapters.select_connection import IOLoop


def message_id(body: bytes) -> str:
    """The "<connection>:<seq>" id a ConfirmingPublisher put at the start of a body."""
    return body.split(b";", 1)[0].decode()


class _Link:
    """One connection + confirm-mode channel."""

    def __init__(self, owner: "ConfirmingPublisher", index: int):
        self.owner = owner
        self.index = index
        self.channel = None
        self.next_tag = 1
        self.in_flight: dict[int, str] = {}   # delivery tag -> id
        self.seq = 0
        self.closed = False
        self.conn = pika.SelectConnection(
            owner.params, on_open_callback=self._on_open,
            on_open_error_callback=self._on_open_error, on_close_callback=self._on_close,
            custom_ioloop=owner.loop)
        self.conn.add_on_connection_blocked_callback(lambda *_: owner._note("blocked"))
        self.conn.add_on_connection_unblocked_callback(lambda *_: owner._note("unblocked"))

    def _on_open(self, conn):
        conn.channel(on_open_callback=self._on_channel)

    def _on_open_error(self, _conn, err):
        self.owner.errors.append(f"connection {self.index} failed to open: {err!r}")
        self._on_close()

    def _on_channel(self, ch):
        self.channel = ch
        ch.confirm_delivery(self._on_confirm, callback=lambda _f: self.pump())

    def _on_confirm(self, frame):
        m = frame.method
        acked = isinstance(m, pika.spec.Basic.Ack)
        tags = ([t for t in self.in_flight if t <= m.delivery_tag] if m.multiple
                else [m.delivery_tag])
        ids = [self.in_flight.pop(t) for t in tags if t in self.in_flight]
        self.owner._settle(ids, acked)
        self.pump()

    def pump(self):
        o = self.owner
        if self.channel is None or self.closed:
            return
        while not o.stopping and len(self.in_flight) < o.window:
            self.seq += 1
            mid = f"{self.index}:{self.seq}"
            body = (mid + ";").encode().ljust(o.body_size, b".")
            self.channel.basic_publish("", o.queue, body,
                                       pika.BasicProperties(delivery_mode=2))
            self.in_flight[self.next_tag] = mid
            self.next_tag += 1
            o.sent += 1
        if o.stopping and not self.in_flight and not self.closed:
            self.closed = True
            self.conn.close()

    def _on_close(self, *_):
        self.closed = True
        if all(link.closed for link in self.owner.links):
            self.owner.loop.stop()


class ConfirmingPublisher:
    def __init__(self, params: pika.ConnectionParameters, queue: str, *, body_size: int,
                 window: int, connections: int = 1):
        self.params = params
        self.queue = queue
        self.body_size = body_size
        self.window = window
        self.loop = IOLoop()
        self.stopping = False
        self.sent = 0
        self.errors: list[str] = []
        self.events: list[tuple[str, float]] = []
        self.blocked = threading.Event()
        self.unblocked = threading.Event()
        self._lock = threading.Condition(threading.RLock())
        self._confirmed: set[str] = set()
        self._nacked: set[str] = set()
        self.links = [_Link(self, i) for i in range(connections)]
        self._thread = threading.Thread(target=self.loop.start, name="publisher", daemon=True)

    # -- called on the loop thread ----------------------------------------
    def _note(self, what: str):
        with self._lock:
            self.events.append((what, time.monotonic()))
            (self.blocked if what == "blocked" else self.unblocked).set()
            self._lock.notify_all()

    def _settle(self, ids: list[str], acked: bool):
        with self._lock:
            (self._confirmed if acked else self._nacked).update(ids)
            self._lock.notify_all()

    # -- any thread -----------------------------------------------------------
    def start(self) -> "ConfirmingPublisher":
        self._thread.start()
        return self

    def stop(self, timeout: float = 30) -> None:
        """Stops publishing, waits for outstanding confirms, closes the connections."""
        def begin():
            self.stopping = True
            for link in self.links:
                link.pump()
        self.loop.add_callback_threadsafe(begin)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError(f"publisher did not finish within {timeout}s of stop()")

    @property
    def confirmed(self) -> set[str]:
        with self._lock:
            return set(self._confirmed)

    @property
    def nacked(self) -> set[str]:
        with self._lock:
            return set(self._nacked)

    def confirmed_count(self) -> int:
        with self._lock:
            return len(self._confirmed)

    def count(self, what: str) -> int:
        with self._lock:
            return sum(1 for e, _ in self.events if e == what)

    def wait_for(self, predicate, timeout: float, what: str) -> None:
        """Waits until `predicate()` holds; re-checked after every confirm and event."""
        with self._lock:
            if not self._lock.wait_for(predicate, timeout):
                raise AssertionError(f"timed out after {timeout}s waiting for {what}; "
                                     f"sent {self.sent}, confirmed {len(self._confirmed)}, "
                                     f"errors: {self.errors}")
