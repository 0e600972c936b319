package mqtt

import (
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/mochi-mqtt/server/v2/packets"
)

func TestQoSLevelsV5(t *testing.T) {
	ts := startServer(t, nil, Options{})
	sub := dialV5(t, ts.addr, "sub", nil)
	pub := dialV5(t, ts.addr, "pub", nil)
	for _, subQoS := range []byte{0, 1, 2} {
		filter := fmt.Sprintf("qos%d/+", subQoS)
		sa := sub.subscribe(paho.SubscribeOptions{Topic: filter, QoS: subQoS})
		if sa.Reasons[0] != subQoS {
			t.Fatalf("granted %d, want %d", sa.Reasons[0], subQoS)
		}
		for pubQoS := byte(0); pubQoS <= 2; pubQoS++ {
			topic := fmt.Sprintf("qos%d/p%d", subQoS, pubQoS)
			r := pub.publish(&paho.Publish{Topic: topic, QoS: pubQoS, Payload: []byte(topic)})
			if pubQoS > 0 && r.ReasonCode != 0 {
				t.Fatalf("publish %s: reason %#x", topic, r.ReasonCode)
			}
			m := sub.next()
			if m.Topic != topic || string(m.Payload) != topic {
				t.Fatalf("got %s %q, want %s", m.Topic, m.Payload, topic)
			}
			if want := min(subQoS, pubQoS); m.QoS != want {
				t.Fatalf("%s: delivered at QoS %d, want %d", topic, m.QoS, want)
			}
		}
	}
	sub.none(100 * time.Millisecond)
}

func TestQoSLevelsV3(t *testing.T) {
	ts := startServer(t, nil, Options{})
	sub := dialV3(t, ts.addr, "sub3", true, "", "")
	pub := dialV3(t, ts.addr, "pub3", true, "guest", "guest")
	sub.subscribe("a/#", 2)
	for qos := byte(0); qos <= 2; qos++ {
		topic := fmt.Sprintf("a/b/%d", qos)
		pub.publish(topic, qos, false, topic)
		m := sub.next()
		if m.Topic() != topic || string(m.Payload()) != topic || m.Qos() != qos {
			t.Fatalf("got %s %q qos %d", m.Topic(), m.Payload(), m.Qos())
		}
	}
}

func TestMQTT31(t *testing.T) {
	ts := startServer(t, nil, Options{})
	rc := dialRaw(t, ts.addr, 3)
	if ca := rc.connect("old-client", true, nil); ca.ReasonCode != 0 {
		t.Fatalf("CONNACK %#x", ca.ReasonCode)
	}
	rc.subscribe(1, packets.Subscription{Filter: "x/y", Qos: 1})
	rc.publish(2, 1, "x/y", []byte("hi"))
	var gotAck, gotMsg bool
	for !gotAck || !gotMsg {
		pk := rc.recv()
		switch {
		case pk.FixedHeader.Type == packets.Puback && pk.PacketID == 2:
			gotAck = true
		case pk.FixedHeader.Type == packets.Publish:
			if string(pk.Payload) != "hi" {
				t.Fatalf("payload %q", pk.Payload)
			}
			gotMsg = true
		}
	}
}

