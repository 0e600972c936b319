package mqtt

import (
	"errors"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/router"
	"github.com/bourse-mq/bourse/router/queue"
)

// session is the bridge side of an MQTT session: its subscriptions, each
// backed by a router queue bound to amq.topic, and the state that outlives
// a connection (inbound QoS 2 flows, a delayed will). mochi keeps the
// protocol side (its client, topic index and in-flight store) under the
// same key.
type session struct {
	s        *Server
	key      string // mochi's client id: vhost-qualified outside the default vhost
	clientID string
	vhost    *router.VHost

	mu        sync.Mutex
	owner     *conn // the connected client, nil while offline
	ephemeral bool  // the session ends with its connection
	gone      bool
	moved     bool                     // another node of the cluster took it: its record is not ours to write
	saved     bool                     // its record is written (or on its way): ending it deletes the record
	claim     uint64                   // the cluster's token for this node's hold on the session
	subs      map[string]*subscription // by filter, as subscribed
	will      *inbound                 // a will waiting for its delay
	willFrom  core.Origin
	willTimer *time.Timer
	willDue   time.Time // when the waiting will is published

	qmu  sync.Mutex // leaf lock
	qos2 map[uint16]qos2State

	// recent holds the ids of the session's latest connections, for no-local.
	recent atomic.Pointer[[]core.ConnID]

	// What a restart needs to give mochi the client back (guarded by mu).
	version  byte
	clean    bool
	expiry   uint32
	expFlag  bool
	username []byte
	listener string
}

// qos2State is where an inbound QoS 2 flow stands.
type qos2State uint8

const (
	qos2New     qos2State = iota // not seen: route it
	qos2Pending                  // routed, PUBREC not yet written
	qos2Acked                    // PUBREC written, waiting for PUBREL
)

// subscription is one subscription of a session.
type subscription struct {
	filter  string // as subscribed, "$share/group/..." included
	group   string // shared subscription group, "" otherwise
	queue   string
	pattern string      // amq.topic binding key
	excl    core.ConnID // owner of an exclusive (clean session) queue, else 0
	opts    atomic.Pointer[subOpts]
	cons    *consumer // the owner's consumer, guarded by session.mu
	// stream is set for a $stream/<name>/<start> replay subscription: it
	// reads stream <name> (queue holds the name) and owns no queue.
	stream *queue.StreamOptions
}

// subOpts are a subscription's options, replaced whole when the client
// subscribes to the same filter again.
type subOpts struct {
	qos       byte
	noLocal   bool
	rap       bool // retain as published
	id        int  // subscription identifier, 0 for none
	wildFirst bool // the filter starts with a wildcard: no '$' topics
}

func newSubOpts(f packets.Subscription, inner string) *subOpts {
	return &subOpts{
		qos:       min(f.Qos, 2),
		noLocal:   f.NoLocal,
		rap:       f.RetainAsPublished,
		id:        f.Identifier,
		wildFirst: inner != "" && (inner[0] == '+' || inner[0] == '#'),
	}
}

// consumer is a router consumer feeding one subscription to a connection.
type consumer struct {
	c       *conn
	sub     *subscription
	qsub    *queue.Sub // guarded by session.mu
	stopped atomic.Bool
}

// Deliver implements queue.Consumer (under the queue's lock).
func (k *consumer) Deliver(d queue.Delivery) bool { return k.c.offer(k, d) }

// Cancelled implements queue.Consumer: the queue was deleted by someone
// else (an operator, an AMQP client). As RabbitMQ does, the MQTT connection
// is closed, so that the client subscribes again.
func (k *consumer) Cancelled(_ *queue.Queue, reason error) {
	if k.stopped.Load() {
		return
	}
	k.c.s.log.Warn("subscription queue deleted; closing the connection",
		"conn", k.c.id, "client", k.c.clientID, "queue", k.sub.queue, "reason", reason)
	k.c.kill(packets.ErrAdministrativeAction)
}

func (k *consumer) stop() {
	k.stopped.Store(true)
	if k.qsub != nil {
		k.qsub.Cancel()
	}
}

