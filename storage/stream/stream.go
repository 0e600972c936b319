// Package stream keeps Bourse's streams on disk: one segment log per
// stream under <data>/streams/<vhost>/<name>/ (names escaped), opened and
// deleted for the router, and looked up by the HTTP fetch endpoint, which
// serves byte ranges of whole records with sendfile.
package stream

import (
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/bourse-mq/bourse/storage/internal/segment"
)

// Log is one stream's log.
type Log = segment.Log

// Range is a byte range of whole records in one segment file.
type Range = segment.Range

// ErrOutOfRange is returned by Log.ReadRange for an offset below retention.
var ErrOutOfRange = segment.ErrOutOfRange

// Options configure the store.
type Options struct {
	Fsync    string        // always (default), interval, never
	Interval time.Duration // for interval
	Logger   *slog.Logger
	OnFsync  func(time.Duration) // told how long each fsync took
}

// Store is the set of stream logs under one directory.
type Store struct {
	dir  string
	opts Options

	mu   sync.Mutex
	logs map[[2]string]*segment.Log
}

// Open opens the stream store rooted at dir.
func Open(dir string, opts Options) (*Store, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("stream: create %s: %w", dir, err)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Store{dir: dir, opts: opts, logs: map[[2]string]*segment.Log{}}, nil
}

// escape makes a vhost or stream name one safe path element.
func escape(s string) string {
	e := url.PathEscape(s)
	if e == "." || e == ".." || e == "" {
		e = "%" + fmt.Sprintf("%x", s) + "_"
	}
	return e
}

func (s *Store) path(vhost, name string) string {
	return filepath.Join(s.dir, escape(vhost), escape(name))
}

// Config is one stream's retention and segment size.
type Config struct {
	MaxBytes     int64         // 0 = no limit
	MaxAge       time.Duration // 0 = no limit
	SegmentBytes int64         // 0 = default (64 MiB)
}

// OpenStream opens (creating if needed) a stream's log; an open log is
// returned as it is.
func (s *Store) OpenStream(vhost, name string, cfg Config) (*Log, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := [2]string{vhost, name}
	if l := s.logs[k]; l != nil {
		return l, nil
	}
	l, err := segment.Open(s.path(vhost, name), segment.Options{
		SegmentBytes: cfg.SegmentBytes,
		MaxBytes:     cfg.MaxBytes,
		MaxAge:       cfg.MaxAge,
		Fsync:        s.opts.Fsync,
		Interval:     s.opts.Interval,
		Logger:       s.opts.Logger.With("vhost", vhost, "stream", name),
		OnFsync:      s.opts.OnFsync,
	})
	if err != nil {
		return nil, err
	}
	s.logs[k] = l
	return l, nil
}

// DeleteStream closes a stream's log and removes its files.
func (s *Store) DeleteStream(vhost, name string) error {
	s.mu.Lock()
	k := [2]string{vhost, name}
	l := s.logs[k]
	delete(s.logs, k)
	s.mu.Unlock()
	if l != nil {
		return l.Delete()
	}
	if err := os.RemoveAll(s.path(vhost, name)); err != nil {
		return fmt.Errorf("stream: remove %s: %w", s.path(vhost, name), err)
	}
	return nil
}

// Lookup returns an open stream's log, or nil.
func (s *Store) Lookup(vhost, name string) *Log {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.logs[[2]string{vhost, name}]
}

// Close closes every log (pending appends are written first).
func (s *Store) Close() error {
	s.mu.Lock()
	logs := s.logs
	s.logs = map[[2]string]*segment.Log{}
	s.mu.Unlock()
	for _, l := range logs {
		l.Close()
	}
	return nil
}
