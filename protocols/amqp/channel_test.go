package amqp

import (
	"strings"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/protocols/amqp/wire"
)

// chanErr runs op on a fresh channel and returns the error that closed the
// channel (op's own or the one NotifyClose reports).
func chanErr(t *testing.T, c *amqp091.Connection, op func(ch *amqp091.Channel) error) *amqp091.Error {
	t.Helper()
	ch, err := c.Channel()
	must(t, err)
	closed := ch.NotifyClose(make(chan *amqp091.Error, 1))
	if err := op(ch); err != nil {
		if e, ok := err.(*amqp091.Error); ok {
			return e
		}
	}
	return recv(t, closed, 5*time.Second)
}

func TestChannelExceptions(t *testing.T) {
	e := startServer(t, func(o *Options) { o.MaxMessageBytes = 1024 })
	c, ch := e.channel(t)
	_, err := ch.QueueDeclare("durable-q", true, false, false, false, nil)
	must(t, err)

	cases := []struct {
		name string
		code int
		text string
		op   func(ch *amqp091.Channel) error
	}{
		{"passive declare of a missing queue", 404, "no queue 'missing'", func(ch *amqp091.Channel) error {
			_, err := ch.QueueDeclarePassive("missing", false, false, false, false, nil)
			return err
		}},
		{"redeclare with other flags", 406, "inequivalent arg 'durable'", func(ch *amqp091.Channel) error {
			_, err := ch.QueueDeclare("durable-q", false, false, false, false, nil)
			return err
		}},
		{"reserved queue name", 403, "reserved prefix", func(ch *amqp091.Channel) error {
			_, err := ch.QueueDeclare("amq.mine", false, false, false, false, nil)
			return err
		}},
		{"reserved exchange name", 403, "reserved prefix", func(ch *amqp091.Channel) error {
			return ch.ExchangeDeclare("amq.mine", "direct", false, false, false, false, nil)
		}},
		{"publish to a missing exchange", 404, "no exchange 'nowhere'", func(ch *amqp091.Channel) error {
			return ch.Publish("nowhere", "k", false, false, amqp091.Publishing{Body: []byte("x")})
		}},
		{"unknown delivery tag", 406, "unknown delivery tag 42", func(ch *amqp091.Channel) error {
			return ch.Ack(42, false)
		}},
		{"message too large", 406, "larger than configured max size 1024", func(ch *amqp091.Channel) error {
			return ch.Publish("", "durable-q", false, false, amqp091.Publishing{Body: make([]byte, 2000)})
		}},
		{"bind to a missing queue", 404, "no queue 'missing'", func(ch *amqp091.Channel) error {
			return ch.QueueBind("missing", "k", "amq.direct", false, nil)
		}},
		{"bad queue argument", 406, "x-max-length", func(ch *amqp091.Channel) error {
			_, err := ch.QueueDeclare("bad-args", false, false, false, false, amqp091.Table{"x-max-length": "ten"})
			return err
		}},
		{"consume from a missing queue", 404, "no queue", func(ch *amqp091.Channel) error {
			_, err := ch.Consume("missing", "", false, false, false, false, nil)
			return err
		}},
		{"user-id impersonation", 406, "user_id property set to 'root'", func(ch *amqp091.Channel) error {
			return ch.Publish("", "durable-q", false, false, amqp091.Publishing{UserId: "root"})
		}},
		{"invalid expiration", 406, "invalid expiration", func(ch *amqp091.Channel) error {
			return ch.Publish("", "durable-q", false, false, amqp091.Publishing{Expiration: "soon"})
		}},
		{"recover without requeue", 540, "requeue=false", func(ch *amqp091.Channel) error {
			//lint:ignore SA1019 basic.recover is part of the protocol under test
			return ch.Recover(false)
		}},
		{"delete a queue in use", 406, "in use", func(ch *amqp091.Channel) error {
			if _, err := ch.Consume("durable-q", "", false, false, false, false, nil); err != nil {
				return err
			}
			_, err := ch.QueueDelete("durable-q", true, false, false)
			return err
		}},
	}
	for _, tc := range cases {
		if tc.code >= 500 {
			continue
		}
		err := chanErr(t, c, tc.op)
		if err == nil || err.Code != tc.code || !strings.Contains(err.Reason, tc.text) {
			t.Errorf("%s: got %v, want %d containing %q", tc.name, err, tc.code, tc.text)
		}
	}
	// The connection survived every channel exception.
	ch2, err := c.Channel()
	must(t, err)
	_, err = ch2.QueueDeclarePassive("durable-q", true, false, false, false, nil)
	must(t, err)

	// 540 is a connection exception.
	for _, tc := range cases {
		if tc.code < 500 {
			continue
		}
		c2, _ := e.channel(t)
		closed := c2.NotifyClose(make(chan *amqp091.Error, 1))
		_ = chanErr(t, c2, tc.op)
		if err := recv(t, closed, 5*time.Second); err == nil || err.Code != tc.code {
			t.Errorf("%s: connection closed with %v, want %d", tc.name, err, tc.code)
		}
	}
}

