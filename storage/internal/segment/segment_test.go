package segment

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/storage/record"
)

func msg(i int) *core.Message {
	return &core.Message{Exchange: "x", RoutingKey: "k", Body: []byte(fmt.Sprintf("body-%06d", i)),
		Headers: core.Table{"n": int64(i)}}
}

func appendSync(t testing.TB, l *Log, m *core.Message) uint64 {
	t.Helper()
	ch := make(chan error, 1)
	var off uint64
	l.Append(m, func(o uint64, err error) { off = o; ch <- err })
	if err := <-ch; err != nil {
		t.Fatalf("append: %v", err)
	}
	return off
}

func readAll(t testing.TB, l *Log, from uint64) []string {
	t.Helper()
	var out []string
	for {
		next, err := l.Read(from, 1<<16, func(off uint64, _ time.Time, m *core.Message) {
			if want := fmt.Sprintf("body-%06d", off); string(m.Body) != want && len(out) == 0 {
				_ = want
			}
			out = append(out, fmt.Sprintf("%d:%s", off, m.Body))
		})
		if err != nil {
			t.Fatalf("read at %d: %v", from, err)
		}
		if next == from {
			return out
		}
		from = next
	}
}

func TestAppendReadReopen(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(dir, Options{SegmentBytes: 1 << 12, IndexInterval: 256})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				appendSync(t, l, msg(i))
			}
		}()
	}
	wg.Wait()
	first, next := l.Bounds()
	if first != 0 || next != 400 {
		t.Fatalf("bounds %d,%d", first, next)
	}
	segs, _ := l.Size()
	if segs < 5 {
		t.Fatalf("expected rolled segments, got %d", segs)
	}
	got := readAll(t, l, 0)
	if len(got) != 400 {
		t.Fatalf("read %d records", len(got))
	}
	for i, s := range got {
		if want := fmt.Sprintf("%d:", i); s[:len(want)] != want {
			t.Fatalf("record %d is %q", i, s)
		}
	}
	// Every offset is found exactly, through the sparse index.
	for _, off := range []uint64{0, 1, 57, 199, 200, 398, 399} {
		var first uint64 = 1 << 60
		if _, err := l.Read(off, 1, func(o uint64, _ time.Time, _ *core.Message) {
			if first == 1<<60 {
				first = o
			}
		}); err != nil {
			t.Fatal(err)
		}
		if first != off {
			t.Fatalf("read from %d started at %d", off, first)
		}
	}
	l.StoreOffset("reader-a", 123)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l2, err := Open(dir, Options{SegmentBytes: 1 << 12, IndexInterval: 256})
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	if _, next := l2.Bounds(); next != 400 {
		t.Fatalf("after reopen next=%d", next)
	}
	if v, ok := l2.QueryOffset("reader-a"); !ok || v != 123 {
		t.Fatalf("named offset after reopen: %d %v", v, ok)
	}
	if got2 := readAll(t, l2, 0); len(got2) != 400 || got2[399] != got[399] {
		t.Fatalf("after reopen read %d records", len(got2))
	}
	if off := appendSync(t, l2, msg(400)); off != 400 {
		t.Fatalf("append after reopen got offset %d", off)
	}
}

// TestTornTail cuts the last segment at every byte of its last record and
// checks recovery keeps exactly the whole records before it.
func TestTornTail(t *testing.T) {
	src := t.TempDir()
	l, err := Open(src, Options{IndexInterval: 64})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		appendSync(t, l, msg(i))
	}
	l.Close()
	path := filepath.Join(src, fmt.Sprintf("%020d.seg", 0))
	full, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	recs, n, err := record.Decode(full)
	if err != nil || n != len(full) || len(recs) != 5 {
		t.Fatalf("decode: %d recs, %d/%d bytes, %v", len(recs), n, len(full), err)
	}
	lastStart := 0 // where the fifth (last) record begins
	for i := 0; i < 4; i++ {
		h, _ := record.ParseHeader(full[lastStart:])
		lastStart += h.Size
	}
	for cut := lastStart; cut < len(full); cut++ {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(path)), full[:cut], 0o644); err != nil {
			t.Fatal(err)
		}
		l, err := Open(dir, Options{IndexInterval: 64})
		if err != nil {
			t.Fatalf("cut %d: %v", cut, err)
		}
		if _, next := l.Bounds(); next != 4 {
			t.Fatalf("cut at %d: next=%d, want 4", cut, next)
		}
		if off := appendSync(t, l, msg(9)); off != 4 {
			t.Fatalf("cut at %d: new append at %d", cut, off)
		}
		if got := readAll(t, l, 0); len(got) != 5 || got[4] != "4:body-000009" {
			t.Fatalf("cut at %d: %v", cut, got)
		}
		l.Close()
	}
	// A flipped byte in the last record's body is a CRC failure: cut there.
	dir := t.TempDir()
	bad := append([]byte(nil), full...)
	bad[len(bad)-2] ^= 0xff
	os.WriteFile(filepath.Join(dir, filepath.Base(path)), bad, 0o644)
	l, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, next := l.Bounds(); next != 4 {
		t.Fatalf("corrupt last record: next=%d", next)
	}
	l.Close()
}

