package amqp

import (
	"sync"
	"sync/atomic"

	"github.com/bourse-mq/bourse/protocols/amqp/wire"
	"github.com/bourse-mq/bourse/router/queue"
)

type chState uint8

const (
	chOpen    chState = iota
	chClosing         // channel.close sent; awaiting close-ok, other frames dropped
)

// channel is one AMQP channel. Fields above mu belong to the connection's
// reader goroutine; fields below it are shared with the goroutines that
// deliver messages (queue.Consumer calls come from publishers, ackers and
// timers) and are guarded by mu. Lock order: queue lock → channel.mu →
// outbound.mu. Nothing calls into a queue while holding channel.mu.
type channel struct {
	c  *conn
	id uint16

	// Reader-owned.
	state                   chState
	lastQueue               string // for the empty queue name (§1.7.2.1)
	prefetch, prefetchBytes int    // basic.qos global=false: for later consumers
	confirmMode             bool
	tx                      *txState
	content                 content
	reply                   *consumer // direct reply-to consumer
	replyAddr               string    // its amq.rabbitmq.reply-to.… address
	pubOK                   bool      // pubExchange passed the write check at pubGen
	pubGen                  uint64
	pubExchange             string
	mode                    atomic.Uint32 // modeConfirm | modeTx, for the management API

	cf confirms // publisher confirms; own lock

	mu                        sync.Mutex
	closed                    bool // torn down: refuse deliveries
	flowOff                   bool // channel.flow active=false
	nextTag                   uint64
	unacked                   unackedList
	nUnacked                  int // consumer deliveries awaiting ack, for basic.qos global
	uBytes                    int
	gPrefetch, gPrefetchBytes int // basic.qos global=true: shared by the channel's consumers
	consumers                 map[string]*consumer
	blocked                   []*queue.Sub // refused for channel-wide reasons (qos, flow)
}

// Channel modes, for the management API.
const (
	modeConfirm = 1
	modeTx      = 2
)

func newChannel(c *conn, id uint16) *channel {
	ch := &channel{c: c, id: id, consumers: map[string]*consumer{}}
	ch.cf.init(c.out, id)
	return ch
}

// publishBlame stands for basic.publish in exceptions raised by content
// frames.
var publishBlame wire.Method = &wire.BasicPublish{}

// frame handles one frame for this channel; it returns a connection
// exception and handles channel exceptions itself.
func (ch *channel) frame(f wire.Frame) *amqpError {
	if ch.state == chClosing {
		ch.closingFrame(f)
		return nil
	}
	var (
		m   wire.Method
		err error
	)
	switch f.Type {
	case wire.FrameMethod:
		if ch.content.active() {
			return errorf(wire.UnexpectedFrame, publishBlame, "expected content header or body on channel %d, got a method frame", ch.id)
		}
		if m, err = ch.c.decodeMethod(f.Payload); err != nil {
			return toAMQP(err, nil)
		}
		err = ch.method(m)
	case wire.FrameHeader:
		m = publishBlame
		err = ch.header(f.Payload)
	case wire.FrameBody:
		m = publishBlame
		err = ch.body(f.Payload, ch.c.fr.Owned())
	}
	if err == nil {
		return nil
	}
	ae := toAMQP(err, m)
	if ae.hard() {
		return ae
	}
	ch.fail(ae)
	return nil
}

// fail raises a channel exception: the channel is torn down at once and
// channel.close sent; frames are dropped until close-ok.
func (ch *channel) fail(ae *amqpError) {
	ch.c.log.Info("channel exception", "channel", ch.id, "code", ae.code, "text", ae.replyText(),
		"class", ae.classID, "method", ae.methodID)
	ch.teardown()
	ch.state = chClosing
	ch.c.out.pushMethod(ch.id, &wire.ChannelClose{ReplyCode: ae.code, ReplyText: ae.replyText(),
		FailedClassID: ae.classID, FailedMethodID: ae.methodID})
}

func (ch *channel) closingFrame(f wire.Frame) {
	if f.Type != wire.FrameMethod {
		return
	}
	m, err := ch.c.decodeMethod(f.Payload)
	if err != nil {
		return
	}
	switch m.(type) {
	case *wire.ChannelCloseOk:
		ch.c.freeChannel(ch.id)
	case *wire.ChannelClose:
		// Both sides closed at once: answer, and keep waiting for the
		// close-ok of ours.
		ch.c.out.pushMethod(ch.id, &wire.ChannelCloseOk{})
	}
}

