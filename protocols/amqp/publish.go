package amqp

import (
	"sync"
	"sync/atomic"

	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/protocols/amqp/wire"
	"github.com/bourse-mq/bourse/router"
)

// content assembles a published message from its frames (§4.2.6):
// basic.publish, one content header, then body frames until the announced
// size is reached. Frames of other channels may interleave; frames of this
// channel may not.
type content struct {
	stage     uint8 // 0 idle, 1 header expected, 2 body expected
	mandatory bool
	exchange  string
	key       string
	size      int
	body      []byte
	props     core.Properties
	headers   core.Table
}

func (ct *content) active() bool { return ct.stage != 0 }
func (ct *content) reset()       { *ct = content{} }

func (ch *channel) startPublish(m *wire.BasicPublish) error {
	if m.Immediate {
		return errorf(wire.NotImplemented, m, "immediate=true")
	}
	// Flow control: a blocked connection stops reading at its next publish.
	if !ch.c.waitUnblocked() {
		return nil
	}
	if err := ch.allowPublish(m.Exchange, m.RoutingKey); err != nil {
		return err
	}
	ch.content = content{stage: 1, exchange: m.Exchange, key: m.RoutingKey, mandatory: m.Mandatory}
	return nil
}

func (ch *channel) header(p []byte) error {
	ct := &ch.content
	if ct.stage != 1 {
		return errorf(wire.UnexpectedFrame, nil, "unexpected content header frame on channel %d", ch.id)
	}
	_, size, props, err := wire.DecodeHeader(p)
	if err != nil {
		return err
	}
	if limit := ch.c.s.opts.MaxMessageBytes; size > uint64(limit) {
		ct.reset()
		return errorf(wire.PreconditionFailed, nil, "message size %d is larger than configured max size %d", size, limit)
	}
	ct.props = propsFromWire(&props)
	ct.headers = tableFromWire(props.Headers)
	ct.size = int(size)
	if size == 0 {
		return ch.publish()
	}
	ct.stage = 2 // the body is allocated as its frames arrive
	return nil
}

// body takes a content body frame; owned says p is the caller's to keep
// (wire.Frame.Owned), so a body in one frame becomes the message's body
// without a copy.
func (ch *channel) body(p []byte, owned bool) error {
	ct := &ch.content
	if ct.stage != 2 {
		return errorf(wire.UnexpectedFrame, nil, "unexpected content body frame on channel %d", ch.id)
	}
	n := len(ct.body) + len(p)
	if n > ct.size {
		return errorf(wire.FrameError, nil, "content body of %d bytes exceeds the %d announced in its header", n, ct.size)
	}
	if owned && len(ct.body) == 0 && n == ct.size {
		ct.body = p
		return ch.publish()
	}
	if n > cap(ct.body) {
		// A single-frame body gets exactly its size; a multi-frame one
		// grows by doubling. Either way memory follows the bytes received,
		// never the size a header announced.
		c := ct.size
		if n < ct.size {
			c = min(max(2*cap(ct.body), 2*n, 4096), ct.size)
		}
		nb := make([]byte, len(ct.body), c)
		copy(nb, ct.body)
		ct.body = nb
	}
	ct.body = append(ct.body, p...)
	if n == ct.size {
		return ch.publish()
	}
	return nil
}