func TestRetentionBySizeAndAge(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	l, err := Open(t.TempDir(), Options{SegmentBytes: 1 << 10, MaxBytes: 4 << 10, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for i := 0; i < 200; i++ {
		appendSync(t, l, msg(i))
	}
	// Retention runs right after a batch's appends resolve.
	eventually(t, func() bool { first, _ := l.Bounds(); return first > 0 })
	first, next := l.Bounds()
	_, bytes := l.Size()
	if first == 0 || next != 200 || bytes > 5<<10 {
		t.Fatalf("size retention: first=%d next=%d bytes=%d", first, next, bytes)
	}
	got := readAll(t, l, 0) // below retention: starts at first
	if len(got) != int(next-first) {
		t.Fatalf("read %d records from %d..%d", len(got), first, next)
	}
	if _, err := l.ReadRange(0, 100); err != ErrOutOfRange {
		t.Fatalf("ReadRange below retention: %v", err)
	}

	l2, err := Open(t.TempDir(), Options{SegmentBytes: 1 << 10, MaxAge: time.Minute, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	for i := 0; i < 50; i++ {
		appendSync(t, l2, msg(i))
	}
	mu.Lock()
	now = now.Add(2 * time.Minute)
	mu.Unlock()
	appendSync(t, l2, msg(50))
	eventually(t, func() bool { first, _ := l2.Bounds(); return first >= 40 })
	if first, next := l2.Bounds(); next != 51 || first < 40 {
		t.Fatalf("age retention: first=%d next=%d", first, next)
	}
	if segs, _ := l2.Size(); segs > 2 {
		t.Fatalf("age retention kept %d segments", segs)
	}
}

func TestOffsetAt(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	l, err := Open(t.TempDir(), Options{SegmentBytes: 1 << 10, IndexInterval: 100, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for i := 0; i < 100; i++ {
		appendSync(t, l, msg(i))
		mu.Lock()
		now = now.Add(time.Second)
		mu.Unlock()
	}
	base := time.Unix(1_700_000_000, 0)
	for _, c := range []struct {
		at   time.Time
		want uint64
	}{{base.Add(-time.Hour), 0}, {base, 0}, {base.Add(37 * time.Second), 37}, {base.Add(37*time.Second + 500*time.Millisecond), 38}, {base.Add(99 * time.Second), 99}, {base.Add(time.Hour), 100}} {
		if got := l.OffsetAt(c.at); got != c.want {
			t.Errorf("OffsetAt(+%v) = %d, want %d", c.at.Sub(base), got, c.want)
		}
	}
}

func TestReadRangeWholeRecords(t *testing.T) {
	l, err := Open(t.TempDir(), Options{SegmentBytes: 1 << 14, IndexInterval: 128})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for i := 0; i < 300; i++ {
		appendSync(t, l, msg(i))
	}
	var offs []uint64
	for from := uint64(0); ; {
		r, err := l.ReadRange(from, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if r.Len == 0 {
			if from != 300 {
				t.Fatalf("empty range at %d", from)
			}
			break
		}
		if r.Len > 1000 && r.Next-r.First > 1 {
			t.Fatalf("range of %d bytes over max", r.Len)
		}
		b := make([]byte, r.Len)
		if _, err := r.File.ReadAt(b, r.Pos); err != nil && err != io.EOF {
			t.Fatal(err)
		}
		r.File.Close()
		recs, n, err := record.Decode(b)
		if err != nil || int64(n) != r.Len {
			t.Fatalf("range at %d: decoded %d/%d bytes: %v", from, n, r.Len, err)
		}
		if recs[0].Offset != from || recs[len(recs)-1].Offset != r.Next-1 {
			t.Fatalf("range at %d: offsets %d..%d next %d", from, recs[0].Offset, recs[len(recs)-1].Offset, r.Next)
		}
		for _, rc := range recs {
			offs = append(offs, rc.Offset)
			if string(rc.Message.Body) != fmt.Sprintf("body-%06d", rc.Offset) {
				t.Fatalf("record %d body %q", rc.Offset, rc.Message.Body)
			}
		}
		from = r.Next
	}
	if len(offs) != 300 || !sort.SliceIsSorted(offs, func(i, j int) bool { return offs[i] < offs[j] }) {
		t.Fatalf("got %d offsets", len(offs))
	}
}

func TestChangedAndClose(t *testing.T) {
	l, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	ch := l.Changed()
	appendSync(t, l, msg(0))
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatal("Changed not closed after a commit")
	}
	l.Close()
	errc := make(chan error, 1)
	l.Append(msg(1), func(_ uint64, err error) { errc <- err })
	if err := <-errc; err != ErrClosed {
		t.Fatalf("append after close: %v", err)
	}
}

func BenchmarkAppend1KiB(b *testing.B) {
	for _, pubs := range []int{1, 16} {
		b.Run(fmt.Sprintf("publishers=%d", pubs), func(b *testing.B) {
			l, err := Open(b.TempDir(), Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			m := &core.Message{Exchange: "x", RoutingKey: "k", Body: make([]byte, 1024)}
			b.SetBytes(1024)
			var wg sync.WaitGroup
			per := b.N/pubs + 1
			b.ResetTimer()
			for p := 0; p < pubs; p++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ch := make(chan error, 1)
					for i := 0; i < per; i++ {
						l.Append(m, func(_ uint64, err error) { ch <- err })
						if err := <-ch; err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
		})
	}
}

func eventually(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
	}
}
