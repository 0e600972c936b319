// Command demo is Bourse's demo, the story from the project's seed: a
// payment service publishes "payment received" events into a stream
// (AMQP); an order service reads the stream and sends a "send invoice"
// command to a queue (STOMP); a communication service takes the command
// (AMQP) and "sends" the invoice; sensors publish telemetry (MQTT) that a
// dashboard shows live, with the payments and invoices, in a web page
// speaking STOMP over WebSocket.
//
//	demo payments|orders|comms|sensors|dashboard|all
//
// Addresses come from the environment (defaults: Bourse's defaults):
// BOURSE_AMQP_URL, BOURSE_STOMP_ADDR, BOURSE_MQTT_ADDR, BOURSE_WS_URL,
// BOURSE_USER and BOURSE_PASS (STOMP, MQTT and the page; AMQP takes them
// from its URL), DASHBOARD_ADDR, DEMO_RATE (payments per second).
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/go-stomp/stomp/v3"
)

func env(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

var (
	amqpURL   = env("BOURSE_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
	stompAddr = env("BOURSE_STOMP_ADDR", "127.0.0.1:61613")
	mqttAddr  = env("BOURSE_MQTT_ADDR", "127.0.0.1:1883")
	wsURL     = env("BOURSE_WS_URL", "ws://127.0.0.1:15672/ws")
	dashAddr  = env("DASHBOARD_ADDR", "127.0.0.1:8080")
	user      = env("BOURSE_USER", "guest")
	pass      = env("BOURSE_PASS", "guest")
)

func rate() time.Duration {
	n, err := strconv.ParseFloat(env("DEMO_RATE", "1"), 64)
	if err != nil || n <= 0 {
		n = 1
	}
	return time.Duration(float64(time.Second) / n)
}

func main() {
	log.SetFlags(log.Ltime | log.Lmicroseconds)
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: demo payments|orders|comms|sensors|dashboard|all")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	services := map[string]func(context.Context) error{
		"payments": payments, "orders": orders, "comms": comms, "sensors": sensors, "dashboard": dashboard,
	}
	if os.Args[1] == "all" {
		// payments declares the exchange and the stream the others use:
		// start it first (each service retries anyway).
		go retry(ctx, "payments", payments)
		time.Sleep(time.Second)
		for name, run := range services {
			if name != "payments" {
				go retry(ctx, name, run)
			}
		}
		<-ctx.Done()
		return
	}
	run, ok := services[os.Args[1]]
	if !ok {
		fmt.Fprintln(os.Stderr, "unknown service", os.Args[1])
		os.Exit(2)
	}
	if err := retry(ctx, os.Args[1], run); err != nil && ctx.Err() == nil {
		log.Fatalf("%s: %v", os.Args[1], err)
	}
}

// retry runs a service again after an error (the broker restarting, say)
// until ctx ends.
func retry(ctx context.Context, name string, run func(context.Context) error) error {
	for {
		err := run(ctx)
		if ctx.Err() != nil {
			return nil
		}
		log.Printf("%s: %v; retrying in 1s", name, err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

// closeStomp ends a STOMP connection: politely (DISCONNECT, wait for its
// receipt) when all went well, at once after an error. go-stomp's
// Disconnect waits up to 30 s for a receipt that a connection the broker
// has closed with an ERROR frame never brings, which held the dashboard
// back from retrying for as long.
func closeStomp(st *stomp.Conn, failed error) {
	if failed != nil {
		_ = st.MustDisconnect()
		return
	}
	_ = st.Disconnect()
}
