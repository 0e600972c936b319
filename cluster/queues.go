package cluster

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/router"
	"github.com/bourse-mq/bourse/router/queue"
	"github.com/bourse-mq/bourse/storage/record"
)

// AckWait is the default of Options.AckWait: how long JetStream waits for
// the acknowledgement of a message it handed to a node before it hands it
// out again. Bourse tracks unacked messages itself (prefetch, redelivery on
// reject, on a consumer or connection gone, on a graceful shutdown), so
// this only matters when a node dies (or is cut off) with messages in
// hand: they come back AckWait after its last heartbeat. A live node beats
// for every message it holds every quarter of AckWait (settle.go), so a
// consumer may still hold a message for as long as it likes.
const AckWait = 20 * time.Second

// queueConsumer is the name of the one durable pull consumer of each
// queue's stream, shared by every node: JetStream spreads the messages
// over the nodes' pull requests (competing consumers across nodes).
const queueConsumer = "bourse"

// fetchWait bounds one pull request: a node whose consumers gain credit
// while a pull is pending asks for more after at most this long.
const fetchWait = time.Second

// QueueSubject is the subject of a shared queue's stream.
func QueueSubject(vhost, name string) string { return "bourse.q." + tok(vhost) + "." + tok(name) }

// QueueStream is the name of a shared queue's stream: a readable part of
// the queue's name and a digest of the vhost and the name (stream names
// allow neither dots nor every byte, and are bounded in length).
func QueueStream(vhost, name string) string {
	h := sha256.Sum256([]byte(vhost + "\x00" + name))
	var b strings.Builder
	for _, c := range []byte(name) {
		if b.Len() >= 48 {
			break
		}
		if c == '-' || c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' {
			b.WriteByte(c)
		}
	}
	return "bourse_q_" + b.String() + "_" + hex.EncodeToString(h[:10])
}

// sharedQueue reports whether a queue declaration is a shared queue whose
// messages live in a JetStream stream: what the router shares (durable,
// not exclusive), streams excepted.
func sharedQueue(q core.QueueInfo) bool {
	if !q.Durable || q.Exclusive {
		return false
	}
	a, err := queue.ParseArgs(q.Args)
	return err == nil && a.Type != "stream"
}

// Queues keeps the messages of shared durable queues in JetStream: one
// work-queue stream per queue (router.SharedQueues).
type Queues struct {
	nc       *nats.Conn
	js       jetstream.JetStream
	settle   *settler
	log      *slog.Logger
	replicas int
	timeout  time.Duration
	ackWait  time.Duration
	// beatWait is the ack wait the heartbeats keep up with: the shortest
	// of ackWait and those of the consumers this node has bound. A queue's
	// consumer keeps the ack wait it was created with (by the node that
	// first declared the queue, maybe with another cluster.ack_wait, or
	// before it was changed).
	beatWait atomic.Int64

	base   context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu         sync.Mutex
	open       map[*remoteQueue]struct{}
	byName     map[queueRef]*remoteQueue  // the open queues by name (argsOf)
	sessions   map[*sessionQueue]struct{} // session queues (sessions.go)
	sessStream jetstream.Stream           // SessionStream, once looked up
	// upgrading: queues whose stream is being updated (upgrade).
	upgrading map[queueRef]bool
	closed    bool
	// maxPayload is the NATS server's payload limit.
	maxPayload int
	// plainAcks sends acks without waiting for an answer (tests measure
	// what confirming them costs).
	plainAcks bool
	leases    leases      // single-active-consumer leases (sac.go)
	reaping   atomic.Bool // this node holds the reaper's lease (reap.go)
}

var _ router.SharedQueues = (*Queues)(nil)

