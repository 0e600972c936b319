package cluster_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/bourse-mq/bourse/cluster"
	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/router"
)

// partition puts every route connection of an n-node test cluster through
// a TCP proxy per ordered pair of nodes (node i dials its peer j only
// through proxy i→j), so that a test can cut a node off from the others
// and heal it. Each node advertises a dead route address, so that no node
// learns a peer's real route port by gossip and bypasses the proxies.
type partition struct {
	t      *testing.T
	n      int
	real   []string // each node's real route listener, known once tweaked
	mu     sync.Mutex
	cut    map[int]bool
	conns  map[[2]int][]net.Conn
	ls     []net.Listener
	routes [][]string // node i's route URLs (its proxies)
	dead   string
	wg     sync.WaitGroup
}

func newPartition(t *testing.T, n int) *partition {
	p := &partition{t: t, n: n, real: make([]string, n), cut: map[int]bool{}, conns: map[[2]int][]net.Conn{},
		routes: make([][]string, n)}
	dl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.dead = dl.Addr().String()
	dl.Close()
	for i := range n {
		for j := range n {
			if i == j {
				continue
			}
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			p.ls = append(p.ls, l)
			p.routes[i] = append(p.routes[i], "nats://"+l.Addr().String())
			p.wg.Go(func() { p.accept(l, i, j) })
		}
	}
	t.Cleanup(p.close)
	return p
}

// tweak routes node i through its proxies.
func (p *partition) tweak(i int, o *cluster.Options) {
	p.mu.Lock()
	p.real[i] = o.RouteListen
	p.mu.Unlock()
	o.Routes = p.routes[i]
	o.RouteAdvertise = p.dead
}

func (p *partition) accept(l net.Listener, from, to int) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		blocked, target := p.cut[from] || p.cut[to], p.real[to]
		p.mu.Unlock()
		if blocked {
			c.Close()
			continue
		}
		s, err := net.DialTimeout("tcp", target, 2*time.Second)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		if p.cut[from] || p.cut[to] {
			p.mu.Unlock()
			c.Close()
			s.Close()
			continue
		}
		k := [2]int{from, to}
		p.conns[k] = append(p.conns[k], c, s)
		p.mu.Unlock()
		p.wg.Go(func() { _, _ = io.Copy(s, c); s.Close(); c.Close() })
		p.wg.Go(func() { _, _ = io.Copy(c, s); s.Close(); c.Close() })
	}
}

// isolate cuts node i off: its route connections close and new ones are
// refused until heal.
func (p *partition) isolate(i int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut[i] = true
	for k, cs := range p.conns {
		if k[0] == i || k[1] == i {
			for _, c := range cs {
				c.Close()
			}
			delete(p.conns, k)
		}
	}
}

func (p *partition) heal() {
	p.mu.Lock()
	clear(p.cut)
	p.mu.Unlock()
}

