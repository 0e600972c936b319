package cluster

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/router"
	"github.com/bourse-mq/bourse/router/queue"
	"github.com/bourse-mq/bourse/storage/record"
)

// OffsetsBucket is the JetStream KV bucket of named stream readers'
// offsets (x-stream-consumer-name): key <vhost>.<stream>.<reader> (each a
// token), value the next offset to read, in decimal.
const OffsetsBucket = "bourse_stream_offsets"

// StreamSubject is the subject of a stream's JetStream stream.
func StreamSubject(vhost, name string) string { return "bourse.s." + tok(vhost) + "." + tok(name) }

// StreamName is the name of a stream's JetStream stream: QueueStream's, with
// the prefix bourse_s_ (a queue and a stream never share a name).
func StreamName(vhost, name string) string {
	return "bourse_s_" + strings.TrimPrefix(QueueStream(vhost, name), "bourse_q_")
}

// isStream reports whether a queue declaration is a stream, and returns
// its arguments.
func isStream(q core.QueueInfo) (queue.Args, bool) {
	a, err := queue.ParseArgs(q.Args)
	return a, err == nil && a.Type == "stream" && q.Durable && !q.Exclusive
}

// StreamIdle is how long a node keeps copying a stream after its last
// reader there is gone (Options.StreamIdle).
const StreamIdle = 5 * time.Minute

// offsetFlushWait bounds how long a node's named offsets may wait to be
// written to the bucket; acks commit offsets far more often than that.
const offsetFlushWait = 100 * time.Millisecond

// Streams keeps Bourse's streams in JetStream (router.SharedStreams): each
// stream is a limits-retention JetStream stream, a record's offset is its
// JetStream sequence minus one, and each node with readers copies it into
// its local segment log, from where readers and the fetch endpoint read.
type Streams struct {
	js       jetstream.JetStream
	kvMu     sync.Mutex
	offsets  jetstream.KeyValue // opened by kv
	log      *slog.Logger
	replicas int
	timeout  time.Duration
	idle     time.Duration // a copy with no reader stops after idle

	base   context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	open   map[*streamLog]struct{}
	closed bool
	// maxPayload is the NATS server's payload limit.
	maxPayload int
}

var _ router.SharedStreams = (*Streams)(nil)

func newStreams(nc *nats.Conn, replicas int, timeout, idle time.Duration, log *slog.Logger) (*Streams, error) {
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(timeout), jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		return nil, err
	}
	base, cancel := context.WithCancel(context.Background())
	return &Streams{js: js, log: log, replicas: replicas, timeout: timeout, idle: idle, base: base, cancel: cancel,
		open: map[*streamLog]struct{}{}, maxPayload: int(nc.MaxPayload())}, nil
}

// kv binds the offsets bucket, creating it (with one replica when
// JetStream is not clustered) if it does not exist; it is opened on first
// use, not at start, so that a cluster without named readers never needs
// it. Each attempt has its own deadline (JetStream may be electing a
// leader, and then requests go unanswered rather than fail).
func (s *Streams) kv(ctx context.Context) (jetstream.KeyValue, error) {
	s.kvMu.Lock()
	defer s.kvMu.Unlock()
	if s.offsets != nil {
		return s.offsets, nil
	}
	cfg := jetstream.KeyValueConfig{
		Bucket:      OffsetsBucket,
		Description: "Bourse named stream readers' offsets",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    s.replicas,
	}
	for pause := 50 * time.Millisecond; ; pause = min(2*pause, time.Second) {
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		kv, err := s.js.KeyValue(actx, cfg.Bucket)
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			kv, err = s.js.CreateKeyValue(actx, cfg)
			var apiErr *jetstream.APIError
			if errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeReplicasNotSupported && cfg.Replicas > 1 {
				cfg.Replicas = 1
				kv, err = s.js.CreateKeyValue(actx, cfg)
			}
		}
		cancel()
		if err == nil {
			s.offsets = kv
			return kv, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("open bucket %s: %w (last error: %w)", OffsetsBucket, ctx.Err(), err)
		case <-time.After(pause):
		}
	}
}

