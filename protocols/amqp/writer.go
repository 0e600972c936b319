package amqp

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"log/slog"
	"time"

	"github.com/bourse-mq/bourse/protocols/amqp/wire"
	"github.com/bourse-mq/bourse/router/queue"
)

// writeBufSize is the bufio buffer of a connection's socket writer.
const writeBufSize = 32 << 10

// writeLoop is the connection's writer goroutine. It takes the whole queue
// as one batch, encodes it into the bufio.Writer and flushes only when the
// queue is empty afterwards, so bursts leave in few syscalls. It sends
// heartbeats when nothing was written for half the heartbeat interval.
func (c *conn) writeLoop() {
	defer close(c.writerDone)
	o := c.out
	w := &frameWriter{bw: bufio.NewWriterSize(c.nc, writeBufSize), log: c.log}
	var (
		hb        time.Duration
		ticker    *time.Ticker
		tick      <-chan time.Time
		lastWrite = time.Now()
		dead      bool
		kicks     []*queue.Sub
	)
	defer func() {
		if ticker != nil {
			ticker.Stop()
		}
	}()
	fail := func(err error) {
		if !dead {
			dead = true
			c.log.Debug("write failed", "err", err)
			o.abort()
			_ = c.nc.Close()
		}
	}
	for {
		o.mu.Lock()
		for len(o.items) == 0 && !o.closed {
			if o.heartbeat != hb {
				hb = o.heartbeat
				if ticker != nil {
					ticker.Stop()
					ticker, tick = nil, nil
				}
				if hb > 0 {
					ticker = time.NewTicker(hb / 4)
					tick = ticker.C
				}
			}
			o.mu.Unlock()
			select {
			case <-o.wake:
			case now := <-tick:
				if !dead && now.Sub(lastWrite) >= hb/2 {
					if !c.finishing.Load() {
						_ = c.nc.SetWriteDeadline(now.Add(c.s.opts.WriteTimeout))
					}
					err := wire.WriteHeartbeat(w.bw)
					if err == nil {
						err = w.bw.Flush()
					}
					if err != nil {
						fail(err)
					}
					lastWrite = now
				}
			}
			o.mu.Lock()
		}
		batch := o.items
		o.items = o.spare[:0]
		o.spare = nil
		closed, frameMax := o.closed, o.frameMax
		dead = dead || o.dead
		o.mu.Unlock()

		if !dead && !c.finishing.Load() {
			_ = c.nc.SetWriteDeadline(time.Now().Add(c.s.opts.WriteTimeout))
		}
		var n, nctl int
		for i := range batch {
			it := &batch[i]
			n += it.size
			if it.control() {
				nctl += it.size
			}
			if !dead {
				if err := w.write(it, frameMax); err != nil {
					fail(err)
				}
			}
		}
		clear(batch)

		o.mu.Lock()
		o.spare = batch[:0]
		o.bytes -= n
		o.ctl -= nctl
		o.ctlSeen.Store(int64(o.ctl))
		if o.bytes <= o.limit/2 && len(o.kicks) > 0 {
			kicks, o.kicks = o.kicks, kicks[:0]
		}
		if o.waiters > 0 {
			o.space.Broadcast()
		}
		empty := len(o.items) == 0
		o.mu.Unlock()

		// Kick outside the lock: a kick re-enters the queue, which may call
		// Deliver and push again.
		for i, s := range kicks {
			s.Kick()
			kicks[i] = nil
		}
		kicks = kicks[:0]
		if empty && !dead {
			if err := w.bw.Flush(); err != nil {
				fail(err)
			}
			lastWrite = time.Now()
		}
		if closed && empty {
			return
		}
	}
}

// frameWriter encodes outItems. It owns reusable method structs and
// properties, so encoding a delivery or a confirm allocates nothing unless
// the message has nested headers to convert.
type frameWriter struct {
	bw      *bufio.Writer
	log     *slog.Logger
	scratch []byte
	props   wire.Properties
	deliver wire.BasicDeliver
	getOk   wire.BasicGetOk
	ret     wire.BasicReturn
	ack     wire.BasicAck
	nack    wire.BasicNack
}

