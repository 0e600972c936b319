package amqp

import (
	"fmt"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/bourse-mq/bourse/protocols/amqp/wire"
)

// One producer → one queue → one consumer with amqp091-go over loopback,
// in payload-size families:
//
//	(a) no confirms, auto-ack;
//	(b) publisher confirms (window of 1000 in flight), manual ack of every
//	    message, prefetch 100.
func BenchmarkPipeline(b *testing.B) {
	for _, size := range []struct {
		name string
		n    int
	}{{"16B", 16}, {"1KiB", 1024}} {
		b.Run("autoack/"+size.name, func(b *testing.B) { benchPipeline(b, size.n, false) })
		b.Run("confirm+ack/"+size.name, func(b *testing.B) { benchPipeline(b, size.n, true) })
	}
}

func benchPipeline(b *testing.B, size int, reliable bool) {
	e := startServer(b)
	_, pch := e.channel(b)
	_, cch := e.channel(b)
	q, err := pch.QueueDeclare("bench", false, false, false, false, nil)
	must(b, err)
	var confirms chan amqp091.Confirmation
	if reliable {
		must(b, cch.Qos(100, 0, false))
		must(b, pch.Confirm(false))
		confirms = pch.NotifyPublish(make(chan amqp091.Confirmation, 2048))
	}
	msgs, err := cch.Consume(q.Name, "", !reliable, false, false, false, nil)
	must(b, err)
	body := make([]byte, size)
	n := b.N
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()

	pubErr := make(chan error, 1)
	go func() {
		const window = 1000
		inflight := 0
		for i := 0; i < n; i++ {
			if reliable && inflight == window {
				select {
				case <-confirms:
					inflight--
				case <-time.After(10 * time.Second):
					pubErr <- errTimeout
					return
				}
			}
			if err := pch.Publish("", q.Name, false, false, amqp091.Publishing{Body: body}); err != nil {
				pubErr <- err
				return
			}
			inflight++
		}
		for reliable && inflight > 0 {
			select {
			case <-confirms:
				inflight--
			case <-time.After(10 * time.Second):
				pubErr <- errTimeout
				return
			}
		}
		pubErr <- nil
	}()
	for i := 0; i < n; i++ {
		select {
		case d := <-msgs:
			if reliable {
				if err := d.Ack(false); err != nil {
					b.Fatal(err)
				}
			}
		case <-time.After(10 * time.Second):
			b.Fatalf("stalled after %d of %d messages", i, n)
		}
	}
	if err := <-pubErr; err != nil {
		b.Fatal(err)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(n)/elapsed.Seconds(), "msgs/s")
}

type timeoutError struct{}

func (timeoutError) Error() string { return "timed out waiting for confirms" }

var errTimeout error = timeoutError{}

// BenchmarkServerRaw isolates the server's cost: a raw producer writes
// pre-encoded publishes in bulk, a raw no-ack consumer counts body frames.
// Allocations reported are nearly all the server's.
func BenchmarkServerRaw(b *testing.B) {
	for _, size := range []int{16, 1024, 64 << 10} {
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			e := startServer(b)
			cons := dialRaw(b, e.addr)
			cons.handshake(0)
			cons.send(1, &wire.ChannelOpen{})
			expectMethod[*wire.ChannelOpenOk](cons)
			cons.send(1, &wire.QueueDeclare{Queue: "raw"})
			expectMethod[*wire.QueueDeclareOk](cons)
			cons.send(1, &wire.BasicConsume{Queue: "raw", NoAck: true})
			expectMethod[*wire.BasicConsumeOk](cons)
			prod := dialRaw(b, e.addr)
			prod.handshake(0)
			prod.send(1, &wire.ChannelOpen{})
			expectMethod[*wire.ChannelOpenOk](prod)

			one := append(frameBytes(b, &wire.BasicPublish{RoutingKey: "raw"}), contentFrames(b, 1, string(make([]byte, size)), nil)...)
			var batch []byte
			for range 64 {
				batch = append(batch, one...)
			}
			n := b.N
			done := make(chan error, 1)
			go func() {
				_ = cons.nc.SetReadDeadline(time.Now().Add(time.Minute))
				for got := 0; got < n; {
					f, err := cons.fr.ReadFrame()
					if err != nil {
						done <- err
						return
					}
					if f.Type == wire.FrameBody {
						got++
					}
				}
				done <- nil
			}()
			b.SetBytes(int64(size))
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for sent := 0; sent < n; {
				k := min(64, n-sent)
				prod.write(batch[:k*len(one)])
				sent += k
			}
			if err := <-done; err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			b.ReportMetric(float64(n)/time.Since(start).Seconds(), "msgs/s")
		})
	}
}
