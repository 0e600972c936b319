// Package queue is the runtime of one queue: ready and unacknowledged
// messages, consumers with prefetch credit served round-robin, requeue in
// original order, TTLs, length limits with overflow policies, priorities and
// dead-lettering.
//
// A Queue does no I/O and starts no goroutine of its own: deliveries happen
// synchronously in the caller's goroutine (the publisher's, or the acker's),
// under the queue's lock. Timers (TTL, x-expires) use time.AfterFunc. The
// Consumer interface is implemented by protocol adapters; its Deliver method
// must never block, so a slow consumer can never stall a queue or a publisher.
//
// Lock order: Queue.mu, then whatever the Consumer takes inside Deliver. A
// Consumer must never call back into a Queue from Deliver. Hooks (dead-letter,
// cancel, auto-delete) are called after the lock is released.
package queue

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bourse-mq/bourse/core"
)

// Consumer receives deliveries. Adapters implement it.
type Consumer interface {
	// Deliver offers one delivery. It returns false to refuse it because the
	// consumer is momentarily full (outbound buffer, channel-wide prefetch,
	// channel.flow); the queue then skips this consumer until Sub.Kick. It is
	// called with the queue's lock held: it must not block and must not call
	// back into the queue.
	Deliver(d Delivery) bool
	// Cancelled tells the consumer that the queue ended its subscription
	// (queue deleted). Called without the queue's lock.
	Cancelled(q *Queue, reason error)
}

// Delivery is one message handed to a consumer or to basic.get.
type Delivery struct {
	Queue       *Queue
	Sub         *Sub // nil for Get
	Msg         *core.Message
	ID          uint64 // the queue-local sequence number; pass it to Ack/Reject
	Redelivered bool
	Count       uint32 // how many times it has been delivered, this one included
}

// Store is the persistence a durable queue needs; the router wires one in
// for durable queues. Both methods are called with the queue's lock held,
// only for persistent messages, and must not block: Settle for an entry
// that leaves the queue for good (acked, dropped, expired, dead-lettered,
// purged), Delivered the first time an entry is handed out, so that a
// restart can flag it redelivered.
type Store interface {
	Settle(vhost, queue string, seqs []uint64)
	Delivered(vhost, queue string, seq uint64)
	// Load reads back a persistent entry's message, for a queue that
	// keeps only an index of it in memory (see Config.MemoryBytes). It is
	// called with the queue's lock held and may read from disk.
	Load(vhost, queue string, seq uint64) (*core.Message, error)
}

