package core

import (
	"strconv"
	"time"
)

// Protocol names the adapter a message or connection came from.
type Protocol uint8

// Protocols known to the broker.
const (
	ProtoInternal Protocol = iota // produced by the broker itself (dead-lettering, management API)
	ProtoAMQP
	ProtoMQTT
	ProtoSTOMP
	ProtoHTTP
)

func (p Protocol) String() string {
	switch p {
	case ProtoAMQP:
		return "amqp"
	case ProtoMQTT:
		return "mqtt"
	case ProtoSTOMP:
		return "stomp"
	case ProtoHTTP:
		return "http"
	default:
		return "internal"
	}
}

// ConnID identifies one client connection across the broker. Zero means "no
// connection" (the broker itself).
type ConnID uint64

// Origin says where a message entered the broker.
type Origin struct {
	Protocol Protocol
	Conn     ConnID
	VHost    string
	User     string
}

// Delivery modes of AMQP 0-9-1 basic.properties.
const (
	Transient  uint8 = 1
	Persistent uint8 = 2
)

// Properties are the AMQP 0-9-1 basic properties, the richest property set of
// the three protocols; MQTT 5 and STOMP map onto them. A zero field means the
// property is absent.
type Properties struct {
	ContentType     string
	ContentEncoding string
	DeliveryMode    uint8 // 1 transient, 2 persistent, 0 unset (transient)
	Priority        uint8
	CorrelationID   string
	ReplyTo         string
	Expiration      string // milliseconds, as a decimal string (AMQP convention)
	MessageID       string
	Timestamp       time.Time // second precision on the AMQP wire
	Type            string
	UserID          string
	AppID           string
	ClusterID       string // deprecated in 0-9-1 but carried for losslessness
}

// Message is one published message. It is immutable once handed to the
// router: every queue it is routed to shares the same pointer, so nothing may
// modify a Message (or its Headers or Body) after Publish. Code that needs a
// variant (dead-lettering, for one) makes a shallow copy with WithHeaders.
type Message struct {
	Exchange   string
	RoutingKey string
	Props      Properties
	Headers    Table
	Body       []byte
	Origin     Origin
	// Arrived is when the broker accepted the message; TTLs count from it.
	Arrived time.Time
}

// Persistent reports whether the publisher asked for the message to survive a
// broker restart.
func (m *Message) Persistent() bool { return m.Props.DeliveryMode == Persistent }

// Size is the message's accounting size: its body length, which is what
// x-max-length-bytes and prefetch-size count, as in RabbitMQ.
func (m *Message) Size() int { return len(m.Body) }

// ExpirationTTL parses the per-message expiration property. ok is false when
// the property is absent; a malformed value is reported as an error so that
// adapters can refuse the publish (RabbitMQ closes the channel with 406).
func (m *Message) ExpirationTTL() (ttl time.Duration, ok bool, err error) {
	return ParseExpiration(m.Props.Expiration)
}

// ParseExpiration parses an AMQP expiration property: a non-negative integer
// number of milliseconds written as a decimal string.
func ParseExpiration(s string) (time.Duration, bool, error) {
	if s == "" {
		return 0, false, nil
	}
	n, err := strconv.ParseUint(s, 10, 63)
	if err != nil || n > uint64(maxTTL/time.Millisecond) {
		return 0, false, Errorf(PreconditionFailed, "invalid expiration %q: want a non-negative integer of milliseconds", s)
	}
	return time.Duration(n) * time.Millisecond, true, nil
}

// maxTTL bounds TTL arguments so that deadlines never overflow int64 nanoseconds.
const maxTTL = 100 * 365 * 24 * time.Hour

// WithHeaders returns a shallow copy of m that carries headers h instead of
// m.Headers. The body is shared.
func (m *Message) WithHeaders(h Table) *Message {
	c := *m
	c.Headers = h
	return &c
}
