package router

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/router/match"
	"github.com/bourse-mq/bourse/router/queue"
)

// Names of the exchanges every vhost has.
const (
	DefaultExchange = ""
	AMQDirect       = "amq.direct"
	AMQFanout       = "amq.fanout"
	AMQTopic        = "amq.topic"
	AMQHeaders      = "amq.headers"
	AMQMatch        = "amq.match"
)

// ReplyToPrefix is RabbitMQ's direct reply-to pseudo-queue name.
const ReplyToPrefix = "amq.rabbitmq.reply-to"

// maxRouteDepth bounds exchange-to-exchange hops (cycles are cut by the
// visited set; this guards against pathological chains).
const maxRouteDepth = 64

// VHost is one virtual host's topology.
type VHost struct {
	name string
	b    *Broker

	mu        sync.RWMutex
	exchanges map[string]*Exchange
	queues    map[string]*queue.Queue
	replyTo   map[string]ReplyFunc

	// Cluster mode, with a Fanout: exchange → bindings from it to
	// node-local queues, and the exchanges upstream of those (fanout.go).
	fanLocal map[string]int
	fanUp    map[string]bool
}

// ReplyFunc receives a message published to a direct reply-to address. It
// reports false when the requester is gone.
type ReplyFunc func(m *core.Message) bool

func newVHost(b *Broker, name string) *VHost {
	v := &VHost{name: name, b: b, exchanges: map[string]*Exchange{}, queues: map[string]*queue.Queue{}, replyTo: map[string]ReplyFunc{},
		fanLocal: map[string]int{}, fanUp: map[string]bool{}}
	for _, e := range []ExchangeInfo{
		{Name: DefaultExchange, Type: Direct, Durable: true},
		{Name: AMQDirect, Type: Direct, Durable: true},
		{Name: AMQFanout, Type: Fanout, Durable: true},
		{Name: AMQTopic, Type: Topic, Durable: true},
		{Name: AMQHeaders, Type: Headers, Durable: true},
		{Name: AMQMatch, Type: Headers, Durable: true},
	} {
		v.exchanges[e.Name] = newExchange(e)
	}
	return v
}

// Name returns the vhost's name.
func (v *VHost) Name() string { return v.name }

func (v *VHost) close() {
	v.mu.Lock()
	v.fanDropAllLocked()
	qs := v.queues
	v.queues = map[string]*queue.Queue{}
	v.exchanges = map[string]*Exchange{}
	v.mu.Unlock()
	for _, q := range qs {
		v.unshareStream(q)
		q.Delete(core.Errorf(core.NotFound, "vhost '%s' deleted", v.name))
	}
}

func reserved(name string) bool { return strings.HasPrefix(name, "amq.") }

// ExchangeDecl is an exchange.declare request.
type ExchangeDecl struct {
	ExchangeInfo
	Passive bool
}

// DeclareExchange declares (or, passively, checks) an exchange. Redeclaring
// with different properties fails with PreconditionFailed, as in RabbitMQ.
func (v *VHost) DeclareExchange(d ExchangeDecl) error {
	if err := core.ValidateName("exchange", d.Name); err != nil {
		return err
	}
	if d.Passive {
		return v.b.syncRetry(func() error {
			v.mu.RLock()
			defer v.mu.RUnlock()
			if v.exchanges[d.Name] == nil {
				return core.Errorf(core.NotFound, "no exchange '%s' in vhost '%s'", d.Name, v.name)
			}
			return nil
		})
	}
	v.mu.Lock()
	if e := v.exchanges[d.Name]; e != nil {
		v.mu.Unlock()
		return v.exchangeEquivalent(e.ExchangeInfo, d.ExchangeInfo)
	}
	if err := v.checkExchangeDecl(d); err != nil {
		v.mu.Unlock()
		return err
	}
	if d.Durable && v.b.replicating() {
		v.mu.Unlock()
		cur, err := v.b.opts.Replicator.PutExchange(v.name, d.ExchangeInfo)
		if err != nil {
			return replicaErr(err, "declare exchange '%s' in the cluster", d.Name)
		}
		return v.exchangeEquivalent(cur, d.ExchangeInfo)
	}
	defer v.mu.Unlock()
	if d.Durable && v.b.opts.Meta != nil {
		if err := v.b.opts.Meta.PutExchange(v.name, d.ExchangeInfo); err != nil {
			return core.Wrap(core.ResourceError, err, "persist exchange '%s'", d.Name)
		}
	}
	e := newExchange(d.ExchangeInfo)
	v.exchanges[d.Name] = e
	if e.alternate != "" {
		v.fanUpstreamLocked()
	}
	return nil
}

