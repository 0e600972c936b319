package router

import (
	"errors"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/router/queue"
)

func vh(t testing.TB) *VHost {
	t.Helper()
	v, err := New(Options{}).VHost("/")
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func declareQ(t testing.TB, v *VHost, names ...string) {
	t.Helper()
	for _, n := range names {
		_, err := v.DeclareQueue(QueueDecl{QueueInfo: QueueInfo{Name: n}})
		must(t, err)
	}
}

func declareX(t testing.TB, v *VHost, name, typ string, args core.Table) {
	t.Helper()
	must(t, v.DeclareExchange(ExchangeDecl{ExchangeInfo: ExchangeInfo{Name: name, Type: typ, Args: args}}))
}

func bindQ(t testing.TB, v *VHost, src, q, key string, args core.Table) {
	t.Helper()
	must(t, v.Bind(Binding{Source: src, Dest: Dest{Kind: ToQueue, Name: q}, Key: key, Args: args}, 0))
}

// counts publishes m and returns the ready count of every queue that got it.
func routed(t testing.TB, v *VHost, m *core.Message) []string {
	t.Helper()
	before := map[string]int{}
	for _, q := range v.Queues() {
		before[q.Name()] = q.Stats().Ready
	}
	_, err := v.Publish(m, PublishOptions{})
	must(t, err)
	var got []string
	for _, q := range v.Queues() {
		for i := before[q.Name()]; i < q.Stats().Ready; i++ {
			got = append(got, q.Name())
		}
	}
	sort.Strings(got)
	return got
}

func pub(ex, key string, h core.Table) *core.Message {
	return &core.Message{Exchange: ex, RoutingKey: key, Headers: h, Body: []byte("x")}
}

func TestExchangeTypes(t *testing.T) {
	v := vh(t)
	declareQ(t, v, "q1", "q2", "q3")
	declareX(t, v, "d", Direct, nil)
	declareX(t, v, "f", Fanout, nil)
	declareX(t, v, "t", Topic, nil)
	declareX(t, v, "h", Headers, nil)
	bindQ(t, v, "d", "q1", "red", nil)
	bindQ(t, v, "d", "q2", "red", nil)
	bindQ(t, v, "d", "q3", "blue", nil)
	bindQ(t, v, "f", "q1", "ignored", nil)
	bindQ(t, v, "f", "q2", "", nil)
	bindQ(t, v, "t", "q1", "a.*.c", nil)
	bindQ(t, v, "t", "q2", "a.#", nil)
	bindQ(t, v, "t", "q3", "#.c", nil)
	bindQ(t, v, "h", "q1", "", core.Table{"x-match": "all", "a": "1", "b": int32(2)})
	bindQ(t, v, "h", "q2", "", core.Table{"x-match": "any", "a": "1", "b": int32(2)})
	bindQ(t, v, "h", "q3", "", core.Table{"x-match": "any-with-x", "x-tenant": "t1"})

	cases := []struct {
		name string
		m    *core.Message
		want string
	}{
		{"default exchange", pub("", "q3", nil), "[q3]"},
		{"default exchange no queue", pub("", "nope", nil), "[]"},
		{"direct two", pub("d", "red", nil), "[q1 q2]"},
		{"direct one", pub("d", "blue", nil), "[q3]"},
		{"direct none", pub("d", "green", nil), "[]"},
		{"fanout", pub("f", "whatever", nil), "[q1 q2]"},
		{"topic star and hash", pub("t", "a.b.c", nil), "[q1 q2 q3]"},
		{"topic hash zero words", pub("t", "a", nil), "[q2]"},
		{"topic suffix", pub("t", "x.y.c", nil), "[q3]"},
		{"topic star needs one word", pub("t", "a.c", nil), "[q2 q3]"},
		{"headers all", pub("h", "", core.Table{"a": "1", "b": int64(2)}), "[q1 q2]"},
		{"headers any", pub("h", "", core.Table{"a": "1"}), "[q2]"},
		{"headers none", pub("h", "", core.Table{"a": "2"}), "[]"},
		{"headers any-with-x", pub("h", "", core.Table{"x-tenant": "t1"}), "[q3]"},
		{"amq.topic exists", pub(AMQTopic, "a", nil), "[]"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := fmt.Sprint(routed(t, v, c.m)); got != c.want {
				t.Fatalf("routed to %s, want %s", got, c.want)
			}
		})
	}
}

