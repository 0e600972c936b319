package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// MQTT state shared by the nodes. The adapter (protocols/mqtt) names two
// buckets of records, "mqtt_sessions" and "mqtt_retained"; each is the KV
// bucket "bourse_" + its name. A third bucket, OwnersBucket, says which
// node holds each session. Keys are the adapter's keys as one token (tok).
const (
	mqttBucketPrefix = "bourse_"
	// OwnersBucket holds, per MQTT session key (the adapter's client id),
	// the node that holds the session: {"node": name}.
	OwnersBucket = "bourse_mqtt_owners"
	// takeoverSubject + tok(node) is where a node is asked to let a
	// session go.
	takeoverSubject = "bourse.mqtt.takeover."
	// releaseWait bounds the wait for the previous holder of a session.
	releaseWait = 5 * time.Second
	// aliveSubject + tok(node) is answered by a running node (its MQTT
	// sessions are not orphans).
	aliveSubject = "bourse.mqtt.alive."
	// OrphanAfter is the default of Options.MQTTOrphanAfter.
	OrphanAfter = 2 * time.Minute
)

// mqttBuckets are the adapter's buckets.
var mqttBuckets = []string{"mqtt_sessions", "mqtt_retained"}

// MQTT shares MQTT sessions and retained messages between the nodes. It
// implements protocols/mqtt's Cluster interface (the adapter does not
// import this package; cmd/bourse wires it in):
//
//   - Records (sessions, retained messages) are KV entries, written by the
//     node that changes them; WatchRecords keeps a node's retained index
//     in step with every other node's writes.
//   - Claim makes this node the holder of a session: a compare-and-set on
//     the session's key in OwnersBucket, then a request to the node that
//     held it, which closes that client's connection (MQTT 5: DISCONNECT
//     0x8E) and forgets the session before it answers. When two nodes
//     claim at once, the claim with the later revision wins: the node
//     whose claim is earlier is asked to let go in turn (a request that
//     comes while this node's own claim is being written waits for its
//     revision, to compare).
type MQTT struct {
	nc      *nats.Conn
	node    string
	timeout time.Duration
	log     *slog.Logger

	kvs    map[string]jetstream.KeyValue // by the adapter's bucket name
	owners jetstream.KeyValue
	sub    *nats.Subscription

	base   context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // watchers and takeover handlers

	mu       sync.Mutex
	claims   map[string]*claim // by session key
	takeover func(key string)
	closed   bool

	orphanAfter time.Duration
	aliveSub    *nats.Subscription
	orphans     func(key, node string) // set once: the sweep runs (orphans.go)
}

// claim is this node's hold on a session.
type claim struct {
	rev     uint64        // the owner entry's revision; 0 while it is being written
	settled chan struct{} // closed once rev is known, or the claim failed
}

func settledClaim(rev uint64) *claim {
	c := &claim{rev: rev, settled: make(chan struct{})}
	close(c.settled)
	return c
}

type ownerRec struct {
	Node string `json:"node"`
}

type takeoverReq struct {
	Key string `json:"key"`
	Rev uint64 `json:"rev"`
}

func newMQTT(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, node string, replicas int, timeout, orphanAfter time.Duration, log *slog.Logger) (*MQTT, error) {
	if orphanAfter <= 0 {
		orphanAfter = OrphanAfter
	}
	m := &MQTT{nc: nc, node: node, timeout: timeout, log: log, orphanAfter: orphanAfter,
		kvs: map[string]jetstream.KeyValue{}, claims: map[string]*claim{}}
	open := func(bucket, desc string) (jetstream.KeyValue, error) {
		return openKV(ctx, js, jetstream.KeyValueConfig{Bucket: bucket, Description: desc, History: 1,
			Storage: jetstream.FileStorage, Replicas: replicas}, log)
	}
	for _, name := range mqttBuckets {
		kv, err := open(mqttBucketPrefix+name, "Bourse MQTT "+strings.TrimPrefix(name, "mqtt_"))
		if err != nil {
			return nil, err
		}
		m.kvs[name] = kv
	}
	var err error
	if m.owners, err = open(OwnersBucket, "Bourse MQTT session owners"); err != nil {
		return nil, err
	}
	m.base, m.cancel = context.WithCancel(context.Background())
	m.sub, err = nc.Subscribe(takeoverSubject+tok(node), func(msg *nats.Msg) {
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.closed {
			return
		}
		m.wg.Add(1)
		go m.handleTakeover(msg)
	})
	if err != nil {
		m.cancel()
		return nil, fmt.Errorf("subscribe to takeovers: %w", err)
	}
	m.aliveSub, err = nc.Subscribe(aliveSubject+tok(node), func(msg *nats.Msg) { _ = msg.Respond(nil) })
	if err != nil {
		_ = m.sub.Unsubscribe()
		m.cancel()
		return nil, fmt.Errorf("subscribe to liveness probes: %w", err)
	}
	return m, nil
}

