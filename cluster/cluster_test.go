package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/bourse-mq/bourse/cluster"
	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/router"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// nats-server's own timers, which can outlive Shutdown by a moment
		// (one CI run: the access-time ticker and a file store's state
		// flusher, after every test had passed).
		goleak.IgnoreTopFunction("github.com/nats-io/nats-server/v2/server/ats.Register.func1"),
		goleak.IgnoreTopFunction("github.com/nats-io/nats-server/v2/server.(*fileStore).flushStreamStateLoop"))
}

func quiet() *slog.Logger {
	if os.Getenv("CLUSTER_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// freePorts reserves n loopback ports for route listeners, which the peers
// must know before any node starts.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var ls []net.Listener
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

// testCluster is three embedded NATS nodes on loopback, each with a
// broker whose durable topology is replicated.
type testCluster struct {
	t       testing.TB
	opts    []cluster.Options
	nodes   []*cluster.Node
	brokers []*router.Broker
}

// newTestCluster starts n nodes; tweak, if given, adjusts each node's
// options first.
func newTestCluster(t testing.TB, n int, tweak ...func(i int, o *cluster.Options)) *testCluster {
	t.Helper()
	ports := freePorts(t, n)
	var routes []string
	for _, p := range ports {
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", p))
	}
	dir := t.TempDir()
	c := &testCluster{t: t, nodes: make([]*cluster.Node, n), brokers: make([]*router.Broker, n)}
	for i, p := range ports {
		c.opts = append(c.opts, cluster.Options{
			Mode: cluster.ModeEmbedded, ClusterName: "test", NodeName: fmt.Sprintf("n%d", i),
			RouteListen: fmt.Sprintf("127.0.0.1:%d", p), Routes: routes,
			StoreDir: filepath.Join(dir, fmt.Sprintf("n%d", i)), Logger: quiet().With("node", i),
			StartTimeout: 45 * time.Second, Timeout: 10 * time.Second,
		})
		for _, f := range tweak {
			f(i, &c.opts[i])
		}
	}
	// The nodes start together: an R3 bucket needs all three.
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { c.nodes[i], errs[i] = cluster.Start(context.Background(), c.opts[i]) })
	}
	wg.Wait()
	t.Cleanup(c.close)
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return c
}

// attach gives node i a broker and replays the topology into it.
func (c *testCluster) attach(i int) *router.Broker {
	c.t.Helper()
	b := router.New(router.Options{Logger: c.opts[i].Logger, Replicator: c.nodes[i].Topology(), Shared: c.nodes[i].Queues()})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.nodes[i].Topology().Start(ctx, b); err != nil {
		c.t.Fatalf("node %d: %v", i, err)
	}
	if !c.nodes[i].Topology().Ready() {
		c.t.Fatalf("node %d: not ready after Start", i)
	}
	c.brokers[i] = b
	return b
}

// restart stops node i and starts it again on the same store.
func (c *testCluster) restart(i int, between func()) *router.Broker {
	c.t.Helper()
	c.nodes[i].Close()
	c.nodes[i], c.brokers[i] = nil, nil
	between()
	n, err := cluster.Start(context.Background(), c.opts[i])
	if err != nil {
		c.t.Fatalf("restart node %d: %v", i, err)
	}
	c.nodes[i] = n
	return c.attach(i)
}

func (c *testCluster) close() {
	for _, n := range c.nodes {
		if n != nil {
			n.Close()
		}
	}
}

