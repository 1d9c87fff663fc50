"""A 3-node RabbitMQ 3.10 cluster (Debian's package) in a Lab, as the cluster oracle.

    lab = Lab(3)
    r = RabbitCluster(lab, tmpdir)
    r.start_all()           # node 1, then 2 and 3, which join it (classic config discovery)
    r.nodes[0].params()     # pika parameters of node 1 (its namespace address, port 5672)
    r.api(2, "/api/users")  # node 2's management API
    r.close()

Each node runs in its own namespace under the long node name rabbit@<address>, with one
Erlang cookie for all, `net_ticktime` 10 s (a partition is noticed within ~10–15 s), its own epmd (started by RabbitMQ inside that namespace; Lab.close
kills what is left in the namespaces) and the management plugin on <address>:15672.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from harness.cluster import http_json, poll
from harness.brokers import (RABBITMQ_SERVER, RABBITMQCTL, BrokerError, RabbitBroker, port_accepts,
                             rabbitmq_available, _unblock_signals, tail)

RABBIT_START_TIMEOUT = float(os.environ.get("RABBITMQ_START_TIMEOUT", "90"))
COOKIE = "FERRYLABCOOKIEFERRYLABCOOKIE"


class RabbitLabNode(RabbitBroker):
    """One RabbitMQ node of a lab cluster."""

    def __init__(self, data_dir: Path, ns: str, addr: str, peers: list[str]):
        super().__init__(data_dir, epmd=None, port=5672)  # type: ignore[arg-type]
        self.netns = ns
        self.host = addr
        self.nodename = f"rabbit@{addr}"
        self.peers = peers
        self.endpoints = {"http": f"{addr}:15672"}

    def env(self) -> dict:
        d = str(self.data_dir)
        env = dict(os.environ)
        env.update({
            "HOME": d,
            "RABBITMQ_USE_LONGNAME": "true",
            "RABBITMQ_NODENAME": self.nodename,
            "RABBITMQ_NODE_IP_ADDRESS": self.host,
            "RABBITMQ_NODE_PORT": "5672",
            "RABBITMQ_DIST_PORT": "25672",
            "RABBITMQ_MNESIA_BASE": f"{d}/mnesia",
            "RABBITMQ_LOG_BASE": f"{d}/log",
            "RABBITMQ_ENABLED_PLUGINS_FILE": f"{d}/enabled_plugins",
            "RABBITMQ_CONF_ENV_FILE": f"{d}/rabbitmq-env.conf",
            "RABBITMQ_CONFIG_FILE": f"{d}/rabbitmq",
            # A silent partition (iptables DROP) is noticed after net_ticktime: 10 s here
            # instead of the stock 60 s, so partition tests finish in minutes.
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel net_ticktime 10",
        })
        env.pop("ERL_EPMD_ADDRESS", None)
        env.pop("ERL_EPMD_PORT", None)
        return env

    def _prepare(self) -> None:
        d = self.data_dir
        (d / "enabled_plugins").write_text("[rabbitmq_management].\n")
        (d / "rabbitmq-env.conf").write_text("")
        cookie = d / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(COOKIE)
            cookie.chmod(0o400)
        lines = ["cluster_formation.peer_discovery_backend = classic_config",
                 "loopback_users = none",
                 f"management.tcp.ip = {self.host}",
                 "management.tcp.port = 15672"]
        lines += [f"cluster_formation.classic_config.nodes.{i} = rabbit@{p}"
                  for i, p in enumerate(self.peers, start=1)]
        (d / "rabbitmq.conf").write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        if self.running:
            raise BrokerError("rabbitmq is already running")
        if not rabbitmq_available():
            raise BrokerError(f"rabbitmq-server not found at {RABBITMQ_SERVER}")
        self._prepare()
        log = open(self.console_log, "ab")
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.netns, RABBITMQ_SERVER],
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                     env=self.env(), start_new_session=True,
                                     preexec_fn=_unblock_signals)
        log.close()
        self.starts += 1
        deadline = time.monotonic() + RABBIT_START_TIMEOUT
        while not port_accepts(5672, host=self.host):
            if self.proc.poll() is not None:
                code, self.proc = self.proc.returncode, None
                raise BrokerError(f"rabbitmq {self.nodename} exited ({code}) while starting:\n"
                                  f"{tail(self.console_log)}\n{tail(self.log_path)}")
            if time.monotonic() > deadline:
                self.kill9()
                raise BrokerError(f"rabbitmq {self.nodename} not listening within "
                                  f"{RABBIT_START_TIMEOUT:.0f}s:\n{tail(self.log_path)}")
            time.sleep(0.2)  # polling interval, not a settle delay
        self.port = 5672
        self.ctl("await_startup", "--timeout", str(max(1, int(deadline - time.monotonic()))))

    def ctl(self, *args: str) -> str:
        """rabbitmqctl against this node, from inside its namespace."""
        r = subprocess.run(["ip", "netns", "exec", self.netns, RABBITMQCTL, "-l", "-n",
                            self.nodename, *args], stdin=subprocess.DEVNULL,
                           capture_output=True, env=self.env(), timeout=RABBIT_START_TIMEOUT + 30)
        if r.returncode != 0:
            raise BrokerError(f"rabbitmqctl {' '.join(args)} on {self.nodename}: "
                              f"{r.stdout.decode(errors='replace')}{r.stderr.decode(errors='replace')}")
        return r.stdout.decode(errors="replace")


class RabbitCluster:
    """Three RabbitMQ nodes in the lab's namespaces, one cluster."""

    def __init__(self, lab, workdir: Path):
        self.lab = lab
        n = len(lab.ns)
        addrs = [lab.addr(i) for i in range(1, n + 1)]
        self.nodes = [RabbitLabNode(Path(workdir) / f"rabbit-n{i}", lab.ns[i - 1], addrs[i - 1], addrs)
                      for i in range(1, n + 1)]

    def start_all(self) -> None:
        """Node 1 first (it forms the cluster), then the others, which join it."""
        for node in self.nodes:
            node.start()
        self.until(1, "every node in the cluster",
                   lambda v: len(v) == len(self.nodes) and all(x.get("running") for x in v),
                   timeout=RABBIT_START_TIMEOUT)

    def api(self, i: int, path: str, method: str = "GET", body=None):
        """The management API of node i (guest:guest): (status, JSON or None)."""
        return http_json(self.nodes[i - 1].endpoints["http"], method, path, body)

    def until(self, i: int, what: str, ok, timeout: float = 30.0):
        """Polls node i's /api/nodes until ok(view) holds."""
        def fetch():
            st, view = self.api(i, "/api/nodes")
            return view if st == 200 else None
        return poll(f"{what} (rabbit node {i})", fetch, lambda v: v is not None and ok(v),
                    timeout, every=0.3)

    def close(self) -> None:
        for n in self.nodes:
            try:
                n.kill9()
            except Exception:
                pass

