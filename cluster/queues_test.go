package cluster_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/bourse-mq/bourse/cluster"
	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/router"
	"github.com/bourse-mq/bourse/router/queue"
)

// sink is a queue.Consumer that records deliveries.
type sink struct {
	ch chan queue.Delivery
}

func newSink() *sink                             { return &sink{ch: make(chan queue.Delivery, 1000)} }
func (s *sink) Deliver(d queue.Delivery) bool    { s.ch <- d; return true }
func (s *sink) Cancelled(*queue.Queue, error)    {}
func (s *sink) next(t testing.TB) queue.Delivery { t.Helper(); return s.within(t, 10*time.Second) }
func (s *sink) within(t testing.TB, d time.Duration) queue.Delivery {
	t.Helper()
	select {
	case dv := <-s.ch:
		return dv
	case <-time.After(d):
		t.Fatalf("no delivery within %v", d)
		return queue.Delivery{}
	}
}

func (s *sink) none(t testing.TB, d time.Duration) {
	t.Helper()
	select {
	case dv := <-s.ch:
		t.Fatalf("unexpected delivery %q", dv.Msg.Body)
	case <-time.After(d):
	}
}

func consume(t testing.TB, v *router.VHost, q string, prefetch int) (*sink, *queue.Sub) {
	t.Helper()
	s := newSink()
	var sub *queue.Sub
	eventually(t, "queue "+q+" on this node", func() bool {
		var err error
		sub, err = v.Consume(q, s, queue.ConsumeOptions{Tag: "t", Prefetch: prefetch})
		return err == nil
	})
	return s, sub
}

