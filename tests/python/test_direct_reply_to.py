"""Direct reply-to (`amq.rabbitmq.reply-to`): RPC without a reply queue, as RabbitMQ 3.10 does it,
with its errors when used wrongly and its quirks (mandatory replies always come back as
NO_ROUTE, replies carry the channel's next delivery tag without taking it, a reply published in
a transaction is delivered at once). Also the capabilities table both brokers advertise."""

from __future__ import annotations

import pika
import pika.exceptions as px
import pytest
from pika import spec

from harness.expect import channel_closed, wait_for
from harness.rawamqp import RawAMQP
from test_management_api import api  # noqa: F401  (the fixture)

RT = "amq.rabbitmq.reply-to"
V = "in vhost '/'"


class ReplyClient:
    """A channel with a reply consumer, collecting what reaches it."""

    def __init__(self, conn, tag: str = ""):
        self.conn = conn
        self.ch = conn.channel()
        self.got = []
        kw = {"consumer_tag": tag} if tag else {}
        self.tag = self.ch.basic_consume(
            RT, lambda _c, m, p, b: self.got.append((m, p, b)), auto_ack=True, **kw)

    def wait(self, n: int, what: str = "replies"):
        wait_for(self.conn, lambda: len(self.got) >= n, what=what)
        return self.got

    def settle(self):
        """A round trip on the reply channel: what was sent to it before has arrived."""
        self.ch.basic_qos(prefetch_count=0)


def request(client: ReplyClient, server_ch, server_q: str, body: bytes = b"req", **props):
    """Publishes a request asking for a direct reply; returns what the server sees."""
    client.ch.basic_publish("", server_q, body, pika.BasicProperties(reply_to=RT, **props))
    got = {}

    def arrived():
        m, p, b = server_ch.basic_get(server_q, auto_ack=True)
        if m is not None:
            got["msg"] = (m, p, b)
        return "msg" in got

    wait_for(server_ch.connection, arrived, what="the request")
    return got["msg"]


@pytest.fixture
def server(connect, uniq):
    ch = connect().channel()
    q = uniq("rpc")
    ch.queue_declare(q, exclusive=True)
    return ch, q


def test_rpc_round_trip_without_a_reply_queue(connect, server):
    sch, q = server
    client = ReplyClient(connect())
    replies = {}
    for i in range(10):
        _, props, body = request(client, sch, q, str(i).encode(), correlation_id=f"c{i}")
        assert props.reply_to.startswith(RT + ".") and len(props.reply_to) > len(RT) + 20
        assert props.correlation_id == f"c{i}"
        replies[props.reply_to] = True
        sch.basic_publish("", props.reply_to, body + b"!",
                          pika.BasicProperties(correlation_id=props.correlation_id))
    assert len(replies) == 1, "one name per reply consumer"
    got = client.wait(10)
    assert [(p.correlation_id, b) for _, p, b in got] == [(f"c{i}", f"{i}!".encode())
                                                           for i in range(10)]
    (name,) = replies
    for m, _, _ in got:
        assert (m.consumer_tag, m.exchange, m.routing_key, m.redelivered) == \
            (client.tag, "", name, False)
        # RabbitMQ hands the channel's next delivery tag to a reply without taking it.
        assert m.delivery_tag == 1


def test_each_reply_consumer_has_its_own_name(connect, server):
    sch, q = server
    a, b = ReplyClient(connect()), ReplyClient(connect())
    c = ReplyClient(a.conn)                                   # another channel, same connection
    names = [request(x, sch, q)[1].reply_to for x in (a, b, c)]
    assert len(set(names)) == 3
    for name, body in zip(names, (b"a", b"b", b"c")):
        sch.basic_publish("", name, body)
    for x, body in zip((a, b, c), (b"a", b"b", b"c")):
        assert [m for _, _, m in x.wait(1)] == [body]
    for x in (a, b, c):
        x.settle()
        assert len(x.got) == 1


def test_reply_consumer_cannot_acknowledge(ch):
    with channel_closed(406, "PRECONDITION_FAILED - reply consumer cannot acknowledge"):
        ch.basic_consume(RT, lambda *a: None, auto_ack=False)


def test_request_without_reply_consumer_is_406(connect, server):
    sch, q = server
    c = connect()
    ch = c.channel()
    with channel_closed(406, "PRECONDITION_FAILED - fast reply consumer does not exist"):
        ch.basic_publish("", q, b"x", pika.BasicProperties(reply_to=RT))
        ch.basic_qos(prefetch_count=0)
    # The reply consumer belongs to one channel: another channel of the connection has none.
    ReplyClient(c)
    other = c.channel()
    with channel_closed(406, "PRECONDITION_FAILED - fast reply consumer does not exist"):
        other.basic_publish("", q, b"x", pika.BasicProperties(reply_to=RT))
        other.basic_qos(prefetch_count=0)


