package stomp

import (
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-stomp/stomp/v3/frame"

	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/protocols/stomp/wire"
)

// STOMP header names of the AMQP properties, as RabbitMQ names them, plus
// amqp-cluster-id (RabbitMQ drops cluster_id; Bourse keeps every property).
const (
	hContentType     = "content-type"
	hContentEncoding = "content-encoding"
	hPersistent      = "persistent"
	hPriority        = "priority"
	hCorrelationID   = "correlation-id"
	hReplyTo         = "reply-to"
	hExpiration      = "expiration"
	hAMQPMessageID   = "amqp-message-id"
	hTimestamp       = "timestamp"
	hType            = "type"
	hUserID          = "user-id"
	hAppID           = "app-id"
	hClusterID       = "amqp-cluster-id"
)

// reservedHeaders are STOMP header names that never carry an AMQP header
// as a plain STOMP header: the property names above and the frame headers
// of SEND and MESSAGE. An AMQP header with one of these names (or one that
// the session's version cannot write) travels only inside the typed
// header, so the round trip AMQP → STOMP → AMQP still restores it.
var reservedHeaders = map[string]bool{
	hContentType: true, hContentEncoding: true, hPersistent: true, hPriority: true,
	hCorrelationID: true, hReplyTo: true, hExpiration: true, hAMQPMessageID: true,
	hTimestamp: true, hType: true, hUserID: true, hAppID: true, hClusterID: true,
	frame.Destination: true, frame.Receipt: true, frame.Transaction: true,
	frame.ContentLength: true, frame.MessageId: true, frame.Subscription: true,
	frame.Ack: true, "redelivered": true, core.TypedHeaders: true,
}

// sendOnlyHeaders are SEND (or copied MESSAGE) headers that are protocol,
// not message content: they never become AMQP headers.
var sendOnlyHeaders = map[string]bool{
	frame.Destination: true, frame.Receipt: true, frame.Transaction: true,
	frame.ContentLength: true, frame.MessageId: true, frame.Subscription: true,
	frame.Ack: true, "redelivered": true,
}

// maxAMQPName is the AMQP field-table key limit (a shortstr).
const maxAMQPName = 255

// buildMessage turns a SEND into the message to publish to ex with key.
// RabbitMQ's property headers set the properties, x-bourse-typed restores
// typed headers, and every other header becomes a string AMQP header.
func (c *conn) buildMessage(f *frame.Frame, ex, key string) (*core.Message, error) {
	m := &core.Message{
		Exchange: ex, RoutingKey: key, Body: f.Body,
		Origin: core.Origin{Protocol: core.ProtoSTOMP, Conn: c.id, VHost: c.vh.Name(), User: c.user},
	}
	p := &m.Props
	var plain map[string]string
	typed := ""
	h := f.Header
	// Backwards, so that the first of repeated headers wins (STOMP 1.2
	// "Repeated Header Entries").
	for i := h.Len() - 1; i >= 0; i-- {
		k, v := h.GetAt(i)
		switch k {
		case hContentType:
			p.ContentType = v
		case hContentEncoding:
			p.ContentEncoding = v
		case hPersistent:
			switch strings.ToLower(v) {
			case "true":
				p.DeliveryMode = core.Persistent
			case "false":
				p.DeliveryMode = core.Transient
			default:
				p.DeliveryMode = 0 // as RabbitMQ: anything else is "not persistent"
			}
		case hPriority:
			n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 8)
			if err != nil {
				return nil, invalidHeader(hPriority, "want an integer from 0 to 255, got '%s'", v)
			}
			p.Priority = uint8(n)
		case hCorrelationID:
			p.CorrelationID = v
		case hReplyTo:
			p.ReplyTo = v
		case hExpiration:
			p.Expiration = v
		case hAMQPMessageID:
			p.MessageID = v
		case hTimestamp:
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return nil, invalidHeader(hTimestamp, "want seconds since the Unix epoch, got '%s'", v)
			}
			p.Timestamp = time.Unix(n, 0).UTC()
		case hType:
			p.Type = v
		case hUserID:
			p.UserID = v
		case hAppID:
			p.AppID = v
		case hClusterID:
			p.ClusterID = v
		case core.TypedHeaders:
			typed = v
		default:
			if sendOnlyHeaders[k] {
				continue
			}
			if len(k) > maxAMQPName {
				return nil, invalidHeader(truncateName(k), "header names are limited to %d bytes", maxAMQPName)
			}
			if plain == nil {
				plain = make(map[string]string, h.Len())
			}
			plain[k] = v
		}
	}
	if _, _, err := core.ParseExpiration(p.Expiration); err != nil {
		return nil, err
	}
	if p.UserID != "" && p.UserID != c.user {
		return nil, core.Errorf(core.PreconditionFailed, "user_id property set to '%s' but authenticated user was '%s'", p.UserID, c.user)
	}
	if err := c.resolveReplyTo(p); err != nil {
		return nil, err
	}
	if plain != nil || typed != "" {
		t, err := core.JoinHeaders(plain, typed)
		if err != nil {
			return nil, invalidHeader(core.TypedHeaders, "%v", err)
		}
		for k := range t {
			if len(k) > maxAMQPName {
				return nil, invalidHeader(core.TypedHeaders, "header names are limited to %d bytes", maxAMQPName)
			}
		}
		if len(t) > 0 {
			m.Headers = t
		}
	}
	return m, nil
}

