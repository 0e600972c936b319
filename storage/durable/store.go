// Package durable stores the messages of durable queues so that a confirmed
// persistent message survives a crash of the broker.
//
// Every durable queue of every vhost shares one journal: a directory of
// append-only segment files (00000001.jnl, 00000002.jnl, …). A persistent
// message is written once, as one record that lists every (queue, seq) it
// was enqueued on, however many durable queues it reached. Settlements
// (ack, drop, expiry, dead-letter, purge), first deliveries and queue
// deletions are small records in the same journal. One writer goroutine
// takes everything appended since its last write, writes it with one
// write(2) and, under the "always" policy, one fsync, and only then
// resolves the confirms of that batch: group commit.
//
// Recovery reads the segments in order, checks every record's CRC-32C,
// truncates a torn or corrupt tail of the last segment (with a log line),
// and rebuilds each queue: its unsettled messages in seq order, flagged
// redelivered if they had been delivered. Settlements are applied as a set,
// so a settle written before its message (an auto-ack consumer can take a
// message before the publisher's record reaches the writer) still counts.
// A queue-deleted record starts a new incarnation of that queue name.
//
// Space is reclaimed by deleting whole segments, oldest first, once every
// message in them is settled. A segment holding one unsettled message keeps
// every later segment too (settle records in them must outlive it); the
// README states this trade-off.
package durable

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/bourse-mq/bourse/core"
)

// Fsync policies.
const (
	FsyncAlways   = "always"   // fsync every batch before confirming it
	FsyncInterval = "interval" // fsync at most every FsyncInterval; confirm after the write
	FsyncNever    = "never"    // leave flushing to the OS; confirm after the write
)

// Options configure a Store.
type Options struct {
	Fsync         string
	FsyncInterval time.Duration
	SegmentBytes  int64 // roll to a new segment past this size [64 MiB]
	Logger        *slog.Logger
	// OnFsync, when set, is told how long each fsync of the journal took.
	OnFsync func(time.Duration)
	// LazyRecovery returns recovered messages without their bodies
	// (Recovered.Paged): queues load them with Load when they deliver, so
	// a journal far larger than memory recovers in bounded memory.
	LazyRecovery bool
}

// Stats count the journal's work.
type Stats struct {
	Records, Batches, Fsyncs, Bytes uint64
	Segments                        int
}

type qkey struct{ vhost, queue string }

type segment struct {
	n       int
	path    string
	live    int   // messages in this segment with an unsettled target
	written int64 // bytes of this segment on disk (guarded by Store.mu)
	rf      *os.File
}

type msgRef struct {
	seg       *segment
	remaining int
	pos       int64 // the record's position in its segment
	size      int   // the record's size, framing included
}

type chunk struct {
	seg int
	b   []byte
}

// Store is the durable message journal. It implements the router's
// MessageStore (it knows only core, as the package map asks).
type Store struct {
	dir  string
	opts Options
	log  *slog.Logger

	mu       sync.Mutex
	wake     *sync.Cond
	written  *sync.Cond // broadcast when a batch reaches its segment file
	pending  []chunk
	waiters  []func(error)
	curSeg   int   // segment new records go to
	curSize  int64 // bytes assigned to curSeg so far
	segs     map[int]*segment
	index    map[qkey]map[uint64]*msgRef
	early    map[qkey]map[uint64]bool // settled before their message record was appended
	failed   error
	closed   bool
	stats    Stats
	done     chan struct{}
	file     *os.File // writer-owned: the segment being written
	fileSeg  int
	lastSync time.Time
	lingered bool // the writer's linger timer fired (guarded by mu)
}

// Recovered is one message to put back into a queue at start.
type Recovered struct {
	Seq         uint64
	Msg         *core.Message
	Redelivered bool
	// Paged: Msg has no body (LazyRecovery); Load reads it back.
	Paged bool
	Size  int // the body's size
}