// streamConfig is the JetStream configuration of a stream: retention by
// x-max-length-bytes and x-max-age, deduplication by message id within
// x-stream-dedup-window (at most x-max-age, as JetStream requires).
func streamConfig(vhost, name string, a queue.Args, replicas int) jetstream.StreamConfig {
	cfg := jetstream.StreamConfig{
		Name:        StreamName(vhost, name),
		Description: fmt.Sprintf("Bourse stream '%s' in vhost '%s'", name, vhost),
		Subjects:    []string{StreamSubject(vhost, name)},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
		MaxBytes:    -1,
		MaxAge:      a.MaxAge,
		Duplicates:  queue.DefaultDedupWindow,
	}
	if a.MaxLengthBytes > 0 {
		cfg.MaxBytes = a.MaxLengthBytes
	}
	if a.HasDedupWindow && a.DedupWindow > 0 {
		cfg.Duplicates = a.DedupWindow
	}
	if cfg.MaxAge > 0 && cfg.Duplicates > cfg.MaxAge {
		cfg.Duplicates = cfg.MaxAge
	}
	return cfg
}

// dedups reports whether a stream deduplicates by message id.
func dedups(a queue.Args) bool { return !a.HasDedupWindow || a.DedupWindow > 0 }

// ensure creates a stream's JetStream stream if it does not exist.
func (s *Streams) ensure(ctx context.Context, vhost, name string, a queue.Args) error {
	cfg := streamConfig(vhost, name, a, s.replicas)
	_, err := s.js.CreateStream(ctx, cfg)
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeReplicasNotSupported && cfg.Replicas > 1 {
		cfg.Replicas = 1
		_, err = s.js.CreateStream(ctx, cfg)
	}
	if err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return fmt.Errorf("create JetStream stream %s of stream '%s' in vhost '%s': %w", cfg.Name, name, vhost, err)
	}
	return nil
}

// drop deletes a stream's JetStream stream and its named offsets.
func (s *Streams) drop(ctx context.Context, vhost, name string) error {
	err := s.js.DeleteStream(ctx, StreamName(vhost, name))
	if err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("delete the JetStream stream of stream '%s' in vhost '%s': %w", name, vhost, err)
	}
	kv, err := s.kv(ctx)
	if err != nil {
		return err
	}
	lister, err := kv.ListKeysFiltered(ctx, offsetKey(vhost, name, "")+">")
	if err != nil {
		return fmt.Errorf("list the named offsets of stream '%s' in vhost '%s': %w", name, vhost, err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	for _, k := range keys {
		if err := kv.Purge(ctx, k); err != nil {
			return fmt.Errorf("delete named offset %s: %w", k, err)
		}
	}
	return nil
}

func offsetKey(vhost, stream, reader string) string {
	k := tok(vhost) + "." + tok(stream) + "."
	if reader != "" {
		k += tok(reader)
	}
	return k
}

// Open implements router.SharedStreams.
func (s *Streams) Open(vhost, name string, args queue.Args, local router.ReplicaLog) queue.Log {
	l := &streamLog{s: s, vhost: vhost, name: name, args: args, local: local,
		stream: StreamName(vhost, name), subject: StreamSubject(vhost, name),
		offsets: map[string]uint64{}, dirty: map[string]bool{}}
	l.ctx, l.cancel = context.WithCancel(s.base)
	s.mu.Lock()
	s.open[l] = struct{}{}
	s.mu.Unlock()
	if _, bytes := local.Size(); bytes > 0 {
		// A copy left from before this node started: idle until a
		// reader comes.
		l.mu.Lock()
		l.armIdle()
		l.mu.Unlock()
	}
	return l
}

// Closed implements router.SharedStreams.
func (s *Streams) Closed(log queue.Log) {
	l, ok := log.(*streamLog)
	if !ok {
		return
	}
	s.mu.Lock()
	delete(s.open, l)
	s.mu.Unlock()
	l.cancel()
	l.mu.Lock()
	if l.idle != nil {
		l.idle.Stop()
		l.idle = nil
	}
	l.mu.Unlock()
}

// Close stops copying every stream, writes the named offsets not written
// yet, and returns once every publish in flight has been answered.
func (s *Streams) Close() {
	s.mu.Lock()
	s.closed = true
	ls := make([]*streamLog, 0, len(s.open))
	for l := range s.open {
		ls = append(ls, l)
	}
	s.mu.Unlock()
	for _, l := range ls {
		l.flushOffsets()
	}
	s.cancel()
	s.wg.Wait()
}

// goTracked runs fn in a goroutine Close waits for; false when closing.
func (s *Streams) goTracked(fn func()) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		fn()
	}()
	return true
}

