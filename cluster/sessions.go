package cluster

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/router/queue"
	"github.com/bourse-mq/bourse/storage/record"
)

// Session queues: the queues of MQTT persistent sessions' subscriptions
// (protocols/mqtt names them "mqtt-subscription-<client id>-<digest>")
// keep their messages in one JetStream stream shared by all of them,
// SessionStream, one subject per queue, instead of a stream and a consumer
// each: two Raft groups per subscription would make 10,000 devices 20,000
// Raft groups; this way they are one.
//
// Such a queue has one consumer at a time in the whole cluster: the
// node that holds the MQTT session (cluster/mqtt.go moves a session
// between nodes, closing the old connection first). So no JetStream
// consumer keeps its delivery state: the node reads the queue's subject
// in order with direct message reads from the stream's leader (a cursor in
// memory), and an ack deletes the message from the stream (confirmed,
// retried: settle.go). A node that takes the session over, or this one
// after a restart, reads the subject from its first message: what was
// delivered and not acked is delivered again (at least once). New
// messages wake the reader through a core NATS subscription to the
// subject (the publish to the stream reaches it too), with a slowing poll
// behind it (sessionPollMin, sessionPollMax).
//
// The bound of a subscription queue (x-max-length, drop-head, without a
// dead-letter exchange: the MQTT adapter's max_queued_messages) is the
// stream's MaxMsgsPerSubject: JetStream drops a queue's oldest messages
// past it. Other arguments are not applied to session queues.
const (
	// SessionStream is the stream of every session queue's messages.
	SessionStream = "bourse_mqtt_queues"
	// sessionQueuePrefix starts the names of session queues.
	sessionQueuePrefix = "mqtt-subscription-"
	// A reader with credit that is caught up looks for new messages
	// without a signal too, in case one was missed (a subscription's
	// interest reaches the other servers a moment after it is made; a
	// reconnect): after sessionPollMin, then twice as long each time up to
	// sessionPollMax while nothing comes, so that idle sessions cost the
	// stream's leader little (10,000 connected idle devices: about 330
	// reads a second).
	sessionPollMin = 250 * time.Millisecond
	sessionPollMax = 30 * time.Second
)

// SessionSubject is the subject of a session queue's messages in
// SessionStream.
func SessionSubject(vhost, name string) string { return "bourse.mq." + tok(vhost) + "." + tok(name) }

// isSessionQueue reports whether the shared queue name is a session queue.
func isSessionQueue(name string) bool { return strings.HasPrefix(name, sessionQueuePrefix) }

// sessionDelete is the JetStream API subject that deletes a message of
// SessionStream.
const sessionDelete = "$JS.API.STREAM.MSG.DELETE." + SessionStream

// ensureSessions creates SessionStream if it does not exist, with the
// per-queue bound of a (the queue being declared), and updates an
// existing stream's bound when it differs (the last declare's wins: the
// nodes' MQTT max_queued_messages should agree).
func (s *Queues) ensureSessions(ctx context.Context, a *queue.Args) error {
	perSubject := int64(-1)
	if a != nil && a.MaxLength > 0 && a.Overflow == queue.DropHead && !a.HasDLX {
		perSubject = a.MaxLength
	}
	cfg := jetstream.StreamConfig{
		Name:              SessionStream,
		Description:       "Bourse: the messages of MQTT persistent sessions' subscription queues, a subject each",
		Subjects:          []string{"bourse.mq.>"},
		Retention:         jetstream.LimitsPolicy, // a message goes when its queue's reader acks it
		Storage:           jetstream.FileStorage,
		Replicas:          s.replicas,
		Duplicates:        2 * time.Minute,
		MaxMsgsPerSubject: perSubject,
		Discard:           jetstream.DiscardOld,
	}
	err := retryTransient(ctx, func(ctx context.Context) error {
		_, err := s.js.CreateStream(ctx, cfg)
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeReplicasNotSupported && cfg.Replicas > 1 {
			cfg.Replicas = 1
			_, err = s.js.CreateStream(ctx, cfg)
		}
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			st, err := s.js.Stream(ctx, SessionStream)
			if err != nil {
				return err
			}
			if have := st.CachedInfo().Config; have.MaxMsgsPerSubject != perSubject && perSubject != -1 {
				have.MaxMsgsPerSubject = perSubject
				_, err = s.js.UpdateStream(ctx, have)
			}
			return err
		}
		return err
	})
	if err != nil {
		return core.Wrap(core.ResourceError, err, "create the stream %s of MQTT session queues", SessionStream)
	}
	return nil
}

