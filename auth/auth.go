// Package auth holds Bourse's users, their tags and their permissions, and
// answers the adapters' two questions: who is this (Login, LoginExternal)
// and may they do that (Principal.Check, Principal.CheckTopic).
//
// The model is RabbitMQ's, so operators' knowledge carries over: per-vhost
// configure / write / read regular expressions over exchange and queue
// names (unanchored, as RabbitMQ's; "" matches nothing), topic permissions
// per exchange over routing keys (which is what MQTT topics become), tags
// (administrator, management, monitoring, policymaker) for the HTTP API,
// and loopback-only users (guest by default). Every adapter maps a refusal
// to its own protocol at its edge: AMQP 403 ACCESS_REFUSED, MQTT reason
// 0x87 Not authorized, STOMP ERROR, HTTP 401/403.
//
// Passwords are stored as argon2id hashes; RabbitMQ's salted SHA-256/512
// and MD5 hashes and bcrypt hashes are accepted on import. A login that
// succeeded is remembered as an HMAC of the credentials under a per-process
// random key, so a fleet of devices reconnecting does not pay argon2id's
// cost on every connection. Failed logins are counted per source host and,
// above a limit, refused without checking the password for a minute; they
// are logged (never with the password) at most once per host per minute.
package auth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bourse-mq/bourse/core"
)

// Op is what a client wants to do with a resource.
type Op uint8

// Operations of RabbitMQ's permission model.
const (
	Configure Op = iota // declare, delete
	Write               // publish to an exchange, bind to a queue
	Read                // consume from a queue, bind from an exchange
)

func (o Op) String() string {
	switch o {
	case Configure:
		return "configure"
	case Write:
		return "write"
	}
	return "read"
}

// Resource kinds, for error messages.
type Resource uint8

// Resource kinds.
const (
	Exchange Resource = iota
	Queue
)

func (r Resource) String() string {
	if r == Queue {
		return "queue"
	}
	return "exchange"
}

// User is a stored user. PasswordHash is in the format of Algorithm.
type User struct {
	Name         string   `json:"name"`
	PasswordHash string   `json:"password_hash"`
	Algorithm    string   `json:"hashing_algorithm"`
	Tags         []string `json:"tags"`
}

// Permission is one user's rights in one vhost.
type Permission struct {
	User      string `json:"user"`
	VHost     string `json:"vhost"`
	Configure string `json:"configure"`
	Write     string `json:"write"`
	Read      string `json:"read"`
}

// TopicPermission restricts the routing keys a user may publish with
// (write) and bind or subscribe with (read) on one topic exchange. The
// patterns may use {username}, {vhost} and {client_id}.
type TopicPermission struct {
	User     string `json:"user"`
	VHost    string `json:"vhost"`
	Exchange string `json:"exchange"`
	Write    string `json:"write"`
	Read     string `json:"read"`
}

// Persister keeps users and permissions across restarts (storage/meta
// implements it). Records are JSON.
type Persister interface {
	UpdateRecords(bucket string, puts map[string][]byte, deletes []string) error
	ForEachRecord(bucket string, fn func(key string, val []byte) error) error
}

const (
	bucketUsers = "auth-users"
	bucketPerms = "auth-permissions"
	bucketTopic = "auth-topic-permissions"
)

// Options configure a Store.
type Options struct {
	// LoopbackUsers may log in only from a loopback address (RabbitMQ's
	// loopback_users) [guest]. An empty non-nil list restricts nobody.
	LoopbackUsers []string
	// MaxFailuresPerMinute is how many failed logins one source host may
	// make in a minute before further attempts are refused unchecked [20];
	// negative disables the limit.
	MaxFailuresPerMinute int
	// MaxConnections bounds logged-in connections over every protocol
	// (0: unlimited); MaxConnectionsPerUser bounds them per user.
	MaxConnections        int
	MaxConnectionsPerUser int
	Logger                *slog.Logger
}

