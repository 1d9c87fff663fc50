"""Start/stop the brokers under test: Ferry (the system under test) and RabbitMQ (the oracle).

Both expose the same small interface used by the tests:

    broker.kind            "ferry" | "rabbitmq"
    broker.host, .port     where AMQP listens (127.0.0.1 only)
    broker.params(**kw)    pika.ConnectionParameters for guest/guest on vhost "/"
    broker.start()         start (or start again on the same data dir); blocks until ready
    broker.stop()          SIGTERM and wait; returns the exit code
    broker.restart()       stop() + start() on the same data dir (and the same port)
    broker.kill9()         SIGKILL, no clean shutdown
    broker.close()         stop if running and release helpers (epmd); idempotent

Readiness is event driven: Ferry prints one line ``FERRY_READY amqp=127.0.0.1:PORT`` on stdout;
RabbitMQ is polled with real AMQP connections until one succeeds or a deadline passes.
Nothing here sleeps for a fixed amount of time.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pika

LOOPBACK = "127.0.0.1"
# Plugins every oracle runs with: Ferry has these features built in (the consistent-hash
# exchange type). Subclasses add their own (test_management_api.py: rabbitmq_management).
ORACLE_PLUGINS = ["rabbitmq_consistent_hash_exchange"]
# FERRY_READY amqp=HOST:PORT [http=HOST:PORT metrics=HOST:PORT amqps=HOST:PORT ...]
READY_RE = re.compile(rb"^FERRY_READY amqp=([0-9.]+):(\d+)((?:\s+\w+=\S+)*)\s*$")

FERRY_START_TIMEOUT = float(os.environ.get("FERRY_START_TIMEOUT", "30"))
RABBIT_START_TIMEOUT = float(os.environ.get("RABBITMQ_START_TIMEOUT", "90"))
STOP_TIMEOUT = float(os.environ.get("BROKER_STOP_TIMEOUT", "30"))

RABBITMQ_SERVER = os.environ.get("RABBITMQ_SERVER", "/usr/lib/rabbitmq/bin/rabbitmq-server")
RABBITMQCTL = str(Path(RABBITMQ_SERVER).with_name("rabbitmqctl"))


class BrokerError(RuntimeError):
    """A broker could not be started or stopped; the message says why and where the logs are."""


def tail(path: Path, n: int = 40) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-n:]) or "(empty log)"


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """Could a server listen there? SO_REUSEADDR like a server: TIME_WAIT leftovers from an
    earlier broker on the same port (e.g. the previous kind's 5672 broker) do not count."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def port_accepts(port: int, host: str = LOOPBACK, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port(max_port: int = 65535) -> int:
    """A currently free loopback port (the kernel's choice), at most max_port."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((LOOPBACK, 0))
            port = s.getsockname()[1]
        if port <= max_port:
            return port
    raise BrokerError("could not find a free loopback port")


def base_params(host: str, port: int, **kw) -> pika.ConnectionParameters:
    opts = dict(
        host=host,
        port=port,
        virtual_host="/",
        credentials=pika.PlainCredentials("guest", "guest"),
        connection_attempts=1,
        socket_timeout=5,
        stack_timeout=10,
        blocked_connection_timeout=30,
    )
    opts.update(kw)
    return pika.ConnectionParameters(**opts)


def children_of(pid: int) -> list[int]:
    """Direct children of pid (Linux /proc)."""
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # pid (comm) state ppid ...; comm may contain spaces/parens, so split after the last ')'
        rest = stat[stat.rfind(b")") + 2:].split()
        if len(rest) > 1 and int(rest[1]) == pid:
            kids.append(int(entry))
    return kids


def comm_of(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def _unblock_signals():
    """preexec_fn: children inherit the signal mask; a broker must always see SIGTERM."""
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


def _die_with_parent():
    """preexec_fn: SIGKILL the child if the test runner dies, so no broker outlives a killed run."""
    _unblock_signals()
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class _Broker:
    kind = "?"

    def __init__(self, data_dir: Path):
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.host = LOOPBACK
        self.port: int | None = None
        self.endpoints: dict[str, str] = {}
        self.proc: subprocess.Popen | None = None
        self.last_exit_code: int | None = None
        self.starts = 0

    # -- interface -------------------------------------------------------
    def params(self, **kw) -> pika.ConnectionParameters:
        if self.port is None:
            raise BrokerError(f"{self.kind} broker is not running")
        return base_params(self.host, self.port, **kw)

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{self.host}:{self.port}/%2F"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def reap(self) -> int | None:
        """If the broker process has exited on its own, forget it and return its exit code."""
        if self.proc is not None and self.proc.poll() is not None:
            code = self.proc.returncode
            if self.kind == "rabbitmq":
                self.kill9()          # make sure no beam.smp is left behind the wrapper
            self.proc = None
            self.last_exit_code = code
            return code
        return None

    def restart(self) -> int:
        code = self.stop()
        self.start()
        return code

    def await_queue(self, name: str, timeout: float = 30.0) -> None:
        """After a (re)start: return once the durable queue `name` answers a passive
        declare. Ferry recovers every queue before it prints FERRY_READY, so one declare
        decides (a missing queue fails at once). RabbitMQ overrides this: it may answer 404
        for a queue its vhost has not recovered yet, and a client retries."""
        self._passive_declare(name)

    def definitions_on_disk(self) -> None:
        """Before a kill -9 that a test's declarations must survive: Ferry answers a
        declare only once the definition is fsynced, so there is nothing to wait for."""

    def _passive_declare(self, name: str) -> None:
        c = pika.BlockingConnection(self.params())
        try:
            c.channel().queue_declare(name, passive=True)
        finally:
            if c.is_open:
                c.close()

    def __repr__(self):
        return f"<{self.kind} broker {self.host}:{self.port} data={self.data_dir}>"


class FerryBroker(_Broker):
    """`ferry server --data-dir DIR --amqp-listen 127.0.0.1:PORT`, ready on the FERRY_READY line."""

    kind = "ferry"

    def __init__(self, binary: Path, data_dir: Path, log_dir: Path, port: int = 0,
                 extra_env: dict | None = None, host: str = LOOPBACK,
                 netns: str | None = None, extra_args: list[str] | None = None):
        super().__init__(data_dir)
        self.extra_env = dict(extra_env or {})
        # A cluster node: its own address in its own network namespace (harness/cluster.py).
        self.listen_host = host
        self.netns = netns
        self.extra_args = list(extra_args or [])
        self.binary = Path(binary)
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.requested_port = port
        self._stdout_thread: threading.Thread | None = None

    @property
    def log_path(self) -> Path:
        return self.log_dir / "ferry.stderr.log"

    def launch(self) -> None:
        """Starts the process without waiting for READY (a cluster starts every node first:
        each is READY only once a majority is up). Call from the thread that will outlive
        the broker: the child dies with the thread that spawned it (PR_SET_PDEATHSIG)."""
        if self.running:
            raise BrokerError("ferry is already running")
        if not self.binary.is_file() or not os.access(self.binary, os.X_OK):
            raise BrokerError(
                f"ferry binary not found or not executable: {self.binary}\n"
                "Build it with `cargo build --bin ferry` or point FERRY_BIN at it."
            )
        # After the first start, come back on the same port: clients reconnect to the same
        # address after a restart (this also checks the listener uses SO_REUSEADDR).
        port = self.port if self.port is not None else self.requested_port
        cmd = ([] if self.netns is None else ["ip", "netns", "exec", self.netns]) + [
            str(self.binary), "server", "--data-dir", str(self.data_dir),
            "--amqp-listen", f"{self.listen_host}:{port}"] + self.extra_args
        log = open(self.log_path, "ab")
        log.write(f"\n==== start #{self.starts + 1}: {' '.join(cmd)}\n".encode())
        log.flush()
        env = dict(os.environ)
        env.setdefault("RUST_BACKTRACE", "1")
        # Management/metrics on ephemeral ports: parallel brokers never collide on 15672/15692.
        env["FERRY_HTTP_LISTEN"] = f"{self.listen_host}:0"
        env["FERRY_METRICS_LISTEN"] = f"{self.listen_host}:0"
        env.update(self.extra_env)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=log, env=env, start_new_session=True,
                                     preexec_fn=_die_with_parent)
        log.close()
        self.starts += 1

        signalled = threading.Event()
        found: dict = {}
        stdout_lines: list[bytes] = []
        proc = self.proc

        def reader():
            assert proc.stdout is not None
            for line in proc.stdout:          # keep draining so ferry never blocks on stdout
                if "port" not in found:
                    stdout_lines.append(line)
                    m = READY_RE.match(line)
                    if m:
                        found["endpoints"] = dict(
                            f.split("=", 1) for f in m.group(3).decode().split()
                        )
                        found["host"], found["port"] = m.group(1).decode(), int(m.group(2))
                        signalled.set()
            signalled.set()                   # EOF: the process closed stdout (most likely exited)

        self._stdout_thread = threading.Thread(target=reader, name="ferry-stdout", daemon=True)
        self._stdout_thread.start()
        self._launched = (cmd, port, proc, signalled, found, stdout_lines)

    def start(self) -> None:
        self.launch()
        self.await_ready()

    def await_ready(self) -> None:
        """Waits for the READY line of the process `launch` started."""
        cmd, port, proc, signalled, found, stdout_lines = self._launched
        ok = signalled.wait(FERRY_START_TIMEOUT)
        if "port" in found:
            self.host, self.port = found["host"], found["port"]
            # Other listeners of the READY line: "http", "metrics", "amqps" -> "HOST:PORT".
            self.endpoints = found.get("endpoints", {})
            if self.host != self.listen_host:
                self.kill9()
                raise BrokerError(f"ferry announced {self.host}, expected {self.listen_host}")
            if port and self.port != port:
                self.kill9()
                raise BrokerError(f"ferry announced port {self.port}, asked for {port}")
            return
        # Not ready: exited, closed stdout, or timed out.
        if ok:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        why = (f"exited with code {proc.returncode}" if proc.poll() is not None
               else f"printed no FERRY_READY line within {FERRY_START_TIMEOUT:.0f}s"
               if not ok else "closed stdout without printing FERRY_READY")
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        self.last_exit_code = proc.returncode
        self.proc = None
        out = b"".join(stdout_lines).decode(errors="replace").strip() or "(nothing)"
        raise BrokerError(
            f"ferry failed to start: {why}.\n  command: {' '.join(cmd)}\n"
            f"  expected one stdout line 'FERRY_READY amqp=127.0.0.1:PORT'\n"
            f"  stdout: {out[:2000]}\n  stderr tail ({self.log_path}):\n{tail(self.log_path)}"
        )

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM and wait; returns the exit code (Ferry must exit 0)."""
        if self.proc is None:
            return self.last_exit_code if self.last_exit_code is not None else 0
        proc = self.proc
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                self.proc = None
                self.last_exit_code = proc.returncode
                raise BrokerError(f"ferry did not exit within {timeout:.0f}s of SIGTERM "
                                  f"(killed). stderr tail:\n{tail(self.log_path)}")
        self.proc = None
        self.last_exit_code = proc.returncode
        return proc.returncode

    def kill9(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.last_exit_code = self.proc.returncode
            self.proc = None

    def close(self) -> int | None:
        if self.running:
            try:
                return self.stop()
            except BrokerError:
                return None
        return self.last_exit_code


class Epmd:
    """A private epmd on its own port, so we never share (or kill) anybody else's."""

    def __init__(self, log_dir: Path):
        self.log_dir = Path(log_dir)
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None

    def ensure(self) -> int:
        if self.proc is not None and self.proc.poll() is None:
            return self.port  # type: ignore[return-value]
        exe = shutil.which("epmd") or "/usr/lib/erlang/bin/epmd"
        self.port = free_port()
        log = open(self.log_dir / "epmd.log", "ab")
        # Foreground (no -daemon): it stays our child and we stop it by its PID.
        self.proc = subprocess.Popen([exe, "-port", str(self.port), "-address", LOOPBACK],
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                     start_new_session=True)
        log.close()
        deadline = time.monotonic() + 10
        while not port_accepts(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise BrokerError(f"epmd did not start on port {self.port}")
            time.sleep(0.02)
        return self.port

    def close(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.proc = None


def rabbitmq_available() -> bool:
    return os.path.exists(RABBITMQ_SERVER)


class RabbitBroker(_Broker):
    """RabbitMQ (Debian's 3.10 package) run in the foreground as the oracle, loopback only."""

    kind = "rabbitmq"

    def __init__(self, data_dir: Path, epmd: Epmd, port: int | None = None):
        super().__init__(data_dir)
        self.epmd = epmd
        self._owns_epmd = False
        if port is None:
            # the distribution port is PORT+20000, so it must fit too
            for _ in range(100):
                port = free_port(max_port=45000)
                if port_is_free(port + 20000):
                    break
        self.port = port
        self.nodename = f"rabbit{port}@localhost"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "log" / f"{self.nodename}.log"

    @property
    def console_log(self) -> Path:
        return self.data_dir / "console.log"

    def env(self) -> dict:
        d = str(self.data_dir)
        env = dict(os.environ)
        env.update({
            "HOME": d,
            "RABBITMQ_NODENAME": self.nodename,
            "RABBITMQ_NODE_IP_ADDRESS": LOOPBACK,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.port + 20000),
            "ERL_EPMD_ADDRESS": LOOPBACK,
            "ERL_EPMD_PORT": str(self.epmd.ensure()),
            "RABBITMQ_MNESIA_BASE": f"{d}/mnesia",
            "RABBITMQ_LOG_BASE": f"{d}/log",
            "RABBITMQ_ENABLED_PLUGINS_FILE": f"{d}/enabled_plugins",
            "RABBITMQ_CONF_ENV_FILE": f"{d}/rabbitmq-env.conf",
            "RABBITMQ_CONFIG_FILE": f"{d}/rabbitmq",
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        })
        return env

    def _prepare(self) -> None:
        d = self.data_dir
        (d / "enabled_plugins").write_text(f"[{','.join(ORACLE_PLUGINS)}].\n")
        (d / "rabbitmq-env.conf").write_text("")  # ignore /etc/rabbitmq/rabbitmq-env.conf
        if not (d / "rabbitmq.conf").exists():
            (d / "rabbitmq.conf").write_text("# stock defaults: the oracle must behave like a stock RabbitMQ\n")

    def start(self) -> None:
        if self.running:
            raise BrokerError("rabbitmq is already running")
        if not rabbitmq_available():
            raise BrokerError(f"rabbitmq-server not found at {RABBITMQ_SERVER} "
                              "(apt-get install rabbitmq-server)")
        self._prepare()
        if not port_is_free(self.port):
            raise BrokerError(f"port {self.port} is taken; cannot start rabbitmq there")
        log = open(self.console_log, "ab")
        self.proc = subprocess.Popen([RABBITMQ_SERVER], stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=log, env=self.env(), start_new_session=True,
                                     preexec_fn=_unblock_signals)
        log.close()
        self.starts += 1
        deadline = time.monotonic() + RABBIT_START_TIMEOUT
        last_err = None
        while True:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.proc = None
                raise BrokerError(f"rabbitmq-server exited with code {code} while starting.\n"
                                  f"console ({self.console_log}):\n{tail(self.console_log)}\n"
                                  f"log ({self.log_path}):\n{tail(self.log_path)}")
            if port_accepts(self.port):
                try:
                    c = pika.BlockingConnection(self.params(socket_timeout=2, stack_timeout=5))
                    c.close()
                    # RabbitMQ opens its AMQP listener before the boot has finished (queues
                    # of a vhost may still be recovering, answering 404): wait for the boot
                    # the way an operator's script does.
                    self._await_startup(deadline)
                    return
                except Exception as e:  # not booted far enough yet
                    last_err = e
            if time.monotonic() > deadline:
                self.kill9()
                raise BrokerError(f"rabbitmq not accepting AMQP connections within "
                                  f"{RABBIT_START_TIMEOUT:.0f}s (last error {last_err!r}).\n"
                                  f"log ({self.log_path}):\n{tail(self.log_path)}")
            time.sleep(0.1)  # polling interval, not a settle delay

    def _await_startup(self, deadline: float) -> None:
        """`rabbitmqctl await_startup`: returns once every boot step ran (vhosts and their
        durable queues recovered), not just once the listener accepts."""
        timeout = max(1, int(deadline - time.monotonic()))
        r = subprocess.run([RABBITMQCTL, "-n", self.nodename, "await_startup",
                            "--timeout", str(timeout)],
                           stdin=subprocess.DEVNULL, capture_output=True, env=self.env(),
                           timeout=timeout + 30)
        if r.returncode != 0:
            raise BrokerError(f"rabbitmqctl await_startup failed ({r.returncode}): "
                              f"{r.stdout.decode(errors='replace')}{r.stderr.decode(errors='replace')}")

    def await_queue(self, name: str, timeout: float = 30.0) -> None:
        """RabbitMQ 3.10 was seen (once in CI, after kill -9 and a restart that passed
        `await_startup`) answering 404 for a durable queue that came back moments later:
        retry the passive declare on 404 until `timeout`, as a reconnecting client would."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._passive_declare(name)
                return
            except pika.exceptions.ChannelClosedByBroker as e:
                if e.reply_code != 404 or time.monotonic() > deadline:
                    raise
            time.sleep(0.1)  # polling interval, not a settle delay

    def definitions_on_disk(self) -> None:
        """RabbitMQ 3.10 answers a declare before its definition reaches disk: Mnesia
        appends the transaction to its log asynchronously. A kill -9 right after lost a
        durable queue's declaration here (about 1 run in 6 of
        test_priorities_survive_a_kill, 404 for 30 s after the restart). RabbitMQ does not
        promise more, so its tests of message durability first flush Mnesia's log."""
        r = subprocess.run([RABBITMQCTL, "-n", self.nodename, "eval", "mnesia:sync_log()."],
                           stdin=subprocess.DEVNULL, capture_output=True, env=self.env(),
                           timeout=60)
        if r.returncode != 0:
            raise BrokerError(f"rabbitmqctl eval mnesia:sync_log() failed ({r.returncode}): "
                              f"{r.stdout.decode(errors='replace')}{r.stderr.decode(errors='replace')}")

    def _beam_pids(self) -> list[int]:
        if self.proc is None:
            return []
        found, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            for kid in children_of(pid):
                if comm_of(kid).startswith("beam"):
                    found.append(kid)
                else:
                    todo.append(kid)
        return found

    def _signal_beam(self, sig) -> None:
        beams = self._beam_pids()
        if not beams and self.proc is not None and self.proc.poll() is None:
            beams = [self.proc.pid]  # should not happen; fall back to the wrapper itself
        for pid in beams:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM to beam.smp (the wrapper's child); returns the wrapper's exit code."""
        if self.proc is None:
            return self.last_exit_code if self.last_exit_code is not None else 0
        proc = self.proc
        if proc.poll() is None:
            self._signal_beam(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal_beam(signal.SIGKILL)
                proc.kill()
                proc.wait()
                self.proc = None
                self.last_exit_code = proc.returncode
                raise BrokerError(f"rabbitmq did not stop within {timeout:.0f}s of SIGTERM")
        self.proc = None
        self.last_exit_code = proc.returncode
        return proc.returncode

    def kill9(self) -> None:
        if self.proc is None:
            return
        self._signal_beam(signal.SIGKILL)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.last_exit_code = self.proc.returncode
        self.proc = None

    def close(self) -> int | None:
        code = None
        if self.running:
            try:
                code = self.stop()
            except BrokerError:
                pass
        if self._owns_epmd:
            self.epmd.close()
        return code
