package router

import (
	"strings"

	"github.com/bourse-mq/bourse/core"
)

// NodeFanout carries messages to the node-local queues of the other nodes of a
// cluster (cluster mode; the cluster package implements it over core NATS).
//
// Node-local queues are the queues the Replicator does not share: exclusive
// and non-durable ones (AMQP exclusive and auto-delete consumers, MQTT
// clean sessions, STOMP /topic subscriptions), and direct reply-to
// addresses. A node routes every publish with its own tables and delivers
// to its own queues itself; it hands the message to Fanout.Publish once, and
// each other node with matching interest routes it again through its own
// bindings, delivering to its node-local queues only (PublishFromCluster):
// the shared queues took the message on the publishing node already.
//
// The router tells the Fanout of this node's interest as it changes, under
// the vhost's lock: one Interest per binding from an exchange to a
// node-local queue, one per node-local queue for the default exchange, one
// per direct reply-to address, and one InterestAll per exchange upstream
// (by exchange-to-exchange bindings or alternate exchanges) of an exchange
// with node-local interest. Each call adds or removes one reference.
type NodeFanout interface {
	// Publish sends m, routed on this node already, to the nodes with
	// interest in it. With probe (a mandatory message that no queue here
	// took), it waits a bounded time and reports whether another node
	// delivered it to a queue; without, it does not wait, and reports
	// whether it knows that another node listens to it.
	Publish(vhost string, m *core.Message, probe bool) bool
	// Interest adds (delta 1) or removes (delta -1) one reference to an
	// interest of this node. It is called under the vhost's lock: it must
	// neither block for long nor call the router.
	Interest(vhost string, i Interest, delta int)
}

// InterestKind says which routing keys an Interest selects.
type InterestKind uint8

// Interest kinds.
const (
	InterestKey     InterestKind = iota // the routing key equals Key (direct exchanges, queue names, reply-to)
	InterestPattern                     // the routing key matches topic pattern Key (* and #)
	InterestAll                         // every message (fanout and headers exchanges, upstream exchanges)
)

// Interest is this node's interest in messages published to an exchange.
type Interest struct {
	Exchange string
	Kind     InterestKind
	Key      string
}

// bindingInterest is the interest a binding from src gives.
func bindingInterest(src *Exchange, key string) Interest {
	switch src.Type {
	case Direct:
		return Interest{Exchange: src.Name, Kind: InterestKey, Key: key}
	case Topic:
		return Interest{Exchange: src.Name, Kind: InterestPattern, Key: key}
	}
	return Interest{Exchange: src.Name, Kind: InterestAll}
}

// localQueueLocked reports whether d is a node-local queue (cluster mode:
// one the Replicator does not share).
func (v *VHost) localQueueLocked(d Dest) bool {
	if d.Kind != ToQueue {
		return false
	}
	q := v.queues[d.Name]
	return q != nil && !replicatedQueue(q.Config())
}

// fanBindingLocked tells the Fanout that binding b from src was added
// (delta 1) or removed (delta -1).
func (v *VHost) fanBindingLocked(src *Exchange, b Binding, delta int) {
	f := v.b.opts.Fanout
	if f == nil {
		return
	}
	if b.Dest.Kind == ToExchange {
		v.fanUpstreamLocked()
		return
	}
	if !v.localQueueLocked(b.Dest) {
		return
	}
	f.Interest(v.name, bindingInterest(src, b.Key), delta)
	n := v.fanLocal[src.Name]
	v.fanLocal[src.Name] = n + delta
	if n+delta <= 0 {
		delete(v.fanLocal, src.Name)
	}
	if (n == 0) != (n+delta == 0) {
		v.fanUpstreamLocked()
	}
}

// fanQueueLocked tells the Fanout that node-local queue name was created
// (delta 1) or removed (delta -1): the default exchange routes to it by name.
func (v *VHost) fanQueueLocked(name string, delta int) {
	if f := v.b.opts.Fanout; f != nil {
		f.Interest(v.name, Interest{Exchange: DefaultExchange, Kind: InterestKey, Key: name}, delta)
	}
}

