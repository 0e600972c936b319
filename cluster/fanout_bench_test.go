package cluster_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/bourse-mq/bourse/cluster"
	"github.com/bourse-mq/bourse/core"
)

// BenchmarkFanoutPublishNoInterest is what the fan-out adds to a publish
// in embedded mode when no node listens to its subject (every publish to
// a shared queue by name, for one): the subject and the interest check.
func BenchmarkFanoutPublishNoInterest(b *testing.B) {
	n, err := cluster.Start(context.Background(), cluster.Options{Mode: cluster.ModeEmbedded, NodeName: "b",
		StoreDir: filepath.Join(b.TempDir(), "n"), Logger: quiet(), StartTimeout: 20 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	defer n.Close()
	m := &core.Message{Exchange: "amq.topic", RoutingKey: "sensors.lyon.temperature", Body: make([]byte, 100)}
	b.ReportAllocs()
	for b.Loop() {
		n.Fanout().Publish("/", m, false)
	}
}