type compiledPerm struct {
	Permission
	re [3]*regexp.Regexp // configure, write, read
}

type compiledTopic struct {
	TopicPermission
}

// Store holds users and permissions. It is safe for concurrent use.
type Store struct {
	o        Options
	p        Persister
	log      *slog.Logger
	static   bool // every user may do anything on every vhost (NewStatic)
	gen      atomic.Uint64
	cacheK   []byte
	mu       sync.RWMutex
	users    map[string]*User
	perms    map[[2]string]*compiledPerm  // (user, vhost)
	topic    map[[3]string]*compiledTopic // (user, vhost, exchange)
	known    map[string][32]byte          // user → HMAC of the last verified credentials
	vmu      sync.Mutex
	inflight map[[32]byte]*verifyCall // password checks running, by credentials
	hashSem  chan struct{}            // bounds concurrent hashing to one per CPU
	cmu      sync.Mutex
	conns    int
	perUser  map[string]int
	fails    failures
}

// Open loads the users and permissions p holds (p may be nil: nothing is
// kept across restarts).
func Open(p Persister, o Options) (*Store, error) {
	s := newStore(o)
	s.p = p
	if p == nil {
		return s, nil
	}
	var err error
	for _, bucket := range Buckets() {
		if err == nil {
			err = p.ForEachRecord(bucket, func(k string, v []byte) error { return s.applyLocked(bucket, k, v) })
		}
	}
	if err != nil {
		return nil, fmt.Errorf("auth: load: %w", err)
	}
	return s, nil
}

// ApplyRecord applies a record that another broker wrote to the shared
// Persister (cluster mode: every node watches the records and applies each
// change), without writing it back: val is the record, nil for a deletion.
// Keys and records are those this store gives its Persister.
func (s *Store) ApplyRecord(bucket, key string, val []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.applyLocked(bucket, key, val)
}

// applyLocked sets or (val nil) deletes one record in memory.
func (s *Store) applyLocked(bucket, key string, val []byte) error {
	defer s.gen.Add(1)
	parts := strings.Split(key, "\x00")
	switch bucket {
	case bucketUsers:
		delete(s.known, key)
		if val == nil {
			delete(s.users, key)
			return nil
		}
		var u User
		if err := json.Unmarshal(val, &u); err != nil {
			return fmt.Errorf("user record: %w", err)
		}
		s.users[u.Name] = &u
	case bucketPerms:
		if val == nil {
			if len(parts) == 2 {
				delete(s.perms, [2]string{parts[0], parts[1]})
			}
			return nil
		}
		var pm Permission
		if err := json.Unmarshal(val, &pm); err != nil {
			return fmt.Errorf("permission record: %w", err)
		}
		c, err := compilePerm(pm)
		if err != nil {
			return err
		}
		s.perms[[2]string{pm.User, pm.VHost}] = c
	case bucketTopic:
		if val == nil {
			if len(parts) == 3 {
				delete(s.topic, [3]string{parts[0], parts[1], parts[2]})
			}
			return nil
		}
		var tp TopicPermission
		if err := json.Unmarshal(val, &tp); err != nil {
			return fmt.Errorf("topic permission record: %w", err)
		}
		s.topic[[3]string{tp.User, tp.VHost, tp.Exchange}] = &compiledTopic{tp}
	default:
		return fmt.Errorf("unknown record bucket %q", bucket)
	}
	return nil
}

// Buckets are the names of the record buckets a store writes.
func Buckets() []string { return []string{bucketUsers, bucketPerms, bucketTopic} }

// NewStatic returns an in-memory store of users (name → password) who may
// do anything on every vhost: for running an adapter on its own (tests,
// embedding). The broker itself uses Open.
func NewStatic(users map[string]string, o Options) *Store {
	s := newStore(o)
	s.static = true
	for name, pass := range users {
		h := rabbitSHA256(pass)
		s.users[name] = &User{Name: name, PasswordHash: h, Algorithm: AlgoRabbitSHA2, Tags: []string{"administrator"}}
	}
	return s
}

