package netx

import (
	"io"
	"net"
	"testing"
)

func TestCountingListener(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := CountingListener(raw)
	defer ln.Close()
	done := make(chan net.Conn, 1)
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			close(done)
			return
		}
		buf := make([]byte, 5)
		_, _ = io.ReadFull(nc, buf)
		_, _ = nc.Write([]byte("hello, world"))
		done <- nc
	}()
	c, err := net.Dial("tcp", raw.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = c.Write([]byte("12345"))
	_, _ = io.ReadFull(c, make([]byte, 12))
	nc := <-done
	if nc == nil {
		t.Fatal("accept failed")
	}
	defer nc.Close()
	in, out, ok := ByteCounts(nc)
	if !ok || in != 5 || out != 12 {
		t.Fatalf("counts %d %d %v", in, out, ok)
	}
	if _, _, ok := ByteCounts(c); ok {
		t.Fatal("a plain connection has counts")
	}
	if cw, ok := nc.(interface{ CloseWrite() error }); !ok || cw.CloseWrite() != nil {
		t.Fatal("CloseWrite is not passed through")
	}
}
