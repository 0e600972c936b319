package stomp

import (
	"sync/atomic"

	"github.com/go-stomp/stomp/v3/frame"

	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/router"
	"github.com/bourse-mq/bourse/router/queue"
)

// onSend handles SEND. Its RECEIPT is sent when the router's Confirm fires:
// for a persistent message on durable queues, once it is on disk.
func (c *conn) onSend(f *frame.Frame) error {
	dh, ok := f.Header.Contains(frame.Destination)
	if !ok {
		return missingHeader("SEND", frame.Destination)
	}
	d, err := parseDestination(dh)
	if err != nil {
		return err
	}
	_, inTx := f.Header.Contains(frame.Transaction)
	ex, key, err := c.sendTarget(d, dh, f, inTx)
	if err != nil {
		return err
	}
	if err := c.allowPublish(ex, key); err != nil {
		return err
	}
	m, err := c.buildMessage(f, ex, key)
	if err != nil {
		return err
	}
	receipt, hasReceipt := f.Header.Contains(frame.Receipt)
	if txid, ok := f.Header.Contains(frame.Transaction); ok {
		tx, err := c.tx(txid)
		if err != nil {
			return err
		}
		if err := c.addTxAction(tx, txAction{msg: m}, len(m.Body)); err != nil {
			return err
		}
		// The SEND is processed: it is part of the transaction. What the
		// COMMIT's RECEIPT promises covers its publication.
		if hasReceipt {
			c.sendReceipt(receipt)
		}
		return nil
	}
	return c.publish(m, receipt, hasReceipt, nil)
}

// sendTarget maps a SEND destination to the exchange and routing key.
func (c *conn) sendTarget(d destination, dh string, f *frame.Frame, inTx bool) (ex, key string, err error) {
	switch d.kind {
	case destQueue:
		return router.DefaultExchange, d.name, c.ensureQueue(d.name, f, false)
	case destTopic:
		return router.AMQTopic, d.name, nil
	case destExchange:
		if inTx {
			// Checked now: a transaction's publishes must not fail at
			// COMMIT for a reason known at SEND.
			if err := c.vh.DeclareExchange(router.ExchangeDecl{ExchangeInfo: router.ExchangeInfo{Name: d.name}, Passive: true}); err != nil {
				return "", "", err
			}
		}
		return d.name, d.key, nil
	case destAMQQueue, destReplyQueue:
		return router.DefaultExchange, d.name, nil
	case destStream:
		if _, err := c.streamQueue(d.name); err != nil {
			return "", "", err
		}
		return router.DefaultExchange, d.name, nil
	default: // destTempQueue
		return "", "", protoErr("Invalid destination", "'%s' is not a valid destination for SEND: temp queues are used in the reply-to header", dh)
	}
}

// confirmGroup sends one RECEIPT once every publish of a COMMIT is
// confirmed.
type confirmGroup struct {
	left    atomic.Int64
	failed  atomic.Bool
	receipt string
	has     bool
}

// publish hands m to the router. A Confirm is requested when the client
// waits on it (receipt, transaction) or when the message is persistent (so
// that DISCONNECT's RECEIPT can wait for it).
func (c *conn) publish(m *core.Message, receipt string, hasReceipt bool, g *confirmGroup) error {
	o := router.PublishOptions{FromClient: true}
	if hasReceipt || g != nil || m.Persistent() {
		c.confirms.add()
		if g != nil {
			g.left.Add(1)
		}
		o.Confirm = func(err error) { c.confirmed(err, receipt, hasReceipt, g) }
	}
	if _, err := c.vh.Publish(m, o); err != nil {
		if o.Confirm != nil {
			c.confirms.done()
			if g != nil {
				g.left.Add(-1)
			}
		}
		return err
	}
	return nil
}

// confirmed runs when the router confirms a publish, on whatever goroutine
// that happens.
func (c *conn) confirmed(err error, receipt string, hasReceipt bool, g *confirmGroup) {
	defer c.confirms.done()
	if err != nil {
		switch {
		case g != nil:
			if g.failed.CompareAndSwap(false, true) {
				c.fail(toProtoError(err), g.receipt)
			}
		case hasReceipt:
			c.fail(toProtoError(err), receipt)
		default:
			c.log.Debug("stomp publish not confirmed", "err", err)
		}
		return
	}
	switch {
	case g != nil:
		g.done(c)
	case hasReceipt:
		c.sendReceipt(receipt)
	}
}

func (g *confirmGroup) done(c *conn) {
	if g.left.Add(-1) == 0 && !g.failed.Load() && g.has {
		c.sendReceipt(g.receipt)
	}
}