func truncateName(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// resolveReplyTo rewrites a SEND's reply-to into the AMQP reply_to: a
// /temp-queue/ creates this connection's private reply queue and becomes
// its name; a /reply-queue/ becomes the queue name it wraps. So an AMQP
// replier publishes to the default exchange with reply_to as the key, and
// a STOMP replier, who sees "/reply-queue/<name>", SENDs to that.
func (c *conn) resolveReplyTo(p *core.Properties) error {
	if id, ok := strings.CutPrefix(p.ReplyTo, tempQueuePrefix); ok {
		if id == "" || strings.Contains(id, "/") {
			return invalidHeader(hReplyTo, "'%s' is not a valid temp queue destination", p.ReplyTo)
		}
		name, err := c.ensureTempQueue(id)
		if err != nil {
			return err
		}
		p.ReplyTo = name
		return nil
	}
	if name, ok := strings.CutPrefix(p.ReplyTo, "/reply-queue/"); ok && name != "" {
		p.ReplyTo = name
	}
	return nil
}

// appendMessageHead encodes a delivery's MESSAGE command and headers. It
// runs in the writer goroutine.
func (c *conn) appendMessageHead(dst []byte, it *outItem) []byte {
	v := c.wv
	s, m := it.sub, it.msg
	dst = append(dst, "MESSAGE\n"...)
	dst = wire.AppendHeader(dst, v, frame.Subscription, s.id)
	dest := s.dest
	if !s.temp {
		dest = formatDestination(m.Exchange, m.RoutingKey)
	}
	dst = wire.AppendHeader(dst, v, frame.Destination, dest)
	mid := s.tag + "@@" + c.session + "@@" + strconv.FormatUint(it.n, 10)
	dst = wire.AppendHeader(dst, v, frame.MessageId, mid)
	dst = wire.AppendHeader(dst, v, "redelivered", strconv.FormatBool(it.redelivered))
	if v == wire.V12 && s.mode != ackAuto {
		dst = wire.AppendHeader(dst, v, frame.Ack, mid)
	}
	dst = appendProps(dst, v, &m.Props)
	dst = c.appendHeaders(dst, v, m.Headers)
	dst = wire.AppendContentLength(dst, len(m.Body))
	return append(dst, '\n')
}

// appendProps writes the AMQP properties under RabbitMQ's header names.
func appendProps(dst []byte, v wire.Version, p *core.Properties) []byte {
	str := func(name, val string) {
		if val != "" {
			dst = wire.AppendHeader(dst, v, name, val)
		}
	}
	str(hContentType, p.ContentType)
	str(hContentEncoding, p.ContentEncoding)
	switch p.DeliveryMode {
	case core.Persistent:
		dst = wire.AppendHeader(dst, v, hPersistent, "true")
	case core.Transient:
		dst = wire.AppendHeader(dst, v, hPersistent, "false")
	}
	if p.Priority != 0 {
		dst = wire.AppendHeader(dst, v, hPriority, strconv.Itoa(int(p.Priority)))
	}
	str(hCorrelationID, p.CorrelationID)
	if p.ReplyTo != "" {
		dst = wire.AppendHeader(dst, v, hReplyTo, stompReplyTo(p.ReplyTo))
	}
	str(hExpiration, p.Expiration)
	str(hAMQPMessageID, p.MessageID)
	if !p.Timestamp.IsZero() {
		dst = wire.AppendHeader(dst, v, hTimestamp, strconv.FormatInt(p.Timestamp.Unix(), 10))
	}
	str(hType, p.Type)
	str(hUserID, p.UserID)
	str(hAppID, p.AppID)
	str(hClusterID, p.ClusterID)
	return dst
}

// appendHeaders writes AMQP headers: plain strings as STOMP headers, and
// everything a STOMP header cannot carry exactly (other types, reserved or
// unwritable names) in the x-bourse-typed header (core.SplitHeaders'
// format), with a readable rendering beside it where the name allows.
func (c *conn) appendHeaders(dst []byte, v wire.Version, h core.Table) []byte {
	if len(h) == 0 {
		return dst
	}
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var typed core.Table
	for _, k := range keys {
		val := h[k]
		s, isString := val.(string)
		if isString && !reservedHeaders[k] && wire.Representable(v, k, s) {
			dst = wire.AppendHeader(dst, v, k, s)
			continue
		}
		if typed == nil {
			typed = core.Table{}
		}
		typed[k] = val
		if !reservedHeaders[k] && !isString {
			if r := core.RenderValue(val); wire.Representable(v, k, r) {
				dst = wire.AppendHeader(dst, v, k, r)
			}
		}
	}
	if typed != nil {
		enc, err := core.EncodeTyped(typed)
		if err != nil {
			c.log.Warn("stomp: headers not representable; sent without their types", "err", err)
			return dst
		}
		dst = wire.AppendHeader(dst, v, core.TypedHeaders, enc)
	}
	return dst
}
