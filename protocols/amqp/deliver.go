package amqp

import (
	"crypto/rand"
	"encoding/base64"
	"math"
	"slices"
	"time"

	"github.com/bourse-mq/bourse/auth"
	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/protocols/amqp/wire"
	"github.com/bourse-mq/bourse/router"
	"github.com/bourse-mq/bourse/router/queue"
)

// consumer is one basic.consume subscription; it implements queue.Consumer.
// Its mutable fields are guarded by the channel's mu.
type consumer struct {
	ch    *channel
	tag   string
	noAck bool

	sub   *queue.Sub // nil for the direct reply-to consumer
	unreg func()     // direct reply-to registration
	ready bool       // consume-ok queued: deliveries may follow it
	gone  bool       // cancelled by the queue before it was ready
}

// stop ends the subscription (reader goroutine only).
func (cs *consumer) stop() {
	if cs.sub != nil {
		cs.sub.Cancel()
	}
	if cs.unreg != nil {
		cs.unreg()
	}
}

// Deliver implements queue.Consumer. It runs under the queue's lock, on
// whatever goroutine dispatched (a publisher, an acker, a timer): it
// assigns the channel's next delivery tag and queues the frames, or refuses
// the delivery when the channel is paused (flow, channel-wide prefetch) or
// the connection's outbound queue is full. A refused subscription is kicked
// when the condition clears.
func (cs *consumer) Deliver(d queue.Delivery) bool {
	ch := cs.ch
	size := d.Msg.Size()
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.closed || !cs.ready {
		return false // consume() kicks once consume-ok is queued
	}
	if ch.flowOff || (!cs.noAck && ch.overGlobalLocked(size)) {
		ch.blocked = append(ch.blocked, d.Sub)
		return false
	}
	tag := ch.nextTag + 1
	it := outItem{kind: itemDeliver, ch: ch.id, tag: tag, redelivered: d.Redelivered, msg: d.Msg,
		ctag: cs.tag, size: size + contentCost}
	if !ch.c.out.pushDelivery(it, d.Sub) {
		return false
	}
	ch.nextTag = tag
	if !cs.noAck {
		ch.unacked.push(unackRec{tag: tag, q: d.Queue, id: d.ID, size: size, counted: true})
		ch.nUnacked++
		ch.uBytes += size
	}
	return true
}

// overGlobalLocked applies basic.qos global=true: the channel's consumers
// share one prefetch window. Like per-consumer prefetch-size, a message
// passes when nothing is outstanding, so one large message cannot stall.
func (ch *channel) overGlobalLocked(size int) bool {
	if ch.gPrefetch > 0 && ch.nUnacked >= ch.gPrefetch {
		return true
	}
	return ch.gPrefetchBytes > 0 && ch.nUnacked > 0 && ch.uBytes+size > ch.gPrefetchBytes
}

// Cancelled implements queue.Consumer: the queue was deleted. Clients that
// announced consumer_cancel_notify get a basic.cancel.
func (cs *consumer) Cancelled(_ *queue.Queue, _ error) {
	ch := cs.ch
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.closed || ch.consumers[cs.tag] != cs {
		return
	}
	if !cs.ready {
		cs.gone = true // consume() reports it after consume-ok
		return
	}
	delete(ch.consumers, cs.tag)
	if ch.c.capCancelNotify {
		ch.c.out.pushMethod(ch.id, &wire.BasicCancel{ConsumerTag: cs.tag, NoWait: true})
	}
}

// deliverReply hands a direct reply-to message to the reply consumer. It
// reports false when the consumer is gone or the connection is saturated:
// direct replies are at most once, as in RabbitMQ.
func (cs *consumer) deliverReply(m *core.Message) bool {
	ch := cs.ch
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.closed || ch.consumers[cs.tag] != cs {
		return false
	}
	tag := ch.nextTag + 1
	it := outItem{kind: itemDeliver, ch: ch.id, tag: tag, msg: m, ctag: cs.tag, size: m.Size() + contentCost}
	if !ch.c.out.pushDelivery(it, nil) {
		return false
	}
	ch.nextTag = tag
	return true
}

func genTag(prefix string) string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return prefix + base64.RawURLEncoding.EncodeToString(b[:])
}

// queueName resolves the empty queue name to the channel's last declared
// queue (AMQP 0-9-1 §1.7.2.1, queue-name domain).
func (ch *channel) queueName(name string, m wire.Method) (string, error) {
	if name != "" {
		return name, nil
	}
	if ch.lastQueue == "" {
		return "", errorf(wire.NotFound, m, "no previously declared queue")
	}
	return ch.lastQueue, nil
}

