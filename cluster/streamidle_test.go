package cluster_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bourse-mq/bourse/cluster"
	"github.com/bourse-mq/bourse/httpapi"
	"github.com/bourse-mq/bourse/router"
	"github.com/bourse-mq/bourse/router/queue"
	"github.com/bourse-mq/bourse/streamclient"
)

func streamIdle(d time.Duration) func(int, *cluster.Options) {
	return func(_ int, o *cluster.Options) { o.StreamIdle = d }
}

// copyBytes returns the bytes of the files in node i's copy of stream
// "log" in vhost "/", and their names.
func copyBytes(t *testing.T, sn *streamNodes, i int) (int64, []string) {
	t.Helper()
	dir := filepath.Join(sn.dirs[i], "%2F", "log")
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	var names []string
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		n += fi.Size()
		names = append(names, e.Name())
	}
	return n, names
}

// readStream subscribes to stream "log" on v, without acks.
func readStream(t *testing.T, v *router.VHost, so queue.StreamOptions) (*sink, *queue.Sub) {
	t.Helper()
	s := newSink()
	var sub *queue.Sub
	var err error
	eventually(t, "stream on the node", func() bool {
		sub, err = v.Consume("log", s, queue.ConsumeOptions{Tag: "t", Prefetch: 100, NoAck: true, Stream: &so})
		return err == nil
	})
	return s, sub
}

// wantRecords reads the records a reader gets next: offsets from, bodies
// bodies.
func wantRecords(t *testing.T, s *sink, from int, bodies ...string) {
	t.Helper()
	for i, b := range bodies {
		d := s.next(t)
		if off := d.Msg.Headers["x-stream-offset"]; string(d.Msg.Body) != b || off != int64(from+i) {
			t.Fatalf("record %q at offset %v, want %q at %d", d.Msg.Body, off, b, from+i)
		}
	}
}

func seq(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%d", prefix, i)
	}
	return out
}

// TestStreamIdleCopyStops: once its last reader is gone a node copies a
// stream for the idle period only, then stops and drops the copy's
// records (their files are gone); a reader after that gets the whole
// stream again from a fresh copy, with the same offsets, and new appends;
// a named reader resumes where it was; a reader longer than the idle
// period keeps the copy. The fetch endpoint starts a copy too, and lets it
// go once answered.
func TestStreamIdleCopyStops(t *testing.T) {
	const idle = 300 * time.Millisecond
	sn, va, cb := streamOnThreeNodes(t, streamIdle(idle))
	vb := vhost(t, cb, "/")
	publishConfirmed(t, va, "", "log", 10, "a")

	s, sub := readStream(t, vb, queue.StreamOptions{Name: "proc", Offset: queue.OffsetSpec{Kind: queue.OffsetFirst}, HasOffset: true})
	wantRecords(t, s, 0, seq("a", 10)...)
	held, names := copyBytes(t, sn, 2)
	if held == 0 {
		t.Fatalf("node 2 holds no copy while read: %v", names)
	}
	sub.Cancel()
	eventually(t, "the idle copy dropped", func() bool {
		n, _ := copyBytes(t, sn, 2)
		return n == 0
	})
	_, names = copyBytes(t, sn, 2)
	for _, n := range names {
		if n == fmt.Sprintf("%020d.seg", 0) || strings.HasSuffix(n, ".idx") {
			t.Fatalf("the copy's files are left: %v", names)
		}
	}
	t.Logf("copy of %d bytes dropped; left: %v", held, names)

	// Stopped: appends are no longer copied here.
	publishConfirmed(t, va, "", "log", 5, "b")
	time.Sleep(2 * idle)
	if n, names := copyBytes(t, sn, 2); n != 0 {
		t.Fatalf("the stopped copy grew to %d bytes: %v", n, names)
	}

	// A named reader resumes after what it read; another reads it all.
	s, sub = readStream(t, vb, queue.StreamOptions{Name: "proc", Offset: queue.OffsetSpec{Kind: queue.OffsetFirst}, HasOffset: true})
	wantRecords(t, s, 10, seq("b", 5)...)
	sub.Cancel()
	s, sub = readStream(t, vb, queue.StreamOptions{Offset: queue.OffsetSpec{Kind: queue.OffsetFirst}, HasOffset: true})
	defer sub.Cancel()
	wantRecords(t, s, 0, seq("a", 10)...)
	wantRecords(t, s, 10, seq("b", 5)...)
	// Held longer than the idle period: still copying.
	time.Sleep(3 * idle)
	publishConfirmed(t, va, "", "log", 3, "c")
	wantRecords(t, s, 15, seq("c", 3)...)
	s.none(t, 100*time.Millisecond)
	sub.Cancel()
	eventually(t, "the idle copy dropped again", func() bool {
		n, _ := copyBytes(t, sn, 2)
		return n == 0
	})

	// The fetch endpoint (sendfile from node 2's segments).
	srv := httpapi.New(httpapi.Options{})
	srv.MountStreams(httpapi.StreamsOptions{Broker: cb, Store: sn.stores[2]})
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	b, err := streamclient.New(hs.URL, "", "").Fetch(ctx, "/", "log", streamclient.From(0), streamclient.Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := append(append(seq("a", 10), seq("b", 5)...), seq("c", 3)...)
	if len(b.Records) != len(want) {
		t.Fatalf("fetched %d records, want %d", len(b.Records), len(want))
	}
	for i, r := range b.Records {
		if r.Offset != uint64(i) || string(r.Message.Body) != want[i] {
			t.Fatalf("fetched %q at %d, want %q at %d", r.Message.Body, r.Offset, want[i], i)
		}
	}
	eventually(t, "the copy dropped after the fetch", func() bool {
		n, _ := copyBytes(t, sn, 2)
		return n == 0
	})
}

// counts counts log records by message.
type counts struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *counts) get(msg string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[msg]
}

