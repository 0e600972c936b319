package netx

import (
	"testing"
	"time"
)

func TestGate(t *testing.T) {
	var g Gate
	if !g.Wait(nil) {
		t.Fatal("open gate blocked")
	}
	if !g.Set(true, "memory") || g.Set(true, "memory") {
		t.Fatal("Set(true) should change once")
	}
	if b, r := g.State(); !b || r != "memory" {
		t.Fatalf("state %v %q", b, r)
	}
	res := make(chan bool, 2)
	stop := make(chan struct{})
	go func() { res <- g.Wait(nil) }()
	go func() { res <- g.Wait(stop) }()
	select {
	case <-res:
		t.Fatal("Wait returned while shut")
	case <-time.After(50 * time.Millisecond):
	}
	close(stop)
	if ok := <-res; ok {
		t.Fatal("stopped Wait reported open")
	}
	g.Set(false, "")
	if ok := <-res; !ok {
		t.Fatal("Wait after Open reported stop")
	}
}