func (ch *channel) consume(m *wire.BasicConsume) error {
	name, err := ch.queueName(m.Queue, m)
	if err != nil {
		return err
	}
	tag := m.ConsumerTag
	if tag == "" {
		tag = genTag("amq.ctag-")
	}
	ch.mu.Lock()
	_, dup := ch.consumers[tag]
	n := len(ch.consumers)
	ch.mu.Unlock()
	if dup {
		return errorf(wire.NotAllowed, m, "attempt to reuse consumer tag '%s'", tag)
	}
	if max := ch.c.s.opts.MaxConsumersPerChannel; max > 0 && n >= max {
		return errorf(wire.NotAllowed, m, "reached maximum (%d) of consumers per channel", max)
	}
	if name == router.ReplyToPrefix {
		return ch.consumeReplyTo(m, tag)
	}
	if err := ch.allow(auth.Queue, name, auth.Read); err != nil {
		return err
	}
	args := tableFromWire(m.Arguments)
	prio := 0
	if v, ok := args["x-priority"]; ok {
		n, ok := core.AsInt(v)
		if !ok || n < math.MinInt32 || n > math.MaxInt32 {
			return errorf(wire.PreconditionFailed, m, "invalid arg 'x-priority': want a 32-bit integer, got %T", v)
		}
		prio = int(n)
	}
	so, err := streamOptions(args)
	if err != nil {
		return err
	}
	cs := &consumer{ch: ch, tag: tag, noAck: m.NoAck}
	ch.mu.Lock()
	ch.consumers[tag] = cs
	ch.mu.Unlock()
	sub, err := ch.c.vhost.Consume(name, cs, queue.ConsumeOptions{
		Tag: tag, NoAck: m.NoAck, Exclusive: m.Exclusive,
		Prefetch: ch.prefetch, PrefetchBytes: ch.prefetchBytes,
		Priority: prio, Owner: ch.c.id, Stream: so,
	})
	if err != nil {
		ch.mu.Lock()
		delete(ch.consumers, tag)
		ch.mu.Unlock()
		return err
	}
	// consume-ok must precede the consumer's first basic.deliver: Deliver
	// refused everything until now, and the kick below starts the flow.
	ch.mu.Lock()
	cs.sub, cs.ready = sub, true
	if !m.NoWait {
		ch.c.out.pushMethod(ch.id, &wire.BasicConsumeOk{ConsumerTag: tag})
	}
	gone := cs.gone
	if gone {
		delete(ch.consumers, tag)
		if ch.c.capCancelNotify {
			ch.c.out.pushMethod(ch.id, &wire.BasicCancel{ConsumerTag: tag, NoWait: true})
		}
	}
	ch.mu.Unlock()
	if !gone {
		sub.Kick()
	}
	return nil
}

// streamOptions reads a stream consumer's arguments: x-stream-offset (as
// RabbitMQ) and x-stream-consumer-name (Bourse's named server-side offset).
func streamOptions(args core.Table) (*queue.StreamOptions, error) {
	v, hasOffset := args["x-stream-offset"]
	n, hasName := args["x-stream-consumer-name"]
	if !hasOffset && !hasName {
		return nil, nil
	}
	so := &queue.StreamOptions{HasOffset: hasOffset}
	if hasOffset {
		spec, err := queue.ParseOffset(v, time.Now())
		if err != nil {
			return nil, err
		}
		so.Offset = spec
	}
	if hasName {
		switch x := n.(type) {
		case string:
			so.Name = x
		case []byte:
			so.Name = string(x)
		default:
			return nil, core.Errorf(core.PreconditionFailed, "invalid arg 'x-stream-consumer-name': want a string, got %T", n)
		}
		if so.Name == "" || len(so.Name) > 255 {
			return nil, core.Errorf(core.PreconditionFailed, "invalid arg 'x-stream-consumer-name': want 1 to 255 bytes")
		}
	}
	return so, nil
}

// consumeReplyTo subscribes to RabbitMQ's direct reply-to pseudo-queue.
func (ch *channel) consumeReplyTo(m *wire.BasicConsume, tag string) error {
	if !m.NoAck {
		return errorf(wire.PreconditionFailed, m, "reply consumer cannot acknowledge")
	}
	if ch.reply != nil {
		return errorf(wire.PreconditionFailed, m, "reply consumer already set")
	}
	cs := &consumer{ch: ch, tag: tag, noAck: true}
	addr, unreg := ch.c.vhost.RegisterReplyTo(cs.deliverReply)
	cs.unreg = unreg
	ch.reply = cs
	ch.replyAddr = addr
	ch.mu.Lock()
	ch.consumers[tag] = cs
	cs.ready = true
	if !m.NoWait {
		ch.c.out.pushMethod(ch.id, &wire.BasicConsumeOk{ConsumerTag: tag})
	}
	ch.mu.Unlock()
	return nil
}

