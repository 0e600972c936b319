package cluster

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/router"
	"github.com/bourse-mq/bourse/storage/record"
)

// ProbeWait bounds how long a node waits for another node to say it
// delivered a mandatory message that no queue of its own took.
const ProbeWait = time.Second

// fanoutBuffer is how many received messages wait for the router at most
// (the NATS client drops what comes beyond it, and says so: slow consumer).
// Routing a message takes microseconds, so this absorbs bursts; it also
// bounds the memory a node that does not keep up spends on them.
const fanoutBuffer = 8192

// fanHeader is the fan-out frame before the message record: a version
// byte, the sending node's random id (8 bytes) and its sequence number (8
// bytes), by which a node drops the copies it gets when several of its
// subscriptions match one message.
const (
	fanVersion = 1
	fanHeader  = 17
)

// FanoutSubject is the core NATS subject on which a message published to
// exchange in vhost with routing key key travels between nodes:
// bourse.f.<vhost token>.<exchange token>.k followed by one token per word
// of the key (none for the empty key). Tokens are base64url with a leading
// '_', so any name or word is one valid, wildcard-free token, and AMQP
// topic patterns map to NATS wildcards word for word.
func FanoutSubject(vhost, exchange, key string) string {
	return string(appendKeySubject(nil, fanPrefix(vhost, exchange), key))
}

// appendKeySubject appends prefix's key subject for key to b (the tokens
// of tok, without a string per word).
func appendKeySubject(b []byte, prefix, key string) []byte {
	b = append(b, prefix...)
	b = append(b, ".k"...)
	if key == "" {
		return b
	}
	for w := range strings.SplitSeq(key, ".") {
		b = append(b, '.', '_')
		b = base64.RawURLEncoding.AppendEncode(b, []byte(w))
	}
	return b
}

// fanPrefix is the bare subject of an exchange: a message whose keys cannot
// be one subject (CC and BCC headers) travels on it, and every node with
// interest in the exchange listens to it.
func fanPrefix(vhost, exchange string) string {
	return "bourse.f." + tok(vhost) + "." + tok(exchange)
}

// interestSubjects returns the subjects that carry what interest i
// selects: the exchange's bare subject, plus the key subjects (exactly, or
// through NATS wildcards where the topic pattern maps onto them: '*' is
// one word, a final '#' is the pattern without it or with '.>' after it),
// or every key subject (fanout and headers exchanges, upstream exchanges,
// and topic patterns with '#' elsewhere than at the end).
func interestSubjects(vhost string, i router.Interest) []string {
	p := fanPrefix(vhost, i.Exchange)
	switch i.Kind {
	case router.InterestKey:
		return []string{p, FanoutSubject(vhost, i.Exchange, i.Key)}
	case router.InterestPattern:
		var words []string
		if i.Key != "" {
			for w := range strings.SplitSeq(i.Key, ".") {
				if w == "#" && len(words) > 0 && words[len(words)-1] == "#" {
					continue // "#.#" is "#"
				}
				words = append(words, w)
			}
		}
		tail := false
		if n := len(words); n > 0 && words[n-1] == "#" {
			words, tail = words[:n-1], true
		}
		var b strings.Builder
		b.WriteString(p)
		b.WriteString(".k")
		for _, w := range words {
			switch w {
			case "#":
				return []string{p, p + ".>"}
			case "*":
				b.WriteString(".*")
			default:
				b.WriteByte('.')
				b.WriteString(tok(w))
			}
		}
		if tail {
			return []string{p, b.String(), b.String() + ".>"}
		}
		return []string{p, b.String()}
	}
	return []string{p, p + ".>"}
}

// Fanout carries messages to the node-local queues of other nodes over
// core NATS (router.NodeFanout): each publish goes out once, on a subject
// naming its vhost, exchange and routing key, and the NATS servers forward
// it only to the nodes that subscribed to a matching subject, that is, the
// nodes with a matching node-local binding. It has a connection of its
// own (no echo: a node never receives its own publishes), so that a slow
// fan-out cannot get the control or JetStream connections dropped.
//
// Delivery is at most once: a message sent while a link or a node is down,
// or dropped because this node does not keep up (see fanoutBuffer), is
// lost, as RabbitMQ's transient messages across a lost link.
//
// Lock order: the router's vhost lock, then Fanout.mu (Interest is called
// under the vhost lock), then the NATS connection's. The receiving
// goroutine calls the router holding no lock of its own.
type Fanout struct {
	nc    *nats.Conn
	acc   *server.Account // embedded mode: the interest check before a publish
	log   *slog.Logger
	id    [8]byte
	inbox string // probe replies: inbox.<token>

	pubMu sync.Mutex // orders seq with the NATS publish
	seq   uint64

	broker  atomic.Pointer[router.Broker]
	ch      chan *nats.Msg
	done    chan struct{}
	wg      sync.WaitGroup
	dropped atomic.Uint64

	mu        sync.Mutex
	interests map[fanInterest]int
	subs      map[string]*fanSub
	closed    bool
	// unsubDropped: what the NATS client dropped on subscriptions since
	// removed (Dropped).
	unsubDropped uint64

	probeMu sync.Mutex
	probes  map[string]chan bool
	probeN  atomic.Uint64

	prefixes  sync.Map // [2]string{vhost, exchange} → fanPrefix
	nprefixes atomic.Int64
}

