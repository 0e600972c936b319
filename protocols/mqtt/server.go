package mqtt

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/internal/netx"
	"github.com/bourse-mq/bourse/router"
)

// connIDs numbers connections. The protocol sits in the top byte so that
// ids never collide with those other adapters hand out.
var connIDs atomic.Uint64

func nextConnID() core.ConnID {
	return core.ConnID(uint64(core.ProtoMQTT)<<56 | connIDs.Add(1))
}

// Server is the MQTT adapter: mochi-mqtt speaks the protocol, and the
// bridge hook connects it to the router.
type Server struct {
	b     *router.Broker
	opts  Options
	log   *slog.Logger
	mochi *mochi.Server
	hook  *bridge // mochi's only hook

	retained retainedStore

	sessMu   sync.Mutex
	sessions map[string]*session // by mochi client id

	sharedMu   sync.Mutex
	sharedRefs map[string]int // vhost NUL queue → sessions using a shared group's queue

	mu      sync.Mutex
	lns     map[net.Listener]struct{}
	conns   map[*conn]struct{}
	closing bool
	wg      sync.WaitGroup // one per connection

	mochiMu      sync.Mutex
	mochiStarted bool
	mochiStopped bool

	gate    netx.Gate        // shut while publishing is blocked (SetBlocked)
	persist *persister       // nil without Options.Store
	stored  []storage.Client // restored persistent sessions, for mochi
	keys    keyLocks         // per session key, in a cluster
}

// New returns an MQTT server for broker b.
func New(b *router.Broker, opts Options) *Server {
	opts.setDefaults()
	s := &Server{
		b:          b,
		opts:       opts,
		log:        opts.Logger.With("protocol", "mqtt"),
		sessions:   map[string]*session{},
		sharedRefs: map[string]int{},
		lns:        map[net.Listener]struct{}{},
		conns:      map[*conn]struct{}{},
	}
	caps := mochi.NewDefaultServerCapabilities()
	caps.MaximumClientWritesPending = mochiWritesPending
	caps.MaximumPacketSize = uint32(opts.MaxPacketSize)
	caps.ReceiveMaximum = uint16(opts.ReceiveMaximum)
	caps.TopicAliasMaximum = uint16(opts.TopicAliasMaximum)
	caps.MaximumSessionExpiryInterval = uint32(min(opts.MaxSessionExpiry/time.Second, math.MaxUint32))
	// No forced expiry: mochi would otherwise drop retained messages and
	// in-flight entries older than a day. Message expiry still applies.
	caps.MaximumMessageExpiryInterval = 0
	if opts.MaxConnections > 0 {
		caps.MaximumClients = int64(opts.MaxConnections)
	}
	s.mochi = mochi.New(&mochi.Options{
		Capabilities:            caps,
		ClientNetReadBufferSize: mochiReadBuffer,
		// Only consulted when mochi's own outbound channel is busy; every
		// write lands in the connection's buffer (pipe) anyway.
		ClientNetWriteBufferSize: 512,
		Logger:                   slog.New(minLevel{opts.Logger.Handler(), slog.LevelError}).With("protocol", "mqtt", "component", "mochi"),
		SysTopicResendInterval:   int64(max(opts.SysInterval/time.Second, 1)),
	})
	s.retained.onChange = s.saveRetained
	if opts.Cluster != nil {
		s.opts.Store = opts.Cluster
	}
	if s.opts.Store != nil {
		s.persist = newPersister(s, s.opts.Store)
		s.restore()
	}
	s.hook = &bridge{s: s}
	if opts.Cluster != nil {
		s.joinCluster()
	}
	if err := s.mochi.AddHook(s.hook, nil); err != nil {
		// bridge.Init cannot fail.
		panic(fmt.Sprintf("mqtt: add bridge hook: %v", err))
	}
	return s
}

// Name names the service.
func (s *Server) Name() string { return "mqtt" }

// Stats reports the open connections (MQTT and STOMP have no channels: a
// connection counts as one, as RabbitMQ counts them).
func (s *Server) Stats() (connections, channels int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns), len(s.conns)
}

// SetBlocked blocks or unblocks publishing on every connection, for flow
// control (memory or disk alarms): a blocked connection's reader stops at
// its next PUBLISH and reads nothing more from the socket until unblocked.
// Subscribers keep receiving (and acknowledging, if they publish nothing).
func (s *Server) SetBlocked(blocked bool, reason string) {
	if s.gate.Set(blocked, reason) {
		s.log.Info("publishing flow control", "blocked", blocked, "reason", reason)
	}
}

// startMochi starts mochi's housekeeping loop (session and will expiry,
// $SYS) with the first connection.
func (s *Server) startMochi() {
	s.mochiMu.Lock()
	defer s.mochiMu.Unlock()
	if s.mochiStarted || s.mochiStopped {
		return
	}
	s.mochiStarted = true
	if err := s.mochi.Serve(); err != nil {
		s.log.Error("mochi did not start", "err", err)
	}
}

