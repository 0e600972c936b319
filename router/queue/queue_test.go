package queue

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/bourse-mq/bourse/core"
)

// rec is a test consumer that records deliveries.
type rec struct {
	mu       sync.Mutex
	got      []Delivery
	refuse   bool
	canceled error
}

func (r *rec) Deliver(d Delivery) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.refuse {
		return false
	}
	r.got = append(r.got, d)
	return true
}

func (r *rec) Cancelled(_ *Queue, reason error) {
	r.mu.Lock()
	r.canceled = reason
	r.mu.Unlock()
}

func (r *rec) bodies() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, len(r.got))
	for i, d := range r.got {
		out[i] = string(d.Msg.Body)
	}
	return out
}

func (r *rec) take() []Delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	g := r.got
	r.got = nil
	return g
}

func msg(body string) *core.Message {
	return &core.Message{RoutingKey: "k", Body: []byte(body), Arrived: time.Now()}
}

func newQ(t *testing.T, args core.Table, hooks Hooks) *Queue {
	t.Helper()
	a, err := ParseArgs(args)
	if err != nil {
		t.Fatal(err)
	}
	return New(Config{Name: "q", VHost: "/", Args: a, Arguments: args}, hooks, nil)
}

func enqueue(t *testing.T, q *Queue, bodies ...string) {
	t.Helper()
	for _, b := range bodies {
		if _, r := q.Enqueue(msg(b)); r != Accepted {
			t.Fatalf("enqueue %q: result %d", b, r)
		}
	}
}

func eq(t *testing.T, got, want []string) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestFIFOAndGet(t *testing.T) {
	q := newQ(t, nil, Hooks{})
	enqueue(t, q, "a", "b", "c")
	var got []string
	for {
		d, _, ok := q.Get(true)
		if !ok {
			break
		}
		got = append(got, string(d.Msg.Body))
	}
	eq(t, got, []string{"a", "b", "c"})
}

func TestCompetingConsumersRoundRobinWithPrefetch(t *testing.T) {
	q := newQ(t, nil, Hooks{})
	c1, c2 := &rec{}, &rec{}
	s1, _ := q.Consume(c1, ConsumeOptions{Tag: "1", Prefetch: 2})
	if _, err := q.Consume(c2, ConsumeOptions{Tag: "2", Prefetch: 2}); err != nil {
		t.Fatal(err)
	}
	enqueue(t, q, "1", "2", "3", "4", "5", "6")
	// Each consumer holds at most 2 unacked; the rest wait.
	if n1, n2 := len(c1.bodies()), len(c2.bodies()); n1 != 2 || n2 != 2 {
		t.Fatalf("deliveries %d/%d, want 2/2", n1, n2)
	}
	eq(t, append(c1.bodies(), c2.bodies()...), []string{"1", "3", "2", "4"})
	if st := q.Stats(); st.Ready != 2 || st.Unacked != 4 {
		t.Fatalf("stats %+v", st)
	}
	// Acking frees credit for that consumer only.
	d := c1.take()
	q.Ack(d[0].ID)
	eq(t, c1.bodies(), []string{"5"})
	_ = s1
}

func TestRequeueKeepsOriginalPositionAndFlagsRedelivered(t *testing.T) {
	q := newQ(t, nil, Hooks{})
	enqueue(t, q, "a", "b", "c", "d")
	d1, _, _ := q.Get(false)
	d2, _, _ := q.Get(false)
	// Reject in reverse order: both must come back in front of c, in order.
	q.Reject(d2.ID, true)
	q.Reject(d1.ID, true)
	var got []string
	var redelivered []bool
	for {
		d, _, ok := q.Get(true)
		if !ok {
			break
		}
		got = append(got, string(d.Msg.Body))
		redelivered = append(redelivered, d.Redelivered)
	}
	eq(t, got, []string{"a", "b", "c", "d"})
	if fmt.Sprint(redelivered) != "[true true false false]" {
		t.Fatalf("redelivered flags %v", redelivered)
	}
}

