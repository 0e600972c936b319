// Package meta is Bourse's crash-safe metadata store: vhosts, exchanges,
// queues and bindings, in one embedded bbolt database.
//
// bbolt was chosen because it is a single file with ACID transactions that
// fsync on commit (so a declare-ok is only sent once the declaration is on
// disk), it needs no background compaction or external process, and
// topology writes are rare and small, which suits a B+tree with one writer.
// Values are JSON; argument tables use core's typed encoding so that every
// AMQP field type survives a restart exactly.
package meta

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/bourse-mq/bourse/core"
)

var (
	bucketVHosts    = []byte("vhosts")
	bucketExchanges = []byte("exchanges")
	bucketQueues    = []byte("queues")
	bucketBindings  = []byte("bindings")
	bucketKV        = []byte("kv")
)

// Store is the metadata store. It implements router.MetaStore.
type Store struct {
	db *bolt.DB
}

// Open opens (creating if needed) the metadata database in dir.
func Open(dir string) (*Store, error) {
	path := filepath.Join(dir, "meta.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open metadata store %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketVHosts, bucketExchanges, bucketQueues, bucketBindings, bucketKV} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("initialise metadata store %s: %w", path, err)
	}
	return &Store{db: db}, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// key joins parts with NUL, which no entity name contains (names are
// validated UTF-8 but NUL is legal UTF-8, so names are length-prefixed).
func key(parts ...string) []byte {
	var b []byte
	for _, p := range parts {
		b = strconv.AppendInt(b, int64(len(p)), 10)
		b = append(b, ':')
		b = append(b, p...)
	}
	return b
}

func encTable(t core.Table) (string, error) {
	if len(t) == 0 {
		return "", nil
	}
	return core.EncodeTyped(t)
}

func decTable(s string) (core.Table, error) {
	if s == "" {
		return nil, nil
	}
	return core.DecodeTyped(s)
}

type exchangeRec struct {
	VHost      string `json:"vhost"`
	Name       string `json:"name"`
	Type       string `json:"type"`
	Durable    bool   `json:"durable"`
	AutoDelete bool   `json:"auto_delete"`
	Internal   bool   `json:"internal"`
	Args       string `json:"args,omitempty"`
}

type queueRec struct {
	VHost      string `json:"vhost"`
	Name       string `json:"name"`
	Durable    bool   `json:"durable"`
	AutoDelete bool   `json:"auto_delete"`
	Args       string `json:"args,omitempty"`
}

type bindingRec struct {
	VHost    string `json:"vhost"`
	Source   string `json:"source"`
	DestKind uint8  `json:"dest_kind"`
	Dest     string `json:"dest"`
	Key      string `json:"key"`
	Args     string `json:"args,omitempty"`
}

func (s *Store) put(bucket, k []byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucket).Put(k, b) })
}

func (s *Store) del(bucket, k []byte) error {
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucket).Delete(k) })
}

// PutVHost records a vhost.
func (s *Store) PutVHost(name string) error {
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketVHosts).Put(key(name), []byte(name)) })
}

// DeleteVHost removes a vhost and everything recorded in it.
func (s *Store) DeleteVHost(name string) error {
	prefix := key(name)
	return s.db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketVHosts).Delete(prefix); err != nil {
			return err
		}
		for _, bn := range [][]byte{bucketExchanges, bucketQueues, bucketBindings} {
			c := tx.Bucket(bn).Cursor()
			for k, _ := c.Seek(prefix); k != nil && hasPrefix(k, prefix); k, _ = c.Next() {
				if err := c.Delete(); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

func hasPrefix(b, p []byte) bool { return len(b) >= len(p) && string(b[:len(p)]) == string(p) }

// PutExchange records a durable exchange.
func (s *Store) PutExchange(vhost string, e core.ExchangeInfo) error {
	args, err := encTable(e.Args)
	if err != nil {
		return fmt.Errorf("exchange %q arguments: %w", e.Name, err)
	}
	return s.put(bucketExchanges, key(vhost, e.Name), exchangeRec{vhost, e.Name, e.Type, e.Durable, e.AutoDelete, e.Internal, args})
}

// DeleteExchange removes an exchange.
func (s *Store) DeleteExchange(vhost, name string) error {
	return s.del(bucketExchanges, key(vhost, name))
}

// PutQueue records a durable queue.
func (s *Store) PutQueue(vhost string, q core.QueueInfo) error {
	args, err := encTable(q.Args)
	if err != nil {
		return fmt.Errorf("queue %q arguments: %w", q.Name, err)
	}
	return s.put(bucketQueues, key(vhost, q.Name), queueRec{vhost, q.Name, q.Durable, q.AutoDelete, args})
}

// DeleteQueue removes a queue.
func (s *Store) DeleteQueue(vhost, name string) error {
	return s.del(bucketQueues, key(vhost, name))
}

func bindingKey(vhost string, b core.Binding) ([]byte, string, error) {
	args, err := encTable(b.Args)
	if err != nil {
		return nil, "", fmt.Errorf("binding arguments: %w", err)
	}
	return key(vhost, b.Source, b.Dest.Kind.String(), b.Dest.Name, b.Key, args), args, nil
}

// PutBinding records a durable binding.
func (s *Store) PutBinding(vhost string, b core.Binding) error {
	k, args, err := bindingKey(vhost, b)
	if err != nil {
		return err
	}
	return s.put(bucketBindings, k, bindingRec{vhost, b.Source, uint8(b.Dest.Kind), b.Dest.Name, b.Key, args})
}

// DeleteBinding removes a binding.
func (s *Store) DeleteBinding(vhost string, b core.Binding) error {
	k, _, err := bindingKey(vhost, b)
	if err != nil {
		return err
	}
	return s.del(bucketBindings, k)
}

// PutKV stores a small opaque value (stream offsets, retained messages…).
func (s *Store) PutKV(k string, v []byte) error {
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketKV).Put([]byte(k), v) })
}