// method dispatches a method for an open channel.
func (ch *channel) method(m wire.Method) error {
	switch m := m.(type) {
	case *wire.ChannelOpen:
		return errorf(wire.ChannelError, m, "second 'channel.open' seen on channel %d", ch.id)
	case *wire.ChannelClose:
		ch.teardown()
		ch.c.out.pushMethod(ch.id, &wire.ChannelCloseOk{})
		ch.c.freeChannel(ch.id)
	case *wire.ChannelCloseOk, *wire.ChannelFlowOk:
		// Answers to nothing the server sent; ignored.
	case *wire.ChannelFlow:
		ch.flow(m)
	case *wire.AccessRequest:
		ch.c.out.pushMethod(ch.id, &wire.AccessRequestOk{Ticket: 1})

	case *wire.ExchangeDeclare:
		return ch.exchangeDeclare(m)
	case *wire.ExchangeDelete:
		return ch.exchangeDelete(m)
	case *wire.ExchangeBind:
		return ch.exchangeBind(m)
	case *wire.ExchangeUnbind:
		return ch.exchangeUnbind(m)
	case *wire.QueueDeclare:
		return ch.queueDeclare(m)
	case *wire.QueueBind:
		return ch.queueBind(m)
	case *wire.QueueUnbind:
		return ch.queueUnbind(m)
	case *wire.QueuePurge:
		return ch.queuePurge(m)
	case *wire.QueueDelete:
		return ch.queueDelete(m)

	case *wire.BasicQos:
		return ch.qos(m)
	case *wire.BasicConsume:
		return ch.consume(m)
	case *wire.BasicCancel:
		ch.cancel(m)
	case *wire.BasicPublish:
		return ch.startPublish(m)
	case *wire.BasicGet:
		return ch.get(m)
	case *wire.BasicAck:
		return ch.settle(m, m.DeliveryTag, m.Multiple, opAck, false)
	case *wire.BasicNack:
		return ch.settle(m, m.DeliveryTag, m.Multiple, opNack, m.Requeue)
	case *wire.BasicReject:
		return ch.settle(m, m.DeliveryTag, false, opNack, m.Requeue)
	case *wire.BasicRecover:
		if err := ch.recover(m, m.Requeue); err != nil {
			return err
		}
		ch.c.out.pushMethod(ch.id, &wire.BasicRecoverOk{})
	case *wire.BasicRecoverAsync:
		return ch.recover(m, m.Requeue)

	case *wire.ConfirmSelect:
		return ch.confirmSelect(m)
	case *wire.TxSelect:
		return ch.txSelect(m)
	case *wire.TxCommit:
		return ch.txCommit(m)
	case *wire.TxRollback:
		return ch.txRollback(m)

	default:
		return errorf(wire.CommandInvalid, m, "unexpected method %s on channel %d", m.Name(), ch.id)
	}
	return nil
}

// flow handles channel.flow from the client: active=false stops deliveries
// on this channel until active=true.
func (ch *channel) flow(m *wire.ChannelFlow) {
	ch.mu.Lock()
	ch.flowOff = !m.Active
	var kicks []*queue.Sub
	if m.Active {
		kicks = ch.takeBlockedLocked()
	}
	ch.mu.Unlock()
	ch.c.out.pushMethod(ch.id, &wire.ChannelFlowOk{Active: m.Active})
	kickAll(kicks)
}

// takeBlockedLocked returns the subscriptions refused for channel-wide
// reasons, for the caller to kick after unlocking.
func (ch *channel) takeBlockedLocked() []*queue.Sub {
	k := ch.blocked
	ch.blocked = nil
	return k
}

func kickAll(subs []*queue.Sub) {
	for _, s := range subs {
		s.Kick()
	}
}

// teardown ends the channel's broker state: subscriptions are cancelled,
// then every unacknowledged delivery (including acks buffered by an open
// transaction) is requeued, flagged redelivered. Idempotent.
func (ch *channel) teardown() {
	ch.mu.Lock()
	if ch.closed {
		ch.mu.Unlock()
		return
	}
	ch.closed = true
	cons := ch.consumers
	ch.consumers = nil
	recs := ch.unacked.drain(nil)
	ch.nUnacked, ch.uBytes = 0, 0
	ch.blocked = nil
	ch.mu.Unlock()

	ch.cf.close()
	ch.content.reset()
	for _, cs := range cons {
		cs.stop()
	}
	ch.reply = nil
	if ch.tx != nil {
		for _, op := range ch.tx.ops {
			recs = append(recs, op.recs...)
		}
		ch.tx = nil
	}
	for _, r := range recs {
		r.q.Reject(r.id, true)
	}
}
