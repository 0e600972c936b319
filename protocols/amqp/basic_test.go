package amqp

import (
	"fmt"
	"strings"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/bourse-mq/bourse/protocols/amqp/wire"
)

func publishN(t testing.TB, ch *amqp091.Channel, exchange, key string, n int) {
	t.Helper()
	for i := range n {
		must(t, ch.Publish(exchange, key, false, false, amqp091.Publishing{Body: []byte(fmt.Sprint(i))}))
	}
}

func TestPrefetchHonoured(t *testing.T) {
	e := startServer(t)
	_, ch := e.channel(t)
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	must(t, err)
	publishN(t, ch, "", q.Name, 10)
	must(t, ch.Qos(2, 0, false))
	msgs, err := ch.Consume(q.Name, "", false, false, false, false, nil)
	must(t, err)
	d1 := recv(t, msgs, 5*time.Second)
	recv(t, msgs, 5*time.Second)
	quiet(t, msgs, 150*time.Millisecond)
	must(t, d1.Ack(false))
	d3 := recv(t, msgs, 5*time.Second)
	if string(d3.Body) != "2" {
		t.Fatalf("third delivery %q", d3.Body)
	}
	quiet(t, msgs, 100*time.Millisecond)
}

func TestGlobalQosSharedByConsumers(t *testing.T) {
	e := startServer(t)
	_, ch := e.channel(t)
	var queues []string
	for range 2 {
		q, err := ch.QueueDeclare("", false, true, true, false, nil)
		must(t, err)
		publishN(t, ch, "", q.Name, 5)
		queues = append(queues, q.Name)
	}
	must(t, ch.Qos(3, 0, true))
	a, err := ch.Consume(queues[0], "a", false, false, false, false, nil)
	must(t, err)
	b, err := ch.Consume(queues[1], "b", false, false, false, false, nil)
	must(t, err)
	var got []amqp091.Delivery
	timeout := time.After(300 * time.Millisecond)
loop:
	for {
		select {
		case d := <-a:
			got = append(got, d)
		case d := <-b:
			got = append(got, d)
		case <-timeout:
			break loop
		}
	}
	if len(got) != 3 {
		t.Fatalf("%d deliveries with a channel-wide prefetch of 3", len(got))
	}
	must(t, got[len(got)-1].Ack(true)) // frees all three
	n := 0
	timeout = time.After(300 * time.Millisecond)
	for n < 3 {
		select {
		case <-a:
			n++
		case <-b:
			n++
		case <-timeout:
			t.Fatalf("only %d more after acking", n)
		}
	}
}

func TestServerGeneratedConsumerTag(t *testing.T) {
	e := startServer(t)
	r := dialRaw(t, e.addr)
	r.handshake(0)
	r.send(1, &wire.ChannelOpen{})
	expectMethod[*wire.ChannelOpenOk](r)
	r.send(1, &wire.QueueDeclare{Queue: "tagged"})
	expectMethod[*wire.QueueDeclareOk](r)
	r.send(1, &wire.BasicConsume{Queue: "tagged"})
	ok := expectMethod[*wire.BasicConsumeOk](r)
	if !strings.HasPrefix(ok.ConsumerTag, "amq.ctag-") {
		t.Fatalf("tag %q", ok.ConsumerTag)
	}
	r.send(1, &wire.BasicConsume{Queue: "tagged", ConsumerTag: ok.ConsumerTag})
	r.expectConnClose(wire.NotAllowed) // reused tag
}

func TestConsumerPriority(t *testing.T) {
	e := startServer(t)
	_, ch := e.channel(t)
	q, err := ch.QueueDeclare("prio", false, true, false, false, nil)
	must(t, err)
	low, err := ch.Consume(q.Name, "low", true, false, false, false, nil)
	must(t, err)
	high, err := ch.Consume(q.Name, "high", true, false, false, false, amqp091.Table{"x-priority": int32(10)})
	must(t, err)
	publishN(t, ch, "", q.Name, 5)
	for range 5 {
		recv(t, high, 5*time.Second)
	}
	quiet(t, low, 100*time.Millisecond)
}

func TestCancelKeepsUnackedAckable(t *testing.T) {
	e := startServer(t)
	_, ch := e.channel(t)
	q, err := ch.QueueDeclare("", false, false, true, false, nil)
	must(t, err)
	publishN(t, ch, "", q.Name, 1)
	msgs, err := ch.Consume(q.Name, "c", false, false, false, false, nil)
	must(t, err)
	d := recv(t, msgs, 5*time.Second)
	must(t, ch.Cancel("c", false))
	if _, ok := <-msgs; ok {
		t.Fatal("delivery channel still open after cancel")
	}
	must(t, d.Ack(false))
	info, err := ch.QueueDeclarePassive(q.Name, false, false, true, false, nil)
	must(t, err)
	if info.Messages != 0 || findQueue(t, e, q.Name).Stats().Unacked != 0 {
		t.Fatalf("after ack: %+v", info)
	}
}