// errNoRecord is what leaderGet returns for a key with no value.
var errNoRecord = errors.New("no record")

// leaderGet reads the latest entry of a key from the bucket stream's
// leader, which has every acknowledged write (a KV get is a direct get,
// which any replica answers, a lagging one too).
func (m *MQTT) leaderGet(ctx context.Context, bucket, key string) ([]byte, uint64, error) {
	req, _ := json.Marshal(map[string]string{"last_by_subj": "$KV." + bucket + "." + key})
	msg, err := m.nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET.KV_"+bucket, req)
	if err != nil {
		return nil, 0, fmt.Errorf("get from %s: %w", bucket, err)
	}
	var resp struct {
		Message *struct {
			Seq    uint64 `json:"seq"`
			Header []byte `json:"hdrs"`
			Data   []byte `json:"data"`
		} `json:"message"`
		Error *struct {
			Code        int    `json:"code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return nil, 0, fmt.Errorf("get from %s: %w", bucket, err)
	}
	switch {
	case resp.Error != nil && resp.Error.Code == 404:
		return nil, 0, errNoRecord
	case resp.Error != nil:
		return nil, 0, fmt.Errorf("get from %s: %s", bucket, resp.Error.Description)
	case resp.Message == nil:
		return nil, 0, fmt.Errorf("get from %s: empty answer", bucket)
	}
	if len(resp.Message.Header) > 0 {
		h, err := nats.DecodeHeadersMsg(resp.Message.Header)
		if err == nil && (h.Get("KV-Operation") == "DEL" || h.Get("KV-Operation") == "PURGE") {
			return nil, resp.Message.Seq, errNoRecord
		}
	}
	return resp.Message.Data, resp.Message.Seq, nil
}

// Close stops the watchers and the takeover handler.
func (m *MQTT) Close() {
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	if m.sub != nil {
		_ = m.sub.Unsubscribe()
	}
	if m.aliveSub != nil {
		_ = m.aliveSub.Unsubscribe()
	}
	m.cancel()
	m.wg.Wait()
}

func (m *MQTT) bucket(name string) (jetstream.KeyValue, error) {
	kv, ok := m.kvs[name]
	if !ok {
		return nil, fmt.Errorf("no MQTT bucket %q in the cluster", name)
	}
	return kv, nil
}

func (m *MQTT) opCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(m.base, m.timeout)
}

// UpdateRecords writes puts and deletes to a bucket, one key after the
// other (a KV bucket has no transactions across keys).
func (m *MQTT) UpdateRecords(bucket string, puts map[string][]byte, deletes []string) error {
	kv, err := m.bucket(bucket)
	if err != nil {
		return err
	}
	ctx, cancel := m.opCtx()
	defer cancel()
	var errs []error
	for k, v := range puts {
		if _, err := kv.Put(ctx, tok(k), v); err != nil {
			errs = append(errs, fmt.Errorf("put %s: %w", kv.Bucket(), err))
		}
	}
	for _, k := range deletes {
		if err := kv.Delete(ctx, tok(k)); err != nil {
			errs = append(errs, fmt.Errorf("delete from %s: %w", kv.Bucket(), err))
		}
	}
	return errors.Join(errs...)
}

// ForEachRecord calls fn for every record of a bucket.
func (m *MQTT) ForEachRecord(bucket string, fn func(key string, val []byte) error) error {
	kv, err := m.bucket(bucket)
	if err != nil {
		return err
	}
	ctx, cancel := m.opCtx()
	defer cancel()
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return fmt.Errorf("read %s: %w", kv.Bucket(), err)
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok || e == nil {
				return nil
			}
			key, err := untok(e.Key())
			if err != nil {
				m.log.Warn("skipping an MQTT record with a foreign key", "bucket", kv.Bucket(), "key", e.Key())
				continue
			}
			if err := fn(key, e.Value()); err != nil {
				return err
			}
		case <-ctx.Done():
			return fmt.Errorf("read %s: %w", kv.Bucket(), ctx.Err())
		}
	}
}

// GetRecord returns a record, read from the bucket stream's leader (the
// previous holder of a session has just written it), or nil when there is
// none.
func (m *MQTT) GetRecord(bucket, key string) ([]byte, error) {
	kv, err := m.bucket(bucket)
	if err != nil {
		return nil, err
	}
	ctx, cancel := m.opCtx()
	defer cancel()
	val, _, err := m.leaderGet(ctx, kv.Bucket(), tok(key))
	if errors.Is(err, errNoRecord) {
		return nil, nil
	}
	return val, err
}

// WatchRecords calls fn with every record of bucket, then with every
// change any node makes to it (val nil: deleted), in the bucket's order
// and from one goroutine, until Close. It returns once the records present
// at the call have been given to fn.
func (m *MQTT) WatchRecords(bucket string, fn func(key string, val []byte)) error {
	kv, err := m.bucket(bucket)
	if err != nil {
		return err
	}
	w, err := kv.WatchAll(m.base)
	if err != nil {
		return fmt.Errorf("watch %s: %w", kv.Bucket(), err)
	}
	ready := make(chan struct{})
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		m.watch(kv, w, fn, ready)
	}()
	ctx, cancel := m.opCtx()
	defer cancel()
	select {
	case <-ready:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("watch %s: initial values: %w", kv.Bucket(), ctx.Err())
	}
}

func (m *MQTT) watch(kv jetstream.KeyValue, w jetstream.KeyWatcher, fn func(key string, val []byte), ready chan struct{}) {
	var last uint64
	for {
		for e := range w.Updates() {
			if e == nil {
				if ready != nil {
					close(ready)
					ready = nil
				}
				continue
			}
			last = e.Revision()
			key, err := untok(e.Key())
			if err != nil {
				continue
			}
			if e.Operation() == jetstream.KeyValuePut {
				fn(key, e.Value())
			} else {
				fn(key, nil)
			}
		}
		_ = w.Stop()
		if m.base.Err() != nil {
			return
		}
		// The watcher's consumer went away (its server died): resume after
		// the last change seen.
		m.log.Warn("MQTT watcher closed; resubscribing", "bucket", kv.Bucket(), "from_revision", last+1)
		for {
			var err error
			opts := []jetstream.WatchOpt{jetstream.IncludeHistory()}
			if last > 0 {
				opts = append(opts, jetstream.ResumeFromRevision(last+1))
			}
			if w, err = kv.WatchAll(m.base, opts...); err == nil {
				break
			}
			select {
			case <-m.base.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}
}

// OnTakeover sets the function called when another node claims a session
// this node holds; it returns once the session is let go here (its
// connection closed, its deliveries given back, its record written).
func (m *MQTT) OnTakeover(fn func(key string)) {
	m.mu.Lock()
	m.takeover = fn
	m.mu.Unlock()
}

// Claim makes this node the holder of session key and returns the claim's
// token (for Release). moved reports that another node held it: it has
// let it go (or could not be reached within 5s). A later claim by another
// node takes the session away again (OnTakeover), even if it comes while
// this one is being made.
func (m *MQTT) Claim(key string) (token uint64, moved bool, err error) {
	ctx, cancel := m.opCtx()
	defer cancel()
	c := &claim{settled: make(chan struct{})}
	m.mu.Lock()
	m.claims[key] = c
	m.mu.Unlock()
	fail := func(err error) (uint64, bool, error) {
		m.mu.Lock()
		if m.claims[key] == c {
			delete(m.claims, key)
		}
		m.mu.Unlock()
		close(c.settled)
		return 0, false, err
	}
	val, err := json.Marshal(ownerRec{Node: m.node})
	if err != nil {
		return fail(err)
	}
	k := tok(key)
	for pause := 5 * time.Millisecond; ; pause = min(2*pause, 200*time.Millisecond) {
		prev := ""
		v, rev, err := m.leaderGet(ctx, OwnersBucket, k)
		switch {
		case err == nil:
			var o ownerRec
			_ = json.Unmarshal(v, &o)
			prev = o.Node
		case errors.Is(err, errNoRecord):
			// rev is the delete marker's, or 0 for a key never written.
		default:
			return fail(fmt.Errorf("mqtt session owner: %w", err))
		}
		var nrev uint64
		if rev == 0 {
			nrev, err = m.owners.Create(ctx, k, val)
		} else {
			// The latest entry's revision, as the leader has it (a value
			// or a delete marker): compare-and-set against it.
			nrev, err = m.owners.Update(ctx, k, val, rev)
		}
		if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			// Another node claimed it meanwhile: read again.
			select {
			case <-ctx.Done():
				return fail(fmt.Errorf("mqtt session owner: %w", ctx.Err()))
			case <-time.After(pause):
			}
			continue
		}
		if err != nil {
			return fail(fmt.Errorf("mqtt session owner: %w", err))
		}
		m.mu.Lock()
		c.rev = nrev
		m.mu.Unlock()
		close(c.settled)
		if prev != "" && prev != m.node {
			m.askRelease(ctx, prev, key, nrev)
			return nrev, true, nil
		}
		return nrev, false, nil
	}
}

// askRelease asks node to let session key go and waits for its answer.
func (m *MQTT) askRelease(ctx context.Context, node, key string, rev uint64) {
	req, _ := json.Marshal(takeoverReq{Key: key, Rev: rev})
	rctx, cancel := context.WithTimeout(ctx, releaseWait)
	defer cancel()
	if _, err := m.nc.RequestWithContext(rctx, takeoverSubject+tok(node), req); err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			m.log.Info("the previous holder of an MQTT session is not running", "node", node)
			return
		}
		m.log.Warn("the previous holder of an MQTT session did not let it go in time; taking it anyway", "node", node, "err", err)
	}
}

func (m *MQTT) handleTakeover(msg *nats.Msg) {
	defer m.wg.Done()
	var r takeoverReq
	if err := json.Unmarshal(msg.Data, &r); err != nil {
		m.log.Warn("bad MQTT takeover request", "err", err)
		return
	}
	m.mu.Lock()
	c := m.claims[r.Key]
	m.mu.Unlock()
	if c != nil {
		// This node's own claim is being written: its revision decides.
		select {
		case <-c.settled:
		case <-m.base.Done():
			return
		}
	}
	m.mu.Lock()
	release := true
	if c := m.claims[r.Key]; c != nil {
		if c.rev < r.Rev {
			delete(m.claims, r.Key)
		} else {
			release = false // this node's claim is the later one
		}
	}
	fn := m.takeover
	m.mu.Unlock()
	if release && fn != nil {
		fn(r.Key)
	}
	_ = msg.Respond(nil)
}

// Release gives up this node's claim on key (its session ended), unless a
// later claim replaced it.
func (m *MQTT) Release(key string, token uint64) {
	if token == 0 {
		return
	}
	m.mu.Lock()
	if c := m.claims[key]; c != nil && c.rev == token {
		delete(m.claims, key)
	}
	m.mu.Unlock()
	ctx, cancel := m.opCtx()
	defer cancel()
	err := m.owners.Delete(ctx, tok(key), jetstream.LastRevision(token))
	if err != nil && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) && m.base.Err() == nil {
		m.log.Debug("mqtt session owner not cleared", "err", err)
	}
}

// Held reports whether this node holds session key in the cluster (a
// restarted node finds the sessions it held), and if so holds it again
// and returns the claim's token.
func (m *MQTT) Held(key string) (token uint64, ok bool) {
	ctx, cancel := m.opCtx()
	defer cancel()
	v, rev, err := m.leaderGet(ctx, OwnersBucket, tok(key))
	if err != nil {
		return 0, false
	}
	var o ownerRec
	if json.Unmarshal(v, &o) != nil || o.Node != m.node {
		return 0, false
	}
	m.mu.Lock()
	if c := m.claims[key]; c == nil || c.rev != 0 && c.rev < rev {
		m.claims[key] = settledClaim(rev)
	}
	m.mu.Unlock()
	return rev, true
}