func TestEachQueueOnceAcrossPathsAndCycles(t *testing.T) {
	v := vh(t)
	declareQ(t, v, "q")
	declareX(t, v, "a", Fanout, nil)
	declareX(t, v, "b", Fanout, nil)
	declareX(t, v, "c", Topic, nil)
	// a -> b -> a (cycle), a -> c, b -> q, c -> q (two paths), plus two
	// matching topic bindings from c to q.
	must(t, v.Bind(Binding{Source: "a", Dest: Dest{Kind: ToExchange, Name: "b"}}, 0))
	must(t, v.Bind(Binding{Source: "b", Dest: Dest{Kind: ToExchange, Name: "a"}}, 0))
	must(t, v.Bind(Binding{Source: "a", Dest: Dest{Kind: ToExchange, Name: "c"}, Key: "#"}, 0))
	bindQ(t, v, "b", "q", "", nil)
	bindQ(t, v, "c", "q", "k.*", nil)
	bindQ(t, v, "c", "q", "#", nil)
	if got := fmt.Sprint(routed(t, v, pub("a", "k.x", nil))); got != "[q]" {
		t.Fatalf("routed %s, want [q] once", got)
	}
}

func TestAlternateAndInternalExchanges(t *testing.T) {
	v := vh(t)
	declareQ(t, v, "main", "unrouted")
	declareX(t, v, "ae", Fanout, nil)
	declareX(t, v, "x", Direct, core.Table{"alternate-exchange": "ae"})
	bindQ(t, v, "ae", "unrouted", "", nil)
	bindQ(t, v, "x", "main", "k", nil)
	if got := fmt.Sprint(routed(t, v, pub("x", "k", nil))); got != "[main]" {
		t.Fatalf("routable went to %s", got)
	}
	if got := fmt.Sprint(routed(t, v, pub("x", "other", nil))); got != "[unrouted]" {
		t.Fatalf("unroutable went to %s", got)
	}
	must(t, v.DeclareExchange(ExchangeDecl{ExchangeInfo: ExchangeInfo{Name: "int", Type: Fanout, Internal: true}}))
	_, err := v.Publish(pub("int", "", nil), PublishOptions{FromClient: true})
	if core.KindOf(err) != core.AccessRefused {
		t.Fatalf("publish to internal: %v", err)
	}
	must(t, v.Bind(Binding{Source: "x", Dest: Dest{Kind: ToExchange, Name: "int"}, Key: "i"}, 0))
	bindQ(t, v, "int", "main", "", nil)
	if got := fmt.Sprint(routed(t, v, pub("x", "i", nil))); got != "[main]" {
		t.Fatalf("via internal exchange: %s", got)
	}
}

func TestMandatoryUnroutableAndMissingExchange(t *testing.T) {
	v := vh(t)
	r, err := v.Publish(pub(AMQDirect, "nowhere", nil), PublishOptions{Mandatory: true})
	must(t, err)
	if !r.Unroutable() {
		t.Fatalf("result %+v", r)
	}
	_, err = v.Publish(pub("missing", "", nil), PublishOptions{})
	if !errors.Is(err, core.ErrNotFound) {
		t.Fatalf("err %v", err)
	}
}

func TestDeclareSemantics(t *testing.T) {
	v := vh(t)
	declareX(t, v, "e", Direct, nil)
	err := v.DeclareExchange(ExchangeDecl{ExchangeInfo: ExchangeInfo{Name: "e", Type: Fanout}})
	if core.KindOf(err) != core.PreconditionFailed {
		t.Fatalf("redeclare with other type: %v", err)
	}
	if err := v.DeclareExchange(ExchangeDecl{ExchangeInfo: ExchangeInfo{Name: "nope"}, Passive: true}); core.KindOf(err) != core.NotFound {
		t.Fatalf("passive missing: %v", err)
	}
	if err := v.DeclareExchange(ExchangeDecl{ExchangeInfo: ExchangeInfo{Name: "amq.mine", Type: Direct}}); core.KindOf(err) != core.AccessRefused {
		t.Fatalf("reserved name: %v", err)
	}
	if err := v.DeclareExchange(ExchangeDecl{ExchangeInfo: ExchangeInfo{Name: "bad", Type: "x-unknown"}}); core.KindOf(err) != core.CommandInvalid {
		t.Fatalf("bad type: %v", err)
	}
	ok, err := v.DeclareQueue(QueueDecl{})
	must(t, err)
	if len(ok.Name) < 10 || ok.Name[:8] != "amq.gen-" {
		t.Fatalf("server-named queue %q", ok.Name)
	}
	_, err = v.DeclareQueue(QueueDecl{QueueInfo: QueueInfo{Name: "ttl", Args: core.Table{"x-message-ttl": int32(100)}}})
	must(t, err)
	_, err = v.DeclareQueue(QueueDecl{QueueInfo: QueueInfo{Name: "ttl", Args: core.Table{"x-message-ttl": int64(100)}}})
	must(t, err) // same value, other integer width: equivalent
	_, err = v.DeclareQueue(QueueDecl{QueueInfo: QueueInfo{Name: "ttl", Args: core.Table{"x-message-ttl": int32(200)}}})
	if core.KindOf(err) != core.PreconditionFailed {
		t.Fatalf("redeclare with other ttl: %v", err)
	}
	_, err = v.DeclareQueue(QueueDecl{QueueInfo: QueueInfo{Name: "ttl", Durable: true, Args: core.Table{"x-message-ttl": int32(100)}}})
	if core.KindOf(err) != core.PreconditionFailed {
		t.Fatalf("redeclare durable: %v", err)
	}
	if _, err := v.DeclareQueue(QueueDecl{QueueInfo: QueueInfo{Name: "zz"}, Passive: true}); core.KindOf(err) != core.NotFound {
		t.Fatalf("passive missing queue: %v", err)
	}
}