type fanInterest struct {
	vhost string
	router.Interest
}

type fanSub struct {
	refs int
	sub  *nats.Subscription
}

var _ router.NodeFanout = (*Fanout)(nil)

// newFanout starts the fan-out over nc, a connection of its own made with
// nats.NoEcho. acc, when set, is the embedded server's account, asked
// whether anyone listens before a message is encoded and sent.
func newFanout(nc *nats.Conn, acc *server.Account, log *slog.Logger) (*Fanout, error) {
	f := &Fanout{nc: nc, acc: acc, log: log, ch: make(chan *nats.Msg, fanoutBuffer), done: make(chan struct{}),
		interests: map[fanInterest]int{}, subs: map[string]*fanSub{}, probes: map[string]chan bool{}}
	_, _ = rand.Read(f.id[:])
	nc.SetErrorHandler(f.slowConsumer)
	f.inbox = nc.NewInbox()
	if _, err := nc.Subscribe(f.inbox+".*", f.probeReply); err != nil {
		return nil, err
	}
	f.wg.Add(1)
	go f.receive()
	return f, nil
}

// Attach gives the fan-out the broker that routes what other nodes send;
// until then what comes is dropped.
func (f *Fanout) Attach(b *router.Broker) { f.broker.Store(b) }

// Subscriptions returns how many subjects this node listens to.
func (f *Fanout) Subscriptions() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.subs)
}

// Dropped returns how many messages from other nodes this node dropped:
// those the NATS client dropped because this node did not keep up (see
// fanoutBuffer), and those it could not decode.
func (f *Fanout) Dropped() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := f.dropped.Load() + f.unsubDropped
	for _, s := range f.subs {
		if d, err := s.sub.Dropped(); err == nil && d > 0 {
			n += uint64(d)
		}
	}
	return n
}

// Interest implements router.NodeFanout: a subject is subscribed while at
// least one interest needs it.
func (f *Fanout) Interest(vhost string, i router.Interest, delta int) {
	k := fanInterest{vhost, i}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return
	}
	n := f.interests[k]
	f.interests[k] = n + delta
	if n+delta <= 0 {
		delete(f.interests, k)
		if n+delta < 0 {
			f.log.Error("fan-out interest released more often than taken", "vhost", vhost, "exchange", i.Exchange, "key", i.Key)
		}
	}
	if (n > 0) == (n+delta > 0) {
		return
	}
	for _, subj := range interestSubjects(vhost, i) {
		s := f.subs[subj]
		switch {
		case delta > 0 && s == nil:
			sub, err := f.nc.ChanSubscribe(subj, f.ch)
			if err != nil {
				f.log.Error("fan-out subscribe", "subject", subj, "err", err)
				continue
			}
			f.subs[subj] = &fanSub{refs: 1, sub: sub}
		case delta > 0:
			s.refs++
		case s != nil:
			if s.refs--; s.refs == 0 {
				delete(f.subs, subj)
				if d, err := s.sub.Dropped(); err == nil && d > 0 {
					f.unsubDropped += uint64(d)
				}
				if err := s.sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
					f.log.Warn("fan-out unsubscribe", "subject", subj, "err", err)
				}
			}
		}
	}
}

// prefix returns fanPrefix(vhost, exchange), remembered: it is computed
// on every publish.
func (f *Fanout) prefix(vhost, exchange string) string {
	k := [2]string{vhost, exchange}
	if p, ok := f.prefixes.Load(k); ok {
		return p.(string)
	}
	p := fanPrefix(vhost, exchange)
	if f.nprefixes.Add(1) > maxPrefixes {
		// Exchanges come and go (auto-delete ones with generated names):
		// start afresh rather than grow without bound.
		f.prefixes.Clear()
		f.nprefixes.Store(1)
	}
	f.prefixes.Store(k, p)
	return p
}

// maxPrefixes bounds the remembered subject prefixes.
const maxPrefixes = 1 << 14

