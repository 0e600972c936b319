package main

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/bourse-mq/bourse/cluster"
	"github.com/bourse-mq/bourse/internal/config"
)

// mqtt5 is a paho MQTT 5 client of a cluster test.
type mqtt5 struct {
	t     *testing.T
	c     *paho.Client
	ca    *paho.Connack
	msgs  chan *paho.Publish
	discs chan *paho.Disconnect
}

func dialMQTT5(t *testing.T, addr, clientID string, cp *paho.Connect, opts ...func(*paho.ClientConfig)) *mqtt5 {
	t.Helper()
	m, err := connectMQTT5(t, addr, clientID, cp, opts...)
	if err != nil {
		t.Fatalf("connect %s to %s: %v", clientID, addr, err)
	}
	t.Cleanup(m.close)
	return m
}

// connectMQTT5 connects without failing the test (for other goroutines).
func connectMQTT5(t *testing.T, addr, clientID string, cp *paho.Connect, opts ...func(*paho.ClientConfig)) (*mqtt5, error) {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	m := &mqtt5{t: t, msgs: make(chan *paho.Publish, 1000), discs: make(chan *paho.Disconnect, 1)}
	cfg := paho.ClientConfig{
		Conn: nc,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			m.msgs <- pr.Packet
			return true, nil
		}},
		OnServerDisconnect: func(d *paho.Disconnect) { m.discs <- d },
	}
	for _, o := range opts {
		o(&cfg)
	}
	m.c = paho.NewClient(cfg)
	if cp == nil {
		cp = &paho.Connect{CleanStart: true, KeepAlive: 30}
	}
	cp.ClientID = clientID
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if m.ca, err = m.c.Connect(ctx, cp); err != nil {
		return nil, err
	}
	return m, nil
}

// dialMQTT3 connects a paho MQTT 3.1.1 client whose messages go to msgs,
// and reports CONNACK's session present.
func dialMQTT3(t *testing.T, addr, clientID string, clean bool, msgs chan pahov3.Message) (pahov3.Client, bool) {
	t.Helper()
	o := pahov3.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(clientID).
		SetCleanSession(clean).SetAutoReconnect(false).SetConnectRetry(false).SetProtocolVersion(4).
		SetConnectTimeout(20 * time.Second).SetKeepAlive(30 * time.Second).
		SetDefaultPublishHandler(func(_ pahov3.Client, m pahov3.Message) { msgs <- m })
	c := pahov3.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(25*time.Second) || tok.Error() != nil {
		t.Fatalf("connect %s to %s: %v", clientID, addr, tok.Error())
	}
	t.Cleanup(func() {
		if c.IsConnected() {
			c.Disconnect(250)
		}
	})
	return c, tok.(*pahov3.ConnectToken).SessionPresent()
}

func subscribeMQTT3(t *testing.T, c pahov3.Client, filter string) {
	t.Helper()
	if tok := c.Subscribe(filter, 1, nil); !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe %s: %v", filter, tok.Error())
	}
}

func (m *mqtt5) close() {
	select {
	case <-m.c.Done():
	default:
		_ = m.c.Disconnect(&paho.Disconnect{})
		select {
		case <-m.c.Done():
		case <-time.After(5 * time.Second):
		}
	}
}

func (m *mqtt5) subscribe(filter string, qos byte) {
	m.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	sa, err := m.c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: qos}}})
	if err != nil {
		m.t.Fatalf("subscribe %s: %v", filter, err)
	}
	if sa.Reasons[0] >= 0x80 {
		m.t.Fatalf("subscribe %s: reason %#x", filter, sa.Reasons[0])
	}
}

func (m *mqtt5) publish(topic string, qos byte, retain bool, payload string) {
	m.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if _, err := m.c.Publish(ctx, &paho.Publish{Topic: topic, QoS: qos, Retain: retain, Payload: []byte(payload)}); err != nil {
		m.t.Fatalf("publish %s: %v", topic, err)
	}
}

func (m *mqtt5) next(within time.Duration) *paho.Publish {
	m.t.Helper()
	select {
	case p := <-m.msgs:
		return p
	case <-time.After(within):
		m.t.Fatalf("no message within %s", within)
		return nil
	}
}

func (m *mqtt5) none(d time.Duration) {
	m.t.Helper()
	select {
	case p := <-m.msgs:
		m.t.Fatalf("unexpected message on %q: %q", p.Topic, p.Payload)
	case <-time.After(d):
	}
}