func vhost(t testing.TB, b *router.Broker, name string) *router.VHost {
	t.Helper()
	v, err := b.VHost(name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// eventually polls cond for up to 10s.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func hasExchange(b *router.Broker, vh, name string) bool {
	v, err := b.VHost(vh)
	if err != nil {
		return false
	}
	for _, e := range v.Exchanges() {
		if e.Name == name {
			return true
		}
	}
	return false
}

func hasQueue(b *router.Broker, vh, name string) bool {
	v, err := b.VHost(vh)
	if err != nil {
		return false
	}
	_, err = v.Queue(name, 0)
	return err == nil
}

func hasBinding(b *router.Broker, vh string, want core.Binding) bool {
	v, err := b.VHost(vh)
	if err != nil {
		return false
	}
	for _, bd := range v.Bindings() {
		if bd.Source == want.Source && bd.Dest == want.Dest && bd.Key == want.Key {
			return true
		}
	}
	return false
}

var (
	orders  = router.ExchangeInfo{Name: "orders", Type: router.Topic, Durable: true}
	work    = router.QueueInfo{Name: "work", Durable: true, Args: core.Table{"x-max-length": int32(100)}}
	binding = core.Binding{Source: "orders", Dest: core.Dest{Kind: core.ToQueue, Name: "work"}, Key: "order.*"}
)

func TestTopologyReplicatesAcrossThreeNodes(t *testing.T) {
	c := newTestCluster(t, 3)
	a, b, cc := c.attach(0), c.attach(1), c.attach(2)
	va := vhost(t, a, "/")

	// Declared on A: A sees it at once (read-your-writes), B and C soon.
	if err := va.DeclareExchange(router.ExchangeDecl{ExchangeInfo: orders}); err != nil {
		t.Fatal(err)
	}
	if !hasExchange(a, "/", "orders") {
		t.Fatal("declaring node does not see its own exchange")
	}
	if _, err := va.DeclareQueue(router.QueueDecl{QueueInfo: work}); err != nil {
		t.Fatal(err)
	}
	if err := va.Bind(binding, 0); err != nil {
		t.Fatal(err)
	}
	if !hasQueue(a, "/", "work") || !hasBinding(a, "/", binding) {
		t.Fatal("declaring node does not see its own queue and binding")
	}
	for i, n := range []*router.Broker{b, cc} {
		eventually(t, fmt.Sprintf("topology on node %d", i+1), func() bool {
			return hasExchange(n, "/", "orders") && hasQueue(n, "/", "work") && hasBinding(n, "/", binding)
		})
	}
	// The binding routes on B: a message published there reaches the
	// queue (its stream in JetStream, shared by every node).
	vb := vhost(t, b, "/")
	if r, err := vb.Publish(&core.Message{Exchange: "orders", RoutingKey: "order.new", Body: []byte("x")}, router.PublishOptions{}); err != nil || r.Routed != 1 {
		t.Fatalf("routing on node 1 through the replicated binding: %+v, %v", r, err)
	}
	eventually(t, "the message in the queue's stream", func() bool {
		n, err := c.nodes[0].Queues().Messages(context.Background(), "/", "work")
		return err == nil && n == 1
	})

	// Redeclares: an equivalent one is fine on any node (the argument in
	// another integer width included); a conflicting one is 406 on C.
	vc := vhost(t, cc, "/")
	if err := vc.DeclareExchange(router.ExchangeDecl{ExchangeInfo: orders}); err != nil {
		t.Fatalf("equivalent redeclare: %v", err)
	}
	if _, err := vc.DeclareQueue(router.QueueDecl{QueueInfo: router.QueueInfo{Name: "work", Durable: true, Args: core.Table{"x-max-length": int64(100)}}}); err != nil {
		t.Fatalf("equivalent queue redeclare: %v", err)
	}
	conflictX := orders
	conflictX.Type = router.Direct
	if err := vc.DeclareExchange(router.ExchangeDecl{ExchangeInfo: conflictX}); core.KindOf(err) != core.PreconditionFailed {
		t.Fatalf("conflicting exchange redeclare on node 2: %v", err)
	}
	conflictQ := work
	conflictQ.Args = core.Table{"x-max-length": int32(5)}
	if _, err := vc.DeclareQueue(router.QueueDecl{QueueInfo: conflictQ}); core.KindOf(err) != core.PreconditionFailed {
		t.Fatalf("conflicting queue redeclare on node 2: %v", err)
	}

	// Delete on B: gone everywhere, and B sees it gone at once.
	if _, err := vb.DeleteQueue("work", false, false, 0); err != nil {
		t.Fatal(err)
	}
	if hasQueue(b, "/", "work") || hasBinding(b, "/", binding) {
		t.Fatal("deleting node still has the queue or its binding")
	}
	if err := vb.DeleteExchange("orders", false); err != nil {
		t.Fatal(err)
	}
	for i, n := range []*router.Broker{a, b, cc} {
		eventually(t, fmt.Sprintf("deletes on node %d", i), func() bool {
			return !hasExchange(n, "/", "orders") && !hasQueue(n, "/", "work") && !hasBinding(n, "/", binding)
		})
	}
	// The name is free again, for a new declaration of another type.
	if err := vc.DeclareExchange(router.ExchangeDecl{ExchangeInfo: conflictX}); err != nil {
		t.Fatalf("redeclare after delete: %v", err)
	}
}

func TestConcurrentDeclaresAgreeOnOne(t *testing.T) {
	c := newTestCluster(t, 3)
	bs := []*router.Broker{c.attach(0), c.attach(1), c.attach(2)}
	// Three nodes declare the same exchange name with three types at once:
	// exactly one wins, the others get 406, and every node ends with the
	// winner's type.
	types := []string{router.Direct, router.Fanout, router.Topic}
	errs := make([]error, 3)
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Go(func() {
			errs[i] = vhost(t, bs[i], "/").DeclareExchange(router.ExchangeDecl{ExchangeInfo: router.ExchangeInfo{Name: "race", Type: types[i], Durable: true}})
		})
	}
	wg.Wait()
	winner := ""
	for i, err := range errs {
		switch {
		case err == nil:
			if winner != "" {
				t.Fatalf("two winners: %s and %s", winner, types[i])
			}
			winner = types[i]
		case core.KindOf(err) != core.PreconditionFailed:
			t.Fatalf("node %d: %v", i, err)
		}
	}
	if winner == "" {
		t.Fatal("no declare won")
	}
	for i, b := range bs {
		eventually(t, fmt.Sprintf("winner on node %d", i), func() bool {
			for _, e := range vhost(t, b, "/").Exchanges() {
				if e.Name == "race" {
					return e.Type == winner
				}
			}
			return false
		})
	}
}