func TestRetained(t *testing.T) {
	ts := startServer(t, nil, Options{})
	pub := dialV5(t, ts.addr, "pub", nil)
	pub.publish(&paho.Publish{Topic: "status/dev1", QoS: 1, Retain: true, Payload: []byte("on"),
		Properties: &paho.PublishProperties{ContentType: "text/plain"}})
	pub.publish(&paho.Publish{Topic: "status/dev2", QoS: 0, Retain: true, Payload: []byte("off")})
	pub.publish(&paho.Publish{Topic: "barrier", QoS: 1}) // the QoS 0 publish is handled once this is acked

	sub := dialV5(t, ts.addr, "sub", nil)
	sub.subscribe(paho.SubscribeOptions{Topic: "status/+", QoS: 1})
	got := map[string]*paho.Publish{}
	for range 2 {
		m := sub.next()
		got[m.Topic] = m
	}
	if m := got["status/dev1"]; m == nil || !m.Retain || string(m.Payload) != "on" || m.QoS != 1 || m.Properties.ContentType != "text/plain" {
		t.Fatalf("dev1: %+v", m)
	}
	if m := got["status/dev2"]; m == nil || !m.Retain || m.QoS != 0 {
		t.Fatalf("dev2: %+v", m)
	}
	// Live messages are not flagged retained without Retain As Published.
	pub.publish(&paho.Publish{Topic: "status/dev1", QoS: 1, Retain: true, Payload: []byte("off")})
	if m := sub.next(); m.Retain || string(m.Payload) != "off" {
		t.Fatalf("live: retain %v %q", m.Retain, m.Payload)
	}
	// Retain As Published keeps the flag; Retain Handling 2 sends none.
	rap := dialV5(t, ts.addr, "rap", nil)
	rap.subscribe(paho.SubscribeOptions{Topic: "status/dev1", QoS: 1, RetainAsPublished: true, RetainHandling: 2})
	rap.none(100 * time.Millisecond)
	pub.publish(&paho.Publish{Topic: "status/dev1", QoS: 1, Retain: true, Payload: []byte("on")})
	if m := rap.next(); !m.Retain {
		t.Fatal("retain as published: flag lost")
	}
	sub.next()
	// Retain Handling 1: only for a new subscription.
	sub.subscribe(paho.SubscribeOptions{Topic: "status/+", QoS: 1, RetainHandling: 1})
	sub.none(100 * time.Millisecond)

	// An empty retained message clears the topic.
	pub.publish(&paho.Publish{Topic: "status/dev1", QoS: 1, Retain: true})
	late := dialV5(t, ts.addr, "late", nil)
	late.subscribe(paho.SubscribeOptions{Topic: "status/#", QoS: 1})
	if m := late.next(); m.Topic != "status/dev2" {
		t.Fatalf("got %s", m.Topic)
	}
	late.none(100 * time.Millisecond)

	// Retained messages are per vhost.
	if _, err := ts.b.AddVHost("other"); err != nil {
		t.Fatal(err)
	}
	ov := dialV5(t, ts.addr, "ov", &paho.Connect{CleanStart: true, KeepAlive: 30,
		Username: "other:guest", UsernameFlag: true, Password: []byte("guest"), PasswordFlag: true})
	ov.subscribe(paho.SubscribeOptions{Topic: "status/#", QoS: 1})
	ov.none(100 * time.Millisecond)
}

func TestWill(t *testing.T) {
	ts := startServer(t, nil, Options{})
	sub := dialV5(t, ts.addr, "watcher", nil)
	sub.subscribe(paho.SubscribeOptions{Topic: "wills/#", QoS: 1})

	// A lost connection publishes the will, with its properties (raw client:
	// paho.golang does not encode a will's content type).
	dev := dialRaw(t, ts.addr, 5)
	dev.connect("dev", true, func(pk *packets.Packet) {
		pk.Connect.WillFlag = true
		pk.Connect.WillTopic = "wills/dev"
		pk.Connect.WillPayload = []byte("gone")
		pk.Connect.WillQos = 1
		pk.Connect.WillProperties = packets.Properties{ContentType: "text/plain", User: []packets.UserProperty{{Key: "k", Val: "v"}}}
	})
	_ = dev.nc.Close()
	m := sub.next()
	if m.Topic != "wills/dev" || string(m.Payload) != "gone" || m.QoS != 1 ||
		m.Properties.ContentType != "text/plain" || m.Properties.User.Get("k") != "v" {
		t.Fatalf("will: %+v %+v", m, m.Properties)
	}

	// A clean DISCONNECT does not.
	tidy := dialV5(t, ts.addr, "tidy", &paho.Connect{CleanStart: true, KeepAlive: 30,
		WillMessage: &paho.WillMessage{Topic: "wills/tidy", QoS: 1, Payload: []byte("x")}})
	tidy.close()
	sub.none(200 * time.Millisecond)

	// MQTT 3.1.1 will via paho.mqtt.golang, retained.
	rc := dialRaw(t, ts.addr, 4)
	rc.connect("v3dev", true, func(pk *packets.Packet) {
		pk.Connect.WillFlag = true
		pk.Connect.WillTopic = "wills/v3"
		pk.Connect.WillPayload = []byte("bye")
		pk.Connect.WillQos = 1
		pk.Connect.WillRetain = true
	})
	_ = rc.nc.Close()
	if m := sub.next(); m.Topic != "wills/v3" || string(m.Payload) != "bye" {
		t.Fatalf("v3 will: %s %q", m.Topic, m.Payload)
	}
	late := dialV5(t, ts.addr, "late", nil)
	late.subscribe(paho.SubscribeOptions{Topic: "wills/v3", QoS: 1})
	if m := late.next(); !m.Retain || string(m.Payload) != "bye" {
		t.Fatalf("retained will: %+v", m)
	}
}