// Publish implements router.NodeFanout.
func (f *Fanout) Publish(vhost string, m *core.Message, probe bool) bool {
	prefix := f.prefix(vhost, m.Exchange)
	var subj string
	_, cc := m.Headers["CC"]
	_, bcc := m.Headers["BCC"]
	if cc || bcc {
		// Routed by several keys: on the exchange's bare subject, which
		// every node with interest in the exchange listens to.
		subj = prefix
	} else {
		var buf [256]byte
		subj = string(appendKeySubject(buf[:0], prefix, m.RoutingKey))
	}
	if f.acc != nil && !f.acc.SubscriptionInterest(subj) {
		return false // nobody listens, anywhere in the cluster
	}
	payload := make([]byte, fanHeader, fanHeader+len(m.Body)+256)
	payload[0] = fanVersion
	copy(payload[1:9], f.id[:])
	payload, err := record.AppendMessage(payload, m)
	if err != nil {
		f.log.Warn("fan-out: message not encodable; not sent to other nodes", "vhost", vhost, "err", err)
		return false
	}
	msg := &nats.Msg{Subject: subj, Data: payload}
	var reply chan bool
	if probe {
		reply = make(chan bool, 1)
		msg.Reply = f.inbox + "." + strconv.FormatUint(f.probeN.Add(1), 36)
		f.probeMu.Lock()
		f.probes[msg.Reply] = reply
		f.probeMu.Unlock()
		defer func() {
			f.probeMu.Lock()
			delete(f.probes, msg.Reply)
			f.probeMu.Unlock()
		}()
	}
	f.pubMu.Lock()
	f.seq++
	binary.BigEndian.PutUint64(payload[9:17], f.seq)
	err = f.nc.PublishMsg(msg) // copies payload
	f.pubMu.Unlock()
	if err != nil {
		lvl := slog.LevelWarn
		if errors.Is(err, nats.ErrConnectionClosed) {
			lvl = slog.LevelDebug // the node is shutting down
		}
		f.log.Log(context.Background(), lvl, "fan-out: message not sent to other nodes (at most once)", "vhost", vhost, "exchange", m.Exchange, "err", err)
		return false
	}
	if !probe {
		// Embedded mode checked that a node listens (maybe only this
		// one, through a wildcard subscription: then the MQTT adapter
		// says success rather than "no matching subscribers").
		return f.acc != nil
	}
	t := time.NewTimer(ProbeWait)
	defer t.Stop()
	select {
	case ok := <-reply:
		return ok
	case <-t.C:
		return false
	case <-f.done:
		return false
	}
}

// probeReply takes another node's answer to a probe: delivered, or the
// server's "no responders" status when nobody listens.
func (f *Fanout) probeReply(m *nats.Msg) {
	f.probeMu.Lock()
	ch := f.probes[m.Subject]
	f.probeMu.Unlock()
	if ch == nil {
		return // answered already, or given up
	}
	select {
	case ch <- m.Header.Get("Status") == "":
	default:
	}
}

// receive routes what other nodes send, one message at a time, in the
// order it comes (so one publisher's messages keep their order).
func (f *Fanout) receive() {
	defer f.wg.Done()
	type seen struct {
		seq uint64
		at  time.Time
	}
	last := map[[8]byte]seen{}
	prune := time.NewTicker(time.Minute)
	defer prune.Stop()
	for {
		var m *nats.Msg
		select {
		case m = <-f.ch:
		case now := <-prune.C:
			for id, s := range last {
				if now.Sub(s.at) > time.Minute {
					delete(last, id)
				}
			}
			continue
		case <-f.done:
			return
		}
		d := m.Data
		if len(d) < fanHeader || d[0] != fanVersion {
			f.dropped.Add(1)
			f.log.Warn("fan-out: message of an unknown format dropped", "subject", m.Subject)
			continue
		}
		var id [8]byte
		copy(id[:], d[1:9])
		seq := binary.BigEndian.Uint64(d[9:17])
		if s, ok := last[id]; ok && seq <= s.seq {
			continue // another copy, through another of our subscriptions
		}
		last[id] = seen{seq, time.Now()}
		f.deliver(m)
	}
}

func (f *Fanout) deliver(m *nats.Msg) {
	b := f.broker.Load()
	if b == nil {
		return
	}
	parts := strings.SplitN(m.Subject, ".", 4)
	if len(parts) < 4 {
		return
	}
	vname, err := untok(parts[2])
	if err != nil {
		f.dropped.Add(1)
		f.log.Warn("fan-out: bad subject", "subject", m.Subject, "err", err)
		return
	}
	msg, err := record.DecodeMessage(m.Data[fanHeader:])
	if err != nil {
		f.dropped.Add(1)
		f.log.Warn("fan-out: undecodable message dropped", "subject", m.Subject, "err", err)
		return
	}
	v, err := b.VHost(vname)
	if err != nil {
		return
	}
	if n := v.PublishFromCluster(msg); n > 0 && m.Reply != "" {
		if err := f.nc.Publish(m.Reply, nil); err != nil {
			f.log.Debug("fan-out: probe answer", "err", err)
		}
	}
}

// slowConsumer is the fan-out connection's error handler: messages the
// router did not take in time are dropped, and logged.
func (f *Fanout) slowConsumer(_ *nats.Conn, sub *nats.Subscription, err error) {
	if sub == nil || !errors.Is(err, nats.ErrSlowConsumer) {
		f.log.Warn("fan-out connection", "err", err)
		return
	}
	n, _ := sub.Dropped()
	f.log.Warn("fan-out: this node does not keep up; messages from other nodes dropped (delivery across nodes is at most once)",
		"subject", sub.Subject, "dropped_on_subject", n)
}

// close stops receiving; the connection is closed by the node.
func (f *Fanout) close() {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return
	}
	f.closed = true
	f.mu.Unlock()
	close(f.done)
	f.wg.Wait()
}