func newQueues(nc *nats.Conn, replicas int, timeout, ackWait time.Duration, log *slog.Logger) (*Queues, error) {
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(timeout), jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		return nil, err
	}
	s := &Queues{nc: nc, js: js, log: log, replicas: replicas, timeout: timeout, ackWait: ackWait,
		open: map[*remoteQueue]struct{}{}, byName: map[queueRef]*remoteQueue{}, upgrading: map[queueRef]bool{},
		sessions: map[*sessionQueue]struct{}{}, maxPayload: int(nc.MaxPayload())}
	s.beatWait.Store(int64(ackWait))
	s.settle, err = newSettler(nc, timeout, func(subject, err string) {
		log.Warn("ack to JetStream not confirmed; the message will be redelivered after AckWait", "ack", subject, "err", err)
	})
	if err != nil {
		return nil, err
	}
	s.base, s.cancel = context.WithCancel(context.Background())
	s.wg.Add(2)
	go s.maintain(s.base)
	go s.reap(s.base)
	return s, nil
}

// ensure creates the queue's stream and its consumer if they do not exist
// (a session queue's: SessionStream).
func (s *Queues) ensure(ctx context.Context, vhost, name string, args *queue.Args) error {
	if isSessionQueue(name) {
		return s.ensureSessions(ctx, args)
	}
	stream := QueueStream(vhost, name)
	if args == nil {
		args = s.argsOf(vhost, name)
	}
	var cfg jetstream.StreamConfig
	if args != nil {
		cfg = s.streamConfig(vhost, name, *args)
	} else {
		// Unknown arguments (a queue this node does not have yet): the
		// declaring node's ensure or a node's refresh sets its limits.
		cfg = s.streamConfig(vhost, name, queue.Args{MaxLength: -1, MaxLengthBytes: -1})
		cfg.AllowMsgTTL = false
	}
	err := retryTransient(ctx, func(ctx context.Context) error {
		_, err := s.js.CreateStream(ctx, cfg)
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeReplicasNotSupported && cfg.Replicas > 1 {
			cfg.Replicas = 1
			_, err = s.js.CreateStream(ctx, cfg)
		}
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) && args != nil {
			return s.update(ctx, cfg)
		}
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return nil
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("create stream %s of queue '%s' in vhost '%s': %w", stream, name, vhost, err)
	}
	err = retryTransient(ctx, func(ctx context.Context) error {
		_, err := s.js.CreateOrUpdateConsumer(ctx, stream, s.consumerConfig())
		return err
	})
	if err != nil {
		return fmt.Errorf("create the consumer of stream %s: %w", stream, err)
	}
	return nil
}

// streamConfig is the configuration of a shared queue's stream.
func (s *Queues) streamConfig(vhost, name string, args queue.Args) jetstream.StreamConfig {
	cfg := jetstream.StreamConfig{
		Name:        QueueStream(vhost, name),
		Description: fmt.Sprintf("Bourse queue '%s' in vhost '%s'", name, vhost),
		Subjects:    []string{QueueSubject(vhost, name)},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    s.replicas,
		Duplicates:  dedupWindow,
	}
	queueLimits(&cfg, args)
	queueTTL(&cfg, args)
	return cfg
}

// update gives an existing stream created before this version the limits
// and expiry of cfg, keeping the rest of its configuration (its replicas:
// ensure may have made it R1). Such a stream is known by its per-message
// TTLs being off; any other is left alone: it was made with its queue's
// arguments (a declare racing another of different arguments must not
// change the winner's stream).
func (s *Queues) update(ctx context.Context, cfg jetstream.StreamConfig) error {
	st, err := s.js.Stream(ctx, cfg.Name)
	if err != nil {
		return err
	}
	old := st.CachedInfo().Config
	if old.AllowMsgTTL {
		return nil
	}
	want := old
	want.MaxMsgs, want.MaxBytes, want.Discard = unlimited(cfg.MaxMsgs), unlimited(cfg.MaxBytes), cfg.Discard
	want.MaxAge, want.Duplicates = cfg.MaxAge, cfg.Duplicates
	want.AllowMsgTTL = old.AllowMsgTTL || cfg.AllowMsgTTL // JetStream cannot turn it off
	if want.MaxMsgs == old.MaxMsgs && want.MaxBytes == old.MaxBytes && want.Discard == old.Discard &&
		want.MaxAge == old.MaxAge && want.Duplicates == old.Duplicates && want.AllowMsgTTL == old.AllowMsgTTL {
		return nil
	}
	_, err = s.js.UpdateStream(ctx, want)
	if err == nil {
		s.log.Info("shared queue's stream updated to the queue's limits and expiry", "stream", cfg.Name,
			"max_msgs", want.MaxMsgs, "max_bytes", want.MaxBytes, "max_age", want.MaxAge)
	}
	return err
}