def test_a_missing_exchange_is_reported_before_the_missing_reply_consumer(ch):
    with channel_closed(404, f"NOT_FOUND - no exchange 'no-such-exchange' {V}"):
        ch.basic_publish("no-such-exchange", "k", b"x", pika.BasicProperties(reply_to=RT))
        ch.basic_qos(prefetch_count=0)


def test_second_reply_consumer_is_406(ch):
    ch.basic_consume(RT, lambda *a: None, auto_ack=True)
    with channel_closed(406, "PRECONDITION_FAILED - reply consumer already set"):
        ch.basic_consume(RT, lambda *a: None, auto_ack=True)


def test_reply_consumer_with_a_used_consumer_tag_is_530(broker, uniq):
    q = uniq()
    with RawAMQP(broker.host, broker.port) as r:
        r.open_with_queue(q)
        r.send_method(1, spec.Basic.Consume(queue=q, consumer_tag="t1"))
        r.expect(spec.Basic.ConsumeOk)
        r.send_method(1, spec.Basic.Consume(queue=RT, consumer_tag="t1", no_ack=True))
        close = r.expect(spec.Connection.Close).method
        assert (close.reply_code, close.reply_text, close.class_id, close.method_id) == \
            (530, "NOT_ALLOWED - attempt to reuse consumer tag 't1'", 60, 20)


def test_queue_consumer_may_take_the_reply_consumers_tag(broker, uniq):
    """RabbitMQ 3.10 checks a queue consumer's tag against its consumer mapping only, which
    has no reply consumer: the tag is accepted, and basic.cancel of it removes the reply
    consumer first, the queue consumer on a second cancel."""
    q = uniq()
    with RawAMQP(broker.host, broker.port) as r:
        r.handshake()
        r.open_channel(1)
        r.send_method(1, spec.Basic.Consume(queue=RT, consumer_tag="t1", no_ack=True))
        r.expect(spec.Basic.ConsumeOk)
        r.send_method(1, spec.Queue.Declare(queue=q, exclusive=True))
        r.expect(spec.Queue.DeclareOk)
        r.send_method(1, spec.Basic.Consume(queue=q, consumer_tag="t1", no_ack=True))
        assert r.expect(spec.Basic.ConsumeOk).method.consumer_tag == "t1"
        r.send_method(1, spec.Basic.Cancel(consumer_tag="t1"))
        r.expect(spec.Basic.CancelOk)
        # The reply consumer went first: a new one may be set; the queue consumer still gets.
        r.send_method(1, spec.Basic.Consume(queue=RT, consumer_tag="t2", no_ack=True))
        r.expect(spec.Basic.ConsumeOk)
        r.send_method(1, spec.Basic.Cancel(consumer_tag="t1"))
        r.expect(spec.Basic.CancelOk)
        # Both gone now: a third cancel of t1 is a no-op answered with cancel-ok.
        r.send_method(1, spec.Basic.Cancel(consumer_tag="t1"))
        r.expect(spec.Basic.CancelOk)
        r.send_method(1, spec.Queue.Declare(queue=q, passive=True))
        assert r.expect(spec.Queue.DeclareOk).method.consumer_count == 0


def test_reply_consumer_nowait_and_cancel(broker, uniq):
    q = uniq()
    with RawAMQP(broker.host, broker.port) as r:
        r.handshake()
        r.open_channel(1)
        r.send_method(1, spec.Basic.Consume(queue=RT, consumer_tag="rc", no_ack=True, nowait=True))
        r.send_method(1, spec.Queue.Declare(queue=q, exclusive=True))
        r.expect(spec.Queue.DeclareOk)
        r.send_method(1, spec.Basic.Cancel(consumer_tag="rc"))
        assert r.expect(spec.Basic.CancelOk).method.consumer_tag == "rc"
        # Cancelled: a new reply consumer may be set, with the default server-named tag.
        r.send_method(1, spec.Basic.Consume(queue=RT, no_ack=True))
        assert r.expect(spec.Basic.ConsumeOk).method.consumer_tag.startswith("amq.ctag-")


def test_declaring_the_pseudo_queue(connect, server):
    sch, q = server
    ch = connect().channel()
    for kw in ({"passive": True}, {}, {"durable": True}, {"exclusive": True}):
        ok = ch.queue_declare(RT, **kw).method
        assert (ok.queue, ok.message_count, ok.consumer_count) == (RT, 0, 1), kw
    client = ReplyClient(connect())
    name = request(client, sch, q)[1].reply_to
    for kw in ({"passive": True}, {}):
        ok = ch.queue_declare(name, **kw).method
        assert (ok.queue, ok.message_count, ok.consumer_count) == (name, 0, 1), kw
    client.ch.basic_cancel(client.tag)
    with channel_closed(404, f"NOT_FOUND - no queue '{name}' {V}"):
        ch.queue_declare(name, passive=True)


