package queue

import (
	"time"

	"github.com/bourse-mq/bourse/core"
)

// Remote keeps the messages of a queue that lives outside this process: in
// cluster mode, a durable queue shared by every node is a JetStream
// work-queue stream, and each node's Queue only holds what its own
// consumers were handed. A remote queue receives no Enqueue: its Remote
// feeds it with Feed, no more than Credit allows, and is told what became
// of every message it fed, by the handle it gave with it.
//
// Every method is called without the queue's lock held, from the goroutine
// of whoever acted on the queue (an acking consumer, a cancel); none may
// block for long or call back into the queue synchronously.
type Remote interface {
	// Ack: the message was consumed (acknowledged, or delivered with no
	// acknowledgement): remove it for good.
	Ack(h any)
	// Nak: give the message back to be delivered again, here or on
	// another node (reject or nack with requeue, a consumer gone with the
	// message unacknowledged, the queue closed on this node).
	Nak(h any)
	// Term: the message left the queue for good without being consumed
	// (dead-lettered, expired, dropped, purged).
	Term(h any)
	// Wake says that the local consumers' credit may have changed.
	Wake()
	// Closed says that the queue was deleted on this node: stop feeding.
	Closed()
	// Pull takes one message at once for a basic.get, if the queue has
	// one; count is the deliveries before this one. It may wait on the
	// network briefly.
	Pull() (m *core.Message, redelivered bool, count uint32, h any, ok bool)
	// Ready is how many messages the queue holds ready outside this node
	// (not handed to any node yet, or given back), ok false when unknown.
	// With fresh it may wait on the network briefly for a current figure;
	// without, it answers at once with the last one it has.
	Ready(fresh bool) (n int, ok bool)
	// Purge removes the messages that are ready outside this node and
	// returns how many it removed. Messages that consumers hold stay.
	Purge() (int, error)
}

// SetRemote makes q a remote queue. It must be called before q is used.
func (q *Queue) SetRemote(r Remote) {
	q.mu.Lock()
	q.remote = r
	q.mu.Unlock()
}

// Remote returns the queue's Remote, nil for a local queue.
func (q *Queue) Remote() Remote {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.remote
}

// remoteUnbounded is the credit a consumer without a prefetch limit (or
// with no-ack) gives a remote queue: how many messages this node takes
// for it at a time, so that one node does not hoard a shared queue.
const remoteUnbounded = 128

// Credit returns how many more messages the local consumers can take:
// the sum of their free prefetch, minus the messages already waiting here.
func (q *Queue) Credit() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.deleted {
		return 0
	}
	n := 0
	subs := q.subs
	if q.cfg.Args.SingleActive && len(subs) > 0 {
		subs = subs[:1]
	}
	for _, s := range subs {
		if s.blocked || s.canceled {
			continue
		}
		free := remoteUnbounded
		if !s.opts.NoAck && s.opts.Prefetch > 0 {
			free = min(free, s.opts.Prefetch-s.unacked)
		} else if !s.opts.NoAck {
			free -= s.unacked
		}
		n += max(free, 0)
	}
	return n - q.nready
}

// Feed adds a message the Remote took for this node's consumers, and
// delivers it if a consumer has credit. redelivered and count are the
// delivery state the Remote keeps (count: deliveries before this one). It
// reports false when the queue has no consumer any more (or was deleted):
// the message was not taken, and the Remote gives it back.
func (q *Queue) Feed(m *core.Message, redelivered bool, count uint32, h any) bool {
	var out effects
	q.mu.Lock()
	if q.deleted || len(q.subs) == 0 {
		q.mu.Unlock()
		return false
	}
	now := q.hooks.Now()
	q.seq++
	e := &entry{seq: q.seq, msg: m, pri: q.priorityOf(m), size: m.Size(), redelivered: redelivered, count: count, h: h}
	e.expireAt = q.expiryOf(m, m.Arrived)
	q.published.Add(1)
	q.pushReadyLocked(e)
	q.dispatchLocked(&out, now)
	q.mu.Unlock()
	out.run(q)
	return true
}

// returnReadyLocked gives a remote queue's ready messages back to the
// Remote (no consumer is left here to take them).
func (q *Queue) returnReadyLocked(out *effects) {
	if q.remote == nil || q.nready == 0 {
		return
	}
	for i := range q.levels {
		for _, e := range q.levels[i].clear() {
			if e.h != nil {
				out.naks = append(out.naks, e.h)
			}
		}
	}
	q.nready, q.readyBytes, q.memBytes = 0, 0, 0
}

// runDeadLetter republishes one dead letter; a remote message is
// terminated only once the dead letter is safe, and given back if it
// could not be.
func (q *Queue) runDeadLetter(d dlMsg) {
	if d.h == nil || q.remote == nil {
		if q.hooks.DeadLetter != nil {
			q.hooks.DeadLetter(d.dlx, d.m)
		}
		return
	}
	r, h := q.remote, d.h
	if q.hooks.DeadLetterConfirm == nil {
		if q.hooks.DeadLetter != nil {
			q.hooks.DeadLetter(d.dlx, d.m)
		}
		r.Term(h)
		return
	}
	q.hooks.DeadLetterConfirm(d.dlx, d.m, func(err error) {
		if err != nil {
			r.Nak(h)
			return
		}
		r.Term(h)
	})
}

// pullForGet gives a remote queue with nothing ready here one message from
// its Remote, for Get.
func (q *Queue) pullForGet() {
	q.mu.Lock()
	r, need := q.remote, q.remote != nil && q.nready == 0 && !q.deleted
	q.mu.Unlock()
	if !need {
		return
	}
	m, redelivered, count, h, ok := r.Pull()
	if !ok {
		return
	}
	q.mu.Lock()
	if q.deleted {
		q.mu.Unlock()
		r.Nak(h)
		return
	}
	q.seq++
	e := &entry{seq: q.seq, msg: m, pri: q.priorityOf(m), size: m.Size(), redelivered: redelivered, count: count, h: h}
	e.expireAt = q.expiryOf(m, m.Arrived)
	q.published.Add(1)
	q.levels[e.pri].pushFront(e)
	q.nready++
	q.readyBytes += int64(e.size)
	q.memBytes += int64(e.size)
	q.mu.Unlock()
}

// ExpiresAt is when a message of this queue expires (x-message-ttl or its
// own expiration, the earlier, counted from its publish); zero: never.
func (q *Queue) ExpiresAt(m *core.Message) time.Time {
	if ns := q.expiryOf(m, m.Arrived); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// ExpireRemote expires a message the Remote took only to expire it
// (nobody pulled it for a consumer): it is dead-lettered with reason
// expired, or dropped without a DLX, as an expired head is; h is
// terminated once the dead letter is safe (given back if it cannot be).
// It reports false, taking nothing, when m has not expired yet or the
// queue was deleted: the Remote gives it back.
func (q *Queue) ExpireRemote(m *core.Message, count uint32, h any) bool {
	var out effects
	q.mu.Lock()
	at := q.expiryOf(m, m.Arrived)
	if q.deleted || q.remote == nil || at == 0 || at >= q.hooks.Now().UnixNano() {
		q.mu.Unlock()
		return false
	}
	// seq 0: the entry is not the store's (a remote queue keeps none).
	e := &entry{msg: m, pri: q.priorityOf(m), size: m.Size(), redelivered: count > 0, count: count, h: h}
	q.deadLetterLocked(&out, e, "expired")
	q.mu.Unlock()
	out.run(q)
	return true
}
