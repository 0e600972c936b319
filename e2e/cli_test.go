package e2e

import (
	amqp "github.com/rabbitmq/amqp091-go"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// bourseCLI runs a bourse subcommand against br and returns its output.
func bourseCLI(t *testing.T, br *Broker, args ...string) (string, error) {
	t.Helper()
	args = append(args, "--url", "http://"+br.Addrs["http"])
	out, err := exec.Command(binary(t), args...).CombinedOutput()
	return string(out), err
}

// TestCLIDeclareListDefinitions: declare a stream, a queue, an exchange and
// a binding with the CLI, list them, export the definitions, import them
// into a fresh broker.
func TestCLIDeclareListDefinitions(t *testing.T) {
	br := Start(t)
	for _, args := range [][]string{
		{"declare", "queue", "payments", "--type", "stream", "--arg", "x-max-age=7D"},
		{"declare", "queue", "invoices", "--arg", "x-max-length=500"},
		{"declare", "exchange", "events", "--type", "topic"},
		{"declare", "binding", "events", "payments", "--key", "payment.#"},
		{"declare", "binding", "events", "invoices", "--key", "invoice.*"},
	} {
		if out, err := bourseCLI(t, br, args...); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	out, err := bourseCLI(t, br, "list", "streams")
	if err != nil || !strings.Contains(out, "payments") || strings.Contains(out, "invoices") {
		t.Fatalf("list streams: %v\n%s", err, out)
	}
	out, err = bourseCLI(t, br, "list", "queues")
	if err != nil || !strings.Contains(out, "invoices") || strings.Contains(out, "payments") {
		t.Fatalf("list queues: %v\n%s", err, out)
	}
	out, err = bourseCLI(t, br, "list", "bindings", "--json")
	if err != nil || !strings.Contains(out, `"routing_key": "payment.#"`) {
		t.Fatalf("list bindings: %v\n%s", err, out)
	}
	file := filepath.Join(t.TempDir(), "defs.json")
	if out, err := bourseCLI(t, br, "definitions", "export", file); err != nil {
		t.Fatalf("export: %v\n%s", err, out)
	}
	b, _ := os.ReadFile(file)
	if !strings.Contains(string(b), `"x-queue-type": "stream"`) || !strings.Contains(string(b), `"x-max-age": "7D"`) {
		t.Fatalf("exported definitions:\n%s", b)
	}

	fresh := Start(t)
	if out, err := bourseCLI(t, fresh, "definitions", "import", file); err != nil {
		t.Fatalf("import: %v\n%s", err, out)
	}
	out, _ = bourseCLI(t, fresh, "list", "streams")
	if !strings.Contains(out, "payments") {
		t.Fatalf("stream not imported:\n%s", out)
	}
	// The imported binding routes into the imported stream.
	ch := fresh.AMQPChannel(t)
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, 1))
	if err := ch.Publish("events", "payment.received", false, false, amqp.Publishing{Body: []byte("p")}); err != nil {
		t.Fatal(err)
	}
	<-confirms
	if q, err := ch.QueueDeclarePassive("payments", true, false, false, false, amqp.Table{"x-queue-type": "stream"}); err != nil || q.Messages != 1 {
		t.Fatalf("imported stream after a publish: %+v %v", q, err)
	}
	if out, err := bourseCLI(t, fresh, "publish", "hello", "--key", "invoices", "--property", "message_id=m1"); err != nil || !strings.Contains(out, "routed") {
		t.Fatalf("publish: %v %s", err, out)
	}
	if out, err := bourseCLI(t, fresh, "get", "invoices", "--ack"); err != nil || !strings.Contains(out, "invoices\thello") {
		t.Fatalf("get: %v %s", err, out)
	}
	if out, err := bourseCLI(t, fresh, "publish", "lost", "--key", "nowhere"); err == nil || !strings.Contains(out, "no queue took it") {
		t.Fatalf("unroutable publish: %v %s", err, out)
	}
	if out, err := bourseCLI(t, fresh, "status"); err != nil || !strings.Contains(out, "listener") || !strings.Contains(out, "2 queues") {
		t.Fatalf("status: %v %s", err, out)
	}
	if out, err := bourseCLI(t, fresh, "delete", "queue", "invoices"); err != nil || !strings.Contains(out, "deleted") {
		t.Fatalf("delete: %v %s", err, out)
	}
	if out, err := exec.Command(binary(t), "healthcheck", "--url", "http://"+fresh.Addrs["http"]+"/healthz").CombinedOutput(); err != nil {
		t.Fatalf("healthcheck: %v %s", err, out)
	}
	if out, err := exec.Command(binary(t), "healthcheck", "--url", "http://127.0.0.1:1/healthz").CombinedOutput(); err == nil {
		t.Fatalf("healthcheck of nothing passed: %s", out)
	}
	// A broker that is not there: a clear error, not a stack.
	raw, err := exec.Command(binary(t), "list", "queues", "--url", "http://127.0.0.1:1").CombinedOutput()
	if err == nil || !strings.Contains(string(raw), "cannot reach the broker") || strings.Contains(string(raw), "goroutine") {
		t.Fatalf("unreachable broker: %v\n%s", err, raw)
	}
}