func TestExclusiveQueueIsLocked(t *testing.T) {
	e := startServer(t)
	_, ch := e.channel(t)
	q, err := ch.QueueDeclare("mine", false, false, true, false, nil)
	must(t, err)

	c2 := e.dial(t)
	err2 := chanErr(t, c2, func(ch *amqp091.Channel) error {
		_, err := ch.QueueDeclare(q.Name, false, false, true, false, nil)
		return err
	})
	if err2 == nil || err2.Code != 405 {
		t.Fatalf("declare from another connection: %v", err2)
	}
	err2 = chanErr(t, c2, func(ch *amqp091.Channel) error {
		_, err := ch.Consume(q.Name, "", false, false, false, false, nil)
		return err
	})
	if err2 == nil || err2.Code != 405 {
		t.Fatalf("consume from another connection: %v", err2)
	}

	// Exclusive consumers: a second consumer is refused with 403.
	_, err = ch.Consume(q.Name, "first", false, true, false, false, nil)
	must(t, err)
	err2 = chanErr(t, e.dial(t), func(ch *amqp091.Channel) error {
		if _, err := ch.QueueDeclare("shared", false, false, false, false, nil); err != nil {
			return err
		}
		if _, err := ch.Consume("shared", "a", false, true, false, false, nil); err != nil {
			return err
		}
		_, err := ch.Consume("shared", "b", false, false, false, false, nil)
		return err
	})
	if err2 == nil || err2.Code != 403 {
		t.Fatalf("second consumer on an exclusively consumed queue: %v", err2)
	}
}

func TestExclusiveQueueDeletedWithConnection(t *testing.T) {
	e := startServer(t)
	c, ch := e.channel(t)
	_, err := ch.QueueDeclare("ephemeral", false, false, true, false, nil)
	must(t, err)
	must(t, c.Close())
	v, _ := e.b.VHost("/")
	eventually(t, 5*time.Second, func() bool { _, err := v.Queue("ephemeral", 0); return err != nil }, "exclusive queue deletion")
}

func TestUnknownExchangeTypeClosesConnection(t *testing.T) {
	e := startServer(t)
	c, ch := e.channel(t)
	closed := c.NotifyClose(make(chan *amqp091.Error, 1))
	err := ch.ExchangeDeclare("x", "x-nonexistent", false, false, false, false, nil)
	if err == nil {
		t.Fatal("declare succeeded")
	}
	if err := recv(t, closed, 5*time.Second); err == nil || err.Code != 503 {
		t.Fatalf("connection closed with %v", err)
	}
}

func TestImmediateIsNotImplemented(t *testing.T) {
	e := startServer(t)
	c, ch := e.channel(t)
	closed := c.NotifyClose(make(chan *amqp091.Error, 1))
	_ = ch.Publish("", "q", false, true, amqp091.Publishing{Body: []byte("now")})
	if err := recv(t, closed, 5*time.Second); err == nil || err.Code != 540 || !strings.Contains(err.Reason, "immediate=true") {
		t.Fatalf("connection closed with %v", err)
	}
}