// counter is a slog.Handler that counts every record, at every level, in
// c and passes it on to next.
type counter struct {
	c    *counts
	next slog.Handler
}

func (h counter) Enabled(context.Context, slog.Level) bool { return true }
func (h counter) Handle(ctx context.Context, r slog.Record) error {
	h.c.mu.Lock()
	h.c.n[r.Message]++
	h.c.mu.Unlock()
	if h.next.Enabled(ctx, r.Level) {
		return h.next.Handle(ctx, r)
	}
	return nil
}
func (h counter) WithAttrs(as []slog.Attr) slog.Handler { return counter{h.c, h.next.WithAttrs(as)} }
func (h counter) WithGroup(g string) slog.Handler       { return counter{h.c, h.next.WithGroup(g)} }

// TestStreamReaderDuringIdleStop: readers come to node 2 again and again,
// each a little before, during or after the idle copy's stop; each reads
// every record from offset 0 and one appended after it came, with the
// right offsets, whether it found the copy running, stopping or stopped.
// The test goes on until some readers came during a stop (at least 30
// readers, at most 400).
func TestStreamReaderDuringIdleStop(t *testing.T) {
	const idle = 50 * time.Millisecond
	logs := &counts{n: map[string]int{}}
	_, va, cb := streamOnThreeNodes(t, streamIdle(idle), func(i int, o *cluster.Options) {
		if i == 2 {
			o.Logger = slog.New(counter{logs, quiet().Handler()}).With("node", i)
		}
	})
	vb := vhost(t, cb, "/")
	// Record k's body is "r<k>.0".
	var bodies []string
	publish := func() {
		t.Helper()
		prefix := fmt.Sprintf("r%d.", len(bodies))
		publishConfirmed(t, va, "", "log", 1, prefix)
		bodies = append(bodies, prefix+"0")
	}
	for range 5 {
		publish()
	}
	const during = "reader waits for the idle copy's stop"
	const stopped = "copy of a cluster stream stopped: no reader"
	deadline := time.Now().Add(90 * time.Second)
	for i := 0; i < 400 && (logs.get(during) < 3 || i < 30); i++ {
		if time.Now().After(deadline) {
			break
		}
		s, sub := readStream(t, vb, queue.StreamOptions{Offset: queue.OffsetSpec{Kind: queue.OffsetFirst}, HasOffset: true})
		publish()
		wantRecords(t, s, 0, bodies...)
		sub.Cancel()
		// From just before the idle period's end to well after it.
		time.Sleep(idle - 10*time.Millisecond + time.Duration(i%30)*2*time.Millisecond)
	}
	t.Logf("%d records; %d stops, %d readers came during one", len(bodies), logs.get(stopped), logs.get(during))
	if logs.get(stopped) == 0 || logs.get(during) == 0 {
		t.Fatalf("%d stops, %d readers during one: the test tested nothing", logs.get(stopped), logs.get(during))
	}
}

// TestStreamIdleCopyLeftAtRestart: a copy a node held when it stopped is
// dropped the idle period after it starts again if no reader comes, and
// the next reader gets the whole stream.
func TestStreamIdleCopyLeftAtRestart(t *testing.T) {
	const idle = 500 * time.Millisecond
	sn, va, cb := streamOnThreeNodes(t, streamIdle(idle))
	publishConfirmed(t, va, "", "log", 10, "a")
	// Held (never released) until the node stops.
	q, err := vhost(t, cb, "/").Queue("log", 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if _, err := q.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	sn.stop(2)
	held, names := copyBytes(t, sn, 2)
	if held == 0 {
		t.Fatalf("node 2 stopped with no copy: %v", names)
	}
	cb = sn.start(t, 2)
	eventually(t, "the copy left at restart dropped", func() bool {
		n, _ := copyBytes(t, sn, 2)
		return n == 0
	})
	s, sub := readStream(t, vhost(t, cb, "/"), queue.StreamOptions{Offset: queue.OffsetSpec{Kind: queue.OffsetFirst}, HasOffset: true})
	defer sub.Cancel()
	wantRecords(t, s, 0, seq("a", 10)...)
}
