package cluster

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// TestRetryTransient: an election (503) and a placement that finds too
// few peers online (10005, seen on a node just healed from a partition)
// are retried; other API errors are final at once.
func TestRetryTransient(t *testing.T) {
	for _, tc := range []struct {
		err   *jetstream.APIError
		retry bool
	}{
		{&jetstream.APIError{Code: 503, Description: "JetStream system temporarily unavailable"}, true},
		{&jetstream.APIError{Code: 400, ErrorCode: 10005, Description: "no suitable peers for placement, peer offline"}, true},
		{&jetstream.APIError{Code: 400, ErrorCode: 10058, Description: "stream name already in use with a different configuration"}, false},
	} {
		calls := 0
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := retryTransient(ctx, func(context.Context) error {
			if calls++; calls < 3 {
				return tc.err
			}
			return nil
		})
		cancel()
		if tc.retry && (err != nil || calls != 3) {
			t.Errorf("%v: %d calls, %v; want retried until it succeeds", tc.err, calls, err)
		}
		if !tc.retry && (!errors.Is(err, tc.err) || calls != 1) {
			t.Errorf("%v: %d calls, %v; want it returned at once", tc.err, calls, err)
		}
	}
}