func TestCrossNodeUseWithoutWaiting(t *testing.T) {
	c := newTestCluster(t, 3)
	a, b := c.attach(0), c.attach(1)
	c.attach(2)
	// Declared on A, then at once used on B: a miss on B waits for B to
	// catch up with the cluster before it answers 404.
	for i := range 20 {
		q := fmt.Sprintf("q%d", i)
		if _, err := vhost(t, a, "/").DeclareQueue(router.QueueDecl{QueueInfo: router.QueueInfo{Name: q, Durable: true}}); err != nil {
			t.Fatal(err)
		}
		if _, err := vhost(t, b, "/").DeclareQueue(router.QueueDecl{QueueInfo: router.QueueInfo{Name: q}, Passive: true}); err != nil {
			t.Fatalf("passive declare of %s on another node right after: %v", q, err)
		}
		// A binding made on B at once (built-in amq.direct: on every node).
		bd := core.Binding{Source: router.AMQDirect, Dest: core.Dest{Kind: core.ToQueue, Name: q}, Key: q}
		if err := vhost(t, b, "/").Bind(bd, 0); err != nil {
			t.Fatalf("bind on another node right after: %v", err)
		}
		eventually(t, "binding back on A", func() bool { return hasBinding(a, "/", bd) })
	}
	// Really missing is still 404.
	if _, err := vhost(t, b, "/").DeclareQueue(router.QueueDecl{QueueInfo: router.QueueInfo{Name: "nope"}, Passive: true}); core.KindOf(err) != core.NotFound {
		t.Fatalf("passive declare of a missing queue: %v", err)
	}
}