var errNotOwner = errors.New("the session has moved to another connection")

// attachSession runs in OnSessionEstablish, before mochi inherits or
// discards the previous session under the same client id and sends CONNACK.
// It takes the session over from a previous connection (stopping that
// connection's deliveries and requeueing what it held), or replaces it with
// a new one, deciding exactly as mochi does.
func (s *Server) attachSession(c *conn, cl *mochi.Client, pk packets.Packet) {
	var claim uint64
	if s.opts.Cluster != nil {
		unlock := s.keys.lock(cl.ID)
		defer unlock()
		claim = s.claimSession(c, cl.ID)
	}
	present := false
	if old, ok := s.mochi.Clients.Get(cl.ID); ok {
		present = !(pk.Connect.Clean || (old.Properties.Clean && old.Properties.ProtocolVersion < 5))
	}
	ephemeral := pk.Connect.Clean
	if c.v5 {
		ephemeral = cl.Properties.Props.SessionExpiryInterval == 0
	}
	s.sessMu.Lock()
	ss := s.sessions[cl.ID]
	var stale *session
	if ss != nil && !present {
		stale, ss = ss, nil
	}
	if ss == nil {
		ss = &session{s: s, key: cl.ID, clientID: c.clientID, vhost: c.vhost, subs: map[string]*subscription{}}
		s.sessions[cl.ID] = ss
	}
	s.sessMu.Unlock()
	if stale != nil {
		stale.end(true)
	}

	ss.mu.Lock()
	prev := ss.owner
	ss.owner, ss.ephemeral = c, ephemeral
	if claim != 0 {
		ss.claim = claim
	}
	ss.stopConsumersLocked()
	ss.cancelWillLocked()
	ss.version, ss.clean = cl.Properties.ProtocolVersion, pk.Connect.Clean
	ss.expiry, ss.expFlag = cl.Properties.Props.SessionExpiryInterval, cl.Properties.Props.SessionExpiryIntervalFlag
	ss.username, ss.listener = cl.Properties.Username, cl.Net.Listener
	if ephemeral {
		if ss.saved {
			s.persist.del(bucketSessions, ss.key)
			ss.saved = false
		}
	} else {
		ss.saveLocked()
	}
	ss.mu.Unlock()
	if prev != nil && prev != c {
		prev.detachDeliveries()
	}
	ss.addRecent(c.id)
	c.sess = ss
}

func (ss *session) addRecent(id core.ConnID) {
	const keep = 8
	var ids []core.ConnID
	if p := ss.recent.Load(); p != nil {
		ids = append(ids, *p...)
	}
	ids = append(ids, id)
	if len(ids) > keep {
		ids = ids[len(ids)-keep:]
	}
	ss.recent.Store(&ids)
}

// ownConn reports whether a message was published by this session's client
// (for no-local), on this or one of its recent connections.
func (ss *session) ownConn(o core.Origin) bool {
	if o.Protocol != core.ProtoMQTT {
		return false
	}
	if p := ss.recent.Load(); p != nil {
		for _, id := range *p {
			if id == o.Conn {
				return true
			}
		}
	}
	return false
}

// stopConsumersLocked stops the owner's consumers.
func (ss *session) stopConsumersLocked() {
	for _, sub := range ss.subs {
		if sub.cons != nil {
			sub.cons.stop()
			sub.cons = nil
		}
	}
}

// startConsumers starts a consumer on every subscription queue that has
// none (after CONNACK on resume, after SUBACK for new subscriptions).
func (ss *session) startConsumers(c *conn) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.owner != c || ss.gone {
		return
	}
	for _, sub := range ss.subs {
		if sub.cons != nil {
			continue
		}
		if err := ss.consumeLocked(c, sub); err != nil {
			ss.s.log.Warn("cannot consume subscription queue", "conn", c.id, "client", ss.clientID, "queue", sub.queue, "err", err)
		}
	}
}

