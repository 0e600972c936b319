package netx

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// flakyListener fails its first Accepts with a temporary error.
type flakyListener struct {
	net.Listener
	fails atomic.Int32
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if l.fails.Add(-1) >= 0 {
		return nil, errors.New("accept: too many open files")
	}
	return l.Listener.Accept()
}

func TestAcceptLoop(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fl := &flakyListener{Listener: ln}
	fl.fails.Store(3)
	var closing atomic.Bool
	got := make(chan net.Conn, 1)
	done := make(chan error, 1)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	go func() { done <- AcceptLoop(fl, closing.Load, log, func(c net.Conn) { got <- c }) }()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case sc := <-got:
		sc.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("connection not accepted after temporary errors")
	}
	closing.Store(true)
	ln.Close()
	if err := <-done; err != nil {
		t.Fatalf("shutdown returned %v", err)
	}

	ln2, _ := net.Listen("tcp", "127.0.0.1:0")
	ln2.Close()
	if err := AcceptLoop(ln2, func() bool { return false }, log, func(net.Conn) {}); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("closed listener without shutdown: %v", err)
	}
}

func TestLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:5672": true, "127.9.9.9:1": true, "[::1]:1883": true, "::1": true,
		"10.0.0.1:5672": false, "[2001:db8::1]:1": false, "websocket/unknown-addr": false, "": false,
	} {
		if got := IsLoopback(addr); got != want {
			t.Errorf("IsLoopback(%q) = %v", addr, got)
		}
	}
	g := []string{"guest"}
	if !LoopbackOnly(g, "guest", TCPAddrString("10.0.0.1:1")) || LoopbackOnly(g, "guest", TCPAddrString("127.0.0.1:1")) ||
		LoopbackOnly(g, "alice", TCPAddrString("10.0.0.1:1")) || LoopbackOnly(nil, "guest", TCPAddrString("10.0.0.1:1")) {
		t.Error("LoopbackOnly")
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if !IsLocal(a.RemoteAddr()) || !IsLocal(&net.UnixAddr{Name: "/run/x.sock", Net: "unix"}) || IsLocal(nil) {
		t.Error("IsLocal: pipes and unix sockets are local, nil is not")
	}
}