// checkExchangeDecl checks a new exchange's name, type and arguments.
func (v *VHost) checkExchangeDecl(d ExchangeDecl) error {
	if reserved(d.Name) || d.Name == "" {
		return core.Errorf(core.AccessRefused, "exchange name '%s' contains reserved prefix 'amq.*'", d.Name)
	}
	if !validExchangeType(d.Type) {
		return core.Errorf(core.CommandInvalid, "invalid exchange type '%s'", d.Type)
	}
	if err := d.Args.Validate(); err != nil {
		return core.Wrap(core.PreconditionFailed, err, "exchange '%s' arguments", d.Name)
	}
	_, err := newHeadersCheck(d)
	return err
}

// newHeadersCheck validates arguments that affect routing up front.
func newHeadersCheck(d ExchangeDecl) (struct{}, error) {
	if ae, ok := d.Args["alternate-exchange"]; ok {
		switch ae.(type) {
		case string, []byte:
		default:
			return struct{}{}, core.Errorf(core.PreconditionFailed, "invalid arg 'alternate-exchange' for exchange '%s': want a string", d.Name)
		}
	}
	return struct{}{}, nil
}

func (v *VHost) exchangeEquivalent(e ExchangeInfo, d ExchangeInfo) error {
	diff := func(field string, got, cur any) error {
		return core.Errorf(core.PreconditionFailed, "inequivalent arg '%s' for exchange '%s' in vhost '%s': received '%v' but current is '%v'", field, d.Name, v.name, got, cur)
	}
	switch {
	case e.Type != d.Type:
		return diff("type", d.Type, e.Type)
	case e.Durable != d.Durable:
		return diff("durable", d.Durable, e.Durable)
	case e.AutoDelete != d.AutoDelete:
		return diff("auto_delete", d.AutoDelete, e.AutoDelete)
	case e.Internal != d.Internal:
		return diff("internal", d.Internal, e.Internal)
	case !tablesEqual(e.Args, d.Args) && !(len(e.Args) == 0 && len(d.Args) == 0):
		return diff("arguments", d.Args, e.Args)
	}
	return nil
}

// DeleteExchange deletes an exchange and every binding from or to it.
func (v *VHost) DeleteExchange(name string, ifUnused bool) error {
	return v.b.syncRetry(func() error { return v.deleteExchange(name, ifUnused) })
}

func (v *VHost) deleteExchange(name string, ifUnused bool) error {
	v.mu.Lock()
	e := v.exchanges[name]
	if e == nil {
		v.mu.Unlock()
		return core.Errorf(core.NotFound, "no exchange '%s' in vhost '%s'", name, v.name)
	}
	if name == "" || reserved(name) {
		v.mu.Unlock()
		return core.Errorf(core.AccessRefused, "operation not permitted on exchange '%s'", name)
	}
	if ifUnused && e.nbind > 0 {
		v.mu.Unlock()
		return core.Errorf(core.PreconditionFailed, "exchange '%s' in vhost '%s' in use", name, v.name)
	}
	if !v.replicatedExchange(e) {
		defer v.mu.Unlock()
		return v.deleteExchangeLocked(e, false)
	}
	sources := v.autoDeleteSourcesLocked(Dest{Kind: ToExchange, Name: name})
	v.mu.Unlock()
	if err := v.b.opts.Replicator.DeleteExchange(v.name, name); err != nil {
		return replicaErr(err, "delete exchange '%s' in the cluster", name)
	}
	for _, s := range sources {
		v.autoDeleteExchange(s)
	}
	return nil
}

// deleteExchangeLocked deletes e here; remote says the cluster decided it.
func (v *VHost) deleteExchangeLocked(e *Exchange, remote bool) error {
	if e.Durable && v.b.opts.Meta != nil {
		if err := v.b.opts.Meta.DeleteExchange(v.name, e.Name); err != nil {
			return core.Wrap(core.ResourceError, err, "delete exchange '%s'", e.Name)
		}
	}
	v.fanExchangeGoneLocked(e)
	delete(v.exchanges, e.Name)
	v.removeBindingsToLocked(Dest{Kind: ToExchange, Name: e.Name}, remote)
	v.fanUpstreamLocked()
	return nil
}

