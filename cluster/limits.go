package cluster

import (
	"errors"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/bourse-mq/bourse/router/queue"
)

// queueLimits gives a shared queue's stream the length limits of its
// arguments where JetStream enforces them for the whole queue exactly as
// RabbitMQ does:
//
//   - x-max-length / x-max-length-bytes with overflow drop-head and no
//     dead-letter exchange: JetStream drops the oldest messages (Discard
//     old), silently, as RabbitMQ does without a DLX;
//   - with overflow reject-publish: JetStream refuses the publish (Discard
//     new), and the publisher gets a nack (atLimit).
//
// With a dead-letter exchange (drop-head dead-letters what it drops) or
// reject-publish-dlx, JetStream cannot, and each node enforces the limit
// on the messages it holds, as before. Each node also keeps enforcing it
// on its own share, which never holds more than the whole queue.
func queueLimits(cfg *jetstream.StreamConfig, a queue.Args) {
	if a.MaxLength < 0 && a.MaxLengthBytes < 0 || a.MaxLength == 0 || a.MaxLengthBytes == 0 {
		return // no limit; or 0, which JetStream reads as none
	}
	switch {
	case a.Overflow == queue.RejectPublish:
		cfg.Discard = jetstream.DiscardNew
	case a.Overflow == queue.DropHead && !a.HasDLX:
		cfg.Discard = jetstream.DiscardOld
	default:
		return
	}
	cfg.MaxMsgs, cfg.MaxBytes = -1, -1
	if a.MaxLength >= 0 {
		cfg.MaxMsgs = a.MaxLength
	}
	if a.MaxLengthBytes >= 0 {
		cfg.MaxBytes = a.MaxLengthBytes
	}
}

// atLimit reports whether a publish was refused because the stream is at
// its limits (Discard new).
func atLimit(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	d := apiErr.Description
	return strings.Contains(d, "maximum messages exceeded") || strings.Contains(d, "maximum bytes exceeded")
}

// argsOf returns the arguments of a shared queue this node knows (every
// node opens each shared queue), nil if it knows none of that name.
func (s *Queues) argsOf(vhost, name string) *queue.Args {
	s.mu.Lock()
	defer s.mu.Unlock()
	for r := range s.open {
		if r.vhost == vhost && r.name == name {
			a := r.q.Config().Args
			return &a
		}
	}
	return nil
}
