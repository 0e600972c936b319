package e2e

import (
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

func scrape(t *testing.T, br *Broker, path string) string {
	t.Helper()
	resp, err := http.Get("http://" + br.Addrs["http"] + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("%s: %d %s", path, resp.StatusCode, b)
	}
	return string(b)
}

// value returns the value of the series whose line starts with series.
func value(t *testing.T, body, series string) float64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` ([0-9.e+-]+)$`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no series %s in\n%s", series, body)
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// TestMetricsMoveWithTraffic: the Prometheus series follow real traffic, in
// Bourse's names, in RabbitMQ's names, and per object.
func TestMetricsMoveWithTraffic(t *testing.T) {
	br := Start(t)
	before := scrape(t, br, "/metrics")
	pub0 := value(t, before, "bourse_messages_published_total")
	ch := br.AMQPChannel(t)
	if _, err := ch.QueueDeclare("m1", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("s1", true, false, false, false, amqp.Table{"x-queue-type": "stream"}); err != nil {
		t.Fatal(err)
	}
	ch.Confirm(false)
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, 20))
	for i := 0; i < 10; i++ {
		ch.Publish("", "m1", false, false, amqp.Publishing{DeliveryMode: amqp.Persistent, Body: []byte("x")})
		ch.Publish("", "s1", false, false, amqp.Publishing{Body: []byte("y")})
	}
	for i := 0; i < 20; i++ {
		<-confirms
	}
	// A named stream reader 4 records in.
	rc := br.AMQPChannel(t)
	rc.Qos(1, 0, false)
	ds, _ := rc.Consume("s1", "", false, false, false, false, amqp.Table{"x-stream-offset": "first", "x-stream-consumer-name": "r"})
	for i := 0; i < 4; i++ {
		(<-ds).Ack(false)
	}
	time.Sleep(100 * time.Millisecond)

	m := scrape(t, br, "/metrics")
	if v := value(t, m, "bourse_messages_published_total"); v != pub0+20 {
		t.Errorf("published: %v, want %v", v, pub0+20)
	}
	if v := value(t, m, "bourse_messages_confirmed_total"); v < 20 {
		t.Errorf("confirmed: %v", v)
	}
	if v := value(t, m, "bourse_queue_messages_ready"); v != 10 {
		t.Errorf("ready: %v", v)
	}
	if v := value(t, m, `bourse_connections{protocol="amqp"}`); v < 2 {
		t.Errorf("amqp connections: %v", v)
	}
	if v := value(t, m, "bourse_streams"); v != 1 {
		t.Errorf("streams: %v", v)
	}
	if v := value(t, m, `bourse_fsync_seconds_count{log="journal"}`); v < 1 {
		t.Errorf("journal fsyncs observed: %v", v)
	}
	if v := value(t, m, "bourse_confirm_seconds_count"); v < 10 {
		t.Errorf("confirm latencies observed: %v", v)
	}
	for _, s := range []string{"go_goroutines", "bourse_journal_fsyncs_total", "bourse_alarm_memory"} {
		if !strings.Contains(m, "\n"+s) {
			t.Errorf("%s missing from /metrics", s)
		}
	}
	if strings.Contains(m, `queue="m1"`) {
		t.Error("per-queue series on the aggregated endpoint")
	}

	r := scrape(t, br, "/metrics?prefix=rabbitmq")
	if !strings.Contains(r, "rabbitmq_identity_info{") {
		t.Error("no rabbitmq_identity_info")
	}
	if v := value(t, r, "rabbitmq_queue_messages_ready"); v != 10 {
		t.Errorf("rabbitmq_queue_messages_ready: %v", v)
	}
	if v := value(t, r, "rabbitmq_channel_messages_published_total"); v != pub0+20 {
		t.Errorf("rabbitmq_channel_messages_published_total: %v", v)
	}

	d := scrape(t, br, "/metrics/detailed")
	if v := value(t, d, `bourse_queue_messages_ready{queue="m1",vhost="/"}`); v != 10 {
		t.Errorf("per-queue ready: %v", v)
	}
	if v := value(t, d, `bourse_stream_reader_lag{queue="s1",reader="r",vhost="/"}`); v != 6 {
		t.Errorf("reader lag: %v (want 6 of 10 records still to read)", v)
	}
	if resp, _ := http.Get("http://" + br.Addrs["http"] + "/metrics?prefix=kafka"); resp == nil || resp.StatusCode != 400 {
		t.Error("unknown prefix not refused")
	}
}