// removeBindingsToLocked removes every binding whose destination is d, and
// deletes auto-delete exchanges left without bindings (unless remote: in
// cluster mode the node that made the change deletes them).
func (v *VHost) removeBindingsToLocked(d Dest, remote bool) {
	for _, src := range v.exchanges {
		for _, b := range src.bindingsTo(d) {
			v.unbindLocked(src, b, remote)
		}
	}
}

func (v *VHost) unbindLocked(src *Exchange, b Binding, remote bool) bool {
	if !src.removeBinding(b) {
		return false
	}
	v.fanBindingLocked(src, b, -1)
	if v.b.opts.Meta != nil && v.bindingDurableLocked(src, b.Dest) {
		if err := v.b.opts.Meta.DeleteBinding(v.name, b); err != nil {
			v.b.log.Error("delete binding from metadata store", "vhost", v.name, "source", b.Source, "err", err)
		}
	}
	if src.AutoDelete && src.nbind == 0 {
		switch {
		case remote:
		case v.replicatedExchange(src):
			// A node-local binding (to an exclusive queue) went with its
			// connection; the cluster deletes the exchange, not under
			// this lock.
			go v.autoDeleteExchange(src.Name)
		default:
			_ = v.deleteExchangeLocked(src, false)
		}
	}
	return true
}

// bindingDurableLocked: a binding is durable when both ends are.
func (v *VHost) bindingDurableLocked(src *Exchange, d Dest) bool {
	if !src.Durable {
		return false
	}
	if d.Kind == ToExchange {
		e := v.exchanges[d.Name]
		return e != nil && e.Durable
	}
	q := v.queues[d.Name]
	return q != nil && q.Durable()
}

