package queue

import (
	"errors"
	"slices"
	"sync"
	"testing"

	"github.com/bourse-mq/bourse/core"
)

// fakeRemote records what a remote queue settles.
type fakeRemote struct {
	mu                sync.Mutex
	acks, naks, terms []any
	wakes             int
	closed            bool
	pull              []*core.Message
}

func (f *fakeRemote) Ack(h any)              { f.mu.Lock(); f.acks = append(f.acks, h); f.mu.Unlock() }
func (f *fakeRemote) Nak(h any)              { f.mu.Lock(); f.naks = append(f.naks, h); f.mu.Unlock() }
func (f *fakeRemote) Term(h any)             { f.mu.Lock(); f.terms = append(f.terms, h); f.mu.Unlock() }
func (f *fakeRemote) Wake()                  { f.mu.Lock(); f.wakes++; f.mu.Unlock() }
func (f *fakeRemote) Closed()                { f.mu.Lock(); f.closed = true; f.mu.Unlock() }
func (f *fakeRemote) Ready(bool) (int, bool) { return 0, false }
func (f *fakeRemote) Purge() (int, error)    { return 0, nil }
func (f *fakeRemote) Pull() (*core.Message, bool, uint32, any, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.pull) == 0 {
		return nil, false, 0, nil, false
	}
	m := f.pull[0]
	f.pull = f.pull[1:]
	return m, true, 1, "pulled-" + string(m.Body), true
}

func newRemoteQ(t *testing.T, args core.Table, hooks Hooks) (*Queue, *fakeRemote) {
	t.Helper()
	q := newQ(t, args, hooks)
	f := &fakeRemote{}
	q.SetRemote(f)
	return q, f
}

func TestRemoteQueueCreditFeedAndSettle(t *testing.T) {
	q, f := newRemoteQ(t, nil, Hooks{})
	if q.Credit() != 0 {
		t.Fatalf("credit without consumers: %d", q.Credit())
	}
	if q.Feed(msg("x"), false, 0, "hx") {
		t.Fatal("fed a queue without consumers")
	}
	a, b := &rec{}, &rec{}
	sa, _ := q.Consume(a, ConsumeOptions{Tag: "a", Prefetch: 2})
	if _, err := q.Consume(b, ConsumeOptions{Tag: "b"}); err != nil {
		t.Fatal(err)
	}
	if got := q.Credit(); got != 2+remoteUnbounded {
		t.Fatalf("credit %d, want %d", got, 2+remoteUnbounded)
	}
	for i, h := range []string{"h1", "h2", "h3"} {
		if !q.Feed(msg(h), i == 2, uint32(i), h) {
			t.Fatalf("feed %s refused", h)
		}
	}
	got := append(a.take(), b.take()...)
	if len(got) != 3 {
		t.Fatalf("%d deliveries", len(got))
	}
	byBody := map[string]Delivery{}
	for _, d := range got {
		byBody[string(d.Msg.Body)] = d
	}
	if d := byBody["h3"]; !d.Redelivered || d.Count != 3 {
		t.Fatalf("h3: redelivered=%v count=%d", d.Redelivered, d.Count)
	}
	q.Ack(byBody["h1"].ID)
	q.Reject(byBody["h2"].ID, true) // back to the Remote, not to the local queue
	q.Reject(byBody["h3"].ID, false)
	f.mu.Lock()
	acks, naks, terms := f.acks, f.naks, f.terms
	f.mu.Unlock()
	if !slices.Equal(acks, []any{"h1"}) || !slices.Equal(naks, []any{"h2"}) || !slices.Equal(terms, []any{"h3"}) {
		t.Fatalf("acks %v naks %v terms %v", acks, naks, terms)
	}
	if st := q.Stats(); st.Ready != 0 || st.Unacked != 0 {
		t.Fatalf("stats %+v", st)
	}

	// A message fed while the consumer is full waits here; when the last
	// consumer leaves, it goes back to the Remote.
	a.refuse, b.refuse = true, true
	q.Feed(msg("h4"), false, 0, "h4")
	sa.Cancel()
	cancelConsumer(q, b)
	f.mu.Lock()
	naks = f.naks
	f.mu.Unlock()
	if !slices.Equal(naks, []any{"h2", "h4"}) {
		t.Fatalf("naks after the last cancel: %v", naks)
	}
}

// cancelConsumer cancels c's subscription to q.
func cancelConsumer(q *Queue, c Consumer) {
	q.mu.Lock()
	var s *Sub
	for _, x := range q.subs {
		if x.c == c {
			s = x
		}
	}
	q.mu.Unlock()
	if s != nil {
		s.Cancel()
	}
}

func TestRemoteQueueDeadLetterTermsAfterConfirm(t *testing.T) {
	var done func(error)
	hooks := Hooks{DeadLetterConfirm: func(dlx string, m *core.Message, d func(error)) { done = d }}
	q, f := newRemoteQ(t, core.Table{"x-dead-letter-exchange": "dlx"}, hooks)
	c := &rec{}
	if _, err := q.Consume(c, ConsumeOptions{Prefetch: 5}); err != nil {
		t.Fatal(err)
	}
	q.Feed(msg("a"), false, 0, "ha")
	q.Feed(msg("b"), false, 0, "hb")
	ds := c.take()
	q.Reject(ds[0].ID, false)
	if done == nil || len(f.terms) != 0 {
		t.Fatalf("dead letter not sent, or terminated before its confirm: %v", f.terms)
	}
	done(nil)
	q.Reject(ds[1].ID, false)
	done(errors.New("cluster down"))
	if !slices.Equal(f.terms, []any{"ha"}) || !slices.Equal(f.naks, []any{"hb"}) {
		t.Fatalf("terms %v naks %v", f.terms, f.naks)
	}
}

func TestRemoteQueueGetAndDelete(t *testing.T) {
	q, f := newRemoteQ(t, nil, Hooks{})
	f.pull = []*core.Message{msg("p")}
	d, _, ok := q.Get(false)
	if !ok || string(d.Msg.Body) != "p" || !d.Redelivered || d.Count != 2 {
		t.Fatalf("get: %v %+v", ok, d)
	}
	if _, _, ok := q.Get(true); ok {
		t.Fatal("second get")
	}
	q.Delete(errors.New("gone"))
	if !slices.Equal(f.naks, []any{"pulled-p"}) || !f.closed {
		t.Fatalf("delete: naks %v closed %v", f.naks, f.closed)
	}
}
