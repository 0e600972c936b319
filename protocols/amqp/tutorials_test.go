package amqp

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// The seven RabbitMQ getting-started tutorials, written with amqp091-go the
// way the tutorials write them (https://www.rabbitmq.com/tutorials), each
// run against Bourse.

func failOnError(t *testing.T, err error, msg string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %s", msg, err)
	}
}

func tutorialCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// Tutorial 1: "Hello World!" — send.go and receive.go.
func TestTutorial1HelloWorld(t *testing.T) {
	e := startServer(t)
	ctx := tutorialCtx(t)

	// receive.go
	conn, err := amqp.Dial(e.url)
	failOnError(t, err, "Failed to connect to RabbitMQ")
	defer conn.Close()
	ch, err := conn.Channel()
	failOnError(t, err, "Failed to open a channel")
	defer ch.Close()
	q, err := ch.QueueDeclare("hello", false, false, false, false, nil)
	failOnError(t, err, "Failed to declare a queue")
	msgs, err := ch.Consume(q.Name, "", true, false, false, false, nil)
	failOnError(t, err, "Failed to register a consumer")

	// send.go
	sconn, err := amqp.Dial(e.url)
	failOnError(t, err, "Failed to connect to RabbitMQ")
	defer sconn.Close()
	sch, err := sconn.Channel()
	failOnError(t, err, "Failed to open a channel")
	defer sch.Close()
	sq, err := sch.QueueDeclare("hello", false, false, false, false, nil)
	failOnError(t, err, "Failed to declare a queue")
	body := "Hello World!"
	err = sch.PublishWithContext(ctx, "", sq.Name, false, false, amqp.Publishing{
		ContentType: "text/plain",
		Body:        []byte(body),
	})
	failOnError(t, err, "Failed to publish a message")

	d := recv(t, msgs, 5*time.Second)
	if string(d.Body) != body || d.ContentType != "text/plain" {
		t.Fatalf("Received a message: %s (%s)", d.Body, d.ContentType)
	}
}

// Tutorial 2: Work Queues — new_task.go and worker.go, with fair dispatch
// (prefetch 1) and manual acks: a slow worker must not be handed more work
// while it is busy.
func TestTutorial2WorkQueues(t *testing.T) {
	e := startServer(t)
	ctx := tutorialCtx(t)

	var mu sync.Mutex
	done := map[string][]string{}
	var wg sync.WaitGroup
	const tasks = 12
	wg.Add(tasks)
	worker := func(name string, perDot time.Duration) {
		conn, err := amqp.Dial(e.url)
		failOnError(t, err, "Failed to connect to RabbitMQ")
		t.Cleanup(func() { conn.Close() })
		ch, err := conn.Channel()
		failOnError(t, err, "Failed to open a channel")
		q, err := ch.QueueDeclare("task_queue", true, false, false, false, nil)
		failOnError(t, err, "Failed to declare a queue")
		err = ch.Qos(1, 0, false)
		failOnError(t, err, "Failed to set QoS")
		msgs, err := ch.Consume(q.Name, "", false, false, false, false, nil)
		failOnError(t, err, "Failed to register a consumer")
		go func() {
			for d := range msgs {
				dots := strings.Count(string(d.Body), ".")
				time.Sleep(time.Duration(dots) * perDot)
				mu.Lock()
				done[name] = append(done[name], string(d.Body))
				mu.Unlock()
				_ = d.Ack(false)
				wg.Done()
			}
		}()
	}
	worker("slow", 100*time.Millisecond)
	worker("fast", 0)

	// new_task.go
	conn, err := amqp.Dial(e.url)
	failOnError(t, err, "Failed to connect to RabbitMQ")
	defer conn.Close()
	ch, err := conn.Channel()
	failOnError(t, err, "Failed to open a channel")
	q, err := ch.QueueDeclare("task_queue", true, false, false, false, nil)
	failOnError(t, err, "Failed to declare a queue")
	for i := range tasks {
		body := fmt.Sprintf("task %d...", i)
		err = ch.PublishWithContext(ctx, "", q.Name, false, false, amqp.Publishing{
			DeliveryMode: amqp.Persistent,
			ContentType:  "text/plain",
			Body:         []byte(body),
		})
		failOnError(t, err, "Failed to publish a message")
	}
	waitGroup(t, &wg, 10*time.Second)
	mu.Lock()
	defer mu.Unlock()
	if n := len(done["slow"]) + len(done["fast"]); n != tasks {
		t.Fatalf("%d tasks done", n)
	}
	// The slow worker takes 300ms per task; with prefetch 1 it can only
	// have held a couple while the fast one drained the rest.
	if len(done["slow"]) > 3 {
		t.Fatalf("fair dispatch: slow worker got %d of %d tasks", len(done["slow"]), tasks)
	}
}

