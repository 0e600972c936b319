package cluster

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Settling a pulled message (ack, term) in JetStream, confirmed, off the
// delivery path.
//
// A plain JetStream ack is one message with no answer: lost on the way (a
// consumer leader change, a route cut), the message comes back after
// AckWait, once more. The settler sends each ack as a request instead,
// pipelined (no waiting per message): JetStream answers once the ack is
// applied to the consumer's replicated state; one not answered within
// settleRetry is sent again (acks are idempotent) until the queue's
// timeout. The caller (a consumer's basic.ack) never waits for it.
//
// Held messages, meanwhile, get a heartbeat (InProgress) every quarter of
// AckWait (so that a consumer leader election of a few seconds loses
// none), so that AckWait can be short: a node that dies with messages in
// hand stops beating, and JetStream hands them out again AckWait after
// the last beat, to the nodes still alive. The AckWait beaten for is the
// shortest of the node's own and those of the queues' consumers it has
// bound (Queues.beatWait): a consumer keeps the AckWait it was created
// with, whatever the node's is now.

// settleRetry is how long an ack waits for its answer before it is sent
// again.
const settleRetry = time.Second

var (
	ackBody      = []byte("+ACK")
	termBody     = []byte("+TERM")
	progressBody = []byte("+WPI")
)

// settler sends acks and terms as requests and retries the unanswered ones.
type settler struct {
	nc      *nats.Conn
	inbox   string // answers come on inbox.<id>
	timeout time.Duration
	sub     *nats.Subscription

	mu      sync.Mutex
	next    uint64
	pending map[uint64]*pendingSettle
	byKey   map[settleKey]int // pending settles per message
	onLost  func(subject string, err string)
	// lose sends settles and their beats where nothing answers (tests: a
	// consumer leader that is gone).
	lose atomic.Bool
}

// settleKey names the message a settle is for, across its deliveries: its
// queue on this node and its stream sequence.
type settleKey struct {
	q   any // *remoteQueue, *sessionQueue
	seq uint64
}

type pendingSettle struct {
	key         settleKey
	subject     string // the message's ack subject
	body        []byte
	first, sent time.Time
}

func newSettler(nc *nats.Conn, timeout time.Duration, onLost func(subject, err string)) (*settler, error) {
	s := &settler{nc: nc, inbox: nc.NewRespInbox(), timeout: timeout, pending: map[uint64]*pendingSettle{},
		byKey: map[settleKey]int{}, onLost: onLost}
	sub, err := nc.Subscribe(s.inbox+".*", s.answer)
	if err != nil {
		return nil, err
	}
	s.sub = sub
	return s, nil
}

// send settles the message key: body to subject, as a request whose
// answer confirms it (an ack or term to a pulled message's ack subject, a
// message delete to JetStream's API; an error in the API's JSON answer,
// such as a message deleted already, is final as success is).
func (s *settler) send(key settleKey, subject string, body []byte) {
	now := time.Now()
	s.mu.Lock()
	s.next++
	id := s.next
	s.pending[id] = &pendingSettle{key: key, subject: subject, body: body, first: now, sent: now}
	s.byKey[key]++
	s.mu.Unlock()
	s.publish(id, subject, body)
}

// settling reports whether a settle of the message key waits for its
// answer.
func (s *settler) settling(key settleKey) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.byKey[key] > 0
}

// done forgets the pending settle id; s.mu is held.
func (s *settler) done(id uint64) {
	p := s.pending[id]
	if p == nil {
		return
	}
	delete(s.pending, id)
	if s.byKey[p.key]--; s.byKey[p.key] <= 0 {
		delete(s.byKey, p.key)
	}
}

// beat tells JetStream that the messages whose settles wait for their
// answer are still in hand, as heartbeat does for held ones: without it
// a settle retried through a quorum loss longer than AckWait would race
// JetStream's redelivery of the same message.
func (s *settler) beat() {
	s.mu.Lock()
	subjects := make([]string, 0, len(s.pending))
	for _, p := range s.pending {
		if _, pulled := p.key.q.(*remoteQueue); pulled { // not a session queue's delete
			subjects = append(subjects, p.subject)
		}
	}
	s.mu.Unlock()
	for _, subj := range subjects {
		_ = s.nc.Publish(s.route(subj), progressBody)
	}
}

func (s *settler) route(subject string) string {
	if s.lose.Load() {
		return "bourse.lost." + subject
	}
	return subject
}

func (s *settler) publish(id uint64, subject string, body []byte) {
	// An error (connection closed or reconnecting with a full buffer)
	// leaves it pending: the retry sends it again.
	subject = s.route(subject)
	_ = s.nc.PublishMsg(&nats.Msg{Subject: subject, Reply: s.inbox + "." + strconv.FormatUint(id, 10), Data: body})
}

// answer handles JetStream's answer to one settle: an empty message once
// applied, or a status (503: no consumer leader right now) to retry.
func (s *settler) answer(m *nats.Msg) {
	id, err := strconv.ParseUint(m.Subject[strings.LastIndexByte(m.Subject, '.')+1:], 10, 64)
	if err != nil {
		return
	}
	if st := m.Header.Get("Status"); st != "" && st != "200" {
		s.mu.Lock()
		if p := s.pending[id]; p != nil {
			p.sent = time.Time{} // at the next sweep
		}
		s.mu.Unlock()
		return
	}
	s.mu.Lock()
	s.done(id)
	s.mu.Unlock()
}

// sweep sends again the settles not answered within settleRetry, and gives
// up on those older than the timeout (the message comes back after
// AckWait: at least once).
func (s *settler) sweep(now time.Time) {
	type resend struct {
		id            uint64
		subject, body string
	}
	var again []resend
	var lost []string
	s.mu.Lock()
	for id, p := range s.pending {
		switch {
		case now.Sub(p.first) > s.timeout:
			lost = append(lost, p.subject)
			s.done(id)
		case now.Sub(p.sent) >= settleRetry:
			p.sent = now
			again = append(again, resend{id, p.subject, string(p.body)})
		}
	}
	s.mu.Unlock()
	for _, r := range again {
		s.publish(r.id, r.subject, []byte(r.body))
	}
	for _, l := range lost {
		s.onLost(l, "no answer from JetStream")
	}
}

// inFlight returns how many settles wait for their answer.
func (s *settler) inFlight() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pending)
}

func (s *settler) close() { _ = s.sub.Unsubscribe() }

// maintain retries settles and beats the held messages' heartbeats until
// the node closes.
func (s *Queues) maintain(ctx context.Context) {
	defer s.wg.Done()
	tick := time.NewTicker(settleRetry / 4)
	defer tick.Stop()
	lastBeat := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			s.settle.sweep(now)
			if now.Sub(lastBeat) >= time.Duration(s.beatWait.Load())/4 {
				lastBeat = now
				s.heartbeat()
				s.settle.beat()
			}
		}
	}
}

// heartbeat tells JetStream that every message this node holds is still
// in hand (InProgress resets its AckWait).
func (s *Queues) heartbeat() {
	s.mu.Lock()
	rs := make([]*remoteQueue, 0, len(s.open))
	for r := range s.open {
		rs = append(rs, r)
	}
	s.mu.Unlock()
	for _, r := range rs {
		r.mu.Lock()
		held := make([]jetstream.Msg, 0, len(r.held))
		for m := range r.held {
			held = append(held, m)
		}
		r.mu.Unlock()
		for _, m := range held {
			_ = m.InProgress()
		}
	}
}
