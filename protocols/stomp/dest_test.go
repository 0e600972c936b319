package stomp

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	gostomp "github.com/go-stomp/stomp/v3"
	"github.com/go-stomp/stomp/v3/frame"

	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/router"
	"github.com/bourse-mq/bourse/router/queue"
)

func TestParseDestination(t *testing.T) {
	good := map[string]destination{
		"/queue/a":             {kind: destQueue, name: "a"},
		"/queue/a%2Fb":         {kind: destQueue, name: "a/b"},
		"/topic/x.*.#":         {kind: destTopic, name: "x.*.#"},
		"/exchange/E":          {kind: destExchange, name: "E"},
		"/exchange/E/k.1":      {kind: destExchange, name: "E", key: "k.1"},
		"/exchange/E/":         {kind: destExchange, name: "E"},
		"/amq/queue/q":         {kind: destAMQQueue, name: "q"},
		"/temp-queue/foo":      {kind: destTempQueue, name: "foo"},
		"/reply-queue/amq/x/y": {kind: destReplyQueue, name: "amq/x/y"},
		"/stream/s":            {kind: destStream, name: "s"},
	}
	for in, want := range good {
		got, err := parseDestination(in)
		if err != nil || got != want {
			t.Errorf("%q: got %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "queue/a", "/queue/", "/queue/a/b", "/exchange//k", "/exchange/E/k/x", "/topic/", "/foo/bar"} {
		if _, err := parseDestination(in); err == nil {
			t.Errorf("%q: want an error", in)
		}
	}
}

func TestFormatDestinationRoundTrip(t *testing.T) {
	cases := []struct{ ex, key string }{
		{"", "q"}, {"", "a/b%c"}, {"amq.topic", "spBv1.0/x"}, {"E", ""}, {"E/x", "k/é"}, {"amq.direct", "k"},
	}
	for _, c := range cases {
		s := formatDestination(c.ex, c.key)
		d, err := parseDestination(s)
		if err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		var ex, key string
		switch d.kind {
		case destQueue:
			ex, key = "", d.name
		case destTopic:
			ex, key = "amq.topic", d.name
		case destExchange:
			ex, key = d.name, d.key
		}
		if ex != c.ex || key != c.key {
			t.Errorf("%q/%q → %q → %q/%q", c.ex, c.key, s, ex, key)
		}
	}
}

func TestQueueDestination(t *testing.T) {
	e := start(t, Options{})
	c := e.client()
	sub, err := c.Subscribe("/queue/work", gostomp.AckAuto)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Send("/queue/work", "text/plain", []byte("hello"), gostomp.SendOpt.Receipt); err != nil {
		t.Fatal(err)
	}
	m := recv(t, sub)
	if string(m.Body) != "hello" || m.Destination != "/queue/work" || m.ContentType != "text/plain" {
		t.Fatalf("got %q dest %q ct %q", m.Body, m.Destination, m.ContentType)
	}
	if m.Header.Get("content-length") != "5" || m.Header.Get("redelivered") != "false" {
		t.Fatalf("headers %v", m.Header)
	}
	q, err := e.vhost().Queue("work", 0)
	if err != nil {
		t.Fatal(err)
	}
	if cfg := q.Config(); !cfg.Durable || cfg.Exclusive || cfg.AutoDelete {
		t.Fatalf("/queue/ must declare a durable shared queue: %+v", cfg)
	}
	// SEND alone declares it too, as RabbitMQ.
	if err := c.Send("/queue/declared-by-send", "", []byte("x"), gostomp.SendOpt.Receipt); err != nil {
		t.Fatal(err)
	}
	if _, err := e.vhost().Queue("declared-by-send", 0); err != nil {
		t.Fatal(err)
	}
}

func TestTopicDestination(t *testing.T) {
	e := start(t, Options{})
	c1, c2 := e.client(), e.client()
	s1, err := c1.Subscribe("/topic/news.*", gostomp.AckAuto, gostomp.SubscribeOpt.Id("a"))
	if err != nil {
		t.Fatal(err)
	}
	s2, err := c2.Subscribe("/topic/news.sport", gostomp.AckClientIndividual, gostomp.SubscribeOpt.Id("b"))
	if err != nil {
		t.Fatal(err)
	}
	// A RECEIPT on a later frame shows both SUBSCRIBEs are processed.
	for _, c := range []*gostomp.Conn{c1, c2} {
		if err := c.Send("/topic/unrelated", "", nil, gostomp.SendOpt.Receipt); err != nil {
			t.Fatal(err)
		}
	}
	if err := c1.Send("/topic/news.sport", "", []byte("goal"), gostomp.SendOpt.Receipt); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*gostomp.Subscription{s1, s2} {
		m := recv(t, s)
		if string(m.Body) != "goal" || m.Destination != "/topic/news.sport" {
			t.Fatalf("got %q at %q", m.Body, m.Destination)
		}
		if err := m.Conn.Ack(m); err != nil {
			t.Fatal(err)
		}
	}
	var subQueues []string
	for _, q := range e.vhost().Queues() {
		if strings.HasPrefix(q.Name(), "stomp-subscription-") {
			if cfg := q.Config(); !cfg.Exclusive || !cfg.AutoDelete || cfg.Durable {
				t.Fatalf("topic subscription queue must be exclusive auto-delete: %+v", cfg)
			}
			subQueues = append(subQueues, q.Name())
		}
	}
	if len(subQueues) != 2 {
		t.Fatalf("want 2 subscription queues, got %v", subQueues)
	}
	unsubscribe(t, s1)
	waitFor(t, "the unsubscribed queue to go", func() bool {
		n := 0
		for _, q := range e.vhost().Queues() {
			if strings.HasPrefix(q.Name(), "stomp-subscription-") {
				n++
			}
		}
		return n == 1
	})
}

func TestExchangeDestination(t *testing.T) {
	e := start(t, Options{})
	if err := e.vhost().DeclareExchange(router.ExchangeDecl{ExchangeInfo: router.ExchangeInfo{Name: "orders", Type: router.Direct}}); err != nil {
		t.Fatal(err)
	}
	c := e.client()
	sub, err := c.Subscribe("/exchange/orders/eu", gostomp.AckAuto)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Send("/exchange/orders/us", "", []byte("not for eu"), gostomp.SendOpt.Receipt); err != nil {
		t.Fatal(err)
	}
	if err := c.Send("/exchange/orders/eu", "", []byte("for eu"), gostomp.SendOpt.Receipt); err != nil {
		t.Fatal(err)
	}
	m := recv(t, sub)
	if string(m.Body) != "for eu" || m.Destination != "/exchange/orders/eu" {
		t.Fatalf("got %q at %q", m.Body, m.Destination)
	}

	r := e.raw()
	r.connect("1.2")
	r.send("SUBSCRIBE\nid:1\ndestination:/exchange/missing/k\n\n\x00")
	f := r.expectError("not_found")
	if !strings.Contains(string(f.Body), "NOT_FOUND - no exchange 'missing'") {
		t.Fatalf("body %q", f.Body)
	}
}

func TestAMQQueueDestination(t *testing.T) {
	e := start(t, Options{})
	if _, err := e.vhost().DeclareQueue(router.QueueDecl{QueueInfo: core.QueueInfo{Name: "existing", Durable: true}}); err != nil {
		t.Fatal(err)
	}
	c := e.client()
	sub, err := c.Subscribe("/amq/queue/existing", gostomp.AckAuto)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Send("/amq/queue/existing", "", []byte("x"), gostomp.SendOpt.Receipt); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, sub); string(m.Body) != "x" || m.Destination != "/queue/existing" {
		t.Fatalf("got %q at %q", m.Body, m.Destination)
	}
	r := e.raw()
	r.connect("1.2")
	r.send("SUBSCRIBE\nid:1\ndestination:/amq/queue/nope\nreceipt:r1\n\n\x00")
	f := r.expectError("not_found")
	if f.Header.Get("receipt-id") != "r1" {
		t.Fatalf("ERROR should name the failing frame's receipt: %v", f.Header)
	}
	if _, err := e.vhost().Queue("nope", 0); !errors.Is(err, core.ErrNotFound) {
		t.Fatalf("/amq/queue/ must not declare: %v", err)
	}
}

func TestStreamDestinations(t *testing.T) {
	e := start(t, Options{})
	v := e.vhost()
	if _, err := v.DeclareQueue(router.QueueDecl{QueueInfo: core.QueueInfo{Name: "events", Durable: true,
		Args: core.Table{"x-queue-type": "stream"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := v.DeclareQueue(router.QueueDecl{QueueInfo: core.QueueInfo{Name: "plain", Durable: true}}); err != nil {
		t.Fatal(err)
	}
	c := e.client()
	for i := 0; i < 20; i++ {
		if err := c.Send("/stream/events", "text/plain", []byte(fmt.Sprintf("e%d", i)), gostomp.SendOpt.Receipt); err != nil {
			t.Fatal(err)
		}
	}
	read := func(dest string, n int, hdrs ...string) []string {
		t.Helper()
		opts := []func(*frame.Frame) error{}
		for i := 0; i+1 < len(hdrs); i += 2 {
			opts = append(opts, gostomp.SubscribeOpt.Header(hdrs[i], hdrs[i+1]))
		}
		sub, err := c.Subscribe(dest, gostomp.AckClientIndividual, opts...)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for len(got) < n {
			select {
			case m := <-sub.C:
				if m.Err != nil {
					t.Fatal(m.Err)
				}
				got = append(got, m.Header.Get("x-stream-offset")+":"+string(m.Body))
				if err := c.Ack(m); err != nil {
					t.Fatal(err)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("%s: got %d of %d: %v", dest, len(got), n, got)
			}
		}
		unsubscribe(t, sub)
		return got
	}
	got := read("/stream/events", 20, "x-stream-offset", "first")
	if got[0] != "0:e0" || got[19] != "19:e19" {
		t.Fatalf("from first: %v", got)
	}
	if got := read("/amq/queue/events", 5, "x-stream-offset", "offset=15"); got[0] != "15:e15" || got[4] != "19:e19" {
		t.Fatalf("from 15: %v", got)
	}
	if got := read("/stream/events", 4, "x-stream-offset", "16", "x-stream-consumer-name", "web"); got[0] != "16:e16" {
		t.Fatalf("named from 16: %v", got)
	}
	if off, ok := mustQueue(t, v, "events").StreamOffset("web"); !ok || off != 20 {
		t.Fatalf("named offset after acks: %d %v", off, ok)
	}
	for _, bad := range []string{"SUBSCRIBE\nid:1\ndestination:/stream/plain", "SEND\ndestination:/stream/plain", "SUBSCRIBE\nid:2\ndestination:/stream/missing"} {
		r := e.raw()
		r.connect("1.2")
		r.send(bad + "\n\n\x00")
		r.expectError("")
	}
	r := e.raw()
	r.connect("1.2")
	r.send("SUBSCRIBE\nid:3\ndestination:/stream/events\nx-stream-offset:sideways\n\n\x00")
	r.expectError("")
}

func mustQueue(t *testing.T, v *router.VHost, name string) *queue.Queue {
	t.Helper()
	q, err := v.Queue(name, 0)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// TestTempQueueRPC: a SEND with reply-to:/temp-queue/foo gets a private
// reply queue; the replier sees reply-to:/reply-queue/<name> (AMQP sees
// <name>) and its reply arrives as a MESSAGE for subscription and
// destination /temp-queue/foo.
func TestTempQueueRPC(t *testing.T) {
	e := start(t, Options{})
	server := e.client()
	requests, err := server.Subscribe("/queue/rpc", gostomp.AckAuto)
	if err != nil {
		t.Fatal(err)
	}
	if err := server.Send("/queue/sync", "", nil, gostomp.SendOpt.Receipt); err != nil {
		t.Fatal(err)
	}
	client := e.client()
	// go-stomp routes MESSAGEs whose subscription is the reply-to to this
	// client-side subscription; it sends no SUBSCRIBE.
	replies, err := client.Subscribe("/temp-queue/foo", gostomp.AckAuto, gostomp.SubscribeOpt.Header("reply-to", "/temp-queue/foo"))
	if err != nil {
		t.Fatal(err)
	}
	if err := client.Send("/queue/rpc", "", []byte("ping"), gostomp.SendOpt.Header("reply-to", "/temp-queue/foo"), gostomp.SendOpt.Receipt); err != nil {
		t.Fatal(err)
	}
	req := recv(t, requests)
	rt := req.Header.Get("reply-to")
	name, ok := strings.CutPrefix(rt, "/reply-queue/")
	if !ok || !strings.HasPrefix(name, "amq.gen-") {
		t.Fatalf("reply-to %q", rt)
	}
	q, err := e.vhost().Queue(name, 0)
	if err == nil || !errors.Is(err, core.ErrResourceLocked) {
		t.Fatalf("the temp queue must be exclusive to its connection: %v %v", q, err)
	}
	if err := server.Send(rt, "", []byte("pong"), gostomp.SendOpt.Receipt); err != nil {
		t.Fatal(err)
	}
	m := recv(t, replies)
	if string(m.Body) != "pong" || m.Header.Get("subscription") != "/temp-queue/foo" || m.Destination != "/temp-queue/foo" {
		t.Fatalf("reply %q headers %v", m.Body, m.Header)
	}
	// A second request reuses the same queue.
	if err := client.Send("/queue/rpc", "", []byte("ping2"), gostomp.SendOpt.Header("reply-to", "/temp-queue/foo"), gostomp.SendOpt.Receipt); err != nil {
		t.Fatal(err)
	}
	if rt2 := recv(t, requests).Header.Get("reply-to"); rt2 != rt {
		t.Fatalf("second reply-to %q, first %q", rt2, rt)
	}
	// The queue goes with its connection.
	_ = client.Disconnect()
	waitFor(t, "the temp queue to be deleted", func() bool {
		_, err := e.vhost().Queue(name, 0)
		return errors.Is(err, core.ErrNotFound)
	})

	r := e.raw()
	r.connect("1.2")
	r.send("SEND\ndestination:/temp-queue/foo\n\nx\x00")
	r.expectError("Invalid destination")
}

// TestDurableTopicSubscription: a durable subscription's queue keeps the
// messages published while its client is away, and UNSUBSCRIBE with
// durable:true deletes it.
func TestDurableTopicSubscription(t *testing.T) {
	e := start(t, Options{})
	durable := []func(*frame.Frame) error{gostomp.SubscribeOpt.Id("sub-1"), gostomp.SubscribeOpt.Header("durable", "true")}
	c := e.client()
	sub, err := c.Subscribe("/topic/prices", gostomp.AckClientIndividual, durable...)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Send("/topic/prices", "", []byte("0"), gostomp.SendOpt.Receipt); err != nil {
		t.Fatal(err)
	}
	m := recv(t, sub)
	if err := c.Ack(m); err != nil {
		t.Fatal(err)
	}
	if err := c.Disconnect(); err != nil {
		t.Fatal(err)
	}
	name := subscriptionQueueName("prices", "sub-1", true)
	waitFor(t, "the consumer to go", func() bool {
		q, err := e.vhost().Queue(name, 0)
		return err == nil && q.Consumers() == 0
	})
	p := e.client()
	for _, body := range []string{"1", "2", "3"} {
		if err := p.Send("/topic/prices", "", []byte(body), gostomp.SendOpt.Receipt); err != nil {
			t.Fatal(err)
		}
	}
	c = e.client()
	sub, err = c.Subscribe("/topic/prices", gostomp.AckClientIndividual, durable...)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"1", "2", "3"} {
		m := recv(t, sub)
		if string(m.Body) != want {
			t.Fatalf("got %q want %q", m.Body, want)
		}
		if err := c.Ack(m); err != nil {
			t.Fatal(err)
		}
	}
	if cfg, err := e.vhost().Queue(name, 0); err != nil || !cfg.Durable() {
		t.Fatalf("durable subscription queue: %v", err)
	}
	unsubscribe(t, sub, gostomp.SubscribeOpt.Header("durable", "true"))
	waitFor(t, "the durable queue to be deleted", func() bool {
		_, err := e.vhost().Queue(name, 0)
		return errors.Is(err, core.ErrNotFound)
	})

	r := e.raw()
	r.connect("1.2")
	r.send("SUBSCRIBE\ndestination:/topic/x\ndurable:true\n\n\x00")
	r.expectError("Missing header")
}

func TestQueueArgumentsMismatch(t *testing.T) {
	e := start(t, Options{})
	if _, err := e.vhost().DeclareQueue(router.QueueDecl{QueueInfo: core.QueueInfo{Name: "plain", Durable: true}}); err != nil {
		t.Fatal(err)
	}
	// Without queue headers the existing queue is used as it is.
	c := e.client()
	if _, err := c.Subscribe("/queue/plain", gostomp.AckAuto); err != nil {
		t.Fatal(err)
	}
	if err := c.Send("/queue/sync", "", nil, gostomp.SendOpt.Receipt); err != nil {
		t.Fatal(err)
	}
	// With them, a mismatch is RabbitMQ's 406.
	r := e.raw()
	r.connect("1.2")
	r.send("SUBSCRIBE\nid:1\ndestination:/queue/plain\nx-max-length:10\n\n\x00")
	f := r.expectError("precondition_failed")
	if !strings.Contains(string(f.Body), "PRECONDITION_FAILED - inequivalent arg 'x-max-length'") {
		t.Fatalf("body %q", f.Body)
	}
	// Queue headers on a new queue set its arguments.
	r = e.raw()
	r.connect("1.2")
	r.send("SUBSCRIBE\nid:1\ndestination:/queue/limited\nx-max-length:2\nx-queue-type:classic\nreceipt:ok\n\n\x00")
	r.expect(frame.RECEIPT)
	q, err := e.vhost().Queue("limited", 0)
	if err != nil || q.Config().Args.MaxLength != 2 {
		t.Fatalf("args not applied: %v", err)
	}
	_ = time.Second
}

// TestSetBlockedStopsSenders: while blocked, a SEND is not handled (no
// RECEIPT); after unblocking it is.
func TestSetBlockedStopsSenders(t *testing.T) {
	e := start(t, Options{})
	c := e.client()
	sub, err := c.Subscribe("/queue/flow", gostomp.AckAuto)
	if err != nil {
		t.Fatal(err)
	}
	e.srv.SetBlocked(true, "disk alarm")
	sent := make(chan error, 1)
	go func() { sent <- c.Send("/queue/flow", "text/plain", []byte("held"), gostomp.SendOpt.Receipt) }()
	select {
	case err := <-sent:
		t.Fatalf("RECEIPT while blocked: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	e.srv.SetBlocked(false, "")
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-sub.C:
		if string(m.Body) != "held" {
			t.Fatalf("got %q", m.Body)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("message not delivered after unblock")
	}
	unsubscribe(t, sub)
}