// unlimited is JetStream's spelling of a limit left at zero (none).
func unlimited(n int64) int64 {
	if n == 0 {
		return -1
	}
	return n
}

// consumerConfig is the configuration of each shared queue's consumer.
func (s *Queues) consumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       queueConsumer,
		Description:   "Bourse nodes' consumers of the queue",
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       s.ackWait,
		MaxDeliver:    -1,
		MaxAckPending: -1, // Bourse enforces each consumer's prefetch
		MaxWaiting:    512,
	}
}

// drop deletes the queue's stream (its messages with it).
func (s *Queues) drop(ctx context.Context, vhost, name string) error {
	if isSessionQueue(name) {
		return s.dropSession(ctx, vhost, name)
	}
	err := retryTransient(ctx, func(ctx context.Context) error { return s.js.DeleteStream(ctx, QueueStream(vhost, name)) })
	if err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("delete the stream of queue '%s' in vhost '%s': %w", name, vhost, err)
	}
	return nil
}

// Publish implements router.SharedQueues: m goes to each queue's stream
// with one Nats-Msg-Id, so that a retry after a lost acknowledgement (a
// leader change) is deduplicated; done is called once every stream has
// acknowledged it (JetStream acknowledges only what its replicas have
// stored), or with the first error once retries ran out.
func (s *Queues) Publish(vhost string, m *core.Message, queues []string, done func(error)) {
	payload, err := record.AppendMessage(nil, m)
	if err != nil {
		done(core.Wrap(core.ResourceError, err, "encode message for the cluster"))
		return
	}
	if len(payload) > s.maxPayload {
		// The adapters refuse bodies above Node.MaxMessageBytes first; this
		// catches huge header tables.
		done(core.Errorf(core.ResourceError, "message of %d bytes (encoded) above the cluster's payload limit of %d", len(payload), s.maxPayload))
		return
	}
	var idb [16]byte
	_, _ = rand.Read(idb[:])
	id := base64.RawURLEncoding.EncodeToString(idb[:])
	msgs := make([]*nats.Msg, len(queues))
	futures := make([]jetstream.PubAckFuture, len(queues))
	errs := make([]error, len(queues))
	for i, q := range queues {
		if isSessionQueue(q) {
			// One stream for every session queue: one id per queue in it.
			// (Its messages' own expiration is the router's, on delivery.)
			msgs[i] = &nats.Msg{Subject: SessionSubject(vhost, q), Data: payload,
				Header: nats.Header{jetstream.MsgIDHeader: []string{id + "." + strconv.Itoa(i)}}}
		} else {
			msgs[i] = &nats.Msg{Subject: QueueSubject(vhost, q), Data: payload, Header: nats.Header{jetstream.MsgIDHeader: []string{id}}}
			if m.Props.Expiration != "" {
				if a := s.argsOf(vhost, q); a != nil {
					if ttl := msgTTL(m, *a); ttl != "" {
						msgs[i].Header[jetstream.MsgTTLHeader] = []string{ttl}
					}
				}
			}
		}
		// Sent now, on the publisher's path, so that one publisher's
		// messages reach each stream in order: with JetStream's window of
		// unacknowledged publishes full, this waits for room (up to the
		// timeout) rather than being retried later, behind the next ones.
		futures[i], errs[i] = s.js.PublishMsgAsync(msgs[i], jetstream.WithStallWait(s.timeout))
		if errs[i] != nil && errors.Is(errs[i], jetstream.ErrTooManyStalledMsgs) {
			done(core.Wrap(core.ResourceError, errs[i], "the cluster is not taking messages in time"))
			return
		}
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		done(core.Errorf(core.ResourceError, "cluster node closing"))
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		done(s.awaitPublish(vhost, queues, msgs, futures, errs))
	}()
}

