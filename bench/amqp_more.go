package main

import (
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// amqpLatency publishes n transient messages of size bytes (at least 8:
// the send time) at a fixed rate to a fresh queue with one auto-ack
// consumer and records publish→delivery latency. A publisher that falls
// behind its schedule catches up at once rather than lowering the rate.
func amqpLatency(size, perSec int) func(*runCtx) error {
	return func(rc *runCtx) error {
		conn, err := amqp.Dial(amqpURL(rc.b))
		if err != nil {
			return err
		}
		defer conn.Close()
		ch, _ := conn.Channel()
		q, err := ch.QueueDeclare("", false, true, true, false, nil)
		if err != nil {
			return err
		}
		cc, _ := conn.Channel()
		ds, err := cc.Consume(q.Name, "", true, false, false, false, nil)
		if err != nil {
			return err
		}
		lat := make([]time.Duration, 0, rc.n)
		done := make(chan struct{})
		go func() {
			defer close(done)
			for len(lat) < rc.n {
				select {
				case d := <-ds:
					if len(d.Body) >= 8 {
						lat = append(lat, time.Duration(time.Now().UnixNano()-int64(binary.LittleEndian.Uint64(d.Body))))
					}
				case <-time.After(10 * time.Second):
					return
				}
			}
		}()
		body := make([]byte, max(size, 8))
		interval := time.Second / time.Duration(perSec)
		t0 := time.Now()
		for i := 0; i < rc.n; i++ {
			if d := time.Until(t0.Add(time.Duration(i) * interval)); d > 0 {
				time.Sleep(d)
			}
			binary.LittleEndian.PutUint64(body, uint64(time.Now().UnixNano()))
			if err := ch.Publish("", q.Name, false, false, amqp.Publishing{Body: body}); err != nil {
				return err
			}
		}
		<-done
		rc.delivered, rc.lat = len(lat), lat
		return nil
	}
}

// amqpAppend: p publishers, each on its own connection with up to window
// unconfirmed 1 KiB persistent messages, into a durable queue of type
// qtype ("stream" or "classic") that nobody consumes; counts confirms.
func amqpAppend(qtype string, p, window int) func(*runCtx) error {
	return func(rc *runCtx) error {
		conn, err := amqp.Dial(amqpURL(rc.b))
		if err != nil {
			return err
		}
		defer conn.Close()
		ch, _ := conn.Channel()
		name := fmt.Sprintf("bench-%s-%d", qtype, time.Now().UnixNano())
		if _, err := ch.QueueDeclare(name, true, false, false, false, amqp.Table{"x-queue-type": qtype}); err != nil {
			return err
		}
		defer ch.QueueDelete(name, false, false, false)
		per := rc.n / p
		rc.expected = per * p
		var wg sync.WaitGroup
		var confirmed atomic.Int64
		errc := make(chan error, p)
		body := make([]byte, 1024)
		for i := 0; i < p; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := amqp.Dial(amqpURL(rc.b))
				if err != nil {
					errc <- err
					return
				}
				defer c.Close()
				pc, _ := c.Channel()
				if err := pc.Confirm(false); err != nil {
					errc <- err
					return
				}
				acks := pc.NotifyPublish(make(chan amqp.Confirmation, window))
				outstanding := 0
				wait := func() bool {
					select {
					case a, ok := <-acks:
						if !ok {
							return false
						}
						outstanding--
						if a.Ack {
							confirmed.Add(1)
						}
						return true
					case <-time.After(60 * time.Second):
						return false
					}
				}
				for j := 0; j < per; j++ {
					if err := pc.Publish("", name, false, false, amqp.Publishing{DeliveryMode: amqp.Persistent, Body: body}); err != nil {
						errc <- err
						return
					}
					outstanding++
					for outstanding >= window {
						if !wait() {
							errc <- fmt.Errorf("no confirm within 60 s")
							return
						}
					}
				}
				for outstanding > 0 {
					if !wait() {
						errc <- fmt.Errorf("no confirm within 60 s")
						return
					}
				}
			}()
		}
		wg.Wait()
		rc.stop() // the queue's deletion is not part of it
		close(errc)
		rc.delivered = int(confirmed.Load())
		return <-errc
	}
}
