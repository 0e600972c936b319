package segment

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/storage/record"
)

// Bounds returns the first retained offset and the next offset to be
// committed: the log holds [first, next).
func (l *Log) Bounds() (first, next uint64) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.boundsLocked()
}

func (l *Log) boundsLocked() (first, next uint64) {
	if len(l.segs) == 0 {
		return 0, 0
	}
	return l.segs[0].base, l.segs[len(l.segs)-1].next
}

// Changed returns a channel that is closed when the next batch commits
// (or the log closes).
func (l *Log) Changed() <-chan struct{} {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.changed
}

// Size returns the number of segments and the committed bytes in them.
func (l *Log) Size() (segments int, bytes int64) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	for _, s := range l.segs {
		bytes += s.size
	}
	return len(l.segs), bytes
}

// OffsetAt returns the first offset whose timestamp is at or after t: the
// first retained offset for a time before the log, the next offset for a
// time after it.
func (l *Log) OffsetAt(t time.Time) uint64 {
	ms := t.UnixMilli()
	l.mu.RLock()
	first, next := l.boundsLocked()
	// The first segment whose newest record is at or after t.
	i := sort.Search(len(l.segs), func(i int) bool { return !l.segs[i].empty() && l.segs[i].lastTS >= ms })
	if i == len(l.segs) {
		l.mu.RUnlock()
		return next
	}
	s := l.segs[i]
	if s.firstTS >= ms {
		l.mu.RUnlock()
		return max(s.base, first)
	}
	// The last index entry before t, then a scan.
	j := sort.Search(len(s.index), func(j int) bool { return s.index[j].ts >= ms })
	from := s.index[max(j-1, 0)]
	s.refs++
	size, off := s.size, s.next
	l.mu.RUnlock()
	defer l.release(s)
	_ = scanRecords(s.f, from.pos, size, func(h record.Header, _ []byte, _ int64) bool {
		if h.Timestamp >= ms {
			off = h.Offset
			return false
		}
		return true
	})
	return off
}

// find returns the segment holding offset with a reference taken, or nil
// when offset is at or past the committed end. An offset below the first
// retained one is moved up to it.
func (l *Log) find(offset uint64) (s *segment, from uint64, size int64, pos int64) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	first, next := l.boundsLocked()
	offset = max(offset, first)
	if offset >= next {
		return nil, offset, 0, 0
	}
	i := sort.Search(len(l.segs), func(i int) bool { return l.segs[i].next > offset })
	s = l.segs[i]
	j := sort.Search(len(s.index), func(j int) bool { return s.index[j].off > offset })
	if j > 0 {
		pos = s.index[j-1].pos
	}
	s.refs++
	return s, offset, s.size, pos
}

func (l *Log) release(s *segment) {
	l.mu.Lock()
	s.refs--
	closeNow := s.dropped && s.refs == 0
	l.mu.Unlock()
	if closeNow {
		s.f.Close()
	}
}

// Read calls fn for each committed record from offset on (from the first
// retained one if offset is below it), up to about maxBytes of records but
// at least one, all from one segment. It returns the offset to read next.
func (l *Log) Read(offset uint64, maxBytes int, fn func(offset uint64, ts time.Time, m *core.Message)) (uint64, error) {
	s, offset, size, pos := l.find(offset)
	if s == nil {
		return offset, nil
	}
	defer l.release(s)
	next := offset
	budget := int64(maxBytes)
	var decodeErr error
	err := scanRecords(s.f, pos, size, func(h record.Header, rec []byte, _ int64) bool {
		if h.Offset < offset {
			return true
		}
		_, payload, err := record.Split(rec)
		if err != nil {
			decodeErr = err
			return false
		}
		m, err := record.DecodeMessage(payload)
		if err != nil {
			decodeErr = err
			return false
		}
		fn(h.Offset, time.UnixMilli(h.Timestamp), m)
		next = h.Offset + 1
		budget -= int64(h.Size)
		return budget > 0
	})
	if err == nil {
		err = decodeErr
	}
	if err != nil {
		return next, core.Wrap(core.ResourceError, err, "read stream %s at offset %d", l.dir, next)
	}
	return next, nil
}