// Exchanges lists the vhost's exchanges, sorted by name.
func (v *VHost) Exchanges() []ExchangeInfo {
	v.mu.RLock()
	defer v.mu.RUnlock()
	out := make([]ExchangeInfo, 0, len(v.exchanges))
	for _, e := range v.exchanges {
		out = append(out, e.ExchangeInfo)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// QueueInfo describes a declared queue.
type QueueInfo = core.QueueInfo

// QueueDecl is a queue.declare request.
type QueueDecl struct {
	QueueInfo
	Passive bool
	Owner   core.ConnID // the declaring connection (exclusive queues)
}

// DeclareOk is a queue.declare answer.
type DeclareOk struct {
	Name      string
	Messages  int
	Consumers int
}

// DeclareQueue declares (or, passively, checks) a queue. An empty name gets
// a server-generated "amq.gen-…" name.
func (v *VHost) DeclareQueue(d QueueDecl) (DeclareOk, error) {
	if err := core.ValidateName("queue", d.Name); err != nil {
		return DeclareOk{}, err
	}
	if d.Passive {
		var ok DeclareOk
		err := v.b.syncRetry(func() (err error) {
			ok, err = v.declareQueue(d)
			return err
		})
		return ok, err
	}
	return v.declareQueue(d)
}

func (v *VHost) declareQueue(d QueueDecl) (DeclareOk, error) {
	v.mu.Lock()
	if d.Name == "" && !d.Passive {
		d.Name = genName()
	}
	if q := v.queues[d.Name]; q != nil {
		if err := v.checkOwnerLocked(q, d.Owner); err != nil {
			v.mu.Unlock()
			return DeclareOk{}, err
		}
		if !d.Passive {
			if err := v.queueEquivalent(q.Config(), d.QueueInfo); err != nil {
				v.mu.Unlock()
				return DeclareOk{}, err
			}
		}
		v.mu.Unlock()
		return declareOk(q), nil
	}
	if d.Passive {
		v.mu.Unlock()
		return DeclareOk{}, core.Errorf(core.NotFound, "no queue '%s' in vhost '%s'", d.Name, v.name)
	}
	args, err := v.checkQueueDecl(d)
	if err != nil {
		v.mu.Unlock()
		return DeclareOk{}, err
	}
	if v.b.replicating() && replicatedQueue(queue.Config{Durable: d.Durable, Exclusive: d.Exclusive}) {
		v.mu.Unlock()
		return v.replicateQueue(d)
	}
	defer v.mu.Unlock()
	var log queue.Log
	if args.Type == "stream" {
		if log, err = v.openStreamLocked(d, args); err != nil {
			return DeclareOk{}, err
		}
	}
	if d.Durable && !d.Exclusive && v.b.opts.Meta != nil {
		if err := v.b.opts.Meta.PutQueue(v.name, d.QueueInfo); err != nil {
			if log != nil {
				_ = v.b.opts.Streams.DeleteStream(v.name, d.Name)
			}
			return DeclareOk{}, core.Wrap(core.ResourceError, err, "persist queue '%s'", d.Name)
		}
	}
	q := v.newQueueLocked(d, args, log)
	v.queues[d.Name] = q
	if !replicatedQueue(q.Config()) {
		v.fanQueueLocked(d.Name, 1)
	}
	return DeclareOk{Name: d.Name}, nil
}

func declareOk(q *queue.Queue) DeclareOk {
	q.Touch()
	if r := q.Remote(); r != nil {
		r.Ready(true) // a current count for the answer (cluster mode)
	}
	st := q.Stats()
	return DeclareOk{Name: q.Name(), Messages: st.Ready, Consumers: st.Consumers}
}

// checkQueueDecl checks a new queue's name and arguments.
func (v *VHost) checkQueueDecl(d QueueDecl) (queue.Args, error) {
	if reserved(d.Name) && !strings.HasPrefix(d.Name, "amq.gen-") {
		return queue.Args{}, core.Errorf(core.AccessRefused, "queue name '%s' contains reserved prefix 'amq.*'", d.Name)
	}
	if max := v.b.maxQueues.Load(); max > 0 && int64(len(v.queues)) >= max {
		return queue.Args{}, core.Errorf(core.PreconditionFailed, "cannot declare queue '%s' in vhost '%s': queue limit (%d) is reached", d.Name, v.name, max)
	}
	if err := d.Args.Validate(); err != nil {
		return queue.Args{}, core.Wrap(core.PreconditionFailed, err, "queue '%s' arguments", d.Name)
	}
	args, err := queue.ParseArgs(d.Args)
	if err != nil {
		return queue.Args{}, err
	}
	if args.Type == "stream" {
		if err := v.checkStreamDecl(d); err != nil {
			return queue.Args{}, err
		}
	}
	return args, nil
}

// replicateQueue declares a durable queue in the cluster; the queue itself
// is created on every node (this one included) when the cluster applies it.
func (v *VHost) replicateQueue(d QueueDecl) (DeclareOk, error) {
	cur, err := v.b.opts.Replicator.PutQueue(v.name, d.QueueInfo)
	if err != nil {
		return DeclareOk{}, replicaErr(err, "declare queue '%s' in the cluster", d.Name)
	}
	if err := v.queueEquivalent(queue.Config{Durable: cur.Durable, AutoDelete: cur.AutoDelete,
		Exclusive: cur.Exclusive, Arguments: cur.Args}, d.QueueInfo); err != nil {
		return DeclareOk{}, err
	}
	v.mu.RLock()
	q := v.queues[d.Name]
	v.mu.RUnlock()
	if q == nil {
		// Declared, then deleted by another client before we looked.
		return DeclareOk{Name: d.Name}, nil
	}
	return declareOk(q), nil
}

// checkStreamDecl checks a stream declaration as RabbitMQ does (durable,
// not exclusive, not auto-delete) and that this broker can hold streams.
func (v *VHost) checkStreamDecl(d QueueDecl) error {
	switch {
	case !d.Durable:
		return core.Errorf(core.PreconditionFailed, "invalid property 'non-durable' for queue '%s' in vhost '%s': a stream is durable", d.Name, v.name)
	case d.Exclusive:
		return core.Errorf(core.PreconditionFailed, "invalid property 'exclusive' for queue '%s' in vhost '%s': a stream cannot be exclusive", d.Name, v.name)
	case d.AutoDelete:
		return core.Errorf(core.PreconditionFailed, "invalid property 'auto-delete' for queue '%s' in vhost '%s': a stream cannot be auto-delete", d.Name, v.name)
	case v.b.opts.Streams == nil:
		return core.Errorf(core.NotImplemented, "queue '%s': streams need the broker's storage (this broker runs in memory)", d.Name)
	}
	return nil
}

// openStreamLocked checks a stream declaration and opens its log.
func (v *VHost) openStreamLocked(d QueueDecl, args queue.Args) (queue.Log, error) {
	if err := v.checkStreamDecl(d); err != nil {
		return nil, err
	}
	log, err := v.b.opts.Streams.OpenStream(v.name, d.Name, v.localStreamConfig(args))
	if err != nil {
		return nil, core.Wrap(core.ResourceError, err, "open stream '%s' in vhost '%s'", d.Name, v.name)
	}
	return v.shareStream(d.Name, args, log)
}

func (v *VHost) newQueueLocked(d QueueDecl, args queue.Args, log queue.Log) *queue.Queue {
	cfg := queue.Config{
		Name: d.Name, VHost: v.name, Durable: d.Durable, Exclusive: d.Exclusive,
		AutoDelete: d.AutoDelete, Arguments: d.Args, Args: args,
		MemoryBytes: v.b.opts.QueueMemoryBytes, Logger: v.b.log,
	}
	if d.Exclusive {
		cfg.Owner = d.Owner
	}
	hooks := queue.Hooks{
		Now:        v.b.opts.Now,
		DeadLetter: v.deadLetter,
		Unused: func(q *queue.Queue, reason string) {
			v.deleteQueueIf(q, reason)
		},
	}
	if log != nil {
		if v.b.opts.SharedStreams != nil {
			// The cluster deduplicates, across nodes (JetStream's window).
			cfg.Args.HasDedupWindow, cfg.Args.DedupWindow = true, 0
		}
		return queue.NewStream(cfg, hooks, log, v.b.log)
	}
	if v.b.opts.Shared != nil && replicatedQueue(cfg) {
		// Cluster mode: the messages live in the cluster; this node's
		// queue holds what its consumers were handed.
		hooks.DeadLetterConfirm = v.deadLetterConfirm
		q := queue.New(cfg, hooks, nil)
		q.SetRemote(v.b.opts.Shared.Open(q))
		return q
	}
	var store queue.Store
	if d.Durable && v.b.opts.Messages != nil {
		store = v.b.opts.Messages
	}
	return queue.New(cfg, hooks, store)
}

// GenerateQueueName returns a fresh server-generated queue name ("amq.gen-…").
func GenerateQueueName() string { return genName() }

func genName() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "amq.gen-" + base64.RawURLEncoding.EncodeToString(b[:])
}

func (v *VHost) checkOwnerLocked(q *queue.Queue, conn core.ConnID) error {
	c := q.Config()
	if c.Exclusive && c.Owner != conn {
		return core.Errorf(core.ResourceLocked, "cannot obtain exclusive access to locked queue '%s' in vhost '%s'. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration.", c.Name, v.name)
	}
	return nil
}

func (v *VHost) queueEquivalent(c queue.Config, d QueueInfo) error {
	diff := func(field string, got, cur any) error {
		return core.Errorf(core.PreconditionFailed, "inequivalent arg '%s' for queue '%s' in vhost '%s': received '%v' but current is '%v'", field, d.Name, v.name, got, cur)
	}
	switch {
	case c.Durable != d.Durable:
		return diff("durable", d.Durable, c.Durable)
	case c.AutoDelete != d.AutoDelete:
		return diff("auto_delete", d.AutoDelete, c.AutoDelete)
	case c.Exclusive != d.Exclusive:
		return diff("exclusive", d.Exclusive, c.Exclusive)
	}
	for _, k := range unionKeys(c.Arguments, d.Args) {
		a, aok := d.Args[k]
		b, bok := c.Arguments[k]
		if aok != bok || !match.ValuesEqual(a, b) {
			if !aok {
				a = "none"
			}
			if !bok {
				b = "none"
			}
			return diff(k, a, b)
		}
	}
	return nil
}

func unionKeys(a, b core.Table) []string {
	seen := map[string]bool{}
	var ks []string
	for _, t := range []core.Table{a, b} {
		for k := range t {
			if !seen[k] {
				seen[k] = true
				ks = append(ks, k)
			}
		}
	}
	sort.Strings(ks)
	return ks
}

// Queue returns the named queue, checking exclusive ownership for conn.
func (v *VHost) Queue(name string, conn core.ConnID) (*queue.Queue, error) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	q := v.queues[name]
	if q == nil {
		return nil, core.Errorf(core.NotFound, "no queue '%s' in vhost '%s'", name, v.name)
	}
	if err := v.checkOwnerLocked(q, conn); err != nil {
		return nil, err
	}
	return q, nil
}

