package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"
)

// metric reads one counter from the broker's /metrics.
func metric(b testing.TB, br *Broker, name string) float64 {
	b.Helper()
	resp, err := http.Get("http://" + br.Addrs["http"] + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == name {
			v, _ := strconv.ParseFloat(f[1], 64)
			return v
		}
	}
	b.Fatalf("metric %s not found", name)
	return 0
}

// BenchmarkPersistentConfirms publishes persistent 1 KiB messages to a
// durable queue through the real binary with amqp091-go, each publisher
// waiting for every confirm before its next publish, and reports msgs/s and
// messages per fsync: group commit is what makes 16 publishers much faster
// than 1.
func BenchmarkPersistentConfirms(b *testing.B) {
	for _, pubs := range []int{1, 16} {
		b.Run(fmt.Sprintf("publishers=%d", pubs), func(b *testing.B) {
			br := Start(b)
			ch := br.AMQPChannel(b)
			if _, err := ch.QueueDeclare("bench", true, false, false, false, amqp.Table{"x-max-length": int32(10000)}); err != nil {
				b.Fatal(err)
			}
			chans := make([]*amqp.Channel, pubs)
			for i := range chans {
				chans[i] = br.AMQPChannel(b)
				if err := chans[i].Confirm(false); err != nil {
					b.Fatal(err)
				}
			}
			body := make([]byte, 1024)
			f0 := metric(b, br, "bourse_journal_fsyncs_total")
			b.ResetTimer()
			var wg sync.WaitGroup
			per := b.N/pubs + 1
			for _, c := range chans {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range per {
						dc, err := c.PublishWithDeferredConfirmWithContext(context.Background(), "", "bench", false, false,
							amqp.Publishing{DeliveryMode: amqp.Persistent, Body: body})
						if err != nil {
							b.Error(err)
							return
						}
						if ok, err := dc.WaitContext(context.Background()); err != nil || !ok {
							b.Errorf("confirm: %v %v", ok, err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			n := float64(per * pubs)
			fsyncs := metric(b, br, "bourse_journal_fsyncs_total") - f0
			b.ReportMetric(n/b.Elapsed().Seconds(), "msgs/s")
			b.ReportMetric(fsyncs/b.Elapsed().Seconds(), "fsyncs/s")
			b.ReportMetric(n/fsyncs, "msgs/fsync")
		})
	}
}
