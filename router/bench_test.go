package router

import (
	"fmt"
	"testing"

	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/router/queue"
)

// BenchmarkTopicRoute routes one message through a topic exchange holding n
// bindings, of which a handful match. A trie keeps the cost nearly flat in n.
func BenchmarkTopicRoute(b *testing.B) {
	for _, n := range []int{10, 1000, 100000} {
		b.Run(fmt.Sprintf("bindings=%d", n), func(b *testing.B) {
			v := vh(b)
			declareX(b, v, "t", Topic, nil)
			declareQ(b, v, "hit")
			for i := 0; i < n; i++ {
				qn := fmt.Sprintf("q%d", i%64)
				if i < 64 {
					declareQ(b, v, qn)
				}
				bindQ(b, v, "t", qn, fmt.Sprintf("sensor.site%d.%d.temp", i%97, i), nil)
			}
			bindQ(b, v, "t", "hit", "sensor.*.42.#", nil)
			m := &core.Message{Exchange: "t", RoutingKey: "sensor.site42.42.temp", Body: []byte("x")}
			hit, _ := v.Queue("hit", 0)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := v.Publish(m, PublishOptions{}); err != nil {
					b.Fatal(err)
				}
				if i%1024 == 0 {
					hit.Purge()
				}
			}
		})
	}
}

type benchConsumer struct{ ch chan queue.Delivery }

func (c *benchConsumer) Deliver(d queue.Delivery) bool {
	select {
	case c.ch <- d:
		return true
	default:
		return false
	}
}
func (c *benchConsumer) Cancelled(*queue.Queue, error) {}

// BenchmarkQueueThroughput measures enqueue + deliver + ack through one queue
// with 1 and 8 consumers acking from their own goroutines, prefetch 100.
func BenchmarkQueueThroughput(b *testing.B) {
	for _, consumers := range []int{1, 8} {
		b.Run(fmt.Sprintf("consumers=%d", consumers), func(b *testing.B) {
			v := vh(b)
			declareQ(b, v, "q")
			q, _ := v.Queue("q", 0)
			done := make(chan struct{}, 1024)
			for range consumers {
				c := &benchConsumer{ch: make(chan queue.Delivery, 100)}
				s, err := q.Consume(c, queue.ConsumeOptions{Prefetch: 100})
				if err != nil {
					b.Fatal(err)
				}
				go func() {
					for d := range c.ch {
						d.Queue.Ack(d.ID)
						s.Kick()
						done <- struct{}{}
					}
				}()
			}
			m := &core.Message{RoutingKey: "q", Body: make([]byte, 16)}
			b.ReportAllocs()
			b.ResetTimer()
			go func() {
				for i := 0; i < b.N; i++ {
					if _, err := v.Publish(m, PublishOptions{}); err != nil {
						panic(err)
					}
				}
			}()
			for i := 0; i < b.N; i++ {
				<-done
			}
		})
	}
}
