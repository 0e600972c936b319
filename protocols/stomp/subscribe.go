package stomp

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-stomp/stomp/v3/frame"

	"github.com/bourse-mq/bourse/auth"
	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/protocols/stomp/wire"
	"github.com/bourse-mq/bourse/router"
	"github.com/bourse-mq/bourse/router/queue"
)

type ackMode uint8

const (
	ackAuto             ackMode = iota // no ACK: the queue settles on delivery
	ackClient                          // ACK/NACK are cumulative
	ackClientIndividual                // ACK/NACK settle one message
)

const tempQueuePrefix = "/temp-queue/"

// subscription is one STOMP subscription: a consumer on one queue. It
// implements queue.Consumer.
type subscription struct {
	c         *conn
	id        string // the subscription header of its MESSAGEs
	tag       string // consumer tag: "T_"+id, or "Q_"+destination when SUBSCRIBE had no id
	dest      string // the destination header it subscribed with
	mode      ackMode
	queueName string
	// durableQueue: a durable /topic/ or /exchange/ subscription's own
	// queue, deleted by UNSUBSCRIBE with durable:true (or persistent:true).
	durableQueue bool
	temp         bool // the synthesised subscription of a temp queue

	mu          sync.Mutex // taken inside Deliver, under the queue's lock
	qsub        *queue.Sub
	kickPending bool
	pending     []pendingDelivery // unacknowledged, ascending n
	live        int               // entries of pending not yet settled

	blocked bool // refused by the outbound queue; guarded by c.out.mu
}

type pendingDelivery struct {
	n, id   uint64 // delivery number in the connection; delivery ID in the queue
	settled bool
}

// Deliver queues a MESSAGE. It runs under the queue's lock: it only
// appends to the outbound queue, or refuses when that is full.
func (s *subscription) Deliver(d queue.Delivery) bool {
	c := s.c
	n := c.deliveries.Add(1)
	track := s.mode != ackAuto
	if track {
		// Recorded before the frame can reach the client, whose ACK may
		// come back at once.
		s.mu.Lock()
		s.pending = append(s.pending, pendingDelivery{n: n, id: d.ID})
		s.live++
		s.mu.Unlock()
	}
	it := outItem{kind: itemMessage, sub: s, msg: d.Msg, n: n, redelivered: d.Redelivered, size: len(d.Msg.Body) + msgOverhead}
	if !c.out.offer(it, s) {
		if track {
			s.mu.Lock()
			if k := len(s.pending) - 1; k >= 0 && s.pending[k].n == n {
				s.pending = s.pending[:k]
				s.live--
			}
			s.mu.Unlock()
		}
		return false
	}
	return true
}

// Cancelled is called when the queue ends the subscription (it was
// deleted). As RabbitMQ, the client gets an ERROR naming the subscription,
// and the connection closes.
func (s *subscription) Cancelled(q *queue.Queue, reason error) {
	c := s.c
	c.mu.Lock()
	mine := c.subs != nil && c.subs[s.tag] == s
	if mine {
		delete(c.subs, s.tag)
	}
	c.mu.Unlock()
	if !mine {
		return // already unsubscribed, or the connection is closing
	}
	s.drain()
	pe := protoErr("Server cancelled subscription", "The server has cancelled a subscription.\nNo more messages will be delivered for '%s': %v", s.dest, reason)
	pe.Headers = []string{frame.Subscription, s.id}
	c.fail(pe, "")
}

func (s *subscription) setSub(qs *queue.Sub) {
	s.mu.Lock()
	s.qsub = qs
	kick := s.kickPending
	s.kickPending = false
	s.mu.Unlock()
	if kick {
		qs.Kick()
	}
}

// kick resumes deliveries refused while the outbound queue was full.
func (s *subscription) kick() {
	s.mu.Lock()
	qs := s.qsub
	if qs == nil {
		s.kickPending = true // refused during Consume: setSub will kick
	}
	s.mu.Unlock()
	if qs != nil {
		qs.Kick()
	}
}

