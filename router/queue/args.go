package queue

import (
	"time"

	"github.com/bourse-mq/bourse/core"
)

// Overflow is the x-overflow policy applied when a queue reaches
// x-max-length or x-max-length-bytes.
type Overflow uint8

// Overflow policies, as RabbitMQ names them.
const (
	DropHead         Overflow = iota // "drop-head" (default): drop (or dead-letter) the oldest
	RejectPublish                    // "reject-publish": refuse the new message (nack on confirm)
	RejectPublishDLX                 // "reject-publish-dlx": refuse it and dead-letter it
)

func (o Overflow) String() string {
	switch o {
	case RejectPublish:
		return "reject-publish"
	case RejectPublishDLX:
		return "reject-publish-dlx"
	default:
		return "drop-head"
	}
}

// Args are a queue's parsed x-arguments. Zero values mean "not set" unless a
// Has field says otherwise.
type Args struct {
	MessageTTL     time.Duration // x-message-ttl
	HasMessageTTL  bool
	Expires        time.Duration // x-expires (queue TTL); 0 = never
	MaxLength      int64         // x-max-length; -1 = unlimited
	MaxLengthBytes int64         // x-max-length-bytes; -1 = unlimited
	Overflow       Overflow      // x-overflow
	DLX            string        // x-dead-letter-exchange
	HasDLX         bool
	DLRoutingKey   string // x-dead-letter-routing-key
	HasDLRK        bool
	MaxPriority    uint8 // x-max-priority; 0 = not a priority queue
	SingleActive   bool  // x-single-active-consumer
	Type           string
	// Streams.
	MaxAge         time.Duration // x-max-age
	SegmentBytes   int64         // x-stream-max-segment-size-bytes
	DedupWindow    time.Duration // x-stream-dedup-window (ms), 0 = off
	HasDedupWindow bool
}

// ParseArgs validates and parses queue declare arguments the way RabbitMQ
// does, answering PreconditionFailed (406) for a bad value. Unknown arguments
// are ignored, as RabbitMQ ignores them.
func ParseArgs(t core.Table) (Args, error) {
	a := Args{MaxLength: -1, MaxLengthBytes: -1, Type: "classic"}
	if v, ok := t["x-message-ttl"]; ok {
		n, err := nonNegInt("x-message-ttl", v)
		if err != nil {
			return a, err
		}
		a.MessageTTL, a.HasMessageTTL = time.Duration(n)*time.Millisecond, true
	}
	if v, ok := t["x-expires"]; ok {
		n, err := nonNegInt("x-expires", v)
		if err != nil {
			return a, err
		}
		if n == 0 {
			return a, core.Errorf(core.PreconditionFailed, "invalid arg 'x-expires': value 0 must be a positive integer")
		}
		a.Expires = time.Duration(n) * time.Millisecond
	}
	if v, ok := t["x-max-length"]; ok {
		n, err := nonNegInt("x-max-length", v)
		if err != nil {
			return a, err
		}
		a.MaxLength = n
	}
	if v, ok := t["x-max-length-bytes"]; ok {
		n, err := nonNegInt("x-max-length-bytes", v)
		if err != nil {
			return a, err
		}
		a.MaxLengthBytes = n
	}
	if v, ok := t["x-overflow"]; ok {
		s, _ := stringArg(v)
		switch s {
		case "drop-head":
			a.Overflow = DropHead
		case "reject-publish":
			a.Overflow = RejectPublish
		case "reject-publish-dlx":
			a.Overflow = RejectPublishDLX
		default:
			return a, core.Errorf(core.PreconditionFailed, "invalid arg 'x-overflow': %v is not one of drop-head, reject-publish, reject-publish-dlx", v)
		}
	}
	if v, ok := t["x-dead-letter-exchange"]; ok {
		s, ok := stringArg(v)
		if !ok {
			return a, core.Errorf(core.PreconditionFailed, "invalid arg 'x-dead-letter-exchange': want a string, got %T", v)
		}
		if err := core.ValidateName("exchange", s); err != nil {
			return a, core.Wrap(core.PreconditionFailed, err, "invalid arg 'x-dead-letter-exchange'")
		}
		a.DLX, a.HasDLX = s, true
	}
	if v, ok := t["x-dead-letter-routing-key"]; ok {
		s, ok := stringArg(v)
		if !ok {
			return a, core.Errorf(core.PreconditionFailed, "invalid arg 'x-dead-letter-routing-key': want a string, got %T", v)
		}
		if !a.HasDLX {
			return a, core.Errorf(core.PreconditionFailed, "invalid arg 'x-dead-letter-routing-key': x-dead-letter-exchange must be set as well")
		}
		a.DLRoutingKey, a.HasDLRK = s, true
	}
	if v, ok := t["x-max-priority"]; ok {
		n, err := nonNegInt("x-max-priority", v)
		if err != nil {
			return a, err
		}
		if n > 255 {
			return a, core.Errorf(core.PreconditionFailed, "invalid arg 'x-max-priority': %d is above the maximum of 255", n)
		}
		a.MaxPriority = uint8(n)
	}
	if v, ok := t["x-single-active-consumer"]; ok {
		b, ok := v.(bool)
		if !ok {
			return a, core.Errorf(core.PreconditionFailed, "invalid arg 'x-single-active-consumer': want a boolean, got %T", v)
		}
		a.SingleActive = b
	}
	if v, ok := t["x-queue-type"]; ok {
		s, _ := stringArg(v)
		switch s {
		case "classic", "stream":
			a.Type = s
		case "quorum":
			// Accepted for client compatibility: Bourse's durable classic
			// queues already confirm only after fsync.
			a.Type = "quorum"
		default:
			return a, core.Errorf(core.PreconditionFailed, "invalid arg 'x-queue-type': %v is not one of classic, quorum, stream", v)
		}
	}
	if v, ok := t["x-max-age"]; ok {
		s, _ := stringArg(v)
		d, err := ParseAge(s)
		if err != nil {
			return a, core.Errorf(core.PreconditionFailed, "invalid arg 'x-max-age': %v", err)
		}
		a.MaxAge = d
	}
	if v, ok := t["x-stream-max-segment-size-bytes"]; ok {
		n, err := nonNegInt("x-stream-max-segment-size-bytes", v)
		if err != nil {
			return a, err
		}
		if n == 0 || n > 3_000_000_000 {
			return a, core.Errorf(core.PreconditionFailed, "invalid arg 'x-stream-max-segment-size-bytes': %d is not in 1..3000000000", n)
		}
		a.SegmentBytes = n
	}
	if v, ok := t["x-stream-dedup-window"]; ok {
		n, err := nonNegInt("x-stream-dedup-window", v)
		if err != nil {
			return a, err
		}
		a.DedupWindow, a.HasDedupWindow = time.Duration(n)*time.Millisecond, true
	}
	return a, nil
}

func nonNegInt(name string, v any) (int64, error) {
	n, ok := core.AsInt(v)
	if !ok {
		return 0, core.Errorf(core.PreconditionFailed, "invalid arg '%s': want an integer, got %T", name, v)
	}
	if n < 0 {
		return 0, core.Errorf(core.PreconditionFailed, "invalid arg '%s': %d is negative", name, n)
	}
	const maxMillis = int64(100 * 365 * 24 * time.Hour / time.Millisecond)
	if n > maxMillis && (name == "x-message-ttl" || name == "x-expires") {
		return 0, core.Errorf(core.PreconditionFailed, "invalid arg '%s': %d is too large", name, n)
	}
	return n, nil
}

func stringArg(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case []byte:
		return string(x), true
	}
	return "", false
}
