// Command bench measures Bourse side by side with RabbitMQ and Mosquitto
// on this machine, in one run, alternating brokers, and writes
// bench/RESULTS.md. `make bench` installs the reference brokers first.
//
//	go run ./bench [-quick] [-runs 3] [-scenarios amqp,mqtt] [-out bench/RESULTS.md]
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strings"
	"time"
)

func main() {
	quick := flag.Bool("quick", false, "fewer messages (a smoke run)")
	runs := flag.Int("runs", 3, "runs per scenario and broker (medians are reported)")
	filter := flag.String("scenarios", "", "comma-separated substrings of scenario names to run")
	out := flag.String("out", "bench/RESULTS.md", "Markdown results file")
	flag.Parse()
	log.SetFlags(log.Ltime)

	bin := "bin/bourse-bench"
	if b, err := exec.Command("go", "build", "-o", bin, "./cmd/bourse").CombinedOutput(); err != nil {
		log.Fatalf("build bourse: %v\n%s", err, b)
	}
	scale := 1
	if *quick {
		scale = 5
	}
	scenarios := []scenario{
		{name: "amqp-1to1-16B-transient", proto: "amqp", brokers: []string{"bourse", "rabbitmq"}, run: amqpPair(16, false), n: 100000},
		{name: "amqp-1to1-1KiB-transient", proto: "amqp", brokers: []string{"bourse", "rabbitmq"}, run: amqpPair(1024, false), n: 100000},
		{name: "amqp-1to1-64KiB-transient", proto: "amqp", brokers: []string{"bourse", "rabbitmq"}, run: amqpPair(64<<10, false), n: 10000},
		{name: "amqp-1to1-1KiB-persistent-confirms", proto: "amqp", brokers: []string{"bourse", "rabbitmq"}, run: amqpPair(1024, true), n: 20000},
		{name: "amqp-persistent-1-publisher", proto: "amqp", brokers: []string{"bourse", "rabbitmq"}, run: amqpPersistentPublishers(1), n: 3000},
		{name: "amqp-persistent-16-publishers", proto: "amqp", brokers: []string{"bourse", "rabbitmq"}, run: amqpPersistentPublishers(16), n: 16000},
		{name: "amqp-fanout-1to8", proto: "amqp", brokers: []string{"bourse", "rabbitmq"}, run: amqpFanout, n: 160000},
		{name: "mqtt-qos0", proto: "mqtt", brokers: []string{"bourse", "mosquitto", "rabbitmq"}, run: mqttPair(0), n: 100000},
		{name: "mqtt-qos1", proto: "mqtt", brokers: []string{"bourse", "mosquitto", "rabbitmq"}, run: mqttPair(1), n: 30000},
		{name: "stomp-queue", proto: "stomp", brokers: []string{"bourse", "rabbitmq"}, run: stompQueue, n: 50000},
		{name: "cross-mqtt-to-amqp-latency-1000/s", proto: "mqtt", brokers: []string{"bourse", "rabbitmq"}, run: mqttToAMQPLatency, n: 5000},
	}
	brokers := map[string]*broker{}
	start := map[string]func() (*broker, error){"bourse": func() (*broker, error) { return startBourse(bin) }, "rabbitmq": startRabbit, "mosquitto": startMosquitto}
	defer func() {
		for _, b := range brokers {
			b.stop()
		}
	}()
	for name, fn := range start {
		b, err := fn()
		if err != nil {
			log.Printf("%s not available: %v", name, err)
			continue
		}
		brokers[name] = b
		log.Printf("%s: amqp %s mqtt %s stomp %s", name, b.amqp, b.mqtt, b.stomp)
	}
	var all []result
	for _, sc := range scenarios {
		if *filter != "" && !matches(sc.name, *filter) {
			continue
		}
		n := max(sc.n/scale, 100)
		byBroker := map[string][]result{}
		for r := 0; r < *runs; r++ {
			for _, bn := range sc.brokers {
				b := brokers[bn]
				if b == nil {
					continue
				}
				pid := b.pidFn()
				c0, t0 := cpuSeconds(pid), time.Now()
				got, lat, err := sc.run(b, n)
				wall := time.Since(t0).Seconds()
				cpu := cpuSeconds(pid) - c0
				res := result{Scenario: sc.name, Broker: bn, Messages: got, Seconds: wall, LoadAvg: loadAvg()}
				if got > 0 {
					res.MsgsPerS = float64(got) / wall
					res.CPUusPer = cpu / float64(got) * 1e6
				}
				res.Missing = n - got
				if sc.name == "amqp-fanout-1to8" {
					res.Missing = n/8*8 - got
				}
				if len(lat) > 0 {
					q := func(p float64) float64 { return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))]) / 1e6 }
					res.P50ms, res.P99ms, res.P999ms = q(0.50), q(0.99), q(0.999)
				}
				if err != nil {
					log.Printf("%s on %s: %v", sc.name, bn, err)
				}
				line, _ := json.Marshal(res)
				fmt.Println(string(line))
				byBroker[bn] = append(byBroker[bn], res)
			}
		}
		for _, bn := range sc.brokers {
			if rs := byBroker[bn]; len(rs) > 0 {
				all = append(all, median(rs))
			}
		}
	}
	if err := writeResults(*out, all, *runs, *quick); err != nil {
		log.Fatal(err)
	}
	log.Printf("wrote %s", *out)
}

