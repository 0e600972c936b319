package amqp

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"

	"github.com/bourse-mq/bourse/internal/wiring"
	"github.com/bourse-mq/bourse/protocols/amqp/wire"
	"github.com/bourse-mq/bourse/router"
	"github.com/bourse-mq/bourse/storage/stream"
)

// testLogger discards logs unless BOURSE_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("BOURSE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// env is a broker and an AMQP server on a loopback port.
type env struct {
	b    *router.Broker
	srv  *Server
	addr string
	url  string
}

// startServer starts a server; cleanup shuts it down and checks that no
// goroutine is left behind (clients registered later close first).
func startServer(t testing.TB, opts ...func(*Options)) *env {
	t.Helper()
	// Goroutines that exist already (a parent benchmark's, for one) are
	// not this server's.
	before := goleak.IgnoreCurrent()
	streams, err := stream.Open(t.TempDir(), stream.Options{Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	b := router.New(router.Options{Logger: testLogger(), Streams: wiring.StreamStore(streams)})
	o := Options{Logger: testLogger()}
	for _, f := range opts {
		f(&o)
	}
	srv := New(b, o)
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
		streams.Close()
		goleak.VerifyNone(t, before)
	})
	addr := ln.Addr().String()
	return &env{b: b, srv: srv, addr: addr, url: "amqp://guest:guest@" + addr + "/"}
}

func (e *env) dial(t testing.TB) *amqp091.Connection {
	t.Helper()
	return e.dialConfig(t, amqp091.Config{})
}

func (e *env) dialConfig(t testing.TB, cfg amqp091.Config) *amqp091.Connection {
	t.Helper()
	c, err := amqp091.DialConfig(e.url, cfg)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// channel dials a connection and opens a channel on it.
func (e *env) channel(t testing.TB) (*amqp091.Connection, *amqp091.Channel) {
	t.Helper()
	c := e.dial(t)
	ch, err := c.Channel()
	if err != nil {
		t.Fatalf("channel: %v", err)
	}
	return c, ch
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// amqpCode returns the reply code of an *amqp091.Error, or 0.
func amqpCode(err error) int {
	var e *amqp091.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return 0
}

// expectCode fails unless err carries AMQP reply code code.
func expectCode(t testing.TB, err error, code int) {
	t.Helper()
	if got := amqpCode(err); got != code {
		t.Fatalf("want reply code %d, got %v", code, err)
	}
}

// recv reads one value from c or fails after d.
func recv[T any](t testing.TB, c <-chan T, d time.Duration) T {
	t.Helper()
	select {
	case v, ok := <-c:
		if !ok {
			t.Fatalf("channel closed")
		}
		return v
	case <-time.After(d):
		t.Fatalf("nothing received within %v", d)
	}
	var zero T
	return zero
}

// quiet fails if c yields a value within d.
func quiet[T any](t testing.TB, c <-chan T, d time.Duration) {
	t.Helper()
	select {
	case v := <-c:
		t.Fatalf("unexpected %v", v)
	case <-time.After(d):
	}
}

// eventually polls cond until it holds or d passes.
func eventually(t testing.TB, d time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// rawClient speaks AMQP frame by frame, for the input real clients never
// send.
type rawClient struct {
	t  testing.TB
	nc net.Conn
	fr *wire.FrameReader
	bw *bufio.Writer
}

func dialRaw(t testing.TB, addr string) *rawClient {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	return newRaw(t, nc)
}

func newRaw(t testing.TB, nc net.Conn) *rawClient {
	return &rawClient{t: t, nc: nc, fr: wire.NewFrameReader(nc, 0), bw: bufio.NewWriter(nc)}
}

func (r *rawClient) write(b []byte) {
	r.t.Helper()
	if _, err := r.nc.Write(b); err != nil {
		r.t.Fatalf("raw write: %v", err)
	}
}

func (r *rawClient) send(ch uint16, m wire.Method) {
	r.t.Helper()
	if err := wire.WriteMethod(r.bw, ch, m); err != nil {
		r.t.Fatal(err)
	}
	if err := r.bw.Flush(); err != nil {
		r.t.Fatalf("raw send %s: %v", m.Name(), err)
	}
}

// frame writes a raw frame with an arbitrary type and payload.
func (r *rawClient) frame(typ uint8, ch uint16, payload []byte) {
	r.t.Helper()
	b := []byte{typ, byte(ch >> 8), byte(ch), 0, 0, 0, 0}
	n := len(payload)
	b[3], b[4], b[5], b[6] = byte(n>>24), byte(n>>16), byte(n>>8), byte(n)
	b = append(append(b, payload...), wire.FrameEnd)
	r.write(b)
}

// next reads the next frame that is not a heartbeat.
func (r *rawClient) next(d time.Duration) (wire.Frame, error) {
	_ = r.nc.SetReadDeadline(time.Now().Add(d))
	for {
		f, err := r.fr.ReadFrame()
		if err != nil || f.Type != wire.FrameHeartbeat {
			return f, err
		}
	}
}

// expect reads the next method, failing on anything else.
func (r *rawClient) expect() wire.Method {
	r.t.Helper()
	f, err := r.next(5 * time.Second)
	if err != nil {
		r.t.Fatalf("raw read: %v", err)
	}
	if f.Type != wire.FrameMethod {
		r.t.Fatalf("want a method frame, got type %d", f.Type)
	}
	m, err := wire.DecodeMethod(f.Payload)
	if err != nil {
		r.t.Fatal(err)
	}
	return m
}

func expectMethod[T wire.Method](r *rawClient) T {
	r.t.Helper()
	m := r.expect()
	x, ok := m.(T)
	if !ok {
		r.t.Fatalf("want %T, got %s %+v", x, m.Name(), m)
	}
	return x
}

// handshake opens the connection with the given heartbeat.
func (r *rawClient) handshake(heartbeat uint16) {
	r.t.Helper()
	r.write(wire.ProtocolHeader)
	expectMethod[*wire.ConnectionStart](r)
	r.send(0, &wire.ConnectionStartOk{Mechanism: "PLAIN", Response: "\x00guest\x00guest", Locale: "en_US",
		ClientProperties: wire.Table{"capabilities": wire.Table{"connection.blocked": true}}})
	tune := expectMethod[*wire.ConnectionTune](r)
	r.send(0, &wire.ConnectionTuneOk{ChannelMax: tune.ChannelMax, FrameMax: tune.FrameMax, Heartbeat: heartbeat})
	r.send(0, &wire.ConnectionOpen{VirtualHost: "/"})
	expectMethod[*wire.ConnectionOpenOk](r)
}

// expectConnClose reads connection.close with code and answers close-ok.
func (r *rawClient) expectConnClose(code uint16) *wire.ConnectionClose {
	r.t.Helper()
	cl := expectMethod[*wire.ConnectionClose](r)
	if cl.ReplyCode != code {
		r.t.Fatalf("want connection.close %d, got %d %q", code, cl.ReplyCode, cl.ReplyText)
	}
	r.send(0, &wire.ConnectionCloseOk{})
	r.expectEOF()
	return cl
}

// expectEOF waits for the server to close the socket.
func (r *rawClient) expectEOF() {
	r.t.Helper()
	_ = r.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := io.Copy(io.Discard, r.nc)
	if err != nil {
		r.t.Fatalf("want EOF, got %v", err)
	}
}

func (r *rawClient) String() string { return fmt.Sprintf("raw %s", r.nc.LocalAddr()) }