@pytest.mark.parametrize("name", [RT + ".abc", RT + ".", "amq.rabbitmq.reply-tox"])
@pytest.mark.parametrize("passive", [True, False])
def test_declaring_an_unknown_reply_name_is_404(ch, name, passive):
    # Not 403 for the reserved amq. prefix: RabbitMQ answers for the whole name space.
    with channel_closed(404, f"NOT_FOUND - no queue '{name}' {V}"):
        ch.queue_declare(name, passive=passive)


@pytest.mark.parametrize("op", ["get", "bind", "purge"])
def test_the_pseudo_queue_is_not_a_queue(ch, op):
    ch.basic_consume(RT, lambda *a: None, auto_ack=True)
    with channel_closed(404, f"NOT_FOUND - no queue '{RT}' {V}"):
        if op == "get":
            ch.basic_get(RT)
        elif op == "bind":
            ch.queue_bind(RT, "amq.direct", "k")
        else:
            ch.queue_purge(RT)


def test_deleting_the_pseudo_queue_is_a_no_op(ch):
    assert ch.queue_delete(RT).method.message_count == 0


def test_a_mandatory_reply_comes_back_as_no_route_though_delivered(connect, server):
    sch, q = server
    client = ReplyClient(connect())
    name = request(client, sch, q)[1].reply_to
    sch.confirm_delivery()
    with pytest.raises(px.UnroutableError) as ei:
        sch.basic_publish("", name, b"reply", mandatory=True)
    (ret,) = ei.value.messages
    assert (ret.method.reply_code, ret.method.reply_text, ret.method.routing_key) == \
        (312, "NO_ROUTE", name)
    assert [b for _, _, b in client.wait(1)] == [b"reply"]
    sch.basic_publish("", name, b"confirmed")                 # not mandatory: acked
    assert [b for _, _, b in client.wait(2)] == [b"reply", b"confirmed"]


@pytest.mark.parametrize("gone", ["cancelled", "channel closed", "connection closed"])
def test_reply_to_a_consumer_that_is_gone_is_dropped(connect, server, gone):
    sch, q = server
    client = ReplyClient(connect())
    name = request(client, sch, q)[1].reply_to
    if gone == "cancelled":
        client.ch.basic_cancel(client.tag)
    elif gone == "channel closed":
        client.ch.close()
    else:
        client.conn.close()
    sch.confirm_delivery()
    with pytest.raises(px.UnroutableError):
        sch.basic_publish("", name, b"late", mandatory=True)
    sch.basic_publish("", name, b"late")                      # acked, dropped
    if gone == "cancelled":
        client.settle()
        assert client.got == []
        with channel_closed(406, "PRECONDITION_FAILED - fast reply consumer does not exist"):
            client.ch.basic_publish("", q, b"x", pika.BasicProperties(reply_to=RT))
            client.ch.basic_qos(prefetch_count=0)
    with channel_closed(404, f"NOT_FOUND - no queue '{name}' {V}"):
        sch.queue_declare(name, passive=True)


@pytest.mark.parametrize("suffix", [".bogus", "", ".AAAA.BBBB"])
def test_reply_to_a_made_up_name_is_unroutable(broker, connect, suffix):
    if suffix == ".AAAA.BBBB" and broker.kind == "rabbitmq":
        pytest.skip("RabbitMQ 3.10 fails to decode it as an Erlang term and closes the "
                    "connection with 541 INTERNAL_ERROR; Ferry treats it as any unknown name")
    ReplyClient(connect())                        # someone has a reply consumer; not this name
    ch = connect().channel()
    ch.confirm_delivery()
    with pytest.raises(px.UnroutableError):
        ch.basic_publish("", RT + suffix, b"x", mandatory=True)
    ch.basic_publish("", RT + suffix, b"x")


def test_a_reply_in_a_transaction_is_delivered_at_once(connect, server):
    """RabbitMQ routes at basic.publish: the reply goes out before the commit and a rollback
    cannot take it back."""
    sch, q = server
    client = ReplyClient(connect())
    name = request(client, sch, q)[1].reply_to
    tx = sch.connection.channel()
    tx.tx_select()
    tx.basic_publish("", name, b"in-tx")
    assert [b for _, _, b in client.wait(1)] == [b"in-tx"]
    tx.tx_rollback()
    client.settle()
    assert len(client.got) == 1


