package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// TestMQTTSessionsSurviveRestart: a persistent session's subscriptions and
// the messages queued for it while it was away, and retained messages,
// survive a graceful restart and a kill -9.
func TestMQTTSessionsSurviveRestart(t *testing.T) {
	br := Start(t)
	expiry := uint32(3600)
	dev := func(clean bool) (*paho.Client, <-chan *paho.Publish, *paho.Connack) {
		return br.MQTT5Connect(t, &paho.Connect{ClientID: "dev-1", CleanStart: clean, KeepAlive: 30,
			Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}})
	}
	c, _, _ := dev(true)
	Subscribe(t, c, "cmd/dev-1/#")
	c.Disconnect(&paho.Disconnect{})

	pub, _ := br.MQTT5(t, "controller")
	ctx := context.Background()
	if _, err := pub.Publish(ctx, &paho.Publish{Topic: "cmd/dev-1/reboot", QoS: 1, Payload: []byte("while away")}); err != nil {
		t.Fatal(err)
	}
	if _, err := pub.Publish(ctx, &paho.Publish{Topic: "status/dev-1", QoS: 1, Retain: true, Payload: []byte("online")}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // session and retained records are written within 100 ms
	br.Restart()

	c, msgs, ca := dev(false)
	if !ca.SessionPresent {
		t.Fatal("session not present after a restart")
	}
	if m := recvMQTT(t, msgs); m.Topic != "cmd/dev-1/reboot" || string(m.Payload) != "while away" {
		t.Fatalf("queued message after restart: %s %q", m.Topic, m.Payload)
	}
	pub, _ = br.MQTT5(t, "controller")
	if _, err := pub.Publish(ctx, &paho.Publish{Topic: "cmd/dev-1/update", QoS: 1, Payload: []byte("live")}); err != nil {
		t.Fatal(err)
	}
	if m := recvMQTT(t, msgs); string(m.Payload) != "live" {
		t.Fatalf("live message to the restored subscription: %q", m.Payload)
	}
	watcher, wmsgs := br.MQTT5(t, "watcher")
	Subscribe(t, watcher, "status/#")
	if m := recvMQTT(t, wmsgs); m.Topic != "status/dev-1" || string(m.Payload) != "online" || !m.Retain {
		t.Fatalf("retained after restart: %s %q retain=%v", m.Topic, m.Payload, m.Retain)
	}
	c.Disconnect(&paho.Disconnect{})

	// The same after a crash.
	if _, err := pub.Publish(ctx, &paho.Publish{Topic: "cmd/dev-1/crash", QoS: 1, Payload: []byte("before the crash")}); err != nil {
		t.Fatal(err)
	}
	br.Kill9()
	br.start()
	_, msgs, ca = dev(false)
	if !ca.SessionPresent {
		t.Fatal("session not present after kill -9")
	}
	if m := recvMQTT(t, msgs); string(m.Payload) != "before the crash" {
		t.Fatalf("after kill -9: %q", m.Payload)
	}

	// A clean start without expiry ends the session for good: nothing is
	// restored later.
	c, _, ca = br.MQTT5Connect(t, &paho.Connect{ClientID: "dev-1", CleanStart: true, KeepAlive: 30})
	if ca.SessionPresent {
		t.Fatal("clean start reported a session present")
	}
	c.Disconnect(&paho.Disconnect{})
	time.Sleep(300 * time.Millisecond)
	br.Restart()
	_, _, ca = br.MQTT5Connect(t, &paho.Connect{ClientID: "dev-1", CleanStart: false, KeepAlive: 30})
	if ca.SessionPresent {
		t.Fatal("an ended session came back after a restart")
	}

	// A restored session still expires.
	short := uint32(1)
	c, _, _ = br.MQTT5Connect(t, &paho.Connect{ClientID: "dev-2", CleanStart: true, KeepAlive: 30,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &short}})
	Subscribe(t, c, "cmd/dev-2/#")
	c.Disconnect(&paho.Disconnect{})
	time.Sleep(300 * time.Millisecond)
	br.Restart()
	time.Sleep(3 * time.Second)
	_, _, ca = br.MQTT5Connect(t, &paho.Connect{ClientID: "dev-2", CleanStart: false, KeepAlive: 30,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &short}})
	if ca.SessionPresent {
		t.Fatal("a restored session outlived its expiry")
	}
}

// TestDelayedWillSurvivesRestart: a will waiting for its MQTT 5 delay when
// the broker restarts is published at its time by the new process, and a
// client that comes back in time cancels it for good.
func TestDelayedWillSurvivesRestart(t *testing.T) {
	br := Start(t)
	expiry, delay := uint32(3600), uint32(3)
	connect := func(id string) *paho.Client {
		c, _, _ := br.MQTT5Connect(t, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30,
			Properties:     &paho.ConnectProperties{SessionExpiryInterval: &expiry},
			WillMessage:    &paho.WillMessage{Topic: "wills/" + id, QoS: 1, Payload: []byte(id + " gone")},
			WillProperties: &paho.WillProperties{WillDelayInterval: &delay}})
		return c
	}
	// Both drop their connections without DISCONNECT: their wills wait 3 s.
	dropped := connect("dev-a")
	back := connect("dev-b")
	for _, c := range []*paho.Client{dropped, back} {
		c.Disconnect(&paho.Disconnect{ReasonCode: 0x04}) // disconnect with will message
	}
	time.Sleep(300 * time.Millisecond) // the session records are written within 100 ms
	start := time.Now()
	br.Restart()
	// dev-b returns before its delay: its will is cancelled.
	br.MQTT5Connect(t, &paho.Connect{ClientID: "dev-b", CleanStart: false, KeepAlive: 30,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}})

	ch := br.AMQPChannel(t)
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(q.Name, "wills.#", "amq.topic", false, nil); err != nil {
		t.Fatal(err)
	}
	msgs, err := ch.Consume(q.Name, "", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-msgs:
		if m.RoutingKey != "wills.dev-a" || string(m.Body) != "dev-a gone" {
			t.Fatalf("will %s %q", m.RoutingKey, m.Body)
		}
		if waited := time.Since(start); waited < 2*time.Second {
			t.Fatalf("the will came %v after the restart began, before its 3 s delay", waited)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the delayed will was lost in the restart")
	}
	select {
	case m := <-msgs:
		t.Fatalf("unexpected %s %q (dev-b came back in time)", m.RoutingKey, m.Body)
	case <-time.After(4 * time.Second):
	}
}