func newStore(o Options) *Store {
	if o.LoopbackUsers == nil {
		o.LoopbackUsers = []string{"guest"}
	}
	if o.MaxFailuresPerMinute == 0 {
		o.MaxFailuresPerMinute = 20
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	k := make([]byte, 32)
	_, _ = rand.Read(k)
	return &Store{o: o, log: o.Logger, cacheK: k, users: map[string]*User{}, perms: map[[2]string]*compiledPerm{},
		topic: map[[3]string]*compiledTopic{}, known: map[string][32]byte{}, perUser: map[string]int{},
		inflight: map[[32]byte]*verifyCall{}, hashSem: make(chan struct{}, runtime.NumCPU()),
		fails: failures{m: map[string]*failWindow{}}}
}

func rabbitSHA256(pass string) string {
	salt := make([]byte, 4)
	_, _ = rand.Read(salt)
	h := sha256.Sum256(append(slices.Clone(salt), pass...))
	return b64std(append(salt, h[:]...))
}

// SetLimits changes the connection limits (on SIGHUP); connections already
// logged in stay.
func (s *Store) SetLimits(maxConns, maxPerUser int) {
	s.cmu.Lock()
	s.o.MaxConnections, s.o.MaxConnectionsPerUser = maxConns, maxPerUser
	s.cmu.Unlock()
}

// Empty reports whether no user exists (the broker then creates the
// configured default user, as RabbitMQ does on its first start).
func (s *Store) Empty() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.users) == 0
}

// PutUser creates or updates a user with a password (hashed with
// argon2id here) and tags. An empty password makes a user who can log in
// only with a client certificate (EXTERNAL).
func (s *Store) PutUser(name, password string, tags []string) error {
	u := User{Name: name, Algorithm: algoNone, Tags: tags}
	if password != "" {
		h, err := HashPassword(password)
		if err != nil {
			return err
		}
		u.PasswordHash, u.Algorithm = h, AlgoArgon2id
	}
	return s.PutUserHash(u)
}

// PutUserHash creates or updates a user from an already hashed password
// (definitions import). The hash is checked for its algorithm's shape.
func (s *Store) PutUserHash(u User) error {
	if err := validName("user", u.Name); err != nil {
		return err
	}
	if u.Algorithm == "" {
		u.Algorithm = AlgoRabbitSHA2 // RabbitMQ's default when definitions omit it
		if u.PasswordHash == "" {
			u.Algorithm = algoNone
		}
	}
	if err := checkHash(u.Algorithm, u.PasswordHash); err != nil {
		return core.Errorf(core.InvalidArgument, "user '%s': %v", u.Name, err)
	}
	u.Tags = normTags(u.Tags)
	b, _ := json.Marshal(u)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.persist(bucketUsers, map[string][]byte{u.Name: b}, nil); err != nil {
		return err
	}
	s.users[u.Name] = &u
	delete(s.known, u.Name)
	s.gen.Add(1)
	return nil
}

func normTags(tags []string) []string {
	out := []string{}
	for _, t := range tags {
		for _, x := range strings.Split(t, ",") {
			if x = strings.TrimSpace(x); x != "" && !slices.Contains(out, x) {
				out = append(out, x)
			}
		}
	}
	sort.Strings(out)
	return out
}

func validName(what, n string) error {
	if n == "" || len(n) > 255 || strings.ContainsAny(n, "\x00\n\r") {
		return core.Errorf(core.InvalidArgument, "invalid %s name %q", what, n)
	}
	return nil
}

// DeleteUser removes a user with their permissions. Connections already
// logged in stay open (as in RabbitMQ) but their next permission check
// fails.
func (s *Store) DeleteUser(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.users[name]; !ok {
		return core.Errorf(core.NotFound, "no user '%s'", name)
	}
	if err := s.persist(bucketUsers, nil, []string{name}); err != nil {
		return err
	}
	if _, err := s.dropLocked(func(user, _, _ string) bool { return user == name }, true); err != nil {
		return err
	}
	delete(s.users, name)
	delete(s.known, name)
	s.gen.Add(1)
	return nil
}