// fanExchangeGoneLocked drops the interest of e's own bindings; e is being
// deleted.
func (v *VHost) fanExchangeGoneLocked(e *Exchange) {
	if v.b.opts.Fanout == nil {
		return
	}
	for _, b := range e.allBindings() {
		if b.Dest.Kind == ToQueue {
			v.fanBindingLocked(e, b, -1)
		}
	}
}

// fanUpstreamLocked recomputes the exchanges upstream of those with
// node-local interest: a message published to one of them may reach a
// node-local queue through exchange-to-exchange bindings or alternate
// exchanges with any routing key, so this node wants all of their
// messages. It runs when the exchange graph or the set of exchanges with
// local interest changes, which is rare next to bindings coming and going.
func (v *VHost) fanUpstreamLocked() {
	f := v.b.opts.Fanout
	if f == nil {
		return
	}
	want := map[string]bool{}
	frontier := make([]string, 0, len(v.fanLocal))
	for x := range v.fanLocal {
		frontier = append(frontier, x)
	}
	for len(frontier) > 0 {
		x := frontier[len(frontier)-1]
		frontier = frontier[:len(frontier)-1]
		for _, u := range v.exchanges {
			if want[u.Name] || (u.destCount[Dest{Kind: ToExchange, Name: x}] == 0 && u.alternate != x) {
				continue
			}
			want[u.Name] = true
			frontier = append(frontier, u.Name)
		}
	}
	for x := range v.fanUp {
		if !want[x] {
			delete(v.fanUp, x)
			f.Interest(v.name, Interest{Exchange: x, Kind: InterestAll}, -1)
		}
	}
	for x := range want {
		if !v.fanUp[x] {
			v.fanUp[x] = true
			f.Interest(v.name, Interest{Exchange: x, Kind: InterestAll}, 1)
		}
	}
}

// fanDropAllLocked removes every interest of the vhost's exchanges and
// queues (it is deleted). Direct reply-to addresses keep theirs until
// their consumer unregisters them.
func (v *VHost) fanDropAllLocked() {
	f := v.b.opts.Fanout
	if f == nil {
		return
	}
	for _, e := range v.exchanges {
		for _, b := range e.allBindings() {
			if v.localQueueLocked(b.Dest) {
				f.Interest(v.name, bindingInterest(e, b.Key), -1)
			}
		}
	}
	for name, q := range v.queues {
		if !replicatedQueue(q.Config()) {
			v.fanQueueLocked(name, -1)
		}
	}
	for x := range v.fanUp {
		f.Interest(v.name, Interest{Exchange: x, Kind: InterestAll}, -1)
	}
	clear(v.fanLocal)
	clear(v.fanUp)
}

// PublishFromCluster routes m, published on another node of the cluster,
// through this node's bindings and delivers it to this node's node-local
// queues only (never to shared queues or streams: the publishing node took
// care of those), without handing it to the Fanout again. It returns how
// many queues took it.
func (v *VHost) PublishFromCluster(m *core.Message) int {
	if m.Exchange == DefaultExchange && strings.HasPrefix(m.RoutingKey, ReplyToPrefix+".") {
		v.mu.RLock()
		fn := v.replyTo[m.RoutingKey]
		v.mu.RUnlock()
		if fn != nil && fn(m) {
			return 1
		}
		return 0
	}
	s := scratchPool.Get().(*routeScratch)
	defer func() { s.reset(); scratchPool.Put(s) }()
	if v.route(m, s, false) != nil {
		return 0 // this node has no exchange of that name
	}
	local := s.queues[:0]
	for _, q := range s.queues {
		if !replicatedQueue(q.Config()) {
			local = append(local, q)
		}
	}
	clear(s.queues[len(local):])
	s.queues = local
	return v.enqueue(m, s, PublishOptions{}).Routed
}