func (s *subscription) queueSub() *queue.Sub {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.qsub
}

// take settles delivery n (and, when multiple, every earlier one) and
// returns their queue delivery IDs. ok is false when n is not outstanding.
func (s *subscription) take(n uint64, multiple bool) (ids []uint64, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := sort.Search(len(s.pending), func(i int) bool { return s.pending[i].n >= n })
	if i == len(s.pending) || s.pending[i].n != n || s.pending[i].settled {
		return nil, false
	}
	from := i
	if multiple {
		from = 0
	}
	for j := from; j <= i; j++ {
		if p := &s.pending[j]; !p.settled {
			p.settled = true
			s.live--
			ids = append(ids, p.id)
		}
	}
	s.compactLocked()
	return ids, true
}

func (s *subscription) compactLocked() {
	k := 0
	for k < len(s.pending) && s.pending[k].settled {
		k++
	}
	s.pending = s.pending[k:]
	if len(s.pending) > 64 && s.live < len(s.pending)/2 {
		kept := make([]pendingDelivery, 0, s.live)
		for _, p := range s.pending {
			if !p.settled {
				kept = append(kept, p)
			}
		}
		s.pending = kept
	}
}

// has reports whether delivery n is outstanding.
func (s *subscription) has(n uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := sort.Search(len(s.pending), func(i int) bool { return s.pending[i].n >= n })
	return i < len(s.pending) && s.pending[i].n == n && !s.pending[i].settled
}

// drain forgets every outstanding delivery and returns their queue IDs.
func (s *subscription) drain() []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []uint64
	for _, p := range s.pending {
		if !p.settled {
			ids = append(ids, p.id)
		}
	}
	s.pending, s.live = nil, 0
	return ids
}

// stop cancels the consumer and requeues its unacknowledged messages; they
// come back flagged redelivered.
func (s *subscription) stop() {
	qs := s.queueSub()
	if qs == nil {
		return
	}
	qs.Cancel()
	q := qs.Queue()
	for _, id := range s.drain() {
		q.Reject(id, true)
	}
}

// onSubscribe handles SUBSCRIBE.
func (c *conn) onSubscribe(f *frame.Frame) error {
	dh, ok := f.Header.Contains(frame.Destination)
	if !ok {
		return missingHeader("SUBSCRIBE", frame.Destination)
	}
	d, err := parseDestination(dh)
	if err != nil {
		return err
	}
	id, hasID := f.Header.Contains(frame.Id)
	tag := "T_" + id
	if !hasID {
		// STOMP 1.0 makes id optional: the destination names the
		// subscription, as RabbitMQ's "Q_" consumer tags.
		id, tag = dh, "Q_"+dh
	} else if strings.HasPrefix(id, tempQueuePrefix) {
		return protoErr("Invalid id", "SUBSCRIBE 'id' may not start with %s", tempQueuePrefix)
	}
	durable := durableHeader(f)
	if durable && !hasID {
		return protoErr("Missing header", "Header 'id' is required for durable subscriptions")
	}
	mode, err := parseAckMode(f.Header.Get(frame.Ack))
	if err != nil {
		return err
	}
	prefetch := 0
	if mode != ackAuto && c.s.opts.DefaultPrefetch > 0 {
		prefetch = c.s.opts.DefaultPrefetch
	}
	if p, ok := f.Header.Contains("prefetch-count"); ok {
		n, err := strconv.ParseUint(p, 10, 31)
		if err != nil {
			return invalidHeader("prefetch-count", "want a non-negative integer, got '%s'", p)
		}
		prefetch = int(n)
	}
	c.mu.Lock()
	dup, count := c.subs[tag] != nil, len(c.subs)
	c.mu.Unlock()
	if dup {
		return protoErr("Duplicated subscription identifier", "A subscription identified by '%s' already exists.", id)
	}
	if count >= c.s.opts.MaxSubscriptions {
		return protoErr("Too many subscriptions", "This connection already has %d subscriptions", count)
	}
	qname, cleanup, err := c.sourceQueue(d, dh, f, id, durable)
	if err != nil {
		return err
	}
	if err := c.allow(auth.Queue, qname, auth.Read); err != nil {
		cleanup()
		return err
	}
	s := &subscription{
		c: c, id: id, tag: tag, dest: dh, mode: mode, queueName: qname,
		durableQueue: durable && (d.kind == destTopic || d.kind == destExchange),
	}
	c.mu.Lock()
	c.subs[tag] = s
	c.mu.Unlock()
	var so *queue.StreamOptions
	if q, err := c.vh.Queue(qname, c.id); err == nil && q.IsStream() {
		if so, err = streamOptions(f); err != nil {
			cleanup()
			return err
		}
		if mode != ackAuto && prefetch == 0 {
			prefetch = defaultStreamPrefetch // a stream reader needs credit
		}
	}
	qs, err := c.vh.Consume(qname, s, queue.ConsumeOptions{Tag: tag, NoAck: mode == ackAuto, Prefetch: prefetch, Owner: c.id, Stream: so})
	if err != nil {
		c.mu.Lock()
		delete(c.subs, tag)
		c.mu.Unlock()
		cleanup()
		return err
	}
	s.setSub(qs)
	return nil
}

