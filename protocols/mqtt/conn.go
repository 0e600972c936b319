package mqtt

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/bourse-mq/bourse/auth"
	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/router"
	"github.com/bourse-mq/bourse/router/queue"
)

// conn is one client connection: the socket, the writer goroutine that owns
// its write side, the byte-bounded outbound queue of deliveries, and the
// MQTT facts learnt at CONNECT. mochi reads and decodes packets in the
// connection's reader goroutine (Server.serveConn) and calls the bridge hook
// there; everything mochi writes goes into wbuf through pipe.Write, and only
// the writer goroutine touches the socket's write side.
type conn struct {
	s   *Server
	id  core.ConnID
	raw net.Conn
	// readStop is closed when reading ends (closeRead): it releases a
	// reader parked by flow control.
	readStop   chan struct{}
	closed     chan struct{} // closed once the connection is served to the end
	transport  string        // tcp, tls, websocket
	unregister func()        // from the broker's connection registry (reader goroutine)

	// Facts of the CONNECT, written by the reader goroutine before the
	// session exists (and so before any other goroutine reads them).
	cl       atomic.Pointer[mochi.Client]
	v5       bool
	clientID string // as the client knows it (assigned if it sent none)
	vhost    *router.VHost
	user     string
	// principal is the logged-in user (nil until CONNECT succeeded); its
	// connection slot is released when the connection ends.
	principal  *auth.Principal
	authReason string
	will       *inbound
	willWait   time.Duration
	authFail   authFailure
	sess       *session
	subReq     *subRequest // reader goroutine only: the SUBSCRIBE being handled
	gone       bool        // reader goroutine only: disconnected() has run
	// established is set once a successful CONNACK is written (reader
	// goroutine only).
	established bool
	killCode    atomic.Pointer[packets.Code] // why kill closed the connection
	// takenOver is set when another connection took the client id over
	// (attach/inherit): mochi's client list and index are the new one's.
	takenOver atomic.Bool
	// mochiWriter is set once mochi's writer goroutine runs ($SYS).
	mochiWriter atomic.Bool

	// Write side. wmu is a leaf lock: it is taken inside mochi's client lock
	// (WritePacket → pipe.Write).
	wmu     sync.Mutex
	wbuf    []byte // encoded packets waiting for the socket
	spare   []byte
	rclosed bool // the pipe is closed: reads fail, deadlines are ignored
	wdead   bool // a socket write failed: writes fail

	wcond    sync.Cond // on wmu: signalled when the writer exits
	writing  bool      // a writer goroutine is running
	pending  bool      // there may be something to write
	finished bool      // finish has begun: no new writer, final flush
	drain    bool      // read the socket dry before closing it (after an error DISCONNECT)

	sentDisconnect atomic.Bool

	// Read buffering (pipe.Read; reader goroutine only).
	rbuf  *[]byte // pooled, while receiving
	rpos  int     // next unread byte in rbuf
	rend  int     // end of the data in rbuf
	rpool bool    // the next read from the socket uses a pooled buffer

	// Delivery state. Lock order: session.mu → queue locks → c.mu →
	// mochi's client lock → wmu. Nothing calls into the router while
	// holding c.mu.
	mu          sync.Mutex
	ackCond     sync.Cond // signalled when acks have been written
	acks        fifo[*pendingAck]
	unwritten   int // acks owed and not yet written (mochi's receive quota not yet returned)
	out         fifo[outItem]
	outBytes    int
	inflight    map[uint16]inflightRef // outbound QoS 1/2 awaiting PUBACK/PUBREC
	qosPending  int                    // queued or in-flight QoS > 0 deliveries
	maxInflight int
	nextID      uint16       // the last delivery packet id (see allocID)
	blocked     []*queue.Sub // subscriptions refused by Deliver, to Kick
	closing     bool         // no more deliveries
	detached    bool         // the session left this connection
}

// outItem is one delivery waiting for the writer: a router delivery, or a
// retained message sent on subscribe.
type outItem struct {
	k    *consumer       // router delivery: its consumer
	d    queue.Delivery  //
	ret  *packets.Packet // retained message
	opts *subOpts        // retained message: the subscription's options
	qos  byte            // outgoing QoS
	size int
}