// Load reads back the message of a durable queue's entry from the journal
// (for a queue that keeps only an index in memory). It waits for the
// record to reach its file if it was appended a moment ago.
func (s *Store) Load(vhost, queue string, seq uint64) (*core.Message, error) {
	s.mu.Lock()
	ref := s.index[qkey{vhost, queue}][seq]
	if ref == nil {
		s.mu.Unlock()
		return nil, core.Errorf(core.NotFound, "journal has no entry %d of queue '%s' in vhost '%s'", seq, queue, vhost)
	}
	seg := ref.seg
	for seg.written < ref.pos+int64(ref.size) && s.failed == nil && !s.closed {
		s.written.Wait()
	}
	if seg.written < ref.pos+int64(ref.size) {
		s.mu.Unlock()
		return nil, core.Errorf(core.ResourceError, "journal unavailable: entry %d of queue '%s' not written", seq, queue)
	}
	if seg.rf == nil {
		f, err := os.Open(seg.path)
		if err != nil {
			s.mu.Unlock()
			return nil, core.Wrap(core.ResourceError, err, "open journal segment")
		}
		seg.rf = f
	}
	f, pos, size := seg.rf, ref.pos, ref.size
	s.mu.Unlock()
	buf := make([]byte, size)
	if _, err := f.ReadAt(buf, pos); err != nil {
		return nil, core.Wrap(core.ResourceError, err, "read journal segment %s at %d", seg.path, pos)
	}
	typ, payload, _, err := nextRecord(buf)
	if err != nil || typ != recMessage {
		return nil, core.Errorf(core.ResourceError, "journal segment %s at %d: not a message record (%v)", seg.path, pos, err)
	}
	r := &reader{B: payload}
	r.Bytes() // vhost
	for n := r.Uvarint(); n > 0 && r.Err == nil; n-- {
		r.Bytes() // target queue
		r.Uvarint()
	}
	return readMessage(r, vhost)
}

// Open opens the journal in dir and recovers it. The returned map holds,
// per vhost and queue name, the unsettled messages in seq order.
func Open(dir string, opts Options) (*Store, map[[2]string][]Recovered, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.SegmentBytes <= 0 {
		opts.SegmentBytes = 64 << 20
	}
	if opts.Fsync == "" {
		opts.Fsync = FsyncAlways
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, nil, fmt.Errorf("journal dir: %w", err)
	}
	s := &Store{dir: dir, opts: opts, log: opts.Logger, segs: map[int]*segment{},
		index: map[qkey]map[uint64]*msgRef{}, early: map[qkey]map[uint64]bool{}, done: make(chan struct{})}
	s.wake = sync.NewCond(&s.mu)
	s.written = sync.NewCond(&s.mu)
	rec, err := s.recover()
	if err != nil {
		return nil, nil, err
	}
	s.curSeg++
	if err := s.openSegment(s.curSeg); err != nil {
		return nil, nil, err
	}
	s.segs[s.curSeg] = &segment{n: s.curSeg, path: s.segPath(s.curSeg)}
	go s.writer()
	return s, rec, nil
}

func (s *Store) segPath(n int) string { return filepath.Join(s.dir, fmt.Sprintf("%08d.jnl", n)) }

func (s *Store) openSegment(n int) error {
	f, err := os.OpenFile(s.segPath(n), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("open journal segment: %w", err)
	}
	if err := syncDir(s.dir); err != nil {
		f.Close()
		return err
	}
	s.file, s.fileSeg = f, n
	return nil
}

// syncDir fsyncs a directory so that file creations and deletions in it
// survive a crash.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open dir for fsync: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync dir %s: %w", dir, err)
	}
	return nil
}

// appendLocked adds an encoded record to the pending batch.
func (s *Store) appendLocked(rec []byte) {
	if s.curSize > 0 && s.curSize+int64(len(rec)) > s.opts.SegmentBytes {
		s.curSeg++
		s.curSize = 0
		s.segs[s.curSeg] = &segment{n: s.curSeg, path: s.segPath(s.curSeg)}
	}
	s.curSize += int64(len(rec))
	if n := len(s.pending); n > 0 && s.pending[n-1].seg == s.curSeg {
		s.pending[n-1].b = append(s.pending[n-1].b, rec...)
	} else {
		s.pending = append(s.pending, chunk{seg: s.curSeg, b: append([]byte(nil), rec...)})
	}
	s.stats.Records++
	s.wake.Signal()
}

