package cluster

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/bourse-mq/bourse/storage/record"
)

// Expiry of shared queues with a dead-letter exchange and x-message-ttl
// that nobody pulls. JetStream cannot expire them (it would delete what
// must be dead-lettered), so one node, the reaper, does what the router's
// queue does at the head: it dead-letters the expired head messages.
//
// The reaper is the node holding the key reapKey of LeasesBucket (taken by
// compare-and-set when free, renewed every leaseTTL/3 while the node has
// such queues, gone leaseTTL after its holder died). Every reapTick it
// looks at each such queue whose next check is due: when no node holds
// messages of it (the consumer's ack pending is 0) and none pulls (no
// waiting pull request), it reads the first message the consumer would
// hand out (a leader read of the stream), and, if the router's rule says
// it has expired, takes it from the consumer and lets the router's queue
// dead-letter it (ExpireRemote: x-death reason expired, the original
// terminated once the dead letter is confirmed), then the next, up to
// reapBatch a round. A head not expired yet is looked at again when it
// expires (at most reapIdle later); an empty queue after its x-message-ttl
// (at most reapIdle); one a node pulls or holds after reapBusy. A node
// that pulls for its consumers expires what it pulls itself, as before.
const (
	reapKey   = "reaper"
	reapTick  = 250 * time.Millisecond
	reapIdle  = 5 * time.Second
	reapBusy  = time.Second // next look at a queue a node pulls or holds
	reapBatch = 256
)

// reap runs the reaper's rounds until ctx ends.
func (s *Queues) reap(ctx context.Context) {
	defer s.wg.Done()
	t := time.NewTicker(reapTick)
	defer t.Stop()
	var rev uint64 // the lease's revision while this node holds it
	var renewed time.Time
	next := map[*remoteQueue]time.Time{}
	defer func() { s.releaseReaper(rev) }()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		qs := s.reapable()
		if len(qs) == 0 {
			s.releaseReaper(rev)
			rev = 0
			s.reaping.Store(false)
			clear(next)
			continue
		}
		rev, renewed = s.holdReaper(ctx, rev, renewed)
		s.reaping.Store(rev != 0)
		if rev == 0 {
			clear(next)
			continue
		}
		now := time.Now()
		live := make(map[*remoteQueue]bool, len(qs))
		for _, r := range qs {
			live[r] = true
			if at, ok := next[r]; ok && now.Before(at) {
				continue
			}
			next[r] = r.reap()
		}
		for r := range next {
			if !live[r] {
				delete(next, r)
			}
		}
	}
}

// reapable returns the open queues the reaper looks after.
func (s *Queues) reapable() []*remoteQueue {
	s.mu.Lock()
	defer s.mu.Unlock()
	var qs []*remoteQueue
	for r := range s.open {
		if r.reapable {
			qs = append(qs, r)
		}
	}
	return qs
}

// holdReaper takes the reaper's lease if it is free, or renews it when due;
// it returns the lease's revision, 0 when another node holds it.
func (s *Queues) holdReaper(ctx context.Context, rev uint64, renewed time.Time) (uint64, time.Time) {
	if rev != 0 && time.Since(renewed) < leaseTTL/3 {
		return rev, renewed
	}
	ctx, cancel := context.WithTimeout(ctx, min(s.timeout, 2*time.Second))
	defer cancel()
	kv, err := s.leaseKV(ctx)
	if err != nil {
		s.log.Warn("reaper lease unavailable", "err", err)
		return 0, time.Time{}
	}
	if rev == 0 {
		rev, err = kv.Create(ctx, reapKey, s.leases.id)
	} else {
		rev, err = kv.Update(ctx, reapKey, s.leases.id, rev)
	}
	if err != nil {
		if !errors.Is(err, jetstream.ErrKeyExists) {
			s.log.Debug("reaper lease not held", "err", err)
		}
		return 0, time.Time{}
	}
	return rev, time.Now()
}

// releaseReaper deletes the reaper's lease if this node holds it.
func (s *Queues) releaseReaper(rev uint64) {
	if rev == 0 || s.leases.kv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), min(s.timeout, 2*time.Second))
	defer cancel()
	if err := s.leases.kv.Delete(ctx, reapKey, jetstream.LastRevision(rev)); err != nil {
		s.log.Debug("reaper lease not released (it expires)", "err", err)
	}
}

// reap dead-letters the queue's expired head messages if nobody holds or
// pulls any, and returns when to look again.
func (r *remoteQueue) reap() time.Time {
	now := time.Now()
	idle := now.Add(min(max(r.q.Config().Args.MessageTTL, reapTick), reapIdle))
	ctx, cancel := context.WithTimeout(r.ctx, min(r.s.timeout, 5*time.Second))
	defer cancel()
	// Not r.consumer(): that creates a missing stream, and the queue may
	// be being deleted. Binding reads the consumer's info.
	cons, err := r.s.js.Consumer(ctx, QueueStream(r.vhost, r.name), queueConsumer)
	if err != nil {
		r.s.log.Debug("reaper: consumer info", "vhost", r.vhost, "queue", r.name, "err", err)
		return now.Add(reapBusy)
	}
	info := cons.CachedInfo()
	if info.NumPending == 0 {
		return idle
	}
	if info.NumWaiting > 0 || info.NumAckPending > 0 {
		// A node pulls (it expires what it gets), or holds messages
		// (what JetStream hands out next may be one of those coming
		// back): not the reaper's.
		return now.Add(reapBusy)
	}
	st, err := r.s.js.Stream(ctx, QueueStream(r.vhost, r.name))
	if err != nil {
		return now.Add(reapTick)
	}
	subject := QueueSubject(r.vhost, r.name)
	seq := info.Delivered.Stream + 1
	for range reapBatch {
		raw, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return idle
		}
		if err != nil {
			r.s.log.Debug("reaper: read the head", "vhost", r.vhost, "queue", r.name, "err", err)
			return now.Add(reapTick)
		}
		msg, err := record.DecodeMessage(raw.Data)
		if err != nil {
			return now.Add(reapIdle) // the node that pulls it terminates it
		}
		if at := r.q.ExpiresAt(msg); at.IsZero() || time.Now().Before(at) {
			if at.IsZero() {
				return now.Add(reapIdle)
			}
			if later := now.Add(reapIdle); later.Before(at) {
				return later
			}
			return at
		}
		if !r.expireHead(cons, raw.Sequence) {
			return now.Add(reapTick)
		}
		seq = raw.Sequence + 1
	}
	return now // more: the next round
}

// expireHead takes the consumer's next message, which should be the
// stream's message seq, expired, and has the router's queue dead-letter
// it. It reports false when it got another (a node pulled meanwhile):
// that one is expired too if it is due, else given back (flagged
// redelivered when it comes again).
func (r *remoteQueue) expireHead(cons jetstream.Consumer, seq uint64) bool {
	batch, err := cons.FetchNoWait(1)
	if err != nil {
		return false
	}
	took := false
	for m := range batch.Messages() {
		md, err := m.Metadata()
		if err != nil {
			continue
		}
		msg, count, ok := r.hold(m)
		if !ok {
			continue
		}
		if !r.q.ExpireRemote(msg, count, m) {
			r.Nak(m)
			continue
		}
		took = md.Sequence.Stream == seq
	}
	return took
}
