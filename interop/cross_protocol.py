"""Cross-protocol with three client libraries in one script: an MQTT publish
reaches an AMQP queue bound to amq.topic (pika) and a STOMP /topic
subscriber (stomp.py); an AMQP publish to amq.topic reaches MQTT."""
import os
import threading
import time
import uuid

import paho.mqtt.client as mqtt
import pika
import stomp

name = uuid.uuid4().hex[:8]
conn = pika.BlockingConnection(pika.ConnectionParameters(
    host=os.environ["AMQP_HOST"], port=int(os.environ["AMQP_PORT"])))
ch = conn.channel()
q = ch.queue_declare(queue="", exclusive=True).method.queue
ch.queue_bind(q, "amq.topic", routing_key=f"sensors.{name}.*")

stomp_got = threading.Event()


class L(stomp.ConnectionListener):
    def on_message(self, frame):
        if frame.body == "21.5":
            stomp_got.set()


s = stomp.Connection12([(os.environ["STOMP_HOST"], int(os.environ["STOMP_PORT"]))], heartbeats=(0, 0), vhost="/")
s.set_listener("", L())
s.connect("guest", "guest", wait=True, headers={"host": "/"})
s.subscribe(destination=f"/topic/sensors.{name}.temp", id="1")

kw = {"callback_api_version": mqtt.CallbackAPIVersion.VERSION2} if hasattr(mqtt, "CallbackAPIVersion") else {}
m = mqtt.Client(client_id="x-" + name, **kw)
m.username_pw_set("guest", "guest")
mqtt_got = threading.Event()
m.on_message = lambda c, u, msg: mqtt_got.set() if msg.payload == b"from-amqp" else None
m.connect(os.environ["MQTT_HOST"], int(os.environ["MQTT_PORT"]))
m.loop_start()
m.subscribe(f"cmd/{name}", qos=1)
time.sleep(0.5)
m.publish(f"sensors/{name}/temp", "21.5", qos=1).wait_for_publish(5)

method, props, body = None, None, None
for _ in range(50):
    method, props, body = ch.basic_get(q, auto_ack=True)
    if method:
        break
    time.sleep(0.1)
assert method is not None, "MQTT publish did not reach the AMQP queue"
assert body == b"21.5" and method.routing_key == f"sensors.{name}.temp", (method, body)
assert stomp_got.wait(5), "MQTT publish did not reach the STOMP subscriber"

ch.basic_publish("amq.topic", f"cmd.{name}", b"from-amqp")
assert mqtt_got.wait(5), "AMQP publish did not reach the MQTT subscriber"
m.loop_stop()
s.disconnect()
conn.close()
print("ok")