// awaitPublish waits for the acknowledgements of one publish, and retries
// (same message id) those that failed until the timeout.
func (s *Queues) awaitPublish(vhost string, queues []string, msgs []*nats.Msg, futures []jetstream.PubAckFuture, errs []error) error {
	ctx, cancel := context.WithTimeout(s.base, s.timeout)
	defer cancel()
	for i := range msgs {
		for pause := 20 * time.Millisecond; ; pause = min(2*pause, 500*time.Millisecond) {
			err := errs[i]
			if err == nil {
				select {
				case <-futures[i].Ok():
				case err = <-futures[i].Err():
				case <-ctx.Done():
					err = ctx.Err()
				}
			}
			if err == nil {
				break
			}
			if ttlDisabled(err) && msgs[i].Header.Get(jetstream.MsgTTLHeader) != "" {
				// A stream from before this version: JetStream will not
				// expire this message, the router still does on the
				// node that pulls it. The queue's next declare (or this
				// ensure) lets the stream take per-message TTLs.
				msgs[i].Header.Del(jetstream.MsgTTLHeader)
				s.upgrade(ctx, vhost, queues[i])
				futures[i], errs[i] = s.js.PublishMsgAsync(msgs[i])
				continue
			}
			if atLimit(err) {
				// x-overflow reject-publish, enforced by JetStream.
				return core.Wrap(core.ResourceError, err, "queue '%s' in vhost '%s' is at its length limit", queues[i], vhost)
			}
			if ctx.Err() != nil {
				return core.Wrap(core.ResourceError, err, "store message in queue '%s' in the cluster", queues[i])
			}
			s.log.Debug("publish to a shared queue failed; retrying", "vhost", vhost, "queue", queues[i], "err", err)
			if errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) {
				// The stream may be missing (declared before this node
				// kept messages in JetStream, or lost a race with a
				// delete and redeclare): make sure it exists.
				if eerr := s.ensure(ctx, vhost, queues[i], nil); eerr != nil {
					s.log.Debug("ensure stream", "err", eerr)
				}
			}
			select {
			case <-ctx.Done():
				return core.Wrap(core.ResourceError, err, "store message in queue '%s' in the cluster", queues[i])
			case <-time.After(pause):
			}
			futures[i], errs[i] = s.js.PublishMsgAsync(msgs[i])
		}
	}
	return nil
}

// upgrade lets an existing queue stream take per-message TTLs (ensure),
// once at a time per queue however many publishes find it cannot.
func (s *Queues) upgrade(ctx context.Context, vhost, name string) {
	k := queueRef{vhost, name}
	s.mu.Lock()
	if s.upgrading[k] {
		s.mu.Unlock()
		return
	}
	s.upgrading[k] = true
	s.mu.Unlock()
	if err := s.ensure(ctx, vhost, name, nil); err != nil {
		s.log.Warn("shared queue's stream not updated for per-message TTLs", "vhost", vhost, "queue", name, "err", err)
	}
	s.mu.Lock()
	delete(s.upgrading, k)
	s.mu.Unlock()
}

// Open implements router.SharedQueues.
func (s *Queues) Open(q *queue.Queue) queue.Remote {
	if isSessionQueue(q.Config().Name) {
		return s.openSession(q)
	}
	c := q.Config()
	r := &remoteQueue{s: s, q: q, vhost: c.VHost, name: c.Name, feeder: newFeeder(),
		held: map[jetstream.Msg]uint64{}, reapable: c.Args.HasDLX && c.Args.HasMessageTTL}
	r.ctx, r.cancel = context.WithCancel(s.base)
	s.mu.Lock()
	s.open[r] = struct{}{}
	s.byName[queueRef{r.vhost, r.name}] = r
	refresh := !s.closed && jetStreamLimited(c.Args)
	if refresh {
		s.wg.Add(1)
	}
	s.mu.Unlock()
	if refresh {
		go r.refresh()
	}
	return r
}

// refreshing bounds the streams a node checks at once (refresh).
var refreshing = make(chan struct{}, 4)

