"""Names and keys longer than an AMQP short string (issue 10, section 1).

Queue and stream records store a message's exchange and routing key with a one-byte length, so
Ferry refuses longer values where they enter (docs/queue-records.md, "Length limits"). Where
RabbitMQ 3.10 refuses too (a queue name over 255 bytes in the management API) both brokers must
give the same answer; where RabbitMQ accepts the value and breaks later, the test states each
broker's behaviour (a deliberate difference). The restart and crashed-queue scenarios are
Ferry-only and live in crates/ferry/tests/records.rs.
"""

from __future__ import annotations

import pika
import pika.exceptions as px
import pytest

from harness.expect import channel_closed, ensure_confirms, eventually, message_count
from test_management_api import api, q  # noqa: F401  (the module's api fixture)

LONG = "é" * 200                    # 400 bytes: cut at 255 it would end inside a character
LONGEST = "é" * 127 + "a"           # 255 bytes: the longest that fits


def test_http_queue_names_over_255_bytes_are_refused(api, uniq):  # noqa: F811
    status, body = api.call("PUT", f"/api/queues/%2F/{q(LONG)}", {"durable": True})
    assert (status, body) == (400, {"error": "bad_request",
                                    "reason": "queue should be less than 255 bytes, "
                                              "actually was 400\n"})
    status, body = api.call("PUT", f"/api/queues/%2F/{q('a' * 256)}", {"durable": False})
    assert status == 400
    assert body["reason"] == "queue should be less than 255 bytes, actually was 256\n"
    name = LONGEST
    assert api.call("PUT", f"/api/queues/%2F/{q(name)}", {"durable": False})[0] == 201
    assert api.call("DELETE", f"/api/queues/%2F/{q(name)}")[0] == 204


def test_a_dead_letter_routing_key_over_255_bytes(broker, connect, uniq):
    """RabbitMQ 3.10 accepts a 400-byte x-dead-letter-routing-key, dead-letters with it, and
    then fails every delivery of that message (541, the connection closes): the key does not
    fit basic.deliver / basic.get-ok. Ferry refuses it at the declaration (406), before it
    can reach a stored record (where truncating it once kept the node from starting)."""
    conn = connect()
    ch = conn.channel()
    fan, src, dead = uniq("fan"), uniq("src"), uniq("dead")
    ch.exchange_declare(fan, "fanout", auto_delete=True)
    ch.queue_declare(dead, exclusive=True)
    ch.queue_bind(dead, fan)
    args = {"x-dead-letter-exchange": fan, "x-dead-letter-routing-key": LONG}
    if broker.kind == "ferry":
        with channel_closed(406, f"PRECONDITION_FAILED - invalid arg 'x-dead-letter-routing-key' "
                                 f"for queue '{src}' in vhost '/': {{value_too_long,400}}"):
            ch.queue_declare(src, exclusive=True, arguments=args)
        ch = conn.channel()
        # The longest key that fits is dead-lettered and delivered intact.
        ch.queue_declare(src, exclusive=True, arguments={**args,
                                                          "x-dead-letter-routing-key": LONGEST})
    else:
        ch.queue_declare(src, exclusive=True, arguments=args)
    ensure_confirms(ch)
    ch.basic_publish("", src, b"m", pika.BasicProperties(delivery_mode=2))
    m, _, _ = ch.basic_get(src)
    ch.basic_reject(m.delivery_tag, requeue=False)
    assert eventually(lambda: message_count(ch, dead), 1) == 1
    if broker.kind == "ferry":
        m, _, body = ch.basic_get(dead, auto_ack=True)
        assert (m.routing_key, m.exchange, body) == (LONGEST, fan, b"m")
        conn.close()
    else:
        with pytest.raises(px.ConnectionClosedByBroker) as ei:
            ch.basic_get(dead, auto_ack=True)
        assert ei.value.reply_code == 541


def amqp_error(text: str) -> list:
    """How RabbitMQ's definitions import reports a queue argument its declaration refuses: the
    #amqp_error{} record as JSON, the text a list of its UTF-8 bytes."""
    return ["amqp_error", "precondition_failed", list(text.encode()), "none"]


def test_definitions_import_of_a_dead_letter_routing_key_over_255_bytes(api, uniq):  # noqa: F811
    """RabbitMQ 3.10 imports a queue whose x-dead-letter-routing-key is 400 bytes (204), as it
    accepts the declaration over AMQP (above). Ferry refuses it, the deliberate difference of
    docs/queue-records.md ("Length limits"), with the answer RabbitMQ's import gives a queue
    argument it refuses, which both brokers give for a key without a dead-letter exchange."""
    name = uniq("q")
    path = f"/api/queues/%2F/{q(name)}"
    where = f"for queue '{name}' in vhost '/'"

    def imported(args):
        return api.call("POST", "/api/definitions", {"queues": [
            {"name": name, "vhost": "/", "durable": True, "auto_delete": False,
             "arguments": args}]})

    assert imported({"x-dead-letter-routing-key": "k"}) == (400, {
        "error": "bad_request",
        "reason": amqp_error(f"invalid arg 'x-dead-letter-routing-key' {where}: "
                             "routing_key_but_no_dlx_defined")})
    assert api.call("GET", path)[0] == 404
    args = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": LONG}
    if api.broker.kind == "rabbitmq":
        assert imported(args)[0] == 204
        assert api.ok("GET", path)["arguments"] == args
        assert api.call("DELETE", path)[0] == 204
    else:
        assert imported(args) == (400, {
            "error": "bad_request",
            "reason": amqp_error(f"invalid arg 'x-dead-letter-routing-key' {where}: "
                                 "{value_too_long,400}")})
        assert api.call("GET", path)[0] == 404
    # The longest key that fits is imported by both.
    args["x-dead-letter-routing-key"] = LONGEST
    assert imported(args)[0] == 204
    assert api.ok("GET", path)["arguments"] == args
    assert api.call("DELETE", path)[0] == 204