func TestExclusiveQueueOwnership(t *testing.T) {
	b := New(Options{})
	v, _ := b.VHost("/")
	_, err := v.DeclareQueue(QueueDecl{QueueInfo: QueueInfo{Name: "ex", Exclusive: true}, Owner: 1})
	must(t, err)
	if _, err := v.DeclareQueue(QueueDecl{QueueInfo: QueueInfo{Name: "ex", Exclusive: true}, Owner: 2}); core.KindOf(err) != core.ResourceLocked {
		t.Fatalf("other connection declare: %v", err)
	}
	if _, err := v.Consume("ex", &sink{}, queue.ConsumeOptions{Owner: 2}); core.KindOf(err) != core.ResourceLocked {
		t.Fatalf("other connection consume: %v", err)
	}
	b.ConnectionClosed(1)
	if _, err := v.Queue("ex", 1); core.KindOf(err) != core.NotFound {
		t.Fatalf("exclusive queue survived its connection: %v", err)
	}
}

func TestDeleteSemantics(t *testing.T) {
	v := vh(t)
	declareQ(t, v, "q")
	declareX(t, v, "x", Fanout, nil)
	bindQ(t, v, "x", "q", "", nil)
	if err := v.DeleteExchange("x", true); core.KindOf(err) != core.PreconditionFailed {
		t.Fatalf("if-unused: %v", err)
	}
	routed(t, v, pub("x", "", nil))
	if _, err := v.DeleteQueue("q", false, true, 0); core.KindOf(err) != core.PreconditionFailed {
		t.Fatalf("if-empty: %v", err)
	}
	n, err := v.DeleteQueue("q", false, false, 0)
	must(t, err)
	if n != 1 {
		t.Fatalf("deleted count %d", n)
	}
	// The binding went with the queue, so the exchange is now unused.
	must(t, v.DeleteExchange("x", true))
	if err := v.DeleteExchange(AMQTopic, false); core.KindOf(err) != core.AccessRefused {
		t.Fatalf("delete amq.topic: %v", err)
	}
	if err := v.Bind(Binding{Source: "", Dest: Dest{Kind: ToQueue, Name: "q"}}, 0); core.KindOf(err) != core.AccessRefused {
		t.Fatalf("bind default exchange: %v", err)
	}
}

func TestAutoDeleteExchangeAndQueue(t *testing.T) {
	v := vh(t)
	declareQ(t, v, "q")
	must(t, v.DeclareExchange(ExchangeDecl{ExchangeInfo: ExchangeInfo{Name: "ad", Type: Fanout, AutoDelete: true}}))
	bindQ(t, v, "ad", "q", "", nil)
	must(t, v.Unbind(Binding{Source: "ad", Dest: Dest{Kind: ToQueue, Name: "q"}}, 0))
	if err := v.DeclareExchange(ExchangeDecl{ExchangeInfo: ExchangeInfo{Name: "ad"}, Passive: true}); core.KindOf(err) != core.NotFound {
		t.Fatalf("auto-delete exchange survived: %v", err)
	}
	_, err := v.DeclareQueue(QueueDecl{QueueInfo: QueueInfo{Name: "adq", AutoDelete: true}})
	must(t, err)
	s, err := v.Consume("adq", &sink{}, queue.ConsumeOptions{})
	must(t, err)
	s.Cancel()
	if _, err := v.Queue("adq", 0); core.KindOf(err) != core.NotFound {
		t.Fatalf("auto-delete queue survived: %v", err)
	}
}