// defaultStreamPrefetch is the credit of a stream subscription in a client
// ack mode that names no prefetch-count.
const defaultStreamPrefetch = 100

func parseAckMode(v string) (ackMode, error) {
	switch v {
	case "", frame.AckAuto:
		return ackAuto, nil
	case frame.AckClient:
		return ackClient, nil
	case frame.AckClientIndividual:
		return ackClientIndividual, nil
	}
	return 0, invalidHeader(frame.Ack, "want auto, client or client-individual, got '%s'", v)
}

// durableHeader: RabbitMQ's durable subscription flag, durable:true or the
// older persistent:true.
func durableHeader(f *frame.Frame) bool {
	return boolHeader(f, "durable") || boolHeader(f, "persistent")
}

func boolHeader(f *frame.Frame, name string) bool {
	return strings.EqualFold(f.Header.Get(name), "true")
}

// sourceQueue finds or creates the queue a SUBSCRIBE consumes. cleanup
// undoes what it created when the consume then fails.
func (c *conn) sourceQueue(d destination, dh string, f *frame.Frame, id string, durable bool) (name string, cleanup func(), err error) {
	nothing := func() {}
	switch d.kind {
	case destQueue:
		return d.name, nothing, c.ensureQueue(d.name, f, true)
	case destAMQQueue, destReplyQueue:
		// An existing queue, never declared: 404 when missing.
		if _, err := c.vh.Queue(d.name, c.id); err != nil {
			return "", nothing, err
		}
		return d.name, nothing, nil
	case destTopic, destExchange:
		return c.subscriptionQueue(d, f, id, durable)
	case destStream:
		if _, err := c.streamQueue(d.name); err != nil {
			return "", nothing, err
		}
		return d.name, nothing, nil
	default: // destTempQueue
		return "", nothing, protoErr("Invalid destination", "'%s' is not a valid destination for SUBSCRIBE: temp queues are created by a SEND's reply-to header", dh)
	}
}

// streamQueue returns the stream a /stream/ destination names: it must
// exist (streams are declared over AMQP or HTTP, with their retention).
func (c *conn) streamQueue(name string) (*queue.Queue, error) {
	q, err := c.vh.Queue(name, c.id)
	if err != nil {
		return nil, err
	}
	if !q.IsStream() {
		return nil, protoErr("Invalid destination", "'/stream/%s': queue '%s' is not a stream", name, name)
	}
	return q, nil
}

