package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// startBourseCluster runs n `bourse serve --cluster embedded` processes on
// loopback (one alone: a single JetStream server), launched together (a
// three-node topology bucket needs all three), and returns node 0 as the
// broker under test: the clients connect to it, and its CPU is what is
// measured (the other nodes' is not).
func startBourseCluster(bin string, n int) (*broker, error) {
	var routes, listens []string
	for range n {
		a := freePort()
		listens = append(listens, a)
		routes = append(routes, "nats://"+a)
	}
	type node struct {
		cmd   *exec.Cmd
		dir   string
		ready string
	}
	nodes := make([]node, n)
	b := &broker{name: fmt.Sprintf("bourse-cluster%d", n)}
	stopAll := func() {
		for _, nd := range nodes {
			if nd.cmd != nil && nd.cmd.Process != nil {
				_ = nd.cmd.Process.Signal(syscall.SIGTERM)
				_ = nd.cmd.Wait()
			}
			os.RemoveAll(nd.dir)
		}
	}
	for i := range nodes {
		dir, _ := os.MkdirTemp("", "bench-bourse-cluster")
		ready := filepath.Join(dir, "ready.json")
		args := []string{"serve", "--data-dir", filepath.Join(dir, "data"), "--amqp-addr", "127.0.0.1:0",
			"--mqtt-addr", "127.0.0.1:0", "--stomp-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
			"--ready-file", ready, "--log-level", "warn", "--memory-limit", "0", "--cluster", "embedded"}
		if n > 1 {
			args = append(args, "--cluster-routes", strings.Join(routes, ","))
		}
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "BOURSE_CLUSTER_NAME=bench", fmt.Sprintf("BOURSE_CLUSTER_NODE_NAME=b%d", i),
			"BOURSE_CLUSTER_LISTEN=127.0.0.1:0", "BOURSE_CLUSTER_ROUTE_LISTEN="+listens[i])
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		nodes[i] = node{cmd: cmd, dir: dir, ready: ready}
		if err := cmd.Start(); err != nil {
			stopAll()
			return nil, err
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for i, nd := range nodes {
		for {
			var addrs map[string]string
			if data, err := os.ReadFile(nd.ready); err == nil && json.Unmarshal(data, &addrs) == nil {
				if i == 0 {
					b.amqp, b.mqtt, b.stomp, b.http = addrs["amqp"], addrs["mqtt"], addrs["stomp"], addrs["http"]
				}
				break
			}
			if time.Now().After(deadline) {
				stopAll()
				return nil, fmt.Errorf("%s: node %d not ready in 60s", b.name, i)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	b.pidFn = func() int { return nodes[0].cmd.Process.Pid }
	b.stopFn = stopAll
	return b, nil
}