// User returns a copy of one user.
func (s *Store) User(name string) (User, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	u, ok := s.users[name]
	if !ok {
		return User{}, false
	}
	c := *u
	c.Tags = slices.Clone(u.Tags)
	return c, true
}

// Users lists users by name.
func (s *Store) Users() []User {
	s.mu.RLock()
	out := make([]User, 0, len(s.users))
	for _, u := range s.users {
		c := *u
		c.Tags = slices.Clone(u.Tags)
		out = append(out, c)
	}
	s.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func permKey(user, vhost string) string           { return user + "\x00" + vhost }
func topicKey(user, vhost, exch string) string    { return user + "\x00" + vhost + "\x00" + exch }
func compileOne(p string) (*regexp.Regexp, error) { return regexp.Compile(p) }

func compilePerm(p Permission) (*compiledPerm, error) {
	c := &compiledPerm{Permission: p}
	for i, pat := range []string{p.Configure, p.Write, p.Read} {
		if pat == "" {
			continue // "" grants nothing, as in RabbitMQ
		}
		re, err := compileOne(pat)
		if err != nil {
			return nil, core.Errorf(core.InvalidArgument, "invalid %s pattern %q: %v", Op(i), pat, err)
		}
		c.re[i] = re
	}
	return c, nil
}

// SetPermissions sets a user's rights in a vhost. The user must exist.
func (s *Store) SetPermissions(p Permission) error {
	if err := validName("vhost", p.VHost); err != nil {
		return err
	}
	c, err := compilePerm(p)
	if err != nil {
		return err
	}
	b, _ := json.Marshal(p)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.users[p.User]; !ok {
		return core.Errorf(core.NotFound, "no user '%s'", p.User)
	}
	if err := s.persist(bucketPerms, map[string][]byte{permKey(p.User, p.VHost): b}, nil); err != nil {
		return err
	}
	s.perms[[2]string{p.User, p.VHost}] = c
	s.gen.Add(1)
	return nil
}

// ClearPermissions removes a user's rights in a vhost.
func (s *Store) ClearPermissions(user, vhost string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := [2]string{user, vhost}
	if _, ok := s.perms[k]; !ok {
		return core.Errorf(core.NotFound, "no permissions for user '%s' in vhost '%s'", user, vhost)
	}
	if err := s.persist(bucketPerms, nil, []string{permKey(user, vhost)}); err != nil {
		return err
	}
	delete(s.perms, k)
	s.gen.Add(1)
	return nil
}

// Permissions lists every permission entry, by user then vhost.
func (s *Store) Permissions() []Permission {
	s.mu.RLock()
	out := make([]Permission, 0, len(s.perms))
	for _, c := range s.perms {
		out = append(out, c.Permission)
	}
	s.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].User != out[j].User {
			return out[i].User < out[j].User
		}
		return out[i].VHost < out[j].VHost
	})
	return out
}

// SetTopicPermissions sets a user's topic rights on one exchange of a vhost.
func (s *Store) SetTopicPermissions(p TopicPermission) error {
	if err := validName("vhost", p.VHost); err != nil {
		return err
	}
	for _, pat := range []string{p.Write, p.Read} {
		if _, err := compileOne(expand(pat, "u", "v", "c")); err != nil {
			return core.Errorf(core.InvalidArgument, "invalid topic pattern %q: %v", pat, err)
		}
	}
	b, _ := json.Marshal(p)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.users[p.User]; !ok {
		return core.Errorf(core.NotFound, "no user '%s'", p.User)
	}
	if err := s.persist(bucketTopic, map[string][]byte{topicKey(p.User, p.VHost, p.Exchange): b}, nil); err != nil {
		return err
	}
	s.topic[[3]string{p.User, p.VHost, p.Exchange}] = &compiledTopic{p}
	s.gen.Add(1)
	return nil
}

