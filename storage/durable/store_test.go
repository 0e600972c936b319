package durable

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/bourse-mq/bourse/core"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func open(t testing.TB, dir string, o Options) (*Store, map[[2]string][]Recovered) {
	t.Helper()
	o.Logger = quiet
	s, rec, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	return s, rec
}

func pmsg(body string) *core.Message {
	return &core.Message{
		Exchange: "ex", RoutingKey: "rk", Body: []byte(body), Arrived: time.Unix(0, 1700000000123456789),
		Props: core.Properties{DeliveryMode: core.Persistent, ContentType: "text/plain", MessageID: "id-" + body,
			Priority: 4, Timestamp: time.Unix(1700000000, 0).UTC(), Expiration: "5000"},
		Headers: core.Table{"n": int64(7), "nested": core.Table{"a": []any{"x", int32(1)}}},
		Origin:  core.Origin{Protocol: core.ProtoAMQP, User: "guest", VHost: "/"},
	}
}

func persist(t testing.TB, s *Store, vhost string, m *core.Message, targets ...core.QueueSeq) {
	t.Helper()
	done := make(chan error, 1)
	s.Persist(vhost, m, targets, func(err error) { done <- err })
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("persist not confirmed")
	}
}

func bodies(rs []Recovered) []string {
	var out []string
	for _, r := range rs {
		out = append(out, fmt.Sprintf("%d:%s:%v", r.Seq, r.Msg.Body, r.Redelivered))
	}
	return out
}

func TestRecoverUnsettledInOrderWithRedeliveredFlag(t *testing.T) {
	dir := t.TempDir()
	s, rec := open(t, dir, Options{})
	if len(rec) != 0 {
		t.Fatalf("fresh journal recovered %v", rec)
	}
	for i := 1; i <= 5; i++ {
		persist(t, s, "/", pmsg(fmt.Sprint(i)), core.QueueSeq{Queue: "a", Seq: uint64(i)}, core.QueueSeq{Queue: "b", Seq: uint64(10 + i)})
	}
	s.Settle("/", "a", []uint64{1, 3})
	s.Delivered("/", "a", 2)
	s.Settle("/", "b", []uint64{11, 12, 13, 14, 15})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, rec = open(t, dir, Options{})
	defer s.Close()
	got := bodies(rec[[2]string{"/", "a"}])
	if want := []string{"2:2:true", "4:4:false", "5:5:false"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("queue a: %v, want %v", got, want)
	}
	if len(rec[[2]string{"/", "b"}]) != 0 {
		t.Fatalf("queue b: %v", bodies(rec[[2]string{"/", "b"}]))
	}
	m := rec[[2]string{"/", "a"}][0].Msg
	want := pmsg("2")
	if !reflect.DeepEqual(m, want) {
		t.Fatalf("message changed on disk:\n got %#v\nwant %#v", m, want)
	}
}

func TestSettleBeforeMessageRecordStillCounts(t *testing.T) {
	dir := t.TempDir()
	s, _ := open(t, dir, Options{})
	// An auto-ack consumer can take a message before the publisher's
	// record is appended: the settle comes first.
	s.Settle("/", "q", []uint64{1})
	persist(t, s, "/", pmsg("x"), core.QueueSeq{Queue: "q", Seq: 1})
	persist(t, s, "/", pmsg("y"), core.QueueSeq{Queue: "q", Seq: 2})
	s.Close()
	s, rec := open(t, dir, Options{})
	defer s.Close()
	if got := bodies(rec[[2]string{"/", "q"}]); !reflect.DeepEqual(got, []string{"2:y:false"}) {
		t.Fatalf("recovered %v", got)
	}
}

func TestQueueDeletedStartsNewIncarnation(t *testing.T) {
	dir := t.TempDir()
	s, _ := open(t, dir, Options{})
	persist(t, s, "/", pmsg("old"), core.QueueSeq{Queue: "q", Seq: 1})
	s.QueueDeleted("/", "q")
	persist(t, s, "/", pmsg("new"), core.QueueSeq{Queue: "q", Seq: 1})
	s.Close()
	s, rec := open(t, dir, Options{})
	defer s.Close()
	if got := bodies(rec[[2]string{"/", "q"}]); !reflect.DeepEqual(got, []string{"1:new:false"}) {
		t.Fatalf("recovered %v", got)
	}
}

