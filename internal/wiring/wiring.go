// Package wiring connects concrete storage to the router's interfaces. Only
// cmd/bourse and tests use it; the router and the adapters never import
// storage.
package wiring

import (
	"github.com/bourse-mq/bourse/router"
	"github.com/bourse-mq/bourse/router/queue"
	"github.com/bourse-mq/bourse/storage/stream"
)

// StreamStore adapts storage's stream store to router.StreamStore.
func StreamStore(s *stream.Store) router.StreamStore { return streamStore{s} }

type streamStore struct{ s *stream.Store }

func (s streamStore) OpenStream(vhost, name string, c queue.StreamConfig) (queue.Log, error) {
	return s.s.OpenStream(vhost, name, stream.Config{MaxBytes: c.MaxBytes, MaxAge: c.MaxAge, SegmentBytes: c.SegmentBytes})
}

func (s streamStore) DeleteStream(vhost, name string) error { return s.s.DeleteStream(vhost, name) }
