package mqtt

import (
	"encoding/json"
	"strings"
	"sync"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/bourse-mq/bourse/core"
)

// Cluster shares sessions and retained messages between the nodes of a
// Bourse cluster (cmd/bourse wires the cluster package's implementation
// in; the adapter does not import it). Its records are the Store's:
// session records written by the node that holds the session, retained
// messages by the node that received them.
type Cluster interface {
	Store
	// GetRecord returns the latest record of key, or nil.
	GetRecord(bucket, key string) ([]byte, error)
	// WatchRecords calls fn with every record of bucket and then with
	// every change made by any node (val nil: deleted), from one
	// goroutine, until the cluster closes. It returns once the records
	// present at the call have been given to fn.
	WatchRecords(bucket string, fn func(key string, val []byte)) error
	// Claim makes this node the holder of session key. moved reports that
	// another node held it and has let it go (its client disconnected,
	// its deliveries given back, its record written). A later claim by
	// another node, even one made meanwhile, takes it away again through
	// OnTakeover. token identifies the claim for Release.
	Claim(key string) (token uint64, moved bool, err error)
	// Release gives a claim up (the session ended here).
	Release(key string, token uint64)
	// Held reports whether this node holds key (after a restart), and
	// holds it again.
	Held(key string) (token uint64, ok bool)
	// OnTakeover sets what runs when another node claims a session this
	// node holds; the claim waits for it to return.
	OnTakeover(fn func(key string))
	// OnOrphans sets what runs for each session held by a node that has
	// been down for a while (node: that holder), for a live node to
	// adopt it: its expiry and its delayed will are the holder's to run.
	OnOrphans(fn func(key, node string))
	// ClaimOrphan makes this node the holder of session key if node
	// still holds it; ok is false when another node has it now.
	ClaimOrphan(key, node string) (token uint64, ok bool)
}

// keyLocks serialises, per session key, a connection taking the session
// (its claim in the cluster and its attachment here) and another node
// taking it away.
type keyLocks struct {
	mu sync.Mutex
	m  map[string]*keyLock
}

type keyLock struct {
	mu   sync.Mutex
	refs int
}

func (k *keyLocks) lock(key string) (unlock func()) {
	k.mu.Lock()
	if k.m == nil {
		k.m = map[string]*keyLock{}
	}
	l := k.m[key]
	if l == nil {
		l = &keyLock{}
		k.m[key] = l
	}
	l.refs++
	k.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		k.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(k.m, key)
		}
		k.mu.Unlock()
	}
}

// joinCluster starts following the cluster: retained messages from every
// node, and takeovers of this node's sessions.
func (s *Server) joinCluster() {
	s.opts.Cluster.OnTakeover(s.handOff)
	s.opts.Cluster.OnOrphans(s.adoptOrphan)
	if err := s.opts.Cluster.WatchRecords(bucketRetained, s.applyRetained); err != nil {
		s.log.Error("retained messages of the cluster not followed", "err", err)
	}
}

// applyRetained applies a retained message stored or cleared on any node
// (this one's too, coming back). A change made here that is not written
// yet is newer than anything the bucket holds: it wins.
func (s *Server) applyRetained(key string, val []byte) {
	if s.persist.pending(bucketRetained, key) {
		return
	}
	vhost, topic, ok := strings.Cut(key, "\x00")
	if !ok {
		return
	}
	if val == nil {
		s.retained.retain(vhost, packets.Packet{TopicName: topic})
		return
	}
	var r retainedRec
	if err := json.Unmarshal(val, &r); err != nil {
		s.log.Warn("unreadable retained message from the cluster", "topic", topic, "err", err)
		return
	}
	pk := r.packet()
	if pk.Expiry > 0 && pk.Expiry < time.Now().Unix() {
		return
	}
	s.retained.retain(vhost, pk)
}

// claimSession claims session key in the cluster for c, before its
// session is attached (the key is locked). A session another node held is
// read from the cluster, so that CONNACK says it is present and its
// subscriptions resume here. It returns the claim's token (0 if the claim
// failed: the connection goes on with this node's view).
func (s *Server) claimSession(c *conn, key string) uint64 {
	token, moved, err := s.opts.Cluster.Claim(key)
	if err != nil {
		s.log.Warn("mqtt session not claimed in the cluster; going on with this node's view", "client", c.clientID, "err", err)
		return 0
	}
	if moved {
		// What this node may have kept of the session is older than what
		// the node that just let it go wrote.
		s.handOffLocked(key)
	}
	s.sessMu.Lock()
	_, here := s.sessions[key]
	s.sessMu.Unlock()
	if !here {
		s.adoptSession(key)
	}
	return token
}