// scanRecords reads the records in f from pos to end, calling fn with each
// record's header, bytes and position, until fn returns false.
func scanRecords(f *os.File, pos, end int64, fn func(h record.Header, rec []byte, at int64) bool) error {
	buf := make([]byte, min(int64(256<<10), max(end-pos, 0)))
	for pos < end {
		n := min(int64(len(buf)), end-pos)
		b := buf[:n]
		if _, err := f.ReadAt(b, pos); err != nil {
			return err
		}
		used := 0
		for used < len(b) {
			h, err := record.ParseHeader(b[used:])
			if err == record.ErrTorn {
				break
			}
			if err != nil {
				return err
			}
			if pos+int64(used)+int64(h.Size) > end {
				return record.ErrCorrupt
			}
			if used+h.Size > len(b) {
				if used == 0 {
					buf = make([]byte, h.Size)
					b = nil
				}
				break
			}
			if !fn(h, b[used:used+h.Size], pos+int64(used)) {
				return nil
			}
			used += h.Size
		}
		if used == 0 && b != nil {
			return record.ErrCorrupt
		}
		pos += int64(used)
	}
	return nil
}

// Range is a byte range of whole records in one segment file, for
// sendfile. The caller owns File and closes it.
type Range struct {
	File   *os.File
	Pos    int64
	Len    int64
	First  uint64 // offset of the first record in the range
	Next   uint64 // offset to ask for next
	Oldest uint64 // first retained offset of the log
	Tail   uint64 // next offset to be committed
}

// ErrOutOfRange is returned by ReadRange for an offset below retention;
// the Range it returns carries Oldest.
var ErrOutOfRange = errors.New("segment: offset below retention")

// ReadRange returns the byte range of whole records starting at offset, at
// most maxBytes long but at least one record, within one segment. An
// offset at or past the tail gives an empty range (Len 0).
func (l *Log) ReadRange(offset uint64, maxBytes int64) (Range, error) {
	l.mu.RLock()
	first, next := l.boundsLocked()
	l.mu.RUnlock()
	if offset < first {
		return Range{Oldest: first, Tail: next}, ErrOutOfRange
	}
	s, offset, size, pos := l.find(offset)
	r := Range{First: offset, Next: offset, Oldest: first, Tail: next}
	if s == nil {
		return r, nil
	}
	defer l.release(s)
	// The exact start: scan from the index entry (at most an index
	// interval of headers).
	start := int64(-1)
	err := scanRecords(s.f, pos, size, func(h record.Header, _ []byte, at int64) bool {
		if h.Offset == offset {
			start = at
			return false
		}
		return true
	})
	if err != nil || start < 0 {
		return r, core.Errorf(core.ResourceError, "stream %s: offset %d not found in %s (%v)", l.dir, offset, s.path, err)
	}
	// The end: the last index entry within maxBytes, a record boundary;
	// then whole records up to maxBytes after it.
	l.mu.RLock()
	end, endOff := start, offset
	limit := start + maxBytes
	if size <= limit {
		end, endOff = size, s.next
	} else {
		j := sort.Search(len(s.index), func(j int) bool { return s.index[j].pos > limit })
		if j > 0 && s.index[j-1].pos > start {
			end, endOff = s.index[j-1].pos, s.index[j-1].off
		}
	}
	l.mu.RUnlock()
	if end < size {
		_ = scanRecords(s.f, end, size, func(h record.Header, _ []byte, at int64) bool {
			if at+int64(h.Size) > limit && at > start {
				return false
			}
			end, endOff = at+int64(h.Size), h.Offset+1
			return true
		})
	}
	f, err := os.Open(s.path)
	if err != nil {
		return r, core.Wrap(core.ResourceError, err, "stream %s: open segment", l.dir)
	}
	r.File, r.Pos, r.Len, r.Next = f, start, end-start, endOff
	return r, nil
}