func waitGroup(t *testing.T, wg *sync.WaitGroup, d time.Duration) {
	t.Helper()
	ch := make(chan struct{})
	go func() { wg.Wait(); close(ch) }()
	select {
	case <-ch:
	case <-time.After(d):
		t.Fatal("timed out")
	}
}

// subscriber is receive_logs*.go: an exclusive server-named queue bound to
// exchange with the given keys.
func subscriber(t *testing.T, e *env, exchange, kind string, keys ...string) <-chan amqp.Delivery {
	t.Helper()
	conn, err := amqp.Dial(e.url)
	failOnError(t, err, "Failed to connect to RabbitMQ")
	t.Cleanup(func() { conn.Close() })
	ch, err := conn.Channel()
	failOnError(t, err, "Failed to open a channel")
	err = ch.ExchangeDeclare(exchange, kind, true, false, false, false, nil)
	failOnError(t, err, "Failed to declare an exchange")
	q, err := ch.QueueDeclare("", false, false, true, false, nil)
	failOnError(t, err, "Failed to declare a queue")
	for _, s := range keys {
		err = ch.QueueBind(q.Name, s, exchange, false, nil)
		failOnError(t, err, "Failed to bind a queue")
	}
	msgs, err := ch.Consume(q.Name, "", true, false, false, false, nil)
	failOnError(t, err, "Failed to register a consumer")
	return msgs
}

// emitter is emit_log*.go.
func emitter(t *testing.T, e *env, exchange, kind string) func(key, body string) {
	t.Helper()
	conn, err := amqp.Dial(e.url)
	failOnError(t, err, "Failed to connect to RabbitMQ")
	t.Cleanup(func() { conn.Close() })
	ch, err := conn.Channel()
	failOnError(t, err, "Failed to open a channel")
	err = ch.ExchangeDeclare(exchange, kind, true, false, false, false, nil)
	failOnError(t, err, "Failed to declare an exchange")
	ctx := tutorialCtx(t)
	return func(key, body string) {
		err := ch.PublishWithContext(ctx, exchange, key, false, false, amqp.Publishing{
			ContentType: "text/plain",
			Body:        []byte(body),
		})
		failOnError(t, err, "Failed to publish a message")
	}
}

func bodies(t *testing.T, msgs <-chan amqp.Delivery, n int) []string {
	t.Helper()
	var out []string
	for range n {
		out = append(out, string(recv(t, msgs, 5*time.Second).Body))
	}
	quiet(t, msgs, 100*time.Millisecond)
	sort.Strings(out)
	return out
}

// Tutorial 3: Publish/Subscribe — a fanout exchange, server-named exclusive
// queues.
func TestTutorial3PublishSubscribe(t *testing.T) {
	e := startServer(t)
	a := subscriber(t, e, "logs", "fanout", "")
	b := subscriber(t, e, "logs", "fanout", "")
	emit := emitter(t, e, "logs", "fanout")
	emit("", "info: one")
	emit("", "info: two")
	for _, msgs := range []<-chan amqp.Delivery{a, b} {
		if got := bodies(t, msgs, 2); strings.Join(got, ",") != "info: one,info: two" {
			t.Fatalf("subscriber got %v", got)
		}
	}
}