func TestNackWithoutRequeueDeadLetters(t *testing.T) {
	var mu sync.Mutex
	var dl []*core.Message
	var dlx []string
	q := newQ(t, core.Table{"x-dead-letter-exchange": "dlx", "x-dead-letter-routing-key": "dead"}, Hooks{
		DeadLetter: func(x string, m *core.Message) { mu.Lock(); dl = append(dl, m); dlx = append(dlx, x); mu.Unlock() },
	})
	m := msg("a")
	m.Exchange = "orig"
	m.Props.Expiration = "60000"
	q.Enqueue(m)
	d, _, _ := q.Get(false)
	q.Reject(d.ID, false)
	if len(dl) != 1 || dlx[0] != "dlx" {
		t.Fatalf("dead letters %v %v", dl, dlx)
	}
	got := dl[0]
	if got.RoutingKey != "dead" || got.Exchange != "dlx" || got.Props.Expiration != "" {
		t.Fatalf("dead-lettered message %+v", got)
	}
	deaths := got.Headers["x-death"].([]any)
	x := deaths[0].(core.Table)
	if x.String("queue") != "q" || x.String("reason") != "rejected" || x.String("exchange") != "orig" || x["count"] != int64(1) || x.String("original-expiration") != "60000" {
		t.Fatalf("x-death %v", x)
	}
	if rk := x["routing-keys"].([]any); len(rk) != 1 || rk[0] != "k" {
		t.Fatalf("routing-keys %v", rk)
	}
	if got.Headers.String("x-first-death-reason") != "rejected" {
		t.Fatalf("headers %v", got.Headers)
	}
	// The original message is untouched (immutability).
	if m.Headers != nil || m.Props.Expiration != "60000" {
		t.Fatalf("original mutated: %+v", m)
	}
	// A second death in the same queue with the same reason bumps count.
	q.Enqueue(got.WithHeaders(got.Headers))
	d, _, _ = q.Get(false)
	q.Reject(d.ID, false)
	x = dl[1].Headers["x-death"].([]any)[0].(core.Table)
	if x["count"] != int64(2) || len(dl[1].Headers["x-death"].([]any)) != 1 {
		t.Fatalf("second x-death %v", dl[1].Headers["x-death"])
	}
}

