// Package segment is an append-only log of records in segment files: one
// writer with group commit, a sparse offset and time index per segment,
// CRC-checked recovery that truncates a torn tail, retention by size and age
// that deletes whole segments, byte ranges of whole records for sendfile,
// and a small table of named reader offsets.
//
// Files in the log's directory (see storage/FORMAT.md):
//
//	<base offset, 20 digits>.seg   records, framed by storage/record
//	<base offset, 20 digits>.idx   the sparse index of a sealed segment
//	offsets                        named reader offsets (JSON)
//
// Lock order: Log.mu, then nothing. The writer goroutine owns the active
// segment's file position; readers use ReadAt on shared read handles and
// only ever see committed bytes.
package segment

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/storage/record"
)

// Fsync policies.
const (
	FsyncAlways   = "always"   // every batch is fsynced before its appends resolve
	FsyncInterval = "interval" // appends resolve after write(2); fsync every Interval
	FsyncNever    = "never"    // the OS decides; fsync only on roll and close
)

// Options configure a log.
type Options struct {
	// SegmentBytes rolls to a new segment when the active one would pass
	// it. Default 64 MiB; at most 1 GiB.
	SegmentBytes int64
	// MaxBytes deletes the oldest segments while the log is larger
	// (0 = no limit). The active segment is never deleted.
	MaxBytes int64
	// MaxAge deletes segments whose newest record is older (0 = no limit).
	MaxAge time.Duration
	// Fsync is FsyncAlways (default), FsyncInterval or FsyncNever.
	Fsync    string
	Interval time.Duration // for FsyncInterval; default 200ms
	// IndexInterval is the number of bytes between sparse index entries.
	IndexInterval int64
	Logger        *slog.Logger
	Now           func() time.Time
	// OnFsync, when set, is told how long each fsync took.
	OnFsync func(time.Duration)
}