func TestDeadLetterThroughRouterAndCycle(t *testing.T) {
	v := vh(t)
	declareX(t, v, "dlx", Fanout, nil)
	declareQ(t, v, "dead")
	bindQ(t, v, "dlx", "dead", "", nil)
	_, err := v.DeclareQueue(QueueDecl{QueueInfo: QueueInfo{Name: "work", Args: core.Table{"x-dead-letter-exchange": "dlx"}}})
	must(t, err)
	routed(t, v, pub("", "work", nil))
	q, _ := v.Queue("work", 0)
	d, _, _ := q.Get(false)
	q.Reject(d.ID, false)
	dq, _ := v.Queue("dead", 0)
	got, _, ok := dq.Get(true)
	if !ok || got.Msg.Headers.String("x-first-death-queue") != "work" {
		t.Fatalf("dead-lettered: %v %+v", ok, got.Msg)
	}

	// A queue whose TTL dead-letters back into itself drops the message
	// instead of looping (no rejection in the cycle).
	declareX(t, v, "loop", Fanout, nil)
	_, err = v.DeclareQueue(QueueDecl{QueueInfo: QueueInfo{Name: "self", Args: core.Table{"x-dead-letter-exchange": "loop", "x-message-ttl": int32(5)}}})
	must(t, err)
	bindQ(t, v, "loop", "self", "", nil)
	routed(t, v, pub("", "self", nil))
	sq, _ := v.Queue("self", 0)
	// Poll rather than sleep a fixed time: timers run late on a loaded machine.
	deadline := time.Now().Add(5 * time.Second)
	for sq.Stats().DeadLettered == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond) // a looping message would be back by now
	if st := sq.Stats(); st.Ready != 0 || st.Published != 1 || st.DeadLettered != 1 {
		t.Fatalf("cycle not cut: %+v", st)
	}
}

func TestCCAndBCC(t *testing.T) {
	v := vh(t)
	declareQ(t, v, "a", "b", "c")
	m := pub("", "a", core.Table{"CC": []any{"b"}, "BCC": []any{"c"}})
	if got := fmt.Sprint(routed(t, v, m)); got != "[a b c]" {
		t.Fatalf("routed %s", got)
	}
	cq, _ := v.Queue("c", 0)
	d, _, _ := cq.Get(true)
	if _, ok := d.Msg.Headers["BCC"]; ok {
		t.Fatal("BCC header delivered")
	}
}

func TestConfirmRejectedOnOverflow(t *testing.T) {
	v := vh(t)
	_, err := v.DeclareQueue(QueueDecl{QueueInfo: QueueInfo{Name: "small", Args: core.Table{"x-max-length": int32(1), "x-overflow": "reject-publish"}}})
	must(t, err)
	var results []error
	for range 2 {
		_, err := v.Publish(pub("", "small", nil), PublishOptions{Confirm: func(err error) { results = append(results, err) }})
		must(t, err)
	}
	if len(results) != 2 || results[0] != nil || !errors.Is(results[1], ErrRejected) {
		t.Fatalf("confirms %v", results)
	}
}

func TestReplyTo(t *testing.T) {
	v := vh(t)
	var got *core.Message
	addr, unregister := v.RegisterReplyTo(func(m *core.Message) bool { got = m; return true })
	r, err := v.Publish(pub("", addr, nil), PublishOptions{})
	must(t, err)
	if got == nil || r.Routed != 1 {
		t.Fatal("reply not delivered")
	}
	unregister()
	r, _ = v.Publish(pub("", addr, nil), PublishOptions{})
	if r.Routed != 0 {
		t.Fatal("delivered after unregister")
	}
}

func TestTopologyChangesWhileRouting(t *testing.T) {
	v := vh(t)
	declareX(t, v, "t", Topic, nil)
	declareQ(t, v, "q")
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
					_, _ = v.Publish(pub("t", "a.b.c", nil), PublishOptions{})
				}
			}
		}()
	}
	for i := range 300 {
		key := fmt.Sprintf("a.%d.#", i%7)
		bindQ(t, v, "t", "q", key, nil)
		must(t, v.Unbind(Binding{Source: "t", Dest: Dest{Kind: ToQueue, Name: "q"}, Key: key}, 0))
	}
	close(stop)
	wg.Wait()
}

type sink struct{}

func (sink) Deliver(queue.Delivery) bool   { return true }
func (sink) Cancelled(*queue.Queue, error) {}

func TestMaxQueuesPerVHost(t *testing.T) {
	b := New(Options{})
	v, _ := b.VHost("/")
	b.SetMaxQueuesPerVHost(2)
	for _, n := range []string{"a", "b"} {
		if _, err := v.DeclareQueue(QueueDecl{QueueInfo: QueueInfo{Name: n}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := v.DeclareQueue(QueueDecl{QueueInfo: QueueInfo{Name: "c"}}); !errors.Is(err, core.ErrPreconditionFailed) {
		t.Fatalf("third queue: %v, want precondition failed", err)
	}
	// Redeclaring an existing queue is not a new queue.
	if _, err := v.DeclareQueue(QueueDecl{QueueInfo: QueueInfo{Name: "a"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := v.DeleteQueue("a", false, false, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := v.DeclareQueue(QueueDecl{QueueInfo: QueueInfo{Name: "c"}}); err != nil {
		t.Fatal(err)
	}
}