func TestChannelFlow(t *testing.T) {
	e := startServer(t)
	_, ch := e.channel(t)
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	must(t, err)
	msgs, err := ch.Consume(q.Name, "", true, false, false, false, nil)
	must(t, err)
	must(t, ch.Flow(false))
	must(t, ch.Publish("", q.Name, false, false, amqp091.Publishing{Body: []byte("paused")}))
	quiet(t, msgs, 200*time.Millisecond)
	must(t, ch.Flow(true))
	if d := recv(t, msgs, 5*time.Second); string(d.Body) != "paused" {
		t.Fatalf("body %q", d.Body)
	}
}

// Raw-socket exceptions: input no well-behaved client sends.

func TestRawFrameOnUnopenedChannel(t *testing.T) {
	e := startServer(t)
	r := dialRaw(t, e.addr)
	r.handshake(0)
	r.send(5, &wire.QueueDeclare{Queue: "q"})
	r.expectConnClose(wire.ChannelError)
}

func TestRawSecondChannelOpen(t *testing.T) {
	e := startServer(t)
	r := dialRaw(t, e.addr)
	r.handshake(0)
	r.send(1, &wire.ChannelOpen{})
	expectMethod[*wire.ChannelOpenOk](r)
	r.send(1, &wire.ChannelOpen{})
	r.expectConnClose(wire.ChannelError)
}

func TestRawUnexpectedFrames(t *testing.T) {
	e := startServer(t)
	// A content header with no basic.publish before it.
	r := dialRaw(t, e.addr)
	r.handshake(0)
	r.send(1, &wire.ChannelOpen{})
	expectMethod[*wire.ChannelOpenOk](r)
	hdr, err := wire.AppendHeader(nil, wire.ClassBasic, 3, &wire.Properties{})
	must(t, err)
	r.frame(wire.FrameHeader, 1, hdr)
	r.expectConnClose(wire.UnexpectedFrame)

	// A method frame where the body should be.
	r = dialRaw(t, e.addr)
	r.handshake(0)
	r.send(1, &wire.ChannelOpen{})
	expectMethod[*wire.ChannelOpenOk](r)
	r.send(1, &wire.BasicPublish{RoutingKey: "q"})
	r.frame(wire.FrameHeader, 1, hdr)
	r.send(1, &wire.BasicQos{PrefetchCount: 1})
	r.expectConnClose(wire.UnexpectedFrame)

	// A body longer than its header announced.
	r = dialRaw(t, e.addr)
	r.handshake(0)
	r.send(1, &wire.ChannelOpen{})
	expectMethod[*wire.ChannelOpenOk](r)
	r.send(1, &wire.BasicPublish{RoutingKey: "q"})
	r.frame(wire.FrameHeader, 1, hdr)
	r.frame(wire.FrameBody, 1, []byte("toolong"))
	r.expectConnClose(wire.FrameError)
}

func TestRawOversizedFrame(t *testing.T) {
	e := startServer(t)
	r := dialRaw(t, e.addr)
	r.handshake(0)
	r.send(1, &wire.ChannelOpen{})
	expectMethod[*wire.ChannelOpenOk](r)
	// Header announcing more than frame-max; the payload never comes.
	r.write([]byte{wire.FrameBody, 0, 1, 0x7f, 0xff, 0xff, 0xff})
	cl := expectMethod[*wire.ConnectionClose](r)
	if cl.ReplyCode != wire.FrameError {
		t.Fatalf("close %d %q", cl.ReplyCode, cl.ReplyText)
	}
	r.expectEOF()
}

func TestRawUnknownMethod(t *testing.T) {
	e := startServer(t)
	r := dialRaw(t, e.addr)
	r.handshake(0)
	r.send(1, &wire.ChannelOpen{})
	expectMethod[*wire.ChannelOpenOk](r)
	r.frame(wire.FrameMethod, 1, []byte{0, 60, 0, 99})
	cl := r.expectConnClose(wire.NotImplemented)
	if cl.FailedClassID != 60 || cl.FailedMethodID != 99 {
		t.Fatalf("close blames %d.%d", cl.FailedClassID, cl.FailedMethodID)
	}
}