func TestServerCancelOnQueueDelete(t *testing.T) {
	e := startServer(t)
	_, ch := e.channel(t)
	cancels := ch.NotifyCancel(make(chan string, 1))
	q, err := ch.QueueDeclare("doomed", false, false, false, false, nil)
	must(t, err)
	msgs, err := ch.Consume(q.Name, "watcher", false, false, false, false, nil)
	must(t, err)
	_, other := e.channel(t)
	_, err = other.QueueDelete(q.Name, false, false, false)
	must(t, err)
	if tag := recv(t, cancels, 5*time.Second); tag != "watcher" {
		t.Fatalf("cancelled %q", tag)
	}
	if _, ok := <-msgs; ok {
		t.Fatal("delivery channel still open")
	}
	// The channel is still usable.
	_, err = ch.QueueDeclare("", false, true, true, false, nil)
	must(t, err)
}

func TestMandatoryReturn(t *testing.T) {
	e := startServer(t)
	_, ch := e.channel(t)
	returns := ch.NotifyReturn(make(chan amqp091.Return, 1))
	must(t, ch.Publish("amq.direct", "nobody", true, false, amqp091.Publishing{MessageId: "m1", Body: []byte("lost")}))
	r := recv(t, returns, 5*time.Second)
	if r.ReplyCode != 312 || r.ReplyText != "NO_ROUTE" || r.Exchange != "amq.direct" || r.RoutingKey != "nobody" ||
		string(r.Body) != "lost" || r.MessageId != "m1" {
		t.Fatalf("return %+v", r)
	}
	// Not mandatory: dropped silently.
	must(t, ch.Publish("amq.direct", "nobody", false, false, amqp091.Publishing{Body: []byte("gone")}))
	quiet(t, returns, 100*time.Millisecond)
}

func TestGet(t *testing.T) {
	e := startServer(t)
	_, ch := e.channel(t)
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	must(t, err)
	_, ok, err := ch.Get(q.Name, false)
	must(t, err)
	if ok {
		t.Fatal("get-ok from an empty queue")
	}
	publishN(t, ch, "", q.Name, 3)
	d, ok, err := ch.Get(q.Name, false)
	must(t, err)
	if !ok || string(d.Body) != "0" || d.MessageCount != 2 || d.Redelivered {
		t.Fatalf("get %v %+v", ok, d)
	}
	must(t, d.Reject(true))
	d, ok, err = ch.Get(q.Name, false)
	must(t, err)
	if !ok || string(d.Body) != "0" || !d.Redelivered {
		t.Fatalf("after requeue %v %q redelivered=%v", ok, d.Body, d.Redelivered)
	}
	must(t, d.Ack(false))
}

func TestAckNackRejectMultiple(t *testing.T) {
	e := startServer(t)
	_, ch := e.channel(t)
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	must(t, err)
	publishN(t, ch, "", q.Name, 6)
	msgs, err := ch.Consume(q.Name, "", false, false, false, false, nil)
	must(t, err)
	var ds []amqp091.Delivery
	for range 6 {
		ds = append(ds, recv(t, msgs, 5*time.Second))
	}
	must(t, ds[1].Ack(true))         // acks 0 and 1
	must(t, ds[3].Nack(true, false)) // drops 2 and 3
	must(t, ds[4].Reject(true))      // requeues 4
	redelivered := recv(t, msgs, 5*time.Second)
	if string(redelivered.Body) != "4" || !redelivered.Redelivered {
		t.Fatalf("redelivery %q %v", redelivered.Body, redelivered.Redelivered)
	}
	must(t, ch.Ack(0, true)) // multiple with tag 0: everything outstanding
	eventually(t, 5*time.Second, func() bool { return findQueue(t, e, q.Name).Stats().Unacked == 0 }, "acks")
	if st := findQueue(t, e, q.Name).Stats(); st.Ready != 0 {
		t.Fatalf("stats %+v", st)
	}
	// A second ack of the same tag is an unknown delivery tag.
	closed := ch.NotifyClose(make(chan *amqp091.Error, 1))
	must(t, ds[0].Ack(false))
	if err := recv(t, closed, 5*time.Second); err.Code != 406 || !strings.Contains(err.Reason, "unknown delivery tag 1") {
		t.Fatalf("double ack: %v", err)
	}
}

