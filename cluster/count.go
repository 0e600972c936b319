package cluster

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// countTTL is how long a shared queue's ready count is reused before it is
// asked of JetStream again.
const countTTL = 250 * time.Millisecond

// readyCount is the last known number of a shared queue's messages that
// JetStream has not handed to any node (its consumer's NumPending).
type readyCount struct {
	mu         sync.Mutex
	n          int
	ok         bool
	at         time.Time
	refreshing bool
}

// Ready implements queue.Remote: the messages JetStream holds for the
// queue that no node has taken (ready messages given back by a node count,
// as they wait to be delivered again).
func (r *remoteQueue) Ready(fresh bool) (int, bool) { return r.count.get(r.s, fresh, r.refreshCount) }

// get returns the count. With fresh (a declare-ok) it is asked of
// JetStream at once (refresh); otherwise (the management API, which may
// ask under the vhost's lock) one older than countTTL is refreshed in the
// background and the last one is returned.
func (c *readyCount) get(s *Queues, fresh bool, refresh func()) (int, bool) {
	c.mu.Lock()
	stale := time.Since(c.at) > countTTL
	if stale && !fresh && !c.refreshing && s.begin() {
		c.refreshing = true
		go func() {
			defer s.wg.Done()
			refresh()
		}()
	}
	c.mu.Unlock()
	if fresh {
		refresh()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n, c.ok
}

// set records a count just asked of JetStream (kept as it was on err).
func (c *readyCount) set(n int, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.refreshing = false
	if err == nil {
		c.n, c.ok, c.at = n, true, time.Now()
	}
}

// stale makes the next get ask JetStream.
func (c *readyCount) stale() {
	c.mu.Lock()
	c.at = time.Time{}
	c.mu.Unlock()
}

// begin counts a background task of the store in its wait group, unless
// the store is closing.
func (s *Queues) begin() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	return true
}

func (r *remoteQueue) refreshCount() {
	ctx, cancel := context.WithTimeout(r.ctx, min(r.s.timeout, time.Second))
	defer cancel()
	n, err := r.pending(ctx)
	if err != nil {
		r.s.log.Debug("shared queue count unavailable", "vhost", r.vhost, "queue", r.name, "err", err)
	}
	r.count.set(n, err)
}

// pending asks JetStream for the messages of the queue that no node holds:
// the stream's messages (its leader's figure, which includes every
// publish confirmed so far) less those its consumer has handed out and not
// had acknowledged. (The consumer's own NumPending may lag behind the
// stream on another server.)
func (r *remoteQueue) pending(ctx context.Context) (int, error) {
	cons, err := r.consumer()
	if err != nil {
		return 0, err
	}
	msgs, err := r.stored(ctx)
	if err != nil {
		return 0, err
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return 0, err
	}
	return max(msgs-info.NumAckPending, 0), nil
}

// stored is how many messages the queue's stream holds.
func (r *remoteQueue) stored(ctx context.Context) (int, error) {
	st, err := r.s.js.Stream(ctx, QueueStream(r.vhost, r.name))
	if err != nil {
		return 0, err
	}
	return int(st.CachedInfo().State.Msgs), nil
}

// purgeTime bounds a purge: it removes what was ready when it began, not
// what publishers keep adding.
const purgeTime = 10 * time.Second

// Purge implements queue.Remote. JetStream's own purge would also drop the
// messages consumers hold unacknowledged (RabbitMQ keeps those), so the
// ready ones are taken from the queue's consumer and terminated, up to as
// many as were ready when the purge began.
func (r *remoteQueue) Purge() (int, error) {
	ctx, cancel := context.WithTimeout(r.ctx, purgeTime)
	defer cancel()
	target, err := r.pending(ctx)
	if err != nil {
		return 0, err
	}
	before, err := r.stored(ctx)
	if err != nil {
		return 0, err
	}
	cons, err := r.consumer()
	if err != nil {
		return 0, err
	}
	purged := 0
	for purged < target && ctx.Err() == nil {
		batch, err := cons.FetchNoWait(min(target-purged, 256))
		if err != nil {
			return purged, err
		}
		got := 0
		for m := range batch.Messages() {
			got++
			if err := m.Term(); err == nil {
				purged++
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return purged, err
		}
		if got == 0 {
			break
		}
	}
	// Terminations are not acknowledged: wait (a little) until the stream
	// has dropped them, so that a count right after the purge-ok is current.
	for deadline := time.Now().Add(2 * time.Second); purged > 0 && time.Now().Before(deadline); {
		if n, err := r.stored(ctx); err != nil || n <= before-purged {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.count.stale()
	return purged, nil
}