// ClearTopicPermissions removes a user's topic rights in a vhost: on one
// exchange, or on all when exchange is "".
func (s *Store) ClearTopicPermissions(user, vhost, exchange string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, err := s.dropLocked(func(u, v, x string) bool {
		return u == user && v == vhost && (exchange == "" || x == exchange)
	}, false)
	if err != nil {
		return err
	}
	if n == 0 {
		return core.Errorf(core.NotFound, "no topic permissions for user '%s' in vhost '%s'", user, vhost)
	}
	s.gen.Add(1)
	return nil
}

// TopicPermissions lists every topic permission entry.
func (s *Store) TopicPermissions() []TopicPermission {
	s.mu.RLock()
	out := make([]TopicPermission, 0, len(s.topic))
	for _, c := range s.topic {
		out = append(out, c.TopicPermission)
	}
	s.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		return a.User+"\x00"+a.VHost+"\x00"+a.Exchange < b.User+"\x00"+b.VHost+"\x00"+b.Exchange
	})
	return out
}

// VHostDeleted drops every permission on a deleted vhost, so that a vhost
// created later with the same name starts with none.
func (s *Store) VHostDeleted(vhost string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.dropLocked(func(_, v, _ string) bool { return v == vhost }, true); err != nil {
		return err
	}
	s.gen.Add(1)
	return nil
}

// dropLocked removes the topic permissions, and with perms the vhost
// permissions, whose (user, vhost, exchange) match (exchange is "" for a
// vhost permission), on disk first; it reports how many entries went.
func (s *Store) dropLocked(match func(user, vhost, exchange string) bool, perms bool) (int, error) {
	var pk, tk []string
	if perms {
		for k := range s.perms {
			if match(k[0], k[1], "") {
				pk = append(pk, permKey(k[0], k[1]))
			}
		}
	}
	for k := range s.topic {
		if match(k[0], k[1], k[2]) {
			tk = append(tk, topicKey(k[0], k[1], k[2]))
		}
	}
	if err := s.persist(bucketPerms, nil, pk); err != nil {
		return 0, err
	}
	if err := s.persist(bucketTopic, nil, tk); err != nil {
		return 0, err
	}
	for k := range s.perms {
		if perms && match(k[0], k[1], "") {
			delete(s.perms, k)
		}
	}
	for k := range s.topic {
		if match(k[0], k[1], k[2]) {
			delete(s.topic, k)
		}
	}
	return len(pk) + len(tk), nil
}

func (s *Store) persist(bucket string, puts map[string][]byte, dels []string) error {
	if s.p == nil || (len(puts) == 0 && len(dels) == 0) {
		return nil
	}
	if err := s.p.UpdateRecords(bucket, puts, dels); err != nil {
		return core.Errorf(core.Internal, "auth: store %s: %v", bucket, err)
	}
	return nil
}

// Principal is a logged-in user, held by one connection. Close releases
// its connection slot.
type Principal struct {
	Name   string
	Tags   []string
	s      *Store
	once   sync.Once
	cmu    sync.Mutex
	gen    uint64
	cache  map[checkKey]error
	topics map[string]*regexp.Regexp
}

// HasTag reports whether the user had tag t when they logged in.
func (p *Principal) HasTag(t string) bool { return slices.Contains(p.Tags, t) }

// checkKey identifies one answer of Check in a principal's cache.
type checkKey struct {
	vhost, name string
	op          Op
	r           Resource
}

// Close releases the principal's connection slot; it is idempotent.
func (p *Principal) Close() {
	p.once.Do(func() {
		s := p.s
		s.cmu.Lock()
		s.conns--
		if s.perUser[p.Name]--; s.perUser[p.Name] <= 0 {
			delete(s.perUser, p.Name)
		}
		s.cmu.Unlock()
	})
}

