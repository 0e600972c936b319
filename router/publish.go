package router

import (
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/router/queue"
)

// PublishOptions tune one publish.
type PublishOptions struct {
	// Mandatory asks for Unroutable in the result rather than a silent drop.
	Mandatory bool
	// Confirm, when set, is called exactly once: with nil once the message
	// is safely in every queue it was routed to (on disk for persistent
	// messages on durable queues), or with an error when a queue refused it
	// (overflow reject-publish) or storage failed. It may be called before
	// Publish returns.
	Confirm func(err error)
	// FromClient marks a client publish: internal exchanges refuse it.
	FromClient bool
}

// PublishResult says where a message went.
type PublishResult struct {
	Routed   int  // queues the message was enqueued on
	Rejected bool // a queue refused it (overflow)
	// Remote: cluster mode, another node took the message (a mandatory
	// message no queue here took: another node said it delivered it), or
	// listens to it (otherwise: as far as the Fanout knows; see NodeFanout).
	Remote bool
}

// Unroutable reports whether no queue took the message.
func (r PublishResult) Unroutable() bool { return r.Routed == 0 && !r.Rejected && !r.Remote }

// ErrRejected is the error Confirm receives when a queue refused a message.
var ErrRejected = core.Errorf(core.ResourceError, "message rejected by a queue at its length limit")

// routeScratch holds per-publish scratch space, pooled to keep routing free
// of allocations in the steady state.
type routeScratch struct {
	v          *VHost
	m          *core.Message
	deadLetter bool
	found      bool
	visitFn    func(Dest) // s.visit bound once, so routing allocates no closure
	keys       []string
	queues     []*queue.Queue
	seenQ      map[string]struct{}
	seenX      map[string]struct{}
	pending    []string
	targets    []core.QueueSeq
	streams    []*queue.Queue
	shared     []string // cluster mode: shared queues, stored by SharedQueues
}

var scratchPool = sync.Pool{New: func() any {
	s := &routeScratch{seenQ: map[string]struct{}{}, seenX: map[string]struct{}{}}
	s.visitFn = s.visit
	return s
}}

func (s *routeScratch) reset() {
	s.v, s.m = nil, nil
	clear(s.keys)
	s.keys = s.keys[:0]
	clear(s.queues)
	s.queues = s.queues[:0]
	clear(s.seenQ)
	clear(s.seenX)
	s.pending = s.pending[:0]
	clear(s.targets)
	s.targets = s.targets[:0]
	clear(s.streams)
	s.streams = s.streams[:0]
	clear(s.shared)
	s.shared = s.shared[:0]
}

// Publish routes m from exchange m.Exchange to every matching queue, each
// reached once however many paths lead to it.
func (v *VHost) Publish(m *core.Message, o PublishOptions) (PublishResult, error) {
	if m.Arrived.IsZero() {
		m.Arrived = v.b.opts.Now()
	}
	if _, _, err := m.ExpirationTTL(); err != nil {
		return PublishResult{}, err
	}
	if m.Exchange == DefaultExchange && strings.HasPrefix(m.RoutingKey, ReplyToPrefix+".") {
		return v.publishReplyTo(m, o)
	}
	s := scratchPool.Get().(*routeScratch)
	defer func() { s.reset(); scratchPool.Put(s) }()
	if err := v.route(m, s, o.FromClient); err != nil {
		return PublishResult{}, err
	}

	b := v.b
	b.published.Add(1)
	if o.Confirm != nil {
		confirm := o.Confirm
		timed := b.opts.OnConfirm != nil && m.Persistent()
		var t0 time.Time
		if timed {
			t0 = time.Now()
		}
		o.Confirm = func(err error) {
			if err == nil {
				b.confirmed.Add(1)
			}
			if timed {
				b.opts.OnConfirm(time.Since(t0))
			}
			confirm(err)
		}
	}
	r := v.enqueue(m, s, o)
	if f := b.opts.Fanout; f != nil && f.Publish(v.name, m, o.Mandatory && r.Unroutable()) {
		r.Remote = true
	}
	if r.Unroutable() {
		b.unroutable.Add(1)
	}
	return r, nil
}

