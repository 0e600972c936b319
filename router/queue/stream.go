package queue

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/bourse-mq/bourse/core"
)

// Log is a stream's append-only record log. Storage implements it; the
// queue never touches files. Offsets start at 0 and have no gaps; a log
// holds [first, next) after retention.
type Log interface {
	// Append assigns m the next offset and calls done once the record is
	// durable (or failed), from another goroutine.
	Append(m *core.Message, done func(offset uint64, err error))
	// Bounds returns the first retained offset and the next offset.
	Bounds() (first, next uint64)
	// OffsetAt returns the first offset appended at or after t.
	OffsetAt(t time.Time) uint64
	// Read calls fn for records from offset on (from first if offset is
	// below it), about maxBytes of them but at least one, and returns the
	// offset to read next. Each call gets a fresh message.
	Read(offset uint64, maxBytes int, fn func(offset uint64, ts time.Time, m *core.Message)) (uint64, error)
	// Changed returns a channel closed when new records are readable.
	Changed() <-chan struct{}
	// StoreOffset and QueryOffset keep named readers' next offsets.
	StoreOffset(name string, next uint64)
	QueryOffset(name string) (uint64, bool)
	NamedOffsets() map[string]uint64
	// Size reports segments and bytes on disk.
	Size() (segments int, bytes int64)
}

// Follower is a Log whose records are copied in from elsewhere (a
// cluster's stream, in cluster mode): nothing is copied until a reader
// follows it, and the copy may stop once no reader holds it.
type Follower interface {
	// Follow starts copying if the log is not being filled yet, and
	// returns once Bounds reflects the source (its first and next offsets
	// as of the call) or, with all, once the log holds every record the
	// source held at the call; or when ctx ends. On success the caller
	// holds the copy until it calls release (once it reads no more); on
	// error it holds nothing.
	Follow(ctx context.Context, all bool) (release func(), err error)
}

// CatchUp makes sure a stream's records are copied to this node (cluster
// mode) and returns once it holds those the cluster held at the call; on a
// single node it returns at once. The caller holds the copy until it calls
// release, which it must do once it reads no more.
func (q *Queue) CatchUp(ctx context.Context) (release func(), err error) {
	return q.follow(ctx, true)
}

func (q *Queue) follow(ctx context.Context, all bool) (func(), error) {
	if q.stream == nil {
		return func() {}, nil
	}
	f, ok := q.stream.log.(Follower)
	if !ok {
		return func() {}, nil
	}
	release, err := f.Follow(ctx, all)
	if err != nil {
		return nil, core.Wrap(core.ResourceError, err, "stream '%s' in vhost '%s' not reachable in the cluster", q.cfg.Name, q.cfg.VHost)
	}
	return release, nil
}

// StreamConfig is what storage needs to open a stream's log.
type StreamConfig struct {
	MaxBytes     int64         // x-max-length-bytes; 0 = no limit
	MaxAge       time.Duration // x-max-age; 0 = no limit
	SegmentBytes int64         // x-stream-max-segment-size-bytes; 0 = default
}

// StreamConfig returns the log settings of a stream queue's arguments.
func (a Args) StreamConfig() StreamConfig {
	c := StreamConfig{MaxAge: a.MaxAge, SegmentBytes: a.SegmentBytes}
	if a.MaxLengthBytes > 0 {
		c.MaxBytes = a.MaxLengthBytes
	}
	return c
}

// OffsetKind says where a stream reader starts.
type OffsetKind uint8

// Offset kinds, as RabbitMQ's x-stream-offset values.
const (
	OffsetNext  OffsetKind = iota // only records appended from now on (the default)
	OffsetFirst                   // the first retained record
	OffsetLast                    // the last record
	OffsetAt                      // an absolute offset
	OffsetTime                    // the first record appended at or after a time
)

// OffsetSpec is a stream reader's starting point.
type OffsetSpec struct {
	Kind   OffsetKind
	Offset uint64
	Time   time.Time
}

// StreamOptions are a stream subscription's settings.
type StreamOptions struct {
	Offset    OffsetSpec
	HasOffset bool // Offset was given
	// Name makes the reader's progress a named server-side offset: acks
	// (or deliveries, without acks) store it, and a later subscription of
	// the same name resumes from it. Offset is then only where a name with
	// no stored offset starts (Kafka's auto.offset.reset): a processor that
	// says "first" reads everything once, across restarts. To rewind a
	// named reader, set its offset (HTTP PUT …/offsets/{name}).
	Name string
}