// refresh gives the queue's stream, if it was created before this version,
// the limits and expiry JetStream enforces for the queue (update): every
// node opens every shared queue when it starts, so such a stream is
// updated at the first start of a node of this version. A missing stream
// is not created (the queue may be being deleted).
func (r *remoteQueue) refresh() {
	defer r.s.wg.Done()
	select {
	case refreshing <- struct{}{}:
	case <-r.ctx.Done():
		return
	}
	defer func() { <-refreshing }()
	ctx, cancel := context.WithTimeout(r.ctx, r.s.timeout)
	defer cancel()
	err := r.s.update(ctx, r.s.streamConfig(r.vhost, r.name, r.q.Config().Args))
	if err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) && r.ctx.Err() == nil {
		r.s.log.Warn("shared queue's stream not checked for its limits and expiry", "vhost", r.vhost, "queue", r.name, "err", err)
	}
}

// Close stops feeding every queue and gives back the messages this node
// holds (to be redelivered by the other nodes), then returns once every
// publish in flight has been answered.
func (s *Queues) Close() {
	s.mu.Lock()
	s.closed = true
	rs := make([]*remoteQueue, 0, len(s.open))
	for r := range s.open {
		rs = append(rs, r)
	}
	ss := make([]*sessionQueue, 0, len(s.sessions))
	for r := range s.sessions {
		ss = append(ss, r)
	}
	s.mu.Unlock()
	s.cancel()
	for _, r := range rs {
		r.close()
	}
	for _, r := range ss {
		r.close()
	}
	s.wg.Wait()
	s.settle.close()
}

// remoteQueue feeds one shared queue on this node from its stream's
// consumer, as much as the node's consumers of it have credit for.
type remoteQueue struct {
	s           *Queues
	q           *queue.Queue
	vhost, name string
	ctx         context.Context
	cancel      context.CancelFunc
	reapable    bool // the reaper expires its head (reap.go)

	feeder                          // mu guards what follows too
	cons   jetstream.Consumer       // bound by the first pull
	held   map[jetstream.Msg]uint64 // fed and not settled yet: its stream sequence

	count readyCount // the queue's ready messages in JetStream (count.go)
	lease lease      // single active consumer: this node's lease (sac.go)
}

var _ queue.Remote = (*remoteQueue)(nil)

// feeder starts and stops the goroutine that feeds a queue on this node
// (remoteQueue, sessionQueue). Its mutex guards its queue's state too.
type feeder struct {
	mu      sync.Mutex
	wake    chan struct{}
	running bool
	closed  bool
}

func newFeeder() feeder { return feeder{wake: make(chan struct{}, 1)} }

// wakeUp signals the feeding goroutine and reports whether one must be
// started (counted in s's wait group already).
func (f *feeder) wakeUp(s *Queues) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return false
	}
	select {
	case f.wake <- struct{}{}:
	default:
	}
	if f.running || !s.begin() {
		return false
	}
	f.running = true
	return true
}

// stop records that the feeding goroutine ended.
func (f *feeder) stop() {
	f.mu.Lock()
	f.running = false
	f.mu.Unlock()
}

// Wake implements queue.Remote: it starts the feeder if it is not
// running.
func (r *remoteQueue) Wake() {
	if r.wakeUp(r.s) {
		go r.feed()
	}
}

// Closed implements queue.Remote (the queue was deleted on this node).
func (r *remoteQueue) Closed() {
	r.s.mu.Lock()
	delete(r.s.open, r)
	if k := (queueRef{r.vhost, r.name}); r.s.byName[k] == r {
		delete(r.s.byName, k)
	}
	r.s.mu.Unlock()
	r.close()
}

func (r *remoteQueue) close() {
	r.mu.Lock()
	r.closed = true
	held := make([]jetstream.Msg, 0, len(r.held))
	for m := range r.held {
		held = append(held, m)
	}
	clear(r.held)
	r.mu.Unlock()
	r.cancel()
	for _, m := range held {
		_ = m.Nak()
	}
	r.release()
}

