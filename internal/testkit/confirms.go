package testkit

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Ledger records what AMQP publishers sent and what the broker confirmed
// (basic.ack) or refused (basic.nack), by message body, for the tests that
// kill or cut off broker nodes under load: every confirmed message must be
// delivered, unconfirmed ones may be missing.
type Ledger struct {
	mu        sync.Mutex
	sent      int
	confirmed map[string]bool
	nacked    map[string]bool
}

// NewLedger returns an empty ledger.
func NewLedger() *Ledger {
	return &Ledger{confirmed: map[string]bool{}, nacked: map[string]bool{}}
}

// Counts returns how many messages were sent, confirmed and nacked.
func (l *Ledger) Counts() (sent, confirmed, nacked int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sent, len(l.confirmed), len(l.nacked)
}

// Confirmed returns the confirmed bodies.
func (l *Ledger) Confirmed() map[string]bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]bool, len(l.confirmed))
	for b := range l.confirmed {
		out[b] = true
	}
	return out
}

// Missing returns the confirmed bodies not in got, sorted (at most 20).
func (l *Ledger) Missing(got map[string]int) []string {
	var out []string
	for b := range l.Confirmed() {
		if got[b] == 0 {
			out = append(out, b)
		}
	}
	sort.Strings(out)
	return out[:min(len(out), 20)]
}

// Load is what PublishConfirmed sends: persistent messages "<Name>:<n>"
// (n from 1, padded with spaces to Size bytes) to Queue through the
// default exchange, at most Window unconfirmed at a time, until Max
// messages or Stop closes; each confirm is awaited at most ConfirmWait.
type Load struct {
	Queue, Name       string
	Max, Window, Size int
	ConfirmWait       time.Duration
	Stop              <-chan struct{}
}

// PublishConfirmed publishes ld on ch, which it puts in confirm mode,
// records each outcome in l, and returns the error that stopped it (nil
// when Max was reached or Stop closed): a channel or connection error, or
// a confirm not within ConfirmWait.
func PublishConfirmed(ch *amqp.Channel, ld Load, l *Ledger) error {
	if err := ch.Confirm(false); err != nil {
		return fmt.Errorf("confirm.select: %w", err)
	}
	type out struct {
		body string
		dc   *amqp.DeferredConfirmation
	}
	var pending []out
	settle := func(o out) error {
		ctx, cancel := context.WithTimeout(context.Background(), ld.ConfirmWait)
		defer cancel()
		ok, err := o.dc.WaitContext(ctx)
		if err != nil {
			return fmt.Errorf("confirm of %s: %w", o.body, err)
		}
		l.mu.Lock()
		if ok {
			l.confirmed[o.body] = true
		} else {
			l.nacked[o.body] = true
		}
		l.mu.Unlock()
		return nil
	}
publish:
	for n := 1; n <= ld.Max; n++ {
		select {
		case <-ld.Stop:
			break publish
		default:
		}
		if len(pending) == max(ld.Window, 1) {
			if err := settle(pending[0]); err != nil {
				return err
			}
			pending = pending[1:]
		}
		id := fmt.Sprintf("%s:%d", ld.Name, n)
		body := []byte(id)
		if len(body) < ld.Size {
			body = append(body, bytes.Repeat([]byte{' '}, ld.Size-len(body))...)
		}
		dc, err := ch.PublishWithDeferredConfirm("", ld.Queue, false, false, amqp.Publishing{
			DeliveryMode: amqp.Persistent, MessageId: id, Body: body})
		if err != nil {
			return fmt.Errorf("publish %s: %w", id, err)
		}
		l.mu.Lock()
		l.sent++
		l.mu.Unlock()
		pending = append(pending, out{id, dc})
	}
	for _, o := range pending {
		if err := settle(o); err != nil {
			return err
		}
	}
	return nil
}

// Drain consumes queue on ch (prefetch 100, manual acks) into got (body →
// deliveries) until every body in want was seen or wait passed; it checks
// that every delivery of a body seen before is flagged redelivered, and
// returns a description of the first one that is not ("" if none).
func Drain(ch *amqp.Channel, queue string, got map[string]int, want map[string]bool, wait time.Duration) (string, error) {
	if err := ch.Qos(100, 0, false); err != nil {
		return "", err
	}
	tag := "drain-" + strings.ReplaceAll(queue, ".", "-")
	ds, err := ch.Consume(queue, tag, false, false, false, false, nil)
	if err != nil {
		return "", err
	}
	defer func() { _ = ch.Cancel(tag, false) }()
	missing := 0
	for b := range want {
		if got[b] == 0 {
			missing++
		}
	}
	bad := ""
	deadline := time.After(wait)
	// After the last wanted message, a short quiet time catches late
	// duplicates.
	var quiet <-chan time.Time
	if missing == 0 {
		quiet = time.After(500 * time.Millisecond)
	}
	for {
		select {
		case d, ok := <-ds:
			if !ok {
				return bad, fmt.Errorf("consumer of %s closed", queue)
			}
			b := string(bytes.TrimRight(d.Body, " "))
			if got[b] > 0 && !d.Redelivered && bad == "" {
				bad = fmt.Sprintf("%s delivered again without the redelivered flag", b)
			}
			got[b]++
			if got[b] == 1 && want[b] {
				if missing--; missing == 0 {
					quiet = time.After(500 * time.Millisecond)
				}
			}
			if err := d.Ack(false); err != nil {
				return bad, err
			}
		case <-quiet:
			return bad, nil
		case <-deadline:
			return bad, nil
		}
	}
}
