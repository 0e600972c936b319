package router

import (
	"errors"

	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/router/queue"
)

// Replicator shares the durable topology of a vhost between the brokers of
// a cluster (cluster mode; the cluster package implements it). It replaces
// the MetaStore for topology: set one or the other.
//
// What is replicated is what a single node persists: vhosts, durable
// exchanges, durable non-exclusive queues, and bindings whose two ends are
// replicated. Everything else (transient exchanges and queues, exclusive
// queues and their bindings) stays local to the node that declared it.
//
// The router checks a request against its own tables and its own rules,
// then calls the Replicator without holding any lock. The Replicator
// decides in its shared store (compare-and-set, so that two nodes
// declaring the same name at once agree on one declaration) and returns
// only once the change has been applied to this broker through the Apply…
// methods, in the store's order (read-your-writes). Every other node
// applies it through the same methods.
//
// Errors that are *core.Error keep their kind; others become
// ResourceError.
type Replicator interface {
	PutVHost(name string) error
	// DeleteVHost deletes the vhost and everything recorded in it.
	DeleteVHost(name string) error
	// PutExchange records e unless an exchange of that name is recorded
	// already, and returns the recorded exchange either way; the router
	// fails an inequivalent redeclare with PreconditionFailed.
	PutExchange(vhost string, e ExchangeInfo) (ExchangeInfo, error)
	// DeleteExchange deletes the exchange and every binding from or to it.
	DeleteExchange(vhost, name string) error
	// PutQueue is PutExchange for queues.
	PutQueue(vhost string, q QueueInfo) (QueueInfo, error)
	// DeleteQueue deletes the queue and every binding to it.
	DeleteQueue(vhost, name string) error
	PutBinding(vhost string, b Binding) error
	DeleteBinding(vhost string, b Binding) error
	// Sync returns once every change recorded before the call has been
	// applied to this broker. The router calls it before it answers
	// NotFound, so that a client that declared on one node and uses the
	// name on another finds it.
	Sync() error
}

// SharedQueues keeps the messages of shared queues in cluster mode (the
// cluster package implements it on JetStream): every node routes a publish
// itself, with the replicated bindings, and hands the message to
// SharedQueues for the shared queues it reached, instead of enqueueing it
// locally; a node whose consumers have credit is fed from SharedQueues
// through the queue's queue.Remote.
type SharedQueues interface {
	// Open returns the Remote of shared queue q, which the router creates
	// on this node when the cluster declares it (q is not in use yet).
	Open(q *queue.Queue) queue.Remote
	// Publish stores m in each of the named shared queues of vhost, and
	// calls done exactly once: with nil when every queue has it safely,
	// with an error otherwise. It must not block on the network for long:
	// it is called on the publisher's path.
	Publish(vhost string, m *core.Message, queues []string, done func(error))
}

// replicaErr keeps the kind of a *core.Error from the Replicator and makes
// anything else a ResourceError (the cluster is unreachable or refused).
func replicaErr(err error, format string, args ...any) error {
	var ce *core.Error
	if errors.As(err, &ce) {
		return err
	}
	return core.Wrap(core.ResourceError, err, format, args...)
}

// syncRetry runs op, and when it fails with NotFound in cluster mode, waits
// for this node to catch up with the cluster and runs it once more.
func (b *Broker) syncRetry(op func() error) error {
	err := op()
	if err == nil || b.opts.Replicator == nil || !errors.Is(err, core.ErrNotFound) {
		return err
	}
	if serr := b.opts.Replicator.Sync(); serr != nil {
		b.log.Warn("cluster sync before not-found", "err", serr)
		return err
	}
	return op()
}

func (b *Broker) replicating() bool { return b.opts.Replicator != nil }

// replicatedQueue reports whether q's declaration is shared by the cluster.
func replicatedQueue(c queue.Config) bool { return c.Durable && !c.Exclusive }

// The Apply… methods change this broker's topology as the cluster decided,
// without calling the MetaStore or the Replicator. A replicated object may
// meet a node-local one of the same name (a transient exchange declared on
// this node only): the local one is kept, and the conflict is returned for
// the caller to log.

// ApplyVHost creates a vhost if it does not exist.
func (b *Broker) ApplyVHost(name string) {
	b.applyVHost(name)
}

func (b *Broker) applyVHost(name string) *VHost {
	b.mu.Lock()
	defer b.mu.Unlock()
	v := b.vhosts[name]
	if v == nil {
		v = newVHost(b, name)
		b.vhosts[name] = v
	}
	return v
}

