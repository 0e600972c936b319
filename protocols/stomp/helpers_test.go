package stomp

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	gostomp "github.com/go-stomp/stomp/v3"
	"github.com/go-stomp/stomp/v3/frame"
	"go.uber.org/goleak"

	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/internal/wiring"
	"github.com/bourse-mq/bourse/protocols/stomp/wire"
	"github.com/bourse-mq/bourse/router"
	"github.com/bourse-mq/bourse/router/queue"
	"github.com/bourse-mq/bourse/storage/stream"
)

func TestMain(m *testing.M) {
	// go-stomp's Unsubscribe leaves its waiting goroutine parked forever
	// when it misses the RECEIPT's wakeup (see unsubscribe): that goroutine
	// is the client library's, not the broker's.
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/go-stomp/stomp/v3.waitWithTimeout.func1"))
}

// testLogger logs warnings and worse to stderr, so tests stay quiet.
func testLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type env struct {
	t    testing.TB
	b    *router.Broker
	srv  *Server
	addr string
}

// start runs a broker and a STOMP server on 127.0.0.1:0; both are shut
// down when the test ends.
func start(t testing.TB, opts Options, ropts ...router.Options) *env {
	t.Helper()
	ro := router.Options{Logger: testLogger()}
	if len(ropts) > 0 {
		ro = ropts[0]
		ro.Logger = testLogger()
	}
	if ro.Streams == nil {
		streams, err := stream.Open(t.TempDir(), stream.Options{Logger: testLogger()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { streams.Close() })
		ro.Streams = wiring.StreamStore(streams)
	}
	b := router.New(ro)
	if opts.Logger == nil {
		opts.Logger = testLogger()
	}
	srv := New(b, opts)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return &env{t: t, b: b, srv: srv, addr: ln.Addr().String()}
}

func (e *env) vhost() *router.VHost {
	v, err := e.b.VHost("/")
	if err != nil {
		e.t.Fatal(err)
	}
	return v
}

// client connects go-stomp's client to vhost "/".
func (e *env) client(opts ...func(*gostomp.Conn) error) *gostomp.Conn {
	e.t.Helper()
	nc, err := net.Dial("tcp", e.addr)
	if err != nil {
		e.t.Fatal(err)
	}
	opts = append([]func(*gostomp.Conn) error{gostomp.ConnOpt.Host("/"), gostomp.ConnOpt.Logger(quietLogger{}),
		gostomp.ConnOpt.UnsubscribeReceiptTimeout(3 * time.Second)}, opts...)
	c, err := gostomp.Connect(nc, opts...)
	if err != nil {
		nc.Close()
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = c.MustDisconnect() })
	return c
}

// unsubscribe unsubscribes with go-stomp's client, working around its
// lost wakeup: in v3.1.3, Subscription.Unsubscribe can miss the broadcast
// of a RECEIPT that arrives before its waiting goroutine starts, and then
// reports a receipt timeout although the receipt came. The subscription's
// channel is closed only when the RECEIPT was processed, so a timeout with
// a closed channel is a success; a timeout with an open one is a real
// missing receipt.
func unsubscribe(t *testing.T, s *gostomp.Subscription, opts ...func(*frame.Frame) error) {
	t.Helper()
	err := s.Unsubscribe(opts...)
	if err == nil {
		return
	}
	if errors.Is(err, &gostomp.ErrUnsubscribeReceiptTimeout) {
		for {
			select {
			case _, open := <-s.C:
				if !open {
					return // the RECEIPT did arrive
				}
				continue // drain the timeout notice go-stomp queued
			case <-time.After(time.Second):
			}
			break
		}
	}
	t.Fatalf("unsubscribe: %v", err)
}

// quietLogger silences go-stomp's client.
type quietLogger struct{}

func (quietLogger) Debugf(string, ...any)   {}
func (quietLogger) Infof(string, ...any)    {}
func (quietLogger) Warningf(string, ...any) {}
func (quietLogger) Errorf(string, ...any)   {}
func (quietLogger) Debug(string)            {}
func (quietLogger) Info(string)             {}
func (quietLogger) Warning(string)          {}
func (quietLogger) Error(string)            {}

// raw is a raw STOMP client over a socket, for what real clients never
// send.
type raw struct {
	t  testing.TB
	nc net.Conn
	rd *wire.Reader
}

func (e *env) raw() *raw {
	e.t.Helper()
	nc, err := net.Dial("tcp", e.addr)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { nc.Close() })
	return &raw{t: e.t, nc: nc, rd: wire.NewReader(nc, wire.Limits{MaxBodyBytes: 64 << 20})}
}

func (r *raw) send(s string) {
	r.t.Helper()
	if _, err := io.WriteString(r.nc, s); err != nil {
		r.t.Fatal(err)
	}
}

// frame reads the next frame within 5s.
func (r *raw) frame() *frame.Frame {
	r.t.Helper()
	_ = r.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	f, err := r.rd.Read()
	if err != nil {
		r.t.Fatalf("read frame: %v", err)
	}
	return f
}

