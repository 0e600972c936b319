// Command mochibare is a plain mochi-mqtt server (default options, anyone
// may connect) for the benchmark: what Bourse's MQTT adapter costs on top
// of the library it embeds. It runs as its own process so that its CPU
// time can be read from /proc like every other broker's.
//
//	go run ./bench/mochibare -addr 127.0.0.1:1883
package main

import (
	"flag"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:1883", "TCP listen address (loopback)")
	flag.Parse()
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	s := mqtt.New(&mqtt.Options{Logger: logger})
	if err := s.AddHook(new(auth.AllowHook), nil); err != nil {
		logger.Error("add hook", "err", err)
		os.Exit(1)
	}
	if err := s.AddListener(listeners.NewTCP(listeners.Config{ID: "tcp", Address: *addr})); err != nil {
		logger.Error("listen", "addr", *addr, "err", err)
		os.Exit(1)
	}
	if err := s.Serve(); err != nil {
		logger.Error("serve", "err", err)
		os.Exit(1)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	_ = s.Close()
}