func (ch *channel) cancel(m *wire.BasicCancel) {
	ch.mu.Lock()
	cs := ch.consumers[m.ConsumerTag]
	delete(ch.consumers, m.ConsumerTag)
	ch.mu.Unlock()
	if cs != nil {
		cs.stop()
		if cs == ch.reply {
			ch.reply, ch.replyAddr = nil, ""
		}
	}
	if !m.NoWait {
		ch.c.out.pushMethod(ch.id, &wire.BasicCancelOk{ConsumerTag: m.ConsumerTag})
	}
}

// qos handles basic.qos with RabbitMQ's semantics: global=false sets the
// prefetch of consumers created afterwards on this channel; global=true
// sets a window shared by all the channel's consumers, at once.
func (ch *channel) qos(m *wire.BasicQos) error {
	if m.Global {
		ch.mu.Lock()
		ch.gPrefetch, ch.gPrefetchBytes = int(m.PrefetchCount), int(m.PrefetchSize)
		kicks := ch.takeBlockedLocked()
		ch.mu.Unlock()
		ch.c.out.pushMethod(ch.id, &wire.BasicQosOk{})
		kickAll(kicks)
		return nil
	}
	ch.prefetch, ch.prefetchBytes = int(m.PrefetchCount), int(m.PrefetchSize)
	ch.c.out.pushMethod(ch.id, &wire.BasicQosOk{})
	return nil
}

func (ch *channel) get(m *wire.BasicGet) error {
	name, err := ch.queueName(m.Queue, m)
	if err != nil {
		return err
	}
	if err := ch.allow(auth.Queue, name, auth.Read); err != nil {
		return err
	}
	q, err := ch.c.vhost.Queue(name, ch.c.id)
	if err != nil {
		return err
	}
	if q.IsStream() {
		return errorf(wire.NotImplemented, m, "basic.get not supported by stream '%s': consume with x-stream-offset", name)
	}
	d, remaining, ok := q.Get(m.NoAck)
	if !ok {
		ch.c.out.pushMethod(ch.id, &wire.BasicGetEmpty{})
		return nil
	}
	size := d.Msg.Size()
	ch.mu.Lock()
	ch.nextTag++
	tag := ch.nextTag
	if !m.NoAck {
		ch.unacked.push(unackRec{tag: tag, q: q, id: d.ID, size: size})
	}
	ch.c.out.push(outItem{kind: itemGetOk, ch: ch.id, tag: tag, redelivered: d.Redelivered, msg: d.Msg,
		count: uint32(min(remaining, math.MaxUint32)), size: size + contentCost})
	ch.mu.Unlock()
	return nil
}

type opKind uint8

const (
	opPublish opKind = iota
	opAck
	opNack
)

// settle handles basic.ack, basic.nack and basic.reject: it maps delivery
// tags back to (queue, queue-local id) and settles them, or buffers them in
// a transaction.
func (ch *channel) settle(m wire.Method, tag uint64, multiple bool, op opKind, requeue bool) error {
	c := ch.c
	ch.mu.Lock()
	recs, ok := ch.unacked.take(tag, multiple, c.recsScratch[:0])
	if !ok {
		ch.mu.Unlock()
		return errorf(wire.PreconditionFailed, m, "unknown delivery tag %d", tag)
	}
	kicks := ch.releaseLocked(recs)
	ch.mu.Unlock()
	if ch.tx != nil {
		ch.tx.ops = append(ch.tx.ops, txOp{kind: op, requeue: requeue, recs: slices.Clone(recs)})
	} else {
		for _, r := range recs {
			if op == opAck {
				r.q.Ack(r.id)
			} else {
				r.q.Reject(r.id, requeue)
			}
		}
	}
	clear(recs)
	c.recsScratch = recs[:0]
	kickAll(kicks)
	return nil
}

// releaseLocked returns the channel-wide credit of settled records and the
// subscriptions to kick if any was freed.
func (ch *channel) releaseLocked(recs []unackRec) []*queue.Sub {
	freed := false
	for i := range recs {
		if recs[i].counted {
			ch.nUnacked--
			ch.uBytes -= recs[i].size
			freed = true
		}
	}
	if freed {
		return ch.takeBlockedLocked()
	}
	return nil
}