func (ss *session) consumeLocked(c *conn, sub *subscription) error {
	k := &consumer{c: c, sub: sub}
	o := queue.ConsumeOptions{Tag: "mqtt-" + sub.filter, Owner: c.id}
	if sub.stream != nil {
		so := *sub.stream
		o.Stream, o.Prefetch = &so, streamPrefetch
		qs, err := ss.vhost.Consume(sub.queue, k, o)
		if err != nil {
			return err
		}
		if so.Name != "" {
			// A resumed persistent session continues where it left off.
			sub.stream.HasOffset = false
		}
		k.qsub = qs
		sub.cons = k
		return nil
	}
	qs, err := ss.vhost.Consume(sub.queue, k, o)
	if core.KindOf(err) == core.NotFound {
		// Deleted while the session was offline: declare it again.
		if err = ss.s.ensureQueue(ss.vhost, sub); err == nil {
			qs, err = ss.vhost.Consume(sub.queue, k, o)
		}
	}
	if err != nil {
		return err
	}
	k.qsub = qs
	sub.cons = k
	return nil
}

// has reports whether the session subscribes to filter.
func (ss *session) has(filter string) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.subs[filter] != nil
}

// subscribe adds (or, for a filter it has, updates) a subscription and
// declares its queue and binding. Its consumer starts after SUBACK.
func (ss *session) subscribe(c *conn, f packets.Subscription) (*subOpts, error) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.owner != c || ss.gone {
		return nil, errNotOwner
	}
	group, inner := splitShared(f.Filter)
	o := newSubOpts(f, inner)
	if sub := ss.subs[f.Filter]; sub != nil {
		sub.opts.Store(o)
		ss.saveLocked()
		return o, nil
	}
	if name, so, ok, err := parseStreamFilter(f.Filter, time.Now()); ok {
		if err != nil {
			return nil, err
		}
		q, err := ss.vhost.Queue(name, c.id)
		if err != nil {
			return nil, err
		}
		if !q.IsStream() {
			return nil, core.Errorf(core.NotFound, "'%s': queue '%s' is not a stream", f.Filter, name)
		}
		if !ss.ephemeral {
			so.Name = "mqtt:" + ss.clientID + ":" + f.Filter
		}
		sub := &subscription{filter: f.Filter, queue: name, stream: so}
		sub.opts.Store(o)
		ss.subs[f.Filter] = sub
		ss.saveLocked()
		return o, nil
	}
	sub := &subscription{filter: f.Filter, group: group, pattern: filterToPattern(inner)}
	if group != "" {
		sub.queue = sharedQueueName(group, inner)
	} else {
		sub.queue = subscriptionQueueName(ss.clientID, inner)
		if ss.ephemeral {
			sub.excl = c.id
		}
	}
	sub.opts.Store(o)
	if err := ss.s.acquireQueue(ss.vhost, sub); err != nil {
		return nil, err
	}
	ss.subs[f.Filter] = sub
	ss.saveLocked()
	return o, nil
}

// unsubscribe removes a subscription and its queue.
func (ss *session) unsubscribe(c *conn, filter string) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.owner != c || ss.gone {
		return
	}
	sub := ss.subs[filter]
	if sub == nil {
		return
	}
	delete(ss.subs, filter)
	if sub.cons != nil {
		sub.cons.stop()
		sub.cons = nil
	}
	if sub.stream == nil {
		ss.s.releaseQueue(ss.vhost, sub)
	}
	ss.saveLocked()
}

// release detaches the session from c when c disconnects. It reports
// whether c still owned it (it did not if another connection took it over).
func (ss *session) release(c *conn) bool {
	ss.mu.Lock()
	if ss.owner != c {
		ss.mu.Unlock()
		return false
	}
	ss.owner = nil
	ss.stopConsumersLocked()
	ss.mu.Unlock()
	c.detachDeliveries()
	return true
}

