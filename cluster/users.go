package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// UsersBucket is the KV bucket of users, permissions and topic
// permissions, shared by every node.
const UsersBucket = "bourse_users"

// RecordApplier takes the changes other nodes make to the shared records
// (auth.Store.ApplyRecord).
type RecordApplier interface {
	ApplyRecord(bucket, key string, val []byte) error
}

// Users keeps the user store's records (auth.Persister: users, permissions
// and topic permissions) in the KV bucket UsersBucket, one key per record
// ("<record bucket>.<token of the record key>"), and applies every node's
// changes to this node's store (Watch). A user added, changed or deleted on
// any node can log in, or no longer, on every node; permission changes
// reach open connections there as they do locally (at their next check).
//
// Writes go straight to the bucket while the store holds its own lock, and
// the watcher applies every change in the bucket's order, this node's too
// (applying a record twice changes nothing), so every node ends with the
// bucket's last word on each record. Two nodes changing the same record at
// once: the later write wins everywhere.
type Users struct {
	kv      jetstream.KeyValue
	timeout time.Duration
	log     *slog.Logger

	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}
}

func openUsers(ctx context.Context, js jetstream.JetStream, replicas int, timeout time.Duration, log *slog.Logger) (*Users, error) {
	kv, err := openKV(ctx, js, jetstream.KeyValueConfig{
		Bucket:      UsersBucket,
		Description: "Bourse users, permissions and topic permissions",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	}, log)
	if err != nil {
		return nil, err
	}
	return &Users{kv: kv, timeout: timeout, log: log}, nil
}

func userKey(bucket, key string) string { return bucket + "." + tok(key) }

func userKeyNames(k string) (bucket, key string, err error) {
	bucket, t, ok := strings.Cut(k, ".")
	if !ok {
		return "", "", fmt.Errorf("malformed key %q", k)
	}
	key, err = untok(t)
	return bucket, key, err
}

// UpdateRecords writes records of one bucket (auth.Persister).
func (u *Users) UpdateRecords(bucket string, puts map[string][]byte, deletes []string) error {
	ctx, cancel := context.WithTimeout(context.Background(), u.timeout)
	defer cancel()
	for k, v := range puts {
		if _, err := u.kv.Put(ctx, userKey(bucket, k), v); err != nil {
			return fmt.Errorf("cluster: write %s record: %w", bucket, err)
		}
	}
	for _, k := range deletes {
		if err := u.kv.Delete(ctx, userKey(bucket, k)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("cluster: delete %s record: %w", bucket, err)
		}
	}
	return nil
}

// ForEachRecord calls fn with every record of one bucket (auth.Persister).
// One watcher brings the keys with their values (no read per key).
func (u *Users) ForEachRecord(bucket string, fn func(key string, val []byte) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), u.timeout)
	defer cancel()
	w, err := u.kv.WatchFiltered(ctx, []string{bucket + ".>"}, jetstream.IgnoreDeletes())
	if err != nil {
		return fmt.Errorf("cluster: read %s records: %w", bucket, err)
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster: read %s records: %w", bucket, ctx.Err())
		case e := <-w.Updates():
			if e == nil {
				return nil // every record read
			}
			_, key, err := userKeyNames(e.Key())
			if err != nil {
				return fmt.Errorf("cluster: %s record: %w", bucket, err)
			}
			if err := fn(key, e.Value()); err != nil {
				return err
			}
		}
	}
}

// Watch applies every record in the bucket to s, then every change, until
// Close. It returns once the records recorded so far have been applied.
func (u *Users) Watch(ctx context.Context, s RecordApplier) error {
	base, cancel := context.WithCancel(context.Background())
	w, err := u.kv.WatchAll(base)
	if err != nil {
		cancel()
		return fmt.Errorf("cluster: watch %s: %w", UsersBucket, err)
	}
	ready := make(chan struct{})
	done := make(chan struct{})
	u.mu.Lock()
	u.cancel, u.done = cancel, done
	u.mu.Unlock()
	go func() {
		defer close(done)
		defer func() { _ = w.Stop() }()
		initial := true
		for {
			select {
			case <-base.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					if base.Err() == nil {
						u.log.Error("users watcher closed")
					}
					return
				}
				if e == nil {
					if initial {
						initial = false
						close(ready)
					}
					continue
				}
				u.apply(s, e)
			}
		}
	}()
	select {
	case <-ready:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("cluster: users not replayed: %w", ctx.Err())
	}
}

func (u *Users) apply(s RecordApplier, e jetstream.KeyValueEntry) {
	bucket, key, err := userKeyNames(e.Key())
	if err != nil {
		u.log.Error("users bucket: skipping a record", "key", e.Key(), "err", err)
		return
	}
	var val []byte
	if e.Operation() == jetstream.KeyValuePut {
		val = e.Value()
	}
	if err := s.ApplyRecord(bucket, key, val); err != nil {
		u.log.Error("users bucket: cannot apply a record", "bucket", bucket, "key", key, "err", err)
	}
}

// Close stops the watcher.
func (u *Users) Close() {
	u.mu.Lock()
	cancel, done := u.cancel, u.done
	u.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}
