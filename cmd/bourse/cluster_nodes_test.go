package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bourse-mq/bourse/internal/config"
)

// nodeSet runs three `bourse serve --cluster embedded` in process on
// loopback, each of which can be stopped and started again on its data
// directory (startServeCluster runs one).
type nodeSet struct {
	t      *testing.T
	cfgs   [3]config.Config
	ready  [3]string
	cancel [3]context.CancelFunc
	done   [3]chan error
	addrs  [3]map[string]string
}

func newNodeSet(t *testing.T) *nodeSet {
	t.Helper()
	dir := t.TempDir()
	ns := &nodeSet{t: t}
	var routes []string
	var ls []net.Listener
	for range 3 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		routes = append(routes, "nats://"+l.Addr().String())
	}
	for i := range 3 {
		cfg := config.Default()
		cfg.DataDir = filepath.Join(dir, fmt.Sprintf("n%d", i))
		// MQTT on too: with its listener off, the MQTT service is never shut
		// down and its persister goroutine outlives serve (a separate bug).
		cfg.Listeners = config.Listeners{AMQP: "127.0.0.1:0", MQTT: "127.0.0.1:0", STOMP: "127.0.0.1:0", HTTP: "127.0.0.1:0"}
		cfg.Cluster = config.Cluster{Mode: "embedded", Name: "test", NodeName: fmt.Sprintf("n%d", i),
			Listen: "127.0.0.1:0", RouteListen: ls[i].Addr().String(), Routes: routes,
			StartTimeout: config.Duration(45 * time.Second)}
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		ns.cfgs[i] = cfg
		ns.ready[i] = filepath.Join(dir, fmt.Sprintf("ready%d.json", i))
		ls[i].Close()
	}
	t.Cleanup(func() {
		for i := range 3 {
			ns.stop(i)
		}
	})
	for i := range 3 {
		ns.start(i)
	}
	for i := range 3 {
		ns.waitReady(i)
	}
	return ns
}

// start starts node i; waitReady waits for it.
func (ns *nodeSet) start(i int) {
	_ = os.Remove(ns.ready[i])
	ctx, cancel := context.WithCancel(context.Background())
	ns.cancel[i], ns.done[i] = cancel, make(chan error, 1)
	cfg, done := ns.cfgs[i], ns.done[i]
	go func() {
		done <- serve(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), ns.ready[i], new(slog.LevelVar), func() (config.Config, error) { return cfg, nil })
	}()
}

func (ns *nodeSet) waitReady(i int) {
	ns.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var a map[string]string
		if b, err := os.ReadFile(ns.ready[i]); err == nil && json.Unmarshal(b, &a) == nil {
			if a["nats"] == "" {
				ns.t.Errorf("node %d: no nats address in the ready file", i)
			}
			ns.addrs[i] = a
			return
		}
		select {
		case err := <-ns.done[i]:
			ns.done[i] <- err
			ns.t.Fatalf("node %d stopped before it was ready: %v", i, err)
		default:
		}
		if time.Now().After(deadline) {
			ns.t.Fatalf("node %d never ready", i)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop stops node i and waits for it.
func (ns *nodeSet) stop(i int) {
	if ns.cancel[i] == nil {
		return
	}
	ns.cancel[i]()
	ns.cancel[i] = nil
	select {
	case err := <-ns.done[i]:
		if err != nil {
			ns.t.Errorf("node %d: serve returned %v", i, err)
		}
	case <-time.After(30 * time.Second):
		ns.t.Errorf("node %d took too long to stop", i)
	}
}