// inflightRef is what a PUBACK or PUBREC settles.
type inflightRef struct {
	q  *queue.Queue // nil for a retained message
	id uint64
}

// itemOverhead approximates the bytes of an outItem beyond body and topic.
const itemOverhead = 64

func newConn(s *Server, raw net.Conn, id core.ConnID) *conn {
	c := &conn{
		s:           s,
		id:          id,
		raw:         raw,
		inflight:    map[uint16]inflightRef{},
		maxInflight: s.opts.MaxInflight,
		readStop:    make(chan struct{}),
		closed:      make(chan struct{}),
	}
	c.ackCond.L = &c.mu
	c.wcond.L = &c.wmu
	return c
}

// client returns mochi's client for the connection (nil before CONNECT).
func (c *conn) client() *mochi.Client { return c.cl.Load() }

// origin is where messages published on this connection come from.
func (c *conn) origin() core.Origin {
	return core.Origin{Protocol: core.ProtoMQTT, Conn: c.id, VHost: c.vhost.Name(), User: c.user}
}

// signal wakes the writer. The writer goroutine exists only while there is
// something to write: an idle connection costs mochi's two goroutines and
// no more.
func (c *conn) signal() {
	c.wmu.Lock()
	c.pending = true
	start := !c.writing && !c.finished && !c.wdead
	if start {
		c.writing = true
	}
	c.wmu.Unlock()
	if start {
		go c.writeLoop()
	}
}

// pipe is the net.Conn mochi reads from and writes to. Reads go to the
// socket; writes append to the connection's buffer for the writer goroutine,
// so a mochi write never blocks on the network.
type pipe struct{ c *conn }

func connOf(cl *mochi.Client) *conn {
	if cl == nil {
		return nil
	}
	if p, ok := cl.Net.Conn.(*pipe); ok {
		return p.c
	}
	return nil
}

// Read is called by mochi's bufio.Reader, which is tiny (mochiReadBuffer),
// on the reader goroutine only. The buffering is here: a connection that is
// receiving reads up to readBufferSize bytes at a time into a pooled buffer,
// while one that waits for its next packet after a small one waits with no
// buffer at all, reading straight into mochi's. A read that fills mochi's
// buffer suggests more is coming, so the next read uses a pooled buffer;
// one of those that brings little suggests the client went quiet. Errors
// of net.Conn reads are sticky, so one that comes with data is returned by
// the next read.
func (p *pipe) Read(b []byte) (int, error) {
	c := p.c
	c.wmu.Lock()
	closed := c.rclosed
	c.wmu.Unlock()
	if closed {
		return 0, net.ErrClosed
	}
	if c.rpos < c.rend {
		n := copy(b, (*c.rbuf)[c.rpos:c.rend])
		c.rpos += n
		return n, nil
	}
	c.releaseReadBuffer()
	if !c.rpool || len(b) >= readBufferSize {
		n, err := c.raw.Read(b)
		c.rpool = n == len(b) && n > 0
		return n, err
	}
	c.rbuf = readBuffers.Get().(*[]byte)
	n, err := c.raw.Read(*c.rbuf)
	c.rpool = n >= 256
	if n <= 0 {
		c.releaseReadBuffer()
		return 0, err
	}
	c.rend = n
	c.rpos = copy(b, (*c.rbuf)[:n])
	return c.rpos, nil
}

// readBuffers are the read buffers of connections that are receiving.
var readBuffers = sync.Pool{New: func() any {
	b := make([]byte, readBufferSize)
	return &b
}}

// releaseReadBuffer returns the read buffer, if any, to the pool (reader
// goroutine).
func (c *conn) releaseReadBuffer() {
	if c.rbuf != nil {
		readBuffers.Put(c.rbuf)
		c.rbuf, c.rpos, c.rend = nil, 0, 0
	}
}

func (p *pipe) Write(b []byte) (int, error) {
	c := p.c
	c.wmu.Lock()
	if c.wdead {
		c.wmu.Unlock()
		return 0, net.ErrClosed
	}
	c.wbuf = append(c.wbuf, b...)
	c.wmu.Unlock()
	c.signal()
	return len(b), nil
}

