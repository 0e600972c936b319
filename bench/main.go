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
	"syscall"
	"time"
)

func main() {
	quick := flag.Bool("quick", false, "fewer messages (a smoke run)")
	runs := flag.Int("runs", 3, "runs per scenario and broker (medians are reported)")
	filter := flag.String("scenarios", "", "comma-separated substrings of scenario names to run")
	out := flag.String("out", "bench/RESULTS.md", "Markdown results file")
	flag.Parse()
	log.SetFlags(log.Ltime)

	raiseFDLimit()
	bin, mochiBin := "bin/bourse-bench", "bin/mochibare-bench"
	for out, pkg := range map[string]string{bin: "./cmd/bourse", mochiBin: "./bench/mochibare"} {
		if b, err := exec.Command("go", "build", "-o", out, pkg).CombinedOutput(); err != nil {
			log.Fatalf("build %s: %v\n%s", pkg, err, b)
		}
	}
	scale := 1
	if *quick {
		scale = 5
	}
	amqpRefs := []string{"bourse", "rabbitmq"}
	mqttRefs := []string{"bourse", "mosquitto", "mochi", "rabbitmq"}
	scenarios := []scenario{
		{name: "amqp-1to1-16B-transient", brokers: amqpRefs, run: simple(amqpPair(16, false)), n: 100000},
		{name: "amqp-1to1-1KiB-transient", brokers: amqpRefs, run: simple(amqpPair(1024, false)), n: 100000},
		{name: "amqp-1to1-64KiB-transient", brokers: amqpRefs, run: simple(amqpPair(64<<10, false)), n: 10000},
		{name: "amqp-16B-latency-5000/s", brokers: amqpRefs, run: amqpLatency(16, 5000), n: 25000},
		{name: "amqp-1to1-1KiB-persistent-confirms", brokers: amqpRefs, run: simple(amqpPair(1024, true)), n: 20000, fsyncs: true},
		{name: "amqp-persistent-1-publisher", brokers: amqpRefs, run: simple(amqpPersistentPublishers(1)), n: 3000, fsyncs: true},
		{name: "amqp-persistent-16-publishers", brokers: amqpRefs, run: simple(amqpPersistentPublishers(16)), n: 16000, fsyncs: true},
		{name: "amqp-fanout-1to8", brokers: amqpRefs, run: simple(amqpFanout), n: 160000, expected: func(n int) int { return n / 8 * 8 }},
		{name: "stream-append-1KiB-16-publishers", brokers: amqpRefs, run: amqpAppend("stream", 16, 64), n: 64000, fsyncs: true},
		{name: "classic-append-1KiB-16-publishers", brokers: amqpRefs, run: amqpAppend("classic", 16, 64), n: 64000, fsyncs: true},
		{name: "mqtt-qos0", brokers: mqttRefs, run: simple(mqttPair(0)), n: 100000},
		{name: "mqtt-qos1", brokers: mqttRefs, run: simple(mqttPair(1)), n: 30000},
		{name: "mqtt-fanin-1000x10/s", brokers: mqttRefs, run: mqttFanin(1000, 10), n: 100000},
		{name: "stomp-queue", brokers: amqpRefs, run: simple(stompQueue), n: 50000},
		{name: "stomp-topic-1to2", brokers: amqpRefs, run: stompTopic(2), n: 50000},
		{name: "cross-mqtt-to-amqp-latency-1000/s", brokers: amqpRefs, run: simple(mqttToAMQPLatency), n: 5000},
		{name: "conn-scale-mqtt", brokers: []string{"bourse", "mosquitto", "mochi"}, run: connScale("mqtt"), n: 10000, fresh: true},
		{name: "conn-scale-amqp", brokers: amqpRefs, run: connScale("amqp"), n: 2000, fresh: true},
		{name: "conn-scale-stomp", brokers: amqpRefs, run: connScale("stomp"), n: 2000, fresh: true},
		// Cluster mode: the same load through one node of an embedded
		// cluster of one and of three (the clients on node 0).
		{name: "cluster-persistent-16-publishers", brokers: []string{"bourse", "bourse-cluster1", "bourse-cluster3"},
			run: simple(amqpPersistentPublishers(16)), n: 16000},
	}
	brokers := map[string]*broker{}
	start := map[string]func() (*broker, error){
		"bourse":          func() (*broker, error) { return startBourse(bin) },
		"mochi":           func() (*broker, error) { return startMochi(mochiBin) },
		"rabbitmq":        startRabbit,
		"mosquitto":       startMosquitto,
		"bourse-cluster1": func() (*broker, error) { return startBourseCluster(bin, 1) },
		"bourse-cluster3": func() (*broker, error) { return startBourseCluster(bin, 3) },
	}
	// Start only the brokers the selected scenarios use.
	needed := map[string]bool{}
	for _, sc := range scenarios {
		if *filter == "" || matches(sc.name, *filter) {
			for _, bn := range sc.brokers {
				needed[bn] = true
			}
		}
	}
	defer func() {
		for _, b := range brokers {
			b.stop()
		}
	}()
	for name, fn := range start {
		if !needed[name] {
			continue
		}
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
				if sc.fresh && bn != "rabbitmq" {
					// A broker of its own, so memory freed by earlier
					// scenarios cannot hide what this one costs. RabbitMQ
					// takes too long to start; it keeps its instance, which
					// if anything understates its figure.
					fb, err := start[bn]()
					if err != nil {
						log.Printf("%s on fresh %s: %v", sc.name, bn, err)
						continue
					}
					b = fb
				}
				res, err := runOnce(sc, b, n)
				if b != brokers[bn] {
					b.stop()
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

// runOnce runs one scenario once against one broker and turns what it
// measured into a result.
func runOnce(sc scenario, b *broker, n int) (result, error) {
	rc := &runCtx{b: b, n: n, pid: b.pidFn()}
	var f0 float64
	if sc.fsyncs {
		f0 = b.fsyncs()
	}
	rc.start()
	err := sc.run(rc)
	rc.stop()
	wall := rc.t1.Sub(rc.t0).Seconds()
	cpu := rc.c1 - rc.c0
	res := result{Scenario: sc.name, Broker: b.name, Messages: rc.delivered, Seconds: wall, LoadAvg: loadAvg(),
		Conns: rc.conns, KiBPerConn: rc.kibPerConn, RSSBeforeMiB: rc.rssBefore / 1024, RSSAfterMiB: rc.rssAfter / 1024}
	if rc.delivered > 0 {
		res.MsgsPerS = float64(rc.delivered) / wall
		if rc.rate > 0 {
			res.MsgsPerS = rc.rate
		}
		res.CPUusPer = cpu / float64(rc.delivered) * 1e6
	}
	expected := n
	if sc.expected != nil {
		expected = sc.expected(n)
	}
	if rc.expected > 0 {
		expected = rc.expected
	}
	res.Missing = expected - rc.delivered
	if sc.fsyncs {
		if d := b.fsyncs() - f0; d > 0 && rc.delivered > 0 {
			res.MsgsPerFsync = float64(rc.delivered) / d
		}
	}
	if lat := rc.lat; len(lat) > 0 {
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		q := func(p float64) float64 { return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))]) / 1e6 }
		res.P50ms, res.P99ms, res.P999ms = q(0.50), q(0.99), q(0.999)
	}
	return res, err
}

