package router

import (
	"fmt"
	"sync"
	"testing"

	"github.com/bourse-mq/bourse/core"
)

// memCluster is an in-memory Replicator shared by several brokers: a map
// of records applied to every broker, synchronously and in one order, which
// is what the cluster package does through JetStream.
type memCluster struct {
	mu      sync.Mutex
	brokers []*Broker
	vhosts  map[string]bool
	exch    map[[2]string]ExchangeInfo
	queues  map[[2]string]QueueInfo
	binds   map[string]core.VHostBinding
}

func newMemCluster() *memCluster {
	return &memCluster{vhosts: map[string]bool{}, exch: map[[2]string]ExchangeInfo{},
		queues: map[[2]string]QueueInfo{}, binds: map[string]core.VHostBinding{}}
}

func (c *memCluster) node() *Broker {
	b := New(Options{Replicator: c})
	c.mu.Lock()
	c.brokers = append(c.brokers, b)
	c.mu.Unlock()
	return b
}

func (c *memCluster) each(f func(*Broker)) {
	for _, b := range c.brokers {
		f(b)
	}
}

func bkey(vhost string, b Binding) string {
	return fmt.Sprintf("%q %q %v %q %v", vhost, b.Source, b.Dest, b.Key, b.Args)
}

func (c *memCluster) PutVHost(name string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.vhosts[name] = true
	c.each(func(b *Broker) { b.ApplyVHost(name) })
	return nil
}

func (c *memCluster) DeleteVHost(name string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.vhosts, name)
	c.each(func(b *Broker) { b.ApplyVHostDeleted(name) })
	return nil
}

func (c *memCluster) PutExchange(vhost string, e ExchangeInfo) (ExchangeInfo, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cur, ok := c.exch[[2]string{vhost, e.Name}]; ok {
		return cur, nil
	}
	c.exch[[2]string{vhost, e.Name}] = e
	c.each(func(b *Broker) { _ = b.ApplyExchange(vhost, e) })
	return e, nil
}

func (c *memCluster) dropBindings(vhost string, pick func(Binding) bool) {
	for k, b := range c.binds {
		if b.VHost == vhost && pick(b.Binding) {
			delete(c.binds, k)
			c.each(func(br *Broker) { br.ApplyBindingDeleted(vhost, b.Binding) })
		}
	}
}

func (c *memCluster) DeleteExchange(vhost, name string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dropBindings(vhost, func(b Binding) bool { return b.Source == name || b.Dest == Dest{Kind: ToExchange, Name: name} })
	delete(c.exch, [2]string{vhost, name})
	c.each(func(b *Broker) { b.ApplyExchangeDeleted(vhost, name) })
	return nil
}

func (c *memCluster) PutQueue(vhost string, q QueueInfo) (QueueInfo, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cur, ok := c.queues[[2]string{vhost, q.Name}]; ok {
		return cur, nil
	}
	c.queues[[2]string{vhost, q.Name}] = q
	c.each(func(b *Broker) { _ = b.ApplyQueue(vhost, q) })
	return q, nil
}

func (c *memCluster) DeleteQueue(vhost, name string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dropBindings(vhost, func(b Binding) bool { return b.Dest == Dest{Kind: ToQueue, Name: name} })
	delete(c.queues, [2]string{vhost, name})
	c.each(func(b *Broker) { b.ApplyQueueDeleted(vhost, name) })
	return nil
}

func (c *memCluster) PutBinding(vhost string, b Binding) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.binds[bkey(vhost, b)] = core.VHostBinding{VHost: vhost, Binding: b}
	c.each(func(br *Broker) { _ = br.ApplyBinding(vhost, b) })
	return nil
}

func (c *memCluster) DeleteBinding(vhost string, b Binding) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dropBindings(vhost, func(x Binding) bool { return bkey(vhost, x) == bkey(vhost, b) })
	return nil
}

func (c *memCluster) Sync() error { return nil }

func (c *memCluster) counts() (int, int, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.exch), len(c.queues), len(c.binds)
}

