package amqp

import (
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/bourse-mq/bourse/protocols/amqp/wire"
)

// TestSlowConsumerIsBounded: a consumer that stops reading its socket must
// not make the broker buffer without bound. Its connection's outbound
// queue stays near MaxOutboundBytes, the rest waits in the queue, and
// everything flows again once the client reads.
func TestSlowConsumerIsBounded(t *testing.T) {
	const limit = 64 << 10
	e := startServer(t, func(o *Options) { o.MaxOutboundBytes = limit })
	r := dialRaw(t, e.addr)
	r.handshake(0)
	r.send(1, &wire.ChannelOpen{})
	expectMethod[*wire.ChannelOpenOk](r)
	r.send(1, &wire.QueueDeclare{Queue: "slow"})
	expectMethod[*wire.QueueDeclareOk](r)
	r.send(1, &wire.BasicConsume{Queue: "slow", ConsumerTag: "s", NoAck: true})
	expectMethod[*wire.BasicConsumeOk](r)

	const n, size = 3000, 8 << 10
	_, ch := e.channel(t)
	body := make([]byte, size)
	for range n {
		must(t, ch.Publish("", "slow", false, false, amqp091.Publishing{Body: body}))
	}
	eventually(t, 10*time.Second, func() bool { return queueLen(t, e, "slow") > 0 }, "deliveries to be refused")
	for _, c := range e.srv.snapshot() {
		c.out.mu.Lock()
		b := c.out.bytes
		c.out.mu.Unlock()
		if b > limit+size+contentCost {
			t.Fatalf("outbound queue holds %d bytes; bound %d", b, limit)
		}
	}

	got := 0
	for got < n {
		f, err := r.next(10 * time.Second)
		if err != nil {
			t.Fatalf("after %d deliveries: %v", got, err)
		}
		if f.Type == wire.FrameMethod {
			m, err := wire.DecodeMethod(f.Payload)
			must(t, err)
			d, ok := m.(*wire.BasicDeliver)
			if !ok {
				t.Fatalf("unexpected %s", m.Name())
			}
			got++
			if d.DeliveryTag != uint64(got) {
				t.Fatalf("delivery tag %d, want %d", d.DeliveryTag, got)
			}
		}
	}
	if q := queueLen(t, e, "slow"); q != 0 {
		t.Fatalf("%d left in the queue", q)
	}
}

// TestConsumeOkPrecedesDeliveries: messages waiting in the queue are
// delivered only after basic.consume-ok.
func TestConsumeOkPrecedesDeliveries(t *testing.T) {
	e := startServer(t)
	_, ch := e.channel(t)
	_, err := ch.QueueDeclare("waiting", false, false, false, false, nil)
	must(t, err)
	publishN(t, ch, "", "waiting", 5)
	eventually(t, 5*time.Second, func() bool { return queueLen(t, e, "waiting") == 5 }, "publishes")

	r := dialRaw(t, e.addr)
	r.handshake(0)
	r.send(1, &wire.ChannelOpen{})
	expectMethod[*wire.ChannelOpenOk](r)
	r.send(1, &wire.BasicConsume{Queue: "waiting", ConsumerTag: "w"})
	expectMethod[*wire.BasicConsumeOk](r)
	if d := expectMethod[*wire.BasicDeliver](r); d.ConsumerTag != "w" || d.DeliveryTag != 1 {
		t.Fatalf("deliver %+v", d)
	}
}

// TestServerCancelRaw checks the frame a client that announced
// consumer_cancel_notify receives when its queue is deleted, and that a
// client that did not announce it receives nothing.
func TestServerCancelRaw(t *testing.T) {
	e := startServer(t)
	for _, notify := range []bool{true, false} {
		r := dialRaw(t, e.addr)
		r.write(wire.ProtocolHeader)
		expectMethod[*wire.ConnectionStart](r)
		r.send(0, &wire.ConnectionStartOk{Mechanism: "PLAIN", Response: "\x00guest\x00guest",
			ClientProperties: wire.Table{"capabilities": wire.Table{"consumer_cancel_notify": notify}}})
		expectMethod[*wire.ConnectionTune](r)
		r.send(0, &wire.ConnectionTuneOk{FrameMax: 131072})
		r.send(0, &wire.ConnectionOpen{VirtualHost: "/"})
		expectMethod[*wire.ConnectionOpenOk](r)
		r.send(1, &wire.ChannelOpen{})
		expectMethod[*wire.ChannelOpenOk](r)
		r.send(1, &wire.QueueDeclare{Queue: "gone"})
		expectMethod[*wire.QueueDeclareOk](r)
		r.send(1, &wire.BasicConsume{Queue: "gone", ConsumerTag: "t"})
		expectMethod[*wire.BasicConsumeOk](r)
		r.send(1, &wire.QueueDelete{Queue: "gone"})
		if notify {
			if c := expectMethod[*wire.BasicCancel](r); c.ConsumerTag != "t" || !c.NoWait {
				t.Fatalf("cancel %+v", c)
			}
		}
		expectMethod[*wire.QueueDeleteOk](r)
	}
}
