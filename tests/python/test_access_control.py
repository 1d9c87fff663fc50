"""Users, vhosts and permissions (RabbitMQ's access control), on Ferry and the oracle.

Each broker kind gets a private broker that loads the same RabbitMQ definitions JSON at boot
(``load_definitions``: FERRY_LOAD_DEFINITIONS for Ferry, ``load_definitions`` in rabbitmq.conf for
RabbitMQ). Password hashes are made here in RabbitMQ's ``rabbit_password_hashing_sha256`` format,
so the same file proves hashes import on both.

``bob`` has ``foo`` / ``foo`` / ``foo`` on ``/`` (unanchored, as RabbitMQ's ``re:run``: ``xfoox``
matches) and nothing on ``v2``. The reply texts were checked against RabbitMQ 3.10.8 by hand as
well as by these tests under FERRY_ORACLE=1.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re

import pika
import pytest

from conftest import close_quietly


def rabbit_hash(password: str, salt: bytes | None = None) -> str:
    """RabbitMQ's rabbit_password_hashing_sha256: base64(salt[4] + sha256(salt + password))."""
    salt = salt if salt is not None else os.urandom(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def definitions() -> dict:
    user = lambda name, pw, tags: {"name": name, "password_hash": rabbit_hash(pw),
                                   "hashing_algorithm": "rabbit_password_hashing_sha256",
                                   "tags": tags}
    perm = lambda u, v, c, w, r: {"user": u, "vhost": v, "configure": c, "write": w, "read": r}
    return {
        "users": [user("guest", "guest", ["administrator"]), user("bob", "bobpw", []),
                  user("ann", "annpw", ["management"]), user("imp", "imppw", ["impersonator"])],
        "vhosts": [{"name": "/"}, {"name": "v2"}],
        "permissions": [perm("guest", "/", ".*", ".*", ".*"), perm("guest", "v2", ".*", ".*", ".*"),
                        perm("bob", "/", "foo", "foo", "foo"),
                        perm("ann", "v2", "^ann\\.", "^ann\\.", "^ann\\."),
                        perm("imp", "/", ".*", ".*", ".*")],
        "queues": [], "exchanges": [], "bindings": [],
    }


@pytest.fixture(scope="module")
def secured(broker_kind, broker_factory, tmp_path_factory):
    """A private broker of this kind with the users above."""
    path = tmp_path_factory.mktemp("defs") / "definitions.json"
    path.write_text(json.dumps(definitions()))
    if broker_kind == "ferry":
        b = broker_factory.make("ferry", "secured", env={"FERRY_LOAD_DEFINITIONS": str(path)})
    else:
        b = broker_factory.make("rabbitmq", "secured")
        b.data_dir.mkdir(parents=True, exist_ok=True)
        (b.data_dir / "rabbitmq.conf").write_text(f"load_definitions = {path}\n")
    broker_factory.start(b)
    # Resources bob may not touch, made by guest.
    c = pika.BlockingConnection(b.params())
    ch = c.channel()
    ch.queue_declare("bar")
    ch.queue_declare("foo")
    ch.exchange_declare("xbar", "direct")
    ch.exchange_declare("xfoo", "direct")
    c.close()
    yield b
    b.close()


@pytest.fixture
def as_bob(secured):
    conns = []

    def open_(user="bob", password="bobpw", vhost="/"):
        c = pika.BlockingConnection(secured.params(
            credentials=pika.PlainCredentials(user, password), virtual_host=vhost))
        conns.append(c)
        return c

    yield open_
    for c in conns:
        close_quietly(c)


def refused_open(secured, user, password, vhost) -> tuple[int, str]:
    with pytest.raises(pika.exceptions.AMQPConnectionError) as e:
        pika.BlockingConnection(secured.params(
            credentials=pika.PlainCredentials(user, password), virtual_host=vhost))
    m = re.search(r"\((\d+)\) ['\"](.*)['\"]$", str(e.value.args[0]))
    assert m, e.value
    return int(m.group(1)), m.group(2)


def refused(conn, op) -> tuple[int, str]:
    """Runs op(channel) on a fresh channel; returns the channel.close it got."""
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        op(ch)
    assert conn.is_open, "an access refusal closes only the channel"
    return e.value.reply_code, e.value.reply_text


def denied(kind: str, name: str, vhost: str = "/", user: str = "bob") -> tuple[int, str]:
    return 403, f"ACCESS_REFUSED - access to {kind} '{name}' in vhost '{vhost}' refused for user '{user}'"


def test_open_of_a_vhost_without_permissions_is_not_allowed(secured):
    assert refused_open(secured, "bob", "bobpw", "v2") == (
        530, "NOT_ALLOWED - access to vhost 'v2' refused for user 'bob'")


def test_open_of_a_missing_vhost_is_not_allowed(secured):
    assert refused_open(secured, "bob", "bobpw", "nosuch") == (530, "NOT_ALLOWED - vhost nosuch not found")


def test_hashes_from_definitions_log_in_and_check_the_password(secured, as_bob):
    assert as_bob().is_open
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        pika.BlockingConnection(secured.params(credentials=pika.PlainCredentials("bob", "wrong")))


def test_queue_declare_needs_configure_matched_unanchored(as_bob, uniq):
    c = as_bob()
    ch = c.channel()
    name = "x" + uniq("foo")  # contains "foo" somewhere: RabbitMQ's re:run is unanchored
    assert ch.queue_declare(name, auto_delete=True).method.queue == name
    assert refused(c, lambda ch: ch.queue_declare("bar")) == denied("queue", "bar")
    # passive declare needs no permission
    assert c.channel().queue_declare("bar", passive=True).method.queue == "bar"


def test_server_named_queue_is_checked_under_its_generated_name(as_bob):
    code, text = refused(as_bob(), lambda ch: ch.queue_declare(""))
    assert code == 403
    assert re.fullmatch(r"ACCESS_REFUSED - access to queue 'amq\.gen-[\w-]+' in vhost '/' "
                        r"refused for user 'bob'", text), text


def test_delete_and_purge_are_checked_before_existence(as_bob):
    c = as_bob()
    assert refused(c, lambda ch: ch.queue_delete("bar")) == denied("queue", "bar")
    assert refused(c, lambda ch: ch.queue_delete("nosuch.q")) == denied("queue", "nosuch.q")
    assert refused(c, lambda ch: ch.queue_purge("bar")) == denied("queue", "bar")
    assert refused(c, lambda ch: ch.exchange_delete("xbar")) == denied("exchange", "xbar")


def test_exchange_declare_needs_configure_but_passive_does_not(as_bob):
    c = as_bob()
    assert refused(c, lambda ch: ch.exchange_declare("xbar2", "direct")) == denied("exchange", "xbar2")
    c.channel().exchange_declare("xbar", "direct", passive=True)


def test_bindings_need_write_on_the_destination_then_read_on_the_source(as_bob):
    c = as_bob()
    # queue.bind: the queue (write) is checked first, then the exchange (read)
    assert refused(c, lambda ch: ch.queue_bind("bar", "xbar", "k")) == denied("queue", "bar")
    assert refused(c, lambda ch: ch.queue_bind("foo", "xbar", "k")) == denied("exchange", "xbar")
    assert refused(c, lambda ch: ch.queue_unbind("foo", "xbar", "k")) == denied("exchange", "xbar")
    assert refused(c, lambda ch: ch.queue_bind("bar", "nosuch.x", "k")) == denied("queue", "bar")
    # exchange.bind(destination, source)
    assert refused(c, lambda ch: ch.exchange_bind("xbar", "xfoo", "k")) == denied("exchange", "xbar")
    assert refused(c, lambda ch: ch.exchange_bind("xfoo", "xbar", "k")) == denied("exchange", "xbar")
    c.channel().queue_bind("foo", "xfoo", "k")


def test_publish_needs_write_on_the_exchange(as_bob):
    c = as_bob()

    def publish(x):
        def op(ch):
            ch.confirm_delivery()
            ch.basic_publish(x, "k", b"m")
        return op

    assert refused(c, publish("")) == denied("exchange", "amq.default")
    assert refused(c, publish("xbar")) == denied("exchange", "xbar")
    # checked before the exchange is looked up: 403, not 404
    assert refused(c, publish("nosuch.x")) == denied("exchange", "nosuch.x")
    publish("xfoo")(c.channel())


def test_get_and_consume_need_read_on_the_queue(as_bob, uniq):
    c = as_bob()
    assert refused(c, lambda ch: ch.basic_get("bar")) == denied("queue", "bar")
    assert refused(c, lambda ch: ch.basic_consume("bar", lambda *a: None)) == denied("queue", "bar")
    ch = c.channel()
    q = uniq("foo")
    ch.queue_declare(q, auto_delete=True)
    assert ch.basic_get(q) == (None, None, None)
    ch.basic_consume(q, lambda *a: None)


def test_dead_letter_and_alternate_exchanges_need_write_on_them(as_bob, uniq):
    c = as_bob()
    q = uniq("foo")
    assert refused(c, lambda ch: ch.queue_declare(
        q, auto_delete=True, arguments={"x-dead-letter-exchange": "xbar"})) == denied("exchange", "xbar")
    assert refused(c, lambda ch: ch.queue_declare(
        q, auto_delete=True, arguments={"x-dead-letter-exchange": ""})) == denied("exchange", "amq.default")
    # configure on the queue comes first
    assert refused(c, lambda ch: ch.queue_declare(
        "bar2", arguments={"x-dead-letter-exchange": "xbar"})) == denied("queue", "bar2")
    x = uniq("xfoo")
    assert refused(c, lambda ch: ch.exchange_declare(
        x, "direct", auto_delete=True, arguments={"alternate-exchange": "xbar"})) == denied("exchange", "xbar")


def test_a_user_works_inside_its_permissions(as_bob, uniq):
    """ann: ^ann\\. on v2 only; publish, consume and ack inside it."""
    c = as_bob("ann", "annpw", "v2")
    ch = c.channel()
    q = "ann." + uniq("q")
    ch.queue_declare(q, auto_delete=True)
    ch.confirm_delivery()
    # the default exchange is amq.default: outside ^ann\.
    def publish_default(ch2):
        ch2.confirm_delivery()
        ch2.basic_publish("", q, b"m")

    assert refused(c, publish_default) == denied(
        "exchange", "amq.default", "v2", "ann")
    x = "ann." + uniq("x")
    ch.exchange_declare(x, "fanout", auto_delete=True)
    ch.queue_bind(q, x)
    ch.basic_publish(x, "", b"hello")
    method, _, body = ch.basic_get(q)
    assert body == b"hello"
    ch.basic_ack(method.delivery_tag)


# -- user_id and the impersonator tag ---------------------------------------------------------

def test_user_id_must_name_the_login_unless_the_user_is_an_impersonator(as_bob, uniq):
    """RabbitMQ's check_user_id_header: a user_id naming another user is 406 on the channel; a
    user with the impersonator tag may publish with any user_id, which is delivered as sent."""
    c = as_bob()
    ch = c.channel()
    ch.confirm_delivery()
    ch.basic_publish("xfoo", "k", b"own", pika.BasicProperties(user_id="bob"))

    def publish_as_ann(ch2):
        ch2.confirm_delivery()
        ch2.basic_publish("xfoo", "k", b"other", pika.BasicProperties(user_id="ann"))

    assert refused(c, publish_as_ann) == (
        406, "PRECONDITION_FAILED - user_id property set to 'ann' but authenticated user was 'bob'")
    imp = as_bob("imp", "imppw")
    ch = imp.channel()
    q = uniq("imp")
    ch.queue_declare(q, auto_delete=True)
    ch.confirm_delivery()
    for uid in ("imp", "bob", "nobody-at-all"):
        ch.basic_publish("", q, uid.encode(), pika.BasicProperties(user_id=uid))
    got = []
    for _ in range(3):
        m, props, body = ch.basic_get(q, auto_ack=True)
        got.append((props.user_id, body))
    assert got == [("imp", b"imp"), ("bob", b"bob"), ("nobody-at-all", b"nobody-at-all")]
    assert ch.is_open


# -- Ferry only: settings of its own (RabbitMQ has the same rules, configured elsewhere) ---------

def login(b, user, password, vhost="/") -> pika.BlockingConnection:
    return pika.BlockingConnection(b.params(credentials=pika.PlainCredentials(user, password),
                                            virtual_host=vhost))


def test_default_user_replaces_guest_on_a_fresh_data_dir(broker_factory):
    """FERRY_DEFAULT_USER / FERRY_DEFAULT_PASS, as RabbitMQ's default_user / default_pass."""
    b = broker_factory.start(broker_factory.make(
        "ferry", "defaultuser", env={"FERRY_DEFAULT_USER": "admin", "FERRY_DEFAULT_PASS": "s3cret"}))
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        login(b, "guest", "guest")
    c = login(b, "admin", "s3cret")
    c.channel().queue_declare("", exclusive=True)   # all permissions on /
    c.close()
    b.close()


@pytest.mark.restart
def test_users_and_permissions_survive_a_restart(broker_factory, tmp_path):
    """Imported once, then kept in the data directory's access file."""
    path = tmp_path / "definitions.json"
    path.write_text(json.dumps(definitions()))
    b = broker_factory.start(broker_factory.make(
        "ferry", "persist", env={"FERRY_LOAD_DEFINITIONS": str(path)}))
    b.extra_env.pop("FERRY_LOAD_DEFINITIONS")
    b.restart()
    c = login(b, "ann", "annpw", "v2")
    ch = c.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare("not.ann")
    assert e.value.reply_code == 403
    c.close()
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        login(b, "bob", "bobpw", "v2")
    b.close()


def test_deleting_a_vhost_closes_its_connections(broker_factory):
    """Through the management API. RabbitMQ 3.10.8 (`rabbitmqctl delete_vhost v2`, checked by
    hand) closes them with 320 "CONNECTION_FORCED - vhost 'v2' is down"; connections on other
    vhosts stay."""
    import base64 as b64
    import urllib.request

    b = broker_factory.start(broker_factory.make("ferry", "vhostdel"))
    if "http" not in b.endpoints:
        pytest.skip("this Ferry build has no management API")
    auth = "Basic " + b64.b64encode(b"guest:guest").decode()

    def api(method, path, body=None):
        req = urllib.request.Request(f"http://{b.endpoints['http']}{path}", method=method,
                                     headers={"Authorization": auth,
                                              "content-type": "application/json"},
                                     data=json.dumps(body).encode() if body is not None else None)
        return urllib.request.urlopen(req, timeout=10).status

    assert api("PUT", "/api/vhosts/v2", {}) in (201, 204)
    assert api("PUT", "/api/permissions/v2/guest",
               {"configure": ".*", "write": ".*", "read": ".*"}) in (201, 204)
    doomed = login(b, "guest", "guest", "v2")
    doomed.channel().queue_declare("q.v2", durable=True)
    other = login(b, "guest", "guest", "/")
    assert api("DELETE", "/api/vhosts/v2") == 204
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
        for _ in range(100):
            doomed.process_data_events(time_limit=0.1)
    assert (e.value.reply_code, e.value.reply_text) == (320, "CONNECTION_FORCED - vhost 'v2' is down")
    assert other.is_open
    other.channel().queue_declare("", exclusive=True)
    other.close()
    assert refused_open(b, "guest", "guest", "v2") == (530, "NOT_ALLOWED - vhost v2 not found")
    b.close()


def test_changed_permissions_apply_to_open_channels(broker_factory):
    """Ferry re-reads a connection's permissions when they change, and forgets the exchange it
    last allowed a publisher to write to. (RabbitMQ 3.10 keeps positive answers in a
    per-channel cache, so there a revoked permission can keep working on an open channel.)"""
    import base64 as b64
    import urllib.request

    b = broker_factory.start(broker_factory.make("ferry", "permchange"))
    if "http" not in b.endpoints:
        pytest.skip("this Ferry build has no management API")
    auth = "Basic " + b64.b64encode(b"guest:guest").decode()

    def api(method, path, body):
        req = urllib.request.Request(f"http://{b.endpoints['http']}{path}", method=method,
                                     headers={"Authorization": auth,
                                              "content-type": "application/json"},
                                     data=json.dumps(body).encode())
        return urllib.request.urlopen(req, timeout=10).status

    assert api("PUT", "/api/users/carl", {"password": "carlpw", "tags": ""}) in (201, 204)
    perms = {"configure": "^carl\\.", "write": "^carl\\.", "read": "^carl\\."}
    assert api("PUT", "/api/permissions/%2F/carl", perms) in (201, 204)
    c = login(b, "carl", "carlpw")
    ch = c.channel()
    ch.confirm_delivery()
    ch.exchange_declare("carl.x", "fanout", auto_delete=True)
    for _ in range(3):   # the second and third use the remembered answer
        ch.basic_publish("carl.x", "", b"m")
    assert api("PUT", "/api/permissions/%2F/carl", dict(perms, write="^nothing$")) in (201, 204)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.basic_publish("carl.x", "", b"m")
    assert (e.value.reply_code, e.value.reply_text) == denied("exchange", "carl.x", "/", "carl")
    c.close()
    b.close()