// Tutorial 4: Routing — a direct exchange keyed by severity.
func TestTutorial4Routing(t *testing.T) {
	e := startServer(t)
	errorsOnly := subscriber(t, e, "logs_direct", "direct", "error")
	all := subscriber(t, e, "logs_direct", "direct", "info", "warning", "error")
	emit := emitter(t, e, "logs_direct", "direct")
	emit("info", "i")
	emit("warning", "w")
	emit("error", "e")
	emit("debug", "d")
	if got := bodies(t, errorsOnly, 1); got[0] != "e" {
		t.Fatalf("errors subscriber got %v", got)
	}
	if got := bodies(t, all, 3); strings.Join(got, "") != "eiw" {
		t.Fatalf("all subscriber got %v", got)
	}
}

// Tutorial 5: Topics — "<facility>.<severity>" keys with * and # bindings.
func TestTutorial5Topics(t *testing.T) {
	e := startServer(t)
	kern := subscriber(t, e, "logs_topic", "topic", "kern.*")
	critical := subscriber(t, e, "logs_topic", "topic", "*.critical")
	everything := subscriber(t, e, "logs_topic", "topic", "#")
	both := subscriber(t, e, "logs_topic", "topic", "kern.*", "*.critical")
	emit := emitter(t, e, "logs_topic", "topic")
	emit("kern.critical", "A critical kernel error")
	emit("kern.info", "kernel info")
	emit("cron.critical", "cron critical")
	emit("cron.info.extra", "cron info")
	if got := bodies(t, kern, 2); len(got) != 2 {
		t.Fatal(got)
	}
	if got := bodies(t, critical, 2); got[0] != "A critical kernel error" || got[1] != "cron critical" {
		t.Fatalf("critical got %v", got)
	}
	if got := bodies(t, everything, 4); len(got) != 4 {
		t.Fatal(got)
	}
	if got := bodies(t, both, 3); len(got) != 3 {
		t.Fatalf("kern.* + *.critical got %v (a message matching both arrives once)", got)
	}
}

func fib(n int) int {
	if n <= 1 {
		return n
	}
	return fib(n-1) + fib(n-2)
}

// Tutorial 6: RPC — rpc_server.go, and rpc_client.go using direct reply-to
// (amq.rabbitmq.reply-to) instead of a callback queue.
func TestTutorial6RPCDirectReplyTo(t *testing.T) {
	e := startServer(t)
	ctx := tutorialCtx(t)

	// rpc_server.go
	sconn, err := amqp.Dial(e.url)
	failOnError(t, err, "Failed to connect to RabbitMQ")
	defer sconn.Close()
	sch, err := sconn.Channel()
	failOnError(t, err, "Failed to open a channel")
	q, err := sch.QueueDeclare("rpc_queue", false, false, false, false, nil)
	failOnError(t, err, "Failed to declare a queue")
	err = sch.Qos(1, 0, false)
	failOnError(t, err, "Failed to set QoS")
	reqs, err := sch.Consume(q.Name, "", false, false, false, false, nil)
	failOnError(t, err, "Failed to register a consumer")
	go func() {
		for d := range reqs {
			n, _ := strconv.Atoi(string(d.Body))
			if !strings.HasPrefix(d.ReplyTo, "amq.rabbitmq.reply-to.") {
				t.Errorf("reply_to %q was not replaced by a direct reply-to address", d.ReplyTo)
			}
			_ = sch.PublishWithContext(ctx, "", d.ReplyTo, false, false, amqp.Publishing{
				ContentType:   "text/plain",
				CorrelationId: d.CorrelationId,
				Body:          []byte(strconv.Itoa(fib(n))),
			})
			_ = d.Ack(false)
		}
	}()

	// rpc_client.go
	conn, err := amqp.Dial(e.url)
	failOnError(t, err, "Failed to connect to RabbitMQ")
	defer conn.Close()
	ch, err := conn.Channel()
	failOnError(t, err, "Failed to open a channel")
	msgs, err := ch.Consume("amq.rabbitmq.reply-to", "", true, false, false, false, nil)
	failOnError(t, err, "Failed to register a consumer")
	fibonacciRPC := func(n int) int {
		corrID := fmt.Sprintf("corr-%d", n)
		err := ch.PublishWithContext(ctx, "", "rpc_queue", false, false, amqp.Publishing{
			ContentType:   "text/plain",
			CorrelationId: corrID,
			ReplyTo:       "amq.rabbitmq.reply-to",
			Body:          []byte(strconv.Itoa(n)),
		})
		failOnError(t, err, "Failed to publish a message")
		for {
			d := recv(t, msgs, 5*time.Second)
			if corrID == d.CorrelationId {
				res, err := strconv.Atoi(string(d.Body))
				failOnError(t, err, "Failed to convert body to integer")
				return res
			}
		}
	}
	for n, want := range map[int]int{10: 55, 20: 6765, 1: 1} {
		if got := fibonacciRPC(n); got != want {
			t.Fatalf("fib(%d) = %d", n, got)
		}
	}
}