func TestMessageTTLExpiresAndDeadLetters(t *testing.T) {
	done := make(chan *core.Message, 4)
	q := newQ(t, core.Table{"x-message-ttl": int32(30), "x-dead-letter-exchange": "dlx"}, Hooks{
		DeadLetter: func(_ string, m *core.Message) { done <- m },
	})
	enqueue(t, q, "a")
	select {
	case m := <-done:
		if r := m.Headers["x-death"].([]any)[0].(core.Table).String("reason"); r != "expired" {
			t.Fatalf("reason %q", r)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("message did not expire")
	}
	if st := q.Stats(); st.Ready != 0 {
		t.Fatalf("ready %d after expiry", st.Ready)
	}
}

func TestPerMessageExpiration(t *testing.T) {
	q := newQ(t, nil, Hooks{})
	m := msg("short")
	m.Props.Expiration = "1"
	q.Enqueue(m)
	enqueue(t, q, "long")
	time.Sleep(20 * time.Millisecond)
	d, _, ok := q.Get(true)
	if !ok || string(d.Msg.Body) != "long" {
		t.Fatalf("got %v %q", ok, d.Msg.Body)
	}
}

func TestZeroTTLDeliversOnlyToWaitingConsumer(t *testing.T) {
	q := newQ(t, core.Table{"x-message-ttl": int32(0)}, Hooks{})
	enqueue(t, q, "nobody")
	if st := q.Stats(); st.Ready != 0 {
		t.Fatalf("ttl 0 message kept with no consumer: %+v", st)
	}
	c := &rec{}
	q.Consume(c, ConsumeOptions{NoAck: true})
	enqueue(t, q, "taken")
	eq(t, c.bodies(), []string{"taken"})
}

func TestOverflow(t *testing.T) {
	t.Run("drop-head", func(t *testing.T) {
		var dl []string
		q := newQ(t, core.Table{"x-max-length": int32(2), "x-dead-letter-exchange": "d"}, Hooks{
			DeadLetter: func(_ string, m *core.Message) { dl = append(dl, string(m.Body)) },
		})
		enqueue(t, q, "1", "2", "3")
		eq(t, dl, []string{"1"})
		if st := q.Stats(); st.Ready != 2 {
			t.Fatalf("ready %d", st.Ready)
		}
	})
	t.Run("reject-publish", func(t *testing.T) {
		q := newQ(t, core.Table{"x-max-length": int32(1), "x-overflow": "reject-publish"}, Hooks{})
		enqueue(t, q, "1")
		if _, r := q.Enqueue(msg("2")); r != Rejected {
			t.Fatalf("result %d, want Rejected", r)
		}
	})
	t.Run("reject-publish-dlx", func(t *testing.T) {
		var dl []string
		q := newQ(t, core.Table{"x-max-length": int32(1), "x-overflow": "reject-publish-dlx", "x-dead-letter-exchange": "d"}, Hooks{
			DeadLetter: func(_ string, m *core.Message) { dl = append(dl, string(m.Body)) },
		})
		enqueue(t, q, "1")
		if _, r := q.Enqueue(msg("2")); r != Rejected {
			t.Fatalf("result %d", r)
		}
		eq(t, dl, []string{"2"})
	})
	t.Run("max-length-bytes", func(t *testing.T) {
		q := newQ(t, core.Table{"x-max-length-bytes": int64(5)}, Hooks{})
		enqueue(t, q, "abc", "de", "f")
		if st := q.Stats(); st.Ready != 2 || st.ReadyBytes != 3 {
			t.Fatalf("stats %+v", st)
		}
	})
}

func TestPriorityQueue(t *testing.T) {
	q := newQ(t, core.Table{"x-max-priority": int32(5)}, Hooks{})
	for i, p := range []uint8{0, 9, 3, 3, 1} {
		m := msg(fmt.Sprint(i))
		m.Props.Priority = p
		q.Enqueue(m)
	}
	var got []string
	for {
		d, _, ok := q.Get(true)
		if !ok {
			break
		}
		got = append(got, string(d.Msg.Body))
	}
	// Priority 9 is capped at 5; equal priorities stay FIFO.
	eq(t, got, []string{"1", "2", "3", "4", "0"})
}

func TestConsumerPriorityAndSingleActive(t *testing.T) {
	q := newQ(t, nil, Hooks{})
	lo, hi := &rec{}, &rec{}
	q.Consume(lo, ConsumeOptions{Prefetch: 1})
	q.Consume(hi, ConsumeOptions{Prefetch: 1, Priority: 10})
	enqueue(t, q, "a", "b")
	eq(t, hi.bodies(), []string{"a"})
	eq(t, lo.bodies(), []string{"b"})

	sac := newQ(t, core.Table{"x-single-active-consumer": true}, Hooks{})
	c1, c2 := &rec{}, &rec{}
	s1, _ := sac.Consume(c1, ConsumeOptions{NoAck: true})
	sac.Consume(c2, ConsumeOptions{NoAck: true})
	enqueue(t, sac, "1", "2")
	eq(t, c1.bodies(), []string{"1", "2"})
	s1.Cancel()
	enqueue(t, sac, "3")
	eq(t, c2.bodies(), []string{"3"})
}

func TestRefusedDeliveryWaitsForKick(t *testing.T) {
	q := newQ(t, nil, Hooks{})
	c := &rec{refuse: true}
	s, _ := q.Consume(c, ConsumeOptions{})
	enqueue(t, q, "a", "b")
	if st := q.Stats(); st.Ready != 2 || st.Unacked != 0 {
		t.Fatalf("stats %+v", st)
	}
	c.mu.Lock()
	c.refuse = false
	c.mu.Unlock()
	s.Kick()
	eq(t, c.bodies(), []string{"a", "b"})
}

func TestExclusiveConsumer(t *testing.T) {
	q := newQ(t, nil, Hooks{})
	q.Consume(&rec{}, ConsumeOptions{Exclusive: true})
	if _, err := q.Consume(&rec{}, ConsumeOptions{}); core.KindOf(err) != core.AccessRefused {
		t.Fatalf("err %v", err)
	}
}

func TestDeleteCancelsConsumers(t *testing.T) {
	q := newQ(t, nil, Hooks{})
	c := &rec{}
	q.Consume(c, ConsumeOptions{})
	enqueue(t, q, "a")
	q.Delete(core.Errorf(core.NotFound, "gone"))
	if c.canceled == nil {
		t.Fatal("consumer not cancelled")
	}
	if _, r := q.Enqueue(msg("b")); r != Gone {
		t.Fatalf("enqueue after delete: %d", r)
	}
}

func TestAutoDeleteAndExpires(t *testing.T) {
	unused := make(chan string, 2)
	a, _ := ParseArgs(nil)
	q := New(Config{Name: "ad", AutoDelete: true, Args: a}, Hooks{Unused: func(_ *Queue, r string) { unused <- r }}, nil)
	s, _ := q.Consume(&rec{}, ConsumeOptions{})
	s.Cancel()
	if r := <-unused; r != "auto-delete" {
		t.Fatalf("reason %q", r)
	}
	e, _ := ParseArgs(core.Table{"x-expires": int32(20)})
	New(Config{Name: "ex", Args: e}, Hooks{Unused: func(_ *Queue, r string) { unused <- r }}, nil)
	select {
	case r := <-unused:
		if r != "expired" {
			t.Fatalf("reason %q", r)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("x-expires did not fire")
	}
}

func TestParseArgsErrors(t *testing.T) {
	for _, args := range []core.Table{
		{"x-message-ttl": "ten"},
		{"x-message-ttl": int32(-1)},
		{"x-expires": int32(0)},
		{"x-max-length": int32(-5)},
		{"x-overflow": "explode"},
		{"x-max-priority": int32(300)},
		{"x-dead-letter-routing-key": "k"},
		{"x-single-active-consumer": "yes"},
		{"x-queue-type": "fancy"},
	} {
		if _, err := ParseArgs(args); core.KindOf(err) != core.PreconditionFailed {
			t.Errorf("%v: err %v, want PreconditionFailed", args, err)
		}
	}
}

type memStore struct {
	mu      sync.Mutex
	settled []uint64
}

func (m *memStore) Delivered(string, string, uint64) {}

func (m *memStore) Load(string, string, uint64) (*core.Message, error) {
	return nil, core.Errorf(core.NotFound, "memStore keeps no bodies")
}

func (m *memStore) Settle(_, _ string, seqs []uint64) {
	m.mu.Lock()
	m.settled = append(m.settled, seqs...)
	m.mu.Unlock()
}

func TestStoreSettledOnAckNotOnRequeue(t *testing.T) {
	st := &memStore{}
	a, _ := ParseArgs(nil)
	q := New(Config{Name: "d", Durable: true, Args: a}, Hooks{}, st)
	m := msg("p")
	m.Props.DeliveryMode = core.Persistent
	q.Enqueue(m)
	d, _, _ := q.Get(false)
	q.Reject(d.ID, true)
	if len(st.settled) != 0 {
		t.Fatalf("settled on requeue: %v", st.settled)
	}
	d, _, _ = q.Get(false)
	q.Ack(d.ID)
	if fmt.Sprint(st.settled) != "[1]" {
		t.Fatalf("settled %v", st.settled)
	}
}

func TestConcurrentPublishConsumeAck(t *testing.T) {
	q := newQ(t, nil, Hooks{})
	const n = 2000
	var wg sync.WaitGroup
	acked := make(chan struct{}, n)
	consumers := make([]*ackingConsumer, 4)
	for i := range consumers {
		consumers[i] = &ackingConsumer{ch: make(chan Delivery, n)}
		q.Consume(consumers[i], ConsumeOptions{Prefetch: 10})
		wg.Add(1)
		go func(c *ackingConsumer) {
			defer wg.Done()
			for d := range c.ch {
				d.Queue.Ack(d.ID)
				acked <- struct{}{}
			}
		}(consumers[i])
	}
	var pw sync.WaitGroup
	for p := 0; p < 4; p++ {
		pw.Add(1)
		go func() {
			defer pw.Done()
			for i := 0; i < n/4; i++ {
				q.Enqueue(msg("x"))
			}
		}()
	}
	pw.Wait()
	for i := 0; i < n; i++ {
		select {
		case <-acked:
		case <-time.After(5 * time.Second):
			t.Fatalf("only %d of %d acked; stats %+v", i, n, q.Stats())
		}
	}
	for _, c := range consumers {
		close(c.ch)
	}
	wg.Wait()
	if st := q.Stats(); st.Ready != 0 || st.Unacked != 0 || st.Acked != n {
		t.Fatalf("stats %+v", st)
	}
}

type ackingConsumer struct{ ch chan Delivery }

func (c *ackingConsumer) Deliver(d Delivery) bool {
	select {
	case c.ch <- d:
		return true
	default:
		return false
	}
}
func (c *ackingConsumer) Cancelled(*Queue, error) {}
