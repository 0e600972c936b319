package cluster

import (
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/bourse-mq/bourse/core"

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

// minMaxAge is JetStream's smallest MaxAge.
const minMaxAge = 100 * time.Millisecond

// dedupWindow is a queue stream's Duplicates window unless its MaxAge is
// shorter (JetStream wants the window within MaxAge).
const dedupWindow = 2 * time.Minute

// queueTTL makes JetStream expire a shared queue's messages when nobody
// consumes them, where it can do so as RabbitMQ does: only without a
// dead-letter exchange (JetStream deletes, it cannot dead-letter).
//
//   - x-message-ttl is the stream's MaxAge (at least JetStream's 100 ms:
//     an x-message-ttl of 0 or below lives 100 ms in JetStream);
//   - every queue's stream allows per-message TTLs (JetStream cannot turn
//     that off again, so it is the same with or without a DLX), and
//     Publish gives a message whose own expiration comes first its Nats-TTL
//     (msgTTL) only on queues without a DLX.
//
// JetStream counts from when it stored the message, the router's queue
// from the publish (core.Message.Arrived), so JetStream never removes a
// message before the router would have expired it: the router still
// expires what a node pulled, at the earlier deadline, and dead-letters it
// where the queue has a DLX.
func queueTTL(cfg *jetstream.StreamConfig, a queue.Args) {
	cfg.AllowMsgTTL = true
	if !a.HasMessageTTL || a.HasDLX {
		return
	}
	cfg.MaxAge = max(a.MessageTTL, minMaxAge)
	cfg.Duplicates = min(cfg.Duplicates, cfg.MaxAge)
}

// msgTTL returns the Nats-TTL header by which JetStream expires m in a
// queue with arguments a, "" when JetStream does not: the queue has a DLX,
// m has no (valid) expiration, or the queue's x-message-ttl comes first.
// JetStream's per-message TTLs are whole seconds, at least one, so the
// expiration is rounded up: never early, at most a second late (the router
// expires what a node pulls at the exact deadline).
func msgTTL(m *core.Message, a queue.Args) string {
	if a.HasDLX {
		return ""
	}
	ttl, ok, err := m.ExpirationTTL()
	if !ok || err != nil || a.HasMessageTTL && a.MessageTTL <= ttl {
		return ""
	}
	secs := max(int64((ttl+time.Second-1)/time.Second), 1)
	return strconv.FormatInt(secs, 10) + "s"
}

// jetStreamLimited reports whether JetStream enforces a limit or an
// expiry of a queue with arguments a on the whole queue (queueLimits,
// queueTTL).
func jetStreamLimited(a queue.Args) bool {
	var cfg jetstream.StreamConfig
	queueLimits(&cfg, a)
	queueTTL(&cfg, a)
	return cfg.MaxAge != 0 || cfg.MaxMsgs != 0 || cfg.MaxBytes != 0
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
	r := s.byName[queueRef{vhost, name}]
	s.mu.Unlock()
	if r == nil {
		return nil
	}
	a := r.q.Config().Args
	return &a
}

// queueRef names a shared queue.
type queueRef struct{ vhost, name string }

// ttlDisabled reports whether a publish was refused for its Nats-TTL
// header: the stream does not allow per-message TTLs (one created before
// this version and not declared again since).
func ttlDisabled(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeMsgTTLDisabled
}

// errCodeMsgTTLDisabled is JetStream's JSMessageTTLDisabledErr.
const errCodeMsgTTLDisabled jetstream.ErrorCode = 10166
