package e2e

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/bourse-mq/bourse/internal/testkit"
)

// startCluster runs three `bourse serve --cluster embedded` processes on
// loopback (free ports, temp data dirs), launched together (the topology
// bucket needs all three), and returns them once each is ready.
func startCluster(t *testing.T) []*Broker {
	t.Helper()
	var routes, listens []string
	var ls []net.Listener
	for range 3 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		listens = append(listens, l.Addr().String())
		routes = append(routes, "nats://"+l.Addr().String())
	}
	for _, l := range ls {
		l.Close()
	}
	bs := make([]*Broker, 3)
	for i := range bs {
		bs[i] = &Broker{t: t, dataDir: t.TempDir(),
			args: []string{"--cluster", "embedded", "--cluster-routes", strings.Join(routes, ","), "--log-level", "info"},
			env: []string{"BOURSE_CLUSTER_NAME=e2e", fmt.Sprintf("BOURSE_CLUSTER_NODE_NAME=n%d", i),
				"BOURSE_CLUSTER_LISTEN=127.0.0.1:0", "BOURSE_CLUSTER_ROUTE_LISTEN=" + listens[i],
				"BOURSE_CLUSTER_STORE_DIR=" + filepath.Join(t.TempDir(), "js")}}
		bs[i].launch()
		t.Cleanup(bs[i].Stop)
	}
	for _, b := range bs {
		b.awaitReady()
	}
	return bs
}

// queueStreamLeader returns the name of the JetStream server leading the
// stream of the Bourse queue named q, asked through natsURL.
func queueStreamLeader(t *testing.T, natsURL, q string) string {
	t.Helper()
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		l := js.ListStreams(ctx)
		for info := range l.Info() {
			if strings.HasPrefix(info.Config.Name, "bourse_q_"+q+"_") && info.Cluster != nil && info.Cluster.Leader != "" {
				cancel()
				return info.Cluster.Leader
			}
		}
		cancel()
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no leader for the stream of queue %s", q)
	return ""
}

// TestClusterKill9KeepsConfirmedMessages: three bourse processes in
// cluster mode embedded; AMQP publishers with confirms on every node; the
// node leading the queue's stream is killed with SIGKILL mid-flow, and
// its publisher reconnects to a survivor and goes on. Afterwards every
// confirmed message is consumed from the survivors.
func TestClusterKill9KeepsConfirmedMessages(t *testing.T) {
	start := time.Now()
	bs := startCluster(t)
	t.Logf("three nodes ready in %v", time.Since(start).Round(time.Millisecond))
	ch := bs[0].AMQPChannel(t)
	if _, err := ch.QueueDeclare("crash", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	leaderName := queueStreamLeader(t, bs[1].Addrs["nats"], "crash")
	var victim int
	if _, err := fmt.Sscanf(leaderName, "n%d", &victim); err != nil {
		t.Fatalf("leader %q: %v", leaderName, err)
	}
	survivors := []int{(victim + 1) % 3, (victim + 2) % 3}

	ledger := testkit.NewLedger()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make([]error, 3)
	addr := func(i int) string { return bs[i].Addrs["amqp"] }
	for i := range 3 {
		wg.Go(func() {
			// Up to 4000 messages in all; the victim's publisher
			// reconnects to a survivor when its node dies.
			target := i
			for round := 0; round < 3; round++ {
				c, err := amqp.Dial("amqp://guest:guest@" + addr(target) + "/")
				if err == nil {
					var pch *amqp.Channel
					if pch, err = c.Channel(); err == nil {
						err = testkit.PublishConfirmed(pch, testkit.Load{Queue: "crash", Name: fmt.Sprintf("p%d.%d", i, round),
							Max: 4000, Window: 64, ConfirmWait: 30 * time.Second, Stop: stop}, ledger)
					}
					c.Close()
				}
				errs[i] = err
				if err == nil || target != victim {
					return
				}
				target = survivors[i%2]
			}
		})
	}
	waitLedger := func(what string, n int, within time.Duration) {
		t.Helper()
		deadline := time.Now().Add(within)
		for {
			if _, k, _ := ledger.Counts(); k >= n {
				return
			}
			if time.Now().After(deadline) {
				_, k, _ := ledger.Counts()
				close(stop)
				wg.Wait()
				t.Fatalf("%s: %d confirmed, want %d within %v", what, k, n, within)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitLedger("before the kill", 500, 30*time.Second)
	// The victim's publisher is publishing too (its handshake with a
	// loaded race-built node can take a second).
	victimConfirmed := func(round int) (n int) {
		for b := range ledger.Confirmed() {
			if strings.HasPrefix(b, fmt.Sprintf("p%d.%d:", victim, round)) {
				n++
			}
		}
		return n
	}
	for deadline := time.Now().Add(30 * time.Second); victimConfirmed(0) < 50; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			close(stop)
			wg.Wait()
			t.Fatalf("the publisher on n%d had %d confirms in 30s", victim, victimConfirmed(0))
		}
	}
	_, before, _ := ledger.Counts()
	killed := time.Now()
	bs[victim].Kill9()
	waitLedger("after the kill", before+500, 40*time.Second)
	resumed := time.Since(killed)
	close(stop)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("publisher %d (victim n%d): %v", i, victim, err)
		}
	}

	got := map[string]int{}
	want := ledger.Confirmed()
	reconnected := victimConfirmed(1)
	if reconnected == 0 {
		t.Errorf("the killed node's publisher had nothing confirmed after reconnecting to a survivor")
	}
	for _, s := range survivors {
		c := bs[s].AMQP(t)
		dch, err := c.Channel()
		if err != nil {
			t.Fatal(err)
		}
		bad, err := testkit.Drain(dch, "crash", got, want, 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if bad != "" {
			t.Error(bad)
		}
	}
	sent, confirmed, nacked := ledger.Counts()
	dups := 0
	for _, k := range got {
		dups += k - 1
	}
	if missing := ledger.Missing(got); len(missing) > 0 {
		t.Fatalf("confirmed messages lost after kill -9 of n%d: %v (sent %d, confirmed %d, nacked %d, consumed %d)",
			victim, missing, sent, confirmed, nacked, len(got))
	}
	t.Logf("killed n%d (stream leader) after %d confirms; 500 more confirmed within %v; sent %d, confirmed %d (%d by the victim's publisher after it reconnected), nacked %d, consumed %d distinct (%d duplicates); %v in all",
		victim, before, resumed.Round(time.Millisecond), sent, confirmed, reconnected, nacked, len(got), dups, time.Since(start).Round(time.Millisecond))
}