// Close is how mochi stops a client (session takeover, DISCONNECT, protocol
// errors, server shutdown): it unblocks the reader. The socket itself is
// closed by the writer after a final flush, once the reader has finished.
func (p *pipe) Close() error {
	p.c.closeRead()
	return nil
}

func (p *pipe) LocalAddr() net.Addr  { return p.c.raw.LocalAddr() }
func (p *pipe) RemoteAddr() net.Addr { return p.c.raw.RemoteAddr() }

// SetDeadline is mochi's keep-alive: it applies to reads only (the writer
// sets its own write deadlines), and not after Close.
func (p *pipe) SetDeadline(t time.Time) error      { return p.SetReadDeadline(t) }
func (p *pipe) SetWriteDeadline(t time.Time) error { return nil }
func (p *pipe) SetReadDeadline(t time.Time) error {
	c := p.c
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.rclosed {
		return nil
	}
	return c.raw.SetReadDeadline(t)
}

// closeRead stops the connection's input: the reader's blocked Read returns
// at once, no more deliveries are accepted, and a publisher waiting for ack
// room wakes up.
func (c *conn) closeRead() {
	c.wmu.Lock()
	if !c.rclosed {
		c.rclosed = true
		_ = c.raw.SetReadDeadline(time.Now())
		close(c.readStop)
	}
	c.wmu.Unlock()
	c.mu.Lock()
	c.closing = true
	c.ackCond.Broadcast()
	c.mu.Unlock()
}

// kill closes the connection from outside its reader (server shutdown, a
// deleted subscription queue). The reader tells an MQTT 5 client why once
// it has stopped (disconnected), when it knows that CONNACK went out.
func (c *conn) kill(code packets.Code) {
	c.killCode.CompareAndSwap(nil, &code)
	c.closeRead()
}

// writeFinalDisconnect queues an MQTT 5 DISCONNECT after mochi has stopped
// the client (so its WritePacket refuses), and asks the writer to read the
// socket dry before closing it, so that the client is not sent a reset
// before it has read the DISCONNECT.
func (c *conn) writeFinalDisconnect(code packets.Code) {
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Disconnect},
		ReasonCode:      code.Code,
		ProtocolVersion: 5,
	}
	if cl := c.client(); cl != nil {
		pp := &cl.Properties.Props
		pk.Mods.DisallowProblemInfo = pp.RequestProblemInfoFlag && pp.RequestProblemInfo == 0
		pk.Mods.MaxSize = pp.MaximumPacketSize
	}
	pk.Properties.ReasonString = code.Reason
	var buf bytes.Buffer
	if err := pk.DisconnectEncode(&buf); err != nil {
		return
	}
	c.wmu.Lock()
	c.wbuf = append(c.wbuf, buf.Bytes()...)
	c.wmu.Unlock()
	c.sentDisconnect.Store(true)
	c.drain = true
}

// finish ends the connection once the reader is done: it waits for a
// running writer, then flushes what is buffered (bounded by CloseTimeout)
// and closes the socket, in the reader goroutine.
func (c *conn) finish() {
	if c.principal != nil {
		c.principal.Close()
	}
	c.closeRead()
	c.releaseReadBuffer()
	c.wmu.Lock()
	c.finished = true
	for c.writing {
		c.wcond.Wait()
	}
	c.wmu.Unlock()
	c.final()
}

// writeLoop is the connection's writer goroutine: it runs while there is
// something to write, then exits.
func (c *conn) writeLoop() {
	for {
		c.wmu.Lock()
		if !c.pending || c.wdead || c.finished {
			c.writing = false
			c.wcond.Broadcast()
			c.wmu.Unlock()
			return
		}
		c.pending = false
		c.wmu.Unlock()
		if err := c.pump(); err != nil {
			c.s.log.Debug("write failed; closing", "conn", c.id, "err", err)
			c.wmu.Lock()
			c.wdead = true
			c.wmu.Unlock()
			c.closeRead()
		}
	}
}