// streamOptions reads a stream subscription's headers: x-stream-offset
// (first, last, next, an offset, offset=N, timestamp=unix seconds, or an
// interval like 1h) and x-stream-consumer-name (a named server-side
// offset, advanced by acks).
func streamOptions(f *frame.Frame) (*queue.StreamOptions, error) {
	off, hasOffset := f.Header.Contains("x-stream-offset")
	name, hasName := f.Header.Contains("x-stream-consumer-name")
	if !hasOffset && !hasName {
		return nil, nil
	}
	so := &queue.StreamOptions{HasOffset: hasOffset, Name: name}
	if hasOffset {
		spec, err := queue.ParseOffset(off, time.Now())
		if err != nil {
			return nil, invalidHeader("x-stream-offset", "%v", err)
		}
		so.Offset = spec
	}
	if hasName && (name == "" || len(name) > 255) {
		return nil, invalidHeader("x-stream-consumer-name", "want 1 to 255 bytes")
	}
	return so, nil
}

// subscriptionQueue declares and binds the queue of a /topic/ or
// /exchange/ subscription: its own exclusive auto-delete queue, or with
// durable:true a durable queue named after the subscription id that
// outlives the connection.
func (c *conn) subscriptionQueue(d destination, f *frame.Frame, id string, durable bool) (string, func(), error) {
	nothing := func() {}
	ex, key := router.AMQTopic, d.name
	if d.kind == destExchange {
		ex, key = d.name, d.key
		if err := c.vh.DeclareExchange(router.ExchangeDecl{ExchangeInfo: router.ExchangeInfo{Name: ex}, Passive: true}); err != nil {
			return "", nothing, err
		}
	}
	name := f.Header.Get("x-queue-name")
	if name == "" {
		name = subscriptionQueueName(key, id, durable)
	}
	info := core.QueueInfo{Name: name, Durable: durable, Exclusive: !durable, AutoDelete: !durable}
	if err := queueFlags(f, &info); err != nil {
		return "", nothing, err
	}
	args, err := queueArgs(f)
	if err != nil {
		return "", nothing, err
	}
	info.Args = args
	if err := c.allowSubscriptionQueue(ex, name, key, args); err != nil {
		return "", nothing, err
	}
	if _, err := c.vh.DeclareQueue(router.QueueDecl{QueueInfo: info, Owner: c.id}); err != nil {
		return "", nothing, err
	}
	cleanup := func() {
		if !info.Durable {
			_, _ = c.vh.DeleteQueue(name, false, false, c.id)
		}
	}
	if err := c.vh.Bind(router.Binding{Source: ex, Dest: router.Dest{Kind: router.ToQueue, Name: name}, Key: key}, c.id); err != nil {
		cleanup()
		return "", nothing, err
	}
	return name, cleanup, nil
}

// subscriptionQueueName names a subscription's queue as RabbitMQ does
// ("stomp-subscription-…"): derived from the routing key and the
// subscription id when durable, so that the same subscription finds its
// queue again after a reconnect; random otherwise.
func subscriptionQueueName(key, id string, durable bool) string {
	var b [16]byte
	if durable {
		h := sha256.Sum256([]byte(key + "\x00" + id))
		copy(b[:], h[:])
	} else {
		_, _ = rand.Read(b[:])
	}
	return "stomp-subscription-" + base64.RawURLEncoding.EncodeToString(b[:])
}

// queueArgHeaders are the SUBSCRIBE/SEND headers RabbitMQ turns into queue
// declare arguments, with their AMQP types.
var queueArgHeaders = map[string]byte{
	"x-dead-letter-exchange":    's',
	"x-dead-letter-routing-key": 's',
	"x-expires":                 'l',
	"x-max-length":              'l',
	"x-max-length-bytes":        'l',
	"x-max-priority":            'l',
	"x-message-ttl":             'l',
	"x-overflow":                's',
	"x-queue-type":              's',
	"x-single-active-consumer":  't',
}

