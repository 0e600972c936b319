package stomp

import (
	"sync"
	"time"

	"github.com/go-stomp/stomp/v3/frame"

	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/protocols/stomp/wire"
)

// msgOverhead is what a MESSAGE frame's headers are counted as in the
// outbound byte bound, on top of its body.
const msgOverhead = 512

type itemKind uint8

const (
	itemFrame   itemKind = iota // a frame built by the reader (CONNECTED, RECEIPT, ERROR)
	itemMessage                 // a delivery, encoded by the writer
)

// outItem is one frame waiting in a connection's outbound queue. Deliveries
// are queued as a reference to the shared message and encoded by the
// writer goroutine, so Deliver (called under a queue's lock) stays cheap.
type outItem struct {
	kind      itemKind
	f         *frame.Frame
	close     bool           // close the connection once this is written
	connected *connectedInfo // on CONNECTED: the writer adopts these settings

	sub         *subscription
	msg         *core.Message
	n           uint64 // delivery number, unique in the connection
	redelivered bool
	size        int
}

type connectedInfo struct {
	v           wire.Version
	sendEvery   time.Duration // heart-beat interval towards the client (0: none)
	recvTimeout time.Duration // drop the client after this much silence (0: never)
}

// outbound is a connection's queue of frames to write, bounded in bytes.
//
// Deliveries (offer) are refused when the queue holds more than max bytes;
// the refused subscription is remembered and kicked once the writer has
// drained the queue to max/2. Frames the connection itself produces (push)
// are always accepted; instead the reader stops reading the socket while
// the queue is over max (waitSpace), which bounds them too.
type outbound struct {
	mu        sync.Mutex
	space     sync.Cond // signalled when bytes drop to max/2 or the queue closes
	items     []outItem
	bytes     int
	max       int
	finishing bool // the reader is done: write what is queued, then stop
	closed    bool // the writer is gone: accept nothing
	blocked   []*subscription
	wake      chan struct{}
}

func (o *outbound) init(max int) {
	o.max = max
	o.space.L = &o.mu
	o.wake = make(chan struct{}, 1)
}

func (o *outbound) signal() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// push queues a frame produced by the connection. It reports false when
// the connection is closing.
func (o *outbound) push(it outItem) bool {
	o.mu.Lock()
	if o.closed || o.finishing {
		o.mu.Unlock()
		return false
	}
	o.items = append(o.items, it)
	o.bytes += it.size
	o.mu.Unlock()
	o.signal()
	return true
}

// offer queues a delivery unless the queue is full. Called under the
// delivering queue's lock: it must not block.
func (o *outbound) offer(it outItem, s *subscription) bool {
	o.mu.Lock()
	if o.closed || o.finishing {
		o.mu.Unlock()
		return false
	}
	// A queue with nothing in it takes any one message, however large, so
	// that a message larger than max cannot stall its subscription.
	if o.bytes > 0 && o.bytes+it.size > o.max {
		if !s.blocked {
			s.blocked = true
			o.blocked = append(o.blocked, s)
		}
		o.mu.Unlock()
		return false
	}
	o.items = append(o.items, it)
	o.bytes += it.size
	o.mu.Unlock()
	o.signal()
	return true
}

// finish queues a last frame (if any) and tells the writer to stop once
// everything queued is written.
func (o *outbound) finish(last *outItem) {
	o.mu.Lock()
	if !o.closed && !o.finishing {
		if last != nil {
			o.items = append(o.items, *last)
			o.bytes += last.size
		}
		o.finishing = true
	}
	o.mu.Unlock()
	o.signal()
}

// take hands the queued items to the writer, reusing spare's storage.
func (o *outbound) take(spare []outItem) (items []outItem, finishing bool) {
	o.mu.Lock()
	items = o.items
	o.items = spare[:0]
	finishing = o.finishing
	o.mu.Unlock()
	return items, finishing
}

// release accounts for n written bytes and returns the subscriptions to
// kick if the queue has drained to its low-water mark.
func (o *outbound) release(n int) []*subscription {
	o.mu.Lock()
	o.bytes -= n
	var kick []*subscription
	if o.bytes <= o.max/2 {
		kick = o.blocked
		o.blocked = nil
		for _, s := range kick {
			s.blocked = false
		}
		o.space.Broadcast()
	}
	o.mu.Unlock()
	return kick
}