// route collects the queues m reaches from its exchange into s.queues.
func (v *VHost) route(m *core.Message, s *routeScratch, fromClient bool) error {
	v.mu.RLock()
	defer v.mu.RUnlock()
	ex := v.exchanges[m.Exchange]
	if ex == nil {
		return core.Errorf(core.NotFound, "no exchange '%s' in vhost '%s'", m.Exchange, v.name)
	}
	if ex.Internal && fromClient {
		return core.Errorf(core.AccessRefused, "cannot publish to internal exchange '%s' in vhost '%s'", m.Exchange, v.name)
	}
	v.routeLocked(ex, m, s, false)
	return nil
}

// routeLocked collects the queues m reaches from ex into s.queues.
func (v *VHost) routeLocked(ex *Exchange, m *core.Message, s *routeScratch, deadLetter bool) {
	s.v, s.m, s.deadLetter = v, m, deadLetter
	s.keys = appendRoutingKeys(s.keys, m)
	s.pending = append(s.pending, ex.Name)
	s.seenX[ex.Name] = struct{}{}
	for hops := 0; len(s.pending) > 0 && hops < maxRouteDepth*8; hops++ {
		name := s.pending[0]
		s.pending = s.pending[1:]
		e := v.exchanges[name]
		if e == nil {
			continue
		}
		s.found = false
		for _, k := range s.keys {
			if e.Name == DefaultExchange {
				s.visit(Dest{Kind: ToQueue, Name: k})
				continue
			}
			e.match(k, m.Headers, s.visitFn)
		}
		if !s.found && e.alternate != "" {
			if _, ok := s.seenX[e.alternate]; !ok {
				s.seenX[e.alternate] = struct{}{}
				s.pending = append(s.pending, e.alternate)
			}
		}
	}
}

// visit records one destination reached by a binding.
func (s *routeScratch) visit(d Dest) {
	switch d.Kind {
	case ToExchange:
		s.found = true
		if _, ok := s.seenX[d.Name]; !ok {
			s.seenX[d.Name] = struct{}{}
			s.pending = append(s.pending, d.Name)
		}
	default:
		q := s.v.queues[d.Name]
		if q == nil {
			return
		}
		s.found = true
		if _, ok := s.seenQ[d.Name]; ok {
			return
		}
		if s.deadLetter && queue.IsDeadLetterCycle(s.m, d.Name) {
			return
		}
		s.seenQ[d.Name] = struct{}{}
		s.queues = append(s.queues, q)
	}
}

// appendRoutingKeys appends the routing key plus RabbitMQ's sender-selected
// distribution keys (CC and BCC headers).
func appendRoutingKeys(keys []string, m *core.Message) []string {
	keys = append(keys, m.RoutingKey)
	for _, h := range [...]string{"CC", "BCC"} {
		l, _ := m.Headers[h].([]any)
		for _, k := range l {
			switch x := k.(type) {
			case string:
				keys = append(keys, x)
			case []byte:
				keys = append(keys, string(x))
			}
		}
	}
	return keys
}

func (v *VHost) enqueue(m *core.Message, s *routeScratch, o PublishOptions) PublishResult {
	if _, ok := m.Headers["BCC"]; ok && len(s.queues) > 0 {
		h := m.Headers.Clone()
		delete(h, "BCC")
		m = m.WithHeaders(h)
	}
	var r PublishResult
	persist := m.Persistent() && v.b.opts.Messages != nil
	for _, q := range s.queues {
		if q.IsStream() {
			s.streams = append(s.streams, q)
			r.Routed++
			continue
		}
		if q.Remote() != nil {
			s.shared = append(s.shared, q.Name())
			r.Routed++
			continue
		}
		seq, res := q.Enqueue(m)
		switch res {
		case queue.Accepted:
			r.Routed++
			if persist && q.Durable() {
				s.targets = append(s.targets, core.QueueSeq{Queue: q.Name(), Seq: seq})
			}
		case queue.Rejected:
			r.Rejected = true
		}
	}
	switch {
	case len(s.shared) > 0:
		// Cluster mode: the shared queues' store reports once for all of
		// them, as streams and the journal do.
		done := joinConfirms(o.Confirm, 1+len(s.streams)+min(len(s.targets), 1), r.Rejected)
		v.b.opts.Shared.Publish(v.name, m, append([]string(nil), s.shared...), done)
		for _, q := range s.streams {
			q.Append(m, done)
		}
		if len(s.targets) > 0 {
			v.b.opts.Messages.Persist(v.name, m, append([]core.QueueSeq(nil), s.targets...), done)
		}
	case len(s.streams) > 0:
		// Streams (and the journal, if durable queues took the message too)
		// each report once; the publisher's confirm waits for all of them.
		done := joinConfirms(o.Confirm, len(s.streams)+min(len(s.targets), 1), r.Rejected)
		for _, q := range s.streams {
			q.Append(m, done)
		}
		if len(s.targets) > 0 {
			v.b.opts.Messages.Persist(v.name, m, append([]core.QueueSeq(nil), s.targets...), done)
		}
	case len(s.targets) > 0:
		done := o.Confirm
		if r.Rejected && done != nil {
			done = func(error) { o.Confirm(ErrRejected) }
		}
		if done == nil {
			done = func(error) {}
		}
		v.b.opts.Messages.Persist(v.name, m, append([]core.QueueSeq(nil), s.targets...), done)
	case o.Confirm != nil && r.Rejected:
		o.Confirm(ErrRejected)
	case o.Confirm != nil:
		o.Confirm(nil)
	}
	return r
}

