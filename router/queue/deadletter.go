package queue

import (
	"time"

	"github.com/bourse-mq/bourse/core"
)

// deadLettered returns the message to republish to the dead-letter exchange,
// with the x-death header written as RabbitMQ writes it: an array of tables,
// newest first, one per (queue, reason) pair with a count; the per-message
// expiration is removed and kept as original-expiration; x-first-death-* are
// set once and x-last-death-* on every dead-lettering.
func deadLettered(m *core.Message, queue, reason string, a *Args, now time.Time) *core.Message {
	h := m.Headers.Clone()
	if h == nil {
		h = core.Table{}
	}
	keys := []any{m.RoutingKey}
	if cc, ok := h["CC"].([]any); ok {
		keys = append(keys, cc...)
	}
	delete(h, "BCC")

	deaths, _ := h["x-death"].([]any)
	var entry core.Table
	rest := make([]any, 0, len(deaths)+1)
	for _, d := range deaths {
		t, ok := d.(core.Table)
		if ok && entry == nil && t.String("queue") == queue && t.String("reason") == reason {
			entry = t
			continue
		}
		rest = append(rest, d)
	}
	if entry == nil {
		entry = core.Table{
			"queue":        queue,
			"reason":       reason,
			"exchange":     m.Exchange,
			"routing-keys": keys,
			"count":        int64(0),
		}
		if m.Props.Expiration != "" {
			entry["original-expiration"] = m.Props.Expiration
		}
	}
	n, _ := entry.Int("count")
	entry["count"] = n + 1
	entry["time"] = now.Truncate(time.Second)
	h["x-death"] = append([]any{entry}, rest...)
	if _, ok := h["x-first-death-queue"]; !ok {
		h["x-first-death-queue"] = queue
		h["x-first-death-reason"] = reason
		h["x-first-death-exchange"] = m.Exchange
	}
	h["x-last-death-queue"] = queue
	h["x-last-death-reason"] = reason
	h["x-last-death-exchange"] = m.Exchange

	c := m.WithHeaders(h)
	c.Props.Expiration = ""
	c.Exchange = a.DLX
	if a.HasDLRK {
		c.RoutingKey = a.DLRoutingKey
	}
	c.Arrived = now
	return c
}

// IsDeadLetterCycle reports whether routing the dead-lettered m to queue
// would close a cycle that no consumer broke: as RabbitMQ, a message that
// comes back to a queue it was dead-lettered from, with no "rejected" death
// on the way, is dropped instead of looping forever.
func IsDeadLetterCycle(m *core.Message, queue string) bool {
	deaths, _ := m.Headers["x-death"].([]any)
	for _, d := range deaths {
		t, ok := d.(core.Table)
		if !ok {
			continue
		}
		if t.String("reason") == "rejected" {
			return false
		}
		if t.String("queue") == queue {
			return true
		}
	}
	return false
}
