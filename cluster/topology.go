package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/router"
	"github.com/bourse-mq/bourse/router/match"
	"github.com/bourse-mq/bourse/router/queue"
)

// Bucket is the name of the JetStream KV bucket that holds the topology.
const Bucket = "bourse_topology"

// TopologyOptions configure a Topology.
type TopologyOptions struct {
	// Replicas of the bucket; 0 tries 3 and falls back to 1 when
	// JetStream is not clustered.
	Replicas int
	// Timeout bounds each change (write, then this node's watcher applying
	// it) and the wait for the initial replay [10s].
	Timeout time.Duration
	Logger  *slog.Logger
}

// Topology replicates the router's durable topology through a JetStream KV
// bucket. It implements router.Replicator: declares are compare-and-set
// writes, and every node (the declaring one included) applies each change
// from its watcher, in the bucket's order. A change returns once this
// node's watcher has applied it.
//
// Lock order: Topology.mu is taken by the watcher around the broker's
// Apply… calls (which take the broker's locks); the router never holds its
// locks when it calls the Topology.
type Topology struct {
	kv      jetstream.KeyValue
	log     *slog.Logger
	timeout time.Duration

	base   context.Context
	cancel context.CancelFunc
	done   chan struct{} // closed when the watcher has stopped
	ready  chan struct{} // closed after the initial replay
	kick   chan struct{} // asks the watcher to resubscribe

	mu      sync.Mutex
	broker  *router.Broker
	applied uint64        // highest revision applied
	changed chan struct{} // closed and replaced when applied grows
	state   map[string]entry
	pending map[string]entry // bindings whose ends are missing here
	started bool

	// shared keeps the messages of shared queues: a queue's stream is
	// created before the queue is recorded, deleted after it is removed.
	shared *Queues
	// streams keeps streams (x-queue-type stream) likewise.
	streams *Streams
}

var _ router.Replicator = (*Topology)(nil)

// OpenTopology binds the topology bucket, creating it if it does not
// exist. JetStream may still be electing its leaders: it retries until ctx
// is done.
func OpenTopology(ctx context.Context, js jetstream.JetStream, o TopologyOptions) (*Topology, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	kv, err := openBucket(ctx, js, o)
	if err != nil {
		return nil, err
	}
	base, cancel := context.WithCancel(context.Background())
	return &Topology{kv: kv, log: o.Logger, timeout: o.Timeout, base: base, cancel: cancel,
		done: make(chan struct{}), ready: make(chan struct{}), kick: make(chan struct{}, 1), changed: make(chan struct{}),
		state: map[string]entry{}, pending: map[string]entry{}}, nil
}

func openBucket(ctx context.Context, js jetstream.JetStream, o TopologyOptions) (jetstream.KeyValue, error) {
	return openKV(ctx, js, jetstream.KeyValueConfig{
		Bucket:      Bucket,
		Description: "Bourse topology: vhosts, exchanges, queues and bindings",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
	}, o.Logger)
}

// openKV binds a KV bucket, creating it with cfg if it does not exist.
// Replicas 0 tries 3 and falls back to 1 when JetStream is not clustered.
// JetStream may still be electing its leaders: it retries until ctx is
// done.
func openKV(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig, log *slog.Logger) (jetstream.KeyValue, error) {
	fixed := cfg.Replicas > 0
	if !fixed {
		cfg.Replicas = 3
	}
	backoff := 50 * time.Millisecond
	for {
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		kv, err := js.KeyValue(actx, cfg.Bucket)
		if err == nil {
			cancel()
			return kv, nil
		}
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			kv, err = js.CreateKeyValue(actx, cfg)
			if err == nil {
				cancel()
				log.Info("created a bucket", "bucket", cfg.Bucket, "replicas", cfg.Replicas)
				return kv, nil
			}
			var apiErr *jetstream.APIError
			if errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeReplicasNotSupported && !fixed && cfg.Replicas > 1 {
				log.Info("JetStream is not clustered: the bucket gets one replica", "bucket", cfg.Bucket)
				cfg.Replicas = 1
				cancel()
				continue
			}
		}
		cancel()
		log.Debug("bucket not ready yet", "bucket", cfg.Bucket, "err", err)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("open bucket %s: %w (last error: %w)", cfg.Bucket, ctx.Err(), err)
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, time.Second)
	}
}