// streamLog is a stream's queue.Log on this node: appends go to JetStream;
// reads come from the local copy (local), which follow fills from an
// ordered consumer while readers hold it (Follow), and for Streams.idle
// after the last one let go; then the copy stops and its records are
// dropped, and the next reader starts a copy afresh.
type streamLog struct {
	s               *Streams
	vhost, name     string
	args            queue.Args
	local           router.ReplicaLog
	stream, subject string
	ctx             context.Context
	cancel          context.CancelFunc

	mu          sync.Mutex
	known       bool   // first and next were read from JetStream
	first, next uint64 // JetStream's bounds, as offsets
	readers     int    // holders of the copy (Follow not released yet)
	run         *copyRun
	idle        *time.Timer   // stops run once it fires with no reader
	idleGen     uint64        // counts the idle timers armed
	stopping    chan struct{} // closed once a stopping run is gone and its records dropped

	omu      sync.Mutex
	offsets  map[string]uint64 // named offsets this node knows
	dirty    map[string]bool   // not written to the bucket yet
	flushing bool
}

// copyRun is one copy of a stream into the local log, from its start by a
// reader to its stop when idle (or the log's close).
type copyRun struct {
	ctx    context.Context
	cancel context.CancelFunc
	ready  chan struct{} // closed once the copy is reconciled with JetStream
	done   chan struct{} // closed once follow has returned
}

var (
	_ queue.Log      = (*streamLog)(nil)
	_ queue.Follower = (*streamLog)(nil)
)

// Append implements queue.Log: the record goes to the JetStream stream
// (with a digest of the message id as Nats-Msg-Id, so that JetStream
// deduplicates it within the stream's window whatever the node), and done
// gets its offset once JetStream has stored it.
func (l *streamLog) Append(m *core.Message, done func(uint64, error)) {
	payload, err := record.AppendMessage(nil, m)
	if err != nil {
		done(0, core.Wrap(core.ResourceError, err, "encode message for the cluster"))
		return
	}
	if len(payload) > l.s.maxPayload {
		done(0, core.Errorf(core.ResourceError, "message of %d bytes (encoded) above the cluster's payload limit of %d", len(payload), l.s.maxPayload))
		return
	}
	// A digest of the message id, not the id: a NATS header cannot carry
	// every byte an AMQP short string can.
	var b [18]byte
	if id := m.Props.MessageID; id != "" && dedups(l.args) {
		h := sha256.Sum256([]byte(id))
		copy(b[:], h[:])
	} else {
		_, _ = rand.Read(b[:])
	}
	id := base64.RawURLEncoding.EncodeToString(b[:])
	msg := &nats.Msg{Subject: l.subject, Data: payload, Header: nats.Header{jetstream.MsgIDHeader: []string{id}}}
	// Sent now, on the publisher's path, so that one publisher's records
	// keep their order: with JetStream's window of unacknowledged
	// publishes full, this waits for room (up to the timeout) rather than
	// being retried later, behind the next ones (TestStreamBulkCopy found
	// a record stored one place late under load).
	fut, err := l.s.js.PublishMsgAsync(msg, jetstream.WithStallWait(l.s.timeout))
	if err != nil && errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
		done(0, core.Wrap(core.ResourceError, err, "the cluster is not taking records in time"))
		return
	}
	if !l.s.goTracked(func() {
		ack, err := l.awaitPublish(msg, fut, err)
		if err != nil {
			done(0, err)
			return
		}
		l.noteNext(ack.Sequence)
		done(ack.Sequence-1, nil)
	}) {
		done(0, core.Errorf(core.ResourceError, "cluster node closing"))
	}
}