// dropSession deletes a session queue's messages.
func (s *Queues) dropSession(ctx context.Context, vhost, name string) error {
	err := retryTransient(ctx, func(ctx context.Context) error {
		st, err := s.js.Stream(ctx, SessionStream)
		if err != nil {
			return err
		}
		return st.Purge(ctx, jetstream.WithPurgeSubject(SessionSubject(vhost, name)))
	})
	if err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return core.Wrap(core.ResourceError, err, "delete the messages of queue '%s' in vhost '%s'", name, vhost)
	}
	return nil
}

// sessionCount returns how many messages a session queue holds in the
// stream.
func (s *Queues) sessionCount(ctx context.Context, vhost, name string) (int, error) {
	st, err := s.sessionStream(ctx) // the handle looked up once: one request, the info
	if err != nil {
		return 0, err
	}
	subj := SessionSubject(vhost, name)
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(subj))
	if err != nil {
		return 0, err
	}
	return int(info.State.Subjects[subj]), nil
}

// sessionQueue feeds one session queue on this node from its subject of
// SessionStream.
type sessionQueue struct {
	s           *Queues
	q           *queue.Queue
	vhost, name string
	subject     string
	ctx         context.Context
	cancel      context.CancelFunc

	feeder                       // mu guards what follows too
	migrated bool                // the queue's stream of an older version is checked for
	next     uint64              // the stream sequence to read from
	held     map[uint64]struct{} // fed and not settled yet
	given    map[uint64]uint32   // given back (nak): deliveries so far

	count readyCount
}

var _ queue.Remote = (*sessionQueue)(nil)

func (s *Queues) openSession(q *queue.Queue) *sessionQueue {
	c := q.Config()
	r := &sessionQueue{s: s, q: q, vhost: c.VHost, name: c.Name, subject: SessionSubject(c.VHost, c.Name),
		feeder: newFeeder(), held: map[uint64]struct{}{}, given: map[uint64]uint32{}}
	r.ctx, r.cancel = context.WithCancel(s.base)
	s.mu.Lock()
	s.sessions[r] = struct{}{}
	s.mu.Unlock()
	return r
}

// Wake implements queue.Remote.
func (r *sessionQueue) Wake() {
	if r.wakeUp(r.s) {
		go r.feed()
	}
}

// Closed implements queue.Remote.
func (r *sessionQueue) Closed() {
	r.s.mu.Lock()
	delete(r.s.sessions, r)
	r.s.mu.Unlock()
	r.close()
}

// close stops feeding. What this node held stays in the stream, to be
// read again by whichever node holds the session next.
func (r *sessionQueue) close() {
	r.mu.Lock()
	r.closed = true
	clear(r.held)
	r.mu.Unlock()
	r.cancel()
}