// Queues lists the vhost's queues, sorted by name.
func (v *VHost) Queues() []*queue.Queue {
	v.mu.RLock()
	defer v.mu.RUnlock()
	out := make([]*queue.Queue, 0, len(v.queues))
	for _, q := range v.queues {
		out = append(out, q)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name() < out[j].Name() })
	return out
}

// DeleteQueue deletes a queue, returning its ready message count.
func (v *VHost) DeleteQueue(name string, ifUnused, ifEmpty bool, conn core.ConnID) (int, error) {
	var n int
	err := v.b.syncRetry(func() (err error) {
		n, err = v.deleteQueue(name, ifUnused, ifEmpty, conn)
		return err
	})
	return n, err
}

func (v *VHost) deleteQueue(name string, ifUnused, ifEmpty bool, conn core.ConnID) (int, error) {
	v.mu.Lock()
	q := v.queues[name]
	if q == nil {
		v.mu.Unlock()
		return 0, core.Errorf(core.NotFound, "no queue '%s' in vhost '%s'", name, v.name)
	}
	if err := v.checkOwnerLocked(q, conn); err != nil {
		v.mu.Unlock()
		return 0, err
	}
	st := q.Stats()
	if ifUnused && st.Consumers > 0 {
		v.mu.Unlock()
		return 0, core.Errorf(core.PreconditionFailed, "queue '%s' in vhost '%s' in use", name, v.name)
	}
	if ifEmpty && st.Ready > 0 {
		v.mu.Unlock()
		return 0, core.Errorf(core.PreconditionFailed, "queue '%s' in vhost '%s' is not empty", name, v.name)
	}
	if v.b.replicating() && replicatedQueue(q.Config()) {
		sources := v.autoDeleteSourcesLocked(Dest{Kind: ToQueue, Name: name})
		v.mu.Unlock()
		return st.Ready, v.replicateQueueDelete(name, sources)
	}
	err := v.removeQueueLocked(q, false)
	v.mu.Unlock()
	if err != nil {
		return 0, err
	}
	return q.Delete(core.Errorf(core.NotFound, "queue '%s' in vhost '%s' was deleted", name, v.name)), nil
}