// retain deletes the oldest sealed segments while the log is over MaxBytes,
// their newest record is older than MaxAge, or they are below TrimBefore's
// offset.
func (l *Log) retain() {
	trim := l.trim.Load()
	if l.opts.MaxBytes <= 0 && l.opts.MaxAge <= 0 && trim == 0 {
		return
	}
	now := l.opts.Now().UnixMilli()
	var drop []*segment
	l.mu.Lock()
	var total int64
	for _, s := range l.segs {
		total += s.size
	}
	for len(l.segs) > 1 {
		s := l.segs[0]
		old := l.opts.MaxAge > 0 && s.lastTS < now-l.opts.MaxAge.Milliseconds()
		big := l.opts.MaxBytes > 0 && total > l.opts.MaxBytes
		if !old && !big && s.next > trim {
			break
		}
		total -= s.size
		l.segs = l.segs[1:]
		s.dropped = true
		drop = append(drop, s)
	}
	l.mu.Unlock()
	for _, s := range drop {
		l.log.Info("stream retention deleted a segment", "file", s.path, "offsets", fmt.Sprintf("%d-%d", s.base, s.next-1), "bytes", s.size)
		os.Remove(s.path)
		os.Remove(strings.TrimSuffix(s.path, ".seg") + ".idx")
		l.mu.Lock()
		closeNow := s.refs == 0
		l.mu.Unlock()
		if closeNow {
			s.f.Close()
		}
	}
}

// housekeep runs on the writer's tick: interval fsync, age retention and
// the named offsets.
func (l *Log) housekeep(final bool) {
	if l.opts.Fsync == FsyncInterval || final {
		if err := l.syncActive(); err != nil {
			l.log.Error("stream fsync failed", "dir", l.dir, "err", err)
		}
	}
	l.retain()
	l.mu.Lock()
	var b []byte
	if l.offDirty {
		b, _ = json.Marshal(l.offsets)
		l.offDirty = false
	}
	l.mu.Unlock()
	if b != nil {
		if err := writeFileSync(filepath.Join(l.dir, "offsets"), b); err != nil {
			l.log.Error("stream offsets not saved", "dir", l.dir, "err", err)
		}
	}
}

func (l *Log) loadOffsets() error {
	b, err := os.ReadFile(filepath.Join(l.dir, "offsets"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("segment: read offsets: %w", err)
	}
	if err := json.Unmarshal(b, &l.offsets); err != nil {
		l.log.Warn("stream offsets file unreadable; named offsets start over", "dir", l.dir, "err", err)
		l.offsets = map[string]uint64{}
	}
	return nil
}

// StoreOffset records the next offset of the named reader. It is saved to
// disk within the fsync interval (and on close).
func (l *Log) StoreOffset(name string, next uint64) {
	l.mu.Lock()
	if l.offsets[name] != next {
		l.offsets[name] = next
		l.offDirty = true
	}
	l.mu.Unlock()
}

// NamedOffsets returns every named reader's stored next offset.
func (l *Log) NamedOffsets() map[string]uint64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	out := make(map[string]uint64, len(l.offsets))
	for k, v := range l.offsets {
		out[k] = v
	}
	return out
}

// QueryOffset returns the stored next offset of the named reader.
func (l *Log) QueryOffset(name string) (uint64, bool) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	v, ok := l.offsets[name]
	return v, ok
}

// Close drains pending appends, saves the offsets, fsyncs and closes the
// files. Appends after Close fail with ErrClosed.
func (l *Log) Close() error {
	l.qmu.Lock()
	stop := l.stop
	l.stop = nil
	l.qmu.Unlock()
	if stop == nil {
		return nil
	}
	close(stop)
	<-l.stopped
	l.mu.Lock()
	l.closed = true
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
	l.closeFiles()
	return nil
}

func (l *Log) closeFiles() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.segs {
		s.dropped = true
		if s.refs == 0 && s.f != nil {
			s.f.Close()
		}
	}
}

// Delete closes the log and removes its directory.
func (l *Log) Delete() error {
	l.Close()
	if err := os.RemoveAll(l.dir); err != nil {
		return fmt.Errorf("segment: remove %s: %w", l.dir, err)
	}
	return nil
}

// Dir returns the log's directory.
func (l *Log) Dir() string { return l.dir }