func refused(format string, args ...any) error {
	return core.Errorf(core.AccessRefused, format, args...)
}

// errLoginFailed is what every failed password check returns: the client
// learns nothing about which part was wrong.
var errLoginFailed = refused("login refused: invalid credentials")

// Login checks a user name and password from a client at remote
// (host:port). Errors are of kind AccessRefused (bad credentials, a
// loopback user from elsewhere, too many failures from this host) or
// ResourceError (connection limit reached).
func (s *Store) Login(user, pass string, remote net.Addr) (*Principal, error) {
	return s.login(user, pass, remote, true)
}

// Authenticate checks credentials like Login but takes no connection slot:
// for one HTTP request. Its principal's Close does nothing.
func (s *Store) Authenticate(user, pass string, remote net.Addr) (*Principal, error) {
	return s.login(user, pass, remote, false)
}

func (s *Store) login(user, pass string, remote net.Addr, slot bool) (*Principal, error) {
	host := hostOf(remote)
	if s.fails.limited(host, s.o.MaxFailuresPerMinute) {
		return nil, refused("login refused: too many failed logins from %s, retry later", host)
	}
	s.mu.RLock()
	u, ok := s.users[user]
	var algo, hash string
	var known [32]byte
	var hasKnown bool
	if ok {
		algo, hash = u.Algorithm, u.PasswordHash
		known, hasKnown = s.known[user]
	}
	gen := s.gen.Load()
	s.mu.RUnlock()
	mac := s.mac(user, pass)
	good := ok && hasKnown && hmac.Equal(mac[:], known[:])
	if !good && ok {
		good = s.verifyOnce(user, gen, mac, algo, hash, pass)
	}
	if !good {
		s.failed(host, user, remote)
		return nil, errLoginFailed
	}
	return s.admit(user, remote, "password", slot)
}

// LoginExternal logs in a client that proved its identity another way (a
// verified TLS client certificate's common name, RabbitMQ's EXTERNAL
// mechanism). The user must exist; their password is not checked.
func (s *Store) LoginExternal(user string, remote net.Addr) (*Principal, error) {
	s.mu.RLock()
	_, ok := s.users[user]
	s.mu.RUnlock()
	if !ok {
		s.failed(hostOf(remote), user, remote)
		return nil, refused("login refused: certificate user '%s' does not exist", user)
	}
	return s.admit(user, remote, "certificate", true)
}

func (s *Store) admit(user string, remote net.Addr, how string, slot bool) (*Principal, error) {
	if slices.Contains(s.o.LoopbackUsers, user) && !isLoopback(remote) {
		s.log.Warn("login refused: user may only connect via localhost", "user", user, "remote", remote)
		return nil, refused("User '%s' can only connect via localhost", user)
	}
	s.mu.RLock()
	u := s.users[user]
	var tags []string
	if u != nil {
		tags = slices.Clone(u.Tags)
	}
	s.mu.RUnlock()
	if u == nil {
		return nil, errLoginFailed
	}
	p := &Principal{Name: user, Tags: tags, s: s}
	if !slot {
		p.once.Do(func() {})
		return p, nil
	}
	s.cmu.Lock()
	if s.o.MaxConnections > 0 && s.conns >= s.o.MaxConnections {
		s.cmu.Unlock()
		return nil, core.Errorf(core.ResourceError, "connection limit of %d reached", s.o.MaxConnections)
	}
	if s.o.MaxConnectionsPerUser > 0 && s.perUser[user] >= s.o.MaxConnectionsPerUser {
		s.cmu.Unlock()
		return nil, core.Errorf(core.ResourceError, "connection limit of %d per user reached for user '%s'", s.o.MaxConnectionsPerUser, user)
	}
	s.conns++
	s.perUser[user]++
	s.cmu.Unlock()
	s.log.Debug("login", "user", user, "remote", remote, "by", how)
	return p, nil
}

