package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/go-stomp/stomp/v3"
	"github.com/nats-io/nats.go"
	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"

	"github.com/bourse-mq/bourse/cluster"
)

// fanoutRecv collects the bodies one consumer receives, by body, so that a
// test can wait for the warm-up and count exact copies.
type fanoutRecv struct {
	name string
	ch   chan string
	got  map[string]int
}

func newFanoutRecv(name string) *fanoutRecv {
	return &fanoutRecv{name: name, ch: make(chan string, 10000), got: map[string]int{}}
}

// drain takes what has arrived, waiting at most d for the first.
func (r *fanoutRecv) drain(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case b := <-r.ch:
			r.got[b]++
			continue
		case <-t.C:
			return
		}
	}
}

func (r *fanoutRecv) sawPrefix(p string) bool {
	for b := range r.got {
		if strings.HasPrefix(b, p) {
			return true
		}
	}
	return false
}

// warmUps numbers the warm-ups, so that each waits for its own messages.
var warmUps atomic.Int32

// warmUp publishes "warm<k>-<n>" until every receiver has one: NATS tells
// the other servers of a new subscription asynchronously (about a
// millisecond on loopback), so a binding made on one node reaches a
// publish on another a moment after its bind-ok.
func warmUp(t *testing.T, publish func(body string), recvs ...*fanoutRecv) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	prefix := fmt.Sprintf("warm%d-", warmUps.Add(1))
	for n := 0; ; n++ {
		publish(fmt.Sprintf("%s%d", prefix, n))
		ready := true
		for _, r := range recvs {
			r.drain(50 * time.Millisecond)
			ready = ready && r.sawPrefix(prefix)
		}
		if ready {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("fan-out never reached every node within 20s (after %d warm-up messages)", n+1)
		}
	}
}

// expectOnce waits until r has every body once, then checks for a while
// that no body came twice.
func expectOnce(t *testing.T, r *fanoutRecv, bodies ...string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		missing := ""
		for _, b := range bodies {
			if r.got[b] == 0 {
				missing = b
				break
			}
		}
		if missing == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %q not received within 15s (got %v)", r.name, missing, r.got)
		}
		r.drain(50 * time.Millisecond)
	}
	r.drain(500 * time.Millisecond) // copies would come right behind
	for _, b := range bodies {
		if r.got[b] != 1 {
			t.Fatalf("%s: %q received %d times", r.name, b, r.got[b])
		}
	}
}

