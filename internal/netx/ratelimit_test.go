package netx

import (
	"io"
	"log/slog"
	"net"
	"testing"
	"time"
)

func TestRateLimitListener(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := RateLimitListener(raw, 2, slog.New(slog.DiscardHandler)) // burst 4
	defer ln.Close()
	accepted := make(chan net.Conn, 100)
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- nc
		}
	}()
	// 8 connections at once: the burst (4) is accepted, the rest closed.
	var clients []net.Conn
	for i := 0; i < 8; i++ {
		c, err := net.Dial("tcp", raw.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
	}
	closed := 0
	for _, c := range clients {
		_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if _, err := c.Read(make([]byte, 1)); err == io.EOF {
			closed++
		}
		c.Close()
	}
	if closed != 4 {
		t.Fatalf("%d connections closed by the limit, want 4", closed)
	}
	n := len(accepted)
	if n != 4 {
		t.Fatalf("%d accepted, want 4", n)
	}
	// Tokens refill at the rate.
	time.Sleep(600 * time.Millisecond)
	c, err := net.Dial("tcp", raw.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case nc := <-accepted:
		nc.Close()
	case <-time.After(2 * time.Second):
		t.Fatal("a connection after the refill was not accepted")
	}
	for len(accepted) > 0 {
		(<-accepted).Close()
	}
}
