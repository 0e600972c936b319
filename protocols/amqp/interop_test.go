package amqp

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
)

// Interop with clients in other languages, when the machine has them
// (Debian's amqp-tools and python3-pika; `make interop` installs them).

func TestInteropAMQPTools(t *testing.T) {
	if _, err := exec.LookPath("amqp-publish"); err != nil {
		t.Skip("amqp-tools not installed")
	}
	e := startServer(t)
	_, ch := e.channel(t)
	_, err := ch.QueueDeclare("tools", false, false, false, false, nil)
	must(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	run := func(name string, args ...string) string {
		t.Helper()
		out, err := exec.CommandContext(ctx, name, append([]string{"--url=" + e.url}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
		return string(out)
	}
	run("amqp-publish", "-r", "tools", "-p", "-C", "text/plain", "-H", "trace: abc", "-b", "from amqp-tools")
	d, ok, err := ch.Get("tools", true)
	must(t, err)
	if !ok || string(d.Body) != "from amqp-tools" || d.ContentType != "text/plain" || d.DeliveryMode != 2 || d.Headers["trace"] != "abc" {
		t.Fatalf("published by amqp-publish: %v %+v", ok, d)
	}
	must(t, ch.Publish("", "tools", false, false, amqp091.Publishing{Body: []byte("to amqp-get")}))
	if out := run("amqp-get", "-q", "tools"); !strings.Contains(out, "to amqp-get") {
		t.Fatalf("amqp-get printed %q", out)
	}
	must(t, ch.Publish("", "tools", false, false, amqp091.Publishing{Body: []byte("to amqp-consume")}))
	if out := run("amqp-consume", "-q", "tools", "-c", "1", "cat"); !strings.Contains(out, "to amqp-consume") {
		t.Fatalf("amqp-consume printed %q", out)
	}
}

const pikaScript = `
import sys, pika
params = pika.URLParameters(sys.argv[1])
conn = pika.BlockingConnection(params)
ch = conn.channel()
ch.queue_declare(queue="pika", durable=True)
ch.confirm_delivery()
ch.basic_publish(exchange="", routing_key="pika", body=b"hello from pika",
    properties=pika.BasicProperties(content_type="text/plain", delivery_mode=2,
        headers={"n": 1, "nested": {"a": [1, "two"]}}))
try:
    ch.basic_publish(exchange="amq.direct", routing_key="nowhere", body=b"x", mandatory=True)
    print("no UnroutableError")
    sys.exit(1)
except pika.exceptions.UnroutableError:
    pass
ch.basic_qos(prefetch_count=1)
got = []
def on_message(c, method, props, body):
    got.append((body, props.headers))
    c.basic_ack(method.delivery_tag)
    c.stop_consuming()
ch.basic_consume(queue="pika", on_message_callback=on_message)
ch.start_consuming()
body, headers = got[0]
assert body == b"hello from pika", body
assert headers["nested"]["a"][1] in ("two", b"two"), headers
m, p, b = ch.basic_get(queue="pika", auto_ack=True)
assert m is None, m
try:
    ch.queue_declare(queue="missing", passive=True)
    print("passive declare succeeded")
    sys.exit(1)
except pika.exceptions.ChannelClosedByBroker as e:
    assert e.reply_code == 404, e
conn.close()
print("ok")
`

func TestInteropPika(t *testing.T) {
	python := ""
	for _, p := range []string{"/usr/bin/python3", "python3"} {
		if exec.Command(p, "-c", "import pika").Run() == nil {
			python = p
			break
		}
	}
	if python == "" {
		t.Skip("python3-pika not installed")
	}
	e := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, python, "-c", pikaScript, e.url+"%2F").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "ok") {
		t.Fatalf("pika: %v\n%s", err, out)
	}
}
