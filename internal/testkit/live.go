// Package testkit holds test helpers the protocol adapters share (adapters
// may not import each other, so their tests meet here).
package testkit

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// Live is a well-behaved client kept busy during hostile-input tests: it
// runs one round trip (publish, then receive it back) every 2 ms until the
// test ends, so a test can check that other clients were unaffected.
type Live struct {
	mu     sync.Mutex // held for each round trip; VerifyNoLeak holds it to pause the client
	rounds atomic.Int64
	err    atomic.Pointer[error]
	stop   chan struct{}
	done   chan struct{}
}

// StartLive starts the client; round performs round trip i and returns an
// error if it went wrong (the client then stops and Check fails). It is
// stopped when the test ends, and has made a first round trip when
// StartLive returns.
func StartLive(t *testing.T, round func(i int) error) *Live {
	t.Helper()
	l := &Live{stop: make(chan struct{}), done: make(chan struct{})}
	go l.run(round)
	t.Cleanup(func() {
		close(l.stop)
		<-l.done
	})
	l.Check(t)
	return l
}

func (l *Live) run(round func(i int) error) {
	defer close(l.done)
	for i := 0; ; i++ {
		select {
		case <-l.stop:
			return
		case <-time.After(2 * time.Millisecond):
		}
		l.mu.Lock()
		err := round(i)
		l.mu.Unlock()
		if err != nil {
			l.err.CompareAndSwap(nil, &err)
			return
		}
		l.rounds.Add(1)
	}
}

// Check fails unless the client completes two more round trips within 5 s.
func (l *Live) Check(t *testing.T) {
	t.Helper()
	want := l.rounds.Load() + 2
	deadline := time.Now().Add(5 * time.Second)
	for l.rounds.Load() < want {
		if p := l.err.Load(); p != nil {
			t.Fatalf("good client: %v", *p)
		}
		if time.Now().After(deadline) {
			t.Fatal("good client stalled")
		}
		time.Sleep(time.Millisecond)
	}
}

// VerifyNoLeak pauses the client and checks that every goroutine started
// since base has ended.
func (l *Live) VerifyNoLeak(t *testing.T, base goleak.Option) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := goleak.Find(base); err != nil {
		t.Fatalf("goroutines left behind: %v", err)
	}
}