// final flushes what mochi and the bridge buffered last (a CONNACK refusing
// the client, a DISCONNECT), then closes the socket.
func (c *conn) final() {
	deadline := time.Now().Add(c.s.opts.CloseTimeout)
	_ = c.raw.SetWriteDeadline(deadline)
	c.wmu.Lock()
	dead := c.wdead
	c.wmu.Unlock()
	if dead {
		_ = c.raw.Close()
		return
	}
	if err := c.flush(); err == nil && c.drain {
		if hc, ok := c.raw.(interface{ CloseWrite() error }); ok && hc.CloseWrite() == nil {
			_ = c.raw.SetReadDeadline(deadline)
			_, _ = io.Copy(io.Discard, io.LimitReader(c.raw, int64(c.s.opts.MaxPacketSize)+(1<<16)))
		}
	}
	_ = c.raw.Close()
}

// batchBytes bounds the deliveries the writer encodes between socket writes.
const batchBytes = 128 << 10

// pump writes until the connection has nothing more to send.
func (c *conn) pump() error {
	var acks []*pendingAck
	var items []outItem
	for {
		acks, items = acks[:0], items[:0]
		c.mu.Lock()
		for c.acks.len() > 0 && (*c.acks.peek()).ready() {
			acks = append(acks, c.acks.pop())
		}
		for n := 0; c.out.len() > 0 && n < batchBytes; {
			it := c.out.pop()
			c.outBytes -= it.size
			n += it.size
			items = append(items, it)
		}
		c.mu.Unlock()

		for _, a := range acks {
			c.writeAck(a)
		}
		if len(acks) > 0 {
			c.mu.Lock()
			c.unwritten -= len(acks)
			c.ackCond.Broadcast()
			c.mu.Unlock()
		}
		var st settlement
		now := time.Now()
		for i := range items {
			c.writeItem(&items[i], now, &st)
			items[i] = outItem{}
		}
		err := c.flush()
		st.run(c)
		if err != nil {
			return err
		}
		if len(acks) == 0 && len(items) == 0 {
			return nil
		}
	}
}

// flush writes wbuf to the socket.
func (c *conn) flush() error {
	c.wmu.Lock()
	buf := c.wbuf
	c.wbuf = c.spare[:0]
	c.spare = nil
	c.wmu.Unlock()
	if len(buf) == 0 {
		c.keepSpare(buf)
		return nil
	}
	c.wmu.Lock()
	final := c.finished
	c.wmu.Unlock()
	if !final {
		_ = c.raw.SetWriteDeadline(time.Now().Add(c.s.opts.WriteTimeout))
	}
	_, err := c.raw.Write(buf)
	c.keepSpare(buf)
	return err
}

// keepSpare keeps a drained buffer for reuse unless it is large, so that an
// idle connection holds little memory.
func (c *conn) keepSpare(buf []byte) {
	if cap(buf) > 4096 {
		return
	}
	c.wmu.Lock()
	if c.spare == nil {
		c.spare = buf[:0]
	}
	c.wmu.Unlock()
}

// settlement collects the router calls a batch needs, made after the socket
// write and without any connection lock held.
type settlement struct {
	ack    []queue.Delivery
	reject []queue.Delivery
}

func (st *settlement) run(c *conn) {
	for _, d := range st.ack {
		d.Queue.Ack(d.ID)
	}
	for _, d := range st.reject {
		d.Queue.Reject(d.ID, true)
	}
	c.kickBlocked()
}

// offer is consumer.Deliver: it runs under the queue's lock, so it only
// appends to the outbound queue, or refuses when the connection is full.
func (c *conn) offer(k *consumer, d queue.Delivery) bool {
	o := k.sub.opts.Load()
	q := min(o.qos, messageQoS(d.Msg))
	size := len(d.Msg.Body) + len(d.Msg.RoutingKey) + itemOverhead
	c.mu.Lock()
	if c.closing || c.detached || k.stopped.Load() {
		c.mu.Unlock()
		return false
	}
	if (q > 0 && c.qosPending >= c.maxInflight) ||
		(c.outBytes > 0 && c.outBytes+size > c.s.opts.MaxOutboundBytes) {
		c.blocked = append(c.blocked, d.Sub)
		c.mu.Unlock()
		return false
	}
	c.out.push(outItem{k: k, d: d, qos: q, size: size})
	c.outBytes += size
	if q > 0 {
		c.qosPending++
	}
	c.mu.Unlock()
	c.signal()
	return true
}

