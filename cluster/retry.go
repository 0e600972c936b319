package cluster

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// transient reports whether a JetStream error may go away by itself within
// seconds: no leader (503, "JetStream system temporarily unavailable": an
// election, a node that just rejoined after a partition), not enough
// peers online to place a new stream (10005: the meta leader has not yet
// seen a healed node come back), nobody answering the request yet, a
// request timed out.
func transient(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.Code == 503 || apiErr.ErrorCode == errCodeNoPeers
	}
	return errors.Is(err, nats.ErrNoResponders) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, jetstream.ErrJetStreamNotEnabled)
}

// errCodeNoPeers is JetStream's "no suitable peers for placement".
const errCodeNoPeers = 10005

// retryTransient calls f until it succeeds, fails for a reason that will
// not go away, or ctx ends: then the error says that JetStream was not
// reachable from this node (a minority side of a partition stays there).
func retryTransient(ctx context.Context, f func(ctx context.Context) error) error {
	start := time.Now()
	unavailable := func(err error) error {
		return fmt.Errorf("JetStream unavailable from this node for %v (cut off from the majority, or no quorum): %w",
			time.Since(start).Round(time.Millisecond), err)
	}
	for pause := 50 * time.Millisecond; ; pause = min(2*pause, time.Second) {
		err := f(ctx)
		switch {
		case err == nil:
			return nil
		case ctx.Err() != nil:
			return unavailable(err)
		case !transient(err):
			return err
		}
		select {
		case <-ctx.Done():
			return unavailable(err)
		case <-time.After(pause):
		}
	}
}