// replicateQueueDelete deletes a queue in the cluster, then the auto-delete
// exchanges that lost their last binding with it.
func (v *VHost) replicateQueueDelete(name string, sources []string) error {
	if err := v.b.opts.Replicator.DeleteQueue(v.name, name); err != nil {
		return replicaErr(err, "delete queue '%s' in the cluster", name)
	}
	for _, s := range sources {
		v.autoDeleteExchange(s)
	}
	return nil
}

// removeQueueLocked unregisters q here; remote says the cluster decided it.
func (v *VHost) removeQueueLocked(q *queue.Queue, remote bool) error {
	if q.Durable() && !q.Config().Exclusive && v.b.opts.Meta != nil {
		if err := v.b.opts.Meta.DeleteQueue(v.name, q.Name()); err != nil {
			return core.Wrap(core.ResourceError, err, "delete queue '%s'", q.Name())
		}
	}
	v.removeBindingsToLocked(Dest{Kind: ToQueue, Name: q.Name()}, remote)
	if !replicatedQueue(q.Config()) {
		v.fanQueueLocked(q.Name(), -1)
	}
	delete(v.queues, q.Name())
	if q.IsStream() {
		v.unshareStream(q)
		if err := v.b.opts.Streams.DeleteStream(v.name, q.Name()); err != nil {
			v.b.log.Error("stream files not removed", "vhost", v.name, "stream", q.Name(), "err", err)
		}
	} else if q.Durable() && v.b.opts.Messages != nil {
		v.b.opts.Messages.QueueDeleted(v.name, q.Name())
	}
	return nil
}