// adoptOrphan takes over a session whose holder, node, has been down for
// a while, as if its client had just gone away from this node: its
// expiry interval runs from now, and its delayed will, if it has one,
// goes out at its time (at once if that has passed).
func (s *Server) adoptOrphan(key, node string) {
	unlock := s.keys.lock(key)
	defer unlock()
	if s.isClosing() {
		return
	}
	token, ok := s.opts.Cluster.ClaimOrphan(key, node)
	if !ok {
		return
	}
	s.handOffLocked(key) // what this node may have kept of it is older
	ss, rec := s.adoptSession(key)
	if ss == nil {
		// No record (the session ended): nothing to hold.
		s.opts.Cluster.Release(key, token)
		return
	}
	ss.mu.Lock()
	ss.claim = token
	ss.mu.Unlock()
	if w := rec.Will; w != nil {
		in := &inbound{topic: w.Topic, payload: w.Payload, qos: w.QoS, retain: w.Retain, props: w.Props}
		ss.scheduleWill(in, core.Origin{Protocol: core.ProtoMQTT, VHost: ss.vhost.Name(), User: w.User}, time.Until(time.UnixMilli(w.Due)))
	}
	s.log.Info("adopted the mqtt session of a node that is down", "client", ss.clientID, "node", node)
}

// adoptSession makes a persistent session recorded in the cluster this
// node's: its subscriptions, and an offline mochi client so that the
// connection taking it finds it present. It returns the session and its
// record (nil when there is none).
func (s *Server) adoptSession(key string) (*session, sessionRec) {
	val, err := s.opts.Cluster.GetRecord(bucketSessions, key)
	if err != nil {
		s.log.Warn("mqtt session not read from the cluster", "key", key, "err", err)
		return nil, sessionRec{}
	}
	if val == nil {
		return nil, sessionRec{}
	}
	var rec sessionRec
	if err := json.Unmarshal(val, &rec); err != nil {
		s.log.Warn("unreadable mqtt session record in the cluster", "key", key, "err", err)
		return nil, sessionRec{}
	}
	ss, sc := s.sessionFromRecord(rec, nil)
	if ss == nil {
		return nil, sessionRec{}
	}
	s.sessMu.Lock()
	s.sessions[key] = ss
	s.sessMu.Unlock()
	cl := s.mochi.NewClient(nil, sc.Listener, sc.ID, false)
	cl.Properties.Username = sc.Username
	cl.Properties.Clean = sc.Clean
	cl.Properties.ProtocolVersion = sc.ProtocolVersion
	cl.Properties.Props.SessionExpiryInterval = sc.Properties.SessionExpiryInterval
	cl.Properties.Props.SessionExpiryIntervalFlag = sc.Properties.SessionExpiryIntervalFlag
	cl.Stop(packets.ErrServerShuttingDown)
	s.mochi.Clients.Add(cl)
	return ss, rec
}

// handOff lets a session go to another node that claimed it.
func (s *Server) handOff(key string) {
	unlock := s.keys.lock(key)
	defer unlock()
	s.handOffLocked(key)
}

// handOffLocked closes the session's connection here (MQTT 5: DISCONNECT
// 0x8E), waits until its deliveries are given back, and forgets the
// session without deleting its queues or its record, which the new holder
// uses.
func (s *Server) handOffLocked(key string) {
	s.sessMu.Lock()
	ss := s.sessions[key]
	s.sessMu.Unlock()
	if ss != nil {
		ss.mu.Lock()
		ss.moved = true
		owner := ss.owner
		ss.mu.Unlock()
		if owner != nil {
			owner.kill(packets.ErrSessionTakenOver)
			select {
			case <-owner.closed:
			case <-time.After(s.opts.CloseTimeout + 5*time.Second):
				s.log.Warn("connection of a session taken over did not close in time", "conn", owner.id, "client", ss.clientID)
			}
		}
		ss.forget()
		s.log.Info("mqtt session taken over by another node", "client", ss.clientID)
	}
	if cl, ok := s.mochi.Clients.Get(key); ok && cl.Closed() {
		s.mochi.UnsubscribeClient(cl)
		s.mochi.Clients.Delete(key)
	}
	s.persist.flush()
}

// forget drops a session that moved to another node: its consumers stop
// and it leaves the server, but its queues and record stay.
func (ss *session) forget() {
	ss.mu.Lock()
	prev := ss.owner
	ss.owner = nil
	ss.stopConsumersLocked()
	ss.cancelWillLocked()
	subs := ss.subs
	ss.subs = map[string]*subscription{}
	ss.gone = true
	ss.mu.Unlock()
	if prev != nil {
		prev.detachDeliveries()
	}
	ss.s.sharedMu.Lock()
	for _, sub := range subs {
		if sub.group != "" {
			k := ss.vhost.Name() + "\x00" + sub.queue
			if n := ss.s.sharedRefs[k] - 1; n > 0 {
				ss.s.sharedRefs[k] = n
			} else {
				delete(ss.s.sharedRefs, k)
			}
		}
	}
	ss.s.sharedMu.Unlock()
	ss.s.sessMu.Lock()
	if ss.s.sessions[ss.key] == ss {
		delete(ss.s.sessions, ss.key)
	}
	ss.s.sessMu.Unlock()
}
