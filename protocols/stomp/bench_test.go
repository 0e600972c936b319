package stomp

import (
	"fmt"
	"testing"
	"time"

	gostomp "github.com/go-stomp/stomp/v3"
)

// BenchmarkSendSubscribe measures SEND → MESSAGE throughput through the
// router with go-stomp's client on both ends, over loopback TCP.
func BenchmarkSendSubscribe(b *testing.B) {
	for _, dest := range []string{"/queue/bench", "/topic/bench"} {
		for _, mode := range []gostomp.AckMode{gostomp.AckAuto, gostomp.AckClientIndividual} {
			for _, size := range []int{64, 4096} {
				b.Run(fmt.Sprintf("%s/%s/%dB", dest[1:6], mode, size), func(b *testing.B) {
					benchSendSubscribe(b, dest, mode, size)
				})
			}
		}
	}
}

func benchSendSubscribe(b *testing.B, dest string, mode gostomp.AckMode, size int) {
	e := start(b, Options{})
	consumer := e.client()
	sub, err := consumer.Subscribe(dest, mode, gostomp.SubscribeOpt.Header("prefetch-count", "0"))
	if err != nil {
		b.Fatal(err)
	}
	producer := e.client()
	// A receipted frame after the SUBSCRIBE shows it is in place.
	if err := consumer.Send("/queue/sync", "", nil, gostomp.SendOpt.Receipt); err != nil {
		b.Fatal(err)
	}
	body := make([]byte, size)
	errs := make(chan error, 1)
	b.SetBytes(int64(size))
	b.ResetTimer()
	began := time.Now()
	go func() {
		for range b.N {
			if err := producer.Send(dest, "", body); err != nil {
				errs <- err
				return
			}
		}
		errs <- nil
	}()
	for i := 0; i < b.N; i++ {
		select {
		case m := <-sub.C:
			if m.Err != nil {
				b.Fatal(m.Err)
			}
			if mode != gostomp.AckAuto {
				if err := consumer.Ack(m); err != nil {
					b.Fatal(err)
				}
			}
		case <-time.After(10 * time.Second):
			b.Fatalf("stalled after %d of %d messages", i, b.N)
		}
	}
	elapsed := time.Since(began)
	b.StopTimer()
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
}
