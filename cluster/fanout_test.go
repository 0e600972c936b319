package cluster_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/bourse-mq/bourse/cluster"
	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/router"
	"github.com/bourse-mq/bourse/router/queue"
)

// attachFanout gives node i a broker with the fan-out wired in, as
// cmd/bourse does.
func (c *testCluster) attachFanout(i int) *router.Broker {
	c.t.Helper()
	n := c.nodes[i]
	b := router.New(router.Options{Logger: c.opts[i].Logger, Replicator: n.Topology(), Shared: n.Queues(), Fanout: n.Fanout()})
	n.Fanout().Attach(b)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := n.Topology().Start(ctx, b); err != nil {
		c.t.Fatalf("node %d: %v", i, err)
	}
	c.brokers[i] = b
	return b
}

// untilHeard publishes (with publish) until s has received a message, then
// drains s: the fan-out reaches a new binding once NATS has told the
// other servers of its subscription, a moment after the bind.
func untilHeard(t *testing.T, s *sink, publish func(n int)) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for n := 0; ; n++ {
		publish(n)
		select {
		case <-s.ch:
			time.Sleep(300 * time.Millisecond)
			for len(s.ch) > 0 {
				<-s.ch
			}
			return
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("fan-out did not reach the other node within 15s")
		}
	}
}

func msg(exchange, key, body string, h core.Table) *core.Message {
	return &core.Message{Exchange: exchange, RoutingKey: key, Body: []byte(body), Headers: h}
}