// errCodeReplicasNotSupported is JetStream's "replicas > 1 not supported in
// non-clustered mode".
const errCodeReplicasNotSupported jetstream.ErrorCode = 10074

// Start watches the bucket and applies it to b, and returns once the
// topology recorded so far has been applied (the node may then report
// ready), or with an error when that takes longer than ctx allows.
func (t *Topology) Start(ctx context.Context, b *router.Broker) error {
	t.mu.Lock()
	if t.started {
		t.mu.Unlock()
		return errors.New("topology already started")
	}
	t.started = true
	t.broker = b
	t.mu.Unlock()
	// JetStream may be electing leaders (a node restarting while a peer is
	// down): retry until ctx allows no more.
	w, err := t.kv.WatchAll(t.base)
	for backoff := 50 * time.Millisecond; err != nil; backoff = min(backoff*2, time.Second) {
		t.log.Debug("topology bucket not watchable yet", "err", err)
		select {
		case <-ctx.Done():
			close(t.done)
			return fmt.Errorf("watch topology bucket: %w (last error: %w)", ctx.Err(), err)
		case <-time.After(backoff):
		}
		w, err = t.kv.WatchAll(t.base)
	}
	go t.watch(w)
	select {
	case <-t.ready:
		// The watcher may read from a replica that is behind (this
		// node's own, just restarted): wait until it has applied what
		// the stream's leader holds.
		if err := t.sync(ctx); err != nil {
			return fmt.Errorf("initial topology replay: %w", err)
		}
		t.mu.Lock()
		n := len(t.state)
		t.mu.Unlock()
		t.log.Info("topology replayed from the cluster", "objects", n)
		return nil
	case <-t.done:
		return errors.New("topology watcher stopped before the initial replay")
	case <-ctx.Done():
		return fmt.Errorf("initial topology replay: %w", ctx.Err())
	}
}

// Ready reports whether the initial replay is done.
func (t *Topology) Ready() bool {
	select {
	case <-t.ready:
		return true
	default:
		return false
	}
}

// Close stops the watcher.
func (t *Topology) Close() {
	t.cancel()
	t.mu.Lock()
	started := t.started
	t.mu.Unlock()
	if started {
		<-t.done
	}
}

func (t *Topology) watch(w jetstream.KeyWatcher) {
	defer close(t.done)
	defer func() { _ = w.Stop() }()
	initial := true
	for {
		select {
		case <-t.base.Done():
			return
		case <-t.kick:
			w = t.resubscribe(w)
		case e, ok := <-w.Updates():
			if !ok {
				if t.base.Err() == nil {
					t.log.Error("topology watcher closed")
				}
				return
			}
			if e == nil {
				if initial {
					initial = false
					close(t.ready)
				}
				continue
			}
			t.apply(e)
		}
	}
}

// stallAfter is how long a change may wait for this node's watcher before
// the watcher resubscribes. The watcher is an ephemeral consumer on one
// JetStream server; when that server dies the client only notices after
// missed heartbeats (10s and more), and changes wait meanwhile.
const stallAfter = time.Second

// resubscribe replaces the watcher with one that resumes after the last
// revision applied.
func (t *Topology) resubscribe(w jetstream.KeyWatcher) jetstream.KeyWatcher {
	t.mu.Lock()
	from := t.applied + 1
	t.mu.Unlock()
	nw, err := t.kv.WatchAll(t.base, jetstream.IncludeHistory(), jetstream.ResumeFromRevision(from))
	if err != nil {
		t.log.Warn("topology watcher not resubscribed", "err", err)
		return w
	}
	t.log.Info("topology watcher resubscribed", "from_revision", from)
	_ = w.Stop()
	return nw
}