// Hooks connect a queue to the router. Every hook is called without the
// queue's lock held, and may be nil.
type Hooks struct {
	// DeadLetter republishes a dead-lettered message (already carrying its
	// x-death header) to exchange dlx.
	DeadLetter func(dlx string, m *core.Message)
	// DeadLetterConfirm, when set, is used instead of DeadLetter for the
	// messages of a remote queue: done is called once the dead letter is
	// safely in every queue it was routed to, and only then is the
	// original terminated (on an error it is given back instead).
	DeadLetterConfirm func(dlx string, m *core.Message, done func(error))
	// Unused is called when an auto-delete queue loses its last consumer or
	// when an x-expires queue has been unused for its TTL: the router
	// deletes the queue.
	Unused func(q *Queue, reason string)
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// Config describes a queue.
type Config struct {
	Name       string
	VHost      string
	Durable    bool
	Exclusive  bool
	AutoDelete bool
	Owner      core.ConnID // the owning connection of an exclusive queue
	Arguments  core.Table  // as declared, for redeclare equivalence checks
	Args       Args        // parsed Arguments
	// MemoryBytes bounds the bodies of ready persistent messages a durable
	// queue keeps in memory; beyond it, messages are kept as an index
	// entry and their bodies are read back from the store when they are
	// delivered (as RabbitMQ's lazy queues). 0 keeps everything in memory.
	MemoryBytes int64
	Logger      *slog.Logger
}

// ConsumeOptions are a subscription's settings.
type ConsumeOptions struct {
	Tag       string
	NoAck     bool
	Exclusive bool
	// Prefetch caps unacknowledged deliveries to this consumer (0 = no cap).
	Prefetch int
	// PrefetchBytes caps the bytes of unacknowledged bodies (0 = no cap).
	PrefetchBytes int
	// Priority (x-priority): higher-priority consumers are served first.
	Priority int
	Owner    core.ConnID
	// Stream sets where a subscription to a stream starts reading (nil:
	// new records only).
	Stream *StreamOptions
}

type entry struct {
	seq         uint64
	msg         *core.Message
	expireAt    int64 // unix nanoseconds; 0 = never
	count       uint32
	redelivered bool
	pri         uint8
	sub         *Sub   // the holder while unacknowledged (nil for Get or after cancel)
	off         uint64 // a stream delivery's offset
	size        int    // the body's size (msg has no body while paged)
	paged       bool   // the body is only in the store
	h           any    // a remote queue's handle of the message (see Remote)
}

// Sub is one consumer's subscription to a queue.
type Sub struct {
	q        *Queue
	c        Consumer
	opts     ConsumeOptions
	unacked  int
	ubytes   int
	blocked  bool
	canceled bool
	st       *streamSub // a stream subscription's reader; nil for a queue
}

// Tag returns the consumer tag.
func (s *Sub) Tag() string { return s.opts.Tag }

// Queue returns the queue this subscription reads.
func (s *Sub) Queue() *Queue { return s.q }

// Options returns the subscription's options.
func (s *Sub) Options() ConsumeOptions { return s.opts }

// Stats is a snapshot of a queue's state and counters.
type Stats struct {
	Ready, Unacked int
	ReadyBytes     int64
	Consumers      int
	Published      uint64
	Delivered      uint64
	Acked          uint64
	Redelivered    uint64
	DeadLettered   uint64
	Dropped        uint64
}

// Queue is one queue's runtime.
type Queue struct {
	cfg   Config
	hooks Hooks
	store Store

	mu         sync.Mutex
	levels     []deque // ready messages, one deque per priority level
	nready     int
	readyBytes int64
	memBytes   int64 // bodies of ready entries held in memory
	unacked    map[uint64]*entry
	subs       []*Sub // sorted by priority, highest first; registration order within
	rr         uint64
	seq        uint64
	deleted    bool
	hadSub     bool
	stream     *streamState // non-nil: the queue is a stream
	remote     Remote       // non-nil: the messages are kept by a Remote
	ttlTimer   *time.Timer
	ttlAt      int64
	idleTimer  *time.Timer
	idleSince  time.Time

	published, delivered, acked, redelivered, deadLettered, dropped atomic.Uint64
}

// New creates a queue. store may be nil (transient queue).
func New(cfg Config, hooks Hooks, store Store) *Queue {
	if hooks.Now == nil {
		hooks.Now = time.Now
	}
	q := &Queue{
		cfg:     cfg,
		hooks:   hooks,
		store:   store,
		levels:  make([]deque, int(cfg.Args.MaxPriority)+1),
		unacked: make(map[uint64]*entry),
	}
	q.mu.Lock()
	q.touchLocked()
	q.mu.Unlock()
	return q
}

// Name returns the queue's name.
func (q *Queue) Name() string { return q.cfg.Name }

// Config returns the queue's configuration.
func (q *Queue) Config() Config { return q.cfg }

// Durable reports whether the queue survives a restart.
func (q *Queue) Durable() bool { return q.cfg.Durable }

// Stats returns a snapshot.
func (q *Queue) Stats() Stats {
	q.mu.Lock()
	s := Stats{Ready: q.nready, Unacked: len(q.unacked), ReadyBytes: q.readyBytes, Consumers: len(q.subs)}
	remote := q.remote
	q.mu.Unlock()
	if remote != nil {
		// A shared queue's ready messages are mostly outside this node.
		if n, ok := remote.Ready(false); ok {
			s.Ready += n
		}
	}
	if q.stream != nil {
		first, next := q.stream.log.Bounds()
		s.Ready = int(next - first)
		_, s.ReadyBytes = q.stream.log.Size()
	}
	s.Published = q.published.Load()
	s.Delivered = q.delivered.Load()
	s.Acked = q.acked.Load()
	s.Redelivered = q.redelivered.Load()
	s.DeadLettered = q.deadLettered.Load()
	s.Dropped = q.dropped.Load()
	return s
}

// Result of an Enqueue.
type Result uint8

// Enqueue results.
const (
	Accepted Result = iota
	Rejected        // overflow reject-publish / reject-publish-dlx: nack the publisher
	Gone            // the queue was deleted concurrently
)

// Enqueue adds m to the queue and delivers it at once if a consumer has
// credit. It returns the message's sequence number in this queue.
func (q *Queue) Enqueue(m *core.Message) (uint64, Result) {
	if q.stream != nil {
		q.Append(m, func(error) {})
		return 0, Accepted
	}
	var out effects
	q.mu.Lock()
	if q.deleted {
		q.mu.Unlock()
		return 0, Gone
	}
	now := q.hooks.Now()
	a := &q.cfg.Args
	if a.Overflow != DropHead && q.full(m.Size()) {
		if a.Overflow == RejectPublishDLX {
			// seq 0: never enqueued, so never persisted for this queue.
			q.deadLetterLocked(&out, &entry{msg: m, size: m.Size()}, "maxlen")
		}
		q.mu.Unlock()
		out.run(q)
		return 0, Rejected
	}
	q.seq++
	e := &entry{seq: q.seq, msg: m, pri: q.priorityOf(m), size: m.Size()}
	e.expireAt = q.expiryOf(m, now)
	q.published.Add(1)
	if q.mayPageLocked(e) {
		e.msg, e.paged = withoutBody(m), true
	}
	q.pushReadyLocked(e)
	if a.Overflow == DropHead {
		for q.nready > 0 && q.overLimit() {
			h := q.popHeadLocked()
			q.deadLetterLocked(&out, h, "maxlen")
		}
	}
	q.dispatchLocked(&out, now)
	seq := e.seq
	q.mu.Unlock()
	out.run(q)
	return seq, Accepted
}

// Restore puts recovered messages back, in seq order, after a restart. It
// must be called before any Enqueue.
func (q *Queue) Restore(seq uint64, m *core.Message, redelivered bool) {
	q.restore(seq, m, redelivered, m.Size(), false)
}

// RestorePaged is Restore for a message recovered without its body (size
// bytes long): the body is loaded from the store when it is delivered.
func (q *Queue) RestorePaged(seq uint64, m *core.Message, redelivered bool, size int) {
	q.restore(seq, m, redelivered, size, true)
}

func (q *Queue) restore(seq uint64, m *core.Message, redelivered bool, size int, paged bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	e := &entry{seq: seq, msg: m, pri: q.priorityOf(m), redelivered: redelivered, size: size, paged: paged}
	e.expireAt = q.expiryOf(m, m.Arrived)
	if !paged && q.mayPageLocked(e) {
		e.msg, e.paged = withoutBody(m), true
	}
	q.pushReadyLocked(e)
	if seq > q.seq {
		q.seq = seq
	}
}

// mayPageLocked reports whether a new ready entry should leave its body
// to the store: a persistent message of a durable queue over its memory
// budget.
func (q *Queue) mayPageLocked(e *entry) bool {
	return q.cfg.MemoryBytes > 0 && q.store != nil && q.cfg.Durable && e.msg.Persistent() &&
		q.memBytes+int64(e.size) > q.cfg.MemoryBytes
}

// withoutBody returns a copy of m that shares everything but the body.
func withoutBody(m *core.Message) *core.Message {
	c := *m
	c.Body = nil
	return &c
}

// materializeLocked loads a paged entry's body before it leaves the ready
// set. It reports false when the store cannot give it back: the entry is
// then dropped (logged), since nothing can be delivered for it.
func (q *Queue) materializeLocked(e *entry) bool {
	if !e.paged {
		return true
	}
	m, err := q.store.Load(q.cfg.VHost, q.cfg.Name, e.seq)
	if err != nil {
		q.logger().Error("cannot read a queued message back from storage; dropping it",
			"vhost", q.cfg.VHost, "queue", q.cfg.Name, "seq", e.seq, "err", err)
		return false
	}
	e.msg, e.paged = m, false
	return true
}

func (q *Queue) logger() *slog.Logger {
	if q.cfg.Logger != nil {
		return q.cfg.Logger
	}
	return slog.Default()
}

func (q *Queue) full(size int) bool {
	a := &q.cfg.Args
	return (a.MaxLength >= 0 && int64(q.nready) >= a.MaxLength) ||
		(a.MaxLengthBytes >= 0 && q.readyBytes+int64(size) > a.MaxLengthBytes)
}

func (q *Queue) overLimit() bool {
	a := &q.cfg.Args
	return (a.MaxLength >= 0 && int64(q.nready) > a.MaxLength) ||
		(a.MaxLengthBytes >= 0 && q.readyBytes > a.MaxLengthBytes)
}

func (q *Queue) priorityOf(m *core.Message) uint8 {
	p := m.Props.Priority
	if p > q.cfg.Args.MaxPriority {
		p = q.cfg.Args.MaxPriority
	}
	return p
}

func (q *Queue) expiryOf(m *core.Message, now time.Time) int64 {
	ttl, ok, _ := m.ExpirationTTL()
	if q.cfg.Args.HasMessageTTL && (!ok || q.cfg.Args.MessageTTL < ttl) {
		ttl, ok = q.cfg.Args.MessageTTL, true
	}
	if !ok {
		return 0
	}
	return now.Add(ttl).UnixNano()
}

func (q *Queue) pushReadyLocked(e *entry) {
	q.levels[e.pri].pushBack(e)
	q.nready++
	q.readyBytes += int64(e.size)
	if !e.paged {
		q.memBytes += int64(e.size)
	}
}

func (q *Queue) requeueLocked(e *entry) {
	e.redelivered = true
	e.sub = nil
	q.levels[e.pri].insert(e)
	q.nready++
	q.readyBytes += int64(e.size)
	if !e.paged {
		q.memBytes += int64(e.size)
	}
}

// headLevel returns the highest non-empty priority level, or -1.
func (q *Queue) headLevel() int {
	for i := len(q.levels) - 1; i >= 0; i-- {
		if q.levels[i].len() > 0 {
			return i
		}
	}
	return -1
}

func (q *Queue) popHeadLocked() *entry {
	l := q.headLevel()
	if l < 0 {
		return nil
	}
	return q.takeLocked(&q.levels[l])
}

func (q *Queue) takeLocked(d *deque) *entry {
	e := d.popFront()
	q.nready--
	q.readyBytes -= int64(e.size)
	if !e.paged {
		q.memBytes -= int64(e.size)
	}
	return e
}

// expireLocked drops expired messages at the head of each priority level (as
// RabbitMQ, expiry is enforced when a message reaches the head) and arms the
// timer for the next head expiry.
func (q *Queue) expireLocked(out *effects, now time.Time) {
	n := now.UnixNano()
	next := int64(0)
	for i := range q.levels {
		d := &q.levels[i]
		for d.len() > 0 {
			h := d.front()
			if h.expireAt == 0 {
				break
			}
			if h.expireAt > n {
				if next == 0 || h.expireAt < next {
					next = h.expireAt
				}
				break
			}
			q.takeLocked(d)
			q.deadLetterLocked(out, h, "expired")
		}
	}
	q.armTTLLocked(next, now)
}

func (q *Queue) armTTLLocked(at int64, now time.Time) {
	if at == 0 || q.deleted || (q.ttlTimer != nil && q.ttlAt == at) {
		return
	}
	if q.ttlTimer != nil {
		q.ttlTimer.Stop()
	}
	q.ttlAt = at
	q.ttlTimer = time.AfterFunc(time.Duration(at-now.UnixNano()), q.onTTL)
}

func (q *Queue) onTTL() {
	var out effects
	q.mu.Lock()
	q.ttlTimer, q.ttlAt = nil, 0
	if !q.deleted {
		q.dispatchLocked(&out, q.hooks.Now())
	}
	q.mu.Unlock()
	out.run(q)
}

// dispatchLocked hands ready messages to consumers with credit, then expires
// what remains at the head.
func (q *Queue) dispatchLocked(out *effects, now time.Time) {
	nowNs := now.UnixNano()
	for len(q.subs) > 0 {
		l := q.headLevel()
		if l < 0 {
			break
		}
		d := &q.levels[l]
		h := d.front()
		if h.expireAt != 0 && h.expireAt < nowNs {
			q.takeLocked(d)
			q.deadLetterLocked(out, h, "expired")
			continue
		}
		s := q.pickLocked(h.size)
		if s == nil {
			break
		}
		q.takeLocked(d)
		if !q.materializeLocked(h) {
			q.settleLocked(out, h)
			q.dropped.Add(1)
			continue
		}
		h.count++
		if h.count == 1 {
			q.deliveredLocked(h)
		}
		dv := Delivery{Queue: q, Sub: s, Msg: h.msg, ID: h.seq, Redelivered: h.redelivered, Count: h.count}
		if !s.opts.NoAck {
			// Record before Deliver: an ack may race in from another goroutine
			// as soon as the consumer has the delivery.
			h.sub = s
			q.unacked[h.seq] = h
			s.unacked++
			s.ubytes += h.size
		}
		if !s.c.Deliver(dv) {
			s.blocked = true
			h.count--
			if !s.opts.NoAck {
				delete(q.unacked, h.seq)
				s.unacked--
				s.ubytes -= h.size
				h.sub = nil
			}
			d.pushFront(h)
			q.nready++
			q.readyBytes += int64(h.size)
			q.memBytes += int64(h.size)
			continue
		}
		q.delivered.Add(1)
		if h.redelivered {
			q.redelivered.Add(1)
		}
		if s.opts.NoAck {
			q.settleLocked(out, h)
		}
	}
	q.expireLocked(out, now)
}

// pickLocked chooses the next consumer: the highest priority group that has
// a consumer with credit, round-robin within the group. With single active
// consumer only the first registered consumer is eligible.
func (q *Queue) pickLocked(size int) *Sub {
	cands := q.subs
	if q.cfg.Args.SingleActive {
		cands = q.subs[:1]
	}
	for start := 0; start < len(cands); {
		end := start + 1
		for end < len(cands) && cands[end].opts.Priority == cands[start].opts.Priority {
			end++
		}
		group := cands[start:end]
		n := len(group)
		for i := 0; i < n; i++ {
			s := group[int((q.rr+uint64(i))%uint64(n))]
			if s.hasCredit(size) {
				q.rr++
				return s
			}
		}
		start = end
	}
	return nil
}

func (s *Sub) hasCredit(size int) bool {
	if s.blocked || s.canceled {
		return false
	}
	if s.opts.NoAck {
		return true
	}
	if s.opts.Prefetch > 0 && s.unacked >= s.opts.Prefetch {
		return false
	}
	// As RabbitMQ: prefetch-size lets a message through when nothing is
	// outstanding, so one large message cannot stall the consumer forever.
	if s.opts.PrefetchBytes > 0 && s.unacked > 0 && s.ubytes+size > s.opts.PrefetchBytes {
		return false
	}
	return true
}

// deliveredLocked records e's first delivery with the store.
func (q *Queue) deliveredLocked(e *entry) {
	if e.seq != 0 && !e.redelivered && q.store != nil && q.cfg.Durable && e.msg.Persistent() {
		q.store.Delivered(q.cfg.VHost, q.cfg.Name, e.seq)
	}
}

// settleLocked records that e left the queue for good (a remote queue
// acknowledges it to its Remote once the lock is released).
func (q *Queue) settleLocked(out *effects, e *entry) {
	if e.h != nil {
		out.acks = append(out.acks, e.h)
		e.h = nil
		return
	}
	if e.seq != 0 && q.store != nil && q.cfg.Durable && e.msg.Persistent() {
		q.store.Settle(q.cfg.VHost, q.cfg.Name, []uint64{e.seq})
	}
}

func (q *Queue) deadLetterLocked(out *effects, e *entry, reason string) {
	a := &q.cfg.Args
	if !a.HasDLX || !q.materializeLocked(e) {
		if e.h != nil {
			out.terms = append(out.terms, e.h)
			e.h = nil
		}
		q.settleLocked(out, e)
		q.dropped.Add(1)
		return
	}
	h := e.h
	e.h = nil // a remote message is terminated once its dead letter is safe
	q.settleLocked(out, e)
	q.deadLettered.Add(1)
	m := deadLettered(e.msg, q.cfg.Name, reason, a, q.hooks.Now())
	out.dl = append(out.dl, dlMsg{a.DLX, m, h})
}

// Consume subscribes c to the queue.
func (q *Queue) Consume(c Consumer, o ConsumeOptions) (*Sub, error) {
	if q.stream != nil {
		return q.consumeStream(c, o)
	}
	var out effects
	q.mu.Lock()
	if q.deleted {
		q.mu.Unlock()
		return nil, core.Errorf(core.NotFound, "no queue '%s' in vhost '%s'", q.cfg.Name, q.cfg.VHost)
	}
	for _, s := range q.subs {
		if s.opts.Exclusive || o.Exclusive {
			q.mu.Unlock()
			return nil, core.Errorf(core.AccessRefused, "queue '%s' in vhost '%s' in exclusive use", q.cfg.Name, q.cfg.VHost)
		}
	}
	s := &Sub{q: q, c: c, opts: o}
	i := len(q.subs)
	for i > 0 && q.subs[i-1].opts.Priority < o.Priority {
		i--
	}
	q.subs = append(q.subs, nil)
	copy(q.subs[i+1:], q.subs[i:])
	q.subs[i] = s
	q.hadSub = true
	q.stopIdleLocked()
	q.dispatchLocked(&out, q.hooks.Now())
	q.mu.Unlock()
	out.run(q)
	return s, nil
}

// Cancel ends the subscription. Its unacknowledged deliveries stay
// unacknowledged (the channel may still ack them); the adapter requeues them
// with Reject when its channel closes.
func (s *Sub) Cancel() {
	q := s.q
	var out effects
	q.mu.Lock()
	if s.canceled {
		q.mu.Unlock()
		return
	}
	s.canceled = true
	for i, x := range q.subs {
		if x == s {
			q.subs = append(q.subs[:i], q.subs[i+1:]...)
			break
		}
	}
	if s.st != nil {
		close(s.st.stop)
		q.mu.Unlock()
		return
	}
	if len(q.subs) == 0 && !q.deleted {
		if q.cfg.AutoDelete && q.hadSub {
			out.unused = "auto-delete"
		}
		q.returnReadyLocked(&out)
		q.touchLocked()
	} else {
		q.dispatchLocked(&out, q.hooks.Now())
	}
	q.mu.Unlock()
	out.run(q)
}

// Kick clears the consumer's blocked flag (after a refused Deliver) and
// resumes deliveries to it.
func (s *Sub) Kick() {
	q := s.q
	var out effects
	q.mu.Lock()
	if s.blocked && !s.canceled && !q.deleted {
		s.blocked = false
		if s.st != nil {
			s.wakeStream()
		} else {
			q.dispatchLocked(&out, q.hooks.Now())
		}
	}
	q.mu.Unlock()
	out.run(q)
}

// SetPrefetch changes the consumer's prefetch (basic.qos after consume).
func (s *Sub) SetPrefetch(count, bytes int) {
	q := s.q
	var out effects
	q.mu.Lock()
	s.opts.Prefetch, s.opts.PrefetchBytes = count, bytes
	if s.st != nil {
		s.wakeStream()
	} else if !q.deleted {
		q.dispatchLocked(&out, q.hooks.Now())
	}
	q.mu.Unlock()
	out.run(q)
}

// Get takes one message without a subscription (basic.get). ok is false
// when the queue is empty. remaining is the ready count after the take.
func (q *Queue) Get(noAck bool) (d Delivery, remaining int, ok bool) {
	if q.stream != nil {
		return d, 0, false // a stream is read by subscription; adapters refuse get
	}
	var out effects
	q.pullForGet()
	q.mu.Lock()
	now := q.hooks.Now()
	q.expireLocked(&out, now)
	q.touchLocked()
	e := q.popHeadLocked()
	for e != nil && !q.materializeLocked(e) {
		q.settleLocked(&out, e)
		q.dropped.Add(1)
		e = q.popHeadLocked()
	}
	if e != nil {
		e.count++
		if e.count == 1 {
			q.deliveredLocked(e)
		}
		d = Delivery{Queue: q, Msg: e.msg, ID: e.seq, Redelivered: e.redelivered, Count: e.count}
		q.delivered.Add(1)
		if e.redelivered {
			q.redelivered.Add(1)
		}
		if noAck {
			q.settleLocked(&out, e)
		} else {
			q.unacked[e.seq] = e
		}
		ok = true
	}
	remaining = q.nready
	q.mu.Unlock()
	out.run(q)
	return d, remaining, ok
}

// Ack settles delivery id. It reports false for an unknown id.
func (q *Queue) Ack(id uint64) bool {
	var out effects
	q.mu.Lock()
	e, ok := q.unacked[id]
	if ok && q.stream != nil {
		q.streamSettleLocked(e)
	} else if ok {
		q.releaseLocked(e)
		q.acked.Add(1)
		q.settleLocked(&out, e)
		q.dispatchLocked(&out, q.hooks.Now())
	}
	q.mu.Unlock()
	out.run(q)
	return ok
}

// Reject settles delivery id negatively: with requeue the message goes back
// to its original position flagged redelivered; without, it is dead-lettered
// (reason "rejected") or dropped.
func (q *Queue) Reject(id uint64, requeue bool) bool {
	var out effects
	q.mu.Lock()
	e, ok := q.unacked[id]
	if ok && q.stream != nil {
		q.streamSettleLocked(e) // records stay in a stream: nothing to requeue or dead-letter
	} else if ok {
		q.releaseLocked(e)
		switch {
		case requeue && e.h != nil:
			// A remote message goes back to the shared queue, to be
			// redelivered here or on another node.
			out.naks = append(out.naks, e.h)
			e.h = nil
		case requeue && !q.deleted:
			q.requeueLocked(e)
		default:
			q.deadLetterLocked(&out, e, "rejected")
		}
		q.dispatchLocked(&out, q.hooks.Now())
	}
	q.mu.Unlock()
	out.run(q)
	return ok
}

func (q *Queue) releaseLocked(e *entry) {
	delete(q.unacked, e.seq)
	if s := e.sub; s != nil {
		s.unacked--
		s.ubytes -= e.size
		e.sub = nil
	}
}

// Purge removes every ready message and returns how many it removed.
func (q *Queue) Purge() int {
	if q.stream != nil {
		return 0 // retention, not consumers, removes a stream's records
	}
	var out effects
	q.mu.Lock()
	n := q.nready
	for i := range q.levels {
		for _, e := range q.levels[i].clear() {
			if e.h != nil {
				out.terms = append(out.terms, e.h)
				e.h = nil
			}
			q.settleLocked(&out, e)
		}
	}
	q.nready, q.readyBytes = 0, 0
	q.mu.Unlock()
	out.run(q)
	return n
}

// Delete marks the queue deleted, cancels its consumers (Cancelled is called
// on each) and drops its messages. It returns the ready count it had.
func (q *Queue) Delete(reason error) int {
	q.mu.Lock()
	if q.deleted {
		q.mu.Unlock()
		return 0
	}
	q.deleted = true
	n := q.nready
	subs := q.subs
	q.subs = nil
	for _, s := range subs {
		s.canceled = true
		if s.st != nil {
			close(s.st.stop)
		}
	}
	// No settle records: the router has told the store the queue is gone
	// (MessageStore.QueueDeleted), and settles written after that marker
	// could match entries of a new queue of the same name.
	var out effects
	q.returnReadyLocked(&out)
	for _, e := range q.unacked {
		if e.h != nil {
			out.naks = append(out.naks, e.h)
		}
	}
	for i := range q.levels {
		q.levels[i].clear()
	}
	q.nready, q.readyBytes = 0, 0
	q.unacked = map[uint64]*entry{}
	if q.ttlTimer != nil {
		q.ttlTimer.Stop()
	}
	q.stopIdleLocked()
	q.mu.Unlock()
	if q.remote != nil {
		for _, h := range out.naks {
			q.remote.Nak(h)
		}
		q.remote.Closed()
	}
	for _, s := range subs {
		s.c.Cancelled(q, reason)
	}
	return n
}

// Deleted reports whether the queue was deleted.
func (q *Queue) Deleted() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.deleted
}