// Persist writes m once for all its durable targets and calls done when
// the record is durable (per the fsync policy).
func (s *Store) Persist(vhost string, m *core.Message, targets []core.QueueSeq, done func(error)) {
	b, start := beginRecord(nil, recMessage)
	b = appendString(b, vhost)
	b = appendUvarintLen(b, len(targets))
	for _, t := range targets {
		b = appendString(b, t.Queue)
		b = appendUvarint(b, t.Seq)
	}
	b, err := appendMessage(b, m)
	if err != nil {
		done(core.Wrap(core.InvalidArgument, err, "encode message for the journal"))
		return
	}
	b = endRecord(b, start)

	s.mu.Lock()
	if s.failed != nil || s.closed {
		err := s.failed
		if err == nil {
			err = errors.New("journal closed")
		}
		s.mu.Unlock()
		done(core.Wrap(core.ResourceError, err, "journal unavailable"))
		return
	}
	s.appendLocked(b)
	seg := s.segs[s.curSeg]
	ref := &msgRef{seg: seg, pos: s.curSize - int64(len(b)), size: len(b)}
	for _, t := range targets {
		k := qkey{vhost, t.Queue}
		if s.early[k][t.Seq] {
			delete(s.early[k], t.Seq)
			continue
		}
		if s.index[k] == nil {
			s.index[k] = map[uint64]*msgRef{}
		}
		s.index[k][t.Seq] = ref
		ref.remaining++
	}
	if ref.remaining > 0 {
		seg.live++
	}
	s.waiters = append(s.waiters, done)
	s.mu.Unlock()
}

// Settle records that entries of q left it for good. It never blocks on I/O.
func (s *Store) Settle(vhost, queue string, seqs []uint64) {
	s.seqRecord(recSettle, vhost, queue, seqs)
}

// Delivered records an entry's first delivery.
func (s *Store) Delivered(vhost, queue string, seq uint64) {
	s.seqRecord(recDelivered, vhost, queue, []uint64{seq})
}

func (s *Store) seqRecord(typ byte, vhost, queue string, seqs []uint64) {
	b, start := beginRecord(nil, typ)
	b = appendString(b, vhost)
	b = appendString(b, queue)
	b = appendUvarintLen(b, len(seqs))
	for _, seq := range seqs {
		b = appendUvarint(b, seq)
	}
	b = endRecord(b, start)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.appendLocked(b)
	if typ != recSettle {
		return
	}
	k := qkey{vhost, queue}
	for _, seq := range seqs {
		if ref := s.index[k][seq]; ref != nil {
			delete(s.index[k], seq)
			s.releaseLocked(ref)
		} else {
			if s.early[k] == nil {
				s.early[k] = map[uint64]bool{}
			}
			s.early[k][seq] = true
		}
	}
}

func (s *Store) releaseLocked(ref *msgRef) {
	ref.remaining--
	if ref.remaining == 0 {
		ref.seg.live--
	}
}

// QueueDeleted forgets every entry of a durable queue.
func (s *Store) QueueDeleted(vhost, name string) {
	b, start := beginRecord(nil, recQueueDeleted)
	b = appendString(b, vhost)
	b = appendString(b, name)
	b = endRecord(b, start)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.appendLocked(b)
	k := qkey{vhost, name}
	for _, ref := range s.index[k] {
		s.releaseLocked(ref)
	}
	delete(s.index, k)
	delete(s.early, k)
}

// Stats returns the journal's counters.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Segments = len(s.segs)
	return st
}

// writer is the one goroutine that writes and syncs the journal.
func (s *Store) writer() {
	defer close(s.done)
	var ticker *time.Ticker
	if s.opts.Fsync == FsyncInterval {
		ticker = time.NewTicker(s.opts.FsyncInterval)
		defer ticker.Stop()
		go func() {
			for range ticker.C {
				s.mu.Lock()
				if s.closed {
					s.mu.Unlock()
					return
				}
				s.wake.Signal()
				s.mu.Unlock()
			}
		}()
	}
	dirty := false
	var lastN, leftOver int // confirms in the last batch; publishers already waiting when it was confirmed
	var lastFsync time.Duration
	for {
		s.mu.Lock()
		for len(s.pending) == 0 && !s.closed && !(dirty && s.syncDue()) {
			s.wake.Wait()
		}
		s.linger(lastN+leftOver, lastFsync)
		batch, waiters := s.pending, s.waiters
		s.pending, s.waiters = nil, nil
		closing := s.closed
		s.mu.Unlock()

		err := s.writeBatch(batch)
		if err == nil && len(batch) > 0 {
			dirty = true
		}
		if err == nil && dirty && (s.opts.Fsync == FsyncAlways || closing || s.syncDue()) {
			t0 := time.Now()
			if err = s.file.Sync(); err == nil {
				lastFsync = time.Since(t0)
				if s.opts.OnFsync != nil {
					s.opts.OnFsync(lastFsync)
				}
				dirty = false
				s.lastSync = time.Now()
				s.mu.Lock()
				s.stats.Fsyncs++
				s.mu.Unlock()
			}
		}
		if err != nil {
			err = fmt.Errorf("journal write: %w", err)
			s.log.Error("journal write failed; refusing further persistent messages", "err", err)
			s.mu.Lock()
			s.failed = err
			s.mu.Unlock()
		}
		s.mu.Lock()
		leftOver = len(s.waiters)
		s.mu.Unlock()
		lastN = len(waiters)
		for _, w := range waiters {
			w(err)
		}
		s.reclaim()
		if closing {
			s.mu.Lock()
			empty := len(s.pending) == 0
			s.mu.Unlock()
			if empty {
				s.file.Close()
				return
			}
		}
	}
}

