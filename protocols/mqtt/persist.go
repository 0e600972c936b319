package mqtt

import (
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/router/queue"
)

// Store keeps what an MQTT broker must not forget across a restart:
// persistent sessions (with their subscriptions) and retained messages.
// cmd/bourse wires the metadata store in; nil keeps both in memory only.
type Store interface {
	// UpdateRecords writes puts and deletes to a named bucket atomically.
	UpdateRecords(bucket string, puts map[string][]byte, deletes []string) error
	// ForEachRecord calls fn for every record of a bucket.
	ForEachRecord(bucket string, fn func(key string, val []byte) error) error
}

const (
	bucketSessions = "mqtt_sessions"
	bucketRetained = "mqtt_retained"
	flushEvery     = 100 * time.Millisecond
)

// persister writes session and retained records behind the protocol: a
// change is saved within flushEvery, in one transaction with its
// neighbours, so a storm of retained publishes costs one fsync per tick.
// MQTT asks no acknowledgement of either to wait for the disk.
type persister struct {
	log     *slog.Logger
	kv      Store
	flushMu sync.Mutex // one flush at a time, so that writes keep their order
	mu      sync.Mutex
	dirty   map[[2]string][]byte // bucket, key → value; nil value = delete
	stop    chan struct{}
	done    chan struct{}
}

func newPersister(s *Server, kv Store) *persister {
	p := &persister{log: s.log, kv: kv, dirty: map[[2]string][]byte{}, stop: make(chan struct{}), done: make(chan struct{})}
	go p.run()
	return p
}

func (p *persister) put(bucket, key string, val []byte) {
	if p == nil {
		return
	}
	if val == nil {
		val = []byte{}
	}
	p.mu.Lock()
	p.dirty[[2]string{bucket, key}] = val
	p.mu.Unlock()
}

func (p *persister) del(bucket, key string) {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.dirty[[2]string{bucket, key}] = nil
	p.mu.Unlock()
}

// pending reports whether a change of key is waiting to be written.
func (p *persister) pending(bucket, key string) bool {
	if p == nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.dirty[[2]string{bucket, key}]
	return ok
}

func (p *persister) run() {
	defer close(p.done)
	t := time.NewTicker(flushEvery)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			p.flush()
		case <-p.stop:
			p.flush()
			return
		}
	}
}

func (p *persister) flush() {
	if p == nil {
		return
	}
	p.flushMu.Lock()
	defer p.flushMu.Unlock()
	p.mu.Lock()
	if len(p.dirty) == 0 {
		p.mu.Unlock()
		return
	}
	batch := p.dirty
	p.dirty = map[[2]string][]byte{}
	p.mu.Unlock()
	type ops struct {
		puts map[string][]byte
		dels []string
	}
	by := map[string]*ops{}
	for k, v := range batch {
		o := by[k[0]]
		if o == nil {
			o = &ops{puts: map[string][]byte{}}
			by[k[0]] = o
		}
		if v == nil {
			o.dels = append(o.dels, k[1])
		} else {
			o.puts[k[1]] = v
		}
	}
	for bucket, o := range by {
		if err := p.kv.UpdateRecords(bucket, o.puts, o.dels); err != nil {
			p.log.Error("mqtt state not saved; it will not survive a restart", "bucket", bucket, "err", err)
		}
	}
}

// close writes what is pending and stops the writer.
func (p *persister) close() {
	if p == nil {
		return
	}
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.done
}

// sessionRec is a persistent session as saved.
type sessionRec struct {
	Key      string   `json:"key"`
	ClientID string   `json:"client_id"`
	VHost    string   `json:"vhost"`
	Version  byte     `json:"version"`
	Clean    bool     `json:"clean"`
	Expiry   uint32   `json:"expiry"`
	ExpFlag  bool     `json:"expiry_flag"`
	Username []byte   `json:"username"`
	Listener string   `json:"listener"`
	Subs     []subRec `json:"subs"`
	// Will is a will waiting for its delay (MQTT 5 Will Delay Interval)
	// while the client is away: a restart publishes it at its time.
	Will *willRec `json:"will,omitempty"`
}

// willRec is a delayed will: the message, who it is from, and when it is due.
type willRec struct {
	Topic   string              `json:"topic"`
	QoS     byte                `json:"qos"`
	Retain  bool                `json:"retain,omitempty"`
	Payload []byte              `json:"payload"`
	Props   *packets.Properties `json:"props,omitempty"`
	User    string              `json:"user"`
	Due     int64               `json:"due_unix_ms"`
}