// ParseOffset parses an x-stream-offset value: "first", "last", "next", an
// integer offset, a timestamp, an interval before now ("30m", "1h", "7D":
// RabbitMQ's Y M D h m s units), or STOMP's "offset=N" / "timestamp=unix
// seconds" strings.
func ParseOffset(v any, now time.Time) (OffsetSpec, error) {
	if n, ok := core.AsInt(v); ok {
		if n < 0 {
			return OffsetSpec{}, core.Errorf(core.PreconditionFailed, "invalid x-stream-offset %d: negative", n)
		}
		return OffsetSpec{Kind: OffsetAt, Offset: uint64(n)}, nil
	}
	switch x := v.(type) {
	case time.Time:
		return OffsetSpec{Kind: OffsetTime, Time: x}, nil
	case []byte:
		v = string(x)
	}
	s, ok := v.(string)
	if !ok {
		return OffsetSpec{}, core.Errorf(core.PreconditionFailed, "invalid x-stream-offset of type %T", v)
	}
	switch s = strings.TrimSpace(s); {
	case s == "first":
		return OffsetSpec{Kind: OffsetFirst}, nil
	case s == "last":
		return OffsetSpec{Kind: OffsetLast}, nil
	case s == "next":
		return OffsetSpec{Kind: OffsetNext}, nil
	case strings.HasPrefix(s, "offset="):
		n, err := strconv.ParseUint(s[len("offset="):], 10, 64)
		if err != nil {
			return OffsetSpec{}, core.Errorf(core.PreconditionFailed, "invalid x-stream-offset %q", s)
		}
		return OffsetSpec{Kind: OffsetAt, Offset: n}, nil
	case strings.HasPrefix(s, "timestamp="):
		n, err := strconv.ParseInt(s[len("timestamp="):], 10, 64)
		if err != nil {
			return OffsetSpec{}, core.Errorf(core.PreconditionFailed, "invalid x-stream-offset %q", s)
		}
		return OffsetSpec{Kind: OffsetTime, Time: time.Unix(n, 0)}, nil
	}
	if n, err := strconv.ParseUint(s, 10, 64); err == nil {
		return OffsetSpec{Kind: OffsetAt, Offset: n}, nil
	}
	if d, err := ParseAge(s); err == nil {
		return OffsetSpec{Kind: OffsetTime, Time: now.Add(-d)}, nil
	}
	return OffsetSpec{}, core.Errorf(core.PreconditionFailed, "invalid x-stream-offset %q: want first, last, next, an offset, a timestamp or an interval like 1h", s)
}

// ParseAge parses RabbitMQ's x-max-age format: a positive number followed
// by one unit, Y (365 days), M (30 days), D, h, m or s.
func ParseAge(s string) (time.Duration, error) {
	if len(s) < 2 {
		return 0, fmt.Errorf("invalid age %q", s)
	}
	n, err := strconv.ParseInt(s[:len(s)-1], 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("invalid age %q", s)
	}
	var unit time.Duration
	switch s[len(s)-1] {
	case 'Y':
		unit = 365 * 24 * time.Hour
	case 'M':
		unit = 30 * 24 * time.Hour
	case 'D':
		unit = 24 * time.Hour
	case 'h':
		unit = time.Hour
	case 'm':
		unit = time.Minute
	case 's':
		unit = time.Second
	default:
		return 0, fmt.Errorf("invalid age %q: unit must be one of Y, M, D, h, m, s", s)
	}
	if n > int64(200*365*24*time.Hour/unit) {
		return 0, fmt.Errorf("invalid age %q: too large", s)
	}
	return time.Duration(n) * unit, nil
}

// streamState is the part of a Queue that is a stream.
type streamState struct {
	log    Log
	logger *slog.Logger
	window time.Duration
	dedup  map[string]*dedupEntry // guarded by Queue.mu
	order  []dedupKey
}

type dedupEntry struct {
	at      time.Time
	done    bool
	err     error
	waiters []func(error)
}

type dedupKey struct {
	id string
	e  *dedupEntry
}

// maxDedup bounds the deduplication table; the oldest ids go first.
const maxDedup = 1 << 20

// dedupRebuildBytes bounds how much of a stream's tail is read at start to
// remember recent message ids.
const dedupRebuildBytes = 64 << 20

// DefaultDedupWindow is how long a message id is remembered when the
// stream does not set x-stream-dedup-window.
const DefaultDedupWindow = 2 * time.Minute

