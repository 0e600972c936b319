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
}

// ReplyFunc receives a message published to a direct reply-to address. It
// reports false when the requester is gone.
type ReplyFunc func(m *core.Message) bool

func newVHost(b *Broker, name string) *VHost {
	v := &VHost{name: name, b: b, exchanges: map[string]*Exchange{}, queues: map[string]*queue.Queue{}, replyTo: map[string]ReplyFunc{}}
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
	qs := v.queues
	v.queues = map[string]*queue.Queue{}
	v.exchanges = map[string]*Exchange{}
	v.mu.Unlock()
	for _, q := range qs {
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
	v.mu.Lock()
	defer v.mu.Unlock()
	e := v.exchanges[d.Name]
	if d.Passive {
		if e == nil {
			return core.Errorf(core.NotFound, "no exchange '%s' in vhost '%s'", d.Name, v.name)
		}
		return nil
	}
	if e != nil {
		return v.exchangeEquivalent(e, d.ExchangeInfo)
	}
	if reserved(d.Name) || d.Name == "" {
		return core.Errorf(core.AccessRefused, "exchange name '%s' contains reserved prefix 'amq.*'", d.Name)
	}
	if !validExchangeType(d.Type) {
		return core.Errorf(core.CommandInvalid, "invalid exchange type '%s'", d.Type)
	}
	if err := d.Args.Validate(); err != nil {
		return core.Wrap(core.PreconditionFailed, err, "exchange '%s' arguments", d.Name)
	}
	if _, err := newHeadersCheck(d); err != nil {
		return err
	}
	if d.Durable && v.b.opts.Meta != nil {
		if err := v.b.opts.Meta.PutExchange(v.name, d.ExchangeInfo); err != nil {
			return core.Wrap(core.ResourceError, err, "persist exchange '%s'", d.Name)
		}
	}
	v.exchanges[d.Name] = newExchange(d.ExchangeInfo)
	return nil
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

func (v *VHost) exchangeEquivalent(e *Exchange, d ExchangeInfo) error {
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
	v.mu.Lock()
	defer v.mu.Unlock()
	e := v.exchanges[name]
	if e == nil {
		return core.Errorf(core.NotFound, "no exchange '%s' in vhost '%s'", name, v.name)
	}
	if name == "" || reserved(name) {
		return core.Errorf(core.AccessRefused, "operation not permitted on exchange '%s'", name)
	}
	if ifUnused && e.nbind > 0 {
		return core.Errorf(core.PreconditionFailed, "exchange '%s' in vhost '%s' in use", name, v.name)
	}
	return v.deleteExchangeLocked(e)
}

func (v *VHost) deleteExchangeLocked(e *Exchange) error {
	if e.Durable && v.b.opts.Meta != nil {
		if err := v.b.opts.Meta.DeleteExchange(v.name, e.Name); err != nil {
			return core.Wrap(core.ResourceError, err, "delete exchange '%s'", e.Name)
		}
	}
	delete(v.exchanges, e.Name)
	v.removeBindingsToLocked(Dest{Kind: ToExchange, Name: e.Name})
	return nil
}

// removeBindingsToLocked removes every binding whose destination is d, and
// deletes auto-delete exchanges left without bindings.
func (v *VHost) removeBindingsToLocked(d Dest) {
	for _, src := range v.exchanges {
		for _, b := range src.bindingsTo(d) {
			v.unbindLocked(src, b)
		}
	}
}

func (v *VHost) unbindLocked(src *Exchange, b Binding) bool {
	if !src.removeBinding(b) {
		return false
	}
	if v.b.opts.Meta != nil && v.bindingDurableLocked(src, b.Dest) {
		if err := v.b.opts.Meta.DeleteBinding(v.name, b); err != nil {
			v.b.log.Error("delete binding from metadata store", "vhost", v.name, "source", b.Source, "err", err)
		}
	}
	if src.AutoDelete && src.nbind == 0 {
		_ = v.deleteExchangeLocked(src)
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
	v.mu.Lock()
	if d.Name == "" && !d.Passive {
		d.Name = genName()
	}
	q := v.queues[d.Name]
	if q != nil {
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
		q.Touch()
		st := q.Stats()
		return DeclareOk{Name: d.Name, Messages: st.Ready, Consumers: st.Consumers}, nil
	}
	defer v.mu.Unlock()
	if d.Passive {
		return DeclareOk{}, core.Errorf(core.NotFound, "no queue '%s' in vhost '%s'", d.Name, v.name)
	}
	if reserved(d.Name) && !strings.HasPrefix(d.Name, "amq.gen-") {
		return DeclareOk{}, core.Errorf(core.AccessRefused, "queue name '%s' contains reserved prefix 'amq.*'", d.Name)
	}
	if max := v.b.maxQueues.Load(); max > 0 && int64(len(v.queues)) >= max {
		return DeclareOk{}, core.Errorf(core.PreconditionFailed, "cannot declare queue '%s' in vhost '%s': queue limit (%d) is reached", d.Name, v.name, max)
	}
	if err := d.Args.Validate(); err != nil {
		return DeclareOk{}, core.Wrap(core.PreconditionFailed, err, "queue '%s' arguments", d.Name)
	}
	args, err := queue.ParseArgs(d.Args)
	if err != nil {
		return DeclareOk{}, err
	}
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
	v.queues[d.Name] = v.newQueueLocked(d, args, log)
	return DeclareOk{Name: d.Name}, nil
}

// openStreamLocked checks a stream declaration as RabbitMQ does (durable,
// not exclusive, not auto-delete) and opens its log.
func (v *VHost) openStreamLocked(d QueueDecl, args queue.Args) (queue.Log, error) {
	switch {
	case !d.Durable:
		return nil, core.Errorf(core.PreconditionFailed, "invalid property 'non-durable' for queue '%s' in vhost '%s': a stream is durable", d.Name, v.name)
	case d.Exclusive:
		return nil, core.Errorf(core.PreconditionFailed, "invalid property 'exclusive' for queue '%s' in vhost '%s': a stream cannot be exclusive", d.Name, v.name)
	case d.AutoDelete:
		return nil, core.Errorf(core.PreconditionFailed, "invalid property 'auto-delete' for queue '%s' in vhost '%s': a stream cannot be auto-delete", d.Name, v.name)
	case v.b.opts.Streams == nil:
		return nil, core.Errorf(core.NotImplemented, "queue '%s': streams need the broker's storage (this broker runs in memory)", d.Name)
	}
	log, err := v.b.opts.Streams.OpenStream(v.name, d.Name, args.StreamConfig())
	if err != nil {
		return nil, core.Wrap(core.ResourceError, err, "open stream '%s' in vhost '%s'", d.Name, v.name)
	}
	return log, nil
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
		return queue.NewStream(cfg, hooks, log, v.b.log)
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
	err := v.removeQueueLocked(q)
	v.mu.Unlock()
	if err != nil {
		return 0, err
	}
	return q.Delete(core.Errorf(core.NotFound, "queue '%s' in vhost '%s' was deleted", name, v.name)), nil
}

func (v *VHost) removeQueueLocked(q *queue.Queue) error {
	if q.Durable() && !q.Config().Exclusive && v.b.opts.Meta != nil {
		if err := v.b.opts.Meta.DeleteQueue(v.name, q.Name()); err != nil {
			return core.Wrap(core.ResourceError, err, "delete queue '%s'", q.Name())
		}
	}
	v.removeBindingsToLocked(Dest{Kind: ToQueue, Name: q.Name()})
	delete(v.queues, q.Name())
	if q.IsStream() {
		if err := v.b.opts.Streams.DeleteStream(v.name, q.Name()); err != nil {
			v.b.log.Error("stream files not removed", "vhost", v.name, "stream", q.Name(), "err", err)
		}
	} else if q.Durable() && v.b.opts.Messages != nil {
		v.b.opts.Messages.QueueDeleted(v.name, q.Name())
	}
	return nil
}

// deleteQueueIf deletes q (auto-delete, x-expires) if it is still registered.
func (v *VHost) deleteQueueIf(q *queue.Queue, reason string) {
	v.mu.Lock()
	if v.queues[q.Name()] != q || (reason == "auto-delete" && q.Consumers() > 0) {
		v.mu.Unlock()
		return
	}
	err := v.removeQueueLocked(q)
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
			if err := v.removeQueueLocked(q); err == nil {
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
	return q.Purge(), nil
}

// Bind adds a binding from exchange b.Source to b.Dest.
func (v *VHost) Bind(b Binding, conn core.ConnID) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	src, err := v.bindEndsLocked(b, conn)
	if err != nil {
		return err
	}
	if err := b.Args.Validate(); err != nil {
		return core.Wrap(core.PreconditionFailed, err, "binding arguments")
	}
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
	return nil
}

// Unbind removes a binding. Removing a binding that does not exist is not an
// error (as RabbitMQ), but missing exchanges or queues are.
func (v *VHost) Unbind(b Binding, conn core.ConnID) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	src, err := v.bindEndsLocked(b, conn)
	if err != nil {
		return err
	}
	v.unbindLocked(src, b)
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
	v.mu.Lock()
	v.replyTo[addr] = fn
	v.mu.Unlock()
	return addr, func() {
		v.mu.Lock()
		delete(v.replyTo, addr)
		v.mu.Unlock()
	}
}