// deleteQueueIf deletes q (auto-delete, x-expires) if it is still registered.
// In cluster mode a replicated auto-delete queue is deleted in the cluster
// (from its own goroutine: the hook may run on a client's path); x-expires
// does not delete a replicated queue, because each node only sees its own
// use of the queue.
func (v *VHost) deleteQueueIf(q *queue.Queue, reason string) {
	v.mu.Lock()
	if v.queues[q.Name()] != q || (reason == "auto-delete" && q.Consumers() > 0) {
		v.mu.Unlock()
		return
	}
	if v.b.replicating() && replicatedQueue(q.Config()) {
		sources := v.autoDeleteSourcesLocked(Dest{Kind: ToQueue, Name: q.Name()})
		v.mu.Unlock()
		if reason != "auto-delete" {
			v.b.log.Warn("queue unused, but kept: in cluster mode x-expires does not delete a replicated queue yet", "vhost", v.name, "queue", q.Name())
			return
		}
		go func() {
			if err := v.replicateQueueDelete(q.Name(), sources); err != nil {
				v.b.log.Error("auto-delete queue in the cluster", "vhost", v.name, "queue", q.Name(), "err", err)
			}
		}()
		return
	}
	err := v.removeQueueLocked(q, false)
	v.mu.Unlock()
	if err != nil {
		v.b.log.Error("delete unused queue", "vhost", v.name, "queue", q.Name(), "reason", reason, "err", err)
		return
	}
	q.Delete(core.Errorf(core.NotFound, "queue '%s' in vhost '%s' was deleted (%s)", q.Name(), v.name, reason))
}

func (v *VHost) connectionClosed(conn core.ConnID) {
	v.mu.Lock()
	var gone []*queue.Queue
	for _, q := range v.queues {
		if c := q.Config(); c.Exclusive && c.Owner == conn {
			if err := v.removeQueueLocked(q, false); err == nil {
				gone = append(gone, q)
			}
		}
	}
	v.mu.Unlock()
	for _, q := range gone {
		q.Delete(core.Errorf(core.NotFound, "exclusive queue '%s' deleted with its connection", q.Name()))
	}
}

// PurgeQueue removes a queue's ready messages.
func (v *VHost) PurgeQueue(name string, conn core.ConnID) (int, error) {
	q, err := v.Queue(name, conn)
	if err != nil {
		return 0, err
	}
	if q.IsStream() {
		return 0, core.Errorf(core.NotImplemented, "queue '%s' in vhost '%s' is a stream: retention, not purge, removes its records", name, v.name)
	}
	if r := q.Remote(); r != nil {
		// A shared queue (cluster mode): what waits outside this node too.
		n, err := r.Purge()
		if err != nil {
			return 0, core.Wrap(core.ResourceError, err, "purge queue '%s' in vhost '%s' in the cluster", name, v.name)
		}
		return n + q.Purge(), nil
	}
	return q.Purge(), nil
}

// Bind adds a binding from exchange b.Source to b.Dest.
func (v *VHost) Bind(b Binding, conn core.ConnID) error {
	return v.b.syncRetry(func() error { return v.bind(b, conn) })
}

func (v *VHost) bind(b Binding, conn core.ConnID) error {
	v.mu.Lock()
	src, err := v.bindEndsLocked(b, conn)
	if err != nil {
		v.mu.Unlock()
		return err
	}
	if err := b.Args.Validate(); err != nil {
		v.mu.Unlock()
		return core.Wrap(core.PreconditionFailed, err, "binding arguments")
	}
	if v.b.replicating() && v.bindingReplicatedLocked(src, b.Dest) {
		if x, _ := src.findBinding(b); x != nil {
			v.mu.Unlock()
			return nil
		}
		if src.Type == Headers {
			if _, err := match.ParseHeadersBinding(b.Args); err != nil {
				v.mu.Unlock()
				return err
			}
		}
		v.mu.Unlock()
		if err := v.b.opts.Replicator.PutBinding(v.name, b); err != nil {
			return replicaErr(err, "bind in the cluster")
		}
		return nil
	}
	defer v.mu.Unlock()
	added, err := src.addBinding(b)
	if err != nil || !added {
		return err
	}
	if v.b.opts.Meta != nil && v.bindingDurableLocked(src, b.Dest) {
		if err := v.b.opts.Meta.PutBinding(v.name, b); err != nil {
			src.removeBinding(b)
			return core.Wrap(core.ResourceError, err, "persist binding")
		}
	}
	v.fanBindingLocked(src, b, 1)
	return nil
}