func (o *Options) defaults() {
	if o.SegmentBytes <= 0 {
		o.SegmentBytes = 64 << 20
	}
	if o.SegmentBytes > 1<<30 {
		o.SegmentBytes = 1 << 30
	}
	if o.Fsync == "" {
		o.Fsync = FsyncAlways
	}
	if o.Interval <= 0 {
		o.Interval = 200 * time.Millisecond
	}
	if o.IndexInterval <= 0 {
		o.IndexInterval = 4096
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// ErrClosed is returned by operations on a closed log.
var ErrClosed = errors.New("segment: log closed")

// idxEntry points at the start of a record.
type idxEntry struct {
	off uint64
	pos int64
	ts  int64 // Unix ms
}

const idxEntrySize = 16 // rel offset u32, position u32, timestamp i64

type segment struct {
	base    uint64
	path    string
	f       *os.File // shared read handle (ReadAt); the writer's handle for the active one
	next    uint64   // committed: the offset after the last record
	size    int64    // committed bytes
	firstTS int64
	lastTS  int64
	index   []idxEntry
	refs    int
	dropped bool
}

func (s *segment) empty() bool { return s.next == s.base }

// Log is one append-only log.
type Log struct {
	dir  string
	opts Options
	log  *slog.Logger

	mu       sync.RWMutex
	segs     []*segment // by base offset; the last one is active
	changed  chan struct{}
	closed   bool
	failed   error
	offsets  map[string]uint64
	offDirty bool

	qmu     sync.Mutex
	queue   []pending
	wake    chan struct{}
	stop    chan struct{}
	stopped chan struct{}

	trim atomic.Uint64 // TrimBefore: sealed segments wholly below go

	// writer-owned
	lastTS    int64
	lastIndex int64 // position of the active segment's last index entry
	unsynced  bool
	buf       []byte
}

type pending struct {
	rec  []byte // HeaderSize bytes of room, then the payload
	done func(offset uint64, err error)
	// AppendAt: the record's offset and timestamp are given.
	at      uint64
	ts      int64
	atGiven bool
	// Reset: the log starts over at offset at (rec is nil).
	reset bool
}

// Open opens (creating if needed) the log in dir and recovers it.
func Open(dir string, opts Options) (*Log, error) {
	opts.defaults()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("segment: create %s: %w", dir, err)
	}
	l := &Log{
		dir: dir, opts: opts, log: opts.Logger,
		changed: make(chan struct{}),
		offsets: map[string]uint64{},
		wake:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		stopped: make(chan struct{}),
	}
	if err := l.recover(); err != nil {
		l.closeFiles()
		return nil, err
	}
	if err := l.loadOffsets(); err != nil {
		l.closeFiles()
		return nil, err
	}
	if a := l.active(); a != nil {
		l.lastTS = a.lastTS
		if n := len(a.index); n > 0 {
			l.lastIndex = a.index[n-1].pos
		}
	}
	go l.writer(l.stop)
	return l, nil
}

func (l *Log) segPath(base uint64) string {
	return filepath.Join(l.dir, fmt.Sprintf("%020d.seg", base))
}

func (l *Log) active() *segment {
	if len(l.segs) == 0 {
		return nil
	}
	return l.segs[len(l.segs)-1]
}

// recover reads the directory: sealed segments are checked from their last
// index entry, the active one is scanned whole; a torn or corrupt tail is
// truncated.
func (l *Log) recover() error {
	ents, err := os.ReadDir(l.dir)
	if err != nil {
		return fmt.Errorf("segment: read %s: %w", l.dir, err)
	}
	var bases []uint64
	for _, e := range ents {
		name := e.Name()
		if !strings.HasSuffix(name, ".seg") {
			continue
		}
		b, err := strconv.ParseUint(strings.TrimSuffix(name, ".seg"), 10, 64)
		if err != nil {
			continue
		}
		bases = append(bases, b)
	}
	sort.Slice(bases, func(i, j int) bool { return bases[i] < bases[j] })
	for i, base := range bases {
		s := &segment{base: base, next: base, path: l.segPath(base)}
		last := i == len(bases)-1
		flag := os.O_RDONLY
		if last {
			flag = os.O_RDWR
		}
		f, err := os.OpenFile(s.path, flag, 0)
		if err != nil {
			return fmt.Errorf("segment: open %s: %w", s.path, err)
		}
		s.f = f
		idx := l.loadIndex(s)
		if err := l.scan(s, idx, last); err != nil {
			return err
		}
		if i > 0 {
			prev := l.segs[len(l.segs)-1]
			if prev.next != s.base {
				return fmt.Errorf("segment: %s starts at offset %d but the segment before ends at %d", s.path, s.base, prev.next)
			}
		}
		l.segs = append(l.segs, s)
	}
	if len(l.segs) == 0 {
		return l.roll(0)
	}
	return nil
}

// loadIndex reads a sealed segment's .idx file; nil when absent or unusable.
func (l *Log) loadIndex(s *segment) []idxEntry {
	b, err := os.ReadFile(strings.TrimSuffix(s.path, ".seg") + ".idx")
	if err != nil || len(b)%idxEntrySize != 0 {
		return nil
	}
	idx := make([]idxEntry, 0, len(b)/idxEntrySize)
	for ; len(b) > 0; b = b[idxEntrySize:] {
		idx = append(idx, idxEntry{
			off: s.base + uint64(binary.BigEndian.Uint32(b)),
			pos: int64(binary.BigEndian.Uint32(b[4:])),
			ts:  int64(binary.BigEndian.Uint64(b[8:])),
		})
	}
	return idx
}

// scan validates s from its last trusted index entry (or from the start)
// to the end of the file, rebuilding the index on the way, and truncates
// whatever does not check out.
func (l *Log) scan(s *segment, idx []idxEntry, active bool) error {
	st, err := s.f.Stat()
	if err != nil {
		return fmt.Errorf("segment: stat %s: %w", s.path, err)
	}
	end := st.Size()
	var pos int64
	if n := len(idx); n > 0 && idx[n-1].pos < end && !active {
		s.index = idx[:n-1]
		s.firstTS = idx[0].ts
		pos = idx[n-1].pos
		s.next = idx[n-1].off
	}
	const chunk = 1 << 20
	buf := make([]byte, 0, chunk)
	var lastIndexed int64 = -1 << 62
	if n := len(s.index); n > 0 {
		lastIndexed = s.index[n-1].pos
	}
	bad := ""
	for pos < end {
		want := min(int64(chunk), end-pos)
		buf = buf[:want]
		if _, err := s.f.ReadAt(buf, pos); err != nil {
			return fmt.Errorf("segment: read %s: %w", s.path, err)
		}
		consumed := 0
		for consumed < len(buf) {
			h, err := record.ParseHeader(buf[consumed:])
			if err == record.ErrTorn && pos+int64(consumed)+record.HeaderSize <= end {
				break // header straddles the chunk: read on
			}
			if err != nil {
				bad = "torn or corrupt record header"
				break
			}
			if pos+int64(consumed)+int64(h.Size) > end {
				bad = "torn record"
				break
			}
			if consumed+h.Size > len(buf) {
				if consumed == 0 {
					buf = make([]byte, h.Size)
					if _, err := s.f.ReadAt(buf, pos); err != nil {
						return fmt.Errorf("segment: read %s: %w", s.path, err)
					}
					continue
				}
				break
			}
			if _, _, err := record.Split(buf[consumed:]); err != nil {
				bad = "record with a bad CRC"
				break
			}
			if h.Offset != s.next {
				bad = fmt.Sprintf("offset %d where %d was expected", h.Offset, s.next)
				break
			}
			at := pos + int64(consumed)
			if s.next == s.base || at-lastIndexed >= l.opts.IndexInterval {
				s.index = append(s.index, idxEntry{off: h.Offset, pos: at, ts: h.Timestamp})
				lastIndexed = at
			}
			if s.next == s.base {
				s.firstTS = h.Timestamp
			}
			s.lastTS = h.Timestamp
			s.next = h.Offset + 1
			consumed += h.Size
		}
		pos += int64(consumed)
		if bad != "" {
			break
		}
		if consumed == 0 {
			bad = "unreadable record"
			break
		}
	}
	s.size = pos
	if pos < end {
		l.log.Warn("stream segment has a bad tail; truncating", "file", s.path, "at", pos, "cut_bytes", end-pos, "reason", bad)
		if !active {
			// A sealed segment is read-only here; reopen it to cut it.
			if err := os.Truncate(s.path, pos); err != nil {
				return fmt.Errorf("segment: truncate %s: %w", s.path, err)
			}
		} else if err := s.f.Truncate(pos); err != nil {
			return fmt.Errorf("segment: truncate %s: %w", s.path, err)
		}
	}
	return nil
}

// roll seals the active segment (index written, file fsynced) and starts a
// new one at base.
func (l *Log) roll(base uint64) error {
	if a := l.active(); a != nil {
		if err := a.f.Sync(); err != nil {
			return fmt.Errorf("segment: fsync %s: %w", a.path, err)
		}
		if err := l.writeIndex(a); err != nil {
			return err
		}
	}
	s := &segment{base: base, next: base, path: l.segPath(base)}
	f, err := os.OpenFile(s.path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("segment: create %s: %w", s.path, err)
	}
	s.f = f
	if err := syncDir(l.dir); err != nil {
		return err
	}
	l.mu.Lock()
	l.segs = append(l.segs, s)
	l.mu.Unlock()
	l.lastIndex = -1 << 62
	return nil
}

func (l *Log) writeIndex(s *segment) error {
	l.mu.RLock()
	b := make([]byte, 0, len(s.index)*idxEntrySize)
	for _, e := range s.index {
		b = binary.BigEndian.AppendUint32(b, uint32(e.off-s.base))
		b = binary.BigEndian.AppendUint32(b, uint32(e.pos))
		b = binary.BigEndian.AppendUint64(b, uint64(e.ts))
	}
	l.mu.RUnlock()
	return writeFileSync(strings.TrimSuffix(s.path, ".seg")+".idx", b)
}

// writeFileSync writes a file atomically: temp file, fsync, rename, fsync
// of the directory.
func writeFileSync(path string, b []byte) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("segment: create %s: %w", tmp, err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("segment: write %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("segment: fsync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("segment: close %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("segment: rename %s: %w", tmp, err)
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("segment: open dir %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("segment: fsync dir %s: %w", dir, err)
	}
	return nil
}

// Append encodes m and queues it; done is called once, from the writer
// goroutine, with the record's offset after its batch is written (and
// fsynced under FsyncAlways), or with an error.
func (l *Log) Append(m *core.Message, done func(offset uint64, err error)) {
	rec := make([]byte, record.HeaderSize, record.HeaderSize+len(m.Body)+128)
	rec, err := record.AppendMessage(rec, m)
	if err == nil && len(rec) > record.MaxSize {
		err = core.Errorf(core.ResourceError, "record of %d bytes is above the maximum of %d", len(rec), record.MaxSize)
	}
	if err != nil {
		done(0, err)
		return
	}
	l.enqueue(pending{rec: rec, done: done})
}

func (l *Log) writer(stop <-chan struct{}) {
	defer close(l.stopped)
	tick := time.NewTicker(l.opts.Interval)
	defer tick.Stop()
	var batch []pending
	for {
		select {
		case <-l.wake:
		case <-tick.C:
			l.housekeep(false)
			continue
		case <-stop:
			l.qmu.Lock()
			batch = append(batch[:0], l.queue...)
			l.queue = nil
			l.qmu.Unlock()
			if len(batch) > 0 {
				l.writeBatches(batch)
			}
			l.housekeep(true)
			return
		}
		l.qmu.Lock()
		batch, l.queue = l.queue, batch[:0]
		l.qmu.Unlock()
		if len(batch) > 0 {
			l.writeBatches(batch)
			clear(batch)
		}
	}
}

// writeBatches writes batch, which resets may split into several.
func (l *Log) writeBatches(batch []pending) {
	for len(batch) > 0 {
		i := 0
		for i < len(batch) && !batch[i].reset {
			i++
		}
		if i > 0 {
			l.writeBatch(batch[:i])
		}
		if i == len(batch) {
			return
		}
		r := batch[i]
		r.done(r.at, l.restart(r.at))
		batch = batch[i+1:]
	}
}

// writeBatch assigns offsets, writes the batch (rolling segments as they
// fill), fsyncs per policy, publishes the new committed state and resolves
// the appends.
func (l *Log) writeBatch(batch []pending) {
	l.mu.RLock()
	failed := l.failed
	l.mu.RUnlock()
	if failed != nil {
		for _, p := range batch {
			p.done(0, failed)
		}
		return
	}
	a := l.active()
	cur := added{seg: a, next: a.next, size: a.size, ts: a.lastTS}
	var done []added
	flush := func() error {
		if len(l.buf) == 0 {
			return nil
		}
		if _, err := cur.seg.f.WriteAt(l.buf, cur.size-int64(len(l.buf))); err != nil {
			return err
		}
		l.buf = l.buf[:0]
		l.unsynced = true
		return nil
	}
	var err error
	offsets := make([]uint64, len(batch))
	var refused []error // AppendAt records whose offset is not the next one
	for i, p := range batch {
		if p.atGiven && p.at != cur.next {
			if refused == nil {
				refused = make([]error, len(batch))
			}
			refused[i] = fmt.Errorf("segment: record for offset %d, but the log's next offset is %d: %w", p.at, cur.next, ErrOffset)
			continue
		}
		if cur.size > 0 && cur.size+int64(len(p.rec)) > l.opts.SegmentBytes {
			if err = flush(); err != nil {
				break
			}
			if err = l.syncActive(); err != nil {
				break
			}
			done = append(done, cur)
			l.commit(done)
			done = done[:0]
			if err = l.roll(cur.next); err != nil {
				break
			}
			cur = added{seg: l.active(), next: cur.next, size: 0, ts: cur.ts}
		}
		ts := l.opts.Now().UnixMilli()
		if p.atGiven {
			ts = p.ts
		}
		if ts < l.lastTS {
			ts = l.lastTS
		}
		l.lastTS = ts
		record.PutHeader(p.rec, cur.next, ts)
		if cur.size == 0 || cur.size-l.lastIndex >= l.opts.IndexInterval {
			cur.idx = append(cur.idx, idxEntry{off: cur.next, pos: cur.size, ts: ts})
			l.lastIndex = cur.size
		}
		offsets[i] = cur.next
		l.buf = append(l.buf, p.rec...)
		cur.next++
		cur.size += int64(len(p.rec))
		cur.ts = ts
	}
	if err == nil {
		err = flush()
	}
	if err == nil && l.opts.Fsync == FsyncAlways {
		err = l.syncActive()
	}
	if err != nil {
		err = core.Wrap(core.ResourceError, err, "stream log %s", l.dir)
		l.log.Error("stream append failed; the log refuses further appends", "dir", l.dir, "err", err)
		l.buf = l.buf[:0]
		l.mu.Lock()
		l.failed = err
		l.mu.Unlock()
		// Whatever was committed stays; the rest is cut so that a restart
		// does not resurrect records whose appends failed.
		if a := l.active(); a != nil {
			_ = a.f.Truncate(a.size)
		}
		for _, p := range batch {
			p.done(0, err)
		}
		return
	}
	done = append(done, cur)
	l.commit(done)
	for i, p := range batch {
		if refused != nil && refused[i] != nil {
			p.done(0, refused[i])
			continue
		}
		p.done(offsets[i], nil)
	}
	l.retain()
}

func (l *Log) syncActive() error {
	if !l.unsynced {
		return nil
	}
	t0 := time.Now()
	if err := l.active().f.Sync(); err != nil {
		return err
	}
	if l.opts.OnFsync != nil {
		l.opts.OnFsync(time.Since(t0))
	}
	l.unsynced = false
	return nil
}

// added is what a batch wrote to one segment, not yet visible to readers.
type added struct {
	seg  *segment
	next uint64
	size int64
	idx  []idxEntry
	ts   int64
}

// commit makes written records visible to readers.
func (l *Log) commit(done []added) {
	l.mu.Lock()
	for _, d := range done {
		s := d.seg
		if s.empty() && d.next > s.base {
			if len(d.idx) > 0 {
				s.firstTS = d.idx[0].ts
			}
		}
		s.next, s.size, s.lastTS = d.next, d.size, d.ts
		s.index = append(s.index, d.idx...)
	}
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
}
