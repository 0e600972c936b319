package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"

	"github.com/bourse-mq/bourse/internal/config"
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
	c := startServeNodes(t, 3)
	return c.addrs, c.stopAll
}

// serveCluster is in-process serve instances that stop one by one.
type serveCluster struct {
	t       testing.TB
	addrs   []map[string]string // each node's ready file
	cfgs    []config.Config
	readies []string
	cancels []context.CancelFunc
	done    []chan error
	stopped []bool
}

// stop shuts node i down (gracefully, as SIGTERM does) and waits for it.
func (c *serveCluster) stop(i int) {
	c.t.Helper()
	if c.stopped[i] {
		return
	}
	c.stopped[i] = true
	c.cancels[i]()
	select {
	case err := <-c.done[i]:
		if err != nil {
			c.t.Errorf("node %d: serve returned %v", i, err)
		}
	case <-time.After(30 * time.Second):
		c.t.Fatalf("node %d took too long to stop", i)
	}
}

func (c *serveCluster) stopAll() {
	for i := range c.cancels {
		c.stop(i)
	}
}

// startServeNodes starts n serve instances with cluster mode embedded
// (one alone: a single JetStream server, replicas 1) and waits until each
// is ready; tweak, if given, adjusts each config.
func startServeNodes(t testing.TB, n int, tweak ...func(i int, cfg *config.Config)) *serveCluster {
	t.Helper()
	dir := t.TempDir()
	var ports []int
	var ls []net.Listener
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	var routes []string
	for _, l := range ls {
		if n > 1 {
			routes = append(routes, "nats://"+l.Addr().String())
		}
		l.Close()
	}
	c := &serveCluster{t: t, addrs: make([]map[string]string, n), cfgs: make([]config.Config, n), readies: make([]string, n),
		cancels: make([]context.CancelFunc, n), done: make([]chan error, n), stopped: make([]bool, n)}
	t.Cleanup(c.stopAll)
	for i := range n {
		cfg := config.Default()
		cfg.DataDir = filepath.Join(dir, fmt.Sprintf("n%d", i))
		// MQTT on too: with its listener off, the MQTT service is never shut
		// down and its persister goroutine outlives serve (a separate bug).
		cfg.Listeners = config.Listeners{AMQP: "127.0.0.1:0", MQTT: "127.0.0.1:0", STOMP: "127.0.0.1:0", HTTP: "127.0.0.1:0"}
		cfg.Cluster = config.Cluster{Mode: "embedded", Name: "test", NodeName: fmt.Sprintf("n%d", i),
			Listen: "127.0.0.1:0", RouteListen: fmt.Sprintf("127.0.0.1:%d", ports[i]), Routes: routes,
			StartTimeout: config.Duration(45 * time.Second), AckWait: cfg.Cluster.AckWait,
			MQTTOrphanAfter: cfg.Cluster.MQTTOrphanAfter}
		for _, f := range tweak {
			f(i, &cfg)
		}
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		c.cfgs[i] = cfg
		c.readies[i] = filepath.Join(dir, fmt.Sprintf("ready%d.json", i))
		c.start(i)
	}
	for i := range n {
		c.waitReady(i)
	}
	return c
}

// start starts node i (again, on its data directory); waitReady waits
// until it is ready.
func (c *serveCluster) start(i int) {
	_ = os.Remove(c.readies[i])
	ctx, cancel := context.WithCancel(context.Background())
	c.cancels[i], c.done[i], c.stopped[i] = cancel, make(chan error, 1), false
	cfg, done, ready := c.cfgs[i], c.done[i], c.readies[i]
	go func() {
		done <- serve(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), ready, new(slog.LevelVar), func() (config.Config, error) { return cfg, nil })
	}()
}

func (c *serveCluster) waitReady(i int) {
	c.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var a map[string]string
		if b, err := os.ReadFile(c.readies[i]); err == nil && json.Unmarshal(b, &a) == nil {
			c.addrs[i] = a
			if a["nats"] == "" && c.cfgs[i].Cluster.Mode == "embedded" {
				c.t.Errorf("node %d: no nats address in the ready file", i)
			}
			return
		}
		select {
		case err := <-c.done[i]:
			c.stopped[i] = true
			c.stopAll()
			c.t.Fatalf("node %d stopped before it was ready: %v", i, err)
		default:
		}
		if time.Now().After(deadline) {
			c.stopAll()
			c.t.Fatalf("node %d never ready", i)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