// settle removes m from the held set and returns it with the key its
// settle goes by; it reports false when m was given back already (the
// node is closing).
func (r *remoteQueue) settle(h any) (jetstream.Msg, settleKey, bool) {
	m, ok := h.(jetstream.Msg)
	if !ok {
		return nil, settleKey{}, false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	seq, held := r.held[m]
	if !held {
		return nil, settleKey{}, false
	}
	delete(r.held, m)
	return m, settleKey{r, seq}, true
}

// Ack implements queue.Remote: the ack is sent at once and confirmed by
// JetStream off this path (settle.go); one never confirmed means a
// redelivery after AckWait (at least once).
func (r *remoteQueue) Ack(h any) {
	if m, key, ok := r.settle(h); ok {
		if r.s.plainAcks {
			_ = m.Ack()
			return
		}
		r.s.settle.send(key, m.Reply(), ackBody)
	}
}

// Nak implements queue.Remote: JetStream redelivers the message at once,
// to whichever node pulls next.
func (r *remoteQueue) Nak(h any) {
	m, _, ok := r.settle(h)
	if !ok {
		return
	}
	if r.q.Config().Args.SingleActive {
		r.nakActive(m) // in order, before the lease moves (sac.go)
		return
	}
	if err := m.Nak(); err != nil {
		r.s.log.Warn("nak to JetStream failed", "vhost", r.vhost, "queue", r.name, "err", err)
	}
}

// Term implements queue.Remote, confirmed as Ack is.
func (r *remoteQueue) Term(h any) {
	if m, key, ok := r.settle(h); ok {
		r.s.settle.send(key, m.Reply(), termBody)
	}
}

// feed pulls as many messages as the local consumers have credit for,
// until they have none and no consumer is left.
func (r *remoteQueue) feed() {
	defer r.s.wg.Done()
	var cons jetstream.Consumer
	backoff := 50 * time.Millisecond
	for {
		r.flushNaks()
		n := r.q.Credit()
		if n <= 0 {
			r.mu.Lock()
			if len(r.wake) == 0 && (r.closed || r.q.Consumers() == 0) {
				r.running = false
				r.mu.Unlock()
				r.release()
				return
			}
			r.mu.Unlock()
			select {
			case <-r.wake:
			case <-r.ctx.Done():
				r.stop()
				return
			}
			continue
		}
		if !r.active() {
			// Another node's consumer is the queue's single active one.
			select {
			case <-time.After(leaseRetry):
			case <-r.ctx.Done():
				r.stop()
				return
			}
			continue
		}
		if cons == nil {
			var err error
			if cons, err = r.consumer(); err != nil {
				if r.ctx.Err() != nil {
					r.stop()
					return
				}
				r.s.log.Warn("shared queue not reachable in the cluster; retrying", "vhost", r.vhost, "queue", r.name, "err", err)
				select {
				case <-time.After(backoff):
				case <-r.ctx.Done():
				}
				backoff = min(2*backoff, 5*time.Second)
				continue
			}
		}
		// Not cancelled by a close: a pull request abandoned before it
		// expires may still be answered by the server, into an inbox
		// nobody reads, and those messages would be stuck until
		// AckWait. FetchContext makes the server expire the request a
		// little before the client stops reading; what comes meanwhile
		// is given back.
		fctx, cancel := context.WithTimeout(context.Background(), fetchWait)
		batch, err := cons.Fetch(n, jetstream.FetchContext(fctx))
		if err == nil {
			for m := range batch.Messages() {
				r.take(m)
			}
			err = batch.Error()
		}
		cancel()
		if r.ctx.Err() != nil {
			r.stop()
			return
		}
		switch {
		case err == nil, errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout), errors.Is(err, jetstream.ErrNoMessages):
			backoff = 50 * time.Millisecond
		default:
			r.s.log.Debug("fetch from a shared queue", "vhost", r.vhost, "queue", r.name, "err", err)
			if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
				cons = nil
				r.mu.Lock()
				r.cons = nil
				r.mu.Unlock()
			}
			select {
			case <-time.After(backoff):
			case <-r.ctx.Done():
			}
			backoff = min(2*backoff, 5*time.Second)
		}
	}
}

// consumer binds the queue's consumer, creating the stream and consumer if
// they are missing.
func (r *remoteQueue) consumer() (jetstream.Consumer, error) {
	r.mu.Lock()
	c := r.cons
	r.mu.Unlock()
	if c != nil {
		return c, nil
	}
	ctx, cancel := context.WithTimeout(r.ctx, r.s.timeout)
	defer cancel()
	stream := QueueStream(r.vhost, r.name)
	c, err := r.s.js.Consumer(ctx, stream, queueConsumer)
	if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
		args := r.q.Config().Args
		if err = r.s.ensure(ctx, r.vhost, r.name, &args); err == nil {
			c, err = r.s.js.Consumer(ctx, stream, queueConsumer)
		}
	}
	if err == nil {
		r.s.keepUpWith(c.CachedInfo().Config.AckWait)
		r.mu.Lock()
		r.cons = c
		r.mu.Unlock()
	}
	return c, err
}

