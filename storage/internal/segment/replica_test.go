package segment

import (
	"errors"
	"testing"
	"time"

	"github.com/bourse-mq/bourse/storage/record"
)

func appendAt(t *testing.T, l *Log, off uint64, ts time.Time, i int) error {
	t.Helper()
	payload, err := record.AppendMessage(nil, msg(i))
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan error, 1)
	l.AppendAt(off, ts, payload, func(err error) { ch <- err })
	return <-ch
}

// TestReplicaLog: a copy of a log elsewhere starts at any offset, keeps the
// given offsets and timestamps, refuses a record out of place, is trimmed
// below an offset by whole segments, and survives a reopen that way.
func TestReplicaLog(t *testing.T) {
	dir := t.TempDir()
	opts := Options{SegmentBytes: 1 << 10, IndexInterval: 128, Interval: 10 * time.Millisecond}
	l, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	appendSync(t, l, msg(0)) // a record of an earlier life, dropped by the reset
	if err := l.Reset(69); err != nil {
		t.Fatal(err)
	}
	if first, next := l.Bounds(); first != 69 || next != 69 {
		t.Fatalf("after Reset(69): bounds %d, %d", first, next)
	}
	t0 := time.UnixMilli(1_700_000_000_000)
	for i := 69; i < 169; i++ {
		if err := appendAt(t, l, uint64(i), t0.Add(time.Duration(i)*time.Second), i); err != nil {
			t.Fatalf("AppendAt(%d): %v", i, err)
		}
	}
	if err := appendAt(t, l, 500, t0, 500); !errors.Is(err, ErrOffset) {
		t.Fatalf("AppendAt out of place: %v, want ErrOffset", err)
	}
	got := readAll(t, l, 0)
	if len(got) != 100 || got[0] != "69:body-000069" || got[99] != "168:body-000168" {
		t.Fatalf("read %d records: first %q last %q", len(got), got[0], got[len(got)-1])
	}
	if off := l.OffsetAt(t0.Add(100 * time.Second)); off != 100 {
		t.Fatalf("OffsetAt the given timestamps: %d, want 100", off)
	}
	segs, _ := l.Size()
	if segs < 4 {
		t.Fatalf("%d segments; the test needs several", segs)
	}
	l.TrimBefore(120)
	deadline := time.Now().Add(10 * time.Second)
	for {
		first, _ := l.Bounds()
		if first > 69 {
			if first > 120 {
				t.Fatalf("trimmed to %d, past 120", first)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("TrimBefore(120) deleted no segment in 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	first, next := l.Bounds()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l, err = Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if f, n := l.Bounds(); f != first || n != next {
		t.Fatalf("reopened bounds %d, %d; want %d, %d", f, n, first, next)
	}
	if err := appendAt(t, l, next, t0.Add(time.Hour), int(next)); err != nil {
		t.Fatalf("AppendAt after reopen: %v", err)
	}
}