func TestRawGarbageAfterHeader(t *testing.T) {
	e := startServer(t)
	r := dialRaw(t, e.addr)
	r.write(wire.ProtocolHeader)
	expectMethod[*wire.ConnectionStart](r)
	r.write([]byte("this is not an AMQP frame at all\r\n"))
	cl := expectMethod[*wire.ConnectionClose](r)
	if cl.ReplyCode != wire.FrameError {
		t.Fatalf("close %d %q", cl.ReplyCode, cl.ReplyText)
	}
	r.expectEOF()

	// Garbage after an open connection: same, and the broker lives on.
	r = dialRaw(t, e.addr)
	r.handshake(0)
	r.write([]byte{wire.FrameMethod, 0, 0, 0, 0, 0, 2, 0xff, 0xff, 0x00})
	cl = expectMethod[*wire.ConnectionClose](r)
	if cl.ReplyCode != wire.FrameError {
		t.Fatalf("close %d %q", cl.ReplyCode, cl.ReplyText)
	}
	r.expectEOF()
	c := e.dial(t)
	_, err := c.Channel()
	must(t, err)
}

func TestRawChannelCloseDiscardsUntilCloseOk(t *testing.T) {
	e := startServer(t)
	r := dialRaw(t, e.addr)
	r.handshake(0)
	r.send(1, &wire.ChannelOpen{})
	expectMethod[*wire.ChannelOpenOk](r)
	r.send(1, &wire.QueueDeclare{Queue: "missing", Passive: true})
	cl := expectMethod[*wire.ChannelClose](r)
	if cl.ReplyCode != wire.NotFound || cl.FailedClassID != wire.ClassQueue || cl.FailedMethodID != 10 {
		t.Fatalf("channel.close %+v", cl)
	}
	// Frames before close-ok are dropped, including content.
	r.send(1, &wire.QueueDeclare{Queue: "dropped"})
	r.send(1, &wire.BasicPublish{RoutingKey: "dropped"})
	r.send(1, &wire.ChannelCloseOk{})
	r.send(1, &wire.ChannelOpen{})
	expectMethod[*wire.ChannelOpenOk](r)
	r.send(1, &wire.QueueDeclare{Queue: "kept"})
	if ok := expectMethod[*wire.QueueDeclareOk](r); ok.Queue != "kept" {
		t.Fatalf("declare-ok %+v", ok)
	}
	v, _ := e.b.VHost("/")
	if _, err := v.Queue("dropped", 0); err == nil {
		t.Fatal("a frame sent during channel close was processed")
	}
	r.send(0, &wire.ConnectionClose{ReplyCode: 200})
	expectMethod[*wire.ConnectionCloseOk](r)
	r.expectEOF()
}

func TestRawMethodOnChannelZero(t *testing.T) {
	e := startServer(t)
	r := dialRaw(t, e.addr)
	r.handshake(0)
	r.send(0, &wire.QueueDeclare{Queue: "q"})
	r.expectConnClose(wire.CommandInvalid)
}

func TestRawChannelMax(t *testing.T) {
	e := startServer(t, func(o *Options) { o.ChannelMax = 4 })
	r := dialRaw(t, e.addr)
	r.handshake(0)
	r.send(4, &wire.ChannelOpen{})
	expectMethod[*wire.ChannelOpenOk](r)
	r.send(5, &wire.ChannelOpen{})
	r.expectConnClose(wire.NotAllowed)
}

func TestReplyCodeMapping(t *testing.T) {
	want := map[core.Kind]uint16{
		core.NotFound: 404, core.AccessRefused: 403, core.ResourceLocked: 405,
		core.PreconditionFailed: 406, core.InvalidArgument: 406, core.NotAllowed: 530,
		core.NotImplemented: 540, core.CommandInvalid: 503, core.ResourceError: 506,
		core.FrameError: 501, core.Internal: 541,
	}
	for k, code := range want {
		if got := replyCode(k); got != code {
			t.Errorf("%v: %d, want %d", k, got, code)
		}
		e := toAMQP(core.Errorf(k, "boom"), &wire.QueueDeclare{})
		if e.code != code || e.classID != 50 || e.methodID != 10 || !strings.HasSuffix(e.replyText(), " - boom") {
			t.Errorf("%v: %+v %q", k, e, e.replyText())
		}
	}
	long := toAMQP(core.Errorf(core.NotFound, "%s", strings.Repeat("é", 300)), nil)
	if n := len(long.replyText()); n > 255 {
		t.Errorf("reply text of %d bytes", n)
	}
}
