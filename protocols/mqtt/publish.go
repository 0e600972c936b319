package mqtt

import (
	"errors"
	"sync"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/router"
)

// pendingAck is the PUBACK (QoS 1) or PUBREC (QoS 2) owed for one inbound
// publish. Acks are written strictly in the order the publishes arrived
// ([MQTT-4.6.0-2]), each once the router's Confirm has fired and Publish has
// returned (Unroutable is known only then).
type pendingAck struct {
	c          *conn
	id         uint16
	qos        byte
	confirmed  bool // Confirm fired (guarded by c.mu)
	published  bool // vhost.Publish returned (guarded by c.mu)
	unroutable bool
	err        error
}

func (a *pendingAck) ready() bool { return a.confirmed && a.published }

// confirm is the router's Confirm callback. It may run synchronously inside
// Publish or later on another goroutine (once storage has made the message
// durable).
func (a *pendingAck) confirm(err error) {
	c := a.c
	c.mu.Lock()
	a.confirmed, a.err = true, err
	wake := a.published && c.acks.len() > 0 && *c.acks.peek() == a
	c.mu.Unlock()
	if wake {
		c.signal()
	}
}

// reasonFor maps a failed publish to an MQTT 5 reason code, at the edge.
func reasonFor(err error) packets.Code {
	switch core.KindOf(err) {
	case core.ResourceError:
		return packets.ErrQuotaExceeded
	case core.AccessRefused, core.NotAllowed:
		return packets.ErrNotAuthorized
	case core.PreconditionFailed, core.InvalidArgument:
		return packets.ErrImplementationSpecificError
	default:
		return packets.ErrUnspecifiedError
	}
}

// publish handles one inbound PUBLISH in the reader goroutine, after mochi
// validated it and resolved its topic alias. mochi itself neither acks,
// retains nor fans it out: the bridge routes it and acknowledges it when the
// router confirms it.
func (c *conn) publish(pk *packets.Packet) {
	qos := pk.FixedHeader.Qos
	cl := c.client()
	if qos == 2 {
		switch c.sess.qos2Begin(pk.PacketID) {
		case qos2Pending:
			return // its PUBREC follows once the first copy is confirmed
		case qos2Acked:
			// The client did not get our PUBREC: say it again, without
			// routing the message twice ([MQTT-4.3.3-10]).
			c.pushAck(&pendingAck{c: c, id: pk.PacketID, qos: 2, confirmed: true, published: true})
			return
		}
	}
	in := inbound{topic: pk.TopicName, payload: pk.Payload, qos: qos, retain: pk.FixedHeader.Retain}
	var props *packets.Properties
	if c.v5 {
		props = &pk.Properties
	}
	var a *pendingAck
	if qos > 0 {
		a = &pendingAck{c: c, id: pk.PacketID, qos: qos}
		c.pushAck(a)
		cl.State.Inflight.DecreaseReceiveQuota()
	}
	res, err := c.s.route(c.vhost, in, props, c.origin(), a)
	if err != nil {
		c.s.log.Debug("publish refused", "conn", c.id, "client", c.clientID, "topic", pk.TopicName, "err", err)
	}
	if a == nil {
		return
	}
	c.mu.Lock()
	a.published, a.unroutable = true, err == nil && res.Unroutable()
	if err != nil && !a.confirmed {
		a.confirmed, a.err = true, err
	}
	wake := a.confirmed && *c.acks.peek() == a
	// Backpressure: a client whose acknowledgements cannot be written is
	// not read any further until they can.
	for c.unwritten >= c.s.opts.ReceiveMaximum && !c.closing {
		c.ackCond.Wait()
	}
	c.mu.Unlock()
	if wake {
		c.signal()
	}
}

func (c *conn) pushAck(a *pendingAck) {
	c.mu.Lock()
	c.acks.push(a)
	c.unwritten++
	wake := a.ready() && c.acks.len() == 1
	c.mu.Unlock()
	if wake {
		c.signal()
	}
}

// writeAck encodes one PUBACK or PUBREC (writer goroutine).
func (c *conn) writeAck(a *pendingAck) {
	cl := c.client()
	code := packets.CodeSuccess
	switch {
	case a.err != nil:
		code = reasonFor(a.err)
	case a.unroutable && c.v5:
		code = packets.CodeNoMatchingSubscribers
	}
	if code.Code >= 0x80 && !c.v5 {
		// MQTT 3 has no negative acknowledgement: closing the connection
		// is the only way to tell the client its message was not taken.
		c.s.log.Warn("publish not accepted; closing the MQTT 3 connection", "conn", c.id, "client", c.clientID, "err", a.err)
		if a.qos == 2 {
			c.sess.qos2Delete(a.id)
		}
		c.closeRead()
		return
	}
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Puback},
		PacketID:    a.id,
		ReasonCode:  code.Code,
		Created:     time.Now().Unix(),
	}
	if code != packets.CodeSuccess {
		// Also makes mochi's encoder write a success code other than 0x00
		// (it writes the reason code only for errors or with properties).
		pk.Properties.ReasonString = code.Reason
	}
	if a.qos == 2 {
		pk.FixedHeader.Type = packets.Pubrec
		if code.Code < 0x80 {
			c.sess.qos2Acked(a.id)
		} else {
			c.sess.qos2Delete(a.id)
			cl.State.Inflight.IncreaseReceiveQuota() // the flow ends here
		}
	} else {
		cl.State.Inflight.IncreaseReceiveQuota()
	}
	if err := cl.WritePacket(pk); err != nil {
		c.s.log.Debug("ack not written", "conn", c.id, "err", err)
	}
}

