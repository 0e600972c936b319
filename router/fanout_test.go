package router

import (
	"fmt"
	"maps"
	"sync"
	"testing"

	"github.com/bourse-mq/bourse/core"
)

// interestTable is a NodeFanout that only keeps the interest the router
// declares, refcounted, as the cluster package does before it subscribes.
type interestTable struct {
	mu       sync.Mutex
	refs     map[string]int
	negative []string
}

func (f *interestTable) Publish(string, *core.Message, bool) bool { return false }

func (f *interestTable) Interest(vhost string, i Interest, delta int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := fmt.Sprintf("%s|%s|%d|%s", vhost, i.Exchange, i.Kind, i.Key)
	f.refs[k] += delta
	switch {
	case f.refs[k] < 0:
		f.negative = append(f.negative, k)
	case f.refs[k] == 0:
		delete(f.refs, k)
	}
}

func (f *interestTable) check(t *testing.T, step string, want map[string]int) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.negative) > 0 {
		t.Fatalf("%s: released more than taken: %v", step, f.negative)
	}
	if !maps.Equal(f.refs, want) {
		t.Fatalf("%s: interest\n got %v\nwant %v", step, f.refs, want)
	}
}

// TestFanoutInterestFollowsTopology: in cluster mode the router declares
// one interest per binding from an exchange to a node-local queue, one per
// node-local queue name (default exchange), and "all" for each exchange
// upstream of those through exchange-to-exchange bindings or alternate
// exchanges; every change of the topology keeps it exact, and nothing is
// left once the owning connection is closed or the vhost deleted.
func TestFanoutInterestFollowsTopology(t *testing.T) {
	c := newMemCluster()
	f := &interestTable{refs: map[string]int{}}
	b := New(Options{Replicator: c, Fanout: f})
	c.brokers = append(c.brokers, b)
	v := mustVHost(t, b)
	const owner core.ConnID = 1
	q := func(name string) Dest { return Dest{Kind: ToQueue, Name: name} }
	x := func(name string) Dest { return Dest{Kind: ToExchange, Name: name} }
	bind := func(src string, d Dest, key string, args core.Table) Binding {
		t.Helper()
		bd := Binding{Source: src, Dest: d, Key: key, Args: args}
		if err := v.Bind(bd, owner); err != nil {
			t.Fatalf("bind %+v: %v", bd, err)
		}
		return bd
	}
	exchange := func(name, typ string, durable bool, args core.Table) {
		t.Helper()
		if err := v.DeclareExchange(ExchangeDecl{ExchangeInfo: ExchangeInfo{Name: name, Type: typ, Durable: durable, Args: args}}); err != nil {
			t.Fatal(err)
		}
	}
	key := func(ex string, kind InterestKind, k string) string { return fmt.Sprintf("/|%s|%d|%s", ex, kind, k) }
	all := func(ex string) string { return key(ex, InterestAll, "") }

	if _, err := v.DeclareQueue(QueueDecl{QueueInfo: QueueInfo{Name: "excl", Exclusive: true}, Owner: owner}); err != nil {
		t.Fatal(err)
	}
	if _, err := v.DeclareQueue(QueueDecl{QueueInfo: QueueInfo{Name: "shared", Durable: true}}); err != nil {
		t.Fatal(err)
	}
	if _, err := v.DeclareQueue(QueueDecl{QueueInfo: QueueInfo{Name: "transient"}}); err != nil {
		t.Fatal(err)
	}
	want := map[string]int{key("", InterestKey, "excl"): 1, key("", InterestKey, "transient"): 1}
	f.check(t, "queues declared", want)

	bind("amq.topic", q("excl"), "a.#", nil)
	bind("amq.direct", q("excl"), "k", nil)
	bind("amq.direct", q("transient"), "k", core.Table{"differs": int32(1)})
	bind("amq.headers", q("excl"), "", core.Table{"x-match": "any", "h": "v"})
	fanout := bind("amq.fanout", q("excl"), "", nil)
	bind("amq.topic", q("shared"), "s", nil) // a shared queue: no interest
	want[key("amq.topic", InterestPattern, "a.#")] = 1
	want[key("amq.direct", InterestKey, "k")] = 2
	want[all("amq.headers")] = 1
	want[all("amq.fanout")] = 1
	f.check(t, "bindings", want)

	// Upstream: up2 → up → amq.topic (replicated), and an alternate
	// exchange; a transient exchange's own binding to a local queue.
	exchange("up", Topic, true, nil)
	exchange("up2", Fanout, true, nil)
	bind("up", x("amq.topic"), "#", nil)
	bind("up2", x("up"), "", nil)
	exchange("withae", Direct, true, core.Table{"alternate-exchange": "amq.direct"})
	exchange("unrelated", Topic, true, nil)
	bind("unrelated", q("shared"), "#", nil)
	exchange("tx", Direct, false, nil)
	bind("tx", q("transient"), "z", nil)
	want[all("up")], want[all("up2")], want[all("withae")] = 1, 1, 1
	want[key("tx", InterestKey, "z")] = 1
	f.check(t, "upstream", want)

	if err := v.Unbind(fanout, owner); err != nil {
		t.Fatal(err)
	}
	delete(want, all("amq.fanout"))
	f.check(t, "unbind", want)
	if err := v.DeleteExchange("tx", false); err != nil {
		t.Fatal(err)
	}
	delete(want, key("tx", InterestKey, "z"))
	f.check(t, "transient exchange deleted", want)
	if err := v.DeleteExchange("up", false); err != nil {
		t.Fatal(err)
	}
	delete(want, all("up"))
	delete(want, all("up2"))
	f.check(t, "upstream exchange deleted", want)
	if _, err := v.DeleteQueue("transient", false, false, 0); err != nil {
		t.Fatal(err)
	}
	delete(want, key("", InterestKey, "transient"))
	want[key("amq.direct", InterestKey, "k")] = 1
	f.check(t, "queue deleted", want)

	// The connection goes: its exclusive queue, and every interest with it.
	b.ConnectionClosed(owner)
	f.check(t, "connection closed", map[string]int{})

	// A vhost deleted takes its interest with it; reply-to addresses keep
	// theirs until unregistered.
	v2, err := b.AddVHost("v2")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v2.DeclareQueue(QueueDecl{QueueInfo: QueueInfo{Name: "tmp", AutoDelete: true}}); err != nil {
		t.Fatal(err)
	}
	if err := v2.Bind(Binding{Source: "amq.topic", Dest: q("tmp"), Key: "#"}, 0); err != nil {
		t.Fatal(err)
	}
	addr, unregister := v2.RegisterReplyTo(func(*core.Message) bool { return true })
	f.check(t, "vhost v2", map[string]int{"v2||0|tmp": 1, "v2|amq.topic|1|#": 1, "v2||0|" + addr: 1})
	if err := b.DeleteVHost("v2"); err != nil {
		t.Fatal(err)
	}
	f.check(t, "vhost v2 deleted", map[string]int{"v2||0|" + addr: 1})
	unregister()
	unregister()
	f.check(t, "reply-to unregistered", map[string]int{})
}
