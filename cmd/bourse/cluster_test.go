package main

import (
	"errors"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"
)

// TestClusterEmbeddedTopologyOverAMQP runs three `bourse serve --cluster
// embedded` in process on loopback and drives them with amqp091-go: what
// one node declares, another knows, and a conflicting redeclare there is a
// 406.
func TestClusterEmbeddedTopologyOverAMQP(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	nodes, stop := startServeCluster(t)
	defer stop()
	addrs := make([]string, 3)
	for i, n := range nodes {
		addrs[i] = n["amqp"]
	}

	channel := func(i int) (*amqp.Connection, *amqp.Channel) { t.Helper(); return amqpChannel(t, addrs[i]) }
	ca, a := channel(0)
	defer ca.Close()
	if err := a.ExchangeDeclare("orders", "topic", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := a.QueueDeclare("work", true, false, false, false, amqp.Table{"x-max-length": int32(100)}); err != nil {
		t.Fatal(err)
	}
	if err := a.QueueBind("work", "order.*", "orders", false, nil); err != nil {
		t.Fatal(err)
	}

	// Right away on node B: passive declares find them, an equivalent
	// redeclare is fine, a conflicting one is 406.
	cb, b := channel(1)
	defer cb.Close()
	if err := b.ExchangeDeclarePassive("orders", "topic", true, false, false, false, nil); err != nil {
		t.Fatalf("passive exchange declare on node B: %v", err)
	}
	if _, err := b.QueueDeclarePassive("work", true, false, false, false, nil); err != nil {
		t.Fatalf("passive queue declare on node B: %v", err)
	}
	if _, err := b.QueueDeclare("work", true, false, false, false, amqp.Table{"x-max-length": int64(100)}); err != nil {
		t.Fatalf("equivalent redeclare on node B: %v", err)
	}
	err := b.ExchangeDeclare("orders", "direct", true, false, false, false, nil)
	var ae *amqp.Error
	if !errors.As(err, &ae) || ae.Code != amqp.PreconditionFailed {
		t.Fatalf("conflicting exchange declare on node B: %v, want 406", err)
	}

	// Delete on node C; node A no longer has it.
	cc, c := channel(2)
	defer cc.Close()
	if _, err := c.QueueDelete("work", false, false, false); err != nil {
		t.Fatalf("delete on node C: %v", err)
	}
	a2, err := ca.Channel()
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err = a2.QueueDeclarePassive("work", true, false, false, false, nil)
		if errors.As(err, &ae) && ae.Code == amqp.NotFound {
			break
		}
		if err != nil {
			t.Fatalf("passive declare on node A after the delete: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatal("queue deleted on node C still on node A after 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	ca.Close()
	cb.Close()
	cc.Close()
	stop()
}

// startServeCluster runs three `bourse serve --cluster embedded` in
// process on loopback (AMQP, MQTT and STOMP listeners on free ports) and
// returns each node's ready file (listener addresses by protocol, and
// "nats") and a stop function that waits for every node to stop.
func startServeCluster(t *testing.T) ([]map[string]string, func()) {
	t.Helper()
	ns := newNodeSet(t)
	return ns.addrs[:], func() {
		for i := range 3 {
			ns.stop(i)
		}
	}
}
