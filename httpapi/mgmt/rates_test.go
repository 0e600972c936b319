package mgmt

import (
	"testing"
	"time"
)

func TestRates(t *testing.T) {
	var r rateSampler
	t0 := time.Unix(1000, 0)
	if got := r.rates("q", t0, [nCounters]uint64{10, 0, 0, 0}); got[0] != 0 {
		t.Fatalf("first sample has no rate: %v", got)
	}
	// Under a second later: still no reference sample.
	if got := r.rates("q", t0.Add(500*time.Millisecond), [nCounters]uint64{60, 0, 0, 0}); got[0] != 0 {
		t.Fatalf("rate over less than a second: %v", got)
	}
	got := r.rates("q", t0.Add(2*time.Second), [nCounters]uint64{210, 20, 10, 2})
	if got != [nCounters]float64{100, 10, 5, 1} {
		t.Fatalf("rates %v", got)
	}
	// The next poll measures from the newest sample a second old (t0+2s).
	got = r.rates("q", t0.Add(4*time.Second), [nCounters]uint64{210, 20, 10, 2})
	if got[0] != 0 {
		t.Fatalf("idle queue rate %v", got)
	}
	// A counter that went down (a queue recreated) is not a negative rate.
	got = r.rates("q", t0.Add(6*time.Second), [nCounters]uint64{5, 0, 0, 0})
	if got[0] != 0 {
		t.Fatalf("reset counter rate %v", got)
	}
	// Series nobody asks for are forgotten.
	r.rates("other", t0.Add(20*time.Minute), [nCounters]uint64{})
	if _, ok := r.m["q"]; ok {
		t.Fatal("an unused series was kept")
	}
}