// bindingReplicatedLocked: in cluster mode a binding is shared when both
// ends are.
func (v *VHost) bindingReplicatedLocked(src *Exchange, d Dest) bool {
	if !src.Durable {
		return false
	}
	if d.Kind == ToExchange {
		e := v.exchanges[d.Name]
		return e != nil && e.Durable
	}
	q := v.queues[d.Name]
	return q != nil && replicatedQueue(q.Config())
}

// Unbind removes a binding. Removing a binding that does not exist is not an
// error (as RabbitMQ), but missing exchanges or queues are.
func (v *VHost) Unbind(b Binding, conn core.ConnID) error {
	return v.b.syncRetry(func() error { return v.unbind(b, conn) })
}

func (v *VHost) unbind(b Binding, conn core.ConnID) error {
	v.mu.Lock()
	src, err := v.bindEndsLocked(b, conn)
	if err != nil {
		v.mu.Unlock()
		return err
	}
	if !v.b.replicating() || !v.bindingReplicatedLocked(src, b.Dest) {
		v.unbindLocked(src, b, false)
		v.mu.Unlock()
		return nil
	}
	v.mu.Unlock()
	if err := v.b.opts.Replicator.DeleteBinding(v.name, b); err != nil {
		return replicaErr(err, "unbind in the cluster")
	}
	v.autoDeleteExchange(b.Source)
	return nil
}

func (v *VHost) bindEndsLocked(b Binding, conn core.ConnID) (*Exchange, error) {
	if b.Source == DefaultExchange || (b.Dest.Kind == ToExchange && b.Dest.Name == DefaultExchange) {
		return nil, core.Errorf(core.AccessRefused, "operation not permitted on the default exchange")
	}
	src := v.exchanges[b.Source]
	if src == nil {
		return nil, core.Errorf(core.NotFound, "no exchange '%s' in vhost '%s'", b.Source, v.name)
	}
	switch b.Dest.Kind {
	case ToExchange:
		if v.exchanges[b.Dest.Name] == nil {
			return nil, core.Errorf(core.NotFound, "no exchange '%s' in vhost '%s'", b.Dest.Name, v.name)
		}
	default:
		q := v.queues[b.Dest.Name]
		if q == nil {
			return nil, core.Errorf(core.NotFound, "no queue '%s' in vhost '%s'", b.Dest.Name, v.name)
		}
		if err := v.checkOwnerLocked(q, conn); err != nil {
			return nil, err
		}
	}
	return src, nil
}

// Bindings lists every binding in the vhost, including the default
// exchange's implicit ones, sorted by source then destination.
func (v *VHost) Bindings() []Binding {
	v.mu.RLock()
	defer v.mu.RUnlock()
	var out []Binding
	for name := range v.queues {
		out = append(out, Binding{Source: DefaultExchange, Dest: Dest{Kind: ToQueue, Name: name}, Key: name})
	}
	for _, e := range v.exchanges {
		out = append(out, e.allBindings()...)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Source != b.Source {
			return a.Source < b.Source
		}
		if a.Dest.Name != b.Dest.Name {
			return a.Dest.Name < b.Dest.Name
		}
		return a.Key < b.Key
	})
	return out
}

// RegisterReplyTo registers a direct reply-to consumer and returns the
// address ("amq.rabbitmq.reply-to.<id>") a requester puts in reply_to. The
// returned function unregisters it.
func (v *VHost) RegisterReplyTo(fn ReplyFunc) (string, func()) {
	var b [12]byte
	_, _ = rand.Read(b[:])
	addr := fmt.Sprintf("%s.%s", ReplyToPrefix, base64.RawURLEncoding.EncodeToString(b[:]))
	interest := Interest{Exchange: DefaultExchange, Kind: InterestKey, Key: addr}
	v.mu.Lock()
	v.replyTo[addr] = fn
	if f := v.b.opts.Fanout; f != nil {
		f.Interest(v.name, interest, 1)
	}
	v.mu.Unlock()
	return addr, func() {
		v.mu.Lock()
		if _, ok := v.replyTo[addr]; ok {
			delete(v.replyTo, addr)
			if f := v.b.opts.Fanout; f != nil {
				f.Interest(v.name, interest, -1)
			}
		}
		v.mu.Unlock()
	}
}
