"""RPC (tutorial 6): request with reply_to + correlation_id, reply through the default exchange."""

from __future__ import annotations

import uuid

import pika

from harness.expect import wait_for


def fib(n: int) -> int:
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def test_rpc_reply_to_and_correlation_id(connect, uniq):
    rpc_queue = uniq("rpc")
    server = connect()
    sch = server.channel()
    sch.queue_declare(rpc_queue, auto_delete=True)
    sch.basic_qos(prefetch_count=1)

    def on_request(ch, method, props, body):
        n = int(body)
        ch.basic_publish("", props.reply_to, str(fib(n)).encode(),
                         pika.BasicProperties(correlation_id=props.correlation_id))
        ch.basic_ack(method.delivery_tag)

    sch.basic_consume(rpc_queue, on_request)

    client = connect()
    cch = client.channel()
    callback_queue = cch.queue_declare("", exclusive=True).method.queue
    responses = {}

    def on_response(ch, method, props, body):
        responses[props.correlation_id] = int(body)

    cch.basic_consume(callback_queue, on_response, auto_ack=True)

    wanted = {}
    for n in (0, 1, 10, 30):
        corr = str(uuid.uuid4())
        wanted[corr] = fib(n)
        cch.basic_publish("", rpc_queue, str(n).encode(),
                          pika.BasicProperties(reply_to=callback_queue, correlation_id=corr))

    def pump():
        server.process_data_events(0)
        client.process_data_events(0)
        return len(responses) == len(wanted)

    wait_for(client, pump, what="all RPC replies")
    assert responses == wanted
