package cluster_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/router"
)

// publishExpiring publishes one persistent message with the given expiration
// ("" for none) to the default exchange and waits for its confirm.
func publishExpiring(t testing.TB, v *router.VHost, q, body, expiration string) {
	t.Helper()
	m := &core.Message{RoutingKey: q, Body: []byte(body)}
	m.Props.DeliveryMode = 2
	m.Props.Expiration = expiration
	errs := make(chan error, 1)
	r, err := v.Publish(m, router.PublishOptions{Confirm: func(err error) { errs <- err }})
	if err != nil || r.Routed == 0 {
		t.Fatalf("publish %s: %+v %v", body, r, err)
	}
	select {
	case err := <-errs:
		if err != nil {
			t.Fatalf("confirm %s: %v", body, err)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("confirm %s: not within 15s", body)
	}
}

// until polls cond every 50 ms for up to d and reports how long it took.
func until(t testing.TB, what string, d time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(start)
}

// expectOnly acks the deliveries of bodies, in order, and fails on any
// other.
func expectOnly(t testing.TB, s *sink, bodies ...string) {
	t.Helper()
	for _, want := range bodies {
		d := s.next(t)
		if string(d.Msg.Body) != want {
			t.Fatalf("%s: got %q, want %q", d.Queue.Config().Name, d.Msg.Body, want)
		}
		d.Queue.Ack(d.ID)
	}
	s.none(t, 300*time.Millisecond)
}

// messagesOn is streamMessages asked through node i.
func messagesOn(t testing.TB, c *testCluster, i int, q string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n, err := c.nodes[i].Queues().Messages(ctx, "/", q)
	if err != nil {
		t.Fatalf("stream of %s: %v", q, err)
	}
	return n
}

func declare(t testing.TB, v *router.VHost, name string, args core.Table) {
	t.Helper()
	if _, err := v.DeclareQueue(router.QueueDecl{QueueInfo: router.QueueInfo{Name: name, Durable: true, Args: args}}); err != nil {
		t.Fatalf("declare %s: %v", name, err)
	}
}

// A queue's x-message-ttl expires its messages in JetStream with nobody
// consuming, and not before the TTL.
func TestSharedQueueMessageTTLWithoutConsumer(t *testing.T) {
	c := newTestCluster(t, 3)
	a, b, _ := c.attach(0), c.attach(1), c.attach(2)
	va, vb := vhost(t, a, "/"), vhost(t, b, "/")
	declare(t, va, "ttl", core.Table{"x-message-ttl": int32(2000)})

	start := time.Now()
	publishConfirmed(t, va, "", "ttl", 5, "m")
	if n := streamMessages(t, c, "ttl"); n != 5 && time.Since(start) < 2*time.Second {
		t.Fatalf("stream holds %d messages before the TTL, want 5", n)
	}
	took := until(t, "messages expired in JetStream", 15*time.Second, func() bool { return streamMessages(t, c, "ttl") == 0 })
	if gone := time.Since(start); gone < 2*time.Second {
		t.Fatalf("messages gone %v after the publish, before their 2s TTL", gone)
	}
	slog.Info("x-message-ttl 2s: stream empty", "after_publish", time.Since(start), "polled", took)

	// A consumer coming later gets what was published since, not the
	// expired ones.
	publishConfirmed(t, vb, "", "ttl", 1, "late")
	s, _ := consume(t, vb, "ttl", 10)
	expectOnly(t, s, "late0")

	// One held unacknowledged past its TTL: JetStream removes it, and
	// still answers its ack (not left to time out as unconfirmed).
	publishConfirmed(t, va, "", "ttl", 1, "held")
	d := s.next(t)
	until(t, "held message removed by JetStream", 15*time.Second, func() bool { return streamMessages(t, c, "ttl") == 0 })
	d.Queue.Ack(d.ID)
	until(t, "ack of the removed message answered", 3*time.Second, func() bool { return c.nodes[1].SettlesInFlight() == 0 })
}

// A message's own expiration expires it in JetStream with nobody consuming
// (rounded up to JetStream's whole seconds); one without expiration stays,
// and a consumer coming later gets only what did not expire.
func TestSharedQueueExpirationWithoutConsumer(t *testing.T) {
	c := newTestCluster(t, 3)
	a, _, cc := c.attach(0), c.attach(1), c.attach(2)
	va, vc := vhost(t, a, "/"), vhost(t, cc, "/")
	declare(t, va, "plain", nil)
	// The queue's x-message-ttl is longer than the message's own: the
	// message's wins.
	declare(t, va, "long", core.Table{"x-message-ttl": int32(600000)})

	start := time.Now()
	for _, q := range []string{"plain", "long"} {
		publishExpiring(t, va, q, "short", "1500")
		publishExpiring(t, va, q, "keep", "")
		publishExpiring(t, va, q, "later", "600000")
	}
	for _, q := range []string{"plain", "long"} {
		until(t, q+": expired message removed", 15*time.Second, func() bool { return streamMessages(t, c, q) == 2 })
		if gone := time.Since(start); gone < 1500*time.Millisecond {
			t.Fatalf("%s: message gone %v after the publish, before its 1.5s expiration", q, gone)
		}
	}
	slog.Info("expiration 1.5s: removed", "after_publish", time.Since(start))
	time.Sleep(500 * time.Millisecond)
	for _, q := range []string{"plain", "long"} {
		if n := streamMessages(t, c, q); n != 2 {
			t.Fatalf("%s: %d messages, want the 2 unexpired", q, n)
		}
		s, _ := consume(t, vc, q, 10)
		expectOnly(t, s, "keep", "later")
	}
}

// With a dead-letter exchange JetStream must not expire (it would drop
// what should be dead-lettered): the reaper node dead-letters the expired
// head messages with reason expired, with no consumer anywhere, and leaves
// the others.
func TestSharedQueueTTLWithDLXWithoutConsumer(t *testing.T) {
	c := newTestCluster(t, 3)
	a, b, _ := c.attach(0), c.attach(1), c.attach(2)
	va, vb := vhost(t, a, "/"), vhost(t, b, "/")
	if err := va.DeclareExchange(router.ExchangeDecl{ExchangeInfo: router.ExchangeInfo{Name: "dlx", Type: router.Fanout, Durable: true}}); err != nil {
		t.Fatal(err)
	}
	declare(t, va, "dead", nil)
	if err := va.Bind(core.Binding{Source: "dlx", Dest: core.Dest{Kind: core.ToQueue, Name: "dead"}}, 0); err != nil {
		t.Fatal(err)
	}
	declare(t, va, "live", core.Table{"x-message-ttl": int32(1500), "x-dead-letter-exchange": "dlx"})
	declare(t, va, "slow", core.Table{"x-message-ttl": int32(600000), "x-dead-letter-exchange": "dlx"})
	start := time.Now()
	publishExpiring(t, va, "live", "x", "")
	publishExpiring(t, va, "live", "y", "200")
	publishExpiring(t, va, "slow", "stay", "")
	took := until(t, "expired messages dead-lettered", 15*time.Second, func() bool {
		return streamMessages(t, c, "live") == 0 && streamMessages(t, c, "dead") == 2
	})
	if gone := time.Since(start); gone < 1500*time.Millisecond {
		t.Fatalf("dead-lettered %v after the publish, before the 1.5s TTL", gone)
	}
	slog.Info("x-message-ttl 1.5s with a DLX: dead-lettered", "after_publish", time.Since(start), "polled", took)
	time.Sleep(500 * time.Millisecond)
	if n, d := streamMessages(t, c, "slow"), streamMessages(t, c, "dead"); n != 1 || d != 2 {
		t.Fatalf("unexpired queue holds %d (want 1), dead-letter queue %d (want 2)", n, d)
	}
	sd, _ := consume(t, vb, "dead", 10)
	for _, want := range []string{"x", "y"} {
		d := sd.next(t)
		deaths, _ := d.Msg.Headers["x-death"].([]any)
		if string(d.Msg.Body) != want || len(deaths) != 1 || deaths[0].(core.Table).String("reason") != "expired" ||
			deaths[0].(core.Table).String("queue") != "live" {
			t.Fatalf("dead letter %q headers %v, want %q expired from live", d.Msg.Body, d.Msg.Headers, want)
		}
		d.Queue.Ack(d.ID)
	}
	sd.none(t, 300*time.Millisecond)
	s, _ := consume(t, vb, "slow", 10)
	expectOnly(t, s, "stay")
}

// A stream made before JetStream expiry (no MaxAge, no per-message TTLs)
// gets them when a node of this version opens its queue (here: a node
// attached later, as at a start); a publish with an expiration to one
// that was not updated yet is stored without its TTL and updates it.
func TestSharedQueueTTLOnLegacyStream(t *testing.T) {
	c := newTestCluster(t, 3)
	a, b := c.attach(0), c.attach(1)
	va, vb := vhost(t, a, "/"), vhost(t, b, "/")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	declare(t, va, "old", core.Table{"x-message-ttl": int32(1000)})
	declare(t, va, "old2", nil)
	for _, q := range []string{"old", "old2"} {
		if err := c.nodes[0].MakeLegacyQueueStream(ctx, "/", q); err != nil {
			t.Fatal(err)
		}
	}
	c.attach(2) // opens every shared queue: "old" is updated
	var cfg jetstream.StreamConfig
	until(t, "legacy stream updated", 10*time.Second, func() bool {
		var err error
		if cfg, err = c.nodes[1].QueueStreamConfig(ctx, "/", "old"); err != nil {
			t.Fatal(err)
		}
		return cfg.AllowMsgTTL
	})
	if cfg.MaxAge != time.Second || cfg.Duplicates != time.Second {
		t.Fatalf("updated legacy stream: max age %v, duplicates %v", cfg.MaxAge, cfg.Duplicates)
	}
	publishConfirmed(t, va, "", "old", 3, "o")
	until(t, "messages expired in the updated stream", 15*time.Second, func() bool { return streamMessages(t, c, "old") == 0 })

	// "old2" has no limits, so nobody updated it: the first publish with
	// an expiration is refused for its Nats-TTL, stored without it, and
	// the stream updated.
	if cfg, err := c.nodes[1].QueueStreamConfig(ctx, "/", "old2"); err != nil || cfg.AllowMsgTTL {
		t.Fatalf("old2 not legacy any more: %v %v", cfg.AllowMsgTTL, err)
	}
	publishExpiring(t, vb, "old2", "first", "1000")
	publishExpiring(t, vb, "old2", "second", "1000")
	publishExpiring(t, vb, "old2", "keep", "")
	until(t, "second expired in JetStream", 15*time.Second, func() bool { return streamMessages(t, c, "old2") == 2 })
	// The first, kept by JetStream, still expires when a node pulls it.
	s, _ := consume(t, va, "old2", 10)
	expectOnly(t, s, "keep")
}

// The reaper's node dying: another node takes the lease (after it expires)
// and dead-letters what expires.
func TestSharedQueueReaperTakesOver(t *testing.T) {
	c := newTestCluster(t, 3)
	var vs []*router.VHost
	for i := range 3 {
		vs = append(vs, vhost(t, c.attach(i), "/"))
	}
	if err := vs[0].DeclareExchange(router.ExchangeDecl{ExchangeInfo: router.ExchangeInfo{Name: "dlx", Type: router.Fanout, Durable: true}}); err != nil {
		t.Fatal(err)
	}
	declare(t, vs[0], "dead", nil)
	if err := vs[0].Bind(core.Binding{Source: "dlx", Dest: core.Dest{Kind: core.ToQueue, Name: "dead"}}, 0); err != nil {
		t.Fatal(err)
	}
	declare(t, vs[0], "live", core.Table{"x-message-ttl": int32(500), "x-dead-letter-exchange": "dlx"})
	reaper := -1
	until(t, "a reaper", 10*time.Second, func() bool {
		for i, n := range c.nodes {
			if n.Reaping() {
				reaper = i
			}
		}
		return reaper >= 0
	})
	c.nodes[reaper].Crash()
	other := (reaper + 1) % 3
	publishExpiring(t, vs[other], "live", "z", "")
	took := until(t, "dead-lettered by the next reaper", 20*time.Second, func() bool {
		return messagesOn(t, c, other, "live") == 0 && messagesOn(t, c, other, "dead") == 1
	})
	slog.Info("reaper crashed: next one dead-lettered", "after", took)
	next := 0
	for i, n := range c.nodes {
		if i != reaper && n.Reaping() {
			next++
		}
	}
	if next != 1 {
		t.Fatalf("%d reapers among the live nodes, want 1", next)
	}
}