// enqueueRetained queues retained messages for a new subscription.
func (c *conn) enqueueRetained(pks []packets.Packet, o *subOpts) {
	if len(pks) == 0 {
		return
	}
	c.mu.Lock()
	if c.closing || c.detached {
		c.mu.Unlock()
		return
	}
	for i := range pks {
		pk := &pks[i]
		q := min(o.qos, pk.FixedHeader.Qos)
		size := len(pk.Payload) + len(pk.TopicName) + itemOverhead
		c.out.push(outItem{ret: pk, opts: o, qos: q, size: size})
		c.outBytes += size
		if q > 0 {
			c.qosPending++
		}
	}
	c.mu.Unlock()
	c.signal()
}

// kickBlocked resumes refused subscriptions once the connection has room.
func (c *conn) kickBlocked() {
	c.mu.Lock()
	var subs []*queue.Sub
	if len(c.blocked) > 0 && !c.closing && !c.detached &&
		c.qosPending < c.maxInflight && c.outBytes <= c.s.opts.MaxOutboundBytes/2 {
		subs = c.blocked
		c.blocked = nil
	}
	c.mu.Unlock()
	for _, s := range subs {
		s.Kick()
	}
}

// writeItem encodes one delivery into wbuf.
func (c *conn) writeItem(it *outItem, now time.Time, st *settlement) {
	cl := c.client()
	var pk packets.Packet
	if it.ret != nil {
		pk = c.retainedPacket(it, now)
	} else {
		m := it.d.Msg
		o := it.k.sub.opts.Load()
		topic := keyToTopic(m.RoutingKey)
		if it.k.sub.stream != nil {
			topic = it.k.sub.filter // a replay arrives on the topic it was asked on
		}
		if !validTopic(topic) || (o.wildFirst && topic[0] == '$') || (o.noLocal && c.sess.ownConn(m.Origin)) {
			// Not for this subscriber ([MQTT-3.8.3-3], [MQTT-4.7.2-1]), or
			// a routing key no MQTT topic can carry: settled unseen.
			st.ack = append(st.ack, it.d)
			if it.qos > 0 {
				c.releaseQoS()
			}
			return
		}
		pk = packets.Packet{
			FixedHeader: packets.FixedHeader{
				Type:   packets.Publish,
				Qos:    it.qos,
				Retain: o.rap && retainedFlag(m),
				Dup:    it.qos > 0 && it.d.Redelivered,
			},
			TopicName: topic,
			Payload:   m.Body,
			Created:   now.Unix(),
		}
		if c.v5 {
			pk.Properties = deliveryProperties(m, now)
			if o.id > 0 {
				pk.Properties.SubscriptionIdentifier = []int{o.id}
			}
		}
	}
	if c.v5 {
		c.alias(cl, &pk)
	}
	if it.qos > 0 {
		c.mu.Lock()
		if c.detached {
			c.mu.Unlock()
			if it.k != nil {
				st.reject = append(st.reject, it.d)
			}
			return
		}
		id, ok := c.allocID(cl)
		if !ok {
			c.qosPending--
			c.mu.Unlock()
			if it.k != nil {
				st.reject = append(st.reject, it.d)
			}
			return
		}
		pk.PacketID = id
		cl.State.Inflight.Set(pk)
		c.inflight[pk.PacketID] = inflightRef{q: it.d.Queue, id: it.d.ID}
		c.mu.Unlock()
	}
	err := cl.WritePacket(pk)
	switch {
	case err == nil:
		if it.qos == 0 && it.k != nil {
			st.ack = append(st.ack, it.d)
		}
	case errors.Is(err, packets.ErrPacketTooLarge):
		// Larger than the client accepts: discarded as if delivered
		// ([MQTT-3.1.2-25]).
		if it.qos > 0 {
			cl.State.Inflight.Delete(pk.PacketID)
			c.settleOutbound(pk.PacketID, 0)
		} else if it.k != nil {
			st.ack = append(st.ack, it.d)
		}
	case it.qos == 0 && it.k != nil:
		st.reject = append(st.reject, it.d)
	}
	// A QoS > 0 delivery that could not be written stays registered in
	// flight; the connection is closing and detach requeues it.
}