// end destroys the session: its queues are deleted (shared ones once no
// session uses them), and a will still waiting for its delay is published
// now, since the session ends first ([MQTT-3.1.3-9]), unless dropWill.
func (ss *session) end(dropWill bool) {
	ss.mu.Lock()
	if ss.gone {
		ss.mu.Unlock()
		return
	}
	ss.gone = true
	if !ss.moved {
		saved := ss.saved
		if saved {
			ss.s.persist.del(bucketSessions, ss.key)
		}
		if cl := ss.s.opts.Cluster; cl != nil {
			claim := ss.claim
			defer func() {
				if saved {
					// Gone from the cluster before another node may claim it.
					ss.s.persist.flush()
				}
				cl.Release(ss.key, claim)
			}()
		}
	}
	prev := ss.owner
	ss.owner = nil
	ss.stopConsumersLocked()
	subs := ss.subs
	ss.subs = nil
	will, from := ss.will, ss.willFrom
	ss.cancelWillLocked()
	ss.mu.Unlock()
	if prev != nil {
		prev.detachDeliveries()
	}
	for _, sub := range subs {
		if sub.stream == nil {
			ss.s.releaseQueue(ss.vhost, sub)
		}
	}
	ss.s.sessMu.Lock()
	if ss.s.sessions[ss.key] == ss {
		delete(ss.s.sessions, ss.key)
	}
	ss.s.sessMu.Unlock()
	if will != nil && !dropWill {
		ss.s.publishWill(ss.vhost, will, from)
	}
}

// scheduleWill publishes w after d unless the client reconnects first.
func (ss *session) scheduleWill(w *inbound, from core.Origin, d time.Duration) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.gone || ss.owner != nil || ss.s.isClosing() {
		return
	}
	ss.cancelWillLocked()
	ss.will, ss.willFrom, ss.willDue = w, from, time.Now().Add(d)
	ss.willTimer = time.AfterFunc(max(d, 0), ss.fireWill)
	ss.saveLocked() // a restart before d publishes it at its time
}

func (ss *session) fireWill() {
	ss.mu.Lock()
	w, from := ss.will, ss.willFrom
	ss.will, ss.willTimer = nil, nil
	if w != nil {
		ss.saveLocked()
	}
	ss.mu.Unlock()
	if w != nil {
		ss.s.publishWill(ss.vhost, w, from)
	}
}

func (ss *session) cancelWillLocked() {
	if ss.willTimer != nil {
		ss.willTimer.Stop()
		ss.willTimer = nil
	}
	ss.will = nil
}

// qos2Begin records an inbound QoS 2 PUBLISH and says whether it is new.
func (ss *session) qos2Begin(id uint16) qos2State {
	ss.qmu.Lock()
	defer ss.qmu.Unlock()
	st, ok := ss.qos2[id]
	if ok {
		return st
	}
	if ss.qos2 == nil {
		ss.qos2 = map[uint16]qos2State{}
	}
	ss.qos2[id] = qos2Pending
	return qos2New
}

func (ss *session) qos2Acked(id uint16) {
	ss.qmu.Lock()
	if _, ok := ss.qos2[id]; ok {
		ss.qos2[id] = qos2Acked
	}
	ss.qmu.Unlock()
}

func (ss *session) qos2Delete(id uint16) {
	ss.qmu.Lock()
	delete(ss.qos2, id)
	ss.qmu.Unlock()
}

func (ss *session) qos2Awaiting(id uint16) bool {
	ss.qmu.Lock()
	defer ss.qmu.Unlock()
	return ss.qos2[id] == qos2Acked
}

// acquireQueue declares a subscription's queue and binding; a shared
// group's queue is counted once per session using it.
func (s *Server) acquireQueue(v *router.VHost, sub *subscription) error {
	if sub.group == "" {
		return s.ensureQueue(v, sub)
	}
	s.sharedMu.Lock()
	defer s.sharedMu.Unlock()
	if err := s.declareAndBind(v, sub); err != nil {
		return err
	}
	s.sharedRefs[v.Name()+"\x00"+sub.queue]++
	return nil
}

