package amqp

import (
	"errors"
	"fmt"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/bourse-mq/bourse/protocols/amqp/wire"
)

func declareStream(t *testing.T, ch *amqp091.Channel, name string, extra amqp091.Table) {
	t.Helper()
	args := amqp091.Table{"x-queue-type": "stream"}
	for k, v := range extra {
		args[k] = v
	}
	if _, err := ch.QueueDeclare(name, true, false, false, false, args); err != nil {
		t.Fatalf("declare stream: %v", err)
	}
}

func publishEvents(t *testing.T, ch *amqp091.Channel, exchange, key string, from, n int, msgID func(int) string) {
	t.Helper()
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	confirms := ch.NotifyPublish(make(chan amqp091.Confirmation, n))
	for i := from; i < from+n; i++ {
		p := amqp091.Publishing{Body: []byte(fmt.Sprintf("event-%d", i)), Headers: amqp091.Table{"i": int32(i)}}
		if msgID != nil {
			p.MessageId = msgID(i)
		}
		if err := ch.Publish(exchange, key, false, false, p); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < n; i++ {
		select {
		case c := <-confirms:
			if !c.Ack {
				t.Fatalf("publish %d nacked", c.DeliveryTag)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("confirm %d of %d missing", i, n)
		}
	}
}

// readStream consumes n deliveries from a stream reader and acks them.
func readStream(t *testing.T, ch *amqp091.Channel, stream string, args amqp091.Table, n int) []string {
	t.Helper()
	if err := ch.Qos(10, 0, false); err != nil {
		t.Fatal(err)
	}
	tag := fmt.Sprintf("r-%d", time.Now().UnixNano())
	ds, err := ch.Consume(stream, tag, false, false, false, false, args)
	if err != nil {
		t.Fatalf("consume: %v", err)
	}
	var got []string
	for len(got) < n {
		select {
		case d, ok := <-ds:
			if !ok {
				t.Fatalf("deliveries closed after %d", len(got))
			}
			off, ok := d.Headers["x-stream-offset"].(int64)
			if !ok {
				t.Fatalf("delivery without x-stream-offset: %v", d.Headers)
			}
			got = append(got, fmt.Sprintf("%d:%s", off, d.Body))
			if err := d.Ack(false); err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("got %d of %d deliveries: %v", len(got), n, got)
		}
	}
	if err := ch.Cancel(tag, false); err != nil {
		t.Fatal(err)
	}
	return got
}

func expectRange(t *testing.T, got []string, from, to int) {
	t.Helper()
	if len(got) != to-from {
		t.Fatalf("got %d records, want %d..%d: %v", len(got), from, to, got)
	}
	for i, s := range got {
		if want := fmt.Sprintf("%d:event-%d", from+i, from+i); s != want {
			t.Fatalf("record %d is %q, want %q", i, s, want)
		}
	}
}

func TestStreamOffsetsManyReaders(t *testing.T) {
	e := startServer(t)
	_, ch := e.channel(t)
	declareStream(t, ch, "events", nil)
	// A stream is bound like any queue.
	if err := ch.QueueBind("events", "pay.#", "amq.topic", false, nil); err != nil {
		t.Fatal(err)
	}
	publishEvents(t, ch, "amq.topic", "pay.received", 0, 100, nil)

	_, c1 := e.channel(t)
	expectRange(t, readStream(t, c1, "events", amqp091.Table{"x-stream-offset": "first"}, 100), 0, 100)
	// Reading is not consuming: a second reader sees the same records.
	_, c2 := e.channel(t)
	expectRange(t, readStream(t, c2, "events", amqp091.Table{"x-stream-offset": int64(50)}, 50), 50, 100)
	expectRange(t, readStream(t, c2, "events", amqp091.Table{"x-stream-offset": "last"}, 1), 99, 100)
	expectRange(t, readStream(t, c2, "events", amqp091.Table{"x-stream-offset": time.Now().Add(-time.Hour)}, 100), 0, 100)
	expectRange(t, readStream(t, c2, "events", amqp091.Table{"x-stream-offset": "1h"}, 100), 0, 100)

	// "next" (the default) sees only what comes after it subscribed.
	if err := c2.Qos(10, 0, false); err != nil {
		t.Fatal(err)
	}
	ds, err := c2.Consume("events", "tail", false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // let the reader settle at the tail
	publishEvents(t, ch, "", "events", 100, 5, nil)
	for i := 100; i < 105; i++ {
		select {
		case d := <-ds:
			if string(d.Body) != fmt.Sprintf("event-%d", i) || d.Headers["x-stream-offset"] != int64(i) {
				t.Fatalf("tail reader got %q at %v", d.Body, d.Headers["x-stream-offset"])
			}
			d.Ack(false)
		case <-time.After(10 * time.Second):
			t.Fatalf("tail reader missed %d", i)
		}
	}
	q, err := ch.QueueDeclarePassive("events", true, false, false, false, amqp091.Table{"x-queue-type": "stream"})
	if err != nil || q.Messages != 105 {
		t.Fatalf("passive declare: %+v %v", q, err)
	}
}

func TestStreamPrefetchBoundsAReader(t *testing.T) {
	e := startServer(t)
	_, ch := e.channel(t)
	declareStream(t, ch, "s", nil)
	publishEvents(t, ch, "", "s", 0, 50, nil)
	_, c := e.channel(t)
	c.Qos(5, 0, false)
	ds, err := c.Consume("s", "", false, false, false, false, amqp091.Table{"x-stream-offset": "first"})
	if err != nil {
		t.Fatal(err)
	}
	var held []amqp091.Delivery
	for len(held) < 5 {
		held = append(held, <-ds)
	}
	select {
	case d := <-ds:
		t.Fatalf("delivery %v beyond prefetch 5", d.Headers["x-stream-offset"])
	case <-time.After(200 * time.Millisecond):
	}
	held[0].Ack(false)
	select {
	case d := <-ds:
		if d.Headers["x-stream-offset"] != int64(5) {
			t.Fatalf("after one ack got offset %v", d.Headers["x-stream-offset"])
		}
	case <-time.After(5 * time.Second):
		t.Fatal("an ack did not return credit")
	}
}

func TestStreamErrors(t *testing.T) {
	e := startServer(t)
	conn, ch := e.channel(t)
	_ = conn
	declareStream(t, ch, "s", nil)
	var ae *amqp091.Error
	for _, c := range []struct {
		name               string
		durable, exclusive bool
		args               amqp091.Table
		code               int
	}{
		{"transient", false, false, amqp091.Table{"x-queue-type": "stream"}, 406},
		{"excl", true, true, amqp091.Table{"x-queue-type": "stream"}, 406},
		{"badage", true, false, amqp091.Table{"x-queue-type": "stream", "x-max-age": "7X"}, 406},
	} {
		_, c2 := e.channel(t)
		_, err := c2.QueueDeclare(c.name, c.durable, false, c.exclusive, false, c.args)
		if !errors.As(err, &ae) || ae.Code != c.code {
			t.Errorf("%s: declare error %v, want %d", c.name, err, c.code)
		}
	}
	_, c4 := e.channel(t)
	c4.Qos(1, 0, false)
	if _, err := c4.Consume("s", "", false, false, false, false, amqp091.Table{"x-stream-offset": "sideways"}); !errors.As(err, &ae) || ae.Code != 406 {
		t.Errorf("bad offset: %v", err)
	}
	_, c5 := e.channel(t)
	c5.Qos(1, 0, false)
	if _, err := c5.Consume("s", "", false, false, false, false, nil); err != nil {
		t.Errorf("consume with prefetch: %v", err)
	}
	conn2, c6 := e.channel(t)
	if _, err := c6.QueuePurge("s", false); !errors.As(err, &ae) || ae.Code != 540 {
		t.Errorf("purge of a stream: %v", err)
	}
	_ = conn2
	conn3, c7 := e.channel(t)
	if _, _, err := c7.Get("s", false); !errors.As(err, &ae) || ae.Code != 540 {
		t.Errorf("get on a stream: %v", err)
	}
	_ = conn3
}

func TestStreamNoPrefetchRefused(t *testing.T) {
	e := startServer(t)
	_, ch := e.channel(t)
	declareStream(t, ch, "s", nil)
	_, c := e.channel(t)
	var ae *amqp091.Error
	if _, err := c.Consume("s", "", false, false, false, false, nil); !errors.As(err, &ae) || ae.Code != 406 {
		t.Fatalf("consume without prefetch: %v", err)
	}
}

func TestStreamNamedOffsetAndDedup(t *testing.T) {
	e := startServer(t)
	_, ch := e.channel(t)
	declareStream(t, ch, "s", nil)
	publishEvents(t, ch, "", "s", 0, 40, func(i int) string { return fmt.Sprintf("msg-%d", i) })
	// Resent after a "reconnect": the same ids are not written twice.
	_, ch2 := e.channel(t)
	publishEvents(t, ch2, "", "s", 30, 10, func(i int) string { return fmt.Sprintf("msg-%d", i) })
	q, err := ch.QueueDeclarePassive("s", true, false, false, false, nil)
	if err != nil || q.Messages != 40 {
		t.Fatalf("after resend: %+v %v (want 40 records)", q, err)
	}

	_, c := e.channel(t)
	named := amqp091.Table{"x-stream-consumer-name": "billing", "x-stream-offset": "first"}
	expectRange(t, readStream(t, c, "s", named, 25), 0, 25)
	// Resumes after the last ack, with no explicit offset.
	_, c2 := e.channel(t)
	expectRange(t, readStream(t, c2, "s", amqp091.Table{"x-stream-consumer-name": "billing"}, 15), 25, 40)
	// A stored offset wins over x-stream-offset, which only places a new
	// name (the demo's orders processor relies on it across restarts).
	ch.Publish("", "s", false, false, amqp091.Publishing{MessageId: "late", Body: []byte("event-40")})
	_, c3 := e.channel(t)
	expectRange(t, readStream(t, c3, "s", named, 1), 40, 41)
}

// TestStreamRetentionMovesAReader: retention deletes whole segments while
// a reader is behind; the reader is moved to the first retained offset (its
// x-stream-offset jumps) instead of failing.
func TestStreamRetentionMovesAReader(t *testing.T) {
	e := startServer(t)
	_, ch := e.channel(t)
	declareStream(t, ch, "r", amqp091.Table{"x-max-length-bytes": int64(8192), "x-stream-max-segment-size-bytes": int64(2048)})
	publishEvents(t, ch, "", "r", 0, 10, nil)
	_, c := e.channel(t)
	c.Qos(1, 0, false)
	ds, err := c.Consume("r", "", false, false, false, false, amqp091.Table{"x-stream-offset": "first"})
	if err != nil {
		t.Fatal(err)
	}
	d := <-ds
	if d.Headers["x-stream-offset"] != int64(0) {
		t.Fatalf("first delivery at %v", d.Headers["x-stream-offset"])
	}
	_, pub := e.channel(t)
	publishEvents(t, pub, "", "r", 10, 300, nil)
	// Retention runs just after the last batch is confirmed.
	var q amqp091.Queue
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		var err error
		if q, err = ch.QueueDeclarePassive("r", true, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
		if q.Messages < 310 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("retention kept all %d records", q.Messages)
		}
	}
	d.Ack(false)
	// The reader had read ahead at most one segment; after that it jumps.
	var last int64
	for {
		select {
		case d := <-ds:
			off := d.Headers["x-stream-offset"].(int64)
			d.Ack(false)
			if off > last+1 && last > 0 {
				if off < int64(310-q.Messages) {
					t.Fatalf("jumped to %d, below the first retained offset %d", off, 310-q.Messages)
				}
				return
			}
			last = off
			if off >= 309 {
				t.Fatalf("reader never jumped over deleted records (last %d)", off)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("reader stalled at %d", last)
		}
	}
}

// TestSlowConsumerClosedAfterWriteTimeout: a consumer that stops reading
// its socket has its connection closed after WriteTimeout; its
// deliveries go back to the queue.
func TestSlowConsumerClosedAfterWriteTimeout(t *testing.T) {
	e := startServer(t, func(o *Options) { o.WriteTimeout = 300 * time.Millisecond })
	_, ch := e.channel(t)
	if _, err := ch.QueueDeclare("slow", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, 64<<10)
	for i := 0; i < 600; i++ {
		if err := ch.Publish("", "slow", false, false, amqp091.Publishing{Body: body}); err != nil {
			t.Fatal(err)
		}
	}
	r := dialRaw(t, e.addr)
	r.handshake(0)
	r.send(1, &wire.ChannelOpen{})
	expectMethod[*wire.ChannelOpenOk](r)
	r.send(1, &wire.BasicQos{PrefetchCount: 1000})
	expectMethod[*wire.BasicQosOk](r)
	r.send(1, &wire.BasicConsume{Queue: "slow"})
	expectMethod[*wire.BasicConsumeOk](r)
	// ... and never read again.
	v, _ := e.b.VHost("/")
	q, _ := v.Queue("slow", 0)
	deadline := time.Now().Add(10 * time.Second)
	for q.Stats().Consumers > 0 {
		if time.Now().After(deadline) {
			t.Fatal("the connection of a consumer that stopped reading is still open")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The requeue finishes just after the consumer is gone.
	for st := q.Stats(); st.Ready != 600 || st.Unacked != 0; st = q.Stats() {
		if time.Now().After(deadline) {
			t.Fatalf("after the close: %+v (want all 600 back, ready)", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