// ensureTempQueue returns the queue behind /temp-queue/<id> for this
// connection, creating it on first use as RabbitMQ does: a server-named
// exclusive auto-delete queue with a synthesised auto-ack subscription
// whose MESSAGEs carry subscription and destination "/temp-queue/<id>".
func (c *conn) ensureTempQueue(id string) (string, error) {
	if s := c.temp[id]; s != nil {
		return s.queueName, nil
	}
	c.mu.Lock()
	count := len(c.subs)
	c.mu.Unlock()
	if count >= c.s.opts.MaxSubscriptions {
		return "", protoErr("Too many subscriptions", "This connection already has %d subscriptions (temp queues included)", count)
	}
	ok, err := c.vh.DeclareQueue(router.QueueDecl{QueueInfo: core.QueueInfo{Exclusive: true, AutoDelete: true}, Owner: c.id})
	if err != nil {
		return "", err
	}
	dest := tempQueuePrefix + id
	s := &subscription{c: c, id: dest, tag: "T_" + dest, dest: dest, mode: ackAuto, queueName: ok.Name, temp: true}
	c.mu.Lock()
	c.subs[s.tag] = s
	c.mu.Unlock()
	qs, err := c.vh.Consume(ok.Name, s, queue.ConsumeOptions{Tag: s.tag, NoAck: true, Owner: c.id})
	if err != nil {
		c.mu.Lock()
		delete(c.subs, s.tag)
		c.mu.Unlock()
		_, _ = c.vh.DeleteQueue(ok.Name, false, false, c.id)
		return "", err
	}
	s.setSub(qs)
	c.temp[id] = s
	return ok.Name, nil
}

// transaction buffers SENDs and ACK/NACKs until COMMIT.
type transaction struct {
	id      string
	actions []txAction
	bytes   int
}

type txAction struct {
	msg     *core.Message // a SEND, or
	ack     ackRef        // an ACK/NACK
	nack    bool
	requeue bool
}

// maxTxActions bounds the frames buffered in one transaction.
const maxTxActions = 100000

func (c *conn) tx(id string) (*transaction, error) {
	tx := c.txs[id]
	if tx == nil {
		return nil, protoErr("Bad transaction", "Invalid transaction identifier: '%s'", id)
	}
	return tx, nil
}

func (c *conn) addTxAction(tx *transaction, a txAction, size int) error {
	if len(tx.actions) >= maxTxActions {
		return protoErr("Transaction too large", "Transaction '%s' already holds %d frames", tx.id, len(tx.actions))
	}
	if c.txBytes+size > c.s.opts.MaxTxBytes {
		return protoErr("Transaction too large", "Open transactions would buffer more than %d bytes", c.s.opts.MaxTxBytes)
	}
	tx.actions = append(tx.actions, a)
	tx.bytes += size
	c.txBytes += size
	return nil
}

func (c *conn) onBegin(f *frame.Frame) error {
	id, ok := f.Header.Contains(frame.Transaction)
	if !ok {
		return missingHeader("BEGIN", frame.Transaction)
	}
	if c.txs[id] != nil {
		return protoErr("Bad transaction", "Transaction '%s' is already open", id)
	}
	if len(c.txs) >= c.s.opts.MaxTransactions {
		return protoErr("Too many transactions", "This connection already has %d open transactions", len(c.txs))
	}
	c.txs[id] = &transaction{id: id}
	return nil
}

func (c *conn) endTx(f *frame.Frame, command string) (*transaction, error) {
	id, ok := f.Header.Contains(frame.Transaction)
	if !ok {
		return nil, missingHeader(command, frame.Transaction)
	}
	tx, err := c.tx(id)
	if err != nil {
		return nil, err
	}
	delete(c.txs, id)
	c.txBytes -= tx.bytes
	return tx, nil
}

func (c *conn) onAbort(f *frame.Frame) error {
	_, err := c.endTx(f, "ABORT")
	return err
}

// onCommit applies a transaction's frames in order. Its RECEIPT is sent
// once every SEND in it is confirmed.
func (c *conn) onCommit(f *frame.Frame) error {
	tx, err := c.endTx(f, "COMMIT")
	if err != nil {
		return err
	}
	g := &confirmGroup{}
	g.receipt, g.has = f.Header.Contains(frame.Receipt)
	g.left.Store(1) // released below, once every publish is issued
	for _, a := range tx.actions {
		if a.msg == nil {
			c.settle(a.ack, a.nack, a.requeue)
			continue
		}
		if err := c.publish(a.msg, "", false, g); err != nil {
			g.failed.Store(true)
			return err
		}
	}
	g.done(c)
	return nil
}