// recover handles basic.recover and basic.recover-async: every
// unacknowledged delivery goes back to its queue, flagged redelivered.
// requeue=false (redeliver to the same consumer) is refused with 540, as
// RabbitMQ refuses it.
func (ch *channel) recover(m wire.Method, requeue bool) error {
	if !requeue {
		return errorf(wire.NotImplemented, m, "requeue=false")
	}
	c := ch.c
	ch.mu.Lock()
	recs := ch.unacked.drain(c.recsScratch[:0])
	kicks := ch.releaseLocked(recs)
	ch.mu.Unlock()
	for _, r := range recs {
		r.q.Reject(r.id, true)
	}
	clear(recs)
	c.recsScratch = recs[:0]
	kickAll(kicks)
	return nil
}

// unackRec maps a delivery tag to the delivery it stands for.
type unackRec struct {
	tag     uint64
	q       *queue.Queue // nil: settled (a tombstone that keeps the order)
	id      uint64
	size    int
	counted bool // a consumer delivery, counted by basic.qos global
}

// unackedList holds a channel's unacknowledged deliveries in tag order.
// Tags only grow, so appends keep it sorted, single acks find their record
// by binary search and leave a tombstone, and multiple acks cut a prefix:
// no per-delivery allocation, unlike a map.
type unackedList struct {
	recs []unackRec
	head int
	live int
}

func (l *unackedList) push(r unackRec) {
	l.recs = append(l.recs, r)
	l.live++
}

// take removes the record of tag (and, with multiple, every record up to
// it; tag 0 with multiple means all), appending them to dst. ok is false
// when tag is not outstanding.
func (l *unackedList) take(tag uint64, multiple bool, dst []unackRec) ([]unackRec, bool) {
	if multiple && tag == 0 {
		return l.drain(dst), true
	}
	i, found := slices.BinarySearchFunc(l.recs[l.head:], tag, func(r unackRec, t uint64) int {
		switch {
		case r.tag < t:
			return -1
		case r.tag > t:
			return 1
		}
		return 0
	})
	i += l.head
	if !found || l.recs[i].q == nil {
		return dst, false
	}
	if !multiple {
		dst = append(dst, l.recs[i])
		l.recs[i] = unackRec{tag: tag}
		l.live--
	} else {
		for j := l.head; j <= i; j++ {
			if l.recs[j].q != nil {
				dst = append(dst, l.recs[j])
				l.live--
			}
			l.recs[j] = unackRec{}
		}
		l.head = i + 1
	}
	l.trim()
	return dst, true
}

// drain removes every record, in tag order, appending them to dst.
func (l *unackedList) drain(dst []unackRec) []unackRec {
	for _, r := range l.recs[l.head:] {
		if r.q != nil {
			dst = append(dst, r)
		}
	}
	clear(l.recs)
	l.recs, l.head, l.live = l.recs[:0], 0, 0
	return dst
}

// restore puts records back (transaction rollback). Tombstones go first:
// a restored record would otherwise sit next to its own tombstone, with the
// same tag, and binary search could find the tombstone.
func (l *unackedList) restore(recs []unackRec) {
	k := 0
	for _, r := range l.recs[l.head:] {
		if r.q != nil {
			l.recs[k] = r
			k++
		}
	}
	clear(l.recs[k:])
	l.recs, l.head = l.recs[:k], 0
	l.recs = append(l.recs, recs...)
	l.live += len(recs)
	slices.SortFunc(l.recs[l.head:], func(a, b unackRec) int {
		switch {
		case a.tag < b.tag:
			return -1
		case a.tag > b.tag:
			return 1
		}
		return 0
	})
}

// trim drops leading tombstones and compacts when tombstones dominate.
func (l *unackedList) trim() {
	for l.head < len(l.recs) && l.recs[l.head].q == nil {
		l.recs[l.head] = unackRec{}
		l.head++
	}
	n := len(l.recs) - l.head
	switch {
	case n == 0:
		l.recs, l.head = l.recs[:0], 0
	case l.head >= 64 && l.head >= n:
		copy(l.recs, l.recs[l.head:])
		clear(l.recs[n:])
		l.recs, l.head = l.recs[:n], 0
	case n >= 64 && l.live < n/4:
		k := 0
		for _, r := range l.recs[l.head:] {
			if r.q != nil {
				l.recs[k] = r
				k++
			}
		}
		clear(l.recs[k:])
		l.recs, l.head = l.recs[:k], 0
	}
}