// TestFanoutFollowsTopology (router API on three brokers over embedded
// NATS): a node-local queue on node 1 gets, from node 0, messages routed
// through an exchange-to-exchange binding, by a headers exchange, by CC and
// BCC keys, and direct reply-to answers; a mandatory publish reports
// another node's delivery; the node's NATS subscriptions follow its
// bindings and are all gone once the owning connection is closed.
func TestFanoutFollowsTopology(t *testing.T) {
	c := newTestCluster(t, 3)
	b0, b1 := c.attachFanout(0), c.attachFanout(1)
	c.attachFanout(2)
	v0, v1 := vhost(t, b0, "/"), vhost(t, b1, "/")
	f1 := c.nodes[1].Fanout()
	if n := f1.Subscriptions(); n != 0 {
		t.Fatalf("node 1 listens to %d subjects before any binding", n)
	}

	// Durable topology, replicated: up (topic) → amq.topic.
	if err := v0.DeclareExchange(router.ExchangeDecl{ExchangeInfo: router.ExchangeInfo{Name: "up", Type: router.Topic, Durable: true}}); err != nil {
		t.Fatal(err)
	}
	e2e := core.Binding{Source: "up", Dest: core.Dest{Kind: core.ToExchange, Name: "amq.topic"}, Key: "#"}
	if err := v0.Bind(e2e, 0); err != nil {
		t.Fatal(err)
	}
	eventually(t, "e2e binding on node 1", func() bool { return hasBinding(b1, "/", e2e) })

	// Node 1: an exclusive queue of connection 7, bound by a topic pattern
	// and by headers.
	const owner core.ConnID = 7
	if _, err := v1.DeclareQueue(router.QueueDecl{QueueInfo: core.QueueInfo{Name: "local", Exclusive: true}, Owner: owner}); err != nil {
		t.Fatal(err)
	}
	for _, bd := range []core.Binding{
		{Source: "amq.topic", Dest: core.Dest{Kind: core.ToQueue, Name: "local"}, Key: "a.*.c"},
		{Source: "amq.headers", Dest: core.Dest{Kind: core.ToQueue, Name: "local"}, Args: core.Table{"x-match": "all", "k": "v"}},
	} {
		if err := v1.Bind(bd, owner); err != nil {
			t.Fatal(err)
		}
	}
	s := newSink()
	if _, err := v1.Consume("local", s, queue.ConsumeOptions{Tag: "t", Owner: owner, NoAck: true}); err != nil {
		t.Fatal(err)
	}
	withBinds := f1.Subscriptions()
	if withBinds == 0 {
		t.Fatal("node 1 listens to nothing with a node-local queue bound")
	}

	pub := func(m *core.Message, o router.PublishOptions) router.PublishResult {
		t.Helper()
		r, err := v0.Publish(m, o)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	untilHeard(t, s, func(n int) { pub(msg("amq.topic", "a.warm.c", fmt.Sprint("warm", n), nil), router.PublishOptions{}) })
	untilHeard(t, s, func(n int) { pub(msg("up", "a.warm.c", fmt.Sprint("warm", n), nil), router.PublishOptions{}) })

	expect := func(body string) queue.Delivery {
		t.Helper()
		d := s.next(t)
		if string(d.Msg.Body) != body {
			t.Fatalf("got %q, want %q", d.Msg.Body, body)
		}
		return d
	}
	// Through up → amq.topic: node 1 routes it with its own bindings.
	pub(msg("up", "a.b.c", "via-e2e", nil), router.PublishOptions{})
	expect("via-e2e")
	pub(msg("up", "a.b.x", "via-e2e-nomatch", nil), router.PublishOptions{})
	// Headers: the matching one only.
	untilHeard(t, s, func(n int) {
		pub(msg("amq.headers", "", fmt.Sprint("warm", n), core.Table{"k": "v"}), router.PublishOptions{})
	})
	pub(msg("amq.headers", "", "headers-nomatch", core.Table{"k": "w"}), router.PublishOptions{})
	pub(msg("amq.headers", "", "headers-match", core.Table{"k": "v", "other": int32(1)}), router.PublishOptions{})
	if d := expect("headers-match"); d.Msg.Headers["other"] != int32(1) {
		t.Fatalf("headers: %v", d.Msg.Headers)
	}
	// CC and BCC: the key alone would not reach node 1; BCC is removed.
	pub(msg("amq.topic", "nope", "cc", core.Table{"CC": []any{"a.cc.c"}}), router.PublishOptions{})
	if d := expect("cc"); fmt.Sprint(d.Msg.Headers["CC"]) != "[a.cc.c]" {
		t.Fatalf("CC header: %v", d.Msg.Headers)
	}
	pub(msg("amq.topic", "nope", "bcc", core.Table{"BCC": []any{"a.bcc.c"}}), router.PublishOptions{})
	if d := expect("bcc"); d.Msg.Headers["BCC"] != nil {
		t.Fatalf("BCC header delivered: %v", d.Msg.Headers)
	}
	// Mandatory, taken by node 1 only: another node's delivery counts.
	if r := pub(msg("amq.topic", "a.m.c", "mandatory", nil), router.PublishOptions{Mandatory: true}); r.Unroutable() || !r.Remote {
		t.Fatalf("mandatory message delivered on node 1 reported %+v", r)
	}
	expect("mandatory")
	if r := pub(msg("amq.topic", "x.m.c", "mandatory-none", nil), router.PublishOptions{Mandatory: true}); !r.Unroutable() {
		t.Fatalf("mandatory message nobody takes reported %+v", r)
	}
	// Node 1 listens to every amq.headers message but takes none of
	// these: the probe waits for an answer that does not come.
	t0 := time.Now()
	if r := pub(msg("amq.headers", "", "mandatory-headers-none", core.Table{"k": "w"}), router.PublishOptions{Mandatory: true}); !r.Unroutable() {
		t.Fatalf("mandatory message nobody takes reported %+v", r)
	}
	if waited := time.Since(t0); waited < cluster.ProbeWait/2 {
		t.Fatalf("probe answered negatively after %v, but nobody answers negatively", waited)
	}
	s.none(t, 300*time.Millisecond)

	// Direct reply-to: the requester on node 1, the answer from node 0.
	var answers atomic.Int32
	addr, unregister := v1.RegisterReplyTo(func(m *core.Message) bool {
		if string(m.Body) == "answer" {
			answers.Add(1)
		}
		return true
	})
	eventually(t, "reply-to answer on node 1", func() bool {
		pub(msg("", addr, "answer", nil), router.PublishOptions{})
		return answers.Load() > 0
	})

	// Unbinding the headers binding drops its subscriptions; the vhost's
	// e2e binding going drops up's.
	if err := v1.Unbind(core.Binding{Source: "amq.headers", Dest: core.Dest{Kind: core.ToQueue, Name: "local"},
		Args: core.Table{"x-match": "all", "k": "v"}}, owner); err != nil {
		t.Fatal(err)
	}
	afterUnbind := f1.Subscriptions()
	if afterUnbind >= withBinds {
		t.Fatalf("subscriptions %d after an unbind, %d before", afterUnbind, withBinds)
	}
	if err := v0.Unbind(e2e, 0); err != nil {
		t.Fatal(err)
	}
	eventually(t, "node 1 stops listening to exchange up", func() bool { return f1.Subscriptions() < afterUnbind })

	// The connection goes: its queue and bindings with it, and every
	// subscription (the reply-to address's too once unregistered).
	b1.ConnectionClosed(owner)
	unregister()
	if n := f1.Subscriptions(); n != 0 {
		t.Fatalf("node 1 still listens to %d subjects with no node-local queue", n)
	}
	for _, f := range []int{0, 2} {
		if n := c.nodes[f].Fanout().Subscriptions(); n != 0 {
			t.Fatalf("node %d listens to %d subjects without ever having a node-local queue", f, n)
		}
	}
	if n := c.nodes[1].Fanout().Dropped(); n != 0 {
		t.Fatalf("node 1 dropped %d messages", n)
	}
}

// gate is a queue.Consumer whose deliveries block while it is closed: it
// stalls the goroutine that delivers to it, here a node's fan-out
// receiver, as a router that does not keep up would.
type gate struct {
	open chan struct{}
	got  atomic.Int64
}

func (g *gate) Deliver(queue.Delivery) bool   { <-g.open; g.got.Add(1); return true }
func (g *gate) Cancelled(*queue.Queue, error) {}

// TestFanoutSlowNodeDropsNotDisconnects: a node whose fan-out receiver is
// stuck drops what it cannot take (at most once, counted), while its
// control and JetStream connections carry on (topology changes, a shared
// queue's messages); once unstuck it receives fan-out messages again.
func TestFanoutSlowNodeDropsNotDisconnects(t *testing.T) {
	c := newTestCluster(t, 3)
	b0, b1 := c.attachFanout(0), c.attachFanout(1)
	c.attachFanout(2)
	v0, v1 := vhost(t, b0, "/"), vhost(t, b1, "/")
	const owner core.ConnID = 9
	if _, err := v1.DeclareQueue(router.QueueDecl{QueueInfo: core.QueueInfo{Name: "slow", Exclusive: true}, Owner: owner}); err != nil {
		t.Fatal(err)
	}
	if err := v1.Bind(core.Binding{Source: "amq.fanout", Dest: core.Dest{Kind: core.ToQueue, Name: "slow"}}, owner); err != nil {
		t.Fatal(err)
	}
	s := newSink()
	sub, err := v1.Consume("slow", s, queue.ConsumeOptions{Tag: "warm", Owner: owner, NoAck: true})
	if err != nil {
		t.Fatal(err)
	}
	pub := func(body string) {
		t.Helper()
		if _, err := v0.Publish(msg("amq.fanout", "", body, nil), router.PublishOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	untilHeard(t, s, func(n int) { pub(fmt.Sprint("warm", n)) })
	sub.Cancel()
	g := &gate{open: make(chan struct{})}
	if _, err := v1.Consume("slow", g, queue.ConsumeOptions{Tag: "gate", Owner: owner, NoAck: true}); err != nil {
		t.Fatal(err)
	}

	// Node 1's receiver blocks in the first delivery; the flood overflows
	// its buffer.
	const flood = 12000
	for i := range flood {
		pub(fmt.Sprint("flood", i))
	}
	eventually(t, "node 1 drops what it cannot take", func() bool { return c.nodes[1].Fanout().Dropped() > 0 })

	// Control and JetStream connections unaffected.
	if _, err := v0.DeclareQueue(router.QueueDecl{QueueInfo: core.QueueInfo{Name: "shared", Durable: true}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "queue declared on node 0 seen on node 1", func() bool { return hasQueue(b1, "/", "shared") })
	publishConfirmed(t, v0, "", "shared", 3, "s")
	ss, _ := consume(t, v1, "shared", 10)
	for i := range 3 {
		if d := ss.next(t); string(d.Msg.Body) != fmt.Sprint("s", i) {
			t.Fatalf("shared queue on node 1: %q", d.Msg.Body)
		}
	}

	// Unstuck: what was buffered is delivered, then new messages again.
	close(g.open)
	eventually(t, "buffered messages delivered", func() bool {
		return g.got.Load()+int64(c.nodes[1].Fanout().Dropped()) >= flood
	})
	before, dropped := g.got.Load(), c.nodes[1].Fanout().Dropped()
	eventually(t, "fan-out again after the stall", func() bool {
		pub("after")
		time.Sleep(20 * time.Millisecond)
		return g.got.Load() > before
	})
	t.Logf("flood of %d: %d dropped by node 1, %d delivered", flood, dropped, before)
}

// standaloneJetStream starts a one-server JetStream on loopback (with a
// user and password unless user is empty), shut down with the test.
func standaloneJetStream(t *testing.T, user, pass string) *server.Server {
	t.Helper()
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true,
		StoreDir: t.TempDir(), NoSigs: true, NoLog: true, Username: user, Password: pass})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	return srv
}

// TestFanoutNATSMode: two gateways (mode nats) on one standalone server:
// no interest check before a publish there, so a mandatory message nobody
// listens to learns it from the server's no-responders status at once; one
// another gateway takes is delivered once and not reported unroutable.
func TestFanoutNATSMode(t *testing.T) {
	srv := standaloneJetStream(t, "", "")
	var vs []*router.VHost
	for i := range 2 {
		n, err := cluster.Start(context.Background(), cluster.Options{Mode: cluster.ModeNATS, URLs: []string{srv.ClientURL()},
			NodeName: fmt.Sprintf("gw%d", i), Logger: quiet(), StartTimeout: 20 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(n.Close)
		b := router.New(router.Options{Logger: quiet(), Replicator: n.Topology(), Shared: n.Queues(), Fanout: n.Fanout()})
		n.Fanout().Attach(b)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = n.Topology().Start(ctx, b)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		vs = append(vs, vhost(t, b, "/"))
	}
	pub := func(key, body string, mandatory bool) router.PublishResult {
		t.Helper()
		r, err := vs[0].Publish(msg("amq.topic", key, body, nil), router.PublishOptions{Mandatory: mandatory})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	t0 := time.Now()
	if r := pub("nobody", "m0", true); !r.Unroutable() {
		t.Fatalf("mandatory message nobody listens to: %+v", r)
	}
	if waited := time.Since(t0); waited >= cluster.ProbeWait {
		t.Fatalf("no-responders not noticed: waited %v", waited)
	}

	if _, err := vs[1].DeclareQueue(router.QueueDecl{QueueInfo: core.QueueInfo{Name: "mine"}}); err != nil {
		t.Fatal(err)
	}
	if err := vs[1].Bind(core.Binding{Source: "amq.topic", Dest: core.Dest{Kind: core.ToQueue, Name: "mine"}, Key: "k.#"}, 0); err != nil {
		t.Fatal(err)
	}
	s := newSink()
	if _, err := vs[1].Consume("mine", s, queue.ConsumeOptions{Tag: "t", NoAck: true}); err != nil {
		t.Fatal(err)
	}
	untilHeard(t, s, func(n int) { pub("k.warm", fmt.Sprint("warm", n), false) })
	if r := pub("k", "m1", true); r.Unroutable() || !r.Remote {
		t.Fatalf("mandatory message the other gateway took: %+v", r)
	}
	if d := s.next(t); string(d.Msg.Body) != "m1" {
		t.Fatalf("got %q", d.Msg.Body)
	}
	s.none(t, 300*time.Millisecond)
}