// awaitPublish waits for a record's acknowledgement and retries (same
// message id, so JetStream deduplicates) until the timeout.
func (l *streamLog) awaitPublish(msg *nats.Msg, fut jetstream.PubAckFuture, err error) (*jetstream.PubAck, error) {
	ctx, cancel := context.WithTimeout(l.s.base, l.s.timeout)
	defer cancel()
	for pause := 20 * time.Millisecond; ; pause = min(2*pause, 500*time.Millisecond) {
		if err == nil {
			select {
			case ack := <-fut.Ok():
				return ack, nil
			case err = <-fut.Err():
			case <-ctx.Done():
				err = ctx.Err()
			}
		}
		if ctx.Err() == nil && (errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders)) {
			// Declared before this node kept streams in JetStream.
			if eerr := l.s.ensure(ctx, l.vhost, l.name, l.args); eerr != nil {
				l.s.log.Debug("ensure stream", "err", eerr)
			}
		}
		select {
		case <-ctx.Done():
			return nil, core.Wrap(core.ResourceError, err, "append to stream '%s' in the cluster", l.name)
		case <-time.After(pause):
		}
		l.s.log.Debug("append to a cluster stream failed; retrying", "vhost", l.vhost, "stream", l.name, "err", err)
		fut, err = l.s.js.PublishMsgAsync(msg)
	}
}

// noteNext records that JetStream holds sequence seq (offset seq-1).
func (l *streamLog) noteNext(seq uint64) {
	l.mu.Lock()
	if l.known && seq > l.next {
		l.next = seq
	}
	l.mu.Unlock()
}

// Bounds implements queue.Log: JetStream's bounds once they are known,
// else the local copy's.
func (l *streamLog) Bounds() (first, next uint64) {
	first, next = l.local.Bounds()
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.known {
		return first, next
	}
	first, next = max(first, l.first), max(next, l.next)
	return min(first, next), next
}

// OffsetAt implements queue.Log, on the local copy. The copy is a prefix of
// the stream, so its answer is exact once it holds a record at or after t,
// or all of the stream; until then (at most the timeout) it waits for the
// copy, then answers the copy's tail, which is no later than the exact
// offset (a reader from there gets a few records too many, never too few).
func (l *streamLog) OffsetAt(t time.Time) uint64 {
	deadline := time.NewTimer(l.s.timeout)
	defer deadline.Stop()
	for {
		changed := l.local.Changed()
		off := l.local.OffsetAt(t)
		_, have := l.local.Bounds()
		l.mu.Lock()
		caughtUp := l.run == nil || have >= l.next
		l.mu.Unlock()
		if off < have || caughtUp {
			return off
		}
		select {
		case <-changed:
		case <-deadline.C:
			return off
		case <-l.ctx.Done():
			return off
		}
	}
}

// Read implements queue.Log, on the local copy.
func (l *streamLog) Read(offset uint64, maxBytes int, fn func(uint64, time.Time, *core.Message)) (uint64, error) {
	return l.local.Read(offset, maxBytes, fn)
}

// Changed implements queue.Log: the local copy grows.
func (l *streamLog) Changed() <-chan struct{} { return l.local.Changed() }

// Size implements queue.Log: the local copy's segments.
func (l *streamLog) Size() (int, int64) { return l.local.Size() }