// keepUpWith makes the heartbeats keep up with a bound consumer's ack
// wait when it is shorter than any so far (it never grows back: beating
// more often than needed costs little).
func (s *Queues) keepUpWith(ackWait time.Duration) {
	for {
		cur := s.beatWait.Load()
		if ackWait <= 0 || int64(ackWait) >= cur {
			return
		}
		if s.beatWait.CompareAndSwap(cur, int64(ackWait)) {
			s.log.Info("a shared queue's consumer has a shorter ack wait than this node's cluster.ack_wait; heartbeats keep up with it",
				"ack_wait", ackWait, "node_ack_wait", s.ackWait)
			return
		}
	}
}

// take feeds one pulled message to the queue, or gives it back.
func (r *remoteQueue) take(m jetstream.Msg) {
	msg, count, ok := r.hold(m)
	if ok && !r.q.Feed(msg, count > 0, count, m) {
		r.Nak(m)
	}
}

// hold decodes a pulled message and records it as held by this node; count
// is its deliveries before this one. A message that cannot be decoded is
// terminated, one that comes while the node closes is given back.
func (r *remoteQueue) hold(m jetstream.Msg) (*core.Message, uint32, bool) {
	md, err := m.Metadata()
	if err != nil {
		r.s.log.Error("message without JetStream metadata in a shared queue; terminated", "vhost", r.vhost, "queue", r.name, "err", err)
		_ = m.Term()
		return nil, 0, false
	}
	if r.s.settle.settling(settleKey{r, md.Sequence.Stream}) {
		// Acked (or rejected) here, its settle not answered yet: JetStream
		// redelivered it past AckWait while it had no quorum. The settle,
		// retried, applies to this delivery too; giving it to a consumer
		// again would undo what the client acked.
		r.s.log.Debug("redelivery of a message being settled dropped", "vhost", r.vhost, "queue", r.name, "seq", md.Sequence.Stream)
		return nil, 0, false
	}
	msg, err := record.DecodeMessage(m.Data())
	if err != nil {
		r.s.log.Error("undecodable message in a shared queue; terminated", "vhost", r.vhost, "queue", r.name, "seq", md.Sequence.Stream, "err", err)
		_ = m.Term()
		return nil, 0, false
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		_ = m.Nak()
		return nil, 0, false
	}
	r.held[m] = md.Sequence.Stream
	r.mu.Unlock()
	count := uint32(0)
	if md.NumDelivered > 0 {
		count = uint32(md.NumDelivered - 1)
	}
	return msg, count, true
}

// Pull implements queue.Remote (basic.get): one message if the stream has
// one ready now.
func (r *remoteQueue) Pull() (*core.Message, bool, uint32, any, bool) {
	cons, err := r.consumer()
	if err != nil {
		r.s.log.Warn("shared queue not reachable in the cluster", "vhost", r.vhost, "queue", r.name, "err", err)
		return nil, false, 0, nil, false
	}
	batch, err := cons.FetchNoWait(1)
	if err != nil {
		return nil, false, 0, nil, false
	}
	for m := range batch.Messages() {
		if msg, count, ok := r.hold(m); ok {
			// Drain the rest of the batch (there is none: it is one).
			for range batch.Messages() {
			}
			return msg, count > 0, count, m, true
		}
	}
	return nil, false, 0, nil, false
}

// Messages returns how many messages a shared queue's stream holds (ready
// and unacknowledged, on every node).
func (s *Queues) Messages(ctx context.Context, vhost, name string) (uint64, error) {
	if isSessionQueue(name) {
		n, err := s.sessionCount(ctx, vhost, name)
		return uint64(n), err
	}
	st, err := s.js.Stream(ctx, QueueStream(vhost, name))
	if err != nil {
		return 0, err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.State.Msgs, nil
}