type subRec struct {
	Filter  string `json:"filter"`
	Group   string `json:"group,omitempty"`
	Queue   string `json:"queue"`
	Pattern string `json:"pattern,omitempty"`
	QoS     byte   `json:"qos"`
	NoLocal bool   `json:"no_local,omitempty"`
	RAP     bool   `json:"rap,omitempty"`
	ID      int    `json:"id,omitempty"`
	Wild    bool   `json:"wild_first,omitempty"`
	Stream  string `json:"stream_reader,omitempty"` // a $stream replay's named offset
}

// saveLocked records a persistent session (ephemeral ones are not saved).
func (ss *session) saveLocked() {
	p := ss.s.persist
	if p == nil || ss.ephemeral || ss.gone || ss.moved {
		return
	}
	rec := sessionRec{Key: ss.key, ClientID: ss.clientID, VHost: ss.vhost.Name(), Version: ss.version,
		Clean: ss.clean, Expiry: ss.expiry, ExpFlag: ss.expFlag, Username: ss.username, Listener: ss.listener}
	if w := ss.will; w != nil {
		r := &willRec{Topic: w.topic, QoS: w.qos, Retain: w.retain, Payload: w.payload, User: ss.willFrom.User, Due: ss.willDue.UnixMilli()}
		if w.props != nil {
			p := publishProperties(w.props)
			r.Props = &p
		}
		rec.Will = r
	}
	for _, sub := range ss.subs {
		o := sub.opts.Load()
		r := subRec{Filter: sub.filter, Group: sub.group, Queue: sub.queue, Pattern: sub.pattern,
			QoS: o.qos, NoLocal: o.noLocal, RAP: o.rap, ID: o.id, Wild: o.wildFirst}
		if sub.stream != nil {
			r.Stream = sub.stream.Name
		}
		rec.Subs = append(rec.Subs, r)
	}
	b, err := json.Marshal(rec)
	if err != nil {
		ss.s.log.Error("encode mqtt session", "client", ss.clientID, "err", err)
		return
	}
	p.put(bucketSessions, ss.key, b)
	ss.saved = true
}

// restore rebuilds persistent sessions and retained messages saved by an
// earlier run, before mochi starts: mochi gets the clients (so a returning
// client finds its session present, and mochi's expiry applies), the bridge
// gets their subscriptions, whose durable queues the router restored. MQTT
// queues no restored session uses are deleted.
//
// In a cluster, a node restores the sessions it held (the others' are
// read when their clients connect here), deletes no queue (other nodes'
// sessions use theirs), and follows the retained messages of the whole
// cluster (joinCluster).
func (s *Server) restore() {
	kv := s.opts.Store
	cluster := s.opts.Cluster
	used := map[[2]string]bool{}
	var wills []func() // delayed wills to re-arm once every session is back
	defer func() {
		for _, f := range wills {
			f()
		}
	}()
	err := kv.ForEachRecord(bucketSessions, func(key string, val []byte) error {
		var rec sessionRec
		if err := json.Unmarshal(val, &rec); err != nil {
			s.log.Error("unreadable mqtt session record; dropped", "key", key, "err", err)
			s.persist.del(bucketSessions, key)
			return nil
		}
		var claim uint64
		if cluster != nil {
			var held bool
			if claim, held = cluster.Held(rec.Key); !held {
				return nil
			}
		}
		ss, sc := s.sessionFromRecord(rec, used)
		if ss == nil {
			s.persist.del(bucketSessions, key)
			return nil
		}
		ss.claim = claim
		s.sessions[rec.Key] = ss
		if w := rec.Will; w != nil {
			in := &inbound{topic: w.Topic, payload: w.Payload, qos: w.QoS, retain: w.Retain, props: w.Props}
			from := core.Origin{Protocol: core.ProtoMQTT, VHost: ss.vhost.Name(), User: w.User}
			wills = append(wills, func() {
				ss.scheduleWill(in, from, time.Until(time.UnixMilli(w.Due)))
			})
		}
		s.stored = append(s.stored, sc)
		return nil
	})
	if err != nil {
		s.log.Error("mqtt sessions not restored", "err", err)
	}
	if len(s.sessions) > 0 {
		s.log.Info("restored mqtt sessions", "sessions", len(s.sessions))
	}
	if cluster != nil {
		return
	}
	for _, name := range s.b.VHosts() {
		v, err := s.b.VHost(name)
		if err != nil {
			continue
		}
		for _, q := range v.Queues() {
			n := q.Name()
			if (strings.HasPrefix(n, "mqtt-subscription-") || strings.HasPrefix(n, "mqtt-shared-")) && !used[[2]string{name, n}] {
				if _, err := v.DeleteQueue(n, false, false, 0); err == nil {
					s.log.Info("deleted the queue of an MQTT session that did not survive the restart", "vhost", name, "queue", n)
				}
			}
		}
	}
	now := time.Now()
	err = kv.ForEachRecord(bucketRetained, func(key string, val []byte) error {
		vhost, _, ok := strings.Cut(key, "\x00")
		var r retainedRec
		if !ok || json.Unmarshal(val, &r) != nil {
			s.persist.del(bucketRetained, key)
			return nil
		}
		pk := r.packet()
		if pk.Expiry > 0 && pk.Expiry < now.Unix() {
			s.persist.del(bucketRetained, key)
			return nil
		}
		s.retained.retain(vhost, pk)
		return nil
	})
	if err != nil {
		s.log.Error("mqtt retained messages not restored", "err", err)
	}
}