func (p *partition) close() {
	for _, l := range p.ls {
		l.Close()
	}
	p.mu.Lock()
	for _, cs := range p.conns {
		for _, c := range cs {
			c.Close()
		}
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// publishOne publishes one persistent message (to exchange with key) and
// returns how long its confirm (or refusal) took; errNoConfirm if neither
// came within wait.
func publishOne(v *router.VHost, exchange, key, body string, wait time.Duration) (time.Duration, error) {
	start := time.Now()
	res := make(chan error, 1)
	m := &core.Message{Exchange: exchange, RoutingKey: key, Body: []byte(body)}
	m.Props.DeliveryMode = 2
	r, err := v.Publish(m, router.PublishOptions{Confirm: func(err error) { res <- err }})
	if err != nil {
		return time.Since(start), err
	}
	if r.Routed == 0 {
		return time.Since(start), errors.New("unroutable")
	}
	select {
	case err := <-res:
		return time.Since(start), err
	case <-time.After(wait):
		return wait, errNoConfirm
	}
}

var errNoConfirm = errors.New("no confirm nor refusal")

// TestPartitionedMinorityRefusesWritesAndCatchesUp: a node cut off from
// the two others (its route connections through proxies closed and
// refused) nacks publishes to a shared queue and refuses declares within
// the cluster timeout, while the majority goes on; once healed, it has
// the topology made meanwhile and messages flow through it again.
func TestPartitionedMinorityRefusesWritesAndCatchesUp(t *testing.T) {
	// Node 2 is cut off and refuses within its timeout (the default). The
	// majority's timeout is longer: a queue declared there during the
	// partition gets a consumer whose raft group may have picked node 2
	// to lead, and the two others elect another only after their election
	// timeout (4 to 9 s), plus the race detector's slowness.
	const timeout = 10 * time.Second
	p := newPartition(t, 3)
	c := newTestCluster(t, 3, p.tweak, func(i int, o *cluster.Options) {
		o.Timeout = timeout
		if i != 2 {
			o.Timeout = 30 * time.Second
		}
	})
	bs := []*router.Broker{c.attach(0), c.attach(1), c.attach(2)}
	v0, v1, v2 := vhost(t, bs[0], "/"), vhost(t, bs[1], "/"), vhost(t, bs[2], "/")
	if _, err := v0.DeclareQueue(router.QueueDecl{QueueInfo: router.QueueInfo{Name: "jobs", Durable: true}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "queue on node 2", func() bool { return hasQueue(bs[2], "/", "jobs") })
	if _, err := publishOne(v2, "", "jobs", "before", 20*time.Second); err != nil {
		t.Fatalf("publish on node 2 before the partition: %v", err)
	}

	p.isolate(2)
	// Writes on the isolated node: refused, in bounded time. (The first
	// may still find the old stream leader for a moment: keep going
	// until one is refused, each bounded.)
	var refused error
	var took time.Duration
	for i := 0; refused == nil; i++ {
		if i == 5 {
			t.Fatal("5 publishes on the isolated node all confirmed")
		}
		took, refused = publishOne(v2, "", "jobs", fmt.Sprintf("cut%d", i), 4*timeout)
		if errors.Is(refused, errNoConfirm) {
			t.Fatalf("publish on the isolated node: %v within %v", refused, took)
		}
	}
	t.Logf("publish on the isolated node refused in %v: %v", took.Round(time.Millisecond), refused)
	if core.KindOf(refused) != core.ResourceError {
		t.Errorf("publish refusal of kind %v, want ResourceError (AMQP basic.nack): %v", core.KindOf(refused), refused)
	}
	start := time.Now()
	_, err := v2.DeclareQueue(router.QueueDecl{QueueInfo: router.QueueInfo{Name: "cut-off", Durable: true}})
	if err == nil {
		t.Fatal("a declare on the isolated node succeeded")
	}
	t.Logf("declare on the isolated node refused in %v: %v", time.Since(start).Round(time.Millisecond), err)
	if time.Since(start) > 4*timeout {
		t.Errorf("declare refusal took %v", time.Since(start))
	}
	if k := core.KindOf(err); k == core.NotFound || k == core.PreconditionFailed || k == core.AccessRefused {
		t.Errorf("declare on the isolated node: misleading kind %v: %v", k, err)
	}

	// The majority goes on: a declare, a binding, a delete, and messages.
	start = time.Now()
	if _, err := v0.DeclareQueue(router.QueueDecl{QueueInfo: router.QueueInfo{Name: "during", Durable: true}}); err != nil {
		t.Fatalf("declare in the majority: %v (after %v)", err, time.Since(start))
	}
	t.Logf("declare in the majority took %v", time.Since(start).Round(time.Millisecond))
	if err := v1.DeclareExchange(router.ExchangeDecl{ExchangeInfo: router.ExchangeInfo{Name: "ev", Type: router.Fanout, Durable: true}}); err != nil {
		t.Fatalf("exchange in the majority: %v", err)
	}
	bd := core.Binding{Source: "ev", Dest: core.Dest{Kind: core.ToQueue, Name: "during"}}
	if err := v1.Bind(bd, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := v0.DeleteQueue("jobs", false, false, 0); err != nil {
		t.Fatalf("delete in the majority: %v", err)
	}
	for i := range 5 {
		if _, err := publishOne(v1, "ev", "", fmt.Sprintf("maj%d", i), 20*time.Second); err != nil {
			t.Fatalf("publish in the majority: %v", err)
		}
	}

	p.heal()
	healed := time.Now()
	// Healing may cost an election: the cut-off node campaigned alone and
	// comes back with a higher term, so the leaders step down.
	deadline := 60 * time.Second
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for !cond() {
			if time.Since(healed) > deadline {
				t.Fatalf("%s: not within %v of healing", what, deadline)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitFor("the majority's topology on the healed node", func() bool {
		return hasQueue(bs[2], "/", "during") && hasExchange(bs[2], "/", "ev") && hasBinding(bs[2], "/", bd) && !hasQueue(bs[2], "/", "jobs")
	})
	t.Logf("topology caught up %v after healing", time.Since(healed).Round(time.Millisecond))
	// Messages flow through it again: it publishes (confirmed) and
	// consumes what the majority published.
	var perr error
	waitFor("a publish confirmed on the healed node", func() bool {
		_, perr = publishOne(v2, "ev", "", "after", 4*timeout)
		return perr == nil
	})
	s, sub := consume(t, v2, "during", 10)
	got := map[string]bool{}
	for range 6 {
		d := s.within(t, 20*time.Second)
		got[string(d.Msg.Body)] = true
		d.Queue.Ack(d.ID)
	}
	for _, b := range []string{"maj0", "maj1", "maj2", "maj3", "maj4", "after"} {
		if !got[b] {
			t.Fatalf("healed node consumed %v, missing %s", got, b)
		}
	}
	sub.Cancel()
	// And a declare there works again.
	if _, err := v2.DeclareQueue(router.QueueDecl{QueueInfo: router.QueueInfo{Name: "cut-off", Durable: true}}); err != nil {
		t.Fatalf("declare on the healed node: %v", err)
	}
	eventually(t, "declare from the healed node on node 0", func() bool { return hasQueue(bs[0], "/", "cut-off") })
}