// NewStream creates a queue that is a stream over log. Publishers append;
// each subscription reads from its own offset; acks only return credit.
// Message ids seen within the deduplication window are not appended again.
func NewStream(cfg Config, hooks Hooks, log Log, logger *slog.Logger) *Queue {
	q := New(cfg, hooks, nil)
	if logger == nil {
		logger = slog.Default()
	}
	st := &streamState{log: log, logger: logger, window: cfg.Args.DedupWindow, dedup: map[string]*dedupEntry{}}
	if !cfg.Args.HasDedupWindow {
		st.window = DefaultDedupWindow
	}
	q.stream = st
	// Remember the ids of records still inside the window, so that a
	// producer resending after a broker restart is deduplicated too.
	if st.window > 0 {
		now := q.hooks.Now()
		from := log.OffsetAt(now.Add(-st.window))
		// Bound the work at start: at most dedupRebuildBytes from the tail
		// (a busy stream's whole window could be gigabytes).
		first, next := log.Bounds()
		if _, bytes := log.Size(); next > first && bytes > dedupRebuildBytes {
			avg := max(bytes/int64(next-first), 1)
			if keep := uint64(dedupRebuildBytes / avg); next-from > keep {
				from = next - keep
			}
		}
		for from < next {
			n, err := log.Read(from, 1<<20, func(_ uint64, ts time.Time, m *core.Message) {
				if id := m.Props.MessageID; id != "" {
					e := &dedupEntry{at: ts, done: true}
					st.dedup[id] = e
					st.order = append(st.order, dedupKey{id, e})
				}
			})
			if err != nil || n == from {
				break
			}
			from = n
		}
	}
	return q
}

// IsStream reports whether the queue is a stream.
func (q *Queue) IsStream() bool { return q.stream != nil }

// StreamLog returns a stream's log (nil for a queue).
func (q *Queue) StreamLog() Log {
	if q.stream == nil {
		return nil
	}
	return q.stream.log
}

// Append writes m to a stream; done gets the outcome once it is durable. A
// message whose id was appended within the deduplication window is not
// written again: done reports the first append's outcome.
func (q *Queue) Append(m *core.Message, done func(error)) {
	st := q.stream
	q.published.Add(1)
	id := m.Props.MessageID
	if id == "" || st.window <= 0 {
		st.log.Append(m, func(_ uint64, err error) { done(err) })
		return
	}
	now := q.hooks.Now()
	q.mu.Lock()
	for len(st.order) > 0 && (now.Sub(st.order[0].e.at) >= st.window || len(st.order) > maxDedup) {
		k := st.order[0]
		if st.dedup[k.id] == k.e {
			delete(st.dedup, k.id)
		}
		st.order = st.order[1:]
	}
	if e, ok := st.dedup[id]; ok && now.Sub(e.at) < st.window {
		if e.done {
			err := e.err
			q.mu.Unlock()
			done(err)
			return
		}
		e.waiters = append(e.waiters, done)
		q.mu.Unlock()
		return
	}
	e := &dedupEntry{at: now}
	st.dedup[id] = e
	st.order = append(st.order, dedupKey{id, e})
	q.mu.Unlock()
	st.log.Append(m, func(_ uint64, err error) {
		q.mu.Lock()
		e.done, e.err = true, err
		ws := e.waiters
		e.waiters = nil
		if err != nil && st.dedup[id] == e {
			delete(st.dedup, id) // a failed append does not block a retry
		}
		q.mu.Unlock()
		done(err)
		for _, w := range ws {
			w(err)
		}
	})
}

// streamSub is a stream subscription's reader state.
type streamSub struct {
	next      uint64 // the next offset to read
	name      string
	committed uint64 // highest stored next offset (named readers)
	wake      chan struct{}
	stop      chan struct{}
	done      chan struct{}
}

type streamRec struct {
	off uint64
	m   *core.Message
}

// startOffset resolves where a new reader starts.
func (st *streamState) startOffset(o StreamOptions) uint64 {
	first, next := st.log.Bounds()
	if o.Name != "" {
		if v, ok := st.log.QueryOffset(o.Name); ok {
			return max(v, first)
		}
	}
	switch o.Offset.Kind {
	case OffsetFirst:
		return first
	case OffsetLast:
		if next > first {
			return next - 1
		}
		return next
	case OffsetAt:
		return min(max(o.Offset.Offset, first), next)
	case OffsetTime:
		return st.log.OffsetAt(o.Offset.Time)
	default:
		return next
	}
}