// retainedOn subscribes a new client on addr to filter and returns the
// retained payloads it is sent (within wait).
func retainedOn(t *testing.T, addr, filter string, wait time.Duration) []string {
	t.Helper()
	m := dialMQTT5(t, addr, "", nil)
	defer m.close()
	m.subscribe(filter, 1)
	var got []string
	for {
		select {
		case p := <-m.msgs:
			// A live one is a publish still on its way across the
			// cluster when this subscribed (the crossing changes below
			// are QoS 0, fire and forget): not what this counts.
			if p.Retain {
				got = append(got, p.Topic+"="+string(p.Payload))
			}
		case <-time.After(wait):
			return got
		}
	}
}

// sessionQueues returns the subscription queues of MQTT client id in the
// cluster's topology and how many messages they hold in the stream of
// session queues. It fails the test if any of them has a stream of its
// own: they share one.
func sessionQueues(t *testing.T, natsURL, clientID string) (queues []string, queued int) {
	t.Helper()
	js, done := jsConnect(t, natsURL)
	defer done()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	prefix := "mqtt-subscription-" + clientID + "-"
	untok := func(tok string) string {
		b, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(tok, "_"))
		if err != nil {
			t.Fatalf("token %q: %v", tok, err)
		}
		return string(b)
	}
	names := js.StreamNames(ctx)
	for n := range names.Name() {
		if strings.HasPrefix(n, "bourse_q_"+prefix) {
			t.Fatalf("session queue stream %s: session queues share %s", n, cluster.SessionStream)
		}
	}
	if err := names.Err(); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, cluster.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for k := range keys.Keys() {
		if parts := strings.Split(k, "."); len(parts) == 3 && strings.HasPrefix(untok(parts[2]), prefix) {
			queues = append(queues, untok(parts[2]))
		}
	}
	st, err := js.Stream(ctx, cluster.SessionStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return queues, 0
	}
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter("bourse.mq.>"))
	if err != nil {
		t.Fatal(err)
	}
	for subj, n := range info.State.Subjects {
		parts := strings.Split(subj, ".")
		if strings.HasPrefix(untok(parts[len(parts)-1]), prefix) {
			queued += int(n)
		}
	}
	return queues, queued
}

// TestClusterMQTTRetained: a retained message published on one node is
// sent to a new subscriber on every node; an empty retained publish on
// another node clears it everywhere; when two nodes change one topic at
// once, every node ends with the same message.
func TestClusterMQTTRetained(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	nodes, stop := startServeCluster(t)
	defer stop()

	pub := dialMQTT5(t, nodes[0]["mqtt"], "retainer", nil)
	pub.publish("sensors/1/temp", 1, true, "21.5")
	pub.publish("sensors/2/temp", 0, true, "19.0")
	for i := range 3 {
		waitFor(t, fmt.Sprintf("retained messages on node %d", i), func() bool {
			got := retainedOn(t, nodes[i]["mqtt"], "sensors/+/temp", 300*time.Millisecond)
			return len(got) == 2 && (got[0] == "sensors/1/temp=21.5" && got[1] == "sensors/2/temp=19.0" ||
				got[1] == "sensors/1/temp=21.5" && got[0] == "sensors/2/temp=19.0")
		})
	}

	// Replaced on node 1, cleared on node 2: every node follows.
	other := dialMQTT5(t, nodes[1]["mqtt"], "replacer", nil)
	other.publish("sensors/1/temp", 1, true, "22.0")
	clearer := dialMQTT5(t, nodes[2]["mqtt"], "clearer", nil)
	clearer.publish("sensors/2/temp", 1, true, "")
	for i := range 3 {
		waitFor(t, fmt.Sprintf("retained change on node %d", i), func() bool {
			got := retainedOn(t, nodes[i]["mqtt"], "sensors/#", 300*time.Millisecond)
			return len(got) == 1 && got[0] == "sensors/1/temp=22.0"
		})
	}

	// Crossing changes of one topic from two nodes: every node ends with
	// the same one, the last of one of them.
	for i := range 30 {
		pub.publish("sensors/3/temp", 0, true, fmt.Sprint("a", i))
		other.publish("sensors/3/temp", 0, true, fmt.Sprint("b", i))
	}
	waitFor(t, "every node with the same last retained message", func() bool {
		var first []string
		for i := range 3 {
			got := retainedOn(t, nodes[i]["mqtt"], "sensors/3/temp", 200*time.Millisecond)
			if len(got) != 1 || got[0] != "sensors/3/temp=a29" && got[0] != "sensors/3/temp=b29" {
				return false
			}
			if i == 0 {
				first = got
			} else if got[0] != first[0] {
				return false
			}
		}
		return true
	})
	pub.close()
	other.close()
	clearer.close()
	stop()
}

