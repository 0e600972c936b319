package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"
)

// TestClusterSharedQueueCountAndPurge: a shared queue's message count is
// the cluster's, on every node, and a purge on any node removes what is
// ready everywhere while the messages a consumer holds stay with it.
func TestClusterSharedQueueCountAndPurge(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	nodes, stop := startServeCluster(t)
	defer stop()
	channel := func(i int) (*amqp.Connection, *amqp.Channel) { t.Helper(); return amqpChannel(t, nodes[i]["amqp"]) }
	ca, a := channel(0)
	defer ca.Close()
	cb, b := channel(1)
	defer cb.Close()
	cc, c := channel(2)
	defer cc.Close()

	if _, err := a.QueueDeclare("tasks", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := a.Confirm(false); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range 20 {
		dc, err := a.PublishWithDeferredConfirmWithContext(ctx, "", "tasks", false, false,
			amqp.Publishing{DeliveryMode: amqp.Persistent, Body: fmt.Appendf(nil, "t%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		if ok, err := dc.WaitContext(ctx); !ok || err != nil {
			t.Fatalf("confirm %d: %v %v", i, ok, err)
		}
	}
	count := func(ch *amqp.Channel) int {
		t.Helper()
		q, err := ch.QueueDeclarePassive("tasks", true, false, false, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		return q.Messages
	}
	for i, ch := range []*amqp.Channel{a, b, c} {
		if n := count(ch); n != 20 {
			t.Fatalf("node %d counts %d messages, want 20", i, n)
		}
	}

	// A consumer on node 2 holds 5 unacknowledged.
	if err := c.Qos(5, 0, false); err != nil {
		t.Fatal(err)
	}
	deliveries, err := c.Consume("tasks", "", false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	var held []amqp.Delivery
	for len(held) < 5 {
		select {
		case d := <-deliveries:
			held = append(held, d)
		case <-ctx.Done():
			t.Fatalf("only %d deliveries", len(held))
		}
	}
	waitFor(t, "15 ready in the cluster", func() bool { return count(b) == 15 })

	n, err := b.QueuePurge("tasks", false)
	if err != nil {
		t.Fatal(err)
	}
	if n != 15 {
		t.Fatalf("purge removed %d, want the 15 ready", n)
	}
	for i, ch := range []*amqp.Channel{a, b} {
		if n := count(ch); n != 0 {
			t.Fatalf("node %d counts %d after the purge", i, n)
		}
	}
	// The held ones are still the consumer's: acked, they are gone, and
	// nothing else arrives.
	for _, d := range held {
		if err := d.Ack(false); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case d := <-deliveries:
		t.Fatalf("a purged message was delivered: %s", d.Body)
	case <-time.After(time.Second):
	}
	waitFor(t, "the stream empty", func() bool { return streamMsgs(t, nodes[0]["nats"], "tasks") == 0 })
}

// TestClusterSharedQueueLengthLimit: x-max-length holds for the whole
// shared queue, whichever nodes publish: drop-head keeps the newest
// messages, reject-publish nacks the publishes beyond the limit.
func TestClusterSharedQueueLengthLimit(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	nodes, stop := startServeCluster(t)
	defer stop()
	chans := make([]*amqp.Channel, 3)
	for i := range 3 {
		c, ch := amqpChannel(t, nodes[i]["amqp"])
		defer c.Close()
		if err := ch.Confirm(false); err != nil {
			t.Fatal(err)
		}
		chans[i] = ch
	}
	if _, err := chans[0].QueueDeclare("capped", true, false, false, false, amqp.Table{"x-max-length": int32(5)}); err != nil {
		t.Fatal(err)
	}
	if _, err := chans[0].QueueDeclare("strict", true, false, false, false,
		amqp.Table{"x-max-length": int32(3), "x-overflow": "reject-publish"}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	publish := func(ch *amqp.Channel, q string, i int) bool {
		t.Helper()
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", q, false, false,
			amqp.Publishing{DeliveryMode: amqp.Persistent, Body: fmt.Appendf(nil, "m%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		ok, err := dc.WaitContext(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	// drop-head: ten from two nodes, the five newest stay.
	for i := range 10 {
		if !publish(chans[i%2], "capped", i) {
			t.Fatalf("drop-head publish %d nacked", i)
		}
	}
	q, err := chans[2].QueueDeclarePassive("capped", true, false, false, false, nil)
	if err != nil || q.Messages != 5 {
		t.Fatalf("capped holds %d messages (%v), want 5", q.Messages, err)
	}
	for i := 5; i < 10; i++ {
		d, ok, err := chans[2].Get("capped", true)
		if err != nil || !ok || string(d.Body) != fmt.Sprintf("m%d", i) {
			t.Fatalf("get %d: %q %v %v", i, d.Body, ok, err)
		}
	}
	// reject-publish: three from three nodes are taken, then every node
	// nacks.
	for i := range 6 {
		if ok := publish(chans[i%3], "strict", i); ok != (i < 3) {
			t.Fatalf("reject-publish publish %d on node %d: ack %v", i, i%3, ok)
		}
	}
	if q, err := chans[1].QueueDeclarePassive("strict", true, false, false, false, nil); err != nil || q.Messages != 3 {
		t.Fatalf("strict holds %d messages (%v), want 3", q.Messages, err)
	}
}
