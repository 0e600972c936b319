// Package router owns Bourse's topology: vhosts, exchanges, bindings and the
// registry of queues, and it routes every published message to its
// destinations. It is the broker API the protocol adapters call: declare,
// bind, publish, consume, get, and the connection lifecycle.
//
// The router declares the persistence interfaces it needs (MetaStore,
// MessageStore) and never imports storage; cmd/bourse wires a concrete store
// in. With no store the broker is purely in memory.
package router

import (
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/router/queue"
)

// MetaStore persists durable topology. The router calls it synchronously
// under its topology lock, before it answers a declare: an error fails the
// declare.
type MetaStore interface {
	PutVHost(name string) error
	DeleteVHost(name string) error
	PutExchange(vhost string, e ExchangeInfo) error
	DeleteExchange(vhost, name string) error
	PutQueue(vhost string, q QueueInfo) error
	DeleteQueue(vhost, name string) error
	PutBinding(vhost string, b Binding) error
	DeleteBinding(vhost string, b Binding) error
}

// MessageStore persists messages of durable queues. Persist stores m once,
// whatever the number of targets, and calls done exactly once when it is
// durable (or failed). Settle and Delivered (from queue.Store) record what
// happened to an entry. QueueDeleted forgets every entry of a durable
// queue, so a later queue of the same name starts empty.
type MessageStore interface {
	queue.Store
	Persist(vhost string, m *core.Message, targets []core.QueueSeq, done func(error))
	QueueDeleted(vhost, name string)
}

// StreamStore opens and deletes the logs of streams (queues declared with
// x-queue-type stream). OpenStream creates the log if it does not exist.
type StreamStore interface {
	OpenStream(vhost, name string, cfg queue.StreamConfig) (queue.Log, error)
	DeleteStream(vhost, name string) error
}

// Options configure a Broker.
type Options struct {
	Logger *slog.Logger
	Meta   MetaStore // nil: topology is not persisted
	// Replicator, in cluster mode, shares durable topology between nodes
	// instead of Meta (which is then ignored for topology).
	Replicator Replicator
	// Shared, in cluster mode, keeps the messages of the queues the
	// Replicator shares (durable, not exclusive, not streams) in the
	// cluster, so that a message published on any node is consumed on
	// any node. Needs Replicator.
	Shared SharedQueues
	// Fanout, in cluster mode, carries messages to the node-local queues
	// (exclusive, non-durable) of the other nodes. Needs Replicator.
	Fanout NodeFanout
	// SharedStreams, in cluster mode, keeps streams in the cluster: each
	// node's copy is filled from it. Needs Replicator and Streams.
	SharedStreams SharedStreams
	Messages      MessageStore // nil: messages are not persisted
	Streams       StreamStore  // nil: streams cannot be declared
	// OnConfirm, when set, is told how long each confirm of a message that
	// had to reach the disk took (publish to durable).
	OnConfirm func(time.Duration)
	// QueueMemoryBytes bounds the bodies of ready persistent messages a
	// durable queue keeps in memory (queue.Config.MemoryBytes); 0 = none.
	QueueMemoryBytes int64
	Now              func() time.Time
}

// SetMaxQueuesPerVHost bounds the queues (streams included) of each vhost:
// a declare beyond it fails with PreconditionFailed, as RabbitMQ's
// max-queues vhost limit. Queues that exist stay. 0 removes the bound.
func (b *Broker) SetMaxQueuesPerVHost(n int) { b.maxQueues.Store(int64(n)) }

// Stats count what the broker routed, across vhosts.
type Stats struct {
	Published  uint64 // messages published (each once, however many queues took it)
	Unroutable uint64 // published messages no queue took
	Confirmed  uint64 // publisher confirms given (positive)
}

// Broker is the set of vhosts.
type Broker struct {
	opts      Options
	log       *slog.Logger
	maxQueues atomic.Int64 // per vhost; 0: no limit

	published, unroutable, confirmed atomic.Uint64
	connReg                          connRegistry

	mu     sync.RWMutex
	vhosts map[string]*VHost
}

// New creates a broker with the default vhost "/".
func New(opts Options) *Broker {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Replicator != nil {
		opts.Meta = nil
	} else {
		opts.Shared, opts.Fanout, opts.SharedStreams = nil, nil, nil
	}
	b := &Broker{opts: opts, log: opts.Logger, vhosts: map[string]*VHost{}}
	b.vhosts[core.DefaultVHost] = newVHost(b, core.DefaultVHost)
	return b
}

// Stats returns the broker's counters.
func (b *Broker) Stats() Stats {
	return Stats{Published: b.published.Load(), Unroutable: b.unroutable.Load(), Confirmed: b.confirmed.Load()}
}

// VHost returns the named vhost.
func (b *Broker) VHost(name string) (*VHost, error) {
	b.mu.RLock()
	v := b.vhosts[name]
	b.mu.RUnlock()
	if v == nil {
		return nil, core.Errorf(core.NotFound, "no vhost '%s'", name)
	}
	return v, nil
}

// AddVHost creates a vhost (no error if it exists).
func (b *Broker) AddVHost(name string) (*VHost, error) {
	if err := core.ValidateName("vhost", name); err != nil {
		return nil, err
	}
	b.mu.Lock()
	if v := b.vhosts[name]; v != nil {
		b.mu.Unlock()
		return v, nil
	}
	if b.replicating() {
		b.mu.Unlock()
		if err := b.opts.Replicator.PutVHost(name); err != nil {
			return nil, replicaErr(err, "declare vhost '%s' in the cluster", name)
		}
		return b.VHost(name)
	}
	defer b.mu.Unlock()
	if b.opts.Meta != nil {
		if err := b.opts.Meta.PutVHost(name); err != nil {
			return nil, core.Wrap(core.ResourceError, err, "persist vhost '%s'", name)
		}
	}
	v := newVHost(b, name)
	b.vhosts[name] = v
	return v, nil
}

// DeleteVHost deletes a vhost and everything in it.
func (b *Broker) DeleteVHost(name string) error {
	return b.syncRetry(func() error { return b.deleteVHost(name) })
}

func (b *Broker) deleteVHost(name string) error {
	b.mu.Lock()
	v := b.vhosts[name]
	if v == nil {
		b.mu.Unlock()
		return core.Errorf(core.NotFound, "no vhost '%s'", name)
	}
	if b.replicating() {
		b.mu.Unlock()
		if err := b.opts.Replicator.DeleteVHost(name); err != nil {
			return replicaErr(err, "delete vhost '%s' in the cluster", name)
		}
		return nil
	}
	if b.opts.Meta != nil {
		if err := b.opts.Meta.DeleteVHost(name); err != nil {
			b.mu.Unlock()
			return core.Wrap(core.ResourceError, err, "delete vhost '%s'", name)
		}
	}
	delete(b.vhosts, name)
	b.mu.Unlock()
	v.close()
	return nil
}

// VHosts lists vhost names, sorted.
func (b *Broker) VHosts() []string {
	b.mu.RLock()
	defer b.mu.RUnlock()
	names := make([]string, 0, len(b.vhosts))
	for n := range b.vhosts {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// ConnectionClosed deletes the exclusive queues owned by conn in every vhost.
func (b *Broker) ConnectionClosed(conn core.ConnID) {
	b.mu.RLock()
	vs := make([]*VHost, 0, len(b.vhosts))
	for _, v := range b.vhosts {
		vs = append(vs, v)
	}
	b.mu.RUnlock()
	for _, v := range vs {
		v.connectionClosed(conn)
	}
}