// Touch records a use of the queue (redeclare) for x-expires.
func (q *Queue) Touch() {
	q.mu.Lock()
	q.touchLocked()
	q.mu.Unlock()
}

// touchLocked restarts the x-expires idle timer when the queue has no
// consumers.
func (q *Queue) touchLocked() {
	if q.cfg.Args.Expires <= 0 || q.deleted || len(q.subs) > 0 {
		return
	}
	q.stopIdleLocked()
	q.idleSince = q.hooks.Now()
	q.idleTimer = time.AfterFunc(q.cfg.Args.Expires, q.onIdle)
}

func (q *Queue) stopIdleLocked() {
	if q.idleTimer != nil {
		q.idleTimer.Stop()
		q.idleTimer = nil
	}
}

func (q *Queue) onIdle() {
	q.mu.Lock()
	fire := !q.deleted && len(q.subs) == 0 && q.idleTimer != nil &&
		q.hooks.Now().Sub(q.idleSince) >= q.cfg.Args.Expires-time.Millisecond
	q.mu.Unlock()
	if fire && q.hooks.Unused != nil {
		q.hooks.Unused(q, "expired")
	}
}

// Subscriptions returns the options of every subscription (for listings).
func (q *Queue) Subscriptions() []ConsumeOptions {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := make([]ConsumeOptions, len(q.subs))
	for i, s := range q.subs {
		out[i] = s.opts
	}
	return out
}

// Consumers returns the number of subscriptions.
func (q *Queue) Consumers() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.subs)
}

// effects collects what must happen after the lock is released.
type effects struct {
	dl     []dlMsg
	unused string
	// Handles of a remote queue's messages, to settle with its Remote.
	acks, naks, terms []any
}

type dlMsg struct {
	dlx string
	m   *core.Message
	h   any // a remote message, terminated once the dead letter is safe
}

func (e *effects) run(q *Queue) {
	for _, d := range e.dl {
		q.runDeadLetter(d)
	}
	if r := q.remote; r != nil {
		for _, h := range e.acks {
			r.Ack(h)
		}
		for _, h := range e.naks {
			r.Nak(h)
		}
		for _, h := range e.terms {
			r.Term(h)
		}
		r.Wake()
	}
	if e.unused != "" && q.hooks.Unused != nil {
		q.hooks.Unused(q, e.unused)
	}
}