// route publishes an MQTT application message to the router; a, when not
// nil, is confirmed by the router. A retained message is also stored (or
// cleared, for an empty payload) in the vhost's retained store.
func (s *Server) route(v *router.VHost, in inbound, props *packets.Properties, origin core.Origin, a *pendingAck) (router.PublishResult, error) {
	m := toMessage(in, props, origin)
	if in.retain {
		s.retained.store(v.Name(), in, props, time.Now())
	}
	opts := router.PublishOptions{FromClient: true}
	if a != nil {
		opts.Confirm = a.confirm
	}
	return v.Publish(m, opts)
}

// publishWill publishes a client's will message.
func (s *Server) publishWill(v *router.VHost, w *inbound, origin core.Origin) {
	if _, err := s.route(v, *w, w.props, origin, nil); err != nil {
		s.log.Debug("will not published", "conn", origin.Conn, "topic", w.topic, "err", err)
	}
}

// retainedStore keeps retained messages, one mochi topic index per vhost
// (mochi's own index is global, and vhosts must not see each other's).
type retainedStore struct {
	mu  sync.Mutex
	idx map[string]*mochi.TopicsIndex
	// scan serialises changes with scans: mochi's index reads a topic's
	// retained path unlocked while it scans for a filter.
	scan sync.RWMutex
	// onChange is told of every retained message stored or cleared (the
	// server persists them).
	onChange func(vhost string, pk packets.Packet)
}

func (r *retainedStore) index(vhost string, create bool) *mochi.TopicsIndex {
	r.mu.Lock()
	defer r.mu.Unlock()
	x := r.idx[vhost]
	if x == nil && create {
		if r.idx == nil {
			r.idx = map[string]*mochi.TopicsIndex{}
		}
		x = mochi.NewTopicsIndex()
		r.idx[vhost] = x
	}
	return x
}

// store retains in (or clears its topic when the payload is empty).
func (r *retainedStore) store(vhost string, in inbound, props *packets.Properties, now time.Time) {
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: in.qos, Retain: true},
		TopicName:   in.topic,
		Payload:     in.payload,
		Created:     now.Unix(),
	}
	if props != nil {
		pk.Properties = publishProperties(props)
		if e := props.MessageExpiryInterval; e > 0 {
			pk.Expiry = pk.Created + int64(e)
		}
	}
	if r.onChange != nil {
		r.onChange(vhost, pk)
	}
	r.retain(vhost, pk)
}

// retain puts pk in vhost's index, or clears its topic for an empty
// payload.
func (r *retainedStore) retain(vhost string, pk packets.Packet) {
	x := r.index(vhost, len(pk.Payload) > 0)
	if x == nil {
		return
	}
	r.scan.Lock()
	x.RetainMessage(pk)
	r.scan.Unlock()
}

// messages returns the unexpired retained messages matching filter. Expired
// ones are removed on the way.
func (r *retainedStore) messages(vhost, filter string, now time.Time) []packets.Packet {
	x := r.index(vhost, false)
	if x == nil {
		return nil
	}
	r.scan.RLock()
	pks := x.Messages(filter)
	r.scan.RUnlock()
	out := pks[:0]
	for _, pk := range pks {
		if pk.Expiry > 0 && pk.Expiry < now.Unix() {
			r.retain(vhost, packets.Packet{TopicName: pk.TopicName})
			if r.onChange != nil {
				r.onChange(vhost, packets.Packet{TopicName: pk.TopicName})
			}
			continue
		}
		out = append(out, pk)
	}
	return out
}

// publishProperties copies the properties a PUBLISH carries end to end.
func publishProperties(p *packets.Properties) packets.Properties {
	return packets.Properties{
		PayloadFormat:         p.PayloadFormat,
		PayloadFormatFlag:     p.PayloadFormatFlag,
		MessageExpiryInterval: p.MessageExpiryInterval,
		ContentType:           p.ContentType,
		ResponseTopic:         p.ResponseTopic,
		CorrelationData:       p.CorrelationData,
		User:                  p.User,
	}
}

// errTimeout reports a read deadline expiry (mochi's keep-alive).
func errTimeout(err error) bool {
	var ne interface{ Timeout() bool }
	return errors.As(err, &ne) && ne.Timeout()
}