// releaseQueue deletes a subscription's queue, a shared group's once its
// last session leaves it (in a cluster, never: see below).
func (s *Server) releaseQueue(v *router.VHost, sub *subscription) {
	if sub.group != "" {
		s.sharedMu.Lock()
		defer s.sharedMu.Unlock()
		k := v.Name() + "\x00" + sub.queue
		if n := s.sharedRefs[k] - 1; n > 0 {
			s.sharedRefs[k] = n
			return
		}
		delete(s.sharedRefs, k)
		if s.opts.Cluster != nil {
			// Members on other nodes may still use it (this node counts
			// only its own): the group's queue stays.
			return
		}
	}
	if _, err := v.DeleteQueue(sub.queue, false, false, sub.excl); err != nil && core.KindOf(err) != core.NotFound {
		s.log.Warn("cannot delete subscription queue", "vhost", v.Name(), "queue", sub.queue, "err", err)
	}
}

// ensureQueue declares a subscription's queue and binding (again).
func (s *Server) ensureQueue(v *router.VHost, sub *subscription) error {
	if sub.group != "" {
		s.sharedMu.Lock()
		defer s.sharedMu.Unlock()
	}
	return s.declareAndBind(v, sub)
}

// queueArgs are the arguments of a subscription queue: its length bound.
func (s *Server) queueArgs() core.Table {
	if s.opts.MaxQueuedMessages < 0 {
		return nil
	}
	return core.Table{"x-max-length": int64(s.opts.MaxQueuedMessages)}
}

func (s *Server) declareAndBind(v *router.VHost, sub *subscription) error {
	_, err := v.DeclareQueue(router.QueueDecl{
		QueueInfo: core.QueueInfo{Name: sub.queue, Exclusive: sub.excl != 0, Durable: sub.excl == 0 && s.persist != nil,
			Args: s.queueArgs()},
		Owner: sub.excl,
	})
	if err != nil {
		return err
	}
	return v.Bind(core.Binding{
		Source: router.AMQTopic,
		Dest:   core.Dest{Kind: core.ToQueue, Name: sub.queue},
		Key:    sub.pattern,
	}, sub.excl)
}

// expireSession ends a disconnected session whose expiry interval passed.
func (s *Server) expireSession(key string) {
	s.sessMu.Lock()
	ss := s.sessions[key]
	s.sessMu.Unlock()
	if ss == nil {
		return
	}
	ss.mu.Lock()
	offline := ss.owner == nil
	ss.mu.Unlock()
	if offline {
		ss.end(false)
	}
}

// dropWills cancels every delayed will (server shutdown).
func (s *Server) dropWills() {
	s.sessMu.Lock()
	all := make([]*session, 0, len(s.sessions))
	for _, ss := range s.sessions {
		all = append(all, ss)
	}
	s.sessMu.Unlock()
	for _, ss := range all {
		ss.mu.Lock()
		ss.cancelWillLocked()
		ss.mu.Unlock()
	}
}

// streamPrefetch is the credit of a $stream replay subscription.
const streamPrefetch = 100

// parseStreamFilter recognises Bourse's stream replay convention,
// $stream/<name>/<start>: <name> is the stream (percent-encoded if it holds
// a slash), <start> is first, last, next, an offset, a time (RFC 3339) or
// an interval before now (30m, 1h, 7D). ok is false for any other filter.
func parseStreamFilter(filter string, now time.Time) (name string, so *queue.StreamOptions, ok bool, err error) {
	rest, ok := strings.CutPrefix(filter, "$stream/")
	if !ok {
		return "", nil, false, nil
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 2 || parts[0] == "" || parts[1] == "" {
		return "", nil, true, core.Errorf(core.InvalidArgument, "'%s': want $stream/<name>/<first|last|next|offset|time>", filter)
	}
	if name, err = url.PathUnescape(parts[0]); err != nil || strings.ContainsAny(name, "+#") {
		return "", nil, true, core.Errorf(core.InvalidArgument, "'%s': bad stream name", filter)
	}
	start := parts[1]
	var v any = start
	if t, err := time.Parse(time.RFC3339Nano, start); err == nil {
		v = t
	}
	spec, err := queue.ParseOffset(v, now)
	if err != nil {
		return "", nil, true, core.Wrap(core.InvalidArgument, err, "'%s'", filter)
	}
	return name, &queue.StreamOptions{Offset: spec, HasOffset: true}, true, nil
}
