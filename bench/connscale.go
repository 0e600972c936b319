package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// connScale opens n idle connections of protocol proto ("mqtt", "amqp"
// or "stomp") and reports the broker's resident memory per connection:
// VmRSS after a settle pause minus VmRSS before (after a first
// connection). MQTT and STOMP use a raw
// CONNECT exchange (one socket, no client goroutines); AMQP uses amqp091-go.
func connScale(proto string) func(*runCtx) error {
	return func(rc *runCtx) error {
		// One connection first, outside the count, so that one-time costs
		// (a broker's first login hashes the password: argon2id takes 19
		// MiB, which the Go runtime returns to the system only slowly) are
		// not charged to the connections.
		warm, err := idleConn(rc.b, proto, rc.n)
		if err != nil {
			return fmt.Errorf("warm-up connection: %w", err)
		}
		defer warm.Close()
		time.Sleep(time.Second)
		rc.rssBefore = rssKiB(rc.pid)
		closers := make([]io.Closer, rc.n)
		var opened atomic.Int64
		var firstErr error
		var once sync.Once
		var wg sync.WaitGroup
		sem := make(chan struct{}, 64)
		deadline := time.Now().Add(120 * time.Second)
		for i := range closers {
			if time.Now().After(deadline) {
				break
			}
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				c, err := idleConn(rc.b, proto, i)
				if err != nil {
					once.Do(func() { firstErr = err })
					return
				}
				closers[i] = c
				opened.Add(1)
			}()
		}
		wg.Wait()
		rc.stop()
		time.Sleep(5 * time.Second)
		rc.rssAfter = rssKiB(rc.pid)
		rc.delivered = int(opened.Load())
		rc.conns = rc.delivered
		if rc.conns > 0 {
			rc.kibPerConn = (rc.rssAfter - rc.rssBefore) / float64(rc.conns)
		}
		for _, c := range closers {
			if c != nil {
				wg.Add(1)
				sem <- struct{}{}
				go func() { defer func() { <-sem; wg.Done() }(); c.Close() }()
			}
		}
		wg.Wait()
		if rc.b.name == "rabbitmq" {
			time.Sleep(3 * time.Second) // let it tear the connections down
		}
		return firstErr
	}
}

func idleConn(b *broker, proto string, i int) (io.Closer, error) {
	switch proto {
	case "amqp":
		return amqp.Dial(amqpURL(b))
	case "mqtt":
		return rawMQTT(b, fmt.Sprintf("idle-%d-%d", time.Now().UnixNano(), i), 600)
	case "stomp":
		return rawSTOMP(b)
	}
	return nil, fmt.Errorf("unknown protocol %q", proto)
}

// rawSTOMP sends a STOMP 1.2 CONNECT without heart-beats and waits for
// CONNECTED.
func rawSTOMP(b *broker) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", b.stomp, 10*time.Second)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, "CONNECT\naccept-version:1.2\nhost:/\nlogin:guest\npasscode:guest\nheart-beat:0,0\n\n\x00"); err != nil {
		c.Close()
		return nil, err
	}
	r := bufio.NewReader(c)
	frame, err := r.ReadString(0)
	if err != nil {
		c.Close()
		return nil, err
	}
	if !bytes.HasPrefix(bytes.TrimLeft([]byte(frame), "\r\n"), []byte("CONNECTED")) {
		c.Close()
		return nil, fmt.Errorf("stomp: %.60q", frame)
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}
