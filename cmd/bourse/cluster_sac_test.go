package main

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"
)

// TestClusterSingleActiveConsumer: a shared queue with
// x-single-active-consumer has one active consumer in the whole cluster,
// whichever nodes its consumers are on: it gets every message, in order,
// and the others nothing; when it goes, one other consumer (on another
// node) takes over and gets everything published after.
func TestClusterSingleActiveConsumer(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	nodes, stop := startServeCluster(t)
	defer stop()

	pc, pub := amqpChannel(t, nodes[1]["amqp"])
	defer pc.Close()
	if _, err := pub.QueueDeclare("sac", true, false, false, false, amqp.Table{"x-single-active-consumer": true}); err != nil {
		t.Fatal(err)
	}
	if err := pub.Confirm(false); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	got := make([][]string, 3)
	conns := make([]*amqp.Connection, 3)
	var wg sync.WaitGroup
	for i := range 3 {
		c, ch := amqpChannel(t, nodes[i]["amqp"])
		conns[i] = c
		if err := ch.Qos(10, 0, false); err != nil {
			t.Fatal(err)
		}
		ds, err := ch.Consume("sac", fmt.Sprintf("c%d", i), false, false, false, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			for d := range ds {
				mu.Lock()
				got[i] = append(got[i], string(d.Body))
				mu.Unlock()
				_ = d.Ack(false)
			}
		})
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
		wg.Wait()
	}()

	publish := func(from, n int) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for i := from; i < from+n; i++ {
			dc, err := pub.PublishWithDeferredConfirmWithContext(ctx, "", "sac", false, false,
				amqp.Publishing{DeliveryMode: amqp.Persistent, Body: fmt.Appendf(nil, "m%03d", i)})
			if err != nil {
				t.Fatal(err)
			}
			if ok, err := dc.WaitContext(ctx); !ok || err != nil {
				t.Fatalf("confirm %d: %v %v", i, ok, err)
			}
		}
	}
	// received waits until the consumers together have n messages, and
	// returns the one consumer that has messages from index from on.
	received := func(n, from int, skip int) int {
		t.Helper()
		total := func() int {
			mu.Lock()
			defer mu.Unlock()
			s := 0
			for _, g := range got {
				s += len(g)
			}
			return s
		}
		waitFor(t, fmt.Sprintf("%d messages consumed", n), func() bool { return total() >= n })
		time.Sleep(500 * time.Millisecond) // a second active consumer would show by now
		mu.Lock()
		defer mu.Unlock()
		active := -1
		for i, g := range got {
			if i == skip {
				continue
			}
			var mine []string
			for _, b := range g {
				var k int
				if _, err := fmt.Sscanf(b, "m%03d", &k); err == nil && k >= from {
					mine = append(mine, b)
				}
			}
			if len(mine) == 0 {
				continue
			}
			if active >= 0 {
				t.Fatalf("consumers %d and %d are both active: %v / %v", active, i, got[active], g)
			}
			active = i
			for j, b := range mine {
				if want := fmt.Sprintf("m%03d", from+j); b != want {
					t.Fatalf("consumer %d got %s at %d, want %s (out of order or duplicated): %v", i, b, j, want, mine)
				}
			}
			if len(mine) != n-from {
				t.Fatalf("consumer %d got %d of %d", i, len(mine), n-from)
			}
		}
		return active
	}

	publish(0, 40)
	first := received(40, 0, -1)

	// The active consumer's connection goes: another node's consumer
	// takes over.
	conns[first].Close()
	publish(40, 40)
	second := received(80, 40, first)
	if second == first || second < 0 {
		t.Fatalf("no consumer took over from %d", first)
	}
}