// sessionFromRecord rebuilds a persistent session from its record, and
// the client mochi needs to find it present; nil when its vhost is gone.
// The queues its subscriptions use are added to used (if not nil).
func (s *Server) sessionFromRecord(rec sessionRec, used map[[2]string]bool) (*session, storage.Client) {
	v, err := s.b.VHost(rec.VHost)
	if err != nil {
		return nil, storage.Client{}
	}
	ss := &session{s: s, key: rec.Key, clientID: rec.ClientID, vhost: v, subs: map[string]*subscription{}, saved: true,
		version: rec.Version, clean: rec.Clean, expiry: rec.Expiry, expFlag: rec.ExpFlag, username: rec.Username, listener: rec.Listener}
	for _, r := range rec.Subs {
		sub := &subscription{filter: r.Filter, group: r.Group, queue: r.Queue, pattern: r.Pattern}
		sub.opts.Store(&subOpts{qos: r.QoS, noLocal: r.NoLocal, rap: r.RAP, id: r.ID, wildFirst: r.Wild})
		if r.Stream != "" {
			sub.stream = &queue.StreamOptions{Name: r.Stream}
		} else if q, err := v.Queue(r.Queue, 0); err != nil || !q.Durable() {
			// Saved after its queue was: declare it again (empty).
			if err := s.declareAndBind(v, sub); err != nil {
				s.log.Warn("mqtt subscription not restored", "client", rec.ClientID, "filter", r.Filter, "err", err)
				continue
			}
		}
		if r.Group != "" {
			s.sharedMu.Lock()
			s.sharedRefs[v.Name()+"\x00"+r.Queue]++
			s.sharedMu.Unlock()
		}
		if used != nil {
			used[[2]string{v.Name(), r.Queue}] = true
		}
		ss.subs[r.Filter] = sub
	}
	return ss, storage.Client{
		ID: rec.Key, T: storage.ClientKey, Listener: rec.Listener, Username: rec.Username,
		ProtocolVersion: rec.Version, Clean: rec.Clean,
		Properties: storage.ClientProperties{SessionExpiryInterval: rec.Expiry, SessionExpiryIntervalFlag: rec.ExpFlag},
	}
}

// retainedRec is a retained message as saved.
type retainedRec struct {
	Topic   string              `json:"topic"`
	QoS     byte                `json:"qos"`
	Payload []byte              `json:"payload"`
	Created int64               `json:"created"`
	Expiry  int64               `json:"expiry,omitempty"`
	Props   *packets.Properties `json:"props,omitempty"`
}

func (r retainedRec) packet() packets.Packet {
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: r.QoS, Retain: true},
		TopicName:   r.Topic, Payload: r.Payload, Created: r.Created, Expiry: r.Expiry,
	}
	if r.Props != nil {
		pk.Properties = *r.Props
	}
	return pk
}

func retainedKey(vhost, topic string) string { return vhost + "\x00" + topic }

// saveRetained records (or, for an empty payload, forgets) a retained message.
func (s *Server) saveRetained(vhost string, pk packets.Packet) {
	if s.persist == nil {
		return
	}
	if len(pk.Payload) == 0 {
		s.persist.del(bucketRetained, retainedKey(vhost, pk.TopicName))
		return
	}
	r := retainedRec{Topic: pk.TopicName, QoS: pk.FixedHeader.Qos, Payload: pk.Payload, Created: pk.Created, Expiry: pk.Expiry}
	if props := pk.Properties; props.ContentType != "" || len(props.User) > 0 || props.ResponseTopic != "" ||
		len(props.CorrelationData) > 0 || props.PayloadFormatFlag || props.MessageExpiryInterval > 0 {
		r.Props = &props
	}
	b, err := json.Marshal(r)
	if err != nil {
		s.log.Error("encode retained message", "topic", pk.TopicName, "err", err)
		return
	}
	s.persist.put(bucketRetained, retainedKey(vhost, pk.TopicName), b)
}