func (s *Server) stopMochi() {
	s.mochiMu.Lock()
	defer s.mochiMu.Unlock()
	if s.mochiStarted && !s.mochiStopped {
		_ = s.mochi.Close()
	}
	s.mochiStopped = true
}

// Serve accepts MQTT connections on ln until ln is closed. It returns nil
// once Shutdown has been called, and the accept error otherwise.
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
	s.startMochi()
	s.log.Info("listening", "addr", ln.Addr().String())
	listener := "tcp:" + ln.Addr().String()
	return netx.AcceptLoop(ln, s.isClosing, s.log, func(nc net.Conn) {
		go s.serveConn(nc, listener)
	})
}

// WebSocketHandler serves MQTT over WebSocket (subprotocol "mqtt", binary
// messages), for mounting on the HTTP listener. Each connection is served
// in its handler's goroutine.
func (s *Server) WebSocketHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.isClosing() {
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
			return
		}
		ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{
			Subprotocols:   []string{"mqtt"},
			OriginPatterns: s.opts.WebSocketOriginPatterns,
		})
		if err != nil {
			s.log.Debug("websocket upgrade failed", "remote", r.RemoteAddr, "err", err)
			return
		}
		if ws.Subprotocol() != "mqtt" {
			_ = ws.Close(websocket.StatusPolicyViolation, "the mqtt subprotocol is required")
			return
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		s.startMochi()
		s.serveConn(websocket.NetConn(ctx, ws, websocket.MessageBinary), "ws")
	})
}

// serveConn serves one connection in the calling goroutine, which becomes
// the connection's reader: mochi reads, decodes and handles packets in it.
// Its frame stays small (the work before and after is in calls of their
// own): an idle connection waits with this frame on its stack (see attach).
func (s *Server) serveConn(nc net.Conn, listener string) {
	c := s.admit(nc, listener)
	if c == nil {
		return
	}
	s.closed(c, s.establish(c, listener))
}

// admit tracks a new connection, or closes it if the server is closing.
//
//go:noinline
func (s *Server) admit(nc net.Conn, listener string) *conn {
	c := newConn(s, nc, nextConnID())
	defer close(c.closed)
	c.transport = "tcp"
	if listener == "ws" {
		c.transport = "websocket"
	} else if _, ok := nc.(*tls.Conn); ok {
		c.transport = "tls"
	}
	if !s.track(c) {
		_ = nc.Close()
		return nil
	}
	_ = nc.SetReadDeadline(time.Now().Add(s.opts.ConnectTimeout))
	return c
}

// closed cleans up after a connection has ended with err.
//
//go:noinline
func (s *Server) closed(c *conn, err error) {
	defer s.untrack(c)
	if c.client() != nil && !c.gone {
		// mochi returned without OnDisconnect (a panic, or a failure after
		// the session was attached): clean up as for a lost connection.
		expire := true
		if c.sess != nil {
			c.sess.mu.Lock()
			expire = c.sess.ephemeral
			c.sess.mu.Unlock()
		}
		c.disconnected(errors.Join(err, errConnAborted), expire)
	}
	c.finish()
	if c.unregister != nil {
		c.unregister()
	}
	s.b.ConnectionClosed(c.id)
	if err != nil {
		s.log.Debug("connection closed", "conn", c.id, "client", c.clientID, "remote", c.raw.RemoteAddr().String(), "err", err)
	}
}

var errConnAborted = errors.New("connection aborted")

// panics counts panics recovered while serving connections.
var panics atomic.Int64

func (s *Server) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

func (s *Server) track(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *Server) untrack(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.wg.Done()
}

// Shutdown stops accepting, closes every connection (MQTT 5 clients get
// DISCONNECT 0x8B) and waits for their goroutines. When ctx ends first the
// remaining sockets are closed at once. Delayed wills are dropped.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	lns := make([]net.Listener, 0, len(s.lns))
	for ln := range s.lns {
		lns = append(lns, ln)
	}
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, ln := range lns {
		_ = ln.Close()
	}
	for _, c := range conns {
		c.kill(packets.ErrServerShuttingDown)
	}
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
		for _, c := range conns {
			_ = c.raw.Close()
		}
		<-done
	}
	s.dropWills()
	s.stopMochi()
	s.persist.close()
	return err
}

// minLevel filters a handler's records below a level (mochi logs every
// client event; Bourse logs what matters itself).
type minLevel struct {
	slog.Handler
	level slog.Level
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.level && h.Handler.Enabled(ctx, l)
}

func (h minLevel) WithAttrs(as []slog.Attr) slog.Handler {
	return minLevel{h.Handler.WithAttrs(as), h.level}
}

func (h minLevel) WithGroup(name string) slog.Handler {
	return minLevel{h.Handler.WithGroup(name), h.level}
}
