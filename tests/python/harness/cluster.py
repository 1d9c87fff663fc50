"""A lab of network namespaces and a Ferry cluster in it.

    lab = Lab(3)            # namespaces: a bridge, one per node; the test process joins the
                            # bridge through a veth of its own (10.77.<k>.254)
    c = FerryCluster(lab, binary, tmpdir)
    c.start_all()           # every node at once: each prints READY once the cluster formed
    lab.partition([1], [2, 3])   # iptables DROP inside the node namespaces (silent, both ways)
    lab.heal()
    c.nodes[0].kill9(); c.nodes[0].start()
    lab.close()             # namespaces and links gone (also at exit)

Addresses are 10.77.<k>.<i> in a /24 that exists only inside these namespaces (k differs per
lab so parallel labs never share a subnet). Needs root, `ip` and `iptables`.
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import base64
from pathlib import Path

from harness.brokers import FerryBroker, BrokerError

_labs = itertools.count(os.getpid() % 200)


def netns_available() -> str | None:
    """None if labs can be built here, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


def http_json(addr: str, method: str, path: str, body=None, user=("guest", "guest"),
              timeout: float = 15.0):
    """One management API request to addr (HOST:PORT): (status, decoded JSON or None)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://{addr}{path}", data=data, method=method)
    req.add_header("Authorization",
                   "Basic " + base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode())
    req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            return r.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except ValueError:
            return e.code, None


def poll(what: str, fetch, ok, timeout: float = 30.0, every: float = 0.2):
    """Calls fetch() until ok(result) holds (a state that changes on its own: elections,
    replication); an OSError counts as not yet. Returns the result."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = fetch()
            if ok(last):
                return last
        except OSError as e:
            last = e
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: last {last!r}")
        time.sleep(every)  # polling interval of a state that changes on its own


def _run(*args: str) -> None:
    r = subprocess.run(list(args), capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {r.stderr.strip()}")


def _subnet_taken(k: int) -> bool:
    """Whether this namespace already routes 10.77.k.0/24."""
    out = subprocess.run(["ip", "-o", "route", "show", f"10.77.{k}.0/24"], capture_output=True,
                         text=True, check=False).stdout
    return bool(out.strip())


class Lab:
    """A bridge namespace, one namespace per node, and a veth for the test process."""

    def __init__(self, nodes: int):
        # A subnet no other lab holds (one left behind by a killed run would
        # take this lab's traffic to its own namespaces).
        self.k = next(_labs) % 250
        while _subnet_taken(self.k):
            self.k = next(_labs) % 250
        self.tag = f"f{os.getpid() % 10000}x{self.k}"
        self.bridge = f"{self.tag}br"
        self.ns = [f"{self.tag}n{i}" for i in range(1, nodes + 1)]
        self.host_if = f"{self.tag}h"
        self.closed = False
        atexit.register(self.close)
        try:
            self._build()
        except Exception:
            self.close()
            raise

    def addr(self, i: int) -> str:
        """Address of node i (1-based)."""
        return f"10.77.{self.k}.{i}"

    def _build(self) -> None:
        _run("ip", "netns", "add", self.bridge)
        _run("ip", "-n", self.bridge, "link", "set", "lo", "up")
        _run("ip", "-n", self.bridge, "link", "add", "br0", "type", "bridge")
        _run("ip", "-n", self.bridge, "link", "set", "br0", "up")
        for i, ns in enumerate(self.ns, start=1):
            _run("ip", "netns", "add", ns)
            _run("ip", "-n", ns, "link", "set", "lo", "up")
            inner, outer = f"{self.tag}v{i}", f"{self.tag}p{i}"
            _run("ip", "link", "add", inner, "type", "veth", "peer", "name", outer)
            _run("ip", "link", "set", inner, "netns", ns)
            _run("ip", "link", "set", outer, "netns", self.bridge)
            _run("ip", "-n", self.bridge, "link", "set", outer, "master", "br0", "up")
            _run("ip", "-n", ns, "addr", "add", f"{self.addr(i)}/24", "dev", inner)
            _run("ip", "-n", ns, "link", "set", inner, "up")
        # The test process reaches the nodes through its own port on the bridge.
        outer = f"{self.tag}ph"
        _run("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", outer)
        _run("ip", "link", "set", outer, "netns", self.bridge)
        _run("ip", "-n", self.bridge, "link", "set", outer, "master", "br0", "up")
        _run("ip", "addr", "add", f"10.77.{self.k}.254/24", "dev", self.host_if)
        _run("ip", "link", "set", self.host_if, "up")

    def partition(self, *sides: list[int]) -> None:
        """Cuts every link between nodes of different sides (1-based node numbers): packets
        are dropped silently in both directions, as a failed switch port would."""
        for a, b in itertools.combinations(range(len(sides)), 2):
            for i in sides[a]:
                for j in sides[b]:
                    self._drop(i, j)
                    self._drop(j, i)

    def isolate(self, i: int) -> None:
        """Cuts node i from every other node (the test process still reaches it)."""
        self.partition([i], [j for j in range(1, len(self.ns) + 1) if j != i])

    def _drop(self, i: int, j: int) -> None:
        ns = self.ns[i - 1]
        _run("ip", "netns", "exec", ns, "iptables", "-A", "INPUT", "-s", self.addr(j), "-j", "DROP")
        _run("ip", "netns", "exec", ns, "iptables", "-A", "OUTPUT", "-d", self.addr(j), "-j", "DROP")

    def heal(self) -> None:
        for ns in self.ns:
            _run("ip", "netns", "exec", ns, "iptables", "-F")

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        # Whatever still runs in the namespaces (an epmd RabbitMQ started) would outlive them.
        for ns in self.ns:
            r = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
            for pid in r.stdout.split():
                try:
                    os.kill(int(pid), 9)
                except (ProcessLookupError, ValueError):
                    pass
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)
        for ns in self.ns + [self.bridge]:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


