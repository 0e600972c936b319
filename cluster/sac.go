package cluster

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// LeasesBucket is the KV bucket of single-active-consumer leases: which
// node's consumers may take a shared queue with x-single-active-consumer.
const LeasesBucket = "bourse_sac"

// leaseTTL is how long a lease outlives its holder: a node that dies
// holding one lets another node's consumer become active after it. The
// holder renews the lease every leaseTTL/3 while it has consumers.
const leaseTTL = 6 * time.Second

// leaseRetry is how often a node whose consumers wait tries for the lease.
const leaseRetry = 500 * time.Millisecond

// leases opens the lease bucket on first use (History 1, MaxAge leaseTTL:
// a lease not renewed disappears).
type leases struct {
	once sync.Once
	kv   jetstream.KeyValue
	err  error
	id   []byte // this node's value in the leases it holds
}

func (s *Queues) leaseKV(ctx context.Context) (jetstream.KeyValue, error) {
	s.leases.once.Do(func() {
		id := make([]byte, 8)
		_, _ = rand.Read(id)
		s.leases.id = []byte(hex.EncodeToString(id))
		s.leases.kv, s.leases.err = openKV(ctx, s.js, jetstream.KeyValueConfig{
			Bucket:      LeasesBucket,
			Description: "Bourse single-active-consumer leases of shared queues",
			History:     1,
			TTL:         leaseTTL,
			Storage:     jetstream.FileStorage,
			Replicas:    s.replicas,
		}, s.log)
	})
	return s.leases.kv, s.leases.err
}

// lease is this node's hold on a shared queue's single-active-consumer
// lease.
type lease struct {
	mu   sync.Mutex
	rev  uint64 // the key's revision when held; 0 when not
	stop chan struct{}
	done chan struct{}
	// naks are the messages given back while this node holds the lease
	// and has no consumer left: sent in stream order when the lease goes
	// (or a consumer comes back), so that the next active consumer gets
	// them in their order, before what came after them.
	naks []jetstream.Msg
}

func leaseKey(vhost, name string) string { return "sac." + tok(vhost) + "." + tok(name) }

// active reports whether this node's consumers of a single-active-consumer
// queue may take messages: it holds the queue's lease, taking it if no
// node holds it. Queues without the argument are always active.
//
// Across the cluster, as on one node, one consumer of such a queue gets
// the messages: the first on the node holding the lease (the router's
// queue picks it), the others wait. The lease is renewed while the node
// has consumers and given up when the last one goes (release), so another
// node's consumer takes over within leaseRetry; a node that dies holding
// it loses it after leaseTTL, and its unacknowledged messages come back
// after AckWait.
func (r *remoteQueue) active() bool {
	if !r.q.Config().Args.SingleActive {
		return true
	}
	l := &r.lease
	l.mu.Lock()
	held := l.rev != 0
	l.mu.Unlock()
	if held {
		return true
	}
	ctx, cancel := context.WithTimeout(r.ctx, min(r.s.timeout, 2*time.Second))
	defer cancel()
	kv, err := r.s.leaseKV(ctx)
	if err != nil {
		r.s.log.Warn("single-active-consumer leases unavailable", "err", err)
		return false
	}
	rev, err := kv.Create(ctx, leaseKey(r.vhost, r.name), r.s.leases.id)
	if err != nil {
		if !errors.Is(err, jetstream.ErrKeyExists) {
			r.s.log.Debug("single-active-consumer lease not taken", "vhost", r.vhost, "queue", r.name, "err", err)
		}
		return false
	}
	if !r.s.begin() {
		return false
	}
	l.mu.Lock()
	l.rev, l.stop, l.done = rev, make(chan struct{}), make(chan struct{})
	stop, done := l.stop, l.done
	l.mu.Unlock()
	r.s.log.Debug("single active consumer: this node's", "vhost", r.vhost, "queue", r.name)
	go r.renew(kv, stop, done)
	return true
}