// allocID picks the packet id of a delivery (under c.mu). Server ids count
// down from 65535 through the upper half of the range: clients number their
// own packets up from 1, and mochi keeps both directions in one in-flight
// map, where a collision would make it answer a SUBSCRIBE with 0x91 or drop
// a delivery's entry.
func (c *conn) allocID(cl *mochi.Client) (uint16, bool) {
	for range 1 << 15 {
		if c.nextID <= 1<<15 {
			c.nextID = 1<<16 - 1
		} else {
			c.nextID--
		}
		id := c.nextID
		if _, used := c.inflight[id]; used {
			continue
		}
		if _, used := cl.State.Inflight.Get(id); used {
			continue
		}
		return id, true
	}
	return 0, false
}

// retainedPacket builds the PUBLISH of a retained message for a new
// subscription: RETAIN set, QoS capped by the subscription, expiry counted
// down, properties only for MQTT 5.
func (c *conn) retainedPacket(it *outItem, now time.Time) packets.Packet {
	r := it.ret
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: it.qos, Retain: true},
		TopicName:   r.TopicName,
		Payload:     r.Payload,
		Created:     now.Unix(),
	}
	if c.v5 {
		pk.Properties = publishProperties(&r.Properties)
		if r.Expiry > 0 {
			pk.Properties.MessageExpiryInterval = uint32(max(r.Expiry-now.Unix(), 1))
		}
		if it.opts.id > 0 {
			pk.Properties.SubscriptionIdentifier = []int{it.opts.id}
		}
	}
	return pk
}

// alias applies an outbound topic alias when the client accepts them.
// Topics starting with '$' get none: mochi writes $SYS updates from its own
// goroutine, and aliases must be introduced by the packet that is sent first.
func (c *conn) alias(cl *mochi.Client, pk *packets.Packet) {
	if cl.Properties.Props.TopicAliasMaximum == 0 || pk.TopicName == "" || pk.TopicName[0] == '$' {
		return
	}
	a, exists := cl.State.TopicAliases.Outbound.Set(pk.TopicName)
	if a == 0 {
		return
	}
	pk.Properties.TopicAlias, pk.Properties.TopicAliasFlag = a, true
	if exists {
		pk.TopicName = ""
	}
}

// releaseQoS returns a QoS > 0 slot that was never used.
func (c *conn) releaseQoS() {
	c.mu.Lock()
	c.qosPending--
	c.mu.Unlock()
}

// settleOutbound handles the client's PUBACK (QoS 1) or PUBREC (QoS 2) of
// a delivery: the router delivery is acknowledged (rejected without requeue
// when the client answered with an error reason code). QoS 2 is settled at
// PUBREC: the client owns the message from then on, so a reconnect between
// PUBREC and PUBCOMP must not deliver it again.
func (c *conn) settleOutbound(id uint16, reason byte) {
	c.mu.Lock()
	r, ok := c.inflight[id]
	if ok {
		delete(c.inflight, id)
		c.qosPending--
	}
	c.mu.Unlock()
	if ok && r.q != nil {
		if reason >= 0x80 {
			r.q.Reject(r.id, false)
		} else {
			r.q.Ack(r.id)
		}
	}
	c.kickBlocked()
}

// detachDeliveries stops deliveries to this connection for good and
// requeues every delivery it holds that the client has not acknowledged:
// queued ones and those in flight. Their entries leave mochi's in-flight
// store too, so a resumed session receives them once, from the router.
func (c *conn) detachDeliveries() {
	c.mu.Lock()
	if c.detached {
		c.mu.Unlock()
		return
	}
	c.detached = true
	items := c.out.drain()
	c.outBytes = 0
	refs := c.inflight
	c.inflight = map[uint16]inflightRef{}
	c.qosPending = 0
	c.blocked = nil
	if cl := c.client(); cl != nil {
		for id := range refs {
			cl.State.Inflight.Delete(id)
		}
	}
	c.mu.Unlock()
	for _, it := range items {
		if it.k != nil {
			it.d.Queue.Reject(it.d.ID, true)
		}
	}
	for _, r := range refs {
		if r.q != nil {
			r.q.Reject(r.id, true)
		}
	}
}
