"""The management HTTP API (RabbitMQ 3.10's /api/...) and, for Ferry, the Prometheus endpoint.

Each scenario runs against Ferry and, with FERRY_ORACLE=1, against RabbitMQ with the
rabbitmq_management plugin: status codes, error bodies and the JSON fields scripts read must
agree. RabbitMQ fills its statistics (message counts, connections) from a stats database a few
seconds late, so reads of counts wait for the expected value (`eventually`) instead of
expecting it at once; Ferry answers from live state. `rabbitmqadmin` from Debian's
rabbitmq-server package is run against both when it is installed.
"""

from __future__ import annotations

import base64
import http.client
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import pika
import pytest

from conftest import KINDS
from harness.admin import rabbitmqadmin
from harness.brokers import LOOPBACK, ORACLE_PLUGINS, RabbitBroker, free_port, port_accepts

ADMIN = ("guest", "guest")


class RabbitWithManagement(RabbitBroker):
    """The oracle with the management plugin on a free loopback port."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.http_port = free_port(max_port=45000)

    def _prepare(self) -> None:
        super()._prepare()
        plugins = ",".join(ORACLE_PLUGINS + ["rabbitmq_management"])
        (self.data_dir / "enabled_plugins").write_text(f"[{plugins}].\n")
        (self.data_dir / "rabbitmq.conf").write_text(
            f"management.tcp.port = {self.http_port}\nmanagement.tcp.ip = {LOOPBACK}\n")

    def start(self) -> None:
        super().start()
        deadline = time.monotonic() + 60
        while not port_accepts(self.http_port):   # the plugin starts after the AMQP listener
            assert time.monotonic() < deadline, "management plugin did not start"
            time.sleep(0.1)
        self.endpoints["http"] = f"{LOOPBACK}:{self.http_port}"


class Api:
    def __init__(self, broker):
        self.broker = broker
        self.base = f"http://{broker.endpoints['http']}"

    def call(self, method: str, path: str, body=None, auth=ADMIN, raw: bytes | None = None,
             headers: dict | None = None):
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(self.base + path, method=method, data=data)
        req.add_header("content-type", "application/json")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        if auth is not None:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                status, text = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read()
        return status, (json.loads(text) if text.strip() else None)

    def get(self, path, **kw):
        return self.call("GET", path, **kw)

    def ok(self, method, path, body=None, expect=(200, 201, 204)):
        status, out = self.call(method, path, body)
        assert status in expect, f"{method} {path}: {status} {out}"
        return out


def eventually(fn, timeout: float = 20.0):
    """fn() until it returns a truthy value (RabbitMQ's stats lag by up to 5 s)."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.2)


@pytest.fixture(scope="module", params=KINDS)
def api(request, broker_factory):
    if request.param == "ferry":
        b = broker_factory.make("ferry", "mgmt")
    else:
        b = broker_factory.make("rabbitmq", "mgmt")     # for its epmd and cleanup
        broker_factory.created.remove(b)
        b = RabbitWithManagement(b.data_dir, broker_factory.epmd)
        broker_factory.created.append(b)
    broker_factory.start(b)
    assert "http" in b.endpoints, f"{b.kind} has no management listener"
    yield Api(b)
    b.close()


def q(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def test_overview_names_versions_and_totals(api):
    o = api.ok("GET", "/api/overview")
    assert o["rabbitmq_version"].startswith("3.")
    assert o["management_version"]
    for k in ("connections", "channels", "exchanges", "queues", "consumers"):
        assert isinstance(o["object_totals"][k], int)
    # RabbitMQ fills queue_totals only once it has queue statistics.
    assert isinstance(o["queue_totals"], dict)
    assert any(lst["protocol"] == "amqp" for lst in o["listeners"])
    nodes = api.ok("GET", "/api/nodes")
    assert nodes[0]["name"] == o["node"] and nodes[0]["running"] is True
    assert api.ok("GET", "/api/health/checks/alarms") == {"status": "ok"}
    assert api.ok("GET", "/api/whoami") == {"name": "guest", "tags": ["administrator"]}


def test_queue_declare_show_delete(api, uniq):
    name = uniq("q")
    path = f"/api/queues/%2F/{q(name)}"
    assert api.call("PUT", path, {"durable": True, "arguments": {"x-max-length": 10}})[0] == 201
    assert api.call("PUT", path, {"durable": True, "arguments": {"x-max-length": 10}})[0] == 204
    st, err = api.call("PUT", path, {"durable": False})
    assert st == 400 and err["error"] == "bad_request"
    assert "inequivalent arg 'durable'" in err["reason"]
    info = api.ok("GET", path)
    assert (info["name"], info["vhost"], info["durable"]) == (name, "/", True)
    assert info["arguments"] == {"x-max-length": 10}
    def counted():
        i = api.ok("GET", path)
        return i if "messages" in i else None

    shown = eventually(counted)
    assert shown["messages"] == 0 and shown["consumers"] == 0
    listed = api.ok("GET", "/api/queues/%2F?columns=name,durable")
    assert {"name": name, "durable": True} in listed
    assert api.call("DELETE", path)[0] == 204
    assert api.call("GET", path) == (404, {"error": "Object Not Found", "reason": "Not Found"})
    assert api.call("DELETE", path)[0] == 404


def test_bad_input_is_4xx_with_json_reason(api, uniq):
    path = f"/api/queues/%2F/{q(uniq('q'))}"
    st, err = api.call("PUT", path, raw=b"{not json")
    assert (st, err["error"]) == (400, "bad_request")
    st, err = api.call("PUT", path, {"durable": "yes"})
    assert (st, err["error"]) == (400, "bad_request")
    st, err = api.call("PUT", f"/api/exchanges/%2F/{q(uniq('x'))}", {"type": "nope"})
    assert (st, err["error"]) == (400, "bad_request") and "nope" in json.dumps(err["reason"])
    assert api.call("GET", "/api/queues/no-such-vhost")[0] == 404
    assert api.call("GET", "/api/exchanges/%2F/no-such-exchange")[0] == 404
    assert api.call("GET", "/api/no/such/path")[0] == 404
    assert api.call("POST", "/api/overview")[0] == 405
    st, err = api.call("POST", f"/api/queues/%2F/{q(uniq('q'))}/get", {"count": 1})
    assert st in (400, 404)


def test_authentication_and_tags(api, uniq):
    assert api.call("GET", "/api/overview", auth=None)[0] == 401
    st, err = api.call("GET", "/api/overview", auth=("guest", "wrong"))
    assert (st, err) == (401, {"error": "not_authorized", "reason": "Login failed"})
    plain, mgmt = uniq("plain"), uniq("mgmt")
    api.ok("PUT", f"/api/users/{q(plain)}", {"password": "pw", "tags": ""})
    api.ok("PUT", f"/api/users/{q(mgmt)}", {"password": "pw", "tags": "management"})
    try:
        st, err = api.call("GET", "/api/overview", auth=(plain, "pw"))
        assert (st, err["error"], err["reason"]) == (401, "not_authorised", "Not management user")
        st, err = api.call("GET", "/api/users", auth=(mgmt, "pw"))
        assert (st, err["reason"]) == (401, "Not administrator user")
        st, err = api.call("GET", "/api/queues/%2F", auth=(mgmt, "pw"))
        assert (st, err["reason"]) == (401, "User not authorised to access virtual host")
        assert api.call("GET", "/api/overview", auth=(mgmt, "pw"))[0] == 200
        # Permissions on / but no configure right: declaring is refused.
        api.ok("PUT", f"/api/permissions/%2F/{q(mgmt)}",
               {"configure": "^$", "write": ".*", "read": ".*"})
        assert api.call("GET", "/api/queues/%2F", auth=(mgmt, "pw"))[0] == 200
        st, err = api.call("PUT", f"/api/queues/%2F/{q(uniq('q'))}", {}, auth=(mgmt, "pw"))
        assert (st, err["error"]) == (401, "not_authorised")
    finally:
        api.call("DELETE", f"/api/users/{q(plain)}")
        api.call("DELETE", f"/api/users/{q(mgmt)}")
    assert api.call("GET", f"/api/users/{q(mgmt)}")[0] == 404


def test_publish_get_purge(api, uniq):
    name = uniq("q")
    api.ok("PUT", f"/api/queues/%2F/{q(name)}", {"durable": False})
    pub = {"properties": {"content_type": "text/plain", "headers": {"k": "v"}},
           "routing_key": name, "payload": "hello", "payload_encoding": "string"}
    assert api.ok("POST", "/api/exchanges/%2F/amq.default/publish", pub) == {"routed": True}
    nowhere = dict(pub, routing_key=uniq("none"))
    assert api.ok("POST", "/api/exchanges/%2F/amq.default/publish", nowhere) == {"routed": False}
    b64 = dict(pub, payload=base64.b64encode(b"\x00\xffbin").decode(), payload_encoding="base64")
    assert api.ok("POST", "/api/exchanges/%2F/amq.default/publish", b64) == {"routed": True}
    st, err = api.call("POST", "/api/exchanges/%2F/amq.default/publish", {"routing_key": name})
    assert (st, err["error"]) == (400, "bad_request")
    get = {"count": 5, "ackmode": "ack_requeue_true", "encoding": "auto", "truncate": 50000}
    msgs = api.ok("POST", f"/api/queues/%2F/{q(name)}/get", get)
    assert [m["payload"] for m in msgs] == ["hello", base64.b64encode(b"\x00\xffbin").decode()]
    assert [m["payload_encoding"] for m in msgs] == ["string", "base64"]
    assert msgs[0]["properties"]["content_type"] == "text/plain"
    assert msgs[0]["properties"]["headers"] == {"k": "v"}
    assert msgs[0]["routing_key"] == name and msgs[0]["exchange"] == ""
    assert (msgs[0]["message_count"], msgs[1]["message_count"]) == (1, 0)
    # Requeued: the same two again, now redelivered; this time they are acked away.
    msgs = api.ok("POST", f"/api/queues/%2F/{q(name)}/get", dict(get, ackmode="ack_requeue_false"))
    assert len(msgs) == 2 and all(m["redelivered"] for m in msgs)
    assert api.ok("POST", f"/api/queues/%2F/{q(name)}/get", get) == []
    # Purge what AMQP publishes.
    conn = pika.BlockingConnection(api.broker.params())
    try:
        ch = conn.channel()
        for i in range(3):
            ch.basic_publish("", name, b"m%d" % i)
        ch.queue_declare(name, passive=True)     # a round trip: the publishes are in
        eventually(lambda: api.ok("GET", f"/api/queues/%2F/{q(name)}").get("messages") == 3)
        assert api.call("DELETE", f"/api/queues/%2F/{q(name)}/contents")[0] == 204
        assert ch.queue_declare(name, passive=True).method.message_count == 0
    finally:
        conn.close()
    api.ok("DELETE", f"/api/queues/%2F/{q(name)}")


def test_exchanges_and_bindings(api, uniq):
    x, name = uniq("x"), uniq("q")
    assert api.call("PUT", f"/api/exchanges/%2F/{q(x)}", {"type": "topic", "durable": True})[0] == 201
    api.ok("PUT", f"/api/queues/%2F/{q(name)}", {"durable": True})
    info = api.ok("GET", f"/api/exchanges/%2F/{q(x)}")
    assert (info["type"], info["durable"], info["internal"]) == ("topic", True, False)
    st, _ = api.call("POST", f"/api/bindings/%2F/e/{q(x)}/q/{q(name)}",
                     {"routing_key": "a.#", "arguments": {}})
    assert st == 201
    between = api.ok("GET", f"/api/bindings/%2F/e/{q(x)}/q/{q(name)}")
    assert [(b["source"], b["destination"], b["routing_key"]) for b in between] == [(x, name, "a.#")]
    qb = api.ok("GET", f"/api/queues/%2F/{q(name)}/bindings")
    assert {(b["source"], b["routing_key"]) for b in qb} == {("", name), (x, "a.#")}
    assert {b["destination"] for b in api.ok("GET", f"/api/exchanges/%2F/{q(x)}/bindings/source")} == {name}
    pub = {"properties": {}, "routing_key": "a.b.c", "payload": "p", "payload_encoding": "string"}
    assert api.ok("POST", f"/api/exchanges/%2F/{q(x)}/publish", pub) == {"routed": True}
    key = between[0]["properties_key"]
    assert api.call("DELETE", f"/api/bindings/%2F/e/{q(x)}/q/{q(name)}/{q(key)}")[0] == 204
    assert api.ok("GET", f"/api/bindings/%2F/e/{q(x)}/q/{q(name)}") == []
    assert api.ok("POST", f"/api/exchanges/%2F/{q(x)}/publish", pub) == {"routed": False}
    assert api.call("DELETE", f"/api/exchanges/%2F/{q(x)}")[0] == 204
    assert api.call("GET", f"/api/exchanges/%2F/{q(x)}")[0] == 404
    names = {e["name"] for e in api.ok("GET", "/api/exchanges/%2F")}
    assert {"", "amq.direct", "amq.topic"} <= names
    api.ok("DELETE", f"/api/queues/%2F/{q(name)}")


def test_connections_channels_consumers_and_force_close(api, uniq):
    name = uniq("q")
    conn_name = uniq("conn")
    params = api.broker.params(client_properties={"connection_name": conn_name})
    conn = pika.BlockingConnection(params)
    ch = conn.channel()
    ch.basic_qos(prefetch_count=7)
    ch.queue_declare(name, auto_delete=True)
    ch.basic_consume(name, lambda *a: None, consumer_tag="ctag-" + conn_name)

    def mine():
        return [c for c in api.ok("GET", "/api/connections")
                if c.get("user_provided_name") == conn_name]

    c = eventually(mine)[0]
    assert (c["user"], c["vhost"], c["protocol"]) == ("guest", "/", "AMQP 0-9-1")
    assert c["client_properties"]["product"] == "Pika Python Client Library"
    assert c["peer_host"] == "127.0.0.1"
    chans = eventually(lambda: [x for x in api.ok("GET", "/api/channels")
                                if x["connection_details"]["name"] == c["name"]])
    assert chans[0]["prefetch_count"] == 7 and chans[0]["number"] == 1
    cons = eventually(lambda: [x for x in api.ok("GET", "/api/consumers")
                               if x["consumer_tag"] == "ctag-" + conn_name])
    assert cons[0]["queue"] == {"name": name, "vhost": "/"}
    assert cons[0]["ack_required"] is True
    assert api.call("DELETE", "/api/connections/no-such-connection")[0] == 404
    assert api.call("DELETE", f"/api/connections/{q(c['name'])}")[0] == 204
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
        conn.process_data_events(time_limit=10)
        conn.process_data_events(time_limit=10)
    assert e.value.reply_code == 320
    assert e.value.reply_text == "CONNECTION_FORCED - Closed via management plugin"
    eventually(lambda: not mine())


def test_vhosts_and_permissions(api, uniq):
    v = uniq("vh")
    assert api.call("PUT", f"/api/vhosts/{q(v)}", {})[0] == 201
    assert api.call("PUT", f"/api/vhosts/{q(v)}", {})[0] == 204
    assert api.ok("GET", f"/api/vhosts/{q(v)}")["name"] == v
    assert v in {x["name"] for x in api.ok("GET", "/api/vhosts")}
    api.ok("PUT", f"/api/permissions/{q(v)}/guest", {"configure": ".*", "write": ".*", "read": "^r"})
    p = api.ok("GET", f"/api/permissions/{q(v)}/guest")
    assert (p["user"], p["vhost"], p["read"]) == ("guest", v, "^r")
    assert api.call("PUT", f"/api/permissions/{q(v)}/no-such-user",
                    {"configure": "", "write": "", "read": ""})[0] in (400, 404)
    api.ok("PUT", f"/api/queues/{q(v)}/qq", {"durable": True})
    assert [x["name"] for x in api.ok("GET", f"/api/queues/{q(v)}")] == ["qq"]
    assert api.call("DELETE", f"/api/vhosts/{q(v)}")[0] == 204
    assert api.call("GET", f"/api/vhosts/{q(v)}")[0] == 404
    assert api.call("GET", f"/api/queues/{q(v)}")[0] == 404


def test_definitions_export_and_import(api, uniq):
    x, name, v = uniq("x"), uniq("q"), uniq("vh")
    api.ok("PUT", f"/api/exchanges/%2F/{q(x)}", {"type": "fanout", "durable": True})
    api.ok("PUT", f"/api/queues/%2F/{q(name)}", {"durable": True, "arguments": {"x-max-length": 5}})
    api.ok("POST", f"/api/bindings/%2F/e/{q(x)}/q/{q(name)}", {"routing_key": "rk"})
    d = api.ok("GET", "/api/definitions")
    assert d["rabbit_version"]
    assert {"name": name, "vhost": "/", "durable": True, "auto_delete": False,
            "arguments": {"x-max-length": 5}} in [
        {k: e[k] for k in ("name", "vhost", "durable", "auto_delete", "arguments")}
        for e in d["queues"]]
    assert any(e["name"] == x and e["type"] == "fanout" for e in d["exchanges"])
    assert any(b["source"] == x and b["destination"] == name and b["routing_key"] == "rk"
               for b in d["bindings"])
    assert any(u["name"] == "guest" for u in d["users"])
    assert {"name": "/"} in [{"name": e["name"]} for e in d["vhosts"]]
    doc = {
        "vhosts": [{"name": v}],
        "permissions": [{"user": "guest", "vhost": v, "configure": ".*", "write": ".*",
                         "read": ".*"}],
        "exchanges": [{"name": "ix", "vhost": v, "type": "direct", "durable": True,
                       "auto_delete": False, "internal": False, "arguments": {}}],
        "queues": [{"name": "iq", "vhost": v, "durable": True, "auto_delete": False,
                    "arguments": {}}],
        "bindings": [{"source": "ix", "vhost": v, "destination": "iq",
                      "destination_type": "queue", "routing_key": "k", "arguments": {}}],
    }
    assert api.call("POST", "/api/definitions", doc)[0] in (200, 201, 204)
    try:
        assert api.ok("GET", f"/api/queues/{q(v)}/iq")["durable"] is True
        b = api.ok("GET", f"/api/bindings/{q(v)}/e/ix/q/iq")
        assert [x["routing_key"] for x in b] == ["k"]
        assert api.call("POST", "/api/definitions", raw=b"[not json")[0] == 400
    finally:
        api.call("DELETE", f"/api/vhosts/{q(v)}")
        api.call("DELETE", f"/api/exchanges/%2F/{q(x)}")
        api.call("DELETE", f"/api/queues/%2F/{q(name)}")


def test_message_stats_count_publishes_and_deliveries(api, uniq):
    name = uniq("q")
    conn = pika.BlockingConnection(api.broker.params())
    try:
        ch = conn.channel()
        ch.queue_declare(name)
        for i in range(4):
            ch.basic_publish("", name, b"x")
        for _ in range(4):
            method, _, _ = ch.basic_get(name, auto_ack=False)
            ch.basic_ack(method.delivery_tag)

        def stats():
            s = api.ok("GET", f"/api/queues/%2F/{q(name)}").get("message_stats", {})
            return s if s.get("publish") == 4 and s.get("ack") == 4 else None

        s = eventually(stats)
        assert s["get"] == 4 and s["deliver_get"] == 4
        assert "rate" in s["publish_details"]
    finally:
        conn.close()
    api.ok("DELETE", f"/api/queues/%2F/{q(name)}")


@pytest.mark.skipif(shutil.which("rabbitmqadmin") is None,
                    reason="rabbitmqadmin not installed (it ships in Debian's rabbitmq-server "
                           "package: apt-get install rabbitmq-server)")
def test_rabbitmqadmin_round_trip(api, uniq):
    name = uniq("adm")
    admin = rabbitmqadmin(api)

    admin("declare", "queue", f"name={name}", "durable=true")
    assert name in [x["name"] for x in json.loads(admin("list", "queues"))]
    admin("publish", "exchange=amq.default", f"routing_key={name}", "payload=hello-admin")
    got = json.loads(admin("get", f"queue={name}", "ackmode=ack_requeue_false"))
    assert [m["payload"] for m in got] == ["hello-admin"]
    assert json.loads(admin("show", "overview"))[0]["rabbitmq_version"]
    assert any(x["name"] == "amq.topic" for x in json.loads(admin("list", "exchanges")))
    admin("delete", "queue", f"name={name}")
    assert name not in [x["name"] for x in json.loads(admin("list", "queues"))]


def test_prometheus_metrics_parse_and_count(api, uniq):
    if api.broker.kind != "ferry":
        pytest.skip("Ferry's own metric names (docs/metrics.md); RabbitMQ's plugin is not enabled")
    from prometheus_client.parser import text_string_to_metric_families

    url = f"http://{api.broker.endpoints['metrics']}/metrics"
    name = uniq("q")
    conn = pika.BlockingConnection(api.broker.params())
    try:
        ch = conn.channel()
        ch.queue_declare(name, durable=True)
        ch.confirm_delivery()
        for _ in range(3):
            ch.basic_publish("", name, b"12345", pika.BasicProperties(delivery_mode=2))
        with urllib.request.urlopen(url, timeout=10) as r:
            assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
            text = r.read().decode()
    finally:
        conn.close()
    fams = {f.name: f for f in text_string_to_metric_families(text)}

    def value(sample, family=None, **labels):
        for s in fams[family or sample].samples:
            if s.name == sample or (family is None and s.name.startswith(sample)):
                if all(s.labels.get(k) == v for k, v in labels.items()):
                    return s.value
        raise AssertionError(f"{sample} {labels} missing")

    assert value("ferry_queue_messages_ready", vhost="/", queue=name) == 3
    assert value("ferry_queue_messages_published", vhost="/", queue=name) == 3
    assert value("ferry_queue_messages_ready_bytes", vhost="/", queue=name) > 15
    assert fams["ferry_fsync_duration_seconds"].type == "histogram"
    assert value("ferry_fsync_duration_seconds_count", "ferry_fsync_duration_seconds") >= 1
    assert value("ferry_fsync_duration_seconds_bucket", "ferry_fsync_duration_seconds",
                 le="+Inf") >= 1
    assert fams["ferry_durability_rounds"].type == "counter"
    assert value("ferry_durability_rounds_total", "ferry_durability_rounds") >= 1
    assert fams["ferry_durability_round_logs"].type == "histogram"
    assert value("ferry_durability_round_logs_count", "ferry_durability_round_logs") >= 1
    assert value("ferry_durability_round_duration_seconds_count",
                 "ferry_durability_round_duration_seconds") >= 1
    assert value("ferry_connections") >= 1
    assert value("ferry_alarms_memory_used_watermark") == 0
    assert value("ferry_process_resident_memory_bytes") > 0


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")
def test_management_api_over_https(broker_factory, tmp_path_factory):
    """http_tls: the API on TLS with the broker's certificate (Ferry's setting)."""
    import ssl

    d = tmp_path_factory.mktemp("http-pki")

    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=ferry-http-ca", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    (d / "server.ext").write_text("basicConstraints=CA:FALSE\n"
                                  "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                                  "extendedKeyUsage=serverAuth\n")
    openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "server.ext")
    b = broker_factory.start(broker_factory.make("ferry", "https", env={
        "FERRY_TLS_CERT": str(d / "server.pem"), "FERRY_TLS_KEY": str(d / "server.key"),
        "FERRY_AMQPS_LISTEN": "127.0.0.1:0", "FERRY_HTTP_TLS": "true"}))
    try:
        url = f"https://{b.endpoints['http']}/api/whoami"
        req = urllib.request.Request(url)
        req.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
        ctx = ssl.create_default_context(cafile=str(d / "ca.pem"))
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            assert json.loads(r.read())["name"] == "guest"
        # Unverifiable without the CA; plain HTTP gets no HTTP answer.
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(req, context=ssl.create_default_context(), timeout=10)
        with pytest.raises((urllib.error.URLError, ConnectionError, http.client.HTTPException)):
            urllib.request.urlopen(f"http://{b.endpoints['http']}/api/whoami", timeout=10)
    finally:
        b.close()


def test_stream_queue_is_listed_exported_and_refuses_get_and_purge(api, uniq):
    name = uniq("stream")
    path = f"/api/queues/%2F/{q(name)}"
    decl = {"durable": True, "arguments": {"x-queue-type": "stream"}}
    assert api.call("PUT", path, decl)[0] == 201
    conn = pika.BlockingConnection(api.broker.params())
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        for _ in range(3):
            ch.basic_publish("", name, b"x")
    finally:
        conn.close()
    info = eventually(lambda: (lambda i: i if i.get("messages") == 3 else None)(api.ok("GET", path)))
    assert (info["type"], info["messages_ready"], info["messages_unacknowledged"]) == ("stream", 3, 0)
    assert info["arguments"] == {"x-queue-type": "stream"}
    assert info["consumers"] == 0
    assert [x["type"] for x in api.ok("GET", "/api/queues/%2F") if x["name"] == name] == ["stream"]
    st, err = api.call("POST", f"{path}/get",
                       {"count": 1, "ackmode": "ack_requeue_true", "encoding": "auto"})
    assert st == 400
    assert err["reason"] == (f"540 basic.get not supported by stream queues queue '{name}' "
                             "in vhost '/'")
    st, err = api.call("DELETE", f"{path}/contents")
    assert st == 400
    assert err["reason"] == f"queue.purge not supported by stream queues queue '{name}' in vhost '/'"
    exported = [x for x in api.ok("GET", "/api/definitions")["queues"] if x["name"] == name]
    assert exported == [{"name": name, "vhost": "/", "durable": True, "auto_delete": False,
                         "arguments": {"x-queue-type": "stream"}}]
    assert api.call("DELETE", path)[0] == 204
    assert api.call("GET", path)[0] == 404
    # Imported back: a stream again.
    assert api.call("POST", "/api/definitions", {"queues": exported})[0] in (201, 204)
    assert api.ok("GET", path)["type"] == "stream"
    assert api.call("DELETE", path)[0] == 204


def test_deleting_a_user_closes_its_connections(api, uniq):
    user = uniq("doomed")
    assert api.call("PUT", f"/api/users/{user}", {"password": "pw", "tags": ""})[0] == 201
    perm = {"configure": ".*", "write": ".*", "read": ".*"}
    assert api.call("PUT", f"/api/permissions/%2F/{user}", perm)[0] == 201
    conn = pika.BlockingConnection(
        api.broker.params(credentials=pika.PlainCredentials(user, "pw")))
    conn.channel()
    assert api.call("DELETE", f"/api/users/{user}")[0] == 204
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            conn.process_data_events(time_limit=0.5)
    assert (e.value.reply_code, e.value.reply_text) == (
        320, f"CONNECTION_FORCED - user '{user}' is deleted")
