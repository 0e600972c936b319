// Package httpapi is Bourse's HTTP listener: health and readiness probes,
// Prometheus metrics, and the mount point for WebSocket endpoints (STOMP,
// MQTT) and, later, the management API and the stream fetch endpoint.
package httpapi

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Options configure the HTTP server.
type Options struct {
	Logger *slog.Logger
	// Ready reports whether the broker is ready for traffic (/readyz).
	Ready func() bool
	// Registry receives Bourse's collectors; Go runtime and process
	// collectors are added to it. A new registry when nil.
	Registry *prometheus.Registry
}

// Server is the HTTP service.
type Server struct {
	opts    Options
	mux     *http.ServeMux
	srv     *http.Server
	closing chan struct{} // closed when Shutdown starts (ends long polls)
	metrics atomic.Pointer[handlerBox]
}

type handlerBox struct{ h http.Handler }

// New builds the HTTP service with /healthz, /livez, /readyz and /metrics.
func New(opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Ready == nil {
		opts.Ready = func() bool { return true }
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	opts.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s := &Server{opts: opts, mux: http.NewServeMux(), closing: make(chan struct{})}
	ok := func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	}
	s.mux.HandleFunc("GET /healthz", ok)
	s.mux.HandleFunc("GET /livez", ok)
	s.mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !s.opts.Ready() {
			http.Error(w, "not ready\n", http.StatusServiceUnavailable)
			return
		}
		ok(w, r)
	})
	s.metrics.Store(&handlerBox{promhttp.HandlerFor(opts.Registry, promhttp.HandlerOpts{ErrorLog: slogErrorLog{opts.Logger}})})
	s.mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) { s.metrics.Load().h.ServeHTTP(w, r) })
	s.srv = &http.Server{
		Handler:           s.mux,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(opts.Logger.Handler(), slog.LevelWarn),
	}
	s.srv.RegisterOnShutdown(func() { close(s.closing) })
	return s
}

type slogErrorLog struct{ l *slog.Logger }

func (e slogErrorLog) Println(v ...any) { e.l.Error("metrics", "err", v) }

// Handle mounts h at pattern (Go ServeMux syntax).
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// Handler returns the root handler.
func (s *Server) Handler() http.Handler { return s.mux }

// Name returns "http".
func (s *Server) Name() string { return "http" }

// Serve serves HTTP on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Shutdown stops the server, waiting for in-flight requests until ctx ends.
// Hijacked connections (WebSockets) belong to their adapters.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		return s.srv.Close()
	}
	return err
}