// ApplyVHostDeleted deletes a vhost and everything in it.
func (b *Broker) ApplyVHostDeleted(name string) {
	b.mu.Lock()
	v := b.vhosts[name]
	delete(b.vhosts, name)
	b.mu.Unlock()
	if v != nil {
		v.close()
	}
}

// ApplyExchange creates an exchange if it does not exist.
func (b *Broker) ApplyExchange(vhost string, e ExchangeInfo) error {
	v := b.applyVHost(vhost)
	v.mu.Lock()
	defer v.mu.Unlock()
	if cur := v.exchanges[e.Name]; cur != nil {
		return v.exchangeEquivalent(cur.ExchangeInfo, e)
	}
	x := newExchange(e)
	v.exchanges[e.Name] = x
	if x.alternate != "" {
		v.fanUpstreamLocked()
	}
	return nil
}

// ApplyExchangeDeleted deletes an exchange and the bindings from and to it.
func (b *Broker) ApplyExchangeDeleted(vhost, name string) {
	v, err := b.VHost(vhost)
	if err != nil || name == DefaultExchange || reserved(name) {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if e := v.exchanges[name]; e != nil && e.Durable {
		_ = v.deleteExchangeLocked(e, true)
	}
}

// ApplyQueue creates a queue if it does not exist. Errors of kind
// ResourceError (a stream log that cannot be opened) are this node's
// trouble; other errors mean the declaration itself is not valid here.
func (b *Broker) ApplyQueue(vhost string, q QueueInfo) error {
	args, err := queue.ParseArgs(q.Args)
	if err != nil {
		return err
	}
	v := b.applyVHost(vhost)
	v.mu.Lock()
	defer v.mu.Unlock()
	if cur := v.queues[q.Name]; cur != nil {
		return v.queueEquivalent(cur.Config(), q)
	}
	d := QueueDecl{QueueInfo: q}
	var log queue.Log
	if args.Type == "stream" {
		if log, err = v.openStreamLocked(d, args); err != nil {
			return err
		}
	}
	v.queues[q.Name] = v.newQueueLocked(d, args, log)
	return nil
}

// ApplyQueueDeleted deletes a queue (its messages on this node with it)
// and the bindings to it.
func (b *Broker) ApplyQueueDeleted(vhost, name string) {
	v, err := b.VHost(vhost)
	if err != nil {
		return
	}
	v.mu.Lock()
	q := v.queues[name]
	if q == nil || !replicatedQueue(q.Config()) {
		v.mu.Unlock()
		return
	}
	err = v.removeQueueLocked(q, true)
	v.mu.Unlock()
	if err == nil {
		q.Delete(core.Errorf(core.NotFound, "queue '%s' in vhost '%s' was deleted", name, vhost))
	}
}

// ApplyBinding adds a binding; it fails with NotFound when an end is
// missing on this node.
func (b *Broker) ApplyBinding(vhost string, bd Binding) error {
	v, err := b.VHost(vhost)
	if err != nil {
		return err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	src, err := v.bindEndsLocked(bd, 0)
	if err != nil {
		return err
	}
	added, err := src.addBinding(bd)
	if added {
		v.fanBindingLocked(src, bd, 1)
	}
	return err
}

// ApplyBindingDeleted removes a binding.
func (b *Broker) ApplyBindingDeleted(vhost string, bd Binding) {
	v, err := b.VHost(vhost)
	if err != nil {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if src := v.exchanges[bd.Source]; src != nil {
		v.unbindLocked(src, bd, true)
	}
}

// autoDeleteExchange deletes the named auto-delete exchange if it has no
// binding left. In cluster mode a replicated exchange is deleted through
// the Replicator, by the node whose change removed its last binding.
func (v *VHost) autoDeleteExchange(name string) {
	v.mu.Lock()
	e := v.exchanges[name]
	if e == nil || !e.AutoDelete || e.nbind > 0 {
		v.mu.Unlock()
		return
	}
	if !v.replicatedExchange(e) {
		_ = v.deleteExchangeLocked(e, false)
		v.mu.Unlock()
		return
	}
	v.mu.Unlock()
	if err := v.b.opts.Replicator.DeleteExchange(v.name, name); err != nil {
		v.b.log.Error("auto-delete exchange in the cluster", "vhost", v.name, "exchange", name, "err", err)
	}
}

func (v *VHost) replicatedExchange(e *Exchange) bool {
	return e.Durable && v.b.replicating()
}

// autoDeleteSourcesLocked lists the auto-delete exchanges with a binding to d.
func (v *VHost) autoDeleteSourcesLocked(d Dest) []string {
	var out []string
	for _, src := range v.exchanges {
		if src.AutoDelete && src.destCount[d] > 0 {
			out = append(out, src.Name)
		}
	}
	return out
}
