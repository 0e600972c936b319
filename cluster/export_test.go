package cluster

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Crash shuts the node's embedded nats-server down at once, as a dying
// process would for its peers: nothing this node holds is given back, no
// ack in flight is flushed. Close still has to be called.
func (n *Node) Crash() {
	n.srv.Shutdown()
	n.srv.WaitForShutdown()
}

// ServerName is the embedded nats-server's name (JetStream's leader names).
func (n *Node) ServerName() string { return n.srv.Name() }

// SettlesInFlight is how many acks and terms wait for JetStream's answer.
func (n *Node) SettlesInFlight() int { return n.queues.settle.inFlight() }

// UsePlainAcks makes the node send acks without waiting for answers, as
// before they were confirmed; call it before the node is used.
func (n *Node) UsePlainAcks() { n.queues.plainAcks = true }

// LoseSettles makes the node's acks and terms, and their retries, go where
// nothing answers (as to a consumer leader that is gone) while on is true.
func (n *Node) LoseSettles(on bool) { n.queues.settle.lose.Store(on) }

// QueueStreamConfig is the configuration of a shared queue's stream.
func (n *Node) QueueStreamConfig(ctx context.Context, vhost, name string) (jetstream.StreamConfig, error) {
	st, err := n.queues.js.Stream(ctx, QueueStream(vhost, name))
	if err != nil {
		return jetstream.StreamConfig{}, err
	}
	return st.CachedInfo().Config, nil
}

// MakeLegacyQueueStream replaces a shared queue's stream (and its
// consumer) by one as versions before JetStream expiry made it: no MaxAge,
// no per-message TTLs.
func (n *Node) MakeLegacyQueueStream(ctx context.Context, vhost, name string) error {
	s := n.queues
	stream := QueueStream(vhost, name)
	if err := s.js.DeleteStream(ctx, stream); err != nil {
		return err
	}
	_, err := s.js.CreateStream(ctx, jetstream.StreamConfig{Name: stream, Subjects: []string{QueueSubject(vhost, name)},
		Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage, Replicas: s.replicas, Duplicates: 2 * time.Minute})
	if err != nil {
		return err
	}
	_, err = s.js.CreateOrUpdateConsumer(ctx, stream, s.consumerConfig())
	return err
}

// Reaping reports whether the node holds the reaper's lease (reap.go).
func (n *Node) Reaping() bool { return n.queues.reaping.Load() }
