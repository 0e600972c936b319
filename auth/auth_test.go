package auth

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/bourse-mq/bourse/core"
	"golang.org/x/crypto/bcrypt"
)

// memPersister is a Persister in memory, so tests can reopen a Store.
type memPersister struct {
	mu sync.Mutex
	b  map[string]map[string][]byte
}

func (m *memPersister) UpdateRecords(bucket string, puts map[string][]byte, dels []string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.b == nil {
		m.b = map[string]map[string][]byte{}
	}
	if m.b[bucket] == nil {
		m.b[bucket] = map[string][]byte{}
	}
	for k, v := range puts {
		m.b[bucket][k] = v
	}
	for _, k := range dels {
		delete(m.b[bucket], k)
	}
	return nil
}

func (m *memPersister) ForEachRecord(bucket string, fn func(string, []byte) error) error {
	m.mu.Lock()
	keys := []string{}
	for k := range m.b[bucket] {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	vals := [][]byte{}
	for _, k := range keys {
		vals = append(vals, m.b[bucket][k])
	}
	m.mu.Unlock()
	for i, k := range keys {
		if err := fn(k, vals[i]); err != nil {
			return err
		}
	}
	return nil
}

const local = Addr("127.0.0.1:5000")
const remote = Addr("192.0.2.7:5000")

func mustOpen(t *testing.T, p Persister, o Options) *Store {
	t.Helper()
	s, err := Open(p, o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestLoginHashesAndReload(t *testing.T) {
	p := &memPersister{}
	s := mustOpen(t, p, Options{})
	if err := s.PutUser("alice", "s3cret", []string{"management"}); err != nil {
		t.Fatal(err)
	}
	u, _ := s.User("alice")
	if !strings.HasPrefix(u.PasswordHash, "$argon2id$v=19$") || strings.Contains(u.PasswordHash, "s3cret") {
		t.Fatalf("stored hash %q", u.PasswordHash)
	}
	pr, err := s.Login("alice", "s3cret", remote)
	if err != nil {
		t.Fatal(err)
	}
	if !pr.HasTag("management") || pr.HasTag("administrator") {
		t.Fatalf("tags %v", pr.Tags)
	}
	pr.Close()
	if _, err := s.Login("alice", "wrong", remote); !errors.Is(err, core.ErrAccessRefused) {
		t.Fatalf("wrong password: %v", err)
	}
	// A second login hits the cache; a changed password must not.
	if _, err := s.Login("alice", "s3cret", remote); err != nil {
		t.Fatal(err)
	}
	if err := s.PutUser("alice", "new", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Login("alice", "s3cret", remote); err == nil {
		t.Fatal("old password still accepted after passwd")
	}
	// Everything survives a reopen.
	s2 := mustOpen(t, p, Options{})
	if _, err := s2.Login("alice", "new", remote); err != nil {
		t.Fatal(err)
	}
	if err := s2.DeleteUser("alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := mustOpen(t, p, Options{}).Login("alice", "new", remote); err == nil {
		t.Fatal("deleted user logs in after reopen")
	}
}

func TestImportedHashes(t *testing.T) {
	s := mustOpen(t, nil, Options{})
	salt := []byte{1, 2, 3, 4}
	sum := sha256.Sum256(append(append([]byte{}, salt...), "rabbitpw"...))
	rabbit := base64.StdEncoding.EncodeToString(append(salt, sum[:]...))
	bc, _ := bcrypt.GenerateFromPassword([]byte("bcryptpw"), 4)
	for _, u := range []User{
		{Name: "r", PasswordHash: rabbit, Algorithm: AlgoRabbitSHA2},
		{Name: "r2", PasswordHash: rabbit}, // RabbitMQ's default algorithm
		{Name: "b", PasswordHash: string(bc), Algorithm: AlgoBcrypt},
	} {
		if err := s.PutUserHash(u); err != nil {
			t.Fatal(err)
		}
	}
	for user, pass := range map[string]string{"r": "rabbitpw", "r2": "rabbitpw", "b": "bcryptpw"} {
		if _, err := s.Login(user, pass, remote); err != nil {
			t.Errorf("%s: %v", user, err)
		}
		if _, err := s.Login(user, pass+"x", remote); err == nil {
			t.Errorf("%s: wrong password accepted", user)
		}
	}
	for _, bad := range []User{
		{Name: "x", PasswordHash: "bm90IGEgaGFzaA==", Algorithm: AlgoRabbitSHA2},
		{Name: "x", PasswordHash: "$argon2id$v=19$m=99999999,t=1,p=1$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5a2V5", Algorithm: AlgoArgon2id},
		{Name: "x", PasswordHash: "abc", Algorithm: "rot13"},
	} {
		if err := s.PutUserHash(bad); !errors.Is(err, core.ErrInvalidArgument) {
			t.Errorf("bad hash %+v accepted: %v", bad, err)
		}
	}
}

func TestPasswordlessUserOnlyExternal(t *testing.T) {
	s := mustOpen(t, nil, Options{})
	if err := s.PutUser("device-7", "", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Login("device-7", "", remote); err == nil {
		t.Fatal("empty password logged in")
	}
	if _, err := s.LoginExternal("device-7", remote); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LoginExternal("nobody", remote); !errors.Is(err, core.ErrAccessRefused) {
		t.Fatalf("unknown certificate user: %v", err)
	}
}

func TestLoopbackUsers(t *testing.T) {
	s := NewStatic(map[string]string{"guest": "guest"}, Options{})
	if _, err := s.Login("guest", "guest", local); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Login("guest", "guest", Addr("[::1]:7")); err != nil {
		t.Fatal(err)
	}
	_, err := s.Login("guest", "guest", remote)
	if err == nil || !strings.Contains(err.Error(), "only connect via localhost") {
		t.Fatalf("guest from afar: %v", err)
	}
	open := NewStatic(map[string]string{"guest": "guest"}, Options{LoopbackUsers: []string{}})
	if _, err := open.Login("guest", "guest", remote); err != nil {
		t.Fatal(err)
	}
}

func TestPermissions(t *testing.T) {
	s := mustOpen(t, nil, Options{})
	_ = s.PutUser("app", "pw", nil)
	if err := s.SetPermissions(Permission{User: "app", VHost: "/", Configure: "^app\\.", Write: "^(app\\..*|amq\\.default)$", Read: "app"}); err != nil {
		t.Fatal(err)
	}
	p, err := s.Login("app", "pw", remote)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.CheckVHost("/"); err != nil {
		t.Fatal(err)
	}
	if err := p.CheckVHost("other"); !errors.Is(err, core.ErrAccessRefused) {
		t.Fatalf("vhost without permissions: %v", err)
	}
	cases := []struct {
		r    Resource
		name string
		op   Op
		ok   bool
	}{
		{Queue, "app.q", Configure, true},
		{Queue, "other.q", Configure, false},
		{Exchange, "", Write, true}, // amq.default
		{Exchange, "amq.topic", Write, false},
		{Queue, "my-app-queue", Read, true}, // unanchored, as RabbitMQ
		{Queue, "mine", Read, false},
	}
	for _, c := range cases {
		err := p.Check("/", c.r, c.name, c.op)
		if (err == nil) != c.ok {
			t.Errorf("%s %s %q: %v", c.op, c.r, c.name, err)
		}
		if err != nil && !strings.Contains(err.Error(), "refused for user 'app'") {
			t.Errorf("message %q", err)
		}
	}
	// A change applies to principals already logged in.
	if err := s.SetPermissions(Permission{User: "app", VHost: "/", Configure: ".*", Write: "", Read: ""}); err != nil {
		t.Fatal(err)
	}
	if err := p.Check("/", Queue, "other.q", Configure); err != nil {
		t.Fatal(err)
	}
	if err := p.Check("/", Queue, "app.q", Read); err == nil {
		t.Fatal("empty read pattern granted read")
	}
	if err := s.SetPermissions(Permission{User: "app", VHost: "/", Configure: "(", Write: "", Read: ""}); !errors.Is(err, core.ErrInvalidArgument) {
		t.Fatalf("bad regexp: %v", err)
	}
	if err := s.SetPermissions(Permission{User: "ghost", VHost: "/"}); !errors.Is(err, core.ErrNotFound) {
		t.Fatalf("unknown user: %v", err)
	}
	if err := s.VHostDeleted("/"); err != nil {
		t.Fatal(err)
	}
	if err := p.CheckVHost("/"); err == nil {
		t.Fatal("permissions survived the vhost's deletion")
	}
}

func TestTopicPermissions(t *testing.T) {
	s := mustOpen(t, nil, Options{})
	_ = s.PutUser("dev", "pw", nil)
	_ = s.SetPermissions(Permission{User: "dev", VHost: "/", Configure: ".*", Write: ".*", Read: ".*"})
	p, _ := s.Login("dev", "pw", remote)
	if err := p.CheckTopic("/", "amq.topic", "anything", Write, "c1"); err != nil {
		t.Fatalf("no topic permissions means all keys: %v", err)
	}
	if err := s.SetTopicPermissions(TopicPermission{User: "dev", VHost: "/", Exchange: "amq.topic",
		Write: "^devices\\.{client_id}\\.", Read: "^devices\\.{username}\\.cmd$"}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		key, client string
		op          Op
		ok          bool
	}{
		{"devices.c1.temp", "c1", Write, true},
		{"devices.c2.temp", "c1", Write, false},
		{"devices.dev.cmd", "c1", Read, true},
		{"devices.other.cmd", "c1", Read, false},
		{"devices.c.1.temp", "c.1", Write, true},
		{"devices.cx1.temp", "c.1", Write, false}, // the client id is quoted, not a pattern
	} {
		if err := p.CheckTopic("/", "amq.topic", c.key, c.op, c.client); (err == nil) != c.ok {
			t.Errorf("%s %q as %s: %v", c.op, c.key, c.client, err)
		}
	}
	if err := p.CheckTopic("/", "other.topic", "x", Write, "c1"); err != nil {
		t.Fatal(err)
	}
	if err := s.ClearTopicPermissions("dev", "/", ""); err != nil {
		t.Fatal(err)
	}
	if err := p.CheckTopic("/", "amq.topic", "devices.c2.temp", Write, "c1"); err != nil {
		t.Fatal(err)
	}
}

func TestFailureRateLimit(t *testing.T) {
	s := mustOpen(t, nil, Options{MaxFailuresPerMinute: 3})
	_ = s.PutUser("u", "pw", nil)
	for i := 0; i < 3; i++ {
		if _, err := s.Login("u", "bad", remote); err == nil {
			t.Fatal("bad password accepted")
		}
	}
	_, err := s.Login("u", "pw", remote)
	if err == nil || !strings.Contains(err.Error(), "too many failed logins") {
		t.Fatalf("after the limit even the right password is refused: %v", err)
	}
	if _, err := s.Login("u", "pw", Addr("192.0.2.8:1")); err != nil {
		t.Fatalf("another host is not limited: %v", err)
	}
}

func TestConnectionLimits(t *testing.T) {
	s := NewStatic(map[string]string{"a": "a", "b": "b"}, Options{MaxConnections: 3, MaxConnectionsPerUser: 2})
	var ps []*Principal
	for i := 0; i < 2; i++ {
		p, err := s.Login("a", "a", local)
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	if _, err := s.Login("a", "a", local); !errors.Is(err, core.ErrResourceError) {
		t.Fatalf("third connection of a: %v", err)
	}
	pb, err := s.Login("b", "b", local)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Login("b", "b", local); !errors.Is(err, core.ErrResourceError) || !strings.Contains(err.Error(), "limit of 3") {
		t.Fatalf("over the total: %v", err)
	}
	ps[0].Close()
	ps[0].Close() // idempotent
	if s.Connections() != 2 {
		t.Fatalf("connections %d", s.Connections())
	}
	if _, err := s.Login("a", "a", local); err != nil {
		t.Fatal(err)
	}
	pb.Close()
}

func TestConcurrentChecks(t *testing.T) {
	s := mustOpen(t, nil, Options{})
	_ = s.PutUser("u", "pw", nil)
	_ = s.SetPermissions(Permission{User: "u", VHost: "/", Configure: ".*", Write: ".*", Read: ".*"})
	p, _ := s.Login("u", "pw", remote)
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 200; j++ {
				_ = p.Check("/", Queue, fmt.Sprint("q", j), Read)
				if j%50 == 0 {
					_ = s.SetPermissions(Permission{User: "u", VHost: "/", Configure: ".*", Write: ".*", Read: ".*"})
				}
			}
		}()
	}
	wg.Wait()
}

// TestLoginStormHashesOnce: many logins with the same credentials at once
// (a fleet reconnecting) run argon2id once, not once each.
func TestLoginStormHashesOnce(t *testing.T) {
	s := mustOpen(t, nil, Options{})
	if err := s.PutUser("fleet", "pw", nil); err != nil {
		t.Fatal(err)
	}
	before := hashes.Load()
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, err := s.Authenticate("fleet", "pw", remote)
			if err == nil {
				p.Close()
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := hashes.Load() - before; got != 1 {
		t.Fatalf("%d argon2id computations for 64 identical logins, want 1", got)
	}
}
