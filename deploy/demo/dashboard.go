package main

import (
	"context"
	"embed"
	"encoding/json"
	"io/fs"
	"log"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/go-stomp/stomp/v3"
)

//go:embed web
var web embed.FS

// board is what the dashboard has seen, for GET /data (the page itself
// gets everything live from Bourse over STOMP/WebSocket).
type board struct {
	mu        sync.Mutex
	Telemetry map[string]json.RawMessage `json:"telemetry"` // last reading per sensor
	Payments  int                        `json:"payments"`
	Invoices  int                        `json:"invoices"`
	LastEvent json.RawMessage            `json:"last_invoice,omitempty"`
}

// dashboard serves the page and GET /data, and follows telemetry, payments
// and invoices over STOMP to fill /data.
func dashboard(ctx context.Context) error {
	b := &board{Telemetry: map[string]json.RawMessage{}}
	page, _ := fs.Sub(web, "web")
	mux := http.NewServeMux()
	mux.Handle("/", http.FileServer(http.FS(page)))
	mux.HandleFunc("/config.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"ws": wsURL, "user": user, "pass": pass})
	})
	mux.HandleFunc("/data", func(w http.ResponseWriter, _ *http.Request) {
		b.mu.Lock()
		defer b.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(b)
	})
	ln, err := net.Listen("tcp", dashAddr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { <-ctx.Done(); srv.Close() }()
	go func() { _ = srv.Serve(ln) }()
	log.Printf("dashboard: open http://%s/", ln.Addr())
	defer srv.Close()

	st, err := stomp.Dial("tcp", stompAddr, stomp.ConnOpt.Login(user, pass), stomp.ConnOpt.Host("/"))
	if err != nil {
		return err
	}
	var failed error
	defer func() { closeStomp(st, failed) }()
	subs := map[string]func(*stomp.Message){
		"/topic/sensors.*.temperature": func(m *stomp.Message) {
			var r struct{ Sensor string }
			if json.Unmarshal(m.Body, &r) == nil && r.Sensor != "" {
				b.Telemetry[r.Sensor] = json.RawMessage(m.Body)
			}
		},
		"/exchange/payments/payment.#": func(*stomp.Message) { b.Payments++ },
		"/topic/events.invoice.sent":   func(m *stomp.Message) { b.Invoices++; b.LastEvent = json.RawMessage(m.Body) },
	}
	msgs := make(chan struct {
		m  *stomp.Message
		fn func(*stomp.Message)
	}, 64)
	for dest, fn := range subs {
		sub, err := st.Subscribe(dest, stomp.AckAuto)
		if err != nil {
			failed = err
			return err
		}
		go func() {
			for m := range sub.C {
				msgs <- struct {
					m  *stomp.Message
					fn func(*stomp.Message)
				}{m, fn}
			}
		}()
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case x := <-msgs:
			if x.m.Err != nil {
				// The broker refused a subscription (the payments
				// exchange is not declared yet, say) or went away.
				failed = x.m.Err
				return failed
			}
			b.mu.Lock()
			x.fn(x.m)
			b.mu.Unlock()
		}
	}
}
