package amqp

import (
	"context"
	"io"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/bourse-mq/bourse/protocols/amqp/wire"
	"github.com/bourse-mq/bourse/router/queue"
)

func TestHandshakeServerProperties(t *testing.T) {
	e := startServer(t)
	c := e.dial(t)
	p := c.Properties
	if p["product"] != "Bourse" || p["version"] == nil || p["platform"] == nil {
		t.Fatalf("server properties %v", p)
	}
	caps, ok := p["capabilities"].(amqp091.Table)
	if !ok {
		t.Fatalf("capabilities %T", p["capabilities"])
	}
	for _, k := range []string{"publisher_confirms", "exchange_exchange_bindings", "basic.nack",
		"consumer_cancel_notify", "connection.blocked", "authentication_failure_close",
		"per_consumer_qos", "direct_reply_to"} {
		if caps[k] != true {
			t.Errorf("capability %s = %v", k, caps[k])
		}
	}
	if c.Major != 0 || c.Minor != 9 {
		t.Errorf("version %d.%d", c.Major, c.Minor)
	}
	// amqp091-go asks for no limits and a 10s heartbeat: the server's
	// limits win for channel-max and frame-max, the lower heartbeat wins.
	if c.Config.ChannelMax != 2047 || c.Config.FrameSize != 131072 || c.Config.Heartbeat != 10*time.Second {
		t.Errorf("tuned channel-max %d frame-max %d heartbeat %v", c.Config.ChannelMax, c.Config.FrameSize, c.Config.Heartbeat)
	}
}

func TestTuneClientLowerValuesWin(t *testing.T) {
	e := startServer(t)
	c := e.dialConfig(t, amqp091.Config{ChannelMax: 10, FrameSize: 8192, Heartbeat: 3 * time.Second})
	if c.Config.ChannelMax != 10 || c.Config.FrameSize != 8192 || c.Config.Heartbeat != 3*time.Second {
		t.Fatalf("tuned %d %d %v", c.Config.ChannelMax, c.Config.FrameSize, c.Config.Heartbeat)
	}
	ch, err := c.Channel()
	must(t, err)
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	must(t, err)
	// A body larger than frame-max is split into several body frames.
	body := make([]byte, 50000)
	for i := range body {
		body[i] = byte(i)
	}
	must(t, ch.Publish("", q.Name, false, false, amqp091.Publishing{Body: body}))
	d, ok, err := ch.Get(q.Name, true)
	must(t, err)
	if !ok || string(d.Body) != string(body) {
		t.Fatalf("get %v len %d", ok, len(d.Body))
	}
}

func TestTuneRejectsTooLargeFrameMax(t *testing.T) {
	e := startServer(t)
	r := dialRaw(t, e.addr)
	r.write(wire.ProtocolHeader)
	expectMethod[*wire.ConnectionStart](r)
	r.send(0, &wire.ConnectionStartOk{Mechanism: "PLAIN", Response: "\x00guest\x00guest"})
	expectMethod[*wire.ConnectionTune](r)
	r.send(0, &wire.ConnectionTuneOk{ChannelMax: 1, FrameMax: 1 << 24, Heartbeat: 0})
	r.expectConnClose(wire.NotAllowed)
}

func TestWrongProtocolHeader(t *testing.T) {
	e := startServer(t)
	for _, h := range []string{"AMQP\x00\x00\x09\x02", "AMQP\x01\x01\x00\x0a", "GET / HTTP/1.1\r\n\r\n"} {
		r := dialRaw(t, e.addr)
		r.write([]byte(h))
		got := make([]byte, 8)
		_ = r.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(r.nc, got); err != nil {
			t.Fatalf("%q: %v", h, err)
		}
		if string(got) != "AMQP\x00\x00\x09\x01" {
			t.Fatalf("%q: server answered %q", h, got)
		}
		r.expectEOF()
	}
}

func TestAuthMechanisms(t *testing.T) {
	e := startServer(t, func(o *Options) { o.Users = map[string]string{"alice": "s3cret", "guest": "guest"} })
	c := e.dialConfig(t, amqp091.Config{SASL: []amqp091.Authentication{&amqp091.AMQPlainAuth{Username: "alice", Password: "s3cret"}}})
	ch, err := c.Channel()
	must(t, err)
	must(t, ch.Close())

	// PLAIN through the URL.
	c2, err := amqp091.Dial("amqp://alice:s3cret@" + e.addr + "/")
	must(t, err)
	must(t, c2.Close())
}

func TestBadPasswordIsAccessRefused(t *testing.T) {
	e := startServer(t)
	for _, auth := range []amqp091.Authentication{
		&amqp091.PlainAuth{Username: "guest", Password: "wrong"},
		&amqp091.AMQPlainAuth{Username: "nobody", Password: "guest"},
	} {
		c, err := amqp091.DialConfig(e.url, amqp091.Config{SASL: []amqp091.Authentication{auth}})
		if err == nil {
			_ = c.Close()
			t.Fatalf("%s: dial succeeded", auth.Mechanism())
		}
		expectCode(t, err, 403)
	}
}