func TestWillDelay(t *testing.T) {
	ts := startServer(t, nil, Options{})
	sub := dialV5(t, ts.addr, "watcher", nil)
	sub.subscribe(paho.SubscribeOptions{Topic: "wills/#", QoS: 1})
	expiry := uint32(60)
	delay := uint32(1)
	connect := func() (*v5client, net.Conn) {
		nc, err := net.Dial("tcp", ts.addr)
		if err != nil {
			t.Fatal(err)
		}
		return connectV5(t, nc, "slow", &paho.Connect{CleanStart: false, KeepAlive: 30,
			Properties:     &paho.ConnectProperties{SessionExpiryInterval: &expiry},
			WillMessage:    &paho.WillMessage{Topic: "wills/slow", QoS: 1, Payload: []byte("late")},
			WillProperties: &paho.WillProperties{WillDelayInterval: &delay},
		}), nc
	}
	// Reconnecting within the delay cancels the will.
	c1, nc := connect()
	_ = nc.Close()
	<-c1.c.Done()
	c2, nc := connect()
	sub.none(1500 * time.Millisecond)
	// Otherwise it is published after the delay.
	start := time.Now()
	_ = nc.Close()
	<-c2.c.Done()
	m := sub.next()
	if string(m.Payload) != "late" || time.Since(start) < 900*time.Millisecond {
		t.Fatalf("will %q after %v", m.Payload, time.Since(start))
	}
}

func TestPersistentSessionV3(t *testing.T) {
	ts := startServer(t, nil, Options{})
	c := dialV3(t, ts.addr, "keeper", false, "", "")
	c.subscribe("jobs/#", 1)
	c.c.Disconnect(100)

	pub := dialV5(t, ts.addr, "pub", nil)
	for i := range 3 {
		pub.publish(&paho.Publish{Topic: "jobs/x", QoS: 1, Payload: []byte{byte('0' + i)}})
	}
	pub.publish(&paho.Publish{Topic: "jobs/x", QoS: 0, Payload: []byte("q0")})
	q := subscriptionQueueName("keeper", "jobs/#")
	if !slices.Contains(ts.queueNames("/"), q) {
		t.Fatalf("queue %s missing: %v", q, ts.queueNames("/"))
	}

	c2 := dialV3(t, ts.addr, "keeper", false, "", "")
	var got []string
	for range 4 {
		got = append(got, string(c2.next().Payload()))
	}
	if strings.Join(got, ",") != "0,1,2,q0" {
		t.Fatalf("resumed session got %v", got)
	}
	c2.c.Disconnect(100)

	// A clean session discards it.
	c3 := dialV3(t, ts.addr, "keeper", true, "", "")
	eventually(t, "queue deleted", func() bool { return !slices.Contains(ts.queueNames("/"), q) })
	c3.subscribe("jobs/#", 1)
	c3.c.Disconnect(100)
	eventually(t, "clean session queue deleted", func() bool { return len(ts.queueNames("/")) == 0 })
}

