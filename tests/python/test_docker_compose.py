"""The container deployment (Dockerfile, docker-compose.yml at the repository root): the
image is built from the Dockerfile (its base, debian:bookworm-slim, made by
scripts/docker-base where no registry is reachable), the compose file starts the 3-node
cluster, and a client publishes a quorum queue with confirms through ferry1's published port
while ferry2 is killed (`docker kill`) and started again, ferry3 is paused (`docker pause`)
and resumed, and ferry2 is cut off its network (`docker network disconnect`) and put back;
then everything confirmed is consumed through ferry3's port. Lost, phantom, duplicated and
reordered messages are counted by the lab's checker; all must be none, and Ferry nacks none.
Everything is torn down (`down -v`) at the end, passed or not.

Skipped only where no Docker engine answers (CI has one)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import types
import urllib.request
from base64 import b64encode
from pathlib import Path

import pika
import pytest

from conftest import FERRY_BIN
from harness.cluster import poll
from harness.lab_clients import check, drain, never_nacked, publish

REPO = Path(__file__).resolve().parents[2]
PROJECT = f"ferryci{os.getpid()}"
IMAGE = f"ferry:ci-{os.getpid()}"


def _docker_ok() -> str | None:
    if shutil.which("docker") is None:
        return "no docker command"
    r = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=60)
    return None if r.returncode == 0 else f"no Docker engine answers: {r.stderr.strip()[:200]}"


def _compose_cmd() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    r = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
    return ["docker", "compose"] if r.returncode == 0 else None


pytestmark = pytest.mark.skipif(_docker_ok() is not None, reason=str(_docker_ok()))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd: list[str], env=None, timeout: float = 600) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO)
    assert r.returncode == 0, f"{' '.join(cmd)}: {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return r.stdout


def http_get(port: int, path: str) -> tuple[int, object]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    req.add_header("Authorization", "Basic " + b64encode(b"guest:guest").decode())
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, None


@pytest.fixture
def compose_cluster():
    """Builds the image from the repository's Dockerfile with the binary under test, starts
    the compose cluster on free host ports, yields (compose command, env, {node: (amqp port,
    http port)}), and tears it all down."""
    compose = _compose_cmd()
    assert compose is not None, "a Docker engine but no Compose (docker-compose or docker compose)"
    run([str(REPO / "scripts" / "docker-base")], timeout=900)
    binary = Path(FERRY_BIN).resolve()
    try:
        rel = binary.relative_to(REPO)
    except ValueError:
        pytest.fail(f"the binary under test must be inside the repository for `docker build`: {binary}")
    assert str(rel) in ("target/release/ferry", "target/debug/ferry"), \
        f".dockerignore lets only target/{{release,debug}}/ferry into the build: {rel}"
    ports = {f"ferry{i}": (_free_port(), _free_port()) for i in (1, 2, 3)}
    env = dict(os.environ, FERRY_IMAGE=IMAGE, FERRY_BINARY=str(rel), COMPOSE_PROJECT_NAME=PROJECT,
               FERRY_CLUSTER_SECRET=f"ci-{os.getpid()}")
    for name, (amqp, http) in ports.items():
        env[f"{name.upper()}_AMQP_PORT"] = str(amqp)
        env[f"{name.upper()}_HTTP_PORT"] = str(http)
    try:
        run(["docker", "build", "-q", "-t", IMAGE, "--build-arg", f"FERRY_BINARY={rel}", "."],
            timeout=900)
        run(compose + ["up", "-d", "--no-build"], env=env)
        yield compose, env, ports
    finally:
        logs = subprocess.run(compose + ["logs", "--no-color", "--tail", "60"], capture_output=True,
                              text=True, env=env, cwd=REPO, timeout=120)
        print(logs.stdout[-6000:])
        subprocess.run(compose + ["down", "-v", "--timeout", "5"], capture_output=True, env=env,
                       cwd=REPO, timeout=300)
        subprocess.run(["docker", "image", "rm", "-f", IMAGE], capture_output=True, timeout=120)


def node(ports, name: str):
    """What the lab's clients need of a node: its AMQP address (a published port)."""
    return types.SimpleNamespace(host="127.0.0.1", port=ports[name][0])


def running_members(ports, name: str) -> list[str]:
    st, v = http_get(ports[name][1], "/api/nodes")
    if st != 200 or not isinstance(v, list):
        return []
    return sorted(n["name"] for n in v if n.get("running"))


A = [f"a{i}" for i in range(100)]
B = [f"b{i}" for i in range(100)]
C = [f"c{i}" for i in range(100)]
D = [f"d{i}" for i in range(100)]


@pytest.mark.timeout(1500)
def test_the_compose_cluster_keeps_every_confirmed_message_through_kill_pause_and_disconnect(
        compose_cluster):
    compose, env, ports = compose_cluster
    everyone = ["ferry1", "ferry2", "ferry3"]
    for name in everyone:
        poll(f"{name} answers and sees the whole cluster", lambda n=name: running_members(ports, n),
             lambda m: m == everyone, timeout=180)
        st, _ = http_get(ports[name][1], "/api/health/checks/alarms")
        assert st == 200
    # The image's health check (ferry ctl health alarms) passes in each container.
    for name in everyone:
        container = run(compose + ["ps", "-q", name], env=env).strip()
        poll(f"{name}'s health check passes",
             lambda c=container: run(["docker", "inspect", "-f", "{{.State.Health.Status}}", c]).strip(),
             lambda h: h == "healthy", timeout=180)

    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", ports["ferry1"][0]))
    conn.channel().queue_declare("cq", durable=True, arguments={"x-queue-type": "quorum"})
    conn.close()
    publisher = node(ports, "ferry1")
    before, again1 = publish(publisher, "cq", A, time.monotonic() + 120)

    # ferry2 killed, then started again (its data volume stays).
    run(compose + ["kill", "ferry2"], env=env)
    killed, again2 = publish(publisher, "cq", B, time.monotonic() + 120)
    run(compose + ["start", "ferry2"], env=env)
    poll("ferry2 is back", lambda: running_members(ports, "ferry1"), lambda m: m == everyone,
         timeout=180)

    # ferry3 paused (SIGSTOP of every process in it), then resumed.
    run(compose + ["pause", "ferry3"], env=env)
    paused, again3 = publish(publisher, "cq", C, time.monotonic() + 120)
    run(compose + ["unpause", "ferry3"], env=env)
    poll("ferry3 is back", lambda: running_members(ports, "ferry1"), lambda m: m == everyone,
         timeout=180)

    # ferry2 cut off its network, then connected again.
    network = f"{PROJECT}_default"
    container = run(compose + ["ps", "-q", "ferry2"], env=env).strip()
    run(["docker", "network", "disconnect", network, container])
    cut, again4 = publish(publisher, "cq", D, time.monotonic() + 120)
    run(["docker", "network", "connect", "--alias", "ferry2", network, container])
    poll("ferry2 is reachable again", lambda: running_members(ports, "ferry1"),
         lambda m: m == everyone, timeout=180)

    got = drain(node(ports, "ferry3"))
    check("ferry", before | killed | paused | cut, again1 | again2 | again3 | again4, got,
          order=A + B + C + D)
    never_nacked("ferry", again1, again2, again3, again4)
