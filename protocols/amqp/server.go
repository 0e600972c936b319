package amqp

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bourse-mq/bourse/auth"
	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/internal/netx"
	"github.com/bourse-mq/bourse/router"
)

// Options configure a Server. Zero values take the defaults in brackets.
type Options struct {
	// Logger receives the adapter's logs [slog.Default()].
	Logger *slog.Logger
	// DefaultVHost is the vhost of a connection.open that names none ["/"].
	DefaultVHost string
	// Auth holds the users and their permissions, checked on every
	// operation. Nil means an in-memory store of Users, who may do anything
	// (for running the adapter on its own).
	Auth *auth.Store
	// DefaultUser and DefaultPass are the account accepted when Auth and
	// Users are both unset ["guest"/"guest"].
	DefaultUser string
	DefaultPass string
	// Users maps user names to passwords when Auth is nil. Nil means
	// {DefaultUser: DefaultPass}.
	Users map[string]string
	// LoopbackUsers may connect only from a loopback address when Auth is
	// nil, as RabbitMQ's loopback_users ["guest"]; an empty non-nil list
	// restricts nobody.
	LoopbackUsers []string
	// CertLogin offers the EXTERNAL mechanism on TLS connections with a
	// verified client certificate: its common name is the user name
	// (RabbitMQ's rabbitmq_auth_mechanism_ssl).
	CertLogin bool
	// ChannelMax is the highest channel number a client may open [2047].
	ChannelMax uint16
	// MaxConsumersPerChannel bounds basic.consume per channel; beyond it
	// the channel is closed with 530 NOT_ALLOWED (RabbitMQ's
	// consumer_max_per_channel) [0: unlimited].
	MaxConsumersPerChannel int
	// FrameMax is the largest frame, header and end octet included, that
	// the server accepts and proposes [131072]. Clients may lower it, down to
	// 4096.
	FrameMax uint32
	// Heartbeat is the heartbeat interval the server proposes [60s];
	// negative proposes none. The client's answer in tune-ok is final.
	Heartbeat time.Duration
	// MaxMessageBytes caps a published body; larger publishes close the
	// channel with 406 PRECONDITION_FAILED [128 MiB].
	MaxMessageBytes int
	// MaxOutboundBytes bounds the bytes queued for one connection's socket.
	// Deliveries beyond it are refused until the writer drains [4 MiB].
	MaxOutboundBytes int
	// HandshakeTimeout bounds the time from accept to connection.open-ok [10s].
	HandshakeTimeout time.Duration
	// CloseTimeout bounds the wait for close-ok after the server sent
	// connection.close, and the final flush of a closing connection [3s].
	CloseTimeout time.Duration
	// WriteTimeout bounds one write to a client: a consumer that stops
	// reading its socket has its connection closed after it, instead of
	// holding the broker's buffers for ever [30s].
	WriteTimeout time.Duration
	// Version is announced in the server-properties ["dev"].
	Version string
}

func (o *Options) setDefaults() {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.DefaultVHost == "" {
		o.DefaultVHost = core.DefaultVHost
	}
	if o.DefaultUser == "" {
		o.DefaultUser, o.DefaultPass = "guest", "guest"
	}
	if o.Users == nil {
		o.Users = map[string]string{o.DefaultUser: o.DefaultPass}
	}
	if o.Auth == nil {
		o.Auth = auth.NewStatic(o.Users, auth.Options{LoopbackUsers: o.LoopbackUsers})
	}
	if o.ChannelMax == 0 {
		o.ChannelMax = 2047
	}
	if o.FrameMax == 0 {
		o.FrameMax = 131072
	}
	if o.FrameMax < 4096 {
		o.FrameMax = 4096
	}
	if o.Heartbeat == 0 {
		o.Heartbeat = 60 * time.Second
	}
	if o.MaxMessageBytes <= 0 {
		o.MaxMessageBytes = 128 << 20
	}
	if o.MaxOutboundBytes <= 0 {
		o.MaxOutboundBytes = 4 << 20
	}
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = 10 * time.Second
	}
	if o.CloseTimeout <= 0 {
		o.CloseTimeout = 3 * time.Second
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 30 * time.Second
	}
	if o.Version == "" {
		o.Version = "dev"
	}
}