// joinConfirms returns a callback to be called n times; it calls confirm
// once, after the last call, with the first error (or ErrRejected when a
// queue refused the message).
func joinConfirms(confirm func(error), n int, rejected bool) func(error) {
	if confirm == nil {
		return func(error) {}
	}
	var mu sync.Mutex
	var first error
	if rejected {
		first = ErrRejected
	}
	return func(err error) {
		mu.Lock()
		if err != nil && first == nil {
			first = err
		}
		n--
		last, e := n == 0, first
		mu.Unlock()
		if last {
			confirm(e)
		}
	}
}

func (v *VHost) publishReplyTo(m *core.Message, o PublishOptions) (PublishResult, error) {
	v.mu.RLock()
	fn := v.replyTo[m.RoutingKey]
	v.mu.RUnlock()
	var r PublishResult
	switch {
	case fn != nil:
		if fn(m) {
			r.Routed = 1
		}
	case v.b.opts.Fanout != nil:
		// The requester may be on another node.
		r.Remote = v.b.opts.Fanout.Publish(v.name, m, o.Mandatory)
	}
	if o.Confirm != nil {
		o.Confirm(nil)
	}
	return r, nil
}

// deadLetter republishes a dead-lettered message to dlx. A missing dlx
// drops the message, as in RabbitMQ.
func (v *VHost) deadLetter(dlx string, m *core.Message) {
	s := scratchPool.Get().(*routeScratch)
	defer func() { s.reset(); scratchPool.Put(s) }()
	v.mu.RLock()
	ex := v.exchanges[dlx]
	if ex == nil {
		v.mu.RUnlock()
		v.b.log.Debug("dead-letter exchange missing; message dropped", "vhost", v.name, "exchange", dlx)
		return
	}
	v.routeLocked(ex, m, s, true)
	v.mu.RUnlock()
	v.enqueue(m, s, PublishOptions{})
}

// deadLetterConfirm is deadLetter for a message of a shared queue (cluster
// mode): done is called once the dead letter is safely in every queue it
// reached (at once when it reached none), so that the original is only
// removed from its queue then.
func (v *VHost) deadLetterConfirm(dlx string, m *core.Message, done func(error)) {
	s := scratchPool.Get().(*routeScratch)
	defer func() { s.reset(); scratchPool.Put(s) }()
	v.mu.RLock()
	ex := v.exchanges[dlx]
	if ex == nil {
		v.mu.RUnlock()
		v.b.log.Debug("dead-letter exchange missing; message dropped", "vhost", v.name, "exchange", dlx)
		done(nil)
		return
	}
	v.routeLocked(ex, m, s, true)
	v.mu.RUnlock()
	v.enqueue(m, s, PublishOptions{Confirm: func(err error) {
		if errors.Is(err, ErrRejected) {
			err = nil // a full DLX queue drops the dead letter, as on one node
		}
		done(err)
	}})
}

// Consume subscribes c to queue name on behalf of connection conn. In
// cluster mode a queue this node does not know yet is waited for (it may
// have just been declared on another node).
func (v *VHost) Consume(name string, c queue.Consumer, o queue.ConsumeOptions) (*queue.Sub, error) {
	var q *queue.Queue
	err := v.b.syncRetry(func() (err error) {
		q, err = v.Queue(name, o.Owner)
		return err
	})
	if err != nil {
		return nil, err
	}
	return q.Consume(c, o)
}