// consumeStream registers a stream reader and starts its goroutine.
func (q *Queue) consumeStream(c Consumer, o ConsumeOptions) (*Sub, error) {
	if !o.NoAck && o.Prefetch <= 0 && o.PrefetchBytes <= 0 {
		return nil, core.Errorf(core.PreconditionFailed, "consumer prefetch count is not set for stream '%s' in vhost '%s'", q.cfg.Name, q.cfg.VHost)
	}
	var so StreamOptions
	if o.Stream != nil {
		so = *o.Stream
	}
	// A copy filled from a cluster: its bounds must be the cluster's
	// before the start is resolved. The reader holds the copy until its
	// goroutine ends.
	release, err := q.follow(context.Background(), false)
	if err != nil {
		return nil, err
	}
	s := &Sub{q: q, c: c, opts: o, st: &streamSub{
		name: so.Name,
		wake: make(chan struct{}, 1),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}}
	s.st.next = q.stream.startOffset(so)
	s.st.committed = s.st.next
	q.mu.Lock()
	if q.deleted {
		q.mu.Unlock()
		release()
		return nil, core.Errorf(core.NotFound, "no queue '%s' in vhost '%s'", q.cfg.Name, q.cfg.VHost)
	}
	q.subs = append(q.subs, s)
	q.mu.Unlock()
	go q.pump(s, release)
	return s, nil
}

// pump reads the log for one subscription and delivers while the consumer
// has credit. Reads happen without the queue's lock; Deliver is called with
// it, as for a queue. It releases the copy (release) when it ends.
func (q *Queue) pump(s *Sub, release func()) {
	st := q.stream
	ss := s.st
	defer close(ss.done)
	defer release()
	var batch []streamRec
	const readBytes = 256 << 10
	for {
		q.mu.Lock()
		if s.canceled || q.deleted {
			q.mu.Unlock()
			return
		}
		for len(batch) > 0 {
			r := batch[0]
			if !s.hasCredit(r.m.Size()) {
				break
			}
			q.seq++
			id := q.seq
			if !s.opts.NoAck {
				e := &entry{seq: id, msg: r.m, sub: s, count: 1, off: r.off, size: r.m.Size()}
				q.unacked[id] = e
				s.unacked++
				s.ubytes += r.m.Size()
			}
			if !s.c.Deliver(Delivery{Queue: q, Sub: s, Msg: r.m, ID: id, Count: 1}) {
				s.blocked = true
				if !s.opts.NoAck {
					delete(q.unacked, id)
					s.unacked--
					s.ubytes -= r.m.Size()
				}
				break
			}
			q.delivered.Add(1)
			if s.opts.NoAck && ss.name != "" {
				q.commitLocked(s, r.off+1)
			}
			batch[0] = streamRec{}
			batch = batch[1:]
		}
		waitCredit := len(batch) > 0
		q.mu.Unlock()

		var changed <-chan struct{}
		if !waitCredit {
			changed = st.log.Changed()
			first, next := st.log.Bounds()
			if ss.next < first {
				st.logger.Info("stream reader fell behind retention; moved to the first retained offset",
					"vhost", q.cfg.VHost, "stream", q.cfg.Name, "consumer", s.opts.Tag, "from", ss.next, "to", first)
				ss.next = first
			}
			if ss.next < next {
				n, err := st.log.Read(ss.next, readBytes, func(off uint64, _ time.Time, m *core.Message) {
					if m.Headers == nil {
						m.Headers = core.Table{}
					}
					m.Headers["x-stream-offset"] = int64(off)
					m.Origin.VHost = q.cfg.VHost
					batch = append(batch, streamRec{off, m})
				})
				if err != nil {
					st.logger.Error("stream read failed", "vhost", q.cfg.VHost, "stream", q.cfg.Name, "offset", ss.next, "err", err)
				} else if n > ss.next {
					ss.next = n
					continue
				}
			}
		}
		select {
		case <-ss.wake:
		case <-changed:
		case <-ss.stop:
			return
		}
	}
}

// commitLocked stores a named reader's progress.
func (q *Queue) commitLocked(s *Sub, next uint64) {
	if next > s.st.committed {
		s.st.committed = next
		q.stream.log.StoreOffset(s.st.name, next)
	}
}

// wakeStream nudges a stream subscription's goroutine.
func (s *Sub) wakeStream() {
	select {
	case s.st.wake <- struct{}{}:
	default:
	}
}

// streamSettleLocked handles an ack or reject of a stream delivery: it
// only returns credit (and advances a named offset); records stay.
func (q *Queue) streamSettleLocked(e *entry) {
	s := e.sub
	q.releaseLocked(e)
	q.acked.Add(1)
	if s != nil && !s.canceled {
		if s.st.name != "" {
			q.commitLocked(s, e.off+1)
		}
		s.wakeStream()
	}
}

// StreamOffset returns a named reader's stored offset.
func (q *Queue) StreamOffset(name string) (uint64, bool) {
	if q.stream == nil {
		return 0, false
	}
	return q.stream.log.QueryOffset(name)
}

// SetStreamOffset stores a named reader's offset (the next one to read).
func (q *Queue) SetStreamOffset(name string, next uint64) {
	if q.stream != nil {
		q.stream.log.StoreOffset(name, next)
	}
}