class FerryCluster:
    """One ferry process per lab node, seeds = every node, one shared secret."""

    def __init__(self, lab: Lab, binary: Path, workdir: Path, secret: str = "lab secret",
                 seeds: int | None = None, worker_threads: int | None = 1):
        """`seeds`: how many of the lab's nodes (the first ones) are the seeds; every node is
        started with them (a node after them joins the running cluster). `worker_threads`:
        tokio workers per node (1 keeps three nodes on two cores calm in tests; None: Ferry's
        default, one per core, as the benchmarks run it)."""
        self.lab = lab
        workdir = Path(workdir)
        secret_file = workdir / "cluster.secret"
        secret_file.write_text(secret)
        seeds = ",".join(f"{lab.addr(i)}:25672" for i in range(1, (seeds or len(lab.ns)) + 1))
        self.nodes: list[FerryBroker] = []
        for i, ns in enumerate(lab.ns, start=1):
            a = lab.addr(i)
            node = FerryBroker(
                binary, workdir / f"n{i}", workdir / f"log-n{i}", port=5672, host=a, netns=ns,
                extra_env={
                    # guest may log in only from loopback; the test process is not.
                    "FERRY_LOOPBACK_USERS": "",
                    **({} if worker_threads is None
                       else {"FERRY_WORKER_THREADS": str(worker_threads)}),
                },
                extra_args=["--node-name", f"n{i}", "--cluster-listen", f"{a}:25672",
                            "--cluster-seeds", seeds, "--cluster-secret-file", str(secret_file)],
            )
            self.nodes.append(node)

    def start_all(self) -> None:
        """Starts every node at once (each waits for a majority before it is READY)."""
        self.start(*range(1, len(self.nodes) + 1))

    def start(self, *which: int) -> None:
        """Launches the given nodes (1-based) from this thread, then waits for each READY."""
        nodes = [self.nodes[i - 1] for i in which]
        for n in nodes:
            n.launch()
        for n in nodes:
            n.await_ready()

    def api(self, i: int, path: str, timeout: float = 5.0):
        """GET the management API of node i (guest:guest), JSON-decoded."""
        st, body = http_json(self.nodes[i - 1].endpoints["http"], "GET", path, timeout=timeout)
        if st != 200:
            raise OSError(f"GET {path}: {st} {body}")
        return body

    def nodes_view(self, i: int) -> list[dict]:
        return self.api(i, "/api/nodes")

    def until(self, i: int, what: str, ok, timeout: float = 30.0) -> list[dict]:
        """Polls node i's /api/nodes until ok(view) holds."""
        return poll(f"{what} (node n{i})", lambda: self.nodes_view(i), ok, timeout)

    def close(self) -> None:
        for n in self.nodes:
            try:
                n.close()
            except BrokerError:
                pass