// settle removes seq from the held set.
func (r *sessionQueue) settle(h any) (uint64, bool) {
	seq, ok := h.(uint64)
	if !ok {
		return 0, false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, held := r.held[seq]; !held {
		return 0, false
	}
	delete(r.held, seq)
	delete(r.given, seq)
	return seq, true
}

// Ack implements queue.Remote: the message is deleted from the stream,
// confirmed off this path (settle.go).
func (r *sessionQueue) Ack(h any) {
	if seq, ok := r.settle(h); ok {
		r.s.settle.send(settleKey{r, seq}, sessionDelete,
			[]byte(`{"seq":`+strconv.FormatUint(seq, 10)+`,"no_erase":true}`))
	}
}

// Term implements queue.Remote, as Ack.
func (r *sessionQueue) Term(h any) { r.Ack(h) }

// Nak implements queue.Remote: the message is read again from the stream,
// before those after it.
func (r *sessionQueue) Nak(h any) {
	seq, ok := h.(uint64)
	if !ok {
		return
	}
	r.mu.Lock()
	if _, held := r.held[seq]; held {
		delete(r.held, seq)
		r.given[seq]++
		r.next = min(r.next, seq)
	}
	r.mu.Unlock()
	r.Wake()
}

// feed reads the queue's subject as far as the local consumers have credit
// for, until they have none and no consumer is left.
func (r *sessionQueue) feed() {
	defer r.s.wg.Done()
	var signal *nats.Subscription
	defer func() {
		if signal != nil {
			_ = signal.Unsubscribe()
		}
	}()
	backoff, idle := 50*time.Millisecond, sessionPollMin
	for {
		n := r.q.Credit()
		if n <= 0 {
			r.mu.Lock()
			if len(r.wake) == 0 && (r.closed || r.q.Consumers() == 0) {
				r.running = false
				r.mu.Unlock()
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
		if !r.migrated {
			if err := r.migrate(); err != nil {
				r.s.log.Warn("moving a session queue's messages from its own stream (before this version) failed; retrying",
					"vhost", r.vhost, "queue", r.name, "err", err)
				select {
				case <-time.After(backoff):
				case <-r.ctx.Done():
					r.stop()
					return
				}
				backoff = min(2*backoff, 5*time.Second)
				continue
			}
			r.mu.Lock()
			r.migrated = true
			r.mu.Unlock()
		}
		if signal == nil {
			// Subscribed before reading: a message stored after the read
			// found nothing still wakes this loop.
			signal, _ = r.s.nc.Subscribe(r.subject, func(*nats.Msg) {
				select {
				case r.wake <- struct{}{}:
				default:
				}
			})
		}
		got, caughtUp, err := r.read(n)
		if r.ctx.Err() != nil {
			r.stop()
			return
		}
		var wait time.Duration
		switch {
		case err != nil:
			r.s.log.Debug("read a session queue", "vhost", r.vhost, "queue", r.name, "err", err)
			wait, backoff = backoff, min(2*backoff, 5*time.Second)
		case caughtUp && got == 0:
			wait, idle, backoff = idle, min(2*idle, sessionPollMax), 50*time.Millisecond
		default:
			backoff, idle = 50*time.Millisecond, sessionPollMin
			continue
		}
		select {
		case <-r.wake:
			// A signal can come before the stream's leader has the
			// message (the publish reaches subscribers as the stream
			// replicates it): look again soon if this read misses it.
			idle = sessionPollMin
		case <-time.After(wait):
		case <-r.ctx.Done():
			r.stop()
			return
		}
	}
}

// read feeds up to n messages from the cursor on; caughtUp reports that
// the subject has no message after the last one read.
func (r *sessionQueue) read(n int) (got int, caughtUp bool, err error) {
	for got < n {
		msg, count, seq, ok, err := r.take()
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				return got, true, nil
			}
			return got, false, err
		}
		if !ok {
			continue
		}
		if !r.q.Feed(msg, count > 0, count, seq) {
			r.Nak(seq)
			return got, false, nil
		}
		got++
	}
	return got, false, nil
}

// take reads the queue's next message from the cursor on and holds it;
// ok is false for one skipped (held already, being acked, undecodable).
func (r *sessionQueue) take() (msg *core.Message, count uint32, seq uint64, ok bool, err error) {
	r.mu.Lock()
	from := r.next
	r.mu.Unlock()
	ctx, cancel := context.WithTimeout(r.ctx, r.s.timeout)
	defer cancel()
	raw, err := r.s.sessionStream(ctx)
	if err != nil {
		return nil, 0, 0, false, err
	}
	m, err := raw.GetMsg(ctx, max(from, 1), jetstream.WithGetMsgSubject(r.subject))
	if err != nil {
		return nil, 0, 0, false, err
	}
	seq = m.Sequence
	r.mu.Lock()
	if r.next == from { // not moved back by a nak meanwhile
		r.next = seq + 1
	}
	_, held := r.held[seq]
	closed := r.closed
	r.mu.Unlock()
	if held || closed || r.s.settle.settling(settleKey{r, seq}) {
		return nil, 0, seq, false, nil
	}
	msg, err = record.DecodeMessage(m.Data)
	if err != nil {
		r.s.log.Error("undecodable message in a session queue; deleted", "vhost", r.vhost, "queue", r.name, "seq", seq, "err", err)
		r.mu.Lock()
		r.held[seq] = struct{}{}
		r.mu.Unlock()
		r.Ack(seq)
		return nil, 0, seq, false, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, 0, seq, false, nil
	}
	r.held[seq] = struct{}{}
	return msg, r.given[seq], seq, true, nil
}

// migrate moves the messages of the queue's own stream, made by a version
// before session queues shared one, into the queue's subject of
// SessionStream (in order, each with an id of its own, so that two nodes
// moving it at once store it once), then deletes that stream.
func (r *sessionQueue) migrate() error {
	ctx, cancel := context.WithTimeout(r.ctx, 4*r.s.timeout)
	defer cancel()
	old, err := r.s.js.Stream(ctx, QueueStream(r.vhost, r.name))
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if _, err := r.s.sessionStream(ctx); err != nil {
		return err
	}
	moved := 0
	for seq := uint64(1); ; seq++ {
		m, err := old.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(QueueSubject(r.vhost, r.name)))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return err
		}
		seq = m.Sequence
		_, err = r.s.js.PublishMsg(ctx, &nats.Msg{Subject: r.subject, Data: m.Data,
			Header: nats.Header{jetstream.MsgIDHeader: []string{"moved." + old.CachedInfo().Config.Name + "." + strconv.FormatUint(seq, 10)}}})
		if err != nil {
			return err
		}
		moved++
	}
	if err := r.s.js.DeleteStream(ctx, old.CachedInfo().Config.Name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return err
	}
	r.s.log.Info("session queue's messages moved into the shared stream", "vhost", r.vhost, "queue", r.name, "messages", moved)
	return nil
}

