package main

import (
	"fmt"
	"strings"
)

// goal is one target from the benchmark issue, checked against this run.
type goal struct {
	text  string
	check func(get func(scenario, broker string) (result, bool)) (measured string, met, known bool)
}

// ratioGoal compares f of Bourse in scenario sc with f of ref in refSc:
// at least target when atLeast, else at most target.
func ratioGoal(text, sc, refSc, ref string, f func(result) float64, unit string, atLeast bool, target float64) goal {
	return goal{text: text, check: func(get func(string, string) (result, bool)) (string, bool, bool) {
		bo, ok1 := get(sc, "bourse")
		rr, ok2 := get(refSc, ref)
		if !ok1 || !ok2 || f(bo) <= 0 || f(rr) <= 0 {
			return "", false, false
		}
		r := f(bo) / f(rr)
		m := fmt.Sprintf("%.2f× (%.4g vs %.4g %s)", r, f(bo), f(rr), unit)
		if atLeast {
			return m, r >= target, true
		}
		return m, r <= target, true
	}}
}

// bourseGoal checks a figure of Bourse alone.
func bourseGoal(text, sc string, ok func(result) (string, bool)) goal {
	return goal{text: text, check: func(get func(string, string) (result, bool)) (string, bool, bool) {
		bo, found := get(sc, "bourse")
		if !found {
			return "", false, false
		}
		m, met := ok(bo)
		return m, met, true
	}}
}

func msgsPerS(r result) float64   { return r.MsgsPerS }
func cpuPerMsg(r result) float64  { return r.CPUusPer }
func p99(r result) float64        { return r.P99ms }
func kibPerConn(r result) float64 { return r.KiBPerConn }

