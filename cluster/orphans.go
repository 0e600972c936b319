package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Orphaned MQTT sessions. The node holding a persistent session expires
// it when its expiry interval has passed with the client away, and
// publishes its delayed will at its time; a node that dies (and does not
// come back) does neither. So every node sweeps the owners bucket every
// quarter of MQTTOrphanAfter (at most every 30 s): a holder that does not
// answer on its liveness subject (aliveSubject, answered by every running
// node; no responders: its NATS connection is gone) for MQTTOrphanAfter
// in a row has its sessions adopted by the live nodes, one each: a
// compare-and-set of the owner key against the dead node's entry
// (ClaimOrphan), so that two sweeping nodes never both take one. The
// adapter then holds the session as if its client had just gone away
// here: the expiry interval runs from the adoption, and a delayed will
// goes out at its time (at once if that has passed). A holder that only
// answers slowly counts as alive; one cut off from the majority looks
// down to it, and keeps the connections it has (as with any takeover it
// cannot be told of).

// OnOrphans sets what runs for each session whose holder has been down
// for MQTTOrphanAfter (key, and the node that held it), and starts the
// sweep. It may be called once.
func (m *MQTT) OnOrphans(fn func(key, node string)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.orphans != nil || m.closed {
		return
	}
	m.orphans = fn
	m.wg.Add(1)
	go m.sweepOrphans()
}

func (m *MQTT) sweepOrphans() {
	defer m.wg.Done()
	every := min(max(m.orphanAfter/4, 100*time.Millisecond), 30*time.Second)
	tick := time.NewTicker(every)
	defer tick.Stop()
	downSince := map[string]time.Time{}
	for {
		select {
		case <-m.base.Done():
			return
		case <-tick.C:
		}
		held, err := m.holders(m.base)
		if err != nil {
			if m.base.Err() == nil {
				m.log.Debug("mqtt session owners not read for the orphan sweep", "err", err)
			}
			continue
		}
		now := time.Now()
		for node := range downSince {
			if _, ok := held[node]; !ok {
				delete(downSince, node) // holds nothing any more
			}
		}
		for node, keys := range held {
			if node == m.node {
				continue
			}
			if m.alive(node) {
				delete(downSince, node)
				continue
			}
			since, ok := downSince[node]
			if !ok {
				downSince[node] = now
				continue
			}
			if now.Sub(since) < m.orphanAfter {
				continue
			}
			m.log.Info("adopting the MQTT sessions of a node that is down", "node", node, "down_for", now.Sub(since).Round(time.Second), "sessions", len(keys))
			// In another order on each node, so that sweeping nodes
			// share the work rather than race for each key.
			rand.Shuffle(len(keys), func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
			for _, key := range keys {
				if m.base.Err() != nil {
					return
				}
				m.orphans(key, node)
			}
		}
	}
}

// holders reads the owners bucket: the session keys each node holds.
func (m *MQTT) holders(ctx context.Context) (map[string][]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 4*m.timeout)
	defer cancel()
	w, err := m.owners.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, err
	}
	defer func() { _ = w.Stop() }()
	held := map[string][]string{}
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case e := <-w.Updates():
			if e == nil {
				return held, nil // all current entries seen
			}
			var o ownerRec
			key, err := untok(e.Key())
			if err != nil || json.Unmarshal(e.Value(), &o) != nil || o.Node == "" {
				continue
			}
			held[o.Node] = append(held[o.Node], key)
		}
	}
}

// alive reports whether node answers on its liveness subject; only "no
// responders" (no such subscription in the cluster) counts as down.
func (m *MQTT) alive(node string) bool {
	_, err := m.nc.Request(aliveSubject+tok(node), nil, 2*time.Second)
	return !errors.Is(err, nats.ErrNoResponders)
}

// ClaimOrphan makes this node the holder of session key if node still
// holds it (compare-and-set on its owner entry) and returns the claim's
// token; ok is false when another node has it now, or the claim failed.
func (m *MQTT) ClaimOrphan(key, node string) (token uint64, ok bool) {
	ctx, cancel := m.opCtx()
	defer cancel()
	k := tok(key)
	v, rev, err := m.leaderGet(ctx, OwnersBucket, k)
	var o ownerRec
	if err != nil || json.Unmarshal(v, &o) != nil || o.Node != node {
		return 0, false
	}
	val, err := json.Marshal(ownerRec{Node: m.node})
	if err != nil {
		return 0, false
	}
	c := &claim{settled: make(chan struct{})}
	m.mu.Lock()
	m.claims[key] = c
	m.mu.Unlock()
	nrev, err := m.owners.Update(ctx, k, val, rev)
	m.mu.Lock()
	if err != nil {
		if m.claims[key] == c {
			delete(m.claims, key)
		}
	} else {
		c.rev = nrev
	}
	m.mu.Unlock()
	close(c.settled)
	if err != nil {
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			m.log.Debug("orphaned mqtt session not claimed", "err", err)
		}
		return 0, false
	}
	return nrev, true
}