// connIDs numbers connections. The protocol sits in the top byte so that IDs
// never collide with those other adapters hand out from their own counters.
var connIDs atomic.Uint64

func nextConnID() core.ConnID {
	return core.ConnID(uint64(core.ProtoAMQP)<<56 | connIDs.Add(1))
}

// Server is the AMQP 0-9-1 adapter: it accepts client connections and
// translates them into router calls.
type Server struct {
	b    *router.Broker
	opts Options
	log  *slog.Logger

	mu          sync.Mutex
	lns         map[net.Listener]struct{}
	conns       map[*conn]struct{}
	closing     bool
	blocked     bool
	blockReason string
	wg          sync.WaitGroup // one per connection

	setBlockedMu sync.Mutex // serialises SetBlocked calls
	channels     atomic.Int64
}

// New returns a server for broker b.
func New(b *router.Broker, opts Options) *Server {
	opts.setDefaults()
	return &Server{
		b:     b,
		opts:  opts,
		log:   opts.Logger.With("protocol", "amqp"),
		lns:   map[net.Listener]struct{}{},
		conns: map[*conn]struct{}{},
	}
}

// Name names the service.
func (s *Server) Name() string { return "amqp" }

// Serve accepts connections on ln until ln is closed. It returns nil once
// Shutdown has been called, and the accept error otherwise.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		_ = ln.Close()
		return nil
	}
	s.lns[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.lns, ln)
		s.mu.Unlock()
	}()
	s.log.Info("listening", "addr", ln.Addr().String())
	return netx.AcceptLoop(ln, s.isClosing, s.log, func(nc net.Conn) {
		c, ok := s.track(nc)
		if !ok {
			_ = nc.Close()
			return
		}
		go c.run()
	})
}

// ServeConn serves one already-accepted connection in the calling goroutine
// and returns when it ends. It is how other transports (a WebSocket
// endpoint, an in-process pipe) hand a byte stream to the adapter.
func (s *Server) ServeConn(nc net.Conn) {
	c, ok := s.track(nc)
	if !ok {
		_ = nc.Close()
		return
	}
	c.run()
}

func (s *Server) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// track registers a new connection, or refuses it after Shutdown.
func (s *Server) track(nc net.Conn) (*conn, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return nil, false
	}
	c := newConn(s, nc)
	if s.blocked {
		c.Block(s.blockReason)
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return c, true
}

func (s *Server) untrack(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.wg.Done()
}

// Stats reports the open connections and channels, for metrics.
func (s *Server) Stats() (connections, channels int) {
	s.mu.Lock()
	n := len(s.conns)
	s.mu.Unlock()
	return n, int(s.channels.Load())
}

func (s *Server) snapshot() []*conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	cs := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		cs = append(cs, c)
	}
	return cs
}

// Shutdown stops accepting, closes every connection with 320
// CONNECTION_FORCED and waits for their goroutines. When ctx ends first, the
// remaining sockets are closed at once and ctx's error is returned after
// the goroutines are gone.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	lns := make([]net.Listener, 0, len(s.lns))
	for ln := range s.lns {
		lns = append(lns, ln)
	}
	s.mu.Unlock()
	for _, ln := range lns {
		_ = ln.Close()
	}
	conns := s.snapshot()
	for _, c := range conns {
		c.shutdown()
	}
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		for _, c := range s.snapshot() {
			_ = c.nc.Close()
		}
		<-done
		return fmt.Errorf("amqp: shutdown: %w", ctx.Err())
	}
}

// SetBlocked blocks or unblocks publishing on every connection, for flow
// control (memory or disk alarms). Blocked connections that announced the
// connection.blocked capability are told with connection.blocked (and later
// connection.unblocked), and every blocked connection stops reading at its
// next basic.publish until unblocked. New connections inherit the state.
func (s *Server) SetBlocked(blocked bool, reason string) {
	s.setBlockedMu.Lock()
	defer s.setBlockedMu.Unlock()
	s.mu.Lock()
	if s.blocked == blocked {
		s.mu.Unlock()
		return
	}
	s.blocked, s.blockReason = blocked, reason
	s.mu.Unlock()
	for _, c := range s.snapshot() {
		if blocked {
			c.Block(reason)
		} else {
			c.Unblock()
		}
	}
}