// verifyOnce checks a password against its hash. Logins with the same
// credentials that arrive while one check runs wait for its answer instead
// of hashing again, and at most one hash per CPU runs at a time: argon2id
// takes 19 MiB and tens of milliseconds, so a fleet reconnecting at once
// (thousands of devices with one account) must not run thousands of them.
func (s *Store) verifyOnce(user string, gen uint64, mac [32]byte, algo, hash, pass string) bool {
	s.vmu.Lock()
	if c, ok := s.inflight[mac]; ok {
		s.vmu.Unlock()
		<-c.done
		return c.ok
	}
	c := &verifyCall{done: make(chan struct{})}
	s.inflight[mac] = c
	s.vmu.Unlock()
	s.hashSem <- struct{}{}
	c.ok = verify(algo, hash, pass)
	<-s.hashSem
	if c.ok {
		s.mu.Lock()
		if s.gen.Load() == gen { // the user was not changed meanwhile
			s.known[user] = mac
		}
		s.mu.Unlock()
	}
	s.vmu.Lock()
	delete(s.inflight, mac)
	s.vmu.Unlock()
	close(c.done)
	return c.ok
}

type verifyCall struct {
	done chan struct{}
	ok   bool
}

func (s *Store) mac(user, pass string) [32]byte {
	m := hmac.New(sha256.New, s.cacheK)
	m.Write([]byte(user))
	m.Write([]byte{0})
	m.Write([]byte(pass))
	var out [32]byte
	copy(out[:], m.Sum(nil))
	return out
}

func (s *Store) failed(host, user string, remote net.Addr) {
	if first, limited := s.fails.add(host, s.o.MaxFailuresPerMinute); first {
		s.log.Warn("authentication failed", "user", user, "remote", remote)
	} else if limited {
		s.log.Warn("authentication failures from this host are now refused for a minute", "remote", remote,
			"limit_per_minute", s.o.MaxFailuresPerMinute)
	}
}

// Connections returns how many principals are logged in.
func (s *Store) Connections() int {
	s.cmu.Lock()
	defer s.cmu.Unlock()
	return s.conns
}

// CheckVHost refuses a vhost the user has no permissions in.
func (p *Principal) CheckVHost(vhost string) error {
	if p.s.static {
		return nil
	}
	p.s.mu.RLock()
	_, ok := p.s.perms[[2]string{p.Name, vhost}]
	p.s.mu.RUnlock()
	if !ok {
		return refused("access to vhost '%s' refused for user '%s'", vhost, p.Name)
	}
	return nil
}

// Check refuses op on the named exchange or queue of vhost unless the
// user's pattern for op matches the name. The default exchange is checked
// as "amq.default", as in RabbitMQ.
func (p *Principal) Check(vhost string, r Resource, name string, op Op) error {
	if p.s.static {
		return nil
	}
	if r == Exchange && name == "" {
		name = "amq.default"
	}
	key := checkKey{vhost, name, op, r} // no allocation per check
	p.cmu.Lock()
	if g := p.s.gen.Load(); g != p.gen || len(p.cache) > 512 {
		p.gen, p.cache = g, map[checkKey]error{}
	}
	err, hit := p.cache[key]
	p.cmu.Unlock()
	if hit {
		return err
	}
	p.s.mu.RLock()
	c := p.s.perms[[2]string{p.Name, vhost}]
	_, exists := p.s.users[p.Name]
	p.s.mu.RUnlock()
	if c == nil || !exists || c.re[op] == nil || !c.re[op].MatchString(name) {
		err = refused("%s access to %s '%s' in vhost '%s' refused for user '%s'", op, r, name, vhost, p.Name)
	}
	p.cmu.Lock()
	if p.cache != nil {
		p.cache[key] = err
	}
	p.cmu.Unlock()
	return err
}