func TestReplicatedTopologyRules(t *testing.T) {
	c := newMemCluster()
	a, b := c.node(), c.node()
	va, vb := mustVHost(t, a), mustVHost(t, b)

	// Durable objects are shared; transient and exclusive ones are not.
	must(t, va.DeclareExchange(ExchangeDecl{ExchangeInfo: ExchangeInfo{Name: "dx", Type: Direct, Durable: true}}))
	must(t, va.DeclareExchange(ExchangeDecl{ExchangeInfo: ExchangeInfo{Name: "tx", Type: Direct}}))
	_, err := va.DeclareQueue(QueueDecl{QueueInfo: QueueInfo{Name: "dq", Durable: true}})
	must(t, err)
	_, err = va.DeclareQueue(QueueDecl{QueueInfo: QueueInfo{Name: "xq", Durable: true, Exclusive: true}, Owner: 7})
	must(t, err)
	must(t, va.Bind(Binding{Source: "dx", Dest: Dest{Kind: ToQueue, Name: "dq"}, Key: "k"}, 0))
	must(t, va.Bind(Binding{Source: "dx", Dest: Dest{Kind: ToQueue, Name: "xq"}, Key: "k"}, 7))
	if x, q, bd := c.counts(); x != 1 || q != 1 || bd != 1 {
		t.Fatalf("shared: %d exchanges, %d queues, %d bindings; want 1, 1, 1", x, q, bd)
	}
	if _, err := vb.Queue("dq", 0); err != nil {
		t.Fatalf("durable queue not on the other node: %v", err)
	}
	if _, err := vb.Queue("xq", 0); core.KindOf(err) != core.NotFound {
		t.Fatalf("exclusive queue on the other node: %v", err)
	}
	if err := vb.DeclareExchange(ExchangeDecl{ExchangeInfo: ExchangeInfo{Name: "tx", Type: Fanout}}); err != nil {
		t.Fatalf("transient exchanges are per node, so another node may use the name: %v", err)
	}
	// A conflicting declare on B is refused by the cluster's record.
	err = vb.DeclareExchange(ExchangeDecl{ExchangeInfo: ExchangeInfo{Name: "dx", Type: Topic, Durable: true}})
	if core.KindOf(err) != core.PreconditionFailed {
		t.Fatalf("conflicting declare: %v", err)
	}

	// An auto-delete durable exchange goes, in the whole cluster, when the
	// last binding goes (from the node that removed it).
	must(t, vb.DeclareExchange(ExchangeDecl{ExchangeInfo: ExchangeInfo{Name: "ad", Type: Fanout, Durable: true, AutoDelete: true}}))
	must(t, vb.Bind(Binding{Source: "ad", Dest: Dest{Kind: ToQueue, Name: "dq"}}, 0))
	must(t, va.Unbind(Binding{Source: "ad", Dest: Dest{Kind: ToQueue, Name: "dq"}}, 0))
	for i, v := range []*VHost{va, vb} {
		for _, e := range v.Exchanges() {
			if e.Name == "ad" {
				t.Fatalf("node %d: auto-delete exchange left after its last binding", i)
			}
		}
	}

	// Deleting the queue on B takes its bindings on every node; the
	// exclusive queue's node-local binding stays on A.
	_, err = vb.DeleteQueue("dq", false, false, 0)
	must(t, err)
	if _, q, bd := c.counts(); q != 0 || bd != 0 {
		t.Fatalf("after delete: %d queues, %d bindings shared", q, bd)
	}
	if got := len(va.Bindings()); got != 1+1 { // the default exchange's to xq, and dx → xq
		t.Fatalf("node A bindings after delete: %v", va.Bindings())
	}
	// The exclusive queue goes with its connection, locally.
	a.ConnectionClosed(7)
	if _, err := va.Queue("xq", 7); core.KindOf(err) != core.NotFound {
		t.Fatalf("exclusive queue after its connection closed: %v", err)
	}
}

func mustVHost(t *testing.T, b *Broker) *VHost {
	t.Helper()
	v, err := b.VHost("/")
	must(t, err)
	return v
}
