"""paho-mqtt (Debian python3-paho-mqtt) against Bourse: MQTT 3.1.1 QoS 0/1
publish/subscribe, retained message, and MQTT 5 user properties."""
import os
import threading
import time
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

host, port = os.environ["MQTT_HOST"], int(os.environ["MQTT_PORT"])
name = uuid.uuid4().hex[:8]


def client(cid, proto):
    kw = {}
    if hasattr(mqtt, "CallbackAPIVersion"):
        kw["callback_api_version"] = mqtt.CallbackAPIVersion.VERSION2
    c = mqtt.Client(client_id=cid, protocol=proto, **kw)
    c.username_pw_set("guest", "guest")
    return c


got, lock, ev = [], threading.Lock(), threading.Event()


def on_message(c, userdata, msg):
    with lock:
        got.append(msg)
        if len(got) >= 11:
            ev.set()


sub = client("sub-" + name, mqtt.MQTTv311)
sub.on_message = on_message
sub.connect(host, port)
sub.loop_start()
r, _ = sub.subscribe(f"interop/{name}/#", qos=1)
assert r == 0
time.sleep(0.3)

pub = client("pub-" + name, mqtt.MQTTv311)
pub.connect(host, port)
pub.loop_start()
for i in range(10):
    pub.publish(f"interop/{name}/t{i}", f"v{i}", qos=1).wait_for_publish(5)
pub.publish(f"interop/{name}/retained", "last", qos=1, retain=True).wait_for_publish(5)
assert ev.wait(10), f"got {len(got)} messages"
bodies = sorted(m.payload.decode() for m in got)
assert bodies == sorted([f"v{i}" for i in range(10)] + ["last"]), bodies

# a late subscriber gets the retained message
late_got = threading.Event()
late = client("late-" + name, mqtt.MQTTv311)
late.on_message = lambda c, u, m: late_got.set() if m.retain and m.payload == b"last" else None
late.connect(host, port)
late.loop_start()
late.subscribe(f"interop/{name}/retained", qos=1)
assert late_got.wait(5), "retained message not delivered"

# MQTT 5 user properties round trip
v5got = []
v5ev = threading.Event()
v5 = client("v5-" + name, mqtt.MQTTv5)
v5.on_message = lambda c, u, m: (v5got.append(m), v5ev.set())
v5.connect(host, port)
v5.loop_start()
v5.subscribe(f"v5/{name}", qos=1)
time.sleep(0.3)
props = Properties(PacketTypes.PUBLISH)
props.UserProperty = [("k", "v")]
props.ContentType = "text/plain"
v5.publish(f"v5/{name}", "p", qos=1, properties=props).wait_for_publish(5)
assert v5ev.wait(5), "v5 message not received"
p = v5got[0].properties
assert ("k", "v") in p.UserProperty, p
assert p.ContentType == "text/plain", p

for c in (sub, pub, late, v5):
    c.disconnect()
    c.loop_stop()
print("ok")
