// Package e2e drives the real bourse binary over real sockets with the
// ordinary client libraries. Every helper for starting the broker and for
// connecting clients lives in this file.
package e2e

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/go-stomp/stomp/v3"
	amqp "github.com/rabbitmq/amqp091-go"
)

type build struct {
	once sync.Once
	path string
	err  error
}

var builds [2]build // [0] normal, [1] race

// binary builds ./cmd/bourse once per test run: under the race detector
// for tests, a normal build for benchmarks.
func binary(t testing.TB) string {
	race := true
	if f := flag.Lookup("test.bench"); f != nil && f.Value.String() != "" {
		race = false
	}
	return binaryBuild(t, race)
}

func binaryBuild(t testing.TB, race bool) string {
	t.Helper()
	b := &builds[0]
	args := []string{"build"}
	if race {
		b = &builds[1]
		args = append(args, "-race")
	}
	b.once.Do(func() {
		dir, err := os.MkdirTemp("", "bourse-e2e-bin")
		if err != nil {
			b.err = err
			return
		}
		b.path = filepath.Join(dir, "bourse")
		cmd := exec.Command("go", append(args, "-o", b.path, "../cmd/bourse")...)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// Broker is one running bourse process.
type Broker struct {
	t       testing.TB
	plain   bool // a normal build rather than the race build
	dataDir string
	args    []string
	env     []string // added to the process's environment
	cmd     *exec.Cmd
	log     *os.File
	exited  chan struct{}
	Addrs   map[string]string
}

// StartPlain is Start with a normal build of the broker: for tests that
// measure its memory, which the race detector multiplies.
func StartPlain(t testing.TB, extra ...string) *Broker {
	t.Helper()
	b := &Broker{t: t, dataDir: t.TempDir(), args: extra, plain: true}
	b.start()
	t.Cleanup(b.Stop)
	return b
}

// Start runs bourse serve on free loopback ports with a fresh data dir.
func Start(t testing.TB, extra ...string) *Broker {
	t.Helper()
	b := &Broker{t: t, dataDir: t.TempDir(), args: extra}
	b.start()
	t.Cleanup(b.Stop)
	return b
}

func (b *Broker) start() {
	b.t.Helper()
	b.launch()
	b.awaitReady()
}

// launch starts the process; awaitReady waits for its ready file (cluster
// nodes are all launched before any is ready).
func (b *Broker) launch() {
	t := b.t
	t.Helper()
	ready := filepath.Join(b.dataDir, "ready.json")
	os.Remove(ready)
	args := append([]string{"serve", "--data-dir", filepath.Join(b.dataDir, "data"),
		"--amqp-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0", "--stomp-addr", "127.0.0.1:0",
		"--http-addr", "127.0.0.1:0", "--ready-file", ready, "--log-level", "debug"}, b.args...)
	logf, err := os.OpenFile(filepath.Join(b.dataDir, "bourse.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	b.log = logf
	bin := binary(t)
	if b.plain {
		bin = binaryBuild(t, false)
	}
	b.cmd = exec.Command(bin, args...)
	if len(b.env) > 0 {
		b.cmd.Env = append(os.Environ(), b.env...)
	}
	b.cmd.Stdout, b.cmd.Stderr = logf, logf
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	b.exited = make(chan struct{})
	go func(cmd *exec.Cmd, ch chan struct{}) { _ = cmd.Wait(); close(ch) }(b.cmd, b.exited)
}

func (b *Broker) awaitReady() {
	t := b.t
	t.Helper()
	ready := filepath.Join(b.dataDir, "ready.json")
	deadline := time.Now().Add(30 * time.Second)
	if len(b.env) > 0 {
		deadline = time.Now().Add(60 * time.Second) // a cluster node waits for its peers
	}
	for {
		data, err := os.ReadFile(ready)
		if err == nil && json.Unmarshal(data, &b.Addrs) == nil {
			return
		}
		select {
		case <-b.exited:
			t.Fatalf("bourse exited during start:\n%s", b.Log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("bourse not ready in time:\n%s", b.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Log returns what the broker has logged so far.
func (b *Broker) Log() string {
	data, _ := os.ReadFile(filepath.Join(b.dataDir, "bourse.log"))
	return string(data)
}

// Stop sends SIGTERM and waits for a graceful exit (SIGKILL after 15 s).
func (b *Broker) Stop() {
	if b.cmd == nil {
		return
	}
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.exited:
	case <-time.After(15 * time.Second):
		b.t.Errorf("bourse did not stop within 15s of SIGTERM")
		_ = b.cmd.Process.Kill()
		<-b.exited
	}
	b.log.Close()
	if code := b.cmd.ProcessState.ExitCode(); code != 0 && b.t.Failed() {
		b.t.Logf("bourse log:\n%s", b.Log())
	}
	b.cmd = nil
}

// Kill9 kills the broker without warning.
func (b *Broker) Kill9() {
	_ = b.cmd.Process.Kill()
	<-b.exited
	b.log.Close()
	b.cmd = nil
}

// RestartSamePorts is Restart keeping every listener's port, for clients
// that reconnect to the address they know.
func (b *Broker) RestartSamePorts() {
	prev := b.args
	for _, k := range []string{"amqp", "mqtt", "stomp", "http"} {
		b.args = append(b.args, "--"+k+"-addr", b.Addrs[k])
	}
	b.Stop()
	b.start()
	b.args = prev
}

// Restart stops the broker gracefully and starts it again on the same data
// dir (on new ports).
func (b *Broker) Restart() {
	b.Stop()
	b.start()
}

// AMQP dials the broker with amqp091-go.
func (b *Broker) AMQP(t testing.TB) *amqp.Connection {
	t.Helper()
	c, err := amqp.Dial("amqp://guest:guest@" + b.Addrs["amqp"] + "/")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// AMQPChannel opens a channel on a new connection.
func (b *Broker) AMQPChannel(t testing.TB) *amqp.Channel {
	t.Helper()
	ch, err := b.AMQP(t).Channel()
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

// STOMP connects with go-stomp's client (STOMP 1.2).
func (b *Broker) STOMP(t testing.TB) *stomp.Conn {
	t.Helper()
	c, err := stomp.Dial("tcp", b.Addrs["stomp"], stomp.ConnOpt.Login("guest", "guest"), stomp.ConnOpt.Host("/"),
		stomp.ConnOpt.HeartBeat(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Disconnect() })
	return c
}

// MQTT5 connects an MQTT 5 client (paho.golang); received messages go to
// the returned channel.
func (b *Broker) MQTT5(t testing.TB, clientID string) (*paho.Client, <-chan *paho.Publish) {
	t.Helper()
	c, msgs, _ := b.MQTT5Connect(t, &paho.Connect{ClientID: clientID, CleanStart: true, KeepAlive: 30})
	return c, msgs
}

// MQTT5Connect connects a paho MQTT 5 client with the given CONNECT (as
// guest); the client disconnects when the test ends.
func (b *Broker) MQTT5Connect(t testing.TB, cp *paho.Connect) (*paho.Client, <-chan *paho.Publish, *paho.Connack) {
	t.Helper()
	conn, err := net.Dial("tcp", b.Addrs["mqtt"])
	if err != nil {
		t.Fatal(err)
	}
	msgs := make(chan *paho.Publish, 100)
	c := paho.NewClient(paho.ClientConfig{
		Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) {
				msgs <- pr.Packet
				return true, nil
			},
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cp.Username, cp.UsernameFlag, cp.Password, cp.PasswordFlag = "guest", true, []byte("guest"), true
	ca, err := c.Connect(ctx, cp)
	if err != nil || ca.ReasonCode != 0 {
		t.Fatalf("mqtt connect: %v %+v", err, ca)
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	return c, msgs, ca
}

// Subscribe subscribes an MQTT 5 client at QoS 1.
func Subscribe(t testing.TB, c *paho.Client, filter string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sa, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}})
	if err != nil || len(sa.Reasons) != 1 || sa.Reasons[0] > 2 {
		t.Fatalf("mqtt subscribe %s: %v %+v", filter, err, sa)
	}
}

// uniq returns a name unique to this test.
func uniq(t testing.TB) string {
	return strings.NewReplacer("/", "-", " ", "-").Replace(t.Name()) + fmt.Sprint(time.Now().UnixNano()%100000)
}