// apply applies one change of the bucket to the broker.
func (t *Topology) apply(e jetstream.KeyValueEntry) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e.Revision() <= t.applied {
		return // seen already (a resubscribed watcher may repeat some)
	}
	defer t.advanceLocked(e.Revision())
	key := e.Key()
	if e.Operation() != jetstream.KeyValuePut {
		t.applyDeleteLocked(key)
		return
	}
	ent, err := decode(key, e.Value())
	if err != nil {
		t.log.Error("skipping undecodable topology entry", "key", key, "err", err)
		return
	}
	ent.raw = e.Value()
	t.state[key] = ent
	b := t.broker
	switch ent.kind {
	case kindVHost:
		b.ApplyVHost(ent.vhost)
	case kindExchange:
		if err := b.ApplyExchange(ent.vhost, ent.exchange); err != nil {
			t.log.Warn("replicated exchange not applied on this node", "vhost", ent.vhost, "exchange", ent.exchange.Name, "err", err)
		}
		t.retryPendingLocked()
	case kindQueue:
		if err := b.ApplyQueue(ent.vhost, ent.queue); err != nil {
			t.log.Warn("replicated queue not applied on this node", "vhost", ent.vhost, "queue", ent.queue.Name, "err", err)
		}
		t.retryPendingLocked()
	case kindBinding:
		if err := b.ApplyBinding(ent.vhost, ent.binding); err != nil {
			if errors.Is(err, core.ErrNotFound) {
				t.pending[key] = ent // its ends may come later
				return
			}
			t.log.Warn("replicated binding not applied on this node", "vhost", ent.vhost, "source", ent.binding.Source, "dest", ent.binding.Dest.Name, "err", err)
		}
	}
}

func (t *Topology) applyDeleteLocked(key string) {
	old, known := t.state[key]
	delete(t.state, key)
	delete(t.pending, key)
	kind, vhost, name, err := keyNames(key)
	if err != nil {
		t.log.Error("skipping undecodable topology key", "key", key, "err", err)
		return
	}
	b := t.broker
	switch kind {
	case kindVHost:
		b.ApplyVHostDeleted(vhost)
	case kindExchange:
		b.ApplyExchangeDeleted(vhost, name)
		t.parkBindingsLocked(vhost, func(bd core.Binding) bool {
			return bd.Source == name || bd.Dest == core.Dest{Kind: core.ToExchange, Name: name}
		})
	case kindQueue:
		b.ApplyQueueDeleted(vhost, name)
		t.parkBindingsLocked(vhost, func(bd core.Binding) bool {
			return bd.Dest == core.Dest{Kind: core.ToQueue, Name: name}
		})
	case kindBinding:
		if known {
			b.ApplyBindingDeleted(old.vhost, old.binding)
		}
	}
}

// parkBindingsLocked moves the recorded bindings that lost an end on this
// node to pending: whoever deleted the end deletes them too, but if it
// stopped half way they are applied again should the end come back, as a
// node replaying the bucket from scratch would.
func (t *Topology) parkBindingsLocked(vhost string, lost func(core.Binding) bool) {
	for k, e := range t.state {
		if e.kind == kindBinding && e.vhost == vhost && lost(e.binding) {
			t.pending[k] = e
		}
	}
}

func (t *Topology) retryPendingLocked() {
	for k, e := range t.pending {
		if err := t.broker.ApplyBinding(e.vhost, e.binding); err == nil {
			delete(t.pending, k)
		} else if !errors.Is(err, core.ErrNotFound) {
			delete(t.pending, k)
			t.log.Warn("replicated binding not applied on this node", "vhost", e.vhost, "source", e.binding.Source, "dest", e.binding.Dest.Name, "err", err)
		}
	}
}

func (t *Topology) advanceLocked(rev uint64) {
	if rev > t.applied {
		t.applied = rev
		close(t.changed)
		t.changed = make(chan struct{})
	}
}

// waitApplied returns once this node has applied revision rev.
func (t *Topology) waitApplied(ctx context.Context, rev uint64) error {
	stall := time.NewTimer(stallAfter)
	defer stall.Stop()
	for {
		t.mu.Lock()
		if t.applied >= rev {
			t.mu.Unlock()
			return nil
		}
		ch := t.changed
		t.mu.Unlock()
		select {
		case <-ch:
		case <-stall.C:
			select {
			case t.kick <- struct{}{}:
			default:
			}
			stall.Reset(stallAfter)
		case <-t.done:
			return core.Errorf(core.ResourceError, "cluster topology watcher stopped")
		case <-ctx.Done():
			return core.Wrap(core.ResourceError, ctx.Err(), "cluster topology change %d not applied on this node in time", rev)
		}
	}
}

func (t *Topology) opCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(t.base, t.timeout)
}

