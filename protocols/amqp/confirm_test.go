package amqp

import (
	"fmt"
	"sync"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/bourse-mq/bourse/protocols/amqp/wire"
)

// TestConfirmsAndReturnsUnderConcurrency runs several publishers, each on
// its own channel (two connections), publishing mandatory messages of which
// every other one is unroutable: each channel must see every sequence
// number confirmed once, in order, and one return per unroutable message.
func TestConfirmsAndReturnsUnderConcurrency(t *testing.T) {
	e := startServer(t)
	_, setup := e.channel(t)
	q, err := setup.QueueDeclare("confirmed", false, false, false, false, nil)
	must(t, err)
	const publishers, perPublisher = 6, 400
	conns := []*amqp091.Connection{e.dial(t), e.dial(t)}
	var wg sync.WaitGroup
	errs := make(chan error, publishers)
	for p := range publishers {
		ch, err := conns[p%2].Channel()
		must(t, err)
		must(t, ch.Confirm(false))
		confirms := ch.NotifyPublish(make(chan amqp091.Confirmation, perPublisher))
		returns := ch.NotifyReturn(make(chan amqp091.Return, perPublisher))
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- func() error {
				for i := range perPublisher {
					key := q.Name
					if i%2 == 1 {
						key = "unroutable"
					}
					if err := ch.Publish("", key, true, false, amqp091.Publishing{Body: []byte(fmt.Sprint(p, i))}); err != nil {
						return err
					}
				}
				for i := range perPublisher {
					select {
					case c := <-confirms:
						if !c.Ack || c.DeliveryTag != uint64(i+1) {
							return fmt.Errorf("publisher %d: confirmation %d is %+v", p, i+1, c)
						}
					case <-time.After(10 * time.Second):
						return fmt.Errorf("publisher %d: %d confirmations", p, i)
					}
				}
				for i := 0; i < perPublisher/2; i++ {
					select {
					case r := <-returns:
						if r.RoutingKey != "unroutable" || r.ReplyCode != 312 {
							return fmt.Errorf("return %+v", r)
						}
					case <-time.After(10 * time.Second):
						return fmt.Errorf("publisher %d: %d returns", p, i)
					}
				}
				return nil
			}()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if n := queueLen(t, e, q.Name); n != publishers*perPublisher/2 {
		t.Fatalf("%d messages queued", n)
	}
}

func TestConfirmNackOnRejectPublish(t *testing.T) {
	e := startServer(t)
	_, ch := e.channel(t)
	q, err := ch.QueueDeclare("bounded", false, false, false, false,
		amqp091.Table{"x-max-length": int32(1), "x-overflow": "reject-publish"})
	must(t, err)
	must(t, ch.Confirm(false))
	confirms := ch.NotifyPublish(make(chan amqp091.Confirmation, 3))
	publishN(t, ch, "", q.Name, 3)
	for i, want := range []bool{true, false, false} {
		c := recv(t, confirms, 5*time.Second)
		if c.DeliveryTag != uint64(i+1) || c.Ack != want {
			t.Fatalf("confirmation %d: %+v", i+1, c)
		}
	}
}

func TestConfirmDeferred(t *testing.T) {
	e := startServer(t)
	_, ch := e.channel(t)
	must(t, ch.Confirm(false))
	dc, err := ch.PublishWithDeferredConfirm("amq.fanout", "", false, false, amqp091.Publishing{Body: []byte("x")})
	must(t, err)
	if !dc.Wait() {
		t.Fatal("nacked")
	}
}

// TestRawReturnPrecedesAckAndAcksCoalesce checks the frame order RabbitMQ
// guarantees (basic.return before the basic.ack of the same message) and
// that a burst of confirms may travel as multiple acks, covering every
// sequence number exactly once.
func TestRawReturnPrecedesAckAndAcksCoalesce(t *testing.T) {
	e := startServer(t)
	r := dialRaw(t, e.addr)
	r.handshake(0)
	r.send(1, &wire.ChannelOpen{})
	expectMethod[*wire.ChannelOpenOk](r)
	r.send(1, &wire.ConfirmSelect{})
	expectMethod[*wire.ConfirmSelectOk](r)

	r.send(1, &wire.BasicPublish{Exchange: "amq.direct", RoutingKey: "nobody", Mandatory: true})
	r.frame(wire.FrameHeader, 1, mustHeader(t, 1))
	r.frame(wire.FrameBody, 1, []byte("x"))
	ret := expectMethod[*wire.BasicReturn](r)
	if ret.ReplyCode != wire.NoRoute {
		t.Fatalf("return %+v", ret)
	}
	for _, typ := range []uint8{wire.FrameHeader, wire.FrameBody} {
		f, err := r.next(5 * time.Second)
		must(t, err)
		if f.Type != typ {
			t.Fatalf("frame type %d, want %d", f.Type, typ)
		}
	}
	if ack := expectMethod[*wire.BasicAck](r); ack.DeliveryTag != 1 || ack.Multiple {
		t.Fatalf("ack %+v", ack)
	}

	// A burst in one write: confirms 2…201.
	var burst []byte
	for range 200 {
		burst = append(burst, frameBytes(t, &wire.BasicPublish{Exchange: "amq.fanout"})...)
		burst = append(burst, rawFrame(wire.FrameHeader, 1, mustHeader(t, 0))...)
	}
	r.write(burst)
	next, frames := uint64(2), 0
	for next <= 201 {
		ack := expectMethod[*wire.BasicAck](r)
		frames++
		switch {
		case !ack.Multiple && ack.DeliveryTag == next:
			next++
		case ack.Multiple && ack.DeliveryTag >= next:
			next = ack.DeliveryTag + 1
		default:
			t.Fatalf("ack %+v while expecting %d", ack, next)
		}
	}
	if next != 202 {
		t.Fatalf("acks went up to %d", next-1)
	}
	t.Logf("200 confirms in %d ack frames", frames)
}

func frameBytes(t testing.TB, m wire.Method) []byte {
	t.Helper()
	p, err := wire.EncodeMethod(nil, m)
	must(t, err)
	return rawFrame(wire.FrameMethod, 1, p)
}

func rawFrame(typ uint8, ch uint16, payload []byte) []byte {
	n := len(payload)
	b := []byte{typ, byte(ch >> 8), byte(ch), byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
	return append(append(b, payload...), wire.FrameEnd)
}

func TestTransactions(t *testing.T) {
	e := startServer(t)
	_, ch := e.channel(t)
	q, err := ch.QueueDeclare("tx", false, false, false, false, nil)
	must(t, err)
	must(t, ch.Tx())
	publishN(t, ch, "", q.Name, 2)
	time.Sleep(50 * time.Millisecond)
	if n := queueLen(t, e, q.Name); n != 0 {
		t.Fatalf("%d visible before commit", n)
	}
	must(t, ch.TxCommit())
	if n := queueLen(t, e, q.Name); n != 2 {
		t.Fatalf("%d after commit", n)
	}
	publishN(t, ch, "", q.Name, 1)
	must(t, ch.TxRollback())
	if n := queueLen(t, e, q.Name); n != 2 {
		t.Fatalf("%d after rollback", n)
	}

	// Acks are transactional too; a rolled back ack leaves the message
	// unacknowledged, and it can be acked again.
	d, ok, err := ch.Get(q.Name, false)
	must(t, err)
	if !ok {
		t.Fatal("empty")
	}
	must(t, d.Ack(false))
	must(t, ch.TxRollback())
	if st := findQueue(t, e, q.Name).Stats(); st.Unacked != 1 {
		t.Fatalf("after rollback of an ack: %+v", st)
	}
	must(t, d.Ack(false))
	must(t, ch.TxCommit())
	if st := findQueue(t, e, q.Name).Stats(); st.Unacked != 0 || st.Ready != 1 {
		t.Fatalf("after commit of an ack: %+v", st)
	}

	// Mandatory returns happen at commit.
	returns := ch.NotifyReturn(make(chan amqp091.Return, 1))
	must(t, ch.Publish("amq.direct", "nobody", true, false, amqp091.Publishing{Body: []byte("r")}))
	quiet(t, returns, 50*time.Millisecond)
	must(t, ch.TxCommit())
	recv(t, returns, 5*time.Second)
}

func TestTxAndConfirmAreExclusive(t *testing.T) {
	e := startServer(t)
	c := e.dial(t)
	err := chanErr(t, c, func(ch *amqp091.Channel) error {
		if err := ch.Confirm(false); err != nil {
			return err
		}
		return ch.Tx()
	})
	if err == nil || err.Code != 406 {
		t.Fatalf("tx after confirm: %v", err)
	}
	err = chanErr(t, c, func(ch *amqp091.Channel) error {
		if err := ch.Tx(); err != nil {
			return err
		}
		return ch.Confirm(false)
	})
	if err == nil || err.Code != 406 {
		t.Fatalf("confirm after tx: %v", err)
	}
	err = chanErr(t, c, func(ch *amqp091.Channel) error { return ch.TxCommit() })
	if err == nil || err.Code != 406 {
		t.Fatalf("commit without tx.select: %v", err)
	}
}
