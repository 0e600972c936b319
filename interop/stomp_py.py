"""stomp.py (Debian python3-stomp) against Bourse over TCP: queue send and
subscribe with client-individual acks, topic fan-out, receipts."""
import os
import threading
import time
import uuid

import stomp

host, port = os.environ["STOMP_HOST"], int(os.environ["STOMP_PORT"])


class Collector(stomp.ConnectionListener):
    def __init__(self):
        self.frames = []
        self.cond = threading.Condition()

    def on_message(self, frame):
        with self.cond:
            self.frames.append(frame)
            self.cond.notify_all()

    def wait(self, n, timeout=10):
        deadline = time.time() + timeout
        with self.cond:
            while len(self.frames) < n and time.time() < deadline:
                self.cond.wait(0.1)
        return self.frames


def connect(listener):
    c = stomp.Connection12([(host, port)], heartbeats=(0, 0), vhost="/")
    c.set_listener("", listener)
    c.connect("guest", "guest", wait=True, headers={"host": "/"})
    return c


name = uuid.uuid4().hex[:8]
consumer = Collector()
c1 = connect(consumer)
c1.subscribe(destination=f"/queue/interop-{name}", id="s1", ack="client-individual")
producer = connect(Collector())
for i in range(20):
    producer.send(destination=f"/queue/interop-{name}", body=f"m{i}",
                  headers={"persistent": "true", "x-custom": str(i), "receipt": f"r{i}"})
frames = consumer.wait(20)
assert [f.body for f in frames] == [f"m{i}" for i in range(20)], [f.body for f in frames]
for f in frames:
    assert f.headers["x-custom"] == f.body[1:], f.headers
    c1.ack(f.headers["ack"])  # STOMP 1.2: ack(id, transaction=None)

# topic fan-out to two subscribers
a, b = Collector(), Collector()
ca, cb = connect(a), connect(b)
ca.subscribe(destination=f"/topic/interop.{name}", id="ta")
cb.subscribe(destination=f"/topic/interop.{name}", id="tb")
time.sleep(0.3)
producer.send(destination=f"/topic/interop.{name}", body="hello topic")
assert [f.body for f in a.wait(1)] == ["hello topic"]
assert [f.body for f in b.wait(1)] == ["hello topic"]

for c in (c1, producer, ca, cb):
    c.disconnect()
print("ok")