// create writes val at key unless the key holds a value, and returns the
// value the bucket holds once this node has applied it.
func (t *Topology) create(key string, val []byte) ([]byte, error) {
	ctx, cancel := t.opCtx()
	defer cancel()
	for pause := 5 * time.Millisecond; ; pause = min(2*pause, 200*time.Millisecond) {
		var rev uint64
		err := retryTransient(ctx, func(ctx context.Context) (err error) {
			rev, err = t.kv.Create(ctx, key, val)
			return err
		})
		if err == nil {
			return val, t.waitApplied(ctx, rev)
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return nil, err
		}
		// Read the winner from this node's applied state, not with a
		// get, which a lagging replica may answer. The winner may still
		// be a proposal the stream has not committed (it already
		// refuses us), so it may take a moment to show up; or it may
		// have been deleted since, and then we try again.
		if err := t.sync(ctx); err != nil {
			return nil, err
		}
		t.mu.Lock()
		ent, ok := t.state[key]
		t.mu.Unlock()
		if ok {
			return ent.raw, nil
		}
		select {
		case <-ctx.Done():
			return nil, core.Wrap(core.ResourceError, ctx.Err(), "key %s exists in the cluster but was never seen here", key)
		case <-time.After(pause):
		}
	}
}

// PutVHost implements router.Replicator.
func (t *Topology) PutVHost(name string) error {
	v, err := jsonMarshal(vhostDef{Name: name})
	if err != nil {
		return err
	}
	_, err = t.create(vhostKey(name), v)
	return err
}

// PutExchange implements router.Replicator.
func (t *Topology) PutExchange(vhost string, e core.ExchangeInfo) (core.ExchangeInfo, error) {
	v, err := encExchange(vhost, e)
	if err != nil {
		return core.ExchangeInfo{}, err
	}
	key := exchangeKey(vhost, e.Name)
	got, err := t.create(key, v)
	if err != nil {
		return core.ExchangeInfo{}, err
	}
	ent, err := decode(key, got)
	return ent.exchange, err
}

// PutQueue implements router.Replicator.
func (t *Topology) PutQueue(vhost string, q core.QueueInfo) (core.QueueInfo, error) {
	v, err := encQueue(vhost, q)
	if err != nil {
		return core.QueueInfo{}, err
	}
	if t.shared != nil && sharedQueue(q) {
		// The stream first: any node that sees the queue can publish to it.
		ctx, cancel := t.opCtx()
		var args *queue.Args
		if a, err := queue.ParseArgs(q.Args); err == nil {
			args = &a
		}
		err := t.shared.ensure(ctx, vhost, q.Name, args)
		cancel()
		if err != nil {
			return core.QueueInfo{}, err
		}
	}
	if a, ok := isStream(q); ok && t.streams != nil {
		ctx, cancel := t.opCtx()
		err := t.streams.ensure(ctx, vhost, q.Name, a)
		cancel()
		if err != nil {
			return core.QueueInfo{}, err
		}
	}
	key := queueKey(vhost, q.Name)
	got, err := t.create(key, v)
	if err != nil {
		return core.QueueInfo{}, err
	}
	ent, err := decode(key, got)
	return ent.queue, err
}

// PutBinding implements router.Replicator.
func (t *Topology) PutBinding(vhost string, b core.Binding) error {
	key, v, err := encBinding(vhost, b)
	if err != nil {
		return err
	}
	_, err = t.create(key, v)
	return err
}

// DeleteBinding implements router.Replicator. It deletes every recorded
// binding equal to b by AMQP value (a client may encode the arguments in
// other integer widths than the declaring one did).
func (t *Topology) DeleteBinding(vhost string, b core.Binding) error {
	return t.deleteWhere(func(e entry) bool {
		return e.kind == kindBinding && e.vhost == vhost && e.binding.Source == b.Source &&
			e.binding.Dest == b.Dest && e.binding.Key == b.Key && tablesEqual(e.binding.Args, b.Args)
	}, nil)
}

// DeleteExchange implements router.Replicator: the bindings from and to
// the exchange, then the exchange.
func (t *Topology) DeleteExchange(vhost, name string) error {
	return t.deleteWhere(func(e entry) bool {
		return e.kind == kindBinding && e.vhost == vhost &&
			(e.binding.Source == name || e.binding.Dest == core.Dest{Kind: core.ToExchange, Name: name})
	}, []string{exchangeKey(vhost, name)})
}

// DeleteQueue implements router.Replicator: the bindings to the queue,
// then the queue.
func (t *Topology) DeleteQueue(vhost, name string) error {
	t.mu.Lock()
	ent, known := t.state[queueKey(vhost, name)]
	t.mu.Unlock()
	err := t.deleteWhere(func(e entry) bool {
		return e.kind == kindBinding && e.vhost == vhost && e.binding.Dest == core.Dest{Kind: core.ToQueue, Name: name}
	}, []string{queueKey(vhost, name)})
	if err != nil {
		return err
	}
	if _, ok := isStream(ent.queue); known && ok {
		return t.dropLogs(vhost, []string{name})
	}
	return t.dropStreams(vhost, []string{name})
}