// Follow implements queue.Follower: the caller holds the copy (it is not
// stopped) until it calls release. A copy being stopped is waited for, and
// a new one started.
func (l *streamLog) Follow(ctx context.Context, all bool) (func(), error) {
	ctx, cancel := context.WithTimeout(ctx, l.s.timeout)
	defer cancel()
	l.mu.Lock()
	l.readers++
	release := sync.OnceFunc(l.unfollow)
	if l.idle != nil {
		l.idle.Stop()
		l.idle = nil
	}
	for l.stopping != nil {
		stopping := l.stopping
		l.mu.Unlock()
		l.s.log.Debug("reader waits for the idle copy's stop", "vhost", l.vhost, "stream", l.name)
		select {
		case <-stopping:
		case <-ctx.Done():
			release()
			return nil, ctx.Err()
		}
		l.mu.Lock()
	}
	if l.run == nil && l.ctx.Err() == nil {
		run := &copyRun{ready: make(chan struct{}), done: make(chan struct{})}
		run.ctx, run.cancel = context.WithCancel(l.ctx)
		if l.s.goTracked(func() {
			defer close(run.done)
			l.follow(run)
		}) {
			l.run = run
		} else {
			run.cancel()
		}
	}
	run := l.run
	l.mu.Unlock()
	if run == nil {
		release()
		return nil, errors.New("cluster node closing")
	}
	select {
	case <-run.ready:
	case <-ctx.Done():
		release()
		return nil, ctx.Err()
	}
	_, next, err := l.refresh(ctx)
	if err != nil {
		release()
		return nil, err
	}
	for all {
		changed := l.local.Changed()
		if _, have := l.local.Bounds(); have >= next {
			break
		}
		select {
		case <-changed:
		case <-ctx.Done():
			release()
			return nil, ctx.Err()
		}
	}
	return release, nil
}

// unfollow lets go of the copy; the last reader's arms the idle timer.
func (l *streamLog) unfollow() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.readers--
	if l.readers > 0 || l.run == nil || l.stopping != nil || l.idle != nil || l.ctx.Err() != nil {
		return
	}
	l.armIdle()
}

// armIdle (l.mu held) starts the idle timer.
func (l *streamLog) armIdle() {
	l.idleGen++
	gen := l.idleGen
	l.idle = time.AfterFunc(l.s.idle, func() { l.idleStop(gen) })
}

// idleStop stops the copy (if one runs) if the idle timer armed as gen is
// still armed (no reader came since), and drops the copy's records.
func (l *streamLog) idleStop(gen uint64) {
	l.mu.Lock()
	if l.idle == nil || l.idleGen != gen || l.readers > 0 || l.ctx.Err() != nil {
		l.mu.Unlock()
		return
	}
	l.idle = nil
	run := l.run
	stopping := make(chan struct{})
	l.stopping = stopping
	l.mu.Unlock()
	finish := func() {
		l.mu.Lock()
		l.run, l.stopping = nil, nil
		l.mu.Unlock()
		close(stopping)
	}
	if !l.s.goTracked(func() {
		defer finish()
		if run != nil {
			run.cancel()
			<-run.done
		}
		// Every append of the run is queued before the reset, and no
		// reader holds the copy: the records go, with their segments.
		_, next := l.local.Bounds()
		if err := l.local.Reset(next); err != nil {
			l.s.log.Warn("idle copy of a cluster stream not dropped", "vhost", l.vhost, "stream", l.name, "err", err)
			return
		}
		l.s.log.Debug("copy of a cluster stream stopped: no reader", "vhost", l.vhost, "stream", l.name, "idle", l.s.idle)
	}) {
		finish() // the node is closing; its close stops the copy
	}
}