// renew keeps the lease while this node holds it.
func (r *remoteQueue) renew(kv jetstream.KeyValue, stop, done chan struct{}) {
	defer r.s.wg.Done()
	defer close(done)
	t := time.NewTicker(leaseTTL / 3)
	defer t.Stop()
	key := leaseKey(r.vhost, r.name)
	for {
		select {
		case <-stop:
			return
		case <-r.ctx.Done():
			return
		case <-t.C:
		}
		l := &r.lease
		l.mu.Lock()
		rev := l.rev
		l.mu.Unlock()
		ctx, cancel := context.WithTimeout(r.ctx, leaseTTL/3)
		nrev, err := kv.Update(ctx, key, r.s.leases.id, rev)
		cancel()
		l.mu.Lock()
		if err == nil {
			l.rev = nrev
		} else if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyNotFound) {
			// Expired and taken, or gone: no longer this node's.
			l.rev = 0
			l.mu.Unlock()
			r.s.log.Warn("single-active-consumer lease lost", "vhost", r.vhost, "queue", r.name, "err", err)
			return
		}
		l.mu.Unlock()
	}
}

// nakActive gives a message of a single-active-consumer queue back: held
// for release while this node holds the lease with no consumer left (a
// consumer going gives back what it had, and a fetch still under way what
// it brings), else at once.
func (r *remoteQueue) nakActive(m jetstream.Msg) {
	l := &r.lease
	l.mu.Lock()
	if l.stop != nil && r.q.Consumers() == 0 {
		l.naks = append(l.naks, m)
		l.mu.Unlock()
		return
	}
	l.mu.Unlock()
	r.nakSync(m)
}

// nakSync gives a message back and waits until JetStream has it, so that
// a fetch after it gets it again.
func (r *remoteQueue) nakSync(m jetstream.Msg) {
	if _, err := r.s.js.Conn().Request(m.Reply(), []byte("-NAK"), min(r.s.timeout, 2*time.Second)); err != nil {
		r.s.log.Warn("nak to JetStream not confirmed", "vhost", r.vhost, "queue", r.name, "err", err)
	}
}

// sendNaks gives messages back in stream order.
func (r *remoteQueue) sendNaks(naks []jetstream.Msg) {
	seq := func(m jetstream.Msg) uint64 {
		if md, err := m.Metadata(); err == nil {
			return md.Sequence.Stream
		}
		return 0
	}
	slices.SortFunc(naks, func(a, b jetstream.Msg) int { return cmp.Compare(seq(a), seq(b)) })
	for _, m := range naks {
		r.nakSync(m)
	}
}

// flushNaks sends the held-back naks once a consumer is here again (the
// feeder calls it before each pull).
func (r *remoteQueue) flushNaks() {
	l := &r.lease
	l.mu.Lock()
	if len(l.naks) == 0 || r.q.Consumers() == 0 {
		l.mu.Unlock()
		return
	}
	naks := l.naks
	l.naks = nil
	l.mu.Unlock()
	r.sendNaks(naks)
}

// release gives the lease up, if this node holds it (its last consumer of
// the queue went, or the queue closed here): what the node still holds
// goes back first, in stream order, then the lease is deleted.
func (r *remoteQueue) release() {
	l := &r.lease
	l.mu.Lock()
	holding := l.stop != nil
	l.mu.Unlock()
	if !holding {
		return
	}
	// The messages still held here are being given back (a cancelled
	// consumer's, by the goroutine that cancelled it): wait for them.
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		r.mu.Lock()
		n := len(r.held)
		r.mu.Unlock()
		if n == 0 {
			break
		}
	}
	l.mu.Lock()
	stop, done, naks := l.stop, l.done, l.naks
	l.stop, l.done, l.naks = nil, nil, nil
	l.mu.Unlock()
	if stop == nil {
		return // released meanwhile
	}
	r.sendNaks(naks)
	close(stop)
	<-done // renew has stopped: the revision is final
	l.mu.Lock()
	rev := l.rev
	l.rev = 0
	l.mu.Unlock()
	if rev == 0 || r.s.leases.kv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), min(r.s.timeout, 2*time.Second))
	defer cancel()
	if err := r.s.leases.kv.Delete(ctx, leaseKey(r.vhost, r.name), jetstream.LastRevision(rev)); err != nil {
		r.s.log.Debug("single-active-consumer lease not released (it expires)", "vhost", r.vhost, "queue", r.name, "err", err)
	}
}