// publish hands a complete message to the router (or to the open
// transaction).
func (ch *channel) publish() error {
	c := ch.c
	ct := &ch.content
	msg := &core.Message{
		Exchange:   ct.exchange,
		RoutingKey: ct.key,
		Props:      ct.props,
		Headers:    ct.headers,
		Body:       ct.body,
		Origin:     core.Origin{Protocol: core.ProtoAMQP, Conn: c.id, VHost: c.vhostName, User: c.user},
	}
	mandatory := ct.mandatory
	ct.reset()
	if u := msg.Props.UserID; u != "" && u != c.user {
		return errorf(wire.PreconditionFailed, publishBlame, "user_id property set to '%s' but authenticated user was '%s'", u, c.user)
	}
	if msg.Props.ReplyTo == router.ReplyToPrefix {
		if ch.replyAddr == "" {
			return errorf(wire.PreconditionFailed, publishBlame, "fast reply consumer does not exist")
		}
		msg.Props.ReplyTo = ch.replyAddr
	}
	if ch.tx != nil {
		ch.tx.ops = append(ch.tx.ops, txOp{kind: opPublish, msg: msg, mandatory: mandatory})
		return nil
	}
	opts := router.PublishOptions{Mandatory: mandatory, FromClient: true}
	var seq uint64
	if ch.confirmMode {
		seq = ch.cf.add()
		opts.Confirm = func(err error) { ch.cf.mark(seq, confirmState(err)) }
	}
	res, err := c.vhost.Publish(msg, opts)
	if err != nil {
		return err
	}
	if mandatory && res.Unroutable() {
		ch.pushReturn(msg)
	}
	if seq != 0 {
		// The confirm may already have come; either way it is sent after
		// the basic.return just queued, as RabbitMQ orders them.
		ch.cf.mark(seq, cfRouted)
	}
	return nil
}

func (ch *channel) pushReturn(msg *core.Message) {
	ch.c.out.push(outItem{kind: itemReturn, ch: ch.id, replyCode: wire.NoRoute, text: wire.ReplyText(wire.NoRoute),
		msg: msg, size: msg.Size() + contentCost})
}

// Publisher confirm states of one sequence number.
const (
	cfRouted    uint8 = 1 << iota // Publish returned (and any basic.return is queued)
	cfConfirmed                   // the router's Confirm callback ran
	cfNack                        // … with an error
	cfDone      = cfRouted | cfConfirmed
)

func confirmState(err error) uint8 {
	if err != nil {
		return cfConfirmed | cfNack
	}
	return cfConfirmed
}

// confirms tracks a channel's publisher confirms. The router may confirm
// out of order and from any goroutine (storage confirms after fsync);
// confirms are sent strictly in sequence order, each as soon as it and all
// before it are settled, so a run of them coalesces into one multiple ack
// (see outbound.pushConfirm). mu is taken before outbound.mu.
type confirms struct {
	mu     sync.Mutex
	out    *outbound
	ch     uint16
	closed bool
	next   uint64  // next sequence number to hand out (the first is 1)
	ring   []uint8 // states of next-n … next-1, from head
	head   int
	n      int
}

func (cf *confirms) init(out *outbound, ch uint16) {
	cf.out, cf.ch, cf.next = out, ch, 1
}

// add allocates the next sequence number.
func (cf *confirms) add() uint64 {
	cf.mu.Lock()
	defer cf.mu.Unlock()
	if cf.n == len(cf.ring) {
		nr := make([]uint8, max(2*len(cf.ring), 64))
		for i := 0; i < cf.n; i++ {
			nr[i] = cf.ring[(cf.head+i)%len(cf.ring)]
		}
		cf.ring, cf.head = nr, 0
	}
	cf.ring[(cf.head+cf.n)%len(cf.ring)] = 0
	cf.n++
	seq := cf.next
	cf.next++
	return seq
}

// mark records state bits for seq and sends every confirm now due.
func (cf *confirms) mark(seq uint64, bits uint8) {
	cf.mu.Lock()
	defer cf.mu.Unlock()
	low := cf.next - uint64(cf.n)
	if cf.closed || seq < low || seq >= cf.next {
		return
	}
	size := len(cf.ring)
	cf.ring[(cf.head+int(seq-low))%size] |= bits
	for cf.n > 0 && cf.ring[cf.head]&cfDone == cfDone {
		st := cf.ring[cf.head]
		cf.ring[cf.head] = 0
		cf.head = (cf.head + 1) % size
		cf.n--
		cf.out.pushConfirm(cf.ch, low, st&cfNack != 0)
		low++
	}
}

func (cf *confirms) close() {
	cf.mu.Lock()
	cf.closed = true
	cf.mu.Unlock()
}