func queueArgs(f *frame.Frame) (core.Table, error) {
	var t core.Table
	for name, typ := range queueArgHeaders {
		v, ok := f.Header.Contains(name)
		if !ok {
			continue
		}
		if t == nil {
			t = core.Table{}
		}
		v = strings.TrimSpace(v)
		switch typ {
		case 'l':
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return nil, invalidHeader(name, "want an integer, got '%s'", v)
			}
			t[name] = n
		case 't':
			b, err := strconv.ParseBool(v)
			if err != nil {
				return nil, invalidHeader(name, "want true or false, got '%s'", v)
			}
			t[name] = b
		default:
			t[name] = v
		}
	}
	return t, nil
}

// queueFlags applies the durable, auto-delete and exclusive headers.
func queueFlags(f *frame.Frame, info *core.QueueInfo) error {
	for name, dst := range map[string]*bool{"durable": &info.Durable, "auto-delete": &info.AutoDelete, "exclusive": &info.Exclusive} {
		v, ok := f.Header.Contains(name)
		if !ok {
			continue
		}
		b, err := strconv.ParseBool(v)
		if err != nil {
			return invalidHeader(name, "want true or false, got '%s'", v)
		}
		*dst = b
	}
	return nil
}

func hasQueueParams(f *frame.Frame) bool {
	for _, n := range []string{"durable", "auto-delete", "exclusive"} {
		if _, ok := f.Header.Contains(n); ok {
			return true
		}
	}
	for n := range queueArgHeaders {
		if _, ok := f.Header.Contains(n); ok {
			return true
		}
	}
	return false
}

// maxDeclaredCache bounds the per-connection memory of queues known to
// exist.
const maxDeclaredCache = 1024

// ensureQueue makes sure /queue/ destination name exists, declaring it
// durable when it does not (RabbitMQ declares on SEND and on SUBSCRIBE). A
// frame with queue headers (durable, auto-delete, exclusive, x-…) always
// declares, so a mismatch with the existing queue is an error
// (precondition_failed) as in RabbitMQ; without them an existing queue is
// used as it is, whatever its arguments.
func (c *conn) ensureQueue(name string, f *frame.Frame, subscribe bool) error {
	explicit := hasQueueParams(f)
	if !explicit && c.declared[name] {
		return nil
	}
	if !explicit {
		_, err := c.vh.Queue(name, c.id)
		if err == nil || !errors.Is(err, core.ErrNotFound) {
			// Present (an exclusive queue of another connection is present
			// too: SEND may still route to it; Consume will refuse it).
			c.remember(name)
			return nil
		}
	}
	info := core.QueueInfo{Name: name, Durable: true}
	if err := queueFlags(f, &info); err != nil {
		return err
	}
	if !info.Durable {
		// As RabbitMQ: a non-durable /queue/ is exclusive and auto-delete
		// unless the headers say otherwise.
		info.Exclusive, info.AutoDelete = true, true
		if err := queueFlags(f, &info); err != nil {
			return err
		}
	}
	args, err := queueArgs(f)
	if err != nil {
		return err
	}
	info.Args = args
	if err := c.allowDeclare(name, args); err != nil {
		return err
	}
	if _, err := c.vh.DeclareQueue(router.QueueDecl{QueueInfo: info, Owner: c.id}); err != nil {
		return err
	}
	c.remember(name)
	return nil
}

func (c *conn) remember(name string) {
	if len(c.declared) >= maxDeclaredCache {
		clear(c.declared)
	}
	c.declared[name] = true
}

