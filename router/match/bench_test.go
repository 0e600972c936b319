package match

import (
	"fmt"
	"testing"

	"github.com/bourse-mq/bourse/core"
)

// benchTopic builds a topic exchange of about n bindings shaped like a
// telemetry deployment: n/100 sites (at least one), each with a
// "sensor.<site>.*.temp" and a "sensor.<site>.#" binding and otherwise exact
// "sensor.<site>.<n>.temp" bindings, spread over 64 queues, plus three global
// wildcard bindings. Every route matches about three destinations whatever
// n is, so the benchmark isolates the cost of the bindings that cannot match.
// It returns up to 1024 routing keys of exact bindings.
func benchTopic(n int) (*Topic[core.Dest], []string) {
	tp := NewTopic[core.Dest]()
	q := func(i int) core.Dest { return core.Dest{Name: fmt.Sprintf("q%d", i%64)} }
	sites := max(1, n/100)
	var keys []string
	for i := range n {
		site, k := i%sites, i/sites
		switch k {
		case 0:
			tp.Add(fmt.Sprintf("sensor.site%d.*.temp", site), q(i))
		case 1:
			tp.Add(fmt.Sprintf("sensor.site%d.#", site), q(i))
		default:
			key := fmt.Sprintf("sensor.site%d.%d.temp", site, i)
			tp.Add(key, q(i))
			if len(keys) < 1024 {
				keys = append(keys, key)
			}
		}
	}
	tp.Add("#.alarm", core.Dest{Name: "alarms"})
	tp.Add("sensor.*.42.#", core.Dest{Name: "hit"})
	tp.Add("*.*.*.humidity", core.Dest{Kind: core.ToExchange, Name: "hum"})
	return tp, keys
}

func BenchmarkTopicMatch(b *testing.B) {
	for _, n := range []int{10, 1000, 100000} {
		b.Run(fmt.Sprintf("bindings=%d", n), func(b *testing.B) {
			tp, keys := benchTopic(n)
			hits := 0
			fn := func(core.Dest) { hits++ }
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				tp.Match(keys[i%len(keys)], fn)
			}
			b.ReportMetric(float64(hits)/float64(b.N), "dests/op")
		})
	}
}

// BenchmarkTopicMatchParallel measures Match from every P at once, the
// broker's shape: many publishing connections routing through one exchange.
func BenchmarkTopicMatchParallel(b *testing.B) {
	tp, keys := benchTopic(100000)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		hits := 0
		fn := func(core.Dest) { hits++ }
		for i := 0; pb.Next(); i++ {
			tp.Match(keys[i%len(keys)], fn)
		}
	})
}

func BenchmarkTopicAddRemove(b *testing.B) {
	tp, _ := benchTopic(100000)
	d := core.Dest{Name: "churn"}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		p := "sensor.site7.*.temp"
		if i%2 == 1 {
			p = "sensor.new.site.#"
		}
		tp.Add(p, d)
		tp.Remove(p, d)
	}
}

func BenchmarkHeadersMatch(b *testing.B) {
	headers := core.Table{
		"format": "pdf", "type": "report", "size": int64(3), "region": "eu",
		"priority": int32(5), "x-trace": "abc",
	}
	for _, c := range []struct {
		name string
		args core.Table
	}{
		{"all", core.Table{"x-match": "all", "format": "pdf", "type": []byte("report"), "size": int8(3)}},
		{"any", core.Table{"x-match": "any", "format": "doc", "type": "log", "region": "eu"}},
		{"all-miss", core.Table{"format": "pdf", "absent": nil}},
	} {
		b.Run(c.name, func(b *testing.B) {
			hb, err := ParseHeadersBinding(c.args)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				hb.Match(headers)
			}
		})
	}
}