// dropLogs deletes the JetStream streams of streams that were deleted.
func (t *Topology) dropLogs(vhost string, names []string) error {
	if t.streams == nil {
		return nil
	}
	ctx, cancel := t.opCtx()
	defer cancel()
	for _, n := range names {
		if err := t.streams.drop(ctx, vhost, n); err != nil {
			return err
		}
	}
	return nil
}

// dropStreams deletes the streams of shared queues that were deleted.
func (t *Topology) dropStreams(vhost string, names []string) error {
	if t.shared == nil {
		return nil
	}
	ctx, cancel := t.opCtx()
	defer cancel()
	for _, n := range names {
		if err := t.shared.drop(ctx, vhost, n); err != nil {
			return err
		}
	}
	return nil
}

// DeleteVHost implements router.Replicator: bindings, queues and exchanges
// of the vhost, then the vhost.
func (t *Topology) DeleteVHost(name string) error {
	t.mu.Lock()
	var queues, logs []string
	for _, e := range t.state {
		if e.kind == kindQueue && e.vhost == name && sharedQueue(e.queue) {
			queues = append(queues, e.queue.Name)
		}
		if e.kind == kindQueue && e.vhost == name {
			if _, ok := isStream(e.queue); ok {
				logs = append(logs, e.queue.Name)
			}
		}
	}
	t.mu.Unlock()
	err := t.deleteWhere(func(e entry) bool { return e.kind != kindVHost && e.vhost == name },
		[]string{vhostKey(name)})
	if err != nil {
		return err
	}
	if err := t.dropLogs(name, logs); err != nil {
		return err
	}
	return t.dropStreams(name, queues)
}

// deleteWhere catches up with the bucket, deletes the recorded entries
// that match, then the keys given, then sweeps the entries that match
// again (a binding made meanwhile on another node to an end being
// deleted), and returns once this node has applied it all.
func (t *Topology) deleteWhere(pick func(entry) bool, then []string) error {
	ctx, cancel := t.opCtx()
	defer cancel()
	if err := t.sync(ctx); err != nil {
		return err
	}
	if err := t.deleteKeys(ctx, t.keysWhere(pick)); err != nil {
		return err
	}
	if err := t.deleteKeys(ctx, then); err != nil {
		return err
	}
	if len(then) > 0 {
		if err := t.sync(ctx); err != nil {
			return err
		}
		if err := t.deleteKeys(ctx, t.keysWhere(pick)); err != nil {
			return err
		}
	}
	return t.sync(ctx)
}

func (t *Topology) keysWhere(pick func(entry) bool) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var keys []string
	for k, e := range t.state {
		if pick(e) {
			keys = append(keys, k)
		}
	}
	// Bindings first, so that no binding outlives its ends.
	sortBindingsFirst(keys)
	return keys
}

func (t *Topology) deleteKeys(ctx context.Context, keys []string) error {
	for _, k := range keys {
		if err := retryTransient(ctx, func(ctx context.Context) error { return t.kv.Delete(ctx, k) }); err != nil {
			return fmt.Errorf("delete %s: %w", k, err)
		}
	}
	return nil
}

// Sync implements router.Replicator: it returns once this node has applied
// every change the bucket held when it was called.
func (t *Topology) Sync() error {
	ctx, cancel := t.opCtx()
	defer cancel()
	return t.sync(ctx)
}

func (t *Topology) sync(ctx context.Context) error {
	st, err := t.kv.Status(ctx)
	if err != nil {
		return fmt.Errorf("topology bucket status: %w", err)
	}
	bs, ok := st.(*jetstream.KeyValueBucketStatus)
	if !ok {
		return fmt.Errorf("topology bucket status of type %T", st)
	}
	return t.waitApplied(ctx, bs.StreamInfo().State.LastSeq)
}

func tablesEqual(a, b core.Table) bool {
	if len(a) != len(b) {
		return false
	}
	for k, av := range a {
		bv, ok := b[k]
		if !ok || !match.ValuesEqual(av, bv) {
			return false
		}
	}
	return true
}