func TestNodeReplaysTopologyBeforeReady(t *testing.T) {
	c := newTestCluster(t, 3)
	a := c.attach(0)
	c.attach(1)
	c.attach(2)
	va := vhost(t, a, "/")
	if err := va.DeclareExchange(router.ExchangeDecl{ExchangeInfo: orders}); err != nil {
		t.Fatal(err)
	}
	if _, err := va.DeclareQueue(router.QueueDecl{QueueInfo: work}); err != nil {
		t.Fatal(err)
	}
	// Node 2 goes down; meanwhile the cluster (two of three: a quorum)
	// binds, adds a vhost with its own queue, and deletes an exchange.
	c.restart(2, func() {
		if err := va.Bind(binding, 0); err != nil {
			t.Fatal(err)
		}
		if _, err := a.AddVHost("tenant"); err != nil {
			t.Fatal(err)
		}
		if _, err := vhost(t, a, "tenant").DeclareQueue(router.QueueDecl{QueueInfo: router.QueueInfo{Name: "jobs", Durable: true}}); err != nil {
			t.Fatal(err)
		}
		if err := va.DeclareExchange(router.ExchangeDecl{ExchangeInfo: router.ExchangeInfo{Name: "gone", Type: router.Fanout, Durable: true}}); err != nil {
			t.Fatal(err)
		}
		if err := va.DeleteExchange("gone", false); err != nil {
			t.Fatal(err)
		}
	})
	// Back and ready: no waiting, the replay happened before.
	b := c.brokers[2]
	if !hasExchange(b, "/", "orders") || !hasQueue(b, "/", "work") || !hasBinding(b, "/", binding) {
		t.Fatal("restarted node lacks the topology")
	}
	if !hasQueue(b, "tenant", "jobs") {
		t.Fatal("restarted node lacks the vhost declared while it was down")
	}
	if hasExchange(b, "/", "gone") {
		t.Fatal("restarted node has an exchange deleted while it was down")
	}
	// And it takes part: a conflicting redeclare there is 406.
	conflict := work
	conflict.Durable = false
	if _, err := vhost(t, b, "/").DeclareQueue(router.QueueDecl{QueueInfo: conflict}); core.KindOf(err) != core.PreconditionFailed {
		t.Fatalf("conflicting declare on the restarted node: %v", err)
	}
}

// TestNATSModeOnStandaloneJetStream runs two gateways (mode nats, with a
// user and password) on one standalone JetStream server: the bucket falls
// back to one replica, and the topology is shared.
func TestNATSModeOnStandaloneJetStream(t *testing.T) {
	srv := standaloneJetStream(t, "bourse", "s3cret")
	var brokers []*router.Broker
	for i := range 2 {
		n, err := cluster.Start(context.Background(), cluster.Options{Mode: cluster.ModeNATS, URLs: []string{srv.ClientURL()},
			User: "bourse", Password: "s3cret", NodeName: fmt.Sprintf("gw%d", i), Logger: quiet(), StartTimeout: 20 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(n.Close)
		b := router.New(router.Options{Logger: quiet(), Replicator: n.Topology()})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = n.Topology().Start(ctx, b)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		brokers = append(brokers, b)
	}
	if _, err := vhost(t, brokers[0], "/").DeclareQueue(router.QueueDecl{QueueInfo: work}); err != nil {
		t.Fatal(err)
	}
	if _, err := vhost(t, brokers[1], "/").DeclareQueue(router.QueueDecl{QueueInfo: router.QueueInfo{Name: "work"}, Passive: true}); err != nil {
		t.Fatalf("passive declare through the other gateway: %v", err)
	}
	if _, err := cluster.Start(context.Background(), cluster.Options{Mode: cluster.ModeNATS, URLs: []string{srv.ClientURL()},
		User: "bourse", Password: "wrong", Logger: quiet(), StartTimeout: 2 * time.Second}); err == nil {
		t.Fatal("a gateway with a wrong password started")
	}
}