func (r *raw) expect(command string) *frame.Frame {
	r.t.Helper()
	f := r.frame()
	if f.Command != command {
		r.t.Fatalf("got %s (%s: %q), want %s", f.Command, f.Header.Get("message"), f.Body, command)
	}
	return f
}

// expectError reads an ERROR whose message header contains msg, then EOF.
func (r *raw) expectError(msg string) *frame.Frame {
	r.t.Helper()
	f := r.expect(frame.ERROR)
	if !strings.Contains(f.Header.Get("message"), msg) {
		r.t.Fatalf("ERROR message %q (body %q), want it to contain %q", f.Header.Get("message"), f.Body, msg)
	}
	if len(f.Body) == 0 || f.Header.Get("content-length") == "" {
		r.t.Fatalf("ERROR without a readable body: %v", f.Header)
	}
	r.expectClosed()
	return f
}

// quiet asserts that no frame arrives within d.
func (r *raw) quiet(d time.Duration) {
	r.t.Helper()
	_ = r.nc.SetReadDeadline(time.Now().Add(d))
	f, err := r.rd.Read()
	if err == nil {
		r.t.Fatalf("unexpected %s %v %q", f.Command, f.Header, f.Body)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		r.t.Fatalf("want silence, got %v", err)
	}
}

func (r *raw) expectClosed() {
	r.t.Helper()
	_ = r.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	f, err := r.rd.Read()
	if err == nil {
		r.t.Fatalf("want the connection closed, got %s %q", f.Command, f.Body)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		r.t.Fatalf("connection still open: %v", err)
	}
}

func (r *raw) connect(version string, extra ...string) *frame.Frame {
	r.t.Helper()
	var b bytes.Buffer
	b.WriteString("CONNECT\naccept-version:" + version + "\nhost:/\n")
	for i := 0; i+1 < len(extra); i += 2 {
		b.WriteString(extra[i] + ":" + extra[i+1] + "\n")
	}
	b.WriteString("\n\x00")
	r.send(b.String())
	f := r.expect(frame.CONNECTED)
	if v, ok := wire.ParseVersion(f.Header.Get("version")); ok {
		r.rd.SetVersion(v)
	}
	return f
}

// collector is a router consumer for tests.
type collector struct {
	ch chan queue.Delivery
}

func (c *collector) Deliver(d queue.Delivery) bool {
	select {
	case c.ch <- d:
		return true
	default:
		return false
	}
}

func (c *collector) Cancelled(*queue.Queue, error) {}

// consume declares (if needed) and consumes queue name with auto-ack.
func (e *env) consume(name string) *collector {
	e.t.Helper()
	v := e.vhost()
	if _, err := v.DeclareQueue(router.QueueDecl{QueueInfo: core.QueueInfo{Name: name}}); err != nil {
		e.t.Fatal(err)
	}
	c := &collector{ch: make(chan queue.Delivery, 1024)}
	sub, err := v.Consume(name, c, queue.ConsumeOptions{NoAck: true})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(sub.Cancel)
	return c
}

func (c *collector) next(t testing.TB) *core.Message {
	t.Helper()
	select {
	case d := <-c.ch:
		return d.Msg
	case <-time.After(5 * time.Second):
		t.Fatal("no message within 5s")
		return nil
	}
}

func recv(t testing.TB, sub *gostomp.Subscription) *gostomp.Message {
	t.Helper()
	select {
	case m, ok := <-sub.C:
		if !ok {
			t.Fatal("subscription closed")
		}
		if m.Err != nil {
			t.Fatalf("subscription error: %v", m.Err)
		}
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("no MESSAGE within 5s")
		return nil
	}
}

func noRecv(t testing.TB, sub *gostomp.Subscription, d time.Duration) {
	t.Helper()
	select {
	case m := <-sub.C:
		t.Fatalf("unexpected message %q (err %v)", m.Body, m.Err)
	case <-time.After(d):
	}
}

// waitFor polls cond for up to 5s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// slowStore is a router.MessageStore whose persists complete only when
// the test releases them: it shows that a RECEIPT waits for durability.
type slowStore struct {
	mu      sync.Mutex
	pending []func(error)
}

func (s *slowStore) Settle(string, string, []uint64) {}
func (s *slowStore) Load(string, string, uint64) (*core.Message, error) {
	return nil, core.Errorf(core.NotFound, "slowStore keeps no bodies")
}
func (s *slowStore) Delivered(string, string, uint64) {}
func (s *slowStore) QueueDeleted(string, string)      {}

func (s *slowStore) Persist(_ string, _ *core.Message, _ []core.QueueSeq, done func(error)) {
	s.mu.Lock()
	s.pending = append(s.pending, done)
	s.mu.Unlock()
}

func (s *slowStore) release(err error) int {
	s.mu.Lock()
	p := s.pending
	s.pending = nil
	s.mu.Unlock()
	for _, done := range p {
		done(err)
	}
	return len(p)
}

func (s *slowStore) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pending)
}