func TestUnknownVHostIsNotAllowed(t *testing.T) {
	e := startServer(t)
	c, err := amqp091.Dial("amqp://guest:guest@" + e.addr + "/nope")
	if err == nil {
		_ = c.Close()
		t.Fatal("dial succeeded")
	}
	expectCode(t, err, 530)

	// A vhost that exists is fine.
	_, err = e.b.AddVHost("other")
	must(t, err)
	c2, err := amqp091.Dial("amqp://guest:guest@" + e.addr + "/other")
	must(t, err)
	must(t, c2.Close())
}

func TestServerSendsHeartbeatsWhenIdle(t *testing.T) {
	e := startServer(t)
	r := dialRaw(t, e.addr)
	r.handshake(1)
	_ = r.nc.SetReadDeadline(time.Now().Add(3 * time.Second))
	for range 2 {
		f, err := r.fr.ReadFrame()
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if f.Type != wire.FrameHeartbeat {
			t.Fatalf("want a heartbeat, got frame type %d", f.Type)
		}
		// Keep the server's monitor happy.
		r.frame(wire.FrameHeartbeat, 0, nil)
	}
}

func TestSilentClientTimesOut(t *testing.T) {
	e := startServer(t)
	r := dialRaw(t, e.addr)
	r.handshake(1)
	start := time.Now()
	// Read (and ignore) the server's heartbeats, send nothing.
	_ = r.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.Copy(io.Discard, r.nc)
	if err != nil {
		t.Fatalf("want EOF, got %v", err)
	}
	if d := time.Since(start); d < 1500*time.Millisecond || d > 5*time.Second {
		t.Fatalf("closed after %v; want about two heartbeat intervals", d)
	}
}

func TestClientCloseAndChannels(t *testing.T) {
	e := startServer(t)
	c := e.dial(t)
	var chs []*amqp091.Channel
	for range 5 {
		ch, err := c.Channel()
		must(t, err)
		chs = append(chs, ch)
	}
	must(t, chs[2].Close())
	ch, err := c.Channel() // reuses the freed number
	must(t, err)
	_, err = ch.QueueDeclare("", false, true, true, false, nil)
	must(t, err)
	must(t, c.Close())
}

func TestShutdownClosesConnectionsWithConnectionForced(t *testing.T) {
	e := startServer(t)
	c := e.dial(t)
	closed := c.NotifyClose(make(chan *amqp091.Error, 1))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	must(t, e.srv.Shutdown(ctx))
	err := recv(t, closed, 5*time.Second)
	if err == nil || err.Code != 320 {
		t.Fatalf("close %v", err)
	}
	if _, err := amqp091.Dial(e.url); err == nil {
		t.Fatal("dial after shutdown succeeded")
	}
}

func TestConnectionBlocked(t *testing.T) {
	e := startServer(t)
	c, ch := e.channel(t)
	blocked := c.NotifyBlocked(make(chan amqp091.Blocking, 4))
	q, err := ch.QueueDeclare("blocked-q", false, false, false, false, nil)
	must(t, err)

	e.srv.SetBlocked(true, "low on memory")
	// A blocked connection reads nothing after a publish, not even
	// connection.close: unblock before the clients close.
	t.Cleanup(func() { e.srv.SetBlocked(false, "") })
	b := recv(t, blocked, 5*time.Second)
	if !b.Active || b.Reason != "low on memory" {
		t.Fatalf("blocking %+v", b)
	}
	must(t, ch.Publish("", q.Name, false, false, amqp091.Publishing{Body: []byte("held")}))
	time.Sleep(200 * time.Millisecond)
	if n := queueLen(t, e, q.Name); n != 0 {
		t.Fatalf("publish went through while blocked: %d ready", n)
	}

	// A connection opened while blocked is told right after open-ok.
	r := dialRaw(t, e.addr)
	r.handshake(0)
	if b := expectMethod[*wire.ConnectionBlocked](r); b.Reason != "low on memory" {
		t.Fatalf("second connection %+v", b)
	}

	e.srv.SetBlocked(false, "")
	if b := recv(t, blocked, 5*time.Second); b.Active {
		t.Fatalf("unblocking %+v", b)
	}
	eventually(t, 5*time.Second, func() bool { return queueLen(t, e, q.Name) == 1 }, "publish after unblock")
	expectMethod[*wire.ConnectionUnblocked](r)
}

func TestUpdateSecret(t *testing.T) {
	e := startServer(t)
	c := e.dial(t)
	must(t, c.UpdateSecret("new", "rotation"))
}

func queueLen(t testing.TB, e *env, name string) int {
	t.Helper()
	return findQueue(t, e, name).Stats().Ready
}

// findQueue returns a queue of vhost "/" whatever its owner.
func findQueue(t testing.TB, e *env, name string) *queue.Queue {
	t.Helper()
	v, err := e.b.VHost("/")
	must(t, err)
	for _, q := range v.Queues() {
		if q.Name() == name {
			return q
		}
	}
	t.Fatalf("no queue %q", name)
	return nil
}