func TestRecoverRequeues(t *testing.T) {
	e := startServer(t)
	_, ch := e.channel(t)
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	must(t, err)
	publishN(t, ch, "", q.Name, 2)
	msgs, err := ch.Consume(q.Name, "", false, false, false, false, nil)
	must(t, err)
	recv(t, msgs, 5*time.Second)
	recv(t, msgs, 5*time.Second)
	//lint:ignore SA1019 basic.recover is part of the protocol under test
	must(t, ch.Recover(true))
	for i := range 2 {
		d := recv(t, msgs, 5*time.Second)
		if !d.Redelivered || string(d.Body) != fmt.Sprint(i) {
			t.Fatalf("after recover: %q redelivered=%v", d.Body, d.Redelivered)
		}
	}
}

func TestRequeueOnChannelAndConnectionClose(t *testing.T) {
	e := startServer(t)
	_, setup := e.channel(t)
	q, err := setup.QueueDeclare("work", false, false, false, false, nil)
	must(t, err)
	publishN(t, setup, "", q.Name, 3)

	c1, ch1 := e.channel(t)
	msgs, err := ch1.Consume(q.Name, "", false, false, false, false, nil)
	must(t, err)
	for range 3 {
		recv(t, msgs, 5*time.Second)
	}
	must(t, ch1.Close())

	ch2, err := c1.Channel()
	must(t, err)
	msgs, err = ch2.Consume(q.Name, "", false, false, false, false, nil)
	must(t, err)
	for i := range 3 {
		d := recv(t, msgs, 5*time.Second)
		if !d.Redelivered || string(d.Body) != fmt.Sprint(i) {
			t.Fatalf("after channel close: %q redelivered=%v", d.Body, d.Redelivered)
		}
	}
	must(t, c1.Close())
	eventually(t, 5*time.Second, func() bool { return queueLen(t, e, q.Name) == 3 }, "requeue on connection close")
}

func TestDirectReplyToRequiresConsumer(t *testing.T) {
	e := startServer(t)
	c := e.dial(t)
	err := chanErr(t, c, func(ch *amqp091.Channel) error {
		return ch.Publish("", "rpc", false, false, amqp091.Publishing{ReplyTo: "amq.rabbitmq.reply-to"})
	})
	if err == nil || err.Code != 406 || !strings.Contains(err.Reason, "fast reply consumer does not exist") {
		t.Fatalf("publish without reply consumer: %v", err)
	}
	err = chanErr(t, c, func(ch *amqp091.Channel) error {
		_, err := ch.Consume("amq.rabbitmq.reply-to", "", false, false, false, false, nil)
		return err
	})
	if err == nil || err.Code != 406 {
		t.Fatalf("acknowledging reply consumer: %v", err)
	}
}

func TestDeadLetteringWithXDeath(t *testing.T) {
	e := startServer(t)
	_, ch := e.channel(t)
	must(t, ch.ExchangeDeclare("dlx", "fanout", false, false, false, false, nil))
	dlq, err := ch.QueueDeclare("dead", false, false, false, false, nil)
	must(t, err)
	must(t, ch.QueueBind(dlq.Name, "", "dlx", false, nil))
	_, err = ch.QueueDeclare("work", false, false, false, false, amqp091.Table{"x-dead-letter-exchange": "dlx"})
	must(t, err)
	_, err = ch.QueueDeclare("short", false, false, false, false, amqp091.Table{"x-dead-letter-exchange": "dlx", "x-message-ttl": int32(20)})
	must(t, err)

	must(t, ch.Publish("", "work", false, false, amqp091.Publishing{Body: []byte("bad")}))
	d, ok, err := ch.Get("work", false)
	must(t, err)
	if !ok {
		t.Fatal("empty")
	}
	must(t, d.Reject(false))
	must(t, ch.Publish("", "short", false, false, amqp091.Publishing{Body: []byte("stale")}))

	dead, err := ch.Consume(dlq.Name, "", true, false, false, false, nil)
	must(t, err)
	check := func(body, queue, reason string) {
		t.Helper()
		m := recv(t, dead, 5*time.Second)
		if string(m.Body) != body {
			t.Fatalf("dead-lettered %q, want %q", m.Body, body)
		}
		deaths, ok := m.Headers["x-death"].([]interface{})
		if !ok || len(deaths) != 1 {
			t.Fatalf("x-death %#v", m.Headers["x-death"])
		}
		xd, ok := deaths[0].(amqp091.Table)
		if !ok {
			t.Fatalf("x-death entry %T", deaths[0])
		}
		keys, _ := xd["routing-keys"].([]interface{})
		if xd["queue"] != queue || xd["reason"] != reason || xd["count"] != int64(1) || xd["exchange"] != "" ||
			len(keys) != 1 || keys[0] != queue {
			t.Fatalf("x-death %#v", xd)
		}
		if _, ok := xd["time"].(time.Time); !ok {
			t.Fatalf("x-death time %T", xd["time"])
		}
		if m.Headers["x-first-death-reason"] != reason {
			t.Fatalf("headers %#v", m.Headers)
		}
	}
	check("bad", "work", "rejected")
	check("stale", "short", "expired")
}