// Tutorial 7: Publisher Confirms — publishing messages individually, in
// batches, and handling confirms asynchronously.
func TestTutorial7PublisherConfirms(t *testing.T) {
	e := startServer(t)
	ctx := tutorialCtx(t)
	conn, err := amqp.Dial(e.url)
	failOnError(t, err, "Failed to connect to RabbitMQ")
	defer conn.Close()
	const messageCount = 300

	newChannel := func() (*amqp.Channel, amqp.Queue) {
		ch, err := conn.Channel()
		failOnError(t, err, "Failed to open a channel")
		q, err := ch.QueueDeclare("", false, false, true, false, nil)
		failOnError(t, err, "Failed to declare a queue")
		err = ch.Confirm(false)
		failOnError(t, err, "Failed to enable publisher confirms")
		return ch, q
	}

	t.Run("individually", func(t *testing.T) {
		ch, q := newChannel()
		for i := range messageCount {
			dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", q.Name, true, false, amqp.Publishing{Body: []byte(strconv.Itoa(i))})
			failOnError(t, err, "Failed to publish a message")
			if !dc.Wait() {
				t.Fatalf("message %d nacked", i)
			}
		}
	})

	t.Run("batch", func(t *testing.T) {
		ch, q := newChannel()
		const batchSize = 100
		var outstanding []*amqp.DeferredConfirmation
		for i := range messageCount {
			dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", q.Name, true, false, amqp.Publishing{Body: []byte(strconv.Itoa(i))})
			failOnError(t, err, "Failed to publish a message")
			outstanding = append(outstanding, dc)
			if len(outstanding) == batchSize {
				for _, dc := range outstanding {
					if ok, err := dc.WaitContext(ctx); err != nil || !ok {
						t.Fatalf("batch confirm: %v %v", ok, err)
					}
				}
				outstanding = outstanding[:0]
			}
		}
	})

	t.Run("async", func(t *testing.T) {
		ch, q := newChannel()
		confirms := ch.NotifyPublish(make(chan amqp.Confirmation, messageCount))
		var mu sync.Mutex
		outstanding := map[uint64]string{}
		allConfirmed := make(chan struct{})
		go func() {
			n := 0
			for c := range confirms {
				mu.Lock()
				if _, ok := outstanding[c.DeliveryTag]; ok && c.Ack {
					delete(outstanding, c.DeliveryTag)
					n++
				}
				mu.Unlock()
				if n == messageCount {
					close(allConfirmed)
					return
				}
			}
		}()
		for i := range messageCount {
			body := strconv.Itoa(i)
			mu.Lock()
			outstanding[ch.GetNextPublishSeqNo()] = body
			mu.Unlock()
			err := ch.PublishWithContext(ctx, "", q.Name, true, false, amqp.Publishing{Body: []byte(body)})
			failOnError(t, err, "Failed to publish a message")
		}
		select {
		case <-allConfirmed:
		case <-time.After(10 * time.Second):
			mu.Lock()
			t.Fatalf("%d messages unconfirmed", len(outstanding))
		}
	})
}