func goals() []goal {
	const rmq, mosq = "rabbitmq", "mosquitto"
	var gs []goal
	for _, size := range []string{"16B", "1KiB"} {
		sc := "amqp-1to1-" + size + "-transient"
		gs = append(gs,
			ratioGoal("AMQP transient "+size+": ≤ 0.5× RabbitMQ's broker µs/msg", sc, sc, rmq, cpuPerMsg, "µs/msg", false, 0.5),
			ratioGoal("AMQP transient "+size+": ≥ 1.5× RabbitMQ's msgs/s", sc, sc, rmq, msgsPerS, "msgs/s", true, 1.5))
	}
	lat := "amqp-16B-latency-5000/s"
	fanin := "mqtt-fanin-1000x10/s"
	gs = append(gs,
		ratioGoal("AMQP transient 16 B p99 at a fixed 5,000/s ≤ RabbitMQ's", lat, lat, rmq, p99, "ms", false, 1),
		ratioGoal("AMQP transient 64 KiB ≥ 2× RabbitMQ's MB/s", "amqp-1to1-64KiB-transient", "amqp-1to1-64KiB-transient", rmq, msgsPerS, "msgs/s", true, 2),
		ratioGoal("AMQP persistent 1 KiB confirms, 1 publisher: ≥ 2× RabbitMQ's msgs/s", "amqp-persistent-1-publisher", "amqp-persistent-1-publisher", rmq, msgsPerS, "msgs/s", true, 2),
		ratioGoal("AMQP persistent 1 KiB confirms, 16 publishers: ≥ 3× RabbitMQ's msgs/s", "amqp-persistent-16-publishers", "amqp-persistent-16-publishers", rmq, msgsPerS, "msgs/s", true, 3),
		bourseGoal("AMQP persistent, 16 publishers: ≥ 10 messages per fsync", "amqp-persistent-16-publishers", func(r result) (string, bool) {
			return fmt.Sprintf("%.1f msgs/fsync", r.MsgsPerFsync), r.MsgsPerFsync >= 10
		}),
		ratioGoal("Fan-out 1→8: ≥ 2× RabbitMQ's deliveries/s", "amqp-fanout-1to8", "amqp-fanout-1to8", rmq, msgsPerS, "deliveries/s", true, 2),
		ratioGoal("Fan-out 1→8: ≤ 0.5× RabbitMQ's broker µs/delivery", "amqp-fanout-1to8", "amqp-fanout-1to8", rmq, cpuPerMsg, "µs/delivery", false, 0.5),
		ratioGoal("MQTT QoS 0: ≥ 2× Mosquitto's msgs/s", "mqtt-qos0", "mqtt-qos0", mosq, msgsPerS, "msgs/s", true, 2),
		ratioGoal("MQTT QoS 0: ≥ 0.75× bare mochi's msgs/s", "mqtt-qos0", "mqtt-qos0", "mochi", msgsPerS, "msgs/s", true, 0.75),
		ratioGoal("MQTT QoS 1: ≥ 1.5× Mosquitto's msgs/s", "mqtt-qos1", "mqtt-qos1", mosq, msgsPerS, "msgs/s", true, 1.5),
		bourseGoal("MQTT QoS 1: zero loss", "mqtt-qos1", func(r result) (string, bool) {
			return fmt.Sprintf("%d missing", r.Missing), r.Missing == 0
		}),
		bourseGoal("MQTT fan-in 1,000 × 10/s: sustained (≥ 95% of 10,000 msgs/s while publishing), 0 missing", fanin, func(r result) (string, bool) {
			return fmt.Sprintf("%.0f msgs/s, %d missing", r.MsgsPerS, r.Missing), r.MsgsPerS >= 9500 && r.Missing == 0
		}),
		ratioGoal("MQTT fan-in: p99 ≤ 1.5× Mosquitto's", fanin, fanin, mosq, p99, "ms", false, 1.5),
		bourseGoal("Idle MQTT connections: ≤ 16 KiB RSS each", "conn-scale-mqtt", func(r result) (string, bool) {
			return fmt.Sprintf("%.1f KiB/conn", r.KiBPerConn), r.KiBPerConn <= 16 && r.Missing == 0
		}),
		ratioGoal("Idle AMQP connections: ≤ RabbitMQ's RSS each", "conn-scale-amqp", "conn-scale-amqp", rmq, kibPerConn, "KiB/conn", false, 1),
		ratioGoal("Idle STOMP connections: ≤ RabbitMQ's RSS each", "conn-scale-stomp", "conn-scale-stomp", rmq, kibPerConn, "KiB/conn", false, 1),
	)
	for _, sc := range []string{"stomp-queue", "stomp-topic-1to2"} {
		gs = append(gs,
			ratioGoal("STOMP "+strings.TrimPrefix(sc, "stomp-")+": ≥ 2× RabbitMQ's msgs/s", sc, sc, rmq, msgsPerS, "msgs/s", true, 2),
			ratioGoal("STOMP "+strings.TrimPrefix(sc, "stomp-")+": ≤ 0.5× RabbitMQ's broker µs/msg", sc, sc, rmq, cpuPerMsg, "µs/msg", false, 0.5))
	}
	cross := "cross-mqtt-to-amqp-latency-1000/s"
	gs = append(gs,
		ratioGoal("MQTT → AMQP p99 at 1,000/s ≤ RabbitMQ's", cross, cross, rmq, p99, "ms", false, 1),
		ratioGoal("Stream append 1 KiB: ≥ 5× RabbitMQ's persistent (classic queue, same load) msgs/s", "stream-append-1KiB-16-publishers", "classic-append-1KiB-16-publishers", rmq, msgsPerS, "msgs/s", true, 5),
	)
	return gs
}

// writeGoals writes the Goals section: each target, what this run
// measured, and whether it is met.
func writeGoals(b *strings.Builder, rs []result) {
	get := func(sc, br string) (result, bool) {
		for _, r := range rs {
			if r.Scenario == sc && r.Broker == br {
				return r, true
			}
		}
		return result{}, false
	}
	met, total := 0, 0
	var rows strings.Builder
	for _, g := range goals() {
		m, ok, known := g.check(get)
		status := "not measured"
		if known {
			total++
			status = "not met"
			if ok {
				met++
				status = "met"
			}
		}
		fmt.Fprintf(&rows, "| %s | %s | %s |\n", g.text, m, status)
	}
	fmt.Fprintf(b, "## Goals\n\nComputed from this run's medians (Bourse ÷ reference). %d of %d measured goals met.\n\n", met, total)
	b.WriteString("| goal | measured | status |\n|---|---|---|\n")
	b.WriteString(rows.String())
}