// linger holds a batch back, under the always policy, until target
// publishers wait on it or as long as the last fsync took (at most 1 ms)
// has passed. Publishers that wait for each confirm otherwise split
// into two groups taking turns (those that came during an fsync, and those
// the fsync then confirmed), each fsync covering half of them; target is
// the last batch's publishers plus those that were already waiting, so a
// lone publisher (target 1) is never held back. Called with mu held.
func (s *Store) linger(target int, lastFsync time.Duration) {
	if s.opts.Fsync != FsyncAlways || s.closed || len(s.waiters) == 0 || len(s.waiters) >= target {
		return
	}
	wait := min(lastFsync, time.Millisecond)
	if wait <= 0 {
		return
	}
	s.lingered = false
	t := time.AfterFunc(wait, func() {
		s.mu.Lock()
		s.lingered = true
		s.wake.Broadcast()
		s.mu.Unlock()
	})
	for len(s.waiters) < target && !s.lingered && !s.closed {
		s.wake.Wait()
	}
	t.Stop()
}

func (s *Store) syncDue() bool {
	return s.opts.Fsync == FsyncInterval && time.Since(s.lastSync) >= s.opts.FsyncInterval
}

func (s *Store) writeBatch(batch []chunk) error {
	if len(batch) == 0 {
		return nil
	}
	var n uint64
	for _, c := range batch {
		if c.seg != s.fileSeg {
			if err := s.file.Sync(); err != nil {
				return err
			}
			s.file.Close()
			if err := s.openSegment(c.seg); err != nil {
				return err
			}
		}
		if _, err := s.file.Write(c.b); err != nil {
			return err
		}
		n += uint64(len(c.b))
		s.mu.Lock()
		if seg := s.segs[c.seg]; seg != nil {
			seg.written += int64(len(c.b))
		}
		s.written.Broadcast()
		s.mu.Unlock()
	}
	s.mu.Lock()
	s.stats.Batches++
	s.stats.Bytes += n
	s.mu.Unlock()
	return nil
}

// reclaim deletes the oldest segments whose messages are all settled.
func (s *Store) reclaim() {
	s.mu.Lock()
	var ns []int
	for n := range s.segs {
		ns = append(ns, n)
	}
	sort.Ints(ns)
	var gone []string
	for _, n := range ns {
		seg := s.segs[n]
		if n >= s.fileSeg || seg.live > 0 {
			break
		}
		delete(s.segs, n)
		if seg.rf != nil {
			seg.rf.Close()
		}
		gone = append(gone, seg.path)
	}
	s.mu.Unlock()
	for _, p := range gone {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.log.Warn("delete settled journal segment", "path", p, "err", err)
		}
	}
	if len(gone) > 0 {
		if err := syncDir(s.dir); err != nil {
			s.log.Warn("fsync journal dir", "err", err)
		}
	}
}

// Close writes and syncs what is pending and stops the writer.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.wake.Signal()
	s.mu.Unlock()
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	s.written.Broadcast()
	for _, seg := range s.segs {
		if seg.rf != nil {
			seg.rf.Close()
			seg.rf = nil
		}
	}
	return s.failed
}

// segmentNumbers lists the journal's segment files in order.
func (s *Store) segmentNumbers() ([]int, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("read journal dir: %w", err)
	}
	var ns []int
	for _, e := range ents {
		var n int
		if name := e.Name(); strings.HasSuffix(name, ".jnl") {
			if _, err := fmt.Sscanf(name, "%08d.jnl", &n); err == nil {
				ns = append(ns, n)
			}
		}
	}
	sort.Ints(ns)
	return ns, nil
}