func TestPersistentSessionV5(t *testing.T) {
	ts := startServer(t, nil, Options{})
	expiry := uint32(300)
	cp := func() *paho.Connect {
		return &paho.Connect{CleanStart: false, KeepAlive: 30, Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}}
	}
	c := dialV5(t, ts.addr, "k5", cp())
	if c.ca.SessionPresent {
		t.Fatal("session present on first connect")
	}
	c.subscribe(paho.SubscribeOptions{Topic: "jobs/+", QoS: 2})
	c.close()

	pub := dialV5(t, ts.addr, "pub", nil)
	pub.publish(&paho.Publish{Topic: "jobs/a", QoS: 2, Payload: []byte("a")})
	pub.publish(&paho.Publish{Topic: "jobs/b", QoS: 1, Payload: []byte("b")})

	c2 := dialV5(t, ts.addr, "k5", cp())
	if !c2.ca.SessionPresent {
		t.Fatal("session not present")
	}
	if m := c2.next(); string(m.Payload) != "a" || m.QoS != 2 {
		t.Fatalf("got %q qos %d", m.Payload, m.QoS)
	}
	if m := c2.next(); string(m.Payload) != "b" || m.QoS != 1 {
		t.Fatalf("got %q qos %d", m.Payload, m.QoS)
	}
	// Still subscribed after the resume.
	pub.publish(&paho.Publish{Topic: "jobs/c", QoS: 1, Payload: []byte("c")})
	if m := c2.next(); string(m.Payload) != "c" {
		t.Fatalf("got %q", m.Payload)
	}
	c2.none(100 * time.Millisecond)
}

func TestSessionExpiry(t *testing.T) {
	ts := startServer(t, nil, Options{})
	expiry := uint32(1)
	c := dialV5(t, ts.addr, "brief", &paho.Connect{CleanStart: true, KeepAlive: 30,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}})
	c.subscribe(paho.SubscribeOptions{Topic: "x", QoS: 1})
	c.close()
	if len(ts.queueNames("/")) != 1 {
		t.Fatal("queue should outlive the connection")
	}
	eventually(t, "expired session's queue deleted", func() bool { return len(ts.queueNames("/")) == 0 })
}