def test_replies_share_the_channel_delivery_tags(connect, server, uniq):
    """A reply carries the tag the channel's next delivery will get: queue deliveries on the
    same channel are numbered as if the replies were not there."""
    sch, q = server
    client = ReplyClient(connect())
    name = request(client, sch, q)[1].reply_to
    own = uniq("own")
    client.ch.queue_declare(own, exclusive=True)
    client.ch.basic_consume(own, lambda _c, m, p, b: client.got.append((m, p, b)))
    sch.basic_publish("", name, b"r1")
    client.wait(1)
    sch.basic_publish("", own, b"q1")
    client.wait(2)
    sch.basic_publish("", name, b"r2")
    got = client.wait(3)
    assert [(b, m.delivery_tag) for m, _, b in got] == [(b"r1", 1), (b"q1", 1), (b"r2", 2)]


def test_cc_and_bcc_reach_reply_consumers_and_queues(connect, server, uniq):
    sch, q = server
    client = ReplyClient(connect())
    name = request(client, sch, q)[1].reply_to
    other = uniq("copy")
    sch.queue_declare(other, exclusive=True)
    sch.confirm_delivery()
    # Routed to a queue through BCC: not returned; the reply consumer gets it once.
    sch.basic_publish("", name, b"r", pika.BasicProperties(headers={"BCC": [other, name]}),
                      mandatory=True)
    sch.basic_publish("", other, b"cc", pika.BasicProperties(headers={"CC": [name]}))
    got = client.wait(2)
    assert [(b, p.headers) for _, p, b in got] == [(b"r", {}), (b"cc", {"CC": [name]})]
    assert [b for b in (sch.basic_get(other, auto_ack=True)[2] for _ in range(2))] == \
        [b"r", b"cc"]


# -- capabilities ---------------------------------------------------------------------------------

RABBITMQ_310_CAPABILITIES = {
    "publisher_confirms": True,
    "exchange_exchange_bindings": True,
    "basic.nack": True,
    "consumer_cancel_notify": True,
    "connection.blocked": True,
    "consumer_priorities": True,
    "authentication_failure_close": True,
    "per_consumer_qos": True,
    "direct_reply_to": True,
}


def test_capabilities_table_is_rabbitmq_310s(conn):
    assert conn._impl.server_properties["capabilities"] == RABBITMQ_310_CAPABILITIES


def test_http_publish_reaches_a_reply_consumer(api, uniq):
    """The management API's publish to the default exchange with a reply name as routing key (or
    in CC) hands the message to the reply consumer, as RabbitMQ's default-exchange routing does
    for every publisher; it counts as unroutable there too (`routed: false`)."""
    conns = [pika.BlockingConnection(api.broker.params()) for _ in range(2)]
    try:
        sch = conns[0].channel()
        sq = uniq("rpc")
        sch.queue_declare(sq, exclusive=True)
        client = ReplyClient(conns[1])
        _, props, _ = request(client, sch, sq)
        name = props.reply_to
        publish = "/api/exchanges/%2F/amq.default/publish"
        body = {"properties": {"correlation_id": "h1"}, "routing_key": name,
                "payload": "via-http", "payload_encoding": "string"}
        assert api.ok("POST", publish, body) == {"routed": False}
        (m, p, b), = client.wait(1)
        assert (b, p.correlation_id, m.routing_key, m.exchange) == (b"via-http", "h1", name, "")
        # A CC key naming the consumer reaches it as well; the queue the key names counts.
        body = {"properties": {"headers": {"CC": [name]}}, "routing_key": sq,
                "payload": "cc", "payload_encoding": "string"}
        assert api.ok("POST", publish, body) == {"routed": True}
        got = client.wait(2)
        assert got[1][2] == b"cc" and got[1][0].routing_key == sq
        # A name nobody holds any more (the consumer cancelled) reaches nothing.
        client.ch.basic_cancel(client.tag)
        body = {"properties": {}, "routing_key": name, "payload": "late",
                "payload_encoding": "string"}
        assert api.ok("POST", publish, body) == {"routed": False}
        client.settle()
        assert len(client.got) == 2
    finally:
        for c in conns:
            c.close()


def test_thousands_of_cc_keys_give_one_copy_per_queue_and_reply_consumer(connect, server, uniq):
    """~5000 CC keys (most naming nothing, the others repeated many times) in a header under
    frame_max: each queue and the reply consumer get the message once."""
    sch, q = server
    client = ReplyClient(connect())
    name = request(client, sch, q)[1].reply_to
    others = [uniq("many") for _ in range(3)]
    for o in others:
        sch.queue_declare(o, exclusive=True)
    sch.confirm_delivery()
    cc = [f"n{i}" for i in range(4000)] + (others + [name, q]) * 150
    sch.basic_publish("", q, b"fan", pika.BasicProperties(headers={"CC": cc}))
    assert [b for _, _, b in client.wait(1)] == [b"fan"]
    for queue in [q] + others:
        assert [b for b in (sch.basic_get(queue, auto_ack=True)[2] for _ in range(2))] == \
            [b"fan", None], queue
    client.settle()
    assert len(client.got) == 1