func TestTornTailAtEveryByte(t *testing.T) {
	dir := t.TempDir()
	s, _ := open(t, dir, Options{})
	persist(t, s, "/", pmsg("kept"), core.QueueSeq{Queue: "q", Seq: 1})
	st := s.Stats()
	persist(t, s, "/", pmsg("torn"), core.QueueSeq{Queue: "q", Seq: 2})
	s.Close()
	seg := filepath.Join(dir, "00000001.jnl")
	full, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	first := int(st.Bytes)
	for cut := first; cut < len(full); cut++ {
		d := t.TempDir()
		if err := os.WriteFile(filepath.Join(d, "00000001.jnl"), full[:cut], 0o600); err != nil {
			t.Fatal(err)
		}
		s, rec := open(t, d, Options{})
		got := bodies(rec[[2]string{"/", "q"}])
		if !reflect.DeepEqual(got, []string{"1:kept:false"}) {
			t.Fatalf("cut at %d: recovered %v", cut, got)
		}
		// Appends continue after the repaired tail.
		persist(t, s, "/", pmsg("after"), core.QueueSeq{Queue: "q", Seq: 3})
		s.Close()
		s, rec = open(t, d, Options{})
		if got := bodies(rec[[2]string{"/", "q"}]); !reflect.DeepEqual(got, []string{"1:kept:false", "3:after:false"}) {
			t.Fatalf("cut at %d, after append: %v", cut, got)
		}
		s.Close()
		if fi, _ := os.Stat(filepath.Join(d, "00000001.jnl")); fi.Size() != int64(first) {
			t.Fatalf("cut at %d: torn tail not truncated (size %d, want %d)", cut, fi.Size(), first)
		}
	}
	// A flipped byte inside the last record is caught by the CRC.
	bad := append([]byte(nil), full...)
	bad[len(bad)-3] ^= 0xff
	d := t.TempDir()
	os.WriteFile(filepath.Join(d, "00000001.jnl"), bad, 0o600)
	s, rec := open(t, d, Options{})
	defer s.Close()
	if got := bodies(rec[[2]string{"/", "q"}]); !reflect.DeepEqual(got, []string{"1:kept:false"}) {
		t.Fatalf("corrupt record: %v", got)
	}
}

func TestGroupCommitBatches(t *testing.T) {
	s, _ := open(t, t.TempDir(), Options{})
	defer s.Close()
	var wg sync.WaitGroup
	for p := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				persist(t, s, "/", pmsg("x"), core.QueueSeq{Queue: fmt.Sprint("q", p), Seq: uint64(i + 1)})
			}
		}()
	}
	wg.Wait()
	st := s.Stats()
	if st.Records != 800 || st.Fsyncs >= st.Records {
		t.Fatalf("stats %+v: want fewer fsyncs than records", st)
	}
	t.Logf("800 confirmed appends from 16 publishers: %d batches, %d fsyncs (%.1f msgs/fsync)", st.Batches, st.Fsyncs, float64(st.Records)/float64(st.Fsyncs))
}

func TestSettledSegmentsAreDeleted(t *testing.T) {
	dir := t.TempDir()
	s, _ := open(t, dir, Options{SegmentBytes: 512})
	for i := 1; i <= 40; i++ {
		persist(t, s, "/", pmsg("xxxxxxxxxxxxxxxx"), core.QueueSeq{Queue: "q", Seq: uint64(i)})
	}
	if n := s.Stats().Segments; n < 5 {
		t.Fatalf("only %d segments with a 512-byte limit", n)
	}
	for i := 1; i <= 39; i++ {
		s.Settle("/", "q", []uint64{uint64(i)})
	}
	persist(t, s, "/", pmsg("tail"), core.QueueSeq{Queue: "q", Seq: 41}) // drives a batch, then reclaim
	// The writer reclaims after resolving the batch's confirms: poll.
	var ents []os.DirEntry
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if ents, _ = os.ReadDir(dir); len(ents) <= 3 {
			break
		}
	}
	if len(ents) > 3 {
		t.Fatalf("%d segment files remain after settling", len(ents))
	}
	s.Close()
	s, rec := open(t, dir, Options{})
	defer s.Close()
	if got := bodies(rec[[2]string{"/", "q"}]); len(got) != 2 || got[0] != "40:xxxxxxxxxxxxxxxx:false" {
		t.Fatalf("recovered %v", got)
	}
}

