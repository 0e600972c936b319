"""pika (Debian python3-pika) against Bourse: declare, publish with
confirms, consume with manual ack, basic.get, RPC with direct reply-to."""
import os
import sys
import uuid

import pika

params = pika.ConnectionParameters(host=os.environ["AMQP_HOST"], port=int(os.environ["AMQP_PORT"]),
                                   credentials=pika.PlainCredentials("guest", "guest"))
conn = pika.BlockingConnection(params)
ch = conn.channel()
ch.confirm_delivery()
q = "interop-pika-" + uuid.uuid4().hex[:8]
ch.queue_declare(queue=q, durable=True)
for i in range(100):
    ch.basic_publish(exchange="", routing_key=q, body=f"msg-{i}".encode(),
                     properties=pika.BasicProperties(delivery_mode=2, message_id=str(i),
                                                     headers={"n": i, "tag": "pika"}),
                     mandatory=True)

got = []
for method, props, body in ch.consume(q, inactivity_timeout=5):
    if method is None:
        break
    got.append(body.decode())
    assert props.headers["n"] == int(props.message_id), props
    ch.basic_ack(method.delivery_tag)
    if len(got) == 100:
        break
ch.cancel()
assert got == [f"msg-{i}" for i in range(100)], got[:5]

# mandatory publish to nowhere is returned: pika raises UnroutableError
try:
    ch.basic_publish(exchange="amq.direct", routing_key="nobody-" + q, body=b"x", mandatory=True)
    print("unroutable mandatory message was not returned")
    sys.exit(1)
except pika.exceptions.UnroutableError:
    pass

# basic.get on an empty queue
method, _, _ = ch.basic_get(q)
assert method is None

# RPC through direct reply-to: a server thread-free loop on a second channel
srv = conn.channel()
srv.queue_declare(queue=q + "-rpc", exclusive=True)
cli = conn.channel()
replies = []
cli.basic_consume("amq.rabbitmq.reply-to", lambda c, m, p, b: replies.append(b), auto_ack=True)
cli.basic_publish("", q + "-rpc", b"ping", pika.BasicProperties(reply_to="amq.rabbitmq.reply-to", correlation_id="c1"))
for method, props, body in srv.consume(q + "-rpc", inactivity_timeout=5):
    assert method is not None, "rpc request not received"
    srv.basic_publish("", props.reply_to, b"pong:" + body, pika.BasicProperties(correlation_id=props.correlation_id))
    srv.basic_ack(method.delivery_tag)
    break
# pika holds other channels' callbacks while a consume() generator is open.
srv.cancel()
conn.process_data_events(time_limit=2)
assert replies == [b"pong:ping"], replies

ch.queue_delete(q)
conn.close()
print("ok")