// raiseFDLimit lifts the open-file limit for the bench process and the
// brokers it starts (they inherit it): conn-scale holds 10,000 client
// sockets here and as many in the broker.
func raiseFDLimit() {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		log.Printf("getrlimit: %v", err)
		return
	}
	want := uint64(1 << 18)
	if lim.Max < want {
		// Raising the hard limit needs root; otherwise take the soft
		// limit up to the hard one.
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: want, Max: want}); err == nil {
			return
		}
		want = lim.Max
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: want, Max: lim.Max}); err != nil {
		log.Printf("setrlimit: %v", err)
	}
}

func matches(name, filter string) bool {
	for _, f := range strings.Split(filter, ",") {
		if f != "" && strings.Contains(name, f) {
			return true
		}
	}
	return false
}

// median takes the run with the median msgs/s, its other figures with it.
// Idle-connection runs take the median KiB per connection instead, and the
// fixed-rate runs (the ones that record latency, where msgs/s is the
// schedule's) the median p99.
func median(rs []result) result {
	key := func(r result) float64 {
		switch {
		case strings.HasPrefix(r.Scenario, "conn-scale"):
			return r.KiBPerConn
		case r.P99ms > 0:
			return r.P99ms
		}
		return r.MsgsPerS
	}
	sort.Slice(rs, func(i, j int) bool { return key(rs[i]) < key(rs[j]) })
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
	b.WriteString(" (the run with the median msgs/s; for the fixed-rate scenarios that record latency, the run with the median p99). `make bench` reproduces it. The machine is shared: compare ratios within this table, not figures across runs, and see the load column (1-minute load average at the end of the run; other jobs may be using the machine too).\n\n")
	b.WriteString("Broker CPU is the broker process's user+system time (/proc) per delivered message; the clients run in the bench process. ")
	b.WriteString("`mochi` is a bare mochi-mqtt server with default options (bench/mochibare), the library Bourse's MQTT adapter embeds.\n\n")
	writeGoals(&b, rs)
	b.WriteString("\n## Throughput and latency\n\n")
	b.WriteString("| scenario | broker | msgs/s | broker CPU µs/msg | p50 / p99 / p999 ms | missing | msgs/fsync | load | Bourse ÷ ref msgs/s | Bourse ÷ ref CPU/msg |\n|---|---|---:|---:|---|---:|---:|---:|---:|---:|\n")
	bourse := map[string]result{}
	for _, r := range rs {
		if r.Broker == "bourse" {
			bourse[r.Scenario] = r
		}
	}
	var conns []result
	for _, r := range rs {
		if strings.HasPrefix(r.Scenario, "conn-scale") {
			conns = append(conns, r)
			continue
		}
		lat, ratio, cpuRatio, perFsync := "", "", "", ""
		if r.P50ms > 0 {
			lat = fmt.Sprintf("%.2f / %.2f / %.2f", r.P50ms, r.P99ms, r.P999ms)
		}
		if r.MsgsPerFsync > 0 {
			perFsync = fmt.Sprintf("%.1f", r.MsgsPerFsync)
		}
		if bo, ok := bourse[r.Scenario]; ok && r.Broker != "bourse" && r.MsgsPerS > 0 && r.CPUusPer > 0 {
			ratio = fmt.Sprintf("%.2f×", bo.MsgsPerS/r.MsgsPerS)
			cpuRatio = fmt.Sprintf("%.2f×", bo.CPUusPer/r.CPUusPer)
		}
		fmt.Fprintf(&b, "| %s | %s | %.0f | %.1f | %s | %d | %s | %s | %s | %s |\n", r.Scenario, r.Broker, r.MsgsPerS, r.CPUusPer, lat, r.Missing, perFsync, r.LoadAvg, ratio, cpuRatio)
	}
	b.WriteString(`
How to read the scenario names: amqp-1to1 is one publisher and one consumer on one queue (persistent: windows of 100 unconfirmed and 100 unacked); amqp-persistent-N-publishers waits for each confirm before the next publish; amqp-16B-latency-5000/s publishes at a fixed 5,000/s and measures publish→delivery; stream-append and classic-append are 16 publishers with 64 unconfirmed each, 1 KiB persistent, into a stream (x-queue-type=stream) or a durable classic queue, nobody consuming; mqtt-fanin-1000x10/s is 1,000 connections each publishing 16 B at QoS 1 ten times a second to one QoS 1 subscriber of a wildcard, and its msgs/s is what reached the subscriber while the publishers ran; stomp-topic-1to2 counts deliveries to two /topic/ subscribers. msgs/fsync is Bourse's delivered or confirmed messages per fsync (its /metrics, bourse_fsync_seconds_count). cluster-persistent-16-publishers is amqp-persistent-16-publishers through Bourse alone, then through node 0 of an embedded cluster of one and of three nodes (bourse-cluster1, bourse-cluster3: messages in JetStream, fsynced on every write; the CPU column is node 0's only).
`)
	if len(conns) > 0 {
		b.WriteString("\n## Idle connections\n\n")
		b.WriteString("Resident memory (VmRSS) of the broker process before and after opening the connections, read after a settle pause; Bourse, Mosquitto and mochi start fresh for each run, RabbitMQ keeps its instance. MQTT and STOMP connections are raw CONNECT/CONNACK (CONNECTED) exchanges with heart-beats off or a 10-minute keep-alive; AMQP connections are amqp091-go with its default 10 s heartbeat and no channel.\n\n")
		b.WriteString("| scenario | broker | connections | failed | RSS before MiB | RSS after MiB | KiB/conn | Bourse ÷ ref |\n|---|---|---:|---:|---:|---:|---:|---:|\n")
		for _, r := range conns {
			ratio := ""
			if bo, ok := bourse[r.Scenario]; ok && r.Broker != "bourse" && r.KiBPerConn > 0 {
				ratio = fmt.Sprintf("%.2f×", bo.KiBPerConn/r.KiBPerConn)
			}
			fmt.Fprintf(&b, "| %s | %s | %d | %d | %.1f | %.1f | %.1f | %s |\n", r.Scenario, r.Broker, r.Conns, r.Missing, r.RSSBeforeMiB, r.RSSAfterMiB, r.KiBPerConn, ratio)
		}
	}
	b.WriteString("\nThe stream fetch comparison (sendfile endpoint vs bare sendfile vs copy) is `go test -bench StreamFetch ./e2e` (README, Streams).\n")
	return os.WriteFile(path, []byte(b.String()), 0o644)
}