// publishConfirmed publishes n messages and waits for every confirm.
func publishConfirmed(t testing.TB, v *router.VHost, exchange, key string, n int, prefix string) {
	t.Helper()
	errs := make(chan error, n)
	for i := range n {
		m := &core.Message{Exchange: exchange, RoutingKey: key, Body: fmt.Appendf(nil, "%s%d", prefix, i),
			Headers: core.Table{"i": int64(i)}}
		m.Props.DeliveryMode = 2
		m.Props.MessageID = fmt.Sprintf("%s%d", prefix, i)
		r, err := v.Publish(m, router.PublishOptions{Confirm: func(err error) { errs <- err }})
		if err != nil || r.Routed == 0 {
			t.Fatalf("publish %d: %+v %v", i, r, err)
		}
	}
	for range n {
		select {
		case err := <-errs:
			if err != nil {
				t.Fatalf("confirm: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Fatal("confirms not within 15s")
		}
	}
}

func streamMessages(t testing.TB, c *testCluster, q string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n, err := c.nodes[0].Queues().Messages(ctx, "/", q)
	if err != nil {
		t.Fatalf("stream of %s: %v", q, err)
	}
	return n
}

func TestSharedQueueMessagesCrossNodes(t *testing.T) {
	c := newTestCluster(t, 3)
	a, b, cc := c.attach(0), c.attach(1), c.attach(2)
	va, vb, vc := vhost(t, a, "/"), vhost(t, b, "/"), vhost(t, cc, "/")
	if _, err := va.DeclareQueue(router.QueueDecl{QueueInfo: router.QueueInfo{Name: "jobs", Durable: true}}); err != nil {
		t.Fatal(err)
	}

	// Confirmed on A means stored in the queue's stream: with no consumer
	// anywhere, every confirmed message is in JetStream at confirm time,
	// and none was enqueued on A itself.
	publishConfirmed(t, va, "", "jobs", 20, "m")
	if n := streamMessages(t, c, "jobs"); n != 20 {
		t.Fatalf("stream holds %d messages after 20 confirms", n)
	}
	if q, _ := va.Queue("jobs", 0); q.Stats().Ready != 0 {
		t.Fatalf("publishing node enqueued locally: %+v", q.Stats())
	}

	// Consumed on B with a prefetch of 5: B never holds more than 5 and
	// everything arrives once, in order, with its properties and headers.
	s, sub := consume(t, vb, "jobs", 5)
	for i := range 20 {
		d := s.next(t)
		if string(d.Msg.Body) != fmt.Sprintf("m%d", i) || d.Msg.Props.MessageID != fmt.Sprintf("m%d", i) ||
			d.Msg.Headers["i"] != int64(i) || !d.Msg.Persistent() || d.Redelivered {
			t.Fatalf("delivery %d: %q %+v redelivered=%v", i, d.Msg.Body, d.Msg.Props, d.Redelivered)
		}
		if st := d.Queue.Stats(); st.Unacked > 5 {
			t.Fatalf("node B holds %d unacked with a prefetch of 5", st.Unacked)
		}
		if i%5 == 4 {
			// B's credit is used up until it acks.
			s.none(t, 100*time.Millisecond)
			for id := d.ID - 4; id <= d.ID; id++ {
				if !d.Queue.Ack(id) {
					t.Fatalf("ack %d", id)
				}
			}
		}
	}
	eventually(t, "acked messages removed from the stream", func() bool { return streamMessages(t, c, "jobs") == 0 })

	// Nack with requeue: redelivered, flagged, on A or B.
	s2, sub2 := consume(t, va, "jobs", 1)
	publishConfirmed(t, vc, "", "jobs", 1, "n")
	var d queue.Delivery
	select {
	case d = <-s.ch:
	case d = <-s2.ch:
	case <-time.After(10 * time.Second):
		t.Fatal("no delivery")
	}
	if d.Redelivered || d.Count != 1 {
		t.Fatalf("first delivery: redelivered=%v count=%d", d.Redelivered, d.Count)
	}
	d.Queue.Reject(d.ID, true)
	select {
	case d = <-s.ch:
	case d = <-s2.ch:
	case <-time.After(10 * time.Second):
		t.Fatal("requeued message not redelivered")
	}
	if !d.Redelivered || d.Count != 2 || string(d.Msg.Body) != "n0" {
		t.Fatalf("redelivery: %q redelivered=%v count=%d", d.Msg.Body, d.Redelivered, d.Count)
	}
	d.Queue.Ack(d.ID)
	sub.Cancel()
	sub2.Cancel()
	eventually(t, "stream empty", func() bool { return streamMessages(t, c, "jobs") == 0 })

	// basic.get on C pulls from the stream. (A and B's last pull requests
	// may be pending for up to a second after their consumers left: a
	// message they took would come back flagged redelivered.)
	time.Sleep(1200 * time.Millisecond)
	publishConfirmed(t, va, "", "jobs", 1, "g")
	q, err := vc.Queue("jobs", 0)
	if err != nil {
		t.Fatal(err)
	}
	// A pull request A or B left open can still take the message and give
	// it back (flagged redelivered, the documented limitation): under load
	// the sleep above may not be enough, so get until it comes.
	var gd queue.Delivery
	ok := false
	for deadline := time.Now().Add(15 * time.Second); !ok && time.Now().Before(deadline); {
		if gd, _, ok = q.Get(false); !ok {
			time.Sleep(50 * time.Millisecond)
		}
	}
	if !ok || string(gd.Msg.Body) != "g0" {
		t.Fatalf("get: %v %+v", ok, gd)
	}
	if _, _, ok := q.Get(false); ok {
		t.Fatal("second get found a message")
	}
	q.Ack(gd.ID)
	eventually(t, "stream empty after the get", func() bool { return streamMessages(t, c, "jobs") == 0 })
}

func TestSharedQueueCompetingConsumers(t *testing.T) {
	c := newTestCluster(t, 3)
	a, b, cc := c.attach(0), c.attach(1), c.attach(2)
	va, vb, vc := vhost(t, a, "/"), vhost(t, b, "/"), vhost(t, cc, "/")
	if _, err := vc.DeclareQueue(router.QueueDecl{QueueInfo: router.QueueInfo{Name: "work", Durable: true}}); err != nil {
		t.Fatal(err)
	}
	sa, suba := consume(t, va, "work", 10)
	sb, subb := consume(t, vb, "work", 10)
	const n = 200
	var mu sync.Mutex
	seen := map[string]int{}
	perNode := [2]int{}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for i, s := range []*sink{sa, sb} {
		wg.Go(func() {
			for {
				select {
				case d := <-s.ch:
					mu.Lock()
					seen[string(d.Msg.Body)]++
					perNode[i]++
					mu.Unlock()
					// A slow consumer, so that both nodes get work.
					time.Sleep(time.Millisecond)
					d.Queue.Ack(d.ID)
				case <-stop:
					return
				}
			}
		})
	}
	publishConfirmed(t, vc, "", "work", n, "w")
	eventually(t, "every message consumed", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) == n
	})
	time.Sleep(200 * time.Millisecond) // a duplicate would show up now
	close(stop)
	wg.Wait()
	suba.Cancel()
	subb.Cancel()
	for body, k := range seen {
		if k != 1 {
			t.Errorf("%s delivered %d times", body, k)
		}
	}
	if perNode[0] == 0 || perNode[1] == 0 {
		t.Fatalf("one node got nothing: %v", perNode)
	}
	t.Logf("deliveries per node: %v", perNode)
	eventually(t, "stream empty", func() bool { return streamMessages(t, c, "work") == 0 })
}

