package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"

	"github.com/bourse-mq/bourse/cluster"
	"github.com/bourse-mq/bourse/internal/testkit"
)

// streamLeader returns the name of the JetStream server that leads the
// stream of a shared queue, asked through natsURL.
func streamLeader(t *testing.T, natsURL, queue string) string {
	t.Helper()
	js, done := jsConnect(t, natsURL)
	defer done()
	leader := ""
	waitFor(t, "a leader of the stream of "+queue, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		st, err := js.Stream(ctx, cluster.QueueStream("/", queue))
		if err == nil && st.CachedInfo().Cluster != nil {
			leader = st.CachedInfo().Cluster.Leader
		}
		return leader != ""
	})
	return leader
}

// TestClusterStreamLeaderKilledUnderConfirmedLoad: three serve instances;
// AMQP publishers with confirms on every node and a consumer on one
// survivor while the node that leads the queue's JetStream stream is shut
// down mid-flow. Every confirmed message is consumed afterwards on a
// surviving node; a message delivered twice is flagged redelivered the
// second time; the survivors' publishers go on (nacks allowed while
// JetStream elects a new leader, never a hang).
func TestClusterStreamLeaderKilledUnderConfirmedLoad(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	c := startServeNodes(t, 3)
	defer c.stopAll()
	conn0, ch0 := amqpChannel(t, c.addrs[0]["amqp"])
	if _, err := ch0.QueueDeclare("flow", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	conn0.Close()
	leaderName := streamLeader(t, c.addrs[1]["nats"], "flow")
	var leader int
	if _, err := fmt.Sscanf(leaderName, "n%d", &leader); err != nil {
		t.Fatalf("leader %q: %v", leaderName, err)
	}
	s1, s2 := (leader+1)%3, (leader+2)%3
	t.Logf("stream leader n%d; survivors n%d, n%d", leader, s1, s2)

	// Publishers: one per node, 64 confirms outstanding each, bounded in
	// count (3000 each) and stopped by the test.
	ledger := testkit.NewLedger()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	pubErrs := make([]error, 3)
	var conns []*amqp.Connection
	for i := range 3 {
		conn, ch := amqpChannel(t, c.addrs[i]["amqp"])
		conns = append(conns, conn)
		wg.Go(func() {
			pubErrs[i] = testkit.PublishConfirmed(ch, testkit.Load{Queue: "flow", Name: fmt.Sprintf("p%d", i),
				Max: 3000, Window: 64, ConfirmWait: 30 * time.Second, Stop: stop}, ledger)
		})
	}
	// A live consumer on a survivor.
	var gotMu sync.Mutex
	got := map[string]int{}
	unflagged := ""
	cconn, cch := amqpChannel(t, c.addrs[s2]["amqp"])
	defer cconn.Close()
	if err := cch.Qos(50, 0, false); err != nil {
		t.Fatal(err)
	}
	live, err := cch.Consume("flow", "live", false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	consumerDone := make(chan struct{})
	go func() {
		defer close(consumerDone)
		for d := range live {
			gotMu.Lock()
			b := string(d.Body)
			if got[b] > 0 && !d.Redelivered && unflagged == "" {
				unflagged = b
			}
			got[b]++
			gotMu.Unlock()
			_ = d.Ack(false)
		}
	}()

	waitFor(t, "300 messages confirmed before the kill", func() bool { _, k, _ := ledger.Counts(); return k >= 300 })
	_, before, _ := ledger.Counts()
	killed := time.Now()
	c.stop(leader)
	t.Logf("n%d stopped (in %v) with %d messages confirmed", leader, time.Since(killed).Round(time.Millisecond), before)
	// The survivors' flow resumes: 300 more confirms, within a bound.
	deadline := time.Now().Add(40 * time.Second)
	for {
		_, k, _ := ledger.Counts()
		if k >= before+300 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d confirms in 40s after the leader was stopped (%d before)", k-before, before)
		}
		time.Sleep(20 * time.Millisecond)
	}
	resumed := time.Since(killed)
	close(stop)
	wg.Wait()
	for i, err := range pubErrs {
		if i != leader && err != nil {
			t.Errorf("publisher on surviving node n%d: %v", i, err)
		}
	}
	if err := cch.Cancel("live", false); err != nil {
		t.Fatal(err)
	}
	<-consumerDone
	for i, conn := range conns {
		if i != leader {
			conn.Close()
		}
	}

	// Whatever the live consumer did not get, a consumer on the other
	// survivor drains.
	dconn, dch := amqpChannel(t, c.addrs[s1]["amqp"])
	defer dconn.Close()
	want := ledger.Confirmed()
	bad, err := testkit.Drain(dch, "flow", got, want, 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if unflagged != "" {
		t.Errorf("%s delivered again without the redelivered flag", unflagged)
	}
	if bad != "" {
		t.Error(bad)
	}
	sent, confirmed, nacked := ledger.Counts()
	dups := 0
	for _, k := range got {
		dups += k - 1
	}
	if missing := ledger.Missing(got); len(missing) > 0 {
		t.Fatalf("confirmed messages lost: %v (sent %d, confirmed %d, nacked %d)", missing, sent, confirmed, nacked)
	}
	t.Logf("sent %d, confirmed %d, nacked %d, consumed %d distinct (%d duplicates); 300 confirms after the stop within %v",
		sent, confirmed, nacked, len(got), dups, resumed.Round(time.Millisecond))
	dconn.Close()
	cconn.Close()
	c.stopAll()
}

// TestClusterNoQuorumRefusesWrites: with two of three nodes gone, the last
// one refuses what needs JetStream, each in bounded time and over AMQP: a
// confirmed publish to a shared queue is nacked, a transaction's commit
// fails (connection closed with 506, never commit-ok: before the fix the
// commit was acknowledged although the message was not stored), and a
// declare fails with 506.
func TestClusterNoQuorumRefusesWrites(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	c := startServeNodes(t, 3)
	defer c.stopAll()
	conn, ch := amqpChannel(t, c.addrs[0]["amqp"])
	defer conn.Close()
	if _, err := ch.QueueDeclare("q", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	c.stop(1)
	c.stop(2)
	const bound = 40 * time.Second // the cluster timeout (10 s) with room

	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	dc, err := ch.PublishWithDeferredConfirm("", "q", false, false, amqp.Publishing{DeliveryMode: amqp.Persistent, Body: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	ok, err := dc.WaitContext(ctx)
	cancel()
	if err != nil || ok {
		t.Fatalf("publish with no quorum: acked=%v err=%v after %v, want a nack", ok, err, time.Since(start))
	}
	t.Logf("publish nacked after %v", time.Since(start).Round(time.Millisecond))

	tconn, tch := amqpChannel(t, c.addrs[0]["amqp"])
	defer tconn.Close()
	if err := tch.Tx(); err != nil {
		t.Fatal(err)
	}
	if err := tch.Publish("", "q", false, false, amqp.Publishing{DeliveryMode: amqp.Persistent, Body: []byte("tx")}); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	committed := make(chan error, 1)
	go func() { committed <- tch.TxCommit() }()
	select {
	case err := <-committed:
		var ae *amqp.Error
		if err == nil {
			t.Fatal("tx.commit-ok with no quorum: the message was not stored")
		}
		if !errors.As(err, &ae) || ae.Code != amqp.ResourceError {
			t.Fatalf("tx.commit with no quorum: %v, want 506", err)
		}
		t.Logf("tx.commit failed after %v: %v", time.Since(start).Round(time.Millisecond), err)
	case <-time.After(bound):
		t.Fatal("tx.commit with no quorum: no answer")
	}

	dconn, dch := amqpChannel(t, c.addrs[0]["amqp"])
	defer dconn.Close()
	start = time.Now()
	declared := make(chan error, 1)
	go func() { _, err := dch.QueueDeclare("new", true, false, false, false, nil); declared <- err }()
	select {
	case err := <-declared:
		var ae *amqp.Error
		if !errors.As(err, &ae) || ae.Code != amqp.ResourceError {
			t.Fatalf("declare with no quorum: %v, want 506", err)
		}
		t.Logf("declare failed after %v: %v", time.Since(start).Round(time.Millisecond), err)
	case <-time.After(bound):
		t.Fatal("declare with no quorum: no answer")
	}
	conn.Close()
	c.stopAll()
}