// CheckTopic refuses a routing key on a topic exchange when the user has
// topic permissions on that exchange and the op's pattern (after variable
// expansion) does not match. With no topic permissions on the exchange,
// every key is allowed (RabbitMQ's rule).
func (p *Principal) CheckTopic(vhost, exchange, key string, op Op, clientID string) error {
	if p.s.static || op == Configure {
		return nil
	}
	p.s.mu.RLock()
	t := p.s.topic[[3]string{p.Name, vhost, exchange}]
	p.s.mu.RUnlock()
	if t == nil {
		return nil
	}
	pat := t.Read
	if op == Write {
		pat = t.Write
	}
	if pat != "" {
		if re := p.topicRegexp(expand(pat, p.Name, vhost, clientID)); re != nil && re.MatchString(key) {
			return nil
		}
	}
	return refused("%s access to topic '%s' in exchange '%s' in vhost '%s' refused for user '%s'", op, key, exchange, vhost, p.Name)
}

// topicRegexp compiles an expanded topic pattern once per principal.
func (p *Principal) topicRegexp(pat string) *regexp.Regexp {
	p.cmu.Lock()
	defer p.cmu.Unlock()
	if re, ok := p.topics[pat]; ok {
		return re
	}
	re, _ := compileOne(pat) // validated when set; nil refuses
	if p.topics == nil || len(p.topics) > 64 {
		p.topics = map[string]*regexp.Regexp{}
	}
	p.topics[pat] = re
	return re
}

// Generation changes whenever any user or permission does: a caller that
// remembers a Check's answer may keep it while Generation is unchanged.
func (p *Principal) Generation() uint64 { return p.s.gen.Load() }

// Unrestricted reports whether checks always pass (a NewStatic store), so
// hot paths can skip them.
func (p *Principal) Unrestricted() bool { return p.s.static }

// expand substitutes {username}, {vhost} and {client_id}, quoted so that a
// user name cannot widen the pattern.
func expand(pat, user, vhost, clientID string) string {
	return strings.NewReplacer("{username}", regexp.QuoteMeta(user), "{vhost}", regexp.QuoteMeta(vhost),
		"{client_id}", regexp.QuoteMeta(clientID)).Replace(pat)
}

func hostOf(remote net.Addr) string {
	if remote == nil {
		return ""
	}
	if h, _, err := net.SplitHostPort(remote.String()); err == nil {
		return h
	}
	return remote.String()
}

// isLoopback reports whether a peer is on this machine: a loopback IP, or a
// transport that never leaves the host (an in-process pipe, a unix socket).
func isLoopback(remote net.Addr) bool {
	if remote == nil {
		return false
	}
	switch remote.Network() {
	case "pipe", "unix", "unixpacket", "unixgram":
		return true
	}
	ip := net.ParseIP(hostOf(remote))
	return ip != nil && ip.IsLoopback()
}

// Addr is a peer known only by its "host:port" text (an http.Request's
// RemoteAddr).
type Addr string

// Network returns "tcp".
func (Addr) Network() string { return "tcp" }

func (a Addr) String() string { return string(a) }

// failures counts failed logins per source host in one-minute windows.
type failures struct {
	mu sync.Mutex
	m  map[string]*failWindow
}

type failWindow struct {
	start time.Time
	n     int
}

func (f *failures) limited(host string, limit int) bool {
	if limit < 0 {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	w := f.m[host]
	return w != nil && time.Since(w.start) < time.Minute && w.n >= limit
}

// add counts a failure; first is true for a window's first failure,
// limited when this failure reached the limit.
func (f *failures) add(host string, limit int) (first, limited bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	if len(f.m) > 10000 { // bound the table under a spray of sources
		for h, w := range f.m {
			if now.Sub(w.start) >= time.Minute {
				delete(f.m, h)
			}
		}
	}
	w := f.m[host]
	if w == nil || now.Sub(w.start) >= time.Minute {
		w = &failWindow{start: now}
		f.m[host] = w
	}
	w.n++
	return w.n == 1, limit >= 0 && w.n == limit
}