// write encodes one item. Only I/O errors are returned; a value that
// cannot be encoded is logged and repaired or skipped, since the item came
// from the broker, not from this client.
func (w *frameWriter) write(it *outItem, frameMax uint32) error {
	switch it.kind {
	case itemAck:
		w.ack.DeliveryTag, w.ack.Multiple = it.tag, it.multiple
		return wire.WriteMethod(w.bw, it.ch, &w.ack)
	case itemNack:
		w.nack.DeliveryTag, w.nack.Multiple, w.nack.Requeue = it.tag, it.multiple, false
		return wire.WriteMethod(w.bw, it.ch, &w.nack)
	case itemDeliver:
		w.deliver = wire.BasicDeliver{ConsumerTag: it.ctag, DeliveryTag: it.tag, Redelivered: it.redelivered,
			Exchange: it.msg.Exchange, RoutingKey: it.msg.RoutingKey}
		return w.content(it, &w.deliver, frameMax)
	case itemGetOk:
		w.getOk = wire.BasicGetOk{DeliveryTag: it.tag, Redelivered: it.redelivered,
			Exchange: it.msg.Exchange, RoutingKey: it.msg.RoutingKey, MessageCount: it.count}
		return w.content(it, &w.getOk, frameMax)
	case itemReturn:
		w.ret = wire.BasicReturn{ReplyCode: it.replyCode, ReplyText: it.text,
			Exchange: it.msg.Exchange, RoutingKey: it.msg.RoutingKey}
		return w.content(it, &w.ret, frameMax)
	default:
		b, err := appendMethodFrame(w.scratch[:0], it.ch, it.method)
		if err != nil {
			w.log.Error("cannot encode method; dropped", "method", it.method.Name(), "err", err)
			return nil
		}
		w.scratch = b
		_, err = w.bw.Write(b)
		return err
	}
}

// content writes a method with content: the method and header frames are
// staged in scratch first, so that a value AMQP cannot carry (a routing key
// or property over 255 bytes, a header of an unknown type: possible in
// messages from other protocols) is repaired before anything is written.
func (w *frameWriter) content(it *outItem, m wire.Method, frameMax uint32) error {
	msg := it.msg
	b, err := appendMethodFrame(w.scratch[:0], it.ch, m)
	if err != nil {
		w.log.Warn("routing key or exchange name too long for AMQP; clipped", "exchange", clip(msg.Exchange, 64), "err", err)
		clipNames(m)
		if b, err = appendMethodFrame(w.scratch[:0], it.ch, m); err != nil {
			w.log.Error("cannot encode content method; dropped", "err", err)
			return nil
		}
	}
	mark := len(b)
	propsToWire(&w.props, msg)
	b2, err := appendHeaderFrame(b, it.ch, uint64(len(msg.Body)), &w.props, frameMax)
	if err != nil {
		w.log.Warn("message properties cannot be encoded in AMQP; headers dropped", "routing_key", clip(msg.RoutingKey, 64), "err", err)
		sanitizeProps(&w.props)
		if b2, err = appendHeaderFrame(b[:mark], it.ch, uint64(len(msg.Body)), &w.props, frameMax); err != nil {
			w.log.Error("cannot encode content header; dropped", "err", err)
			return nil
		}
	}
	w.props.Headers = nil // do not retain the message's table
	w.scratch = b2
	if _, err := w.bw.Write(b2); err != nil {
		return err
	}
	return wire.WriteBody(w.bw, it.ch, msg.Body, frameMax)
}

func clipNames(m wire.Method) {
	switch x := m.(type) {
	case *wire.BasicDeliver:
		x.Exchange, x.RoutingKey = clip(x.Exchange, 255), clip(x.RoutingKey, 255)
	case *wire.BasicGetOk:
		x.Exchange, x.RoutingKey = clip(x.Exchange, 255), clip(x.RoutingKey, 255)
	case *wire.BasicReturn:
		x.Exchange, x.RoutingKey = clip(x.Exchange, 255), clip(x.RoutingKey, 255)
	}
}

// Frame layout (AMQP 0-9-1 §4.2.3): type, channel, payload size, payload,
// frame-end. wire's own writers target a bufio.Writer; these two stage a
// frame in a byte slice so a failed encoding leaves nothing half-written.
const frameHeaderLen = 7

func appendFrameStart(b []byte, typ uint8, ch uint16) []byte {
	return append(b, typ, byte(ch>>8), byte(ch), 0, 0, 0, 0)
}

func finishFrame(b []byte, start int) []byte {
	binary.BigEndian.PutUint32(b[start+3:], uint32(len(b)-start-frameHeaderLen))
	return append(b, wire.FrameEnd)
}

func appendMethodFrame(b []byte, ch uint16, m wire.Method) ([]byte, error) {
	start := len(b)
	out, err := wire.EncodeMethod(appendFrameStart(b, wire.FrameMethod, ch), m)
	if err != nil {
		return b[:start], err
	}
	return finishFrame(out, start), nil
}

func appendHeaderFrame(b []byte, ch uint16, size uint64, p *wire.Properties, frameMax uint32) ([]byte, error) {
	start := len(b)
	out, err := wire.AppendHeader(appendFrameStart(b, wire.FrameHeader, ch), wire.ClassBasic, size, p)
	if err != nil {
		return b[:start], err
	}
	if frameMax != 0 && len(out)-start+1 > int(frameMax) {
		return b[:start], fmt.Errorf("content header of %d bytes exceeds frame-max %d: %w", len(out)-start+1, frameMax, wire.ErrFrameTooLarge)
	}
	return finishFrame(out, start), nil
}