// waitSpace blocks the reader while the queue is over its bound.
func (o *outbound) waitSpace() {
	o.mu.Lock()
	for o.bytes > o.max && !o.closed && !o.finishing {
		o.space.Wait()
	}
	o.mu.Unlock()
}

// shut is called by the writer when it exits.
func (o *outbound) shut() {
	o.mu.Lock()
	o.closed = true
	o.items = nil
	o.blocked = nil
	o.space.Broadcast()
	o.mu.Unlock()
}

// writeLoop is the connection's writer goroutine: it encodes and writes
// queued frames, batching them through the transport's buffer and flushing
// when the queue is empty, sends heart-beats and enforces the connect and
// heart-beat timeouts. It closes the transport when it exits.
func (c *conn) writeLoop() {
	defer close(c.writerDone)
	defer c.t.Close()
	defer c.out.shut()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var items []outItem
	dirty := false
	for {
		var finishing bool
		items, finishing = c.out.take(items)
		if len(items) > 0 {
			c.t.setWriteDeadline(time.Now().Add(c.s.opts.WriteTimeout))
			written := 0
			for i := range items {
				it := &items[i]
				if err := c.writeItem(it); err != nil {
					c.log.Debug("stomp write failed", "err", err)
					return
				}
				written += it.size
				if it.close {
					if err := c.t.flush(); err != nil {
						c.log.Debug("stomp flush failed", "err", err)
					}
					return
				}
				items[i] = outItem{}
			}
			dirty = true
			for _, s := range c.out.release(written) {
				s.kick()
			}
			continue
		}
		if dirty {
			c.t.setWriteDeadline(time.Now().Add(c.s.opts.WriteTimeout))
			if err := c.t.flush(); err != nil {
				c.log.Debug("stomp flush failed", "err", err)
				return
			}
			c.lastWrite = time.Now()
			dirty = false
		}
		if finishing {
			return
		}
		timer.Reset(c.nextTimer(time.Now()))
		select {
		case <-c.out.wake:
		case <-timer.C:
			if !c.onTimer(time.Now()) {
				return
			}
		}
	}
}

func (c *conn) writeItem(it *outItem) error {
	switch it.kind {
	case itemMessage:
		c.head = c.appendMessageHead(c.head[:0], it)
		return c.t.writeFrame(c.head, it.msg.Body)
	default:
		c.head = wire.AppendHead(c.head[:0], c.wv, it.f)
		if err := c.t.writeFrame(c.head, it.f.Body); err != nil {
			return err
		}
		if ci := it.connected; ci != nil {
			c.wv, c.sendEvery, c.recvTimeout = ci.v, ci.sendEvery, ci.recvTimeout
			c.connected = true
		}
		return nil
	}
}

// nextTimer is how long the writer may sleep before a heart-beat is due or
// a timeout must be checked.
func (c *conn) nextTimer(now time.Time) time.Duration {
	if !c.connected {
		return max(c.start.Add(c.s.opts.ConnectTimeout).Sub(now), time.Millisecond)
	}
	d := time.Hour
	if c.sendEvery > 0 {
		d = min(d, c.lastWrite.Add(c.sendEvery).Sub(now))
	}
	if c.recvTimeout > 0 {
		last := time.Unix(0, c.lastRead.Load())
		d = min(d, last.Add(c.recvTimeout).Sub(now))
	}
	return max(d, time.Millisecond)
}

// onTimer sends a due heart-beat or enforces a timeout. It reports false
// when the connection must end.
func (c *conn) onTimer(now time.Time) bool {
	if !c.connected {
		if now.Sub(c.start) >= c.s.opts.ConnectTimeout {
			c.log.Debug("stomp client did not CONNECT in time")
			return false
		}
		return true
	}
	if c.recvTimeout > 0 && now.Sub(time.Unix(0, c.lastRead.Load())) >= c.recvTimeout {
		c.log.Info("stomp client missed its heart-beats; closing", "timeout", c.recvTimeout)
		c.t.setWriteDeadline(now.Add(c.s.opts.WriteTimeout))
		it := errorItem(protoErr("Heart-beat timeout", "No frame or heart-beat from the client for %v", c.recvTimeout), "")
		if c.writeItem(&it) == nil {
			_ = c.t.flush()
		}
		return false
	}
	if c.sendEvery > 0 && now.Sub(c.lastWrite) >= c.sendEvery {
		c.t.setWriteDeadline(now.Add(c.s.opts.WriteTimeout))
		if err := c.t.heartbeat(); err != nil {
			return false
		}
		c.lastWrite = now
	}
	return true
}
