package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/bourse-mq/bourse/cluster"
	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/router"
	"github.com/bourse-mq/bourse/storage/record"
)

// TestSessionQueuesShareOneStream: the queues of MQTT persistent sessions
// (named mqtt-subscription-…) keep their messages in one JetStream stream,
// whatever their number, and behave as queues: read in order on the node
// that consumes, an ack removes a message, a requeue delivers it again
// flagged redelivered, what one node had not acked is read by the next, a
// length bound drops the oldest, purge and delete remove what is stored.
func TestSessionQueuesShareOneStream(t *testing.T) {
	c := newTestCluster(t, 3)
	bs := []*router.Broker{c.attach(0), c.attach(1), c.attach(2)}
	name := func(i int) string { return fmt.Sprintf("mqtt-subscription-dev%d-0123456789abcdef", i) }
	for i := range 20 {
		_, err := vhost(t, bs[i%3], "/").DeclareQueue(router.QueueDecl{QueueInfo: router.QueueInfo{Name: name(i), Durable: true,
			Args: core.Table{"x-max-length": int64(5)}}})
		if err != nil {
			t.Fatal(err)
		}
	}
	js := c.jetStream(t, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	names := js.StreamNames(ctx)
	var streams []string
	for n := range names.Name() {
		if strings.HasPrefix(n, "bourse_q_") || n == cluster.SessionStream {
			streams = append(streams, n)
		}
	}
	if len(streams) != 1 || streams[0] != cluster.SessionStream {
		t.Fatalf("queue streams of 20 session queues: %v, want only %s", streams, cluster.SessionStream)
	}
	count := func(i int) uint64 {
		t.Helper()
		n, err := c.nodes[1].Queues().Messages(ctx, "/", name(i))
		if err != nil {
			t.Fatal(err)
		}
		return n
	}

	// Published on node 1, read in order on node 2.
	publishConfirmed(t, vhost(t, bs[1], "/"), "", name(0), 3, "m")
	if n := count(0); n != 3 {
		t.Fatalf("%d messages stored, want 3", n)
	}
	if n := count(1); n != 0 {
		t.Fatalf("another session queue holds %d messages", n)
	}
	s2, sub2 := consume(t, vhost(t, bs[2], "/"), name(0), 10)
	var ds []string
	for range 3 {
		d := s2.next(t)
		if d.Redelivered {
			t.Fatalf("%s flagged redelivered on its first delivery", d.Msg.Body)
		}
		ds = append(ds, string(d.Msg.Body))
		switch string(d.Msg.Body) {
		case "m0":
			d.Queue.Ack(d.ID)
		case "m1":
			d.Queue.Reject(d.ID, true)
		}
	}
	if strings.Join(ds, ",") != "m0,m1,m2" {
		t.Fatalf("delivered %v, want m0,m1,m2", ds)
	}
	again := s2.next(t)
	if string(again.Msg.Body) != "m1" || !again.Redelivered {
		t.Fatalf("after a requeue got %q (redelivered %v), want m1 redelivered", again.Msg.Body, again.Redelivered)
	}
	eventually(t, "the acked message deleted", func() bool { return count(0) == 2 })
	// The consumer goes with m1 and m2 unacked: node 0 reads them next.
	sub2.Cancel()
	s0, sub0 := consume(t, vhost(t, bs[0], "/"), name(0), 10)
	for _, want := range []string{"m1", "m2"} {
		d := s0.next(t)
		if string(d.Msg.Body) != want {
			t.Fatalf("on the next node got %q, want %q", d.Msg.Body, want)
		}
		d.Queue.Ack(d.ID)
	}
	s0.none(t, 300*time.Millisecond)
	eventually(t, "the session queue empty", func() bool { return count(0) == 0 })
	// New messages reach the reader while it waits, at once: after 8 s
	// idle its next look without a signal is 7.75 s away.
	time.Sleep(8 * time.Second)
	publishConfirmed(t, vhost(t, bs[2], "/"), "", name(0), 1, "live")
	if d := s0.within(t, 4*time.Second); string(d.Msg.Body) != "live0" {
		t.Fatalf("got %q, want live0", d.Msg.Body)
	} else {
		d.Queue.Ack(d.ID)
	}
	sub0.Cancel()

	// The length bound drops the oldest.
	publishConfirmed(t, vhost(t, bs[0], "/"), "", name(1), 8, "b")
	if n := count(1); n != 5 {
		t.Fatalf("%d messages in a queue bounded to 5", n)
	}
	s1, sub1 := consume(t, vhost(t, bs[1], "/"), name(1), 10)
	for i := 3; i < 8; i++ {
		d := s1.next(t)
		if want := fmt.Sprint("b", i); string(d.Msg.Body) != want {
			t.Fatalf("bounded queue: got %q, want %q", d.Msg.Body, want)
		}
	}
	sub1.Cancel()

	// Purge removes the stored messages; a delete removes them too.
	publishConfirmed(t, vhost(t, bs[0], "/"), "", name(2), 4, "p")
	if n, err := vhost(t, bs[2], "/").PurgeQueue(name(2), 0); err != nil || n != 4 {
		t.Fatalf("purge: %d, %v; want 4", n, err)
	}
	if n := count(2); n != 0 {
		t.Fatalf("%d messages after a purge", n)
	}
	publishConfirmed(t, vhost(t, bs[0], "/"), "", name(3), 2, "d")
	if _, err := vhost(t, bs[1], "/").DeleteQueue(name(3), false, false, 0); err != nil {
		t.Fatal(err)
	}
	if n := count(3); n != 0 {
		t.Fatalf("%d messages of a deleted queue left in the stream", n)
	}
}

// TestSessionQueueMovesItsOldStream: a session queue whose messages an
// older version kept in a stream of its own gets them, in order, from
// the shared stream once it has a consumer, and the old stream is gone.
func TestSessionQueueMovesItsOldStream(t *testing.T) {
	c := newTestCluster(t, 3)
	b := c.attach(1)
	const q = "mqtt-subscription-old-0123456789abcdef"
	js := c.jetStream(t, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// As the version before made it.
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: cluster.QueueStream("/", q), Subjects: []string{cluster.QueueSubject("/", q)},
		Retention: jetstream.WorkQueuePolicy, Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		payload, err := record.AppendMessage(nil, &core.Message{RoutingKey: q, Body: fmt.Appendf(nil, "old%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.Publish(ctx, cluster.QueueSubject("/", q), payload); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := vhost(t, b, "/").DeclareQueue(router.QueueDecl{QueueInfo: router.QueueInfo{Name: q, Durable: true}}); err != nil {
		t.Fatal(err)
	}
	s, sub := consume(t, vhost(t, b, "/"), q, 10)
	defer sub.Cancel()
	for i := range 3 {
		d := s.next(t)
		if want := fmt.Sprint("old", i); string(d.Msg.Body) != want {
			t.Fatalf("got %q, want %q", d.Msg.Body, want)
		}
		d.Queue.Ack(d.ID)
	}
	if _, err := js.Stream(ctx, cluster.QueueStream("/", q)); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("the old stream: %v, want it deleted", err)
	}
	eventually(t, "the moved messages acked", func() bool {
		n, err := c.nodes[2].Queues().Messages(ctx, "/", q)
		return err == nil && n == 0
	})
}