// GetKV returns a value stored with PutKV, or nil.
func (s *Store) GetKV(k string) ([]byte, error) {
	var out []byte
	err := s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketKV).Get([]byte(k)); v != nil {
			out = append([]byte(nil), v...)
		}
		return nil
	})
	return out, err
}

// UpdateRecords writes a batch to a named bucket of records (created on
// first use; the name is prefixed "rec:" so it cannot collide with the
// topology buckets) in one transaction: puts, then deletes.
func (s *Store) UpdateRecords(bucket string, puts map[string][]byte, deletes []string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte("rec:" + bucket))
		if err != nil {
			return err
		}
		for k, v := range puts {
			if err := b.Put([]byte(k), v); err != nil {
				return err
			}
		}
		for _, k := range deletes {
			if err := b.Delete([]byte(k)); err != nil {
				return err
			}
		}
		return nil
	})
}

// ForEachRecord calls fn for every record of a named bucket, in key order.
func (s *Store) ForEachRecord(bucket string, fn func(key string, val []byte) error) error {
	return s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("rec:" + bucket))
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error { return fn(string(k), append([]byte(nil), v...)) })
	})
}

// Load returns everything recorded, for the router to restore at start.
func (s *Store) Load() (core.Definitions, error) {
	var d core.Definitions
	err := s.db.View(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketVHosts).ForEach(func(_, v []byte) error {
			d.VHosts = append(d.VHosts, string(v))
			return nil
		}); err != nil {
			return err
		}
		if err := tx.Bucket(bucketExchanges).ForEach(func(_, v []byte) error {
			var r exchangeRec
			if err := json.Unmarshal(v, &r); err != nil {
				return err
			}
			args, err := decTable(r.Args)
			if err != nil {
				return err
			}
			d.Exchanges = append(d.Exchanges, core.VHostExchange{VHost: r.VHost, ExchangeInfo: core.ExchangeInfo{
				Name: r.Name, Type: r.Type, Durable: r.Durable, AutoDelete: r.AutoDelete, Internal: r.Internal, Args: args}})
			return nil
		}); err != nil {
			return err
		}
		if err := tx.Bucket(bucketQueues).ForEach(func(_, v []byte) error {
			var r queueRec
			if err := json.Unmarshal(v, &r); err != nil {
				return err
			}
			args, err := decTable(r.Args)
			if err != nil {
				return err
			}
			d.Queues = append(d.Queues, core.VHostQueue{VHost: r.VHost, QueueInfo: core.QueueInfo{
				Name: r.Name, Durable: r.Durable, AutoDelete: r.AutoDelete, Args: args}})
			return nil
		}); err != nil {
			return err
		}
		return tx.Bucket(bucketBindings).ForEach(func(_, v []byte) error {
			var r bindingRec
			if err := json.Unmarshal(v, &r); err != nil {
				return err
			}
			args, err := decTable(r.Args)
			if err != nil {
				return err
			}
			d.Bindings = append(d.Bindings, core.VHostBinding{VHost: r.VHost, Binding: core.Binding{
				Source: r.Source, Dest: core.Dest{Kind: core.DestKind(r.DestKind), Name: r.Dest}, Key: r.Key, Args: args}})
			return nil
		})
	})
	if err != nil {
		return d, fmt.Errorf("load metadata: %w", err)
	}
	return d, nil
}