func TestFsyncPolicies(t *testing.T) {
	for _, p := range []Options{{Fsync: FsyncNever}, {Fsync: FsyncInterval, FsyncInterval: 5 * time.Millisecond}} {
		dir := t.TempDir()
		s, _ := open(t, dir, p)
		persist(t, s, "/", pmsg("a"), core.QueueSeq{Queue: "q", Seq: 1})
		s.Close()
		s, rec := open(t, dir, p)
		if len(rec[[2]string{"/", "q"}]) != 1 {
			t.Fatalf("%s: recovered %v", p.Fsync, rec)
		}
		s.Close()
	}
}

func FuzzRecover(f *testing.F) {
	dir := f.TempDir()
	s, _ := open(f, dir, Options{})
	persist(f, s, "/", pmsg("seed"), core.QueueSeq{Queue: "q", Seq: 1})
	s.Settle("/", "q", []uint64{1})
	s.QueueDeleted("/", "q")
	s.Close()
	seed, _ := os.ReadFile(filepath.Join(dir, "00000001.jnl"))
	f.Add(seed)
	f.Fuzz(func(t *testing.T, data []byte) {
		d := t.TempDir()
		if err := os.WriteFile(filepath.Join(d, "00000001.jnl"), data, 0o600); err != nil {
			t.Fatal(err)
		}
		s, _, err := Open(d, Options{Logger: quiet})
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		s.Close()
	})
}

func BenchmarkPersist1KiB(b *testing.B) {
	for _, pubs := range []int{1, 16} {
		b.Run(fmt.Sprintf("publishers=%d", pubs), func(b *testing.B) {
			s, _ := open(b, b.TempDir(), Options{})
			defer s.Close()
			m := pmsg("")
			m.Body = make([]byte, 1024)
			b.ResetTimer()
			var wg sync.WaitGroup
			per := b.N/pubs + 1
			for p := range pubs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range per {
						persist(b, s, "/", m, core.QueueSeq{Queue: fmt.Sprint("q", p), Seq: uint64(i + 1)})
					}
				}()
			}
			wg.Wait()
			st := s.Stats()
			b.ReportMetric(float64(st.Records)/b.Elapsed().Seconds(), "msgs/s")
			b.ReportMetric(float64(st.Records)/float64(st.Fsyncs), "msgs/fsync")
		})
	}
}

// BenchmarkRecover1M measures start-up recovery of a queue holding one
// million unacknowledged persistent 1 KiB messages (about 1.2 GB of
// journal). The journal is written once, with fsync off, outside the timer.
func BenchmarkRecover1M(b *testing.B) {
	const n = 1_000_000
	dir := b.TempDir()
	s, _ := open(b, dir, Options{Fsync: FsyncNever})
	m := pmsg("")
	m.Headers = nil
	m.Body = make([]byte, 1024)
	var wg sync.WaitGroup
	wg.Add(n)
	for i := range n {
		s.Persist("/", m, []core.QueueSeq{{Queue: "big", Seq: uint64(i + 1)}}, func(error) { wg.Done() })
	}
	wg.Wait()
	s.Close()
	for _, lazy := range []bool{false, true} {
		b.Run(fmt.Sprintf("lazy=%v", lazy), func(b *testing.B) {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			for range b.N {
				s, rec := open(b, dir, Options{Fsync: FsyncNever, LazyRecovery: lazy})
				if got := len(rec[[2]string{"/", "big"}]); got != n {
					b.Fatalf("recovered %d of %d", got, n)
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				s.Close()
				runtime.KeepAlive(rec)
			}
			b.ReportMetric(float64(n)/(b.Elapsed().Seconds()/float64(b.N)), "msgs/s")
			b.ReportMetric(float64(after.HeapAlloc-min(after.HeapAlloc, before.HeapAlloc))/(1<<20), "heap-MiB")
		})
	}
}