// onUnsubscribe handles UNSUBSCRIBE: the consumer is cancelled and its
// unacknowledged messages requeued; with durable:true (or persistent:true)
// a durable subscription's queue is deleted too.
func (c *conn) onUnsubscribe(f *frame.Frame) error {
	var tag, what string
	if id, ok := f.Header.Contains(frame.Id); ok {
		if strings.HasPrefix(id, tempQueuePrefix) {
			return protoErr("Invalid id", "UNSUBSCRIBE 'id' may not start with %s", tempQueuePrefix)
		}
		tag, what = "T_"+id, "id='"+id+"'"
	} else if dh, ok := f.Header.Contains(frame.Destination); ok {
		tag, what = "Q_"+dh, "destination='"+dh+"'"
	} else {
		return protoErr("Missing destination or id", "UNSUBSCRIBE must include a 'destination' or 'id' header")
	}
	c.mu.Lock()
	s := c.subs[tag]
	delete(c.subs, tag)
	c.mu.Unlock()
	if s == nil {
		return protoErr("No subscription found", "UNSUBSCRIBE must refer to an existing subscription.\nSubscription to %s not found.", what)
	}
	s.stop()
	if s.durableQueue && durableHeader(f) {
		if _, err := c.vh.DeleteQueue(s.queueName, false, false, c.id); err != nil && !errors.Is(err, core.ErrNotFound) {
			return err
		}
	}
	return nil
}

// ackRef is a parsed ACK/NACK.
type ackRef struct {
	sub *subscription
	n   uint64
}

// resolveAck finds the delivery an ACK or NACK names: STOMP 1.2 uses the
// MESSAGE's ack header, sent back as id; 1.0 and 1.1 use message-id. Both
// are "<consumer tag>@@<session>@@<delivery number>" as in RabbitMQ.
func (c *conn) resolveAck(f *frame.Frame) (ackRef, error) {
	name := frame.MessageId
	if c.version == wire.V12 {
		name = frame.Id
	}
	val, ok := f.Header.Contains(name)
	if !ok {
		return ackRef{}, missingHeader(f.Command, name)
	}
	bad := func() error {
		return invalidHeader(name, "'%s' does not name a message delivered to this session and not yet acknowledged", val)
	}
	i := strings.LastIndex(val, "@@")
	if i < 0 {
		return ackRef{}, bad()
	}
	n, err := strconv.ParseUint(val[i+2:], 10, 64)
	if err != nil {
		return ackRef{}, bad()
	}
	tag, ok := strings.CutSuffix(val[:i], "@@"+c.session)
	if !ok {
		return ackRef{}, bad()
	}
	c.mu.Lock()
	s := c.subs[tag]
	c.mu.Unlock()
	if s == nil {
		return ackRef{}, protoErr("Subscription not found", "Message with id '%s' has no subscription", val)
	}
	if s.mode == ackAuto || !s.has(n) {
		return ackRef{}, bad()
	}
	return ackRef{sub: s, n: n}, nil
}

// onAck handles ACK and NACK. In ack mode client they are cumulative, as in
// RabbitMQ; NACK requeues unless requeue:false.
func (c *conn) onAck(f *frame.Frame, nack bool) error {
	ref, err := c.resolveAck(f)
	if err != nil {
		return err
	}
	requeue := !c.s.opts.NackDeadLetterByDefault
	if v, ok := f.Header.Contains("requeue"); ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return invalidHeader("requeue", "want true or false, got '%s'", v)
		}
		requeue = b
	}
	if txid, ok := f.Header.Contains(frame.Transaction); ok {
		tx, err := c.tx(txid)
		if err != nil {
			return err
		}
		return c.addTxAction(tx, txAction{ack: ref, nack: nack, requeue: requeue}, 0)
	}
	c.settle(ref, nack, requeue)
	return nil
}

// settle acknowledges (or rejects) ref in its queue. A delivery already
// settled (a cumulative ACK covered it, or its subscription ended) is
// skipped.
func (c *conn) settle(ref ackRef, nack, requeue bool) {
	s := ref.sub
	ids, ok := s.take(ref.n, s.mode == ackClient)
	if !ok {
		return
	}
	qs := s.queueSub()
	if qs == nil {
		return
	}
	q := qs.Queue()
	for _, id := range ids {
		if nack {
			q.Reject(id, requeue)
		} else {
			q.Ack(id)
		}
	}
}