// TestSharedQueueConsumerGone: messages a consumer held unacked when it
// went away (its channel requeues them, as the adapters do) go to the
// other node's consumer, flagged redelivered.
func TestSharedQueueConsumerGone(t *testing.T) {
	c := newTestCluster(t, 3)
	a, b, _ := c.attach(0), c.attach(1), c.attach(2)
	va, vb := vhost(t, a, "/"), vhost(t, b, "/")
	if _, err := va.DeclareQueue(router.QueueDecl{QueueInfo: router.QueueInfo{Name: "gone", Durable: true}}); err != nil {
		t.Fatal(err)
	}
	sb, subb := consume(t, vb, "gone", 5)
	publishConfirmed(t, va, "", "gone", 5, "g")
	var held []queue.Delivery
	for range 5 {
		held = append(held, sb.next(t))
	}
	sa, suba := consume(t, va, "gone", 10)
	sa.none(t, 200*time.Millisecond) // B holds them all
	subb.Cancel()
	for _, d := range held {
		d.Queue.Reject(d.ID, true)
	}
	got := map[string]bool{}
	for range 5 {
		d := sa.next(t)
		if !d.Redelivered {
			t.Fatalf("%s not flagged redelivered", d.Msg.Body)
		}
		got[string(d.Msg.Body)] = true
		d.Queue.Ack(d.ID)
	}
	if len(got) != 5 {
		t.Fatalf("got %v", got)
	}
	suba.Cancel()
	eventually(t, "stream empty", func() bool { return streamMessages(t, c, "gone") == 0 })
}

// TestSharedQueueDeadLetter: a reject without requeue dead-letters through
// the router (x-death) to a shared queue, then terminates the original.
func TestSharedQueueDeadLetter(t *testing.T) {
	c := newTestCluster(t, 3)
	a, b, _ := c.attach(0), c.attach(1), c.attach(2)
	va, vb := vhost(t, a, "/"), vhost(t, b, "/")
	if err := va.DeclareExchange(router.ExchangeDecl{ExchangeInfo: router.ExchangeInfo{Name: "dlx", Type: router.Fanout, Durable: true}}); err != nil {
		t.Fatal(err)
	}
	if _, err := va.DeclareQueue(router.QueueDecl{QueueInfo: router.QueueInfo{Name: "dead", Durable: true}}); err != nil {
		t.Fatal(err)
	}
	if err := va.Bind(core.Binding{Source: "dlx", Dest: core.Dest{Kind: core.ToQueue, Name: "dead"}}, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := va.DeclareQueue(router.QueueDecl{QueueInfo: router.QueueInfo{Name: "live", Durable: true,
		Args: core.Table{"x-dead-letter-exchange": "dlx"}}}); err != nil {
		t.Fatal(err)
	}
	s, sub := consume(t, vb, "live", 1)
	publishConfirmed(t, va, "", "live", 1, "d")
	d := s.next(t)
	d.Queue.Reject(d.ID, false)
	sub.Cancel()
	sd, subd := consume(t, va, "dead", 1)
	dd := sd.next(t)
	deaths, _ := dd.Msg.Headers["x-death"].([]any)
	if string(dd.Msg.Body) != "d0" || len(deaths) != 1 || deaths[0].(core.Table).String("queue") != "live" ||
		deaths[0].(core.Table).String("reason") != "rejected" {
		t.Fatalf("dead letter %q headers %v", dd.Msg.Body, dd.Msg.Headers)
	}
	dd.Queue.Ack(dd.ID)
	subd.Cancel()
	eventually(t, "original terminated", func() bool { return streamMessages(t, c, "live") == 0 })
	eventually(t, "dead letter acked", func() bool { return streamMessages(t, c, "dead") == 0 })

	// Deleting the queue deletes its stream.
	if _, err := vb.DeleteQueue("live", false, false, 0); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.nodes[2].Queues().Messages(ctx, "/", "live"); err == nil {
		t.Fatal("stream of the deleted queue still there")
	}
	_ = cluster.AckWait
}