// sessionStream returns SessionStream's handle, looked up once.
func (s *Queues) sessionStream(ctx context.Context) (jetstream.Stream, error) {
	s.mu.Lock()
	st := s.sessStream
	s.mu.Unlock()
	if st != nil {
		return st, nil
	}
	st, err := s.js.Stream(ctx, SessionStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if err = s.ensureSessions(ctx, nil); err == nil {
			st, err = s.js.Stream(ctx, SessionStream)
		}
	}
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.sessStream = st
	s.mu.Unlock()
	return st, nil
}

// Pull implements queue.Remote (basic.get).
func (r *sessionQueue) Pull() (*core.Message, bool, uint32, any, bool) {
	for range 100 { // past skipped ones, boundedly
		msg, count, seq, ok, err := r.take()
		if err != nil {
			return nil, false, 0, nil, false
		}
		if ok {
			return msg, count > 0, count, seq, true
		}
	}
	return nil, false, 0, nil, false
}

// Ready implements queue.Remote: the queue's messages in the stream that
// this node does not hold.
func (r *sessionQueue) Ready(fresh bool) (int, bool) {
	return r.count.get(r.s, fresh, r.refreshCount)
}

func (r *sessionQueue) refreshCount() {
	ctx, cancel := context.WithTimeout(r.ctx, min(r.s.timeout, time.Second))
	defer cancel()
	n, err := r.s.sessionCount(ctx, r.vhost, r.name)
	r.mu.Lock()
	n -= len(r.held)
	r.mu.Unlock()
	r.count.set(max(n, 0), err)
	if err != nil {
		r.s.log.Debug("session queue count unavailable", "vhost", r.vhost, "queue", r.name, "err", err)
	}
}

// Purge implements queue.Remote: the queue's messages in the stream that
// this node does not hold are deleted.
func (r *sessionQueue) Purge() (int, error) {
	ctx, cancel := context.WithTimeout(r.ctx, purgeTime)
	defer cancel()
	st, err := r.s.sessionStream(ctx)
	if err != nil {
		return 0, err
	}
	r.mu.Lock()
	keep := uint64(0) // the first held message, which stays with those after it
	for seq := range r.held {
		if keep == 0 || seq < keep {
			keep = seq
		}
	}
	r.mu.Unlock()
	before, err := r.s.sessionCount(ctx, r.vhost, r.name)
	if err != nil {
		return 0, err
	}
	opts := []jetstream.StreamPurgeOpt{jetstream.WithPurgeSubject(r.subject)}
	if keep != 0 {
		opts = append(opts, jetstream.WithPurgeSequence(keep))
	}
	if err := st.Purge(ctx, opts...); err != nil {
		return 0, err
	}
	after, err := r.s.sessionCount(ctx, r.vhost, r.name)
	if err != nil {
		return 0, err
	}
	r.count.stale()
	return max(before-after, 0), nil
}