func matches(name, filter string) bool {
	for _, f := range strings.Split(filter, ",") {
		if f != "" && strings.Contains(name, f) {
			return true
		}
	}
	return false
}

// median takes the run with the median msgs/s (its other figures with it).
func median(rs []result) result {
	sort.Slice(rs, func(i, j int) bool { return rs[i].MsgsPerS < rs[j].MsgsPerS })
	m := rs[len(rs)/2]
	for _, r := range rs {
		if r.Missing > m.Missing {
			m.Missing = r.Missing // report the worst run's loss, never hide one
		}
	}
	return m
}

func machine() string {
	model := "?"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if strings.HasPrefix(l, "model name") {
				model = strings.TrimSpace(strings.SplitN(l, ":", 2)[1])
				break
			}
		}
	}
	kernel, _ := exec.Command("uname", "-r").Output()
	return fmt.Sprintf("%s, %d cores, Linux %s, %s", model, runtime.NumCPU(), strings.TrimSpace(string(kernel)), runtime.Version())
}

func writeResults(path string, rs []result, runs int, quick bool) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# Benchmarks: Bourse beside RabbitMQ and Mosquitto\n\n")
	fmt.Fprintf(&b, "Run %s on %s. Medians of %d alternating runs per broker", time.Now().UTC().Format("2006-01-02 15:04 MST"), machine(), runs)
	if quick {
		b.WriteString(" (quick mode: a fifth of the messages)")
	}
	b.WriteString(". `make bench` reproduces it. The machine is shared: compare ratios within this table, not figures across runs.\n\n")
	b.WriteString("Broker CPU is the broker process's user+system time (/proc) per delivered message; the clients run in the bench process.\n\n")
	b.WriteString("| scenario | broker | msgs/s | broker CPU µs/msg | p50 / p99 / p999 ms | missing | load | Bourse ÷ ref msgs/s | Bourse ÷ ref CPU/msg |\n|---|---|---:|---:|---|---:|---:|---:|---:|\n")
	bourse := map[string]result{}
	for _, r := range rs {
		if r.Broker == "bourse" {
			bourse[r.Scenario] = r
		}
	}
	for _, r := range rs {
		lat, ratio, cpuRatio := "", "", ""
		if r.P50ms > 0 {
			lat = fmt.Sprintf("%.2f / %.2f / %.2f", r.P50ms, r.P99ms, r.P999ms)
		}
		if bo, ok := bourse[r.Scenario]; ok && r.Broker != "bourse" && r.MsgsPerS > 0 && r.CPUusPer > 0 {
			ratio = fmt.Sprintf("%.2f×", bo.MsgsPerS/r.MsgsPerS)
			cpuRatio = fmt.Sprintf("%.2f×", bo.CPUusPer/r.CPUusPer)
		}
		fmt.Fprintf(&b, "| %s | %s | %.0f | %.1f | %s | %d | %s | %s | %s |\n", r.Scenario, r.Broker, r.MsgsPerS, r.CPUusPer, lat, r.Missing, r.LoadAvg, ratio, cpuRatio)
	}
	b.WriteString("\nNot in this table yet: mqtt-fanin (1,000 connections), conn-scale (10,000 idle connections), stream-append against RabbitMQ streams. The stream fetch comparison (sendfile endpoint vs bare sendfile vs copy) is `go test -bench StreamFetch ./e2e` (README, Streams).\n")
	return os.WriteFile(path, []byte(b.String()), 0o644)
}
