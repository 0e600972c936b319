package segment

import (
	"errors"
	"os"
	"strings"
	"time"

	"github.com/bourse-mq/bourse/storage/record"
)

// ErrOffset is returned by AppendAt for a record that is not the log's next
// one.
var ErrOffset = errors.New("offset is not the log's next")

// A replica log is a copy of a log kept elsewhere (a cluster's stream):
// its records come with their offsets and timestamps (AppendAt), it may
// start at any offset (Reset), and its retention follows the source's
// (TrimBefore) rather than its own limits.

// AppendAt queues a record copied from elsewhere: payload is a message in
// storage/record's encoding, offset must be the log's next offset when the
// record is written, and ts (kept monotonic) becomes its timestamp. done is
// called as for Append; a record for another offset is refused with
// ErrOffset and the records after it are still written.
func (l *Log) AppendAt(offset uint64, ts time.Time, payload []byte, done func(error)) {
	rec := make([]byte, record.HeaderSize, record.HeaderSize+len(payload))
	rec = append(rec, payload...)
	l.enqueue(pending{rec: rec, at: offset, ts: ts.UnixMilli(), atGiven: true, done: func(_ uint64, err error) { done(err) }})
}

// Reset drops every record and makes base the log's next offset (and its
// first), after the appends queued before it; it returns once done.
func (l *Log) Reset(base uint64) error {
	ch := make(chan error, 1)
	l.enqueue(pending{at: base, reset: true, done: func(_ uint64, err error) { ch <- err }})
	return <-ch
}

// TrimBefore lets retention delete the sealed segments whose records are
// all below offset (at the writer's next batch or tick).
func (l *Log) TrimBefore(offset uint64) {
	for {
		cur := l.trim.Load()
		if offset <= cur || l.trim.CompareAndSwap(cur, offset) {
			return
		}
	}
}

func (l *Log) enqueue(p pending) {
	if len(p.rec) > record.MaxSize {
		p.done(0, errors.New("segment: record above the maximum size"))
		return
	}
	l.qmu.Lock()
	if l.stop == nil {
		l.qmu.Unlock()
		p.done(0, ErrClosed)
		return
	}
	l.queue = append(l.queue, p)
	l.qmu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// restart (writer goroutine) removes every segment and starts an empty one
// at base. Readers holding a segment keep reading it until they let go.
func (l *Log) restart(base uint64) error {
	l.mu.Lock()
	if first, next := l.boundsLocked(); first == base && next == base {
		l.mu.Unlock()
		return nil
	}
	old := l.segs
	l.segs = nil
	for _, s := range old {
		s.dropped = true
	}
	l.mu.Unlock()
	for _, s := range old {
		os.Remove(s.path)
		os.Remove(strings.TrimSuffix(s.path, ".seg") + ".idx")
		l.mu.Lock()
		closeNow := s.refs == 0
		l.mu.Unlock()
		if closeNow {
			s.f.Close()
		}
	}
	l.buf = l.buf[:0]
	l.unsynced = false
	l.lastTS = 0 // the time index starts over with the records
	err := l.roll(base)
	if err == nil {
		l.log.Info("stream log restarted", "dir", l.dir, "offset", base)
	}
	l.mu.Lock()
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
	return err
}
