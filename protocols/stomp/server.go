package stomp

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/bourse-mq/bourse/internal/netx"
	"github.com/bourse-mq/bourse/protocols/stomp/wire"
	"github.com/bourse-mq/bourse/router"
)

// Server is the STOMP adapter: it serves STOMP 1.0, 1.1 and 1.2 over TCP
// listeners (Serve) and over WebSocket (WebSocketHandler), bridged into
// the broker's router.
type Server struct {
	b    *router.Broker
	opts Options
	log  *slog.Logger

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	closing   bool
	wg        sync.WaitGroup // one per connection (its reader goroutine)

	gate netx.Gate // shut while publishing is blocked (SetBlocked)
}

// New returns a STOMP server for broker b.
func New(b *router.Broker, opts Options) *Server {
	opts = opts.withDefaults()
	return &Server{
		b:         b,
		opts:      opts,
		log:       opts.Logger.With("proto", "stomp"),
		listeners: map[net.Listener]struct{}{},
		conns:     map[*conn]struct{}{},
	}
}

// Name returns "stomp".
func (s *Server) Name() string { return "stomp" }

// Serve accepts STOMP connections on ln until ln is closed. It returns nil
// once Shutdown has been called, and the accept error otherwise.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		_ = ln.Close()
		return nil
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()
	s.log.Info("stomp listening", "addr", ln.Addr().String())
	return netx.AcceptLoop(ln, s.isClosing, s.log, func(nc net.Conn) {
		c, ok := s.adopt(newTCPTransport(nc))
		if ok {
			go func() {
				defer s.wg.Done()
				c.serve()
			}()
		}
	})
}

func (s *Server) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// adopt registers a new connection. It refuses it (writing an ERROR frame)
// when the server is shutting down or at MaxConnections.
func (s *Server) adopt(t transport) (*conn, bool) {
	s.mu.Lock()
	refuse := ""
	switch {
	case s.closing:
		refuse = "Server shutting down"
	case s.opts.MaxConnections > 0 && len(s.conns) >= s.opts.MaxConnections:
		refuse = "Too many connections"
	}
	if refuse != "" {
		s.mu.Unlock()
		t.setWriteDeadline(time.Now().Add(time.Second))
		it := errorItem(protoErr(refuse, "%s; try again later", refuse), "")
		_ = t.writeFrame(wire.AppendHead(nil, wire.Raw, it.f), it.f.Body)
		_ = t.flush()
		_ = t.Close()
		return nil, false
	}
	c := newConn(s, t)
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	return c, true
}

func (s *Server) forget(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// Stats reports the open connections (MQTT and STOMP have no channels: a
// connection counts as one, as RabbitMQ counts them).
func (s *Server) Stats() (connections, channels int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns), len(s.conns)
}

// SetBlocked blocks or unblocks publishing on every connection, for flow
// control (memory or disk alarms): a blocked connection's reader stops at
// its next SEND and reads nothing more until unblocked.
func (s *Server) SetBlocked(blocked bool, reason string) {
	if s.gate.Set(blocked, reason) {
		s.log.Info("publishing flow control", "blocked", blocked, "reason", reason)
	}
}

// Shutdown stops accepting, closes every connection (each gets an ERROR
// frame after what is already queued for it) and waits for their
// goroutines. When ctx ends first, sockets are closed at once and
// Shutdown returns ctx's error after the goroutines have exited.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	for ln := range s.listeners {
		_ = ln.Close()
	}
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.out.push(errorItem(protoErr("Server shutdown", "The server is shutting down"), ""))
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
	}
	s.mu.Lock()
	for c := range s.conns {
		_ = c.t.Close()
	}
	s.mu.Unlock()
	<-done
	return ctx.Err()
}

// WebSocket subprotocols of STOMP over WebSocket.
var wsSubprotocols = []string{"v12.stomp", "v11.stomp", "v10.stomp"}

// WebSocketHandler serves STOMP over WebSocket (RabbitMQ Web STOMP style):
// subprotocols v10.stomp, v11.stomp and v12.stomp, or none. Incoming text
// and binary messages form one byte stream, so a message may carry several
// frames and a frame may span messages; each outgoing frame is one message.
// The connection runs in the handler's goroutine plus one writer.
func (s *Server) WebSocketHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.isClosing() {
			http.Error(w, "STOMP server shutting down", http.StatusServiceUnavailable)
			return
		}
		wc, err := websocket.Accept(w, r, &websocket.AcceptOptions{
			Subprotocols:   wsSubprotocols,
			OriginPatterns: s.opts.WebSocketOriginPatterns,
		})
		if err != nil {
			s.log.Debug("stomp websocket upgrade failed", "remote", r.RemoteAddr, "err", err)
			return // Accept has answered the request
		}
		// Frames are streamed and bounded by the frame reader's limits,
		// not by message size.
		wc.SetReadLimit(-1)
		typ := websocket.MessageText
		if s.opts.WebSocketBinary {
			typ = websocket.MessageBinary
		}
		c, ok := s.adopt(newWSTransport(wc, typ, r.RemoteAddr))
		if !ok {
			return
		}
		defer s.wg.Done()
		c.serve()
	})
}
