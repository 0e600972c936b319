package main

import (
	"fmt"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/bourse-mq/bourse/internal/config"
	"github.com/bourse-mq/bourse/internal/testkit"
)

// BenchmarkClusterPublish measures persistent 1 KiB publishes with
// confirms: 16 AMQP publishers, each waiting for its confirm before the
// next publish (bench's amqp-persistent-16-publishers), into one durable
// queue, through
//
//   - local: one Bourse without cluster mode (its own storage, group
//     commit);
//   - nodes=1: one node in cluster mode embedded (JetStream, one replica,
//     fsync on every write);
//   - nodes=3: three embedded nodes (three replicas), the publishers
//     spread over the three nodes.
//
// Each reports msgs/s; the run logs the ratios. Every node runs in this
// process (one machine's cores for all). A cluster starts per call, so fix
// the count:
//
//	go test -run '^$' -bench ClusterPublish -benchtime 8000x -count 3 -v ./cmd/bourse
//
// (-count repeats the three in turn; -v shows the logged ratios).
func BenchmarkClusterPublish(b *testing.B) {
	rates := map[string]float64{}
	for _, sc := range []struct {
		name  string
		nodes int
		local bool
	}{{"local", 1, true}, {"nodes=1", 1, false}, {"nodes=3", 3, false}} {
		b.Run(sc.name, func(b *testing.B) {
			rates[sc.name] = benchClusterPublish(b, sc.nodes, sc.local)
		})
	}
	if rates["nodes=1"] > 0 && rates["nodes=3"] > 0 && rates["local"] > 0 {
		b.Logf("msgs/s: local %.0f, 1 node %.0f, 3 nodes %.0f; 3 nodes ÷ 1 node %.2f×, 1 node ÷ local %.2f×",
			rates["local"], rates["nodes=1"], rates["nodes=3"], rates["nodes=3"]/rates["nodes=1"], rates["nodes=1"]/rates["local"])
	}
}

func benchClusterPublish(b *testing.B, nodes int, local bool) float64 {
	const pubs = 16
	c := startServeNodes(b, nodes, func(_ int, cfg *config.Config) {
		if local {
			cfg.Cluster = config.Default().Cluster
		}
	})
	defer c.stopAll()
	dial := func(i int) (*amqp.Connection, *amqp.Channel) {
		conn, err := amqp.Dial("amqp://guest:guest@" + c.addrs[i%nodes]["amqp"] + "/")
		if err != nil {
			b.Fatal(err)
		}
		ch, err := conn.Channel()
		if err != nil {
			b.Fatal(err)
		}
		return conn, ch
	}
	conn, ch := dial(0)
	defer conn.Close()
	if _, err := ch.QueueDeclare("bench", true, false, false, false, nil); err != nil {
		b.Fatal(err)
	}
	chans := make([]*amqp.Channel, pubs)
	for i := range pubs {
		pc, pch := dial(i)
		defer pc.Close()
		chans[i] = pch
	}
	ledger := testkit.NewLedger()
	errs := make([]error, pubs)
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for i, pch := range chans {
		n := b.N / pubs
		if i < b.N%pubs {
			n++
		}
		wg.Go(func() {
			errs[i] = testkit.PublishConfirmed(pch, testkit.Load{Queue: "bench", Name: fmt.Sprintf("p%d", i),
				Max: n, Window: 1, Size: 1024, ConfirmWait: 30 * time.Second}, ledger)
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	for _, err := range errs {
		if err != nil {
			b.Fatal(err)
		}
	}
	if _, k, nacked := ledger.Counts(); k != b.N {
		b.Fatalf("%d of %d confirmed (%d nacked)", k, b.N, nacked)
	}
	rate := float64(b.N) / elapsed.Seconds()
	b.ReportMetric(rate, "msgs/s")
	return rate
}
