package amqp

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/protocols/amqp/wire"
	"github.com/bourse-mq/bourse/router/queue"
)

// itemKind says how the writer encodes an outItem.
type itemKind uint8

const (
	itemMethod  itemKind = iota // a method without content, in outItem.method
	itemDeliver                 // basic.deliver + content
	itemGetOk                   // basic.get-ok + content
	itemReturn                  // basic.return + content
	itemAck                     // publisher confirm: basic.ack
	itemNack                    // publisher confirm: basic.nack
)

// outItem is one queued outbound frame sequence. It is stored by value in
// the queue, so queueing allocates nothing; the writer encodes it with
// method structs of its own (see frameWriter).
type outItem struct {
	kind        itemKind
	redelivered bool
	multiple    bool
	ch          uint16
	replyCode   uint16
	count       uint32 // get-ok message-count
	size        int    // bytes accounted against the outbound bound
	tag         uint64 // delivery tag or confirm sequence number
	method      wire.Method
	msg         *core.Message
	ctag        string // consumer tag
	text        string // basic.return reply-text
}

// control reports whether the item answers client input (and so is bounded
// by pausing the reader) rather than being a delivery (bounded by refusing
// Deliver).
func (it *outItem) control() bool { return it.kind != itemDeliver }

// Accounted sizes: what an item costs beyond its body, roughly its frames.
const (
	methodCost  = 64
	contentCost = 256
)

// outbound is a connection's queue of frames waiting for the writer,
// bounded in bytes. Deliveries are refused above the bound (the queue then
// skips the consumer until Sub.Kick, which the writer calls once it has
// drained below half the bound); control frames are always queued, and the
// reader stops reading while they exceed the bound. outbound.mu is a leaf
// lock: nothing is called while it is held.
type outbound struct {
	mu      sync.Mutex
	items   []outItem
	spare   []outItem    // the writer's previous batch, reused
	bytes   int          // queued plus being written
	ctl     int          // control share of bytes
	ctlSeen atomic.Int64 // ctl, readable without the lock
	limit   int
	closed  bool // no more items: the writer drains and exits
	dead    bool // the socket failed: items are dropped
	kicks   []*queue.Sub
	waiters int
	space   sync.Cond
	wake    chan struct{}

	frameMax  uint32
	heartbeat time.Duration
}

func newOutbound(limit int) *outbound {
	o := &outbound{limit: limit, wake: make(chan struct{}, 1)}
	o.space.L = &o.mu
	return o
}

func (o *outbound) signalLocked(wasEmpty bool) {
	if wasEmpty {
		select {
		case o.wake <- struct{}{}:
		default:
		}
	}
}

// push queues a control item. It is dropped when the connection is gone.
func (o *outbound) push(it outItem) {
	o.mu.Lock()
	if o.closed || o.dead {
		o.mu.Unlock()
		return
	}
	empty := len(o.items) == 0
	o.items = append(o.items, it)
	o.bytes += it.size
	o.ctl += it.size
	o.ctlSeen.Store(int64(o.ctl))
	o.signalLocked(empty)
	o.mu.Unlock()
}

// pushMethod queues a method without content on channel ch.
func (o *outbound) pushMethod(ch uint16, m wire.Method) {
	o.push(outItem{kind: itemMethod, ch: ch, method: m, size: methodCost})
}

// pushDelivery queues a delivery unless the queue is over its bound, in
// which case sub (if not nil) is kicked once the writer has drained.
func (o *outbound) pushDelivery(it outItem, sub *queue.Sub) bool {
	o.mu.Lock()
	if o.closed || o.dead {
		o.mu.Unlock()
		return false
	}
	// Once a subscription waits for a kick, the others wait too, so that
	// busy queues cannot keep the buffer above the low-water mark and
	// starve it. Direct replies (no subscription) are refused only when
	// the buffer is full.
	if o.bytes >= o.limit || (sub != nil && len(o.kicks) > 0) {
		if sub != nil {
			o.kicks = append(o.kicks, sub)
		}
		o.mu.Unlock()
		return false
	}
	empty := len(o.items) == 0
	o.items = append(o.items, it)
	o.bytes += it.size
	o.signalLocked(empty)
	o.mu.Unlock()
	return true
}

// pushConfirm queues a publisher confirm for sequence number tag. Confirms
// are pushed in sequence order per channel, so when the last queued item is
// a confirm of the same kind for the same channel and the previous number,
// it is widened into a multiple confirm instead of queueing another.
func (o *outbound) pushConfirm(ch uint16, tag uint64, nack bool) {
	kind := itemAck
	if nack {
		kind = itemNack
	}
	o.mu.Lock()
	if o.closed || o.dead {
		o.mu.Unlock()
		return
	}
	if n := len(o.items); n > 0 {
		last := &o.items[n-1]
		if last.kind == kind && last.ch == ch && last.tag+1 == tag {
			last.tag = tag
			last.multiple = true
			o.mu.Unlock()
			return
		}
	}
	empty := len(o.items) == 0
	o.items = append(o.items, outItem{kind: kind, ch: ch, tag: tag, size: methodCost})
	o.bytes += methodCost
	o.ctl += methodCost
	o.ctlSeen.Store(int64(o.ctl))
	o.signalLocked(empty)
	o.mu.Unlock()
}

// waitCtlSpace blocks the reader while control frames exceed the bound.
// It returns false when the connection is going away.
func (o *outbound) waitCtlSpace() bool {
	if o.ctlSeen.Load() <= int64(o.limit) {
		return true // fast path; a closed queue shows up as a read error
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	for o.ctl > o.limit && !o.closed && !o.dead {
		o.waiters++
		o.space.Wait()
		o.waiters--
	}
	return !o.closed && !o.dead
}

// setTuning records the negotiated frame-max and heartbeat for the writer.
func (o *outbound) setTuning(frameMax uint32, heartbeat time.Duration) {
	o.mu.Lock()
	o.frameMax, o.heartbeat = frameMax, heartbeat
	o.signalLocked(true)
	o.mu.Unlock()
}

// close makes the writer exit once it has written what is queued.
func (o *outbound) close() {
	o.mu.Lock()
	o.closed = true
	o.signalLocked(true)
	o.space.Broadcast()
	o.mu.Unlock()
}

// abort drops what is queued: the socket is unusable.
func (o *outbound) abort() {
	o.mu.Lock()
	o.dead = true
	o.kicks = nil
	o.space.Broadcast()
	o.mu.Unlock()
}