func TestTakeover(t *testing.T) {
	ts := startServer(t, nil, Options{})
	expiry := uint32(60)
	cp := &paho.Connect{CleanStart: false, KeepAlive: 30, Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}}
	discs := make(chan *paho.Disconnect, 1)
	nc, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	first := &v5client{t: t, msgs: make(chan *paho.Publish, 100)}
	first.c = paho.NewClient(paho.ClientConfig{Conn: nc, OnServerDisconnect: func(d *paho.Disconnect) { discs <- d }})
	if _, err := first.c.Connect(t.Context(), &paho.Connect{ClientID: "twin", CleanStart: true, KeepAlive: 30,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(first.close)
	if _, err := first.c.Subscribe(t.Context(), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "t", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	second := dialV5(t, ts.addr, "twin", cp)
	select {
	case d := <-discs:
		if d.ReasonCode != 0x8E {
			t.Fatalf("first got DISCONNECT %#x", d.ReasonCode)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("first connection not told of the takeover")
	}
	if !second.ca.SessionPresent {
		t.Fatal("session not taken over")
	}
	pub := dialV5(t, ts.addr, "pub", nil)
	pub.publish(&paho.Publish{Topic: "t", QoS: 1, Payload: []byte("1")})
	if m := second.next(); string(m.Payload) != "1" {
		t.Fatalf("got %q", m.Payload)
	}
	second.none(100 * time.Millisecond)
}

func TestSharedSubscription(t *testing.T) {
	ts := startServer(t, nil, Options{})
	workers := []*v5client{dialV5(t, ts.addr, "w1", nil), dialV5(t, ts.addr, "w2", nil)}
	for _, w := range workers {
		w.subscribe(paho.SubscribeOptions{Topic: "$share/pool/work/#", QoS: 1})
	}
	other := dialV5(t, ts.addr, "other-group", nil)
	other.subscribe(paho.SubscribeOptions{Topic: "$share/audit/work/#", QoS: 0})
	if n := len(ts.queueNames("/")); n != 2 {
		t.Fatalf("want one queue per group, got %v", ts.queueNames("/"))
	}
	pub := dialV5(t, ts.addr, "pub", nil)
	const n = 100
	for i := range n {
		pub.publish(&paho.Publish{Topic: "work/item", QoS: 1, Payload: fmt.Appendf(nil, "%d", i)})
	}
	seen := map[string]bool{}
	counts := make([]int, len(workers))
	for len(seen) < n {
		select {
		case m := <-workers[0].msgs:
			counts[0]++
			if seen[string(m.Payload)] {
				t.Fatalf("duplicate %s", m.Payload)
			}
			seen[string(m.Payload)] = true
		case m := <-workers[1].msgs:
			counts[1]++
			if seen[string(m.Payload)] {
				t.Fatalf("duplicate %s", m.Payload)
			}
			seen[string(m.Payload)] = true
		case <-time.After(5 * time.Second):
			t.Fatalf("got %d of %d", len(seen), n)
		}
	}
	if counts[0] == 0 || counts[1] == 0 {
		t.Fatalf("load not split: %v", counts)
	}
	for range n {
		other.next()
	}
	other.none(100 * time.Millisecond)
	// The group's queue goes when its last member leaves.
	workers[0].close()
	workers[1].close()
	other.close()
	eventually(t, "shared queues deleted", func() bool { return len(ts.queueNames("/")) == 0 })
}

func TestNoLocalAndOverlaps(t *testing.T) {
	ts := startServer(t, nil, Options{})
	c := dialV5(t, ts.addr, "chatty", nil)
	c.subscribe(paho.SubscribeOptions{Topic: "room/+", QoS: 1, NoLocal: true})
	listener := dialV5(t, ts.addr, "listener", nil)
	id1, id2 := 7, 9
	listener.subscribeProps(&paho.SubscribeProperties{SubscriptionIdentifier: &id1}, paho.SubscribeOptions{Topic: "room/#", QoS: 1})
	listener.subscribeProps(&paho.SubscribeProperties{SubscriptionIdentifier: &id2}, paho.SubscribeOptions{Topic: "room/a", QoS: 0})

	c.publish(&paho.Publish{Topic: "room/a", QoS: 1, Payload: []byte("hello")})
	c.none(200 * time.Millisecond) // no echo
	// One delivery per matching subscription, each with its identifier.
	ids := map[int]byte{}
	for range 2 {
		m := listener.next()
		if m.Properties.SubscriptionIdentifier == nil {
			t.Fatal("no subscription identifier")
		}
		ids[*m.Properties.SubscriptionIdentifier] = m.QoS
	}
	if len(ids) != 2 || ids[7] != 1 || ids[9] != 0 {
		t.Fatalf("deliveries by subscription id: %v", ids)
	}
	listener.none(100 * time.Millisecond)

	// Unsubscribing removes the subscription and its queue.
	ctx := t.Context()
	ua, err := listener.c.Unsubscribe(ctx, &paho.Unsubscribe{Topics: []string{"room/a", "nothing"}})
	if err != nil {
		t.Fatal(err)
	}
	if ua.Reasons[0] != 0 || ua.Reasons[1] != 0x11 {
		t.Fatalf("UNSUBACK reasons %v", ua.Reasons)
	}
	if slices.Contains(ts.queueNames("/"), subscriptionQueueName("listener", "room/a")) {
		t.Fatal("queue of room/a survives its subscription")
	}
	c.publish(&paho.Publish{Topic: "room/a", QoS: 1, Payload: []byte("again")})
	listener.next()
	listener.none(100 * time.Millisecond)
}

func TestDollarTopics(t *testing.T) {
	ts := startServer(t, nil, Options{})
	sub := dialV5(t, ts.addr, "sub", nil)
	sub.subscribe(paho.SubscribeOptions{Topic: "#", QoS: 0})
	sub.subscribe(paho.SubscribeOptions{Topic: "$app/+", QoS: 0})
	pub := dialV5(t, ts.addr, "pub", nil)
	pub.publish(&paho.Publish{Topic: "$app/x", QoS: 1, Payload: []byte("d")})
	// Only the $app/+ subscription matches ([MQTT-4.7.2-1]).
	if m := sub.next(); m.Topic != "$app/x" {
		t.Fatalf("got %s", m.Topic)
	}
	sub.none(100 * time.Millisecond)
	// $SYS is mochi's.
	sub.subscribe(paho.SubscribeOptions{Topic: "$SYS/broker/version", QoS: 0})
	if m := sub.next(); !strings.HasPrefix(m.Topic, "$SYS/") {
		t.Fatalf("got %s", m.Topic)
	}
}

// TestRedeliveryOnResume: deliveries a client did not acknowledge before
// its connection dropped come back once, flagged DUP, on the resumed
// session (from the router, not also from mochi's in-flight store).
func TestRedeliveryOnResume(t *testing.T) {
	ts := startServer(t, nil, Options{})
	persistent := func(pk *packets.Packet) {
		pk.Properties.SessionExpiryInterval, pk.Properties.SessionExpiryIntervalFlag = 60, true
	}
	rc := dialRaw(t, ts.addr, 5)
	rc.connect("resumer", true, persistent)
	rc.subscribe(1, packets.Subscription{Filter: "r/#", Qos: 2})
	pub := dialV5(t, ts.addr, "pub", nil)
	pub.publish(&paho.Publish{Topic: "r/1", QoS: 1, Payload: []byte("one")})
	pub.publish(&paho.Publish{Topic: "r/2", QoS: 2, Payload: []byte("two")})
	for range 2 {
		if pk := rc.recv(); pk.FixedHeader.Type != packets.Publish || pk.FixedHeader.Dup {
			t.Fatalf("got %v dup %v", pk.FixedHeader.Type, pk.FixedHeader.Dup)
		}
	}
	_ = rc.nc.Close() // no acks

	r2 := dialRaw(t, ts.addr, 5)
	if ca := r2.connect("resumer", false, persistent); !ca.SessionPresent {
		t.Fatal("session not present")
	}
	got := map[string]packets.Packet{}
	for range 2 {
		pk := r2.recv()
		if pk.FixedHeader.Type != packets.Publish || !pk.FixedHeader.Dup {
			t.Fatalf("got %v dup %v", pk.FixedHeader.Type, pk.FixedHeader.Dup)
		}
		got[string(pk.Payload)] = pk
	}
	one, two := got["one"], got["two"]
	if one.FixedHeader.Qos != 1 || two.FixedHeader.Qos != 2 {
		t.Fatalf("qos %d %d", one.FixedHeader.Qos, two.FixedHeader.Qos)
	}
	r2.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: one.PacketID})
	r2.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrec}, PacketID: two.PacketID})
	if pk := r2.recv(); pk.FixedHeader.Type != packets.Pubrel || pk.PacketID != two.PacketID {
		t.Fatalf("got %v %d", pk.FixedHeader.Type, pk.PacketID)
	}
	_ = r2.nc.Close() // PUBREC sent, PUBCOMP not: the message is the client's now

	r3 := dialRaw(t, ts.addr, 5)
	r3.connect("resumer", false, persistent)
	// mochi resends the PUBREL of the unfinished QoS 2 flow; nothing else.
	if pk := r3.recv(); pk.FixedHeader.Type != packets.Pubrel || pk.PacketID != two.PacketID {
		t.Fatalf("got %v %d %q", pk.FixedHeader.Type, pk.PacketID, pk.Payload)
	}
	r3.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubcomp}, PacketID: two.PacketID})
	if pk, err := r3.read(200 * time.Millisecond); err == nil {
		t.Fatalf("unexpected %v %q", pk.FixedHeader.Type, pk.Payload)
	}
	for _, q := range ts.vhost("/").Queues() {
		if st := q.Stats(); st.Ready+st.Unacked != 0 {
			t.Fatalf("queue %s holds %d ready, %d unacked", q.Name(), st.Ready, st.Unacked)
		}
	}
}