func amqpRecv(t *testing.T, ch *amqp.Channel, q, name string) (*fanoutRecv, <-chan amqp.Delivery) {
	t.Helper()
	ds, err := ch.Consume(q, "", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := newFanoutRecv(name)
	full := make(chan amqp.Delivery, 10000)
	go func() {
		for d := range ds {
			full <- d
			r.ch <- string(d.Body)
		}
		close(full)
	}()
	return r, full
}

// amqpChannel opens an AMQP connection as guest to addr and a channel on it.
func amqpChannel(t *testing.T, addr string) (*amqp.Connection, *amqp.Channel) {
	t.Helper()
	c, err := amqp.Dial("amqp://guest:guest@" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	ch, err := c.Channel()
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	return c, ch
}

// noResponders reports whether nobody in the cluster listens to subject,
// asked through node's NATS server: a request nobody listens to gets the
// server's "no responders" at once; one somebody listens to (a Bourse node,
// which never answers a plain request) times out.
func noResponders(t *testing.T, natsURL, subject string) bool {
	t.Helper()
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_, err = nc.Request(subject, []byte("probe"), 300*time.Millisecond)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return true
	case errors.Is(err, nats.ErrTimeout):
		return false
	}
	t.Fatalf("request on %s: %v", subject, err)
	return false
}

// TestClusterFanoutAMQP: exclusive queues on other nodes get what is
// published on node A (a topic exchange, a fanout exchange, the default
// exchange by queue name), once each, with properties and headers; the
// publisher's own node delivers its local copy itself (no echo); a
// mandatory message taken only by another node is not returned, one taken
// by nobody is; and the nodes stop listening once the consumers' connections
// are closed.
func TestClusterFanoutAMQP(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	nodes, stop := startServeCluster(t)
	defer stop()
	dial := func(i int) (*amqp.Connection, *amqp.Channel) { t.Helper(); return amqpChannel(t, nodes[i]["amqp"]) }
	ca, a := dial(0)
	defer ca.Close()
	cb, b := dial(1)
	defer cb.Close()
	cc, c := dial(2)
	defer cc.Close()
	if err := a.ExchangeDeclare("events", "fanout", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	exclusive := func(ch *amqp.Channel, binds ...[2]string) string {
		t.Helper()
		q, err := ch.QueueDeclare("", false, true, true, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, bd := range binds {
			if err := ch.QueueBind(q.Name, bd[1], bd[0], false, nil); err != nil {
				t.Fatal(err)
			}
		}
		return q.Name
	}
	// B: one queue bound twice (overlapping patterns: one NATS message
	// matches two of B's subscriptions) and to the fanout exchange; C: the
	// fanout exchange only; A (the publisher's node): the fanout exchange.
	qb := exclusive(b, [2]string{"amq.topic", "news.#"}, [2]string{"amq.topic", "news.*"}, [2]string{"events", ""})
	qc := exclusive(c, [2]string{"events", ""})
	qa := exclusive(a, [2]string{"events", ""})
	rb, db := amqpRecv(t, b, qb, "node B")
	rc, _ := amqpRecv(t, c, qc, "node C")
	ra, _ := amqpRecv(t, a, qa, "node A")

	pub := func(exchange, key string, mandatory bool, p amqp.Publishing) {
		t.Helper()
		if err := a.PublishWithContext(context.Background(), exchange, key, mandatory, false, p); err != nil {
			t.Fatal(err)
		}
	}
	warmUp(t, func(body string) { pub("events", "", false, amqp.Publishing{Body: []byte(body)}) }, rb, rc, ra)
	warmUp(t, func(body string) { pub("amq.topic", "news.warm", false, amqp.Publishing{Body: []byte(body)}) }, rb)

	// The topic exchange: B only, once, properties and headers intact.
	ts := time.Unix(1700000000, 0).UTC()
	pub("amq.topic", "news.sport", false, amqp.Publishing{Body: []byte("topic-1"), ContentType: "text/plain",
		CorrelationId: "corr", MessageId: "mid", ReplyTo: "back", Type: "kind", AppId: "app", Priority: 3,
		Timestamp: ts, Headers: amqp.Table{"h": "v", "n": int32(7), "nested": amqp.Table{"x": true}}})
	var d amqp.Delivery
	select {
	case d = <-db:
		for strings.HasPrefix(string(d.Body), "warm") {
			d = <-db
		}
	case <-time.After(15 * time.Second):
		t.Fatal("topic message not received on node B")
	}
	if string(d.Body) != "topic-1" || d.ContentType != "text/plain" || d.CorrelationId != "corr" || d.MessageId != "mid" ||
		d.ReplyTo != "back" || d.Type != "kind" || d.AppId != "app" || d.Priority != 3 || !d.Timestamp.Equal(ts) ||
		d.Headers["h"] != "v" || d.Headers["n"] != int32(7) || d.Exchange != "amq.topic" || d.RoutingKey != "news.sport" {
		t.Fatalf("on node B: %+v", d)
	}
	if nested, _ := d.Headers["nested"].(amqp.Table); nested["x"] != true {
		t.Fatalf("nested header on node B: %#v", d.Headers["nested"])
	}

	// The fanout exchange: each node's queue once, the publisher's included.
	for i := range 20 {
		pub("events", "", false, amqp.Publishing{Body: fmt.Appendf(nil, "fan-%d", i)})
	}
	var want []string
	for i := range 20 {
		want = append(want, fmt.Sprintf("fan-%d", i))
	}
	expectOnce(t, rb, want...)
	expectOnce(t, rc, want...)
	expectOnce(t, ra, want...)
	expectOnce(t, rb, "topic-1")
	if rc.got["topic-1"]+ra.got["topic-1"] != 0 {
		t.Fatalf("topic message reached a node without a matching binding: C %d, A %d", rc.got["topic-1"], ra.got["topic-1"])
	}

	// The default exchange, by queue name (RPC replies to an exclusive
	// reply queue declared on another node).
	pub("", qc, false, amqp.Publishing{Body: []byte("direct-to-c")})
	expectOnce(t, rc, "direct-to-c")

	// Mandatory: taken on node B only, so not returned; taken by nobody,
	// returned.
	returns := a.NotifyReturn(make(chan amqp.Return, 10))
	pub("amq.topic", "news.mandatory", true, amqp.Publishing{Body: []byte("mandatory-b")})
	expectOnce(t, rb, "mandatory-b")
	pub("amq.topic", "nobody.listens", true, amqp.Publishing{Body: []byte("mandatory-none")})
	select {
	case r := <-returns:
		if string(r.Body) != "mandatory-none" || r.ReplyCode != amqp.NoRoute {
			t.Fatalf("returned %q (%d), want only mandatory-none", r.Body, r.ReplyCode)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("unroutable mandatory message not returned")
	}
	select {
	case r := <-returns:
		t.Fatalf("%q returned too", r.Body)
	case <-time.After(200 * time.Millisecond):
	}

	// RPC with direct reply-to across nodes: the requester on B, the
	// request through a shared queue, the responder on A.
	if _, err := a.QueueDeclare("rpc", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	// consumeOn opens a channel on c and consumes q on it, auto-ack.
	consumeOn := func(c *amqp.Connection, q string) (*amqp.Channel, <-chan amqp.Delivery) {
		t.Helper()
		ch, err := c.Channel()
		if err != nil {
			t.Fatal(err)
		}
		ds, err := ch.Consume(q, "", true, false, false, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		return ch, ds
	}
	ra2, requests := consumeOn(ca, "rpc")
	go func() {
		for d := range requests {
			_ = ra2.PublishWithContext(context.Background(), "", d.ReplyTo, false, false,
				amqp.Publishing{CorrelationId: d.CorrelationId, Body: append([]byte("re:"), d.Body...)})
		}
	}()
	rb2, replies := consumeOn(cb, "amq.rabbitmq.reply-to")
	rpcDeadline := time.Now().Add(20 * time.Second)
	for attempt := 0; ; attempt++ {
		// A request may come back before NATS has told A of B's interest:
		// asked again, as an RPC client does after its timeout.
		corr := fmt.Sprint("call-", attempt)
		if err := rb2.PublishWithContext(context.Background(), "", "rpc", false, false,
			amqp.Publishing{ReplyTo: "amq.rabbitmq.reply-to", CorrelationId: corr, Body: []byte("ping")}); err != nil {
			t.Fatal(err)
		}
		var r amqp.Delivery
		select {
		case r = <-replies:
		case <-time.After(2 * time.Second):
		}
		if string(r.Body) == "re:ping" && strings.HasPrefix(r.CorrelationId, "call-") {
			break
		}
		if time.Now().After(rpcDeadline) {
			t.Fatal("no direct reply-to answer from node A within 20s")
		}
	}

	// Closing the consumers' connections takes the nodes' interest with it:
	// nobody in the cluster listens to the subjects any more.
	topicSubj := cluster.FanoutSubject("/", "amq.topic", "news.sport")
	if noResponders(t, nodes[0]["nats"], topicSubj) {
		t.Fatal("no node listens to amq.topic news.sport while B's queue is bound")
	}
	cb.Close()
	cc.Close()
	if _, err := a.QueueDelete(qa, false, false, false); err != nil {
		t.Fatal(err)
	}
	for _, subj := range []string{topicSubj, cluster.FanoutSubject("/", "events", ""), cluster.FanoutSubject("/", "", qc)} {
		waitFor(t, "nobody listens to "+subj, func() bool { return noResponders(t, nodes[0]["nats"], subj) })
	}
	ca.Close()
	stop()
}

// TestClusterFanoutMQTTAndSTOMP: an MQTT 5 clean-session subscriber on
// node B gets QoS 0 and QoS 1 publishes of an MQTT client on node A, user
// properties included, and an MQTT subscriber on A gets them once (no echo
// through NATS); a STOMP /topic subscription on node C gets an AMQP publish
// made on A.
func TestClusterFanoutMQTTAndSTOMP(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	nodes, stop := startServeCluster(t)
	defer stop()

	mqttClient := func(i int, id string) (*paho.Client, *fanoutRecv, chan *paho.Publish) {
		t.Helper()
		conn, err := net.DialTimeout("tcp", nodes[i]["mqtt"], 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		r := newFanoutRecv(id)
		full := make(chan *paho.Publish, 10000)
		c := paho.NewClient(paho.ClientConfig{Conn: conn, OnPublishReceived: []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) {
				full <- pr.Packet
				r.ch <- string(pr.Packet.Payload)
				return true, nil
			}}})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := c.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30,
			UsernameFlag: true, Username: "guest", PasswordFlag: true, Password: []byte("guest")}); err != nil {
			t.Fatalf("MQTT connect %s: %v", id, err)
		}
		return c, r, full
	}
	closeMQTT := func(c *paho.Client) {
		_ = c.Disconnect(&paho.Disconnect{})
		select {
		case <-c.Done():
		case <-time.After(5 * time.Second):
		}
	}
	subscribe := func(c *paho.Client, filter string, qos byte, noLocal bool) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: qos, NoLocal: noLocal}}}); err != nil {
			t.Fatal(err)
		}
	}
	pa, rpa, _ := mqttClient(0, "pub-a")
	defer closeMQTT(pa)
	sb, rb, fb := mqttClient(1, "sub-b")
	defer closeMQTT(sb)
	sa, ra, _ := mqttClient(0, "sub-a")
	defer closeMQTT(sa)
	subscribe(sb, "sensors/+/temp", 1, false)
	subscribe(sa, "sensors/#", 1, false)
	subscribe(pa, "sensors/#", 1, true) // no-local: never its own messages

	publish := func(topic string, qos byte, body string, user paho.UserProperties) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := pa.Publish(ctx, &paho.Publish{Topic: topic, QoS: qos, Payload: []byte(body),
			Properties: &paho.PublishProperties{User: user, ContentType: "text/plain"}}); err != nil {
			t.Fatal(err)
		}
	}
	warmUp(t, func(body string) { publish("sensors/warm/temp", 0, body, nil) }, rb)
	// Let the warm-up messages still in flight arrive before counting.
	rb.drain(300 * time.Millisecond)
	for len(fb) > 0 {
		<-fb
	}

	user := paho.UserProperties{{Key: "site", Value: "lyon"}, {Key: "unit", Value: "celsius"}}
	publish("sensors/s1/temp", 0, "qos0", user)
	publish("sensors/s1/temp", 1, "qos1", user)
	expectOnce(t, rb, "qos0", "qos1")
	for _, body := range []string{"qos0", "qos1"} {
		var p *paho.Publish
		for p == nil || string(p.Payload) != body {
			select {
			case p = <-fb:
			case <-time.After(5 * time.Second):
				t.Fatalf("%s not among node B's deliveries", body)
			}
		}
		if p.Topic != "sensors/s1/temp" || p.Properties == nil || p.Properties.ContentType != "text/plain" ||
			p.Properties.User.Get("site") != "lyon" || p.Properties.User.Get("unit") != "celsius" {
			t.Fatalf("%s on node B: topic %q properties %+v", body, p.Topic, p.Properties)
		}
		if body == "qos1" && p.QoS != 1 {
			t.Fatalf("qos1 delivered at QoS %d", p.QoS)
		}
	}
	// The subscriber on the publisher's node: once each, although node B
	// has a subscription for them too.
	expectOnce(t, ra, "qos0", "qos1")
	rpa.drain(300 * time.Millisecond)
	if len(rpa.got) != 0 {
		t.Fatalf("the publisher's no-local subscription got %v", rpa.got)
	}

	// A QoS 1 publish only node B's subscriber takes: acknowledged as a
	// success, not "no matching subscribers".
	subscribe(sb, "remote/x", 1, false)
	warmUp(t, func(body string) { publish("remote/x", 0, body, nil) }, rb)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	resp, err := pa.Publish(ctx, &paho.Publish{Topic: "remote/x", QoS: 1, Payload: []byte("remote-only")})
	cancel()
	if err != nil || resp.ReasonCode != 0 {
		t.Fatalf("QoS 1 publish taken on node B only: reason %v, %v", resp, err)
	}
	expectOnce(t, rb, "remote-only")

	// STOMP /topic on node C, AMQP publish on node A.
	sc, err := stomp.Dial("tcp", nodes[2]["stomp"], stomp.ConnOpt.Login("guest", "guest"), stomp.ConnOpt.Host("/"),
		stomp.ConnOpt.HeartBeat(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	sub, err := sc.Subscribe("/topic/alerts.fire", stomp.AckAuto)
	if err != nil {
		t.Fatal(err)
	}
	rc := newFanoutRecv("STOMP on node C")
	go func() {
		for m := range sub.C {
			if m.Err == nil {
				rc.ch <- string(m.Body) + "|" + m.Header.Get("x-origin")
			}
		}
	}()
	conn, ach := amqpChannel(t, nodes[0]["amqp"])
	defer conn.Close()
	amqpPub := func(body string) {
		if err := ach.PublishWithContext(context.Background(), "amq.topic", "alerts.fire", false, false,
			amqp.Publishing{Body: []byte(body), Headers: amqp.Table{"x-origin": "amqp"}}); err != nil {
			t.Fatal(err)
		}
	}
	warmUp(t, amqpPub, rc)
	amqpPub("fire!")
	expectOnce(t, rc, "fire!|amqp")

	// Everything closed: nobody listens any more.
	_ = sub.Unsubscribe()
	_ = sc.Disconnect()
	closeMQTT(sb)
	closeMQTT(sa)
	closeMQTT(pa)
	for _, subj := range []string{cluster.FanoutSubject("/", "amq.topic", "alerts.fire"),
		cluster.FanoutSubject("/", "amq.topic", "sensors.s1.temp")} {
		waitFor(t, "nobody listens to "+subj, func() bool { return noResponders(t, nodes[1]["nats"], subj) })
	}
	conn.Close()
	stop()
}