// refresh reads JetStream's bounds of the stream (creating the stream if
// it is missing), and lets the local copy's retention follow them.
func (l *streamLog) refresh(ctx context.Context) (first, next uint64, err error) {
	st, err := l.s.js.Stream(ctx, l.stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if err = l.s.ensure(ctx, l.vhost, l.name, l.args); err == nil {
			st, err = l.s.js.Stream(ctx, l.stream)
		}
	}
	if err != nil {
		return 0, 0, fmt.Errorf("JetStream stream %s: %w", l.stream, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("JetStream stream %s: %w", l.stream, err)
	}
	// Offsets are sequences minus one; an empty stream has FirstSeq
	// LastSeq+1 (or both 0).
	next = info.State.LastSeq
	first = min(max(info.State.FirstSeq, 1)-1, next)
	l.mu.Lock()
	if !l.known || first > l.first {
		l.first = first
	}
	if !l.known || next > l.next {
		l.next = next
	}
	l.known = true
	l.mu.Unlock()
	l.local.TrimBefore(first)
	return first, next, nil
}

// follow copies the stream into the local copy until the run stops (the
// log is closed, or the copy idle), starting over after an error.
func (l *streamLog) follow(run *copyRun) {
	backoff := 100 * time.Millisecond
	for run.ctx.Err() == nil {
		err := l.copy(run)
		if run.ctx.Err() != nil {
			return
		}
		l.s.log.Warn("copying a cluster stream stopped; starting over", "vhost", l.vhost, "stream", l.name, "err", err)
		select {
		case <-time.After(backoff):
		case <-run.ctx.Done():
			return
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// copyWindow bounds the records on their way to the local copy.
const copyWindow = 1024

// copyPullExpiry and copyHeartbeat are the copy's pull requests' expiry
// and heartbeat.
const (
	copyPullExpiry = 10 * time.Second
	copyHeartbeat  = time.Second
)

// refreshEvery is how often a node that copies a stream reads its bounds
// (for retention to follow JetStream's).
const refreshEvery = time.Second

// copy reconciles the local copy with JetStream (a copy that does not fit,
// from another life of the stream or from before retention passed it,
// starts over at JetStream's first offset), then appends what an ordered
// consumer delivers, each record at its sequence minus one.
func (l *streamLog) copy(run *copyRun) error {
	ctx, cancel := context.WithTimeout(run.ctx, l.s.timeout)
	first, next, err := l.refresh(ctx)
	cancel()
	if err != nil {
		return err
	}
	lf, ln := l.local.Bounds()
	if ln > next || ln < first || (lf == ln && ln != first) || !l.sameLife(run.ctx, ln) {
		if err := l.local.Reset(first); err != nil {
			return fmt.Errorf("reset the local copy: %w", err)
		}
		ln = first
	}
	l.mu.Lock()
	select {
	case <-run.ready:
	default:
		close(run.ready)
	}
	l.mu.Unlock()
	cons, err := l.s.js.OrderedConsumer(run.ctx, l.stream, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: ln + 1,
	})
	if err != nil {
		return fmt.Errorf("ordered consumer: %w", err)
	}
	// A pull request that reaches the servers before the new consumer
	// does is lost, and the ordered consumer waits for two missed
	// heartbeats before it starts over: a short heartbeat makes that
	// about 2 s instead of 30 (the default expiry's half, twice).
	it, err := cons.Messages(jetstream.PullExpiry(copyPullExpiry), jetstream.PullHeartbeat(copyHeartbeat))
	if err != nil {
		return fmt.Errorf("ordered consumer: %w", err)
	}
	stop, stopped := make(chan struct{}), make(chan struct{})
	defer func() {
		close(stop)
		<-stopped
	}()
	go func() {
		defer close(stopped)
		t := time.NewTicker(refreshEvery)
		defer t.Stop()
		for {
			select {
			case <-run.ctx.Done():
				it.Stop()
				return
			case <-stop:
				it.Stop()
				return
			case <-t.C:
				ctx, cancel := context.WithTimeout(run.ctx, l.s.timeout)
				if _, _, err := l.refresh(ctx); err != nil {
					l.s.log.Debug("cluster stream bounds", "vhost", l.vhost, "stream", l.name, "err", err)
				}
				cancel()
			}
		}
	}()
	window := make(chan struct{}, copyWindow)
	failed := make(chan error, 1)
	want := ln
	for {
		m, err := it.Next()
		if err != nil {
			return err
		}
		md, err := m.Metadata()
		if err != nil {
			return err
		}
		off := md.Sequence.Stream - 1
		switch {
		case off < want:
			continue
		case off > want:
			// JetStream's retention passed this copy: it starts over.
			if err := l.local.Reset(off); err != nil {
				return fmt.Errorf("reset the local copy: %w", err)
			}
			want = off
		}
		select {
		case window <- struct{}{}:
		case err := <-failed:
			return err
		case <-run.ctx.Done():
			return run.ctx.Err()
		}
		l.local.AppendAt(off, md.Timestamp, m.Data(), func(err error) {
			<-window
			if err != nil {
				select {
				case failed <- err:
				default:
				}
			}
		})
		want++
		l.noteNext(off + 1)
		select {
		case err := <-failed:
			return err
		default:
		}
	}
}

// sameLife reports whether the local copy's last record (before offset
// next) is the one JetStream holds there, so that a copy left from a
// deleted stream of the same name is not taken for this one's.
func (l *streamLog) sameLife(ctx context.Context, next uint64) bool {
	lf, _ := l.local.Bounds()
	if next == 0 || next <= lf {
		return true
	}
	var ts time.Time
	var body []byte
	if _, err := l.local.Read(next-1, 1, func(_ uint64, t time.Time, m *core.Message) { ts, body = t, m.Body }); err != nil || body == nil {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, l.s.timeout)
	defer cancel()
	st, err := l.s.js.Stream(ctx, l.stream)
	if err != nil {
		return false
	}
	raw, err := st.GetMsg(ctx, next)
	if err != nil {
		return false
	}
	m, err := record.DecodeMessage(raw.Data)
	return err == nil && raw.Time.UnixMilli() == ts.UnixMilli() && string(m.Body) == string(body)
}

// StoreOffset implements queue.Log: the offset is written to the bucket
// shortly (within offsetFlushWait), from another goroutine (the caller
// holds the queue's lock).
func (l *streamLog) StoreOffset(name string, next uint64) {
	l.omu.Lock()
	defer l.omu.Unlock()
	if v, ok := l.offsets[name]; ok && v == next && !l.dirty[name] {
		return
	}
	l.offsets[name] = next
	l.dirty[name] = true
	if !l.flushing && l.s.goTracked(func() {
		select {
		case <-time.After(offsetFlushWait):
		case <-l.s.base.Done():
		}
		l.flushOffsets()
	}) {
		l.flushing = true
	}
}

// flushOffsets writes the named offsets not written yet.
func (l *streamLog) flushOffsets() {
	l.omu.Lock()
	l.flushing = false
	batch := make(map[string]uint64, len(l.dirty))
	for name := range l.dirty {
		batch[name] = l.offsets[name]
	}
	clear(l.dirty)
	l.omu.Unlock()
	if len(batch) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), l.s.timeout)
	defer cancel()
	kv, err := l.s.kv(ctx)
	for name, v := range batch {
		if err == nil {
			_, err = kv.Put(ctx, offsetKey(l.vhost, l.name, name), []byte(strconv.FormatUint(v, 10)))
		}
		if err != nil {
			// Kept dirty: the next store, or the node's close, tries again.
			l.s.log.Warn("named stream offset not written to the cluster", "vhost", l.vhost, "stream", l.name, "reader", name, "offset", v, "err", err)
			l.omu.Lock()
			if l.offsets[name] == v {
				l.dirty[name] = true
			}
			l.omu.Unlock()
		}
	}
}

// QueryOffset implements queue.Log: the offset in the bucket (this node's
// own when it has not written it yet).
func (l *streamLog) QueryOffset(name string) (uint64, bool) {
	l.omu.Lock()
	if l.dirty[name] {
		v := l.offsets[name]
		l.omu.Unlock()
		return v, true
	}
	l.omu.Unlock()
	ctx, cancel := context.WithTimeout(l.ctx, l.s.timeout)
	defer cancel()
	kv, err := l.s.kv(ctx)
	var e jetstream.KeyValueEntry
	if err == nil {
		e, err = kv.Get(ctx, offsetKey(l.vhost, l.name, name))
	}
	if err == nil {
		v, perr := strconv.ParseUint(string(e.Value()), 10, 64)
		if perr == nil {
			l.omu.Lock()
			if !l.dirty[name] {
				l.offsets[name] = v
			}
			l.omu.Unlock()
			return v, true
		}
		err = perr
	}
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, false
	}
	l.s.log.Warn("named stream offset not read from the cluster; using this node's", "vhost", l.vhost, "stream", l.name, "reader", name, "err", err)
	l.omu.Lock()
	defer l.omu.Unlock()
	v, ok := l.offsets[name]
	return v, ok
}

// NamedOffsets implements queue.Log: the named offsets this node has read
// or written.
func (l *streamLog) NamedOffsets() map[string]uint64 {
	l.omu.Lock()
	defer l.omu.Unlock()
	out := make(map[string]uint64, len(l.offsets))
	for k, v := range l.offsets {
		out[k] = v
	}
	return out
}