func (ch *channel) confirmSelect(m *wire.ConfirmSelect) error {
	if ch.tx != nil {
		return errorf(wire.PreconditionFailed, m, "cannot switch from tx to confirm mode")
	}
	ch.confirmMode = true
	ch.mode.Store(modeConfirm)
	if !m.NoWait {
		ch.c.out.pushMethod(ch.id, &wire.ConfirmSelectOk{})
	}
	return nil
}

// txState buffers a transaction's publishes and settlements in order.
type txState struct {
	ops []txOp
}

type txOp struct {
	kind      opKind
	mandatory bool
	requeue   bool
	msg       *core.Message
	recs      []unackRec
}

func (ch *channel) txSelect(m *wire.TxSelect) error {
	if ch.confirmMode {
		return errorf(wire.PreconditionFailed, m, "cannot switch from confirm to tx mode")
	}
	if ch.tx == nil {
		ch.tx = &txState{}
	}
	ch.mode.Store(modeTx)
	ch.c.out.pushMethod(ch.id, &wire.TxSelectOk{})
	return nil
}

// txCommit applies the buffered operations in order. commit-ok is sent
// once every published message is accepted (on disk, for persistent
// messages on durable queues): the router's Confirm callbacks count down.
// A message that could not be stored (a disk error, a cluster without
// quorum) fails the commit: the connection closes with resource-error
// (506, a connection exception), since the answer comes from another
// goroutine, after the commit's other effects.
func (ch *channel) txCommit(m *wire.TxCommit) error {
	if ch.tx == nil {
		return errorf(wire.PreconditionFailed, m, "channel is not transactional")
	}
	ops := ch.tx.ops
	ch.tx.ops = nil
	pending := new(atomic.Int64)
	pending.Store(1)
	var failed atomic.Pointer[error]
	done := func(err error) {
		if err != nil {
			failed.CompareAndSwap(nil, &err)
		}
		if pending.Add(-1) == 0 {
			if err := failed.Load(); err != nil {
				ch.c.closeWith(errorf(wire.ResourceError, m, "tx.commit failed: a published message was not stored: %v", *err))
				return
			}
			ch.pushIfOpen(&wire.TxCommitOk{})
		}
	}
	for i, op := range ops {
		switch op.kind {
		case opPublish:
			pending.Add(1)
			res, err := ch.c.vhost.Publish(op.msg, router.PublishOptions{Mandatory: op.mandatory, FromClient: true, Confirm: done})
			if err != nil {
				// The channel closes; teardown requeues what is left.
				ch.tx.ops = ops[i+1:]
				return toAMQP(err, m)
			}
			if op.mandatory && res.Unroutable() {
				ch.pushReturn(op.msg)
			}
		case opAck:
			for _, r := range op.recs {
				r.q.Ack(r.id)
			}
		case opNack:
			for _, r := range op.recs {
				r.q.Reject(r.id, op.requeue)
			}
		}
	}
	done(nil)
	return nil
}

// txRollback discards buffered publishes and puts buffered settlements
// back among the unacknowledged deliveries.
func (ch *channel) txRollback(m *wire.TxRollback) error {
	if ch.tx == nil {
		return errorf(wire.PreconditionFailed, m, "channel is not transactional")
	}
	var recs []unackRec
	for _, op := range ch.tx.ops {
		recs = append(recs, op.recs...)
	}
	ch.tx.ops = nil
	if len(recs) > 0 {
		ch.mu.Lock()
		ch.unacked.restore(recs)
		for _, r := range recs {
			if r.counted {
				ch.nUnacked++
				ch.uBytes += r.size
			}
		}
		ch.mu.Unlock()
	}
	ch.c.out.pushMethod(ch.id, &wire.TxRollbackOk{})
	return nil
}

// pushIfOpen queues m unless the channel was torn down meanwhile (answers
// completed by other goroutines must not reach a reused channel number).
func (ch *channel) pushIfOpen(m wire.Method) {
	ch.mu.Lock()
	if !ch.closed {
		ch.c.out.pushMethod(ch.id, m)
	}
	ch.mu.Unlock()
}