// TestClusterMQTTSessionResumesOnAnotherNode: a persistent MQTT 3.1.1
// session made on node A resumes on node B: CONNACK session present, its
// subscription in place, and the QoS 1 messages published (on node C)
// while it was away delivered there, once each.
func TestClusterMQTTSessionResumesOnAnotherNode(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	nodes, stop := startServeCluster(t)
	defer stop()

	msgs := make(chan pahov3.Message, 100)
	dial := func(addr string) (pahov3.Client, bool) { return dialMQTT3(t, addr, "meter-7", false, msgs) }
	a, present := dial(nodes[0]["mqtt"])
	if present {
		t.Fatal("a new session reported present")
	}
	subscribeMQTT3(t, a, "meters/7/#")
	a.Disconnect(250)
	if got, _ := sessionQueues(t, nodes[1]["nats"], "meter-7"); len(got) != 1 {
		t.Fatalf("the session's queues: %v, want one", got)
	}

	pub := dialMQTT5(t, nodes[2]["mqtt"], "", nil)
	for i := range 5 {
		pub.publish("meters/7/reading", 1, false, fmt.Sprint("r", i))
	}
	// Acknowledged (PUBACK) once stored: in the stream all session queues
	// share.
	if _, n := sessionQueues(t, nodes[0]["nats"], "meter-7"); n != 5 {
		t.Fatalf("%d messages queued for the offline session, want 5", n)
	}

	b, present := dial(nodes[1]["mqtt"])
	defer b.Disconnect(250)
	if !present {
		t.Fatal("session not present on node B")
	}
	// Each once, in order: the session's queue is read from its first
	// message on by whichever node holds the session.
	for i := range 5 {
		select {
		case m := <-msgs:
			if want := fmt.Sprint("r", i); string(m.Payload()) != want {
				t.Fatalf("queued message %d on node B: %q, want %q", i, m.Payload(), want)
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("only %d of 5 queued messages delivered on node B", i)
		}
	}
	// The subscription is in place on B: a new message arrives, once.
	pub.publish("meters/7/reading", 1, false, "live")
	select {
	case m := <-msgs:
		if string(m.Payload()) != "live" {
			t.Fatalf("got %q, want live", m.Payload())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("live message not delivered on node B")
	}
	select {
	case m := <-msgs:
		t.Fatalf("unexpected message %q", m.Payload())
	case <-time.After(500 * time.Millisecond):
	}
	b.Disconnect(250)

	// A clean start on node C ends the session: a persistent connect on
	// node A afterwards finds none, and what is published meanwhile is
	// not kept for it.
	c, present := dialMQTT3(t, nodes[2]["mqtt"], "meter-7", true, msgs)
	if present {
		t.Fatal("clean start reported a session present")
	}
	c.Disconnect(250)
	waitFor(t, "the ended session's queue deleted in the cluster", func() bool {
		q, n := sessionQueues(t, nodes[0]["nats"], "meter-7")
		return len(q) == 0 && n == 0
	})
	a, present = dial(nodes[0]["mqtt"])
	defer a.Disconnect(250)
	if present {
		t.Fatal("the session ended by a clean start is present on node A")
	}
	a.Disconnect(250)
	pub.close()
	stop()
}

// takenOver checks that old was sent DISCONNECT 0x8E (session taken over)
// and that by found the session present.
func takenOver(t *testing.T, old, by *mqtt5) {
	t.Helper()
	select {
	case d := <-old.discs:
		if d.ReasonCode != 0x8E {
			t.Fatalf("the old connection got DISCONNECT %#x, want 0x8E", d.ReasonCode)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the old connection not told of the takeover")
	}
	if !by.ca.SessionPresent {
		t.Fatal("session not present for the connection that took it over")
	}
}

// TestClusterMQTTTakeover: a client connected on node A connects with the
// same client id on node B: the connection on A gets DISCONNECT 0x8E
// (session taken over), B finds the session present and gets the message
// A held unacknowledged, and the messages published afterwards reach B
// once each and A not at all.
func TestClusterMQTTTakeover(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	nodes, stop := startServeCluster(t)
	defer stop()
	expiry := uint32(300)
	persistent := func() *paho.Connect {
		return &paho.Connect{CleanStart: false, KeepAlive: 30, Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}}
	}
	// The first connection never acknowledges: what it holds when it is
	// taken over goes to the second, once.
	first := dialMQTT5(t, nodes[0]["mqtt"], "twin", persistent(), func(c *paho.ClientConfig) { c.EnableManualAcknowledgment = true })
	first.subscribe("alerts/#", 1)
	pub := dialMQTT5(t, nodes[2]["mqtt"], "", nil)
	pub.publish("alerts/smoke", 1, false, "in flight")
	if p := first.next(15 * time.Second); string(p.Payload) != "in flight" {
		t.Fatalf("first got %q", p.Payload)
	}

	second := dialMQTT5(t, nodes[1]["mqtt"], "twin", persistent())
	takenOver(t, first, second)
	if p := second.next(15 * time.Second); string(p.Payload) != "in flight" {
		t.Fatalf("second got %q, want the message the first held", p.Payload)
	}
	const n = 20
	for i := range n {
		pub.publish("alerts/fire", 1, false, fmt.Sprint(i))
	}
	seen := map[string]bool{}
	for range n {
		p := second.next(15 * time.Second)
		if seen[string(p.Payload)] {
			t.Fatalf("message %q delivered twice", p.Payload)
		}
		seen[string(p.Payload)] = true
	}
	second.none(500 * time.Millisecond)
	first.none(0)

	// And back: a third connection on node C takes it from B.
	third := dialMQTT5(t, nodes[2]["mqtt"], "twin", persistent())
	takenOver(t, second, third)
	pub.publish("alerts/fire", 1, false, "after")
	if p := third.next(15 * time.Second); string(p.Payload) != "after" {
		t.Fatalf("got %q, want after", p.Payload)
	}
	third.none(500 * time.Millisecond)
	first.close()
	second.close()
	third.close()
	pub.close()
	stop()
}

// TestClusterMQTTTakeoverRace: while a client is connected on node A, two
// connections with its client id race on nodes B and C, a few rounds: each
// time the one on A is told 0x8E, exactly one of the racers is left
// connected, with the session, and it alone receives what is published
// next, once.
func TestClusterMQTTTakeoverRace(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	nodes, stop := startServeCluster(t)
	defer stop()
	expiry := uint32(300)
	persistent := func() *paho.Connect {
		return &paho.Connect{CleanStart: false, KeepAlive: 30, Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}}
	}
	pub := dialMQTT5(t, nodes[0]["mqtt"], "", nil)
	holder := dialMQTT5(t, nodes[0]["mqtt"], "racer", persistent())
	holder.subscribe("race/#", 1)
	for round := range 4 {
		var clients [2]*mqtt5
		done := make(chan struct{}, 2)
		for i := range 2 {
			go func() {
				defer func() { done <- struct{}{} }()
				if m, err := connectMQTT5(t, nodes[1+i]["mqtt"], "racer", persistent()); err == nil {
					clients[i] = m
				}
			}()
		}
		<-done
		<-done
		for _, m := range clients {
			if m != nil {
				t.Cleanup(m.close)
			}
		}
		select {
		case d := <-holder.discs:
			if d.ReasonCode != 0x8E {
				t.Fatalf("round %d: the holder got DISCONNECT %#x", round, d.ReasonCode)
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("round %d: the holder on node A not told of the takeover", round)
		}
		alive := func() []*mqtt5 {
			var out []*mqtt5
			for _, m := range clients {
				if m == nil {
					continue
				}
				select {
				case <-m.c.Done():
				default:
					out = append(out, m)
				}
			}
			return out
		}
		waitFor(t, fmt.Sprintf("round %d: one connection left", round), func() bool { return len(alive()) == 1 })
		winner := alive()[0]
		if !winner.ca.SessionPresent {
			t.Fatalf("round %d: the connection left has no session", round)
		}
		pub.publish("race/x", 1, false, fmt.Sprint("round ", round))
		if p := winner.next(15 * time.Second); string(p.Payload) != fmt.Sprint("round ", round) {
			t.Fatalf("round %d: got %q", round, p.Payload)
		}
		winner.none(300 * time.Millisecond)
		if len(alive()) != 1 {
			t.Fatalf("round %d: %d connections alive after the publish", round, len(alive()))
		}
		for _, m := range clients {
			if m != nil && m != winner {
				m.none(0)
			}
		}
		holder.none(0)
		winner.close()
		holder = dialMQTT5(t, nodes[0]["mqtt"], "racer", persistent())
		if !holder.ca.SessionPresent {
			t.Fatalf("round %d: session not present back on node A", round)
		}
	}
	holder.close()
	pub.close()
	stop()
}

// TestClusterMQTTOrphanedSessionExpires: the sessions of a node that stays
// down are adopted by a live node after cluster.mqtt_orphan_after: a
// delayed will that node was holding goes out at its time, and the
// session expires (its queues and record gone) its expiry interval after
// its client left; the client finds it present in between.
func TestClusterMQTTOrphanedSessionExpires(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ns := startServeNodes(t, 3, func(_ int, cfg *config.Config) {
		cfg.Cluster.MQTTOrphanAfter = config.Duration(2 * time.Second)
	})
	defer ns.stopAll() // before the leak check
	watcher := dialMQTT5(t, ns.addrs[0]["mqtt"], "watcher", nil)
	watcher.subscribe("wills/#", 1)

	expiry, delay := uint32(6), uint32(5)
	cp := &paho.Connect{CleanStart: false, KeepAlive: 30,
		Properties:     &paho.ConnectProperties{SessionExpiryInterval: &expiry},
		WillMessage:    &paho.WillMessage{Topic: "wills/orphan", Payload: []byte("gone"), QoS: 1},
		WillProperties: &paho.WillProperties{WillDelayInterval: &delay}}
	var raw net.Conn
	orphan := dialMQTT5(t, ns.addrs[2]["mqtt"], "orphan", cp, func(c *paho.ClientConfig) { raw = c.Conn })
	orphan.subscribe("orph/#", 1)
	if got, _ := sessionQueues(t, ns.addrs[0]["nats"], "orphan"); len(got) != 1 {
		t.Fatalf("the session's queues: %v, want one", got)
	}
	// The client drops off (no DISCONNECT): node 2 holds its will for 5 s,
	// but goes down meanwhile, and does not come back.
	_ = raw.Close()
	dropped := time.Now()
	time.Sleep(500 * time.Millisecond)
	ns.stop(2)
	p := watcher.next(30 * time.Second)
	if p.Topic != "wills/orphan" || string(p.Payload) != "gone" {
		t.Fatalf("got %s %q, want the orphan's will", p.Topic, p.Payload)
	}
	if d := time.Since(dropped); d < time.Duration(delay)*time.Second {
		t.Fatalf("the will went out %v after its client dropped off, before its delay", d)
	}
	t.Logf("will out %v after the client dropped off", time.Since(dropped).Round(100*time.Millisecond))
	// The adopter holds the session: present for the client meanwhile...
	cp.WillMessage, cp.WillProperties = nil, nil
	back := dialMQTT5(t, ns.addrs[1]["mqtt"], "orphan", cp)
	if !back.ca.SessionPresent {
		t.Fatal("the adopted session is not present for its client")
	}
	back.close()
	// ...and it expires, everywhere, its expiry interval after the client
	// left.
	waitFor(t, "the adopted session expired", func() bool {
		q, n := sessionQueues(t, ns.addrs[0]["nats"], "orphan")
		return len(q) == 0 && n == 0
	})
	again := dialMQTT5(t, ns.addrs[0]["mqtt"], "orphan", cp)
	if again.ca.SessionPresent {
		t.Fatal("an expired session is present")
	}
	again.close()
	watcher.close()
}

// TestClusterMQTTSessionAcrossNodeRestarts: a session held by a node that
// is down is taken on another node (present, with what was queued
// meanwhile); a node that restarts finds the sessions it still holds, and
// not those another node took while it was down. A session that expires
// is gone on every node.
func TestClusterMQTTSessionAcrossNodeRestarts(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ns := newNodeSet(t)
	defer ns.stopAll() // before the leak check
	msgs := make(chan pahov3.Message, 100)
	dial := func(i int, id string) (pahov3.Client, bool) {
		return dialMQTT3(t, ns.addrs[i]["mqtt"], id, false, msgs)
	}
	subscribe := func(c pahov3.Client, filter string) { t.Helper(); subscribeMQTT3(t, c, filter) }
	expect := func(want string) {
		t.Helper()
		select {
		case m := <-msgs:
			if string(m.Payload()) != want {
				t.Fatalf("got %q, want %q", m.Payload(), want)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("%q not delivered", want)
		}
	}
	// "roamer" and "homebody" both start on node 0.
	c, _ := dial(0, "roamer")
	subscribe(c, "roam/#")
	c.Disconnect(250)
	c, _ = dial(0, "homebody")
	subscribe(c, "home/#")
	c.Disconnect(250)

	ns.stop(0)
	// The leaders node 0 had are elected again elsewhere first (a few
	// seconds, more on a loaded machine): connect once the cluster takes
	// writes again.
	var pub *mqtt5
	for deadline := time.Now().Add(60 * time.Second); pub == nil; {
		m, err := connectMQTT5(t, ns.addrs[1]["mqtt"], "", nil)
		if err == nil {
			pub = m
		} else if time.Now().After(deadline) {
			t.Fatalf("no connect within 60s of node 0 stopping: %v", err)
		}
	}
	t.Cleanup(pub.close)
	pub.publish("roam/1", 1, false, "while node 0 was down")
	c, present := dial(2, "roamer")
	if !present {
		t.Fatal("the session of a node that is down not present on node 2")
	}
	expect("while node 0 was down")
	c.Disconnect(250)

	ns.start(0)
	ns.waitReady(0)
	// Node 0 holds "homebody" still: present there, with its subscription.
	c, present = dial(0, "homebody")
	if !present {
		t.Fatal("node 0 lost the session it held across its restart")
	}
	pub.publish("home/1", 1, false, "home again")
	expect("home again")
	c.Disconnect(250)
	// "roamer" is node 2's now; taking it back on node 0 works as any
	// takeover, and finds what was queued.
	pub.publish("roam/1", 1, false, "back")
	c, present = dial(0, "roamer")
	if !present {
		t.Fatal("roamer not present on node 0")
	}
	expect("back")
	c.Disconnect(250)

	// A session that expires on the node holding it is gone everywhere.
	expiry := uint32(1)
	short := dialMQTT5(t, ns.addrs[1]["mqtt"], "mayfly", &paho.Connect{CleanStart: false, KeepAlive: 30,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}})
	short.subscribe("fly/#", 1)
	if got, _ := sessionQueues(t, ns.addrs[2]["nats"], "mayfly"); len(got) != 1 {
		t.Fatalf("mayfly's queues: %v, want one", got)
	}
	short.close()
	waitFor(t, "the expired session's queue deleted", func() bool {
		q, n := sessionQueues(t, ns.addrs[2]["nats"], "mayfly")
		return len(q) == 0 && n == 0
	})
	short = dialMQTT5(t, ns.addrs[2]["mqtt"], "mayfly", &paho.Connect{CleanStart: false, KeepAlive: 30,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}})
	if short.ca.SessionPresent {
		t.Fatal("an expired session is present on another node")
	}
	short.close()
	pub.close()
	for i := range 3 {
		ns.stop(i)
	}
}

// TestClusterMQTTSharedSubscription: members of a shared subscription
// group on two nodes share its messages, and when the members on one node
// leave, the group's queue stays for the member on the other.
func TestClusterMQTTSharedSubscription(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	nodes, stop := startServeCluster(t)
	defer stop()
	a := dialMQTT5(t, nodes[0]["mqtt"], "worker-a", nil)
	a.subscribe("$share/workers/jobs/#", 1)
	b := dialMQTT5(t, nodes[1]["mqtt"], "worker-b", nil)
	b.subscribe("$share/workers/jobs/#", 1)
	pub := dialMQTT5(t, nodes[2]["mqtt"], "", nil)
	const n = 20
	for i := range n {
		pub.publish("jobs/x", 1, false, fmt.Sprint(i))
	}
	seen := map[string]bool{}
	for len(seen) < n {
		var p *paho.Publish
		select {
		case p = <-a.msgs:
		case p = <-b.msgs:
		case <-time.After(15 * time.Second):
			t.Fatalf("only %d of %d jobs delivered", len(seen), n)
		}
		if seen[string(p.Payload)] {
			t.Fatalf("job %q delivered twice", p.Payload)
		}
		seen[string(p.Payload)] = true
	}
	a.close()
	pub.publish("jobs/x", 1, false, "after a left")
	if p := b.next(15 * time.Second); string(p.Payload) != "after a left" {
		t.Fatalf("got %q", p.Payload)
	}
	b.none(300 * time.Millisecond)
	b.close()
	pub.close()
	stop()
}
