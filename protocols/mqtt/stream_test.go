package mqtt

import (
	"fmt"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/router"
)

// TestStreamReplay: MQTT clients replay a stream with the $stream/<name>/<start>
// convention; telemetry published over MQTT reaches the stream through an
// amq.topic binding.
func TestStreamReplay(t *testing.T) {
	ts := startServer(t, nil, Options{})
	v := ts.vhost("/")
	if _, err := v.DeclareQueue(router.QueueDecl{QueueInfo: core.QueueInfo{Name: "telemetry", Durable: true,
		Args: core.Table{"x-queue-type": "stream"}}}); err != nil {
		t.Fatal(err)
	}
	if err := v.Bind(router.Binding{Source: router.AMQTopic, Dest: router.Dest{Kind: router.ToQueue, Name: "telemetry"}, Key: "sensors.#"}, 0); err != nil {
		t.Fatal(err)
	}
	pub := dialV5(t, ts.addr, "sensor-1", nil)
	for i := 0; i < 10; i++ {
		pub.publish(&paho.Publish{Topic: "sensors/1/temp", QoS: 1, Payload: []byte(fmt.Sprintf("t%d", i))})
	}
	q, _ := v.Queue("telemetry", 0)
	eventually(t, "10 records in the stream", func() bool { return q.Stats().Ready == 10 })

	r := dialV5(t, ts.addr, "replayer", nil)
	if sa := r.subscribe(paho.SubscribeOptions{Topic: "$stream/telemetry/first", QoS: 1}); sa.Reasons[0] >= 0x80 {
		t.Fatalf("suback %v", sa.Reasons)
	}
	for i := 0; i < 10; i++ {
		m := r.next()
		if m.Topic != "$stream/telemetry/first" || string(m.Payload) != fmt.Sprintf("t%d", i) {
			t.Fatalf("replay %d: %s %q", i, m.Topic, m.Payload)
		}
		if got := m.Properties.User.Get("x-stream-offset"); got != fmt.Sprint(i) {
			t.Fatalf("replay %d: x-stream-offset %q", i, got)
		}
	}
	// New records keep coming to the replaying subscriber.
	pub.publish(&paho.Publish{Topic: "sensors/2/temp", QoS: 1, Payload: []byte("live")})
	if m := r.next(); string(m.Payload) != "live" {
		t.Fatalf("live record: %q", m.Payload)
	}
	r2 := dialV5(t, ts.addr, "replayer-2", nil)
	r2.subscribe(paho.SubscribeOptions{Topic: "$stream/telemetry/8", QoS: 0})
	for _, want := range []string{"t8", "t9", "live"} {
		if m := r2.next(); string(m.Payload) != want {
			t.Fatalf("from 8: %q, want %q", m.Payload, want)
		}
	}
	// Unsubscribing does not touch the stream.
	r2.c.Unsubscribe(t.Context(), &paho.Unsubscribe{Topics: []string{"$stream/telemetry/8"}})
	time.Sleep(50 * time.Millisecond)
	if _, err := v.Queue("telemetry", 0); err != nil || q.Stats().Ready != 11 {
		t.Fatalf("stream after unsubscribe: %v, %d records", err, q.Stats().Ready)
	}
	// Bad filters are refused in the SUBACK.
	for _, f := range []string{"$stream/nosuch/first", "$stream/telemetry/sideways", "$stream/telemetry"} {
		sa, err := r.c.Subscribe(t.Context(), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: f, QoS: 1}}})
		if err == nil || sa == nil || len(sa.Reasons) != 1 || sa.Reasons[0] < 0x80 {
			t.Errorf("%s: suback %v, err %v; want a failure reason", f, sa, err)
		}
	}
}

// TestOfflineSessionQueueIsBounded: an offline persistent session keeps at
// most MaxQueuedMessages, the newest.
func TestOfflineSessionQueueIsBounded(t *testing.T) {
	ts := startServer(t, nil, Options{MaxQueuedMessages: 5})
	expiry := uint32(600)
	c := dialV5(t, ts.addr, "away", &paho.Connect{ClientID: "away", KeepAlive: 30, Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}})
	c.subscribe(paho.SubscribeOptions{Topic: "t/#", QoS: 1})
	c.close()
	pub := dialV5(t, ts.addr, "pub", nil)
	for i := 0; i < 20; i++ {
		pub.publish(&paho.Publish{Topic: "t/x", QoS: 1, Payload: []byte(fmt.Sprint(i))})
	}
	c = dialV5(t, ts.addr, "away", &paho.Connect{ClientID: "away", KeepAlive: 30, Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}})
	for i := 15; i < 20; i++ {
		if m := c.next(); string(m.Payload) != fmt.Sprint(i) {
			t.Fatalf("got %q, want %d (the newest five)", m.Payload, i)
		}
	}
	c.none(200 * time.Millisecond)
}

// TestSetBlockedStopsPublishers: while blocked, a publisher's PUBLISH is
// not read (no PUBACK, nothing routed); subscribers still receive; after
// unblocking the publish goes through.
func TestSetBlockedStopsPublishers(t *testing.T) {
	ts := startServer(t, nil, Options{})
	sub := dialV5(t, ts.addr, "sub", nil)
	sub.subscribe(paho.SubscribeOptions{Topic: "flow/#", QoS: 1})
	pub := dialV5(t, ts.addr, "pub", nil)
	pub.publish(&paho.Publish{Topic: "flow/a", QoS: 1, Payload: []byte("before")})
	if m := sub.next(); string(m.Payload) != "before" {
		t.Fatalf("got %q", m.Payload)
	}
	ts.s.SetBlocked(true, "memory alarm")
	done := make(chan struct{})
	go func() {
		defer close(done)
		pub.c.Publish(t.Context(), &paho.Publish{Topic: "flow/b", QoS: 1, Payload: []byte("held")})
	}()
	select {
	case <-done:
		t.Fatal("PUBACK while blocked")
	case <-time.After(300 * time.Millisecond):
	}
	sub.none(100 * time.Millisecond)
	ts.s.SetBlocked(false, "")
	if m := sub.next(); string(m.Payload) != "held" {
		t.Fatalf("after unblock got %q", m.Payload)
	}
	<-done
}
