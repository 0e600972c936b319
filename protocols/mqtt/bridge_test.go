package mqtt

import (
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/router"
)

func TestMQTTToRouterQueue(t *testing.T) {
	ts := startServer(t, nil, Options{})
	v := ts.vhost("/")
	s := bindSink(t, v, "amqp-sensors", "sensors.#")
	pub := dialV5(t, ts.addr, "pub", nil)
	exp, pf := uint32(60), byte(1)
	pub.publish(&paho.Publish{Topic: "sensors/kitchen/temp", QoS: 1, Payload: []byte("21.5"),
		Properties: &paho.PublishProperties{
			ContentType:     "text/plain",
			CorrelationData: []byte("corr-1"),
			ResponseTopic:   "replies/pub",
			MessageExpiry:   &exp,
			PayloadFormat:   &pf,
			User: paho.UserProperties{
				{Key: "traceparent", Value: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
				{Key: "tag", Value: "a"}, {Key: "tag", Value: "b"},
				{Key: upMessageID, Value: "m-1"}, {Key: upPriority, Value: "5"},
				{Key: upTimestamp, Value: "1700000000"}, {Key: upType, Value: "reading"},
			},
		}})
	m := s.next(t).Msg
	want := core.Properties{
		ContentType: "text/plain", DeliveryMode: core.Persistent, Priority: 5, CorrelationID: "corr-1",
		ReplyTo: "replies.pub", Expiration: "60000", MessageID: "m-1",
		Timestamp: time.Unix(1700000000, 0).UTC(), Type: "reading",
	}
	if m.Exchange != router.AMQTopic || m.RoutingKey != "sensors.kitchen.temp" || string(m.Body) != "21.5" {
		t.Fatalf("routed as %s %s %q", m.Exchange, m.RoutingKey, m.Body)
	}
	if !reflect.DeepEqual(m.Props, want) {
		t.Fatalf("props\n got %+v\nwant %+v", m.Props, want)
	}
	wantH := core.Table{
		"traceparent":    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
		"tag":            []any{"a", "b"},
		hdrReplyToTopic:  "replies.pub",
		hdrPublishQoS:    int8(1),
		hdrPayloadFormat: int8(1),
	}
	if !reflect.DeepEqual(m.Headers, wantH) {
		t.Fatalf("headers\n got %#v\nwant %#v", m.Headers, wantH)
	}
	if m.Origin.Protocol != core.ProtoMQTT || m.Origin.User != "guest" || m.Origin.VHost != "/" {
		t.Fatalf("origin %+v", m.Origin)
	}

	// QoS 0 is transient.
	pub.publish(&paho.Publish{Topic: "sensors/x", QoS: 0, Payload: []byte("t")})
	if m := s.next(t).Msg; m.Props.DeliveryMode != core.Transient || m.Headers[hdrPublishQoS] != int8(0) {
		t.Fatalf("QoS 0: %+v %v", m.Props, m.Headers)
	}

	// An AMQP replier answering reply_to on amq.topic reaches the requester.
	pub.subscribe(paho.SubscribeOptions{Topic: "replies/pub", QoS: 1})
	if _, err := v.Publish(&core.Message{Exchange: router.AMQTopic, RoutingKey: m.Props.ReplyTo,
		Props: core.Properties{CorrelationID: "corr-1"}, Body: []byte("ack")}, router.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	r := pub.next()
	if r.Topic != "replies/pub" || string(r.Properties.CorrelationData) != "corr-1" {
		t.Fatalf("reply %s %q", r.Topic, r.Properties.CorrelationData)
	}
}

// TestRouterToMQTTAndBack publishes an AMQP-style message with every
// property and typed headers, receives it over MQTT 5, republishes it as
// received, and checks that nothing was lost.
func TestRouterToMQTTAndBack(t *testing.T) {
	ts := startServer(t, nil, Options{})
	v := ts.vhost("/")
	back := bindSink(t, v, "back", "echo.#")
	sub := dialV5(t, ts.addr, "sub", nil)
	sub.subscribe(paho.SubscribeOptions{Topic: "orders/#", QoS: 1})
	v3 := dialV3(t, ts.addr, "v3sub", true, "", "")
	v3.subscribe("orders/#", 1)

	orig := &core.Message{
		Exchange:   router.AMQTopic,
		RoutingKey: "orders.eu.42",
		Body:       []byte(`{"id":42}`),
		Props: core.Properties{
			ContentType: "application/json", ContentEncoding: "identity", DeliveryMode: core.Persistent,
			Priority: 7, CorrelationID: "c-9", ReplyTo: "amq.gen-xyz", Expiration: "60000",
			MessageID: "id-1", Timestamp: time.Unix(1700000000, 0).UTC(), Type: "order.created",
			UserID: "guest", AppID: "shop", ClusterID: "c1",
		},
		Headers: core.Table{
			"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
			"tracestate":  "vendor=x",
			"count":       int32(5),
			"big":         int64(1) << 40,
			"ratio":       2.5,
			"flag":        true,
			"when":        time.Unix(1600000000, 0).UTC(),
			"nested":      core.Table{"a": int64(1), "b": "two"},
			"list":        []any{"x", "y"},
			"one":         []any{"z"},
			"bin":         []byte{0, 1, 2},
			"dec":         core.Decimal{Scale: 2, Value: 314},
			"void":        nil,
		},
	}
	if _, err := v.Publish(orig, router.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	m := sub.next()
	if m.Topic != "orders/eu/42" || m.QoS != 1 || string(m.Payload) != `{"id":42}` {
		t.Fatalf("got %s qos %d %q", m.Topic, m.QoS, m.Payload)
	}
	p := m.Properties
	if p.ContentType != "application/json" || string(p.CorrelationData) != "c-9" || p.ResponseTopic != "amq/gen-xyz" ||
		p.MessageExpiry == nil || *p.MessageExpiry != 60 {
		t.Fatalf("properties %+v", p)
	}
	u := p.User
	for k, want := range map[string]string{
		upMessageID: "id-1", upType: "order.created", upAppID: "shop", upUserID: "guest",
		upContentEncoding: "identity", upPriority: "7", upTimestamp: "1700000000", upClusterID: "c1",
		"traceparent": orig.Headers["traceparent"].(string), "tracestate": "vendor=x", "count": "5", "flag": "true",
	} {
		if got := u.Get(k); got != want {
			t.Errorf("user property %s = %q, want %q", k, got, want)
		}
	}
	if got := u.GetAll("list"); !reflect.DeepEqual(got, []string{"x", "y"}) {
		t.Errorf("list: %v", got)
	}
	if u.Get(core.TypedHeaders) == "" || u.Get(hdrPublishQoS) != "" {
		t.Errorf("user properties %v", u)
	}
	// MQTT 3.1.1 subscribers get the payload alone.
	if m3 := v3.next(); m3.Topic() != "orders/eu/42" || string(m3.Payload()) != `{"id":42}` {
		t.Fatalf("v3: %s %q", m3.Topic(), m3.Payload())
	}

	// Republish exactly what was received.
	p.SubscriptionIdentifier, p.TopicAlias = nil, nil
	sub.publish(&paho.Publish{Topic: "echo/orders/eu/42", QoS: m.QoS, Payload: m.Payload, Properties: p})
	got := back.next(t).Msg
	if !reflect.DeepEqual(got.Props, orig.Props) {
		t.Fatalf("props after the round trip\n got %+v\nwant %+v", got.Props, orig.Props)
	}
	for k, want := range orig.Headers {
		if !reflect.DeepEqual(got.Headers[k], want) {
			t.Errorf("header %s: got %#v, want %#v", k, got.Headers[k], want)
		}
	}
	for k := range got.Headers {
		if _, ok := orig.Headers[k]; !ok && k != hdrPublishQoS && k != hdrReplyToTopic {
			t.Errorf("unexpected header %s = %#v", k, got.Headers[k])
		}
	}
	if string(got.Body) != `{"id":42}` || got.RoutingKey != "echo.orders.eu.42" {
		t.Fatalf("body %q key %s", got.Body, got.RoutingKey)
	}
	sub.none(100 * time.Millisecond)
	back.none(t, 50*time.Millisecond)
}

func TestMQTT5PropertiesRoundTrip(t *testing.T) {
	ts := startServer(t, nil, Options{})
	sub := dialV5(t, ts.addr, "sub", nil)
	sub.subscribe(paho.SubscribeOptions{Topic: "p/#", QoS: 2})
	pub := dialV5(t, ts.addr, "pub", nil)
	exp, pf := uint32(120), byte(1)
	in := &paho.PublishProperties{
		ContentType: "application/cbor", CorrelationData: []byte{0xff, 0, 1}, ResponseTopic: "resp/me",
		MessageExpiry: &exp, PayloadFormat: &pf,
		User: paho.UserProperties{{Key: "a", Value: "1"}, {Key: "b", Value: "2"}, {Key: "a", Value: "3"}},
	}
	pub.publish(&paho.Publish{Topic: "p/q", QoS: 2, Payload: []byte("x"), Properties: in})
	m := sub.next()
	p := m.Properties
	if m.QoS != 2 || p.ContentType != in.ContentType || !reflect.DeepEqual(p.CorrelationData, in.CorrelationData) ||
		p.ResponseTopic != in.ResponseTopic || p.MessageExpiry == nil || *p.MessageExpiry != 120 ||
		p.PayloadFormat == nil || *p.PayloadFormat != 1 {
		t.Fatalf("got qos %d %+v", m.QoS, p)
	}
	if !reflect.DeepEqual(p.User.GetAll("a"), []string{"1", "3"}) || p.User.Get("b") != "2" {
		t.Fatalf("user properties %v", p.User)
	}
	// Correlation data longer than an AMQP shortstr travels in a header.
	long := make([]byte, 300)
	for i := range long {
		long[i] = byte(i)
	}
	pub.publish(&paho.Publish{Topic: "p/long", QoS: 1, Payload: []byte("y"), Properties: &paho.PublishProperties{CorrelationData: long}})
	if m := sub.next(); !reflect.DeepEqual(m.Properties.CorrelationData, long) {
		t.Fatalf("long correlation data lost: %d bytes", len(m.Properties.CorrelationData))
	}
}

func TestSparkplugTopics(t *testing.T) {
	ts := startServer(t, nil, Options{})
	v := ts.vhost("/")
	s := bindSink(t, v, "spb", "spBv1/0.g.*.n")
	pub := dialV5(t, ts.addr, "edge", nil)
	pub.publish(&paho.Publish{Topic: "spBv1.0/g/NDATA/n", QoS: 1, Payload: []byte("m")})
	if m := s.next(t).Msg; m.RoutingKey != "spBv1/0.g.NDATA.n" {
		t.Fatalf("routing key %s", m.RoutingKey)
	}
	pub.publish(&paho.Publish{Topic: "spBv1.0/other/NDATA/n", QoS: 1, Payload: []byte("m")})
	s.none(t, 50*time.Millisecond)

	host := dialV5(t, ts.addr, "host", nil)
	host.subscribe(paho.SubscribeOptions{Topic: "spBv1.0/g/+/n", QoS: 1})
	if _, err := v.Publish(&core.Message{Exchange: router.AMQTopic, RoutingKey: "spBv1/0.g.NCMD.n", Body: []byte("c"),
		Props: core.Properties{DeliveryMode: core.Persistent}}, router.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	if m := host.next(); m.Topic != "spBv1.0/g/NCMD/n" || m.QoS != 1 {
		t.Fatalf("got %s qos %d", m.Topic, m.QoS)
	}
	// MQTT to MQTT through the same path.
	pub.publish(&paho.Publish{Topic: "spBv1.0/g/NDATA/n", QoS: 1, Payload: []byte("m2")})
	if m := host.next(); m.Topic != "spBv1.0/g/NDATA/n" || string(m.Payload) != "m2" {
		t.Fatalf("got %s %q", m.Topic, m.Payload)
	}
	s.next(t)
	host.none(100 * time.Millisecond)
}

func TestNoDuplicatesAcrossPaths(t *testing.T) {
	ts := startServer(t, nil, Options{})
	v := ts.vhost("/")
	s := bindSink(t, v, "amqp", "#")
	c := dialV5(t, ts.addr, "self", nil)
	c.subscribe(paho.SubscribeOptions{Topic: "a/#", QoS: 1})
	other := dialV3(t, ts.addr, "other", true, "", "")
	other.subscribe("a/b", 2)
	c.publish(&paho.Publish{Topic: "a/b", QoS: 2, Payload: []byte("once")})
	if m := c.next(); string(m.Payload) != "once" || m.QoS != 1 { // no-local not set: its own message, once
		t.Fatalf("got %q qos %d", m.Payload, m.QoS)
	}
	if m := other.next(); string(m.Payload()) != "once" || m.Qos() != 2 {
		t.Fatalf("v3 got %q qos %d", m.Payload(), m.Qos())
	}
	s.next(t)
	c.none(150 * time.Millisecond)
	s.none(t, 10*time.Millisecond)
	select {
	case m := <-other.msgs:
		t.Fatalf("duplicate %q", m.Payload())
	default:
	}
}

// heldStore is a router MessageStore whose confirms wait until released.
type heldStore struct {
	mu   sync.Mutex
	held []func(error)
}

func (h *heldStore) Settle(string, string, []uint64) {}
func (h *heldStore) Load(string, string, uint64) (*core.Message, error) {
	return nil, core.Errorf(core.NotFound, "heldStore keeps no bodies")
}
func (h *heldStore) Delivered(string, string, uint64) {}
func (h *heldStore) QueueDeleted(string, string)      {}

func (h *heldStore) Persist(_ string, _ *core.Message, _ []core.QueueSeq, done func(error)) {
	h.mu.Lock()
	h.held = append(h.held, done)
	h.mu.Unlock()
}

func (h *heldStore) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.held)
}

func (h *heldStore) release(i int, err error) {
	h.mu.Lock()
	done := h.held[i]
	h.mu.Unlock()
	done(err)
}

func TestAckWaitsForConfirm(t *testing.T) {
	store := &heldStore{}
	b := router.New(router.Options{Logger: testLogger(), Messages: store})
	ts := startServer(t, b, Options{})
	v := ts.vhost("/")
	if _, err := v.DeclareQueue(router.QueueDecl{QueueInfo: core.QueueInfo{Name: "durable", Durable: true}}); err != nil {
		t.Fatal(err)
	}
	if err := v.Bind(core.Binding{Source: router.AMQTopic, Dest: core.Dest{Kind: core.ToQueue, Name: "durable"}, Key: "acks.#"}, 0); err != nil {
		t.Fatal(err)
	}
	rc := dialRaw(t, ts.addr, 5)
	rc.connect("acker", true, nil)
	noPacket := func() {
		t.Helper()
		if pk, err := rc.read(200 * time.Millisecond); err == nil {
			t.Fatalf("unexpected %v %d before the confirm", pk.FixedHeader.Type, pk.PacketID)
		}
	}
	rc.publish(1, 1, "acks/x", []byte("1"))
	eventually(t, "persist", func() bool { return store.count() == 1 })
	noPacket()
	store.release(0, nil)
	if pk := rc.recv(); pk.FixedHeader.Type != packets.Puback || pk.PacketID != 1 || pk.ReasonCode != 0 {
		t.Fatalf("got %v id %d reason %#x", pk.FixedHeader.Type, pk.PacketID, pk.ReasonCode)
	}
	// Acks keep the publishes' order whatever the order of confirms.
	rc.publish(2, 1, "acks/x", []byte("2"))
	rc.publish(3, 2, "acks/x", []byte("3"))
	eventually(t, "persist", func() bool { return store.count() == 3 })
	store.release(2, nil)
	noPacket()
	store.release(1, nil)
	if pk := rc.recv(); pk.FixedHeader.Type != packets.Puback || pk.PacketID != 2 {
		t.Fatalf("got %v %d", pk.FixedHeader.Type, pk.PacketID)
	}
	if pk := rc.recv(); pk.FixedHeader.Type != packets.Pubrec || pk.PacketID != 3 || pk.ReasonCode != 0 {
		t.Fatalf("got %v %d", pk.FixedHeader.Type, pk.PacketID)
	}
	rc.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, PacketID: 3})
	if pk := rc.recv(); pk.FixedHeader.Type != packets.Pubcomp || pk.PacketID != 3 || pk.ReasonCode != 0 {
		t.Fatalf("got %v %d reason %#x", pk.FixedHeader.Type, pk.PacketID, pk.ReasonCode)
	}
	// A failed confirm is a negative acknowledgement.
	rc.publish(4, 1, "acks/x", []byte("4"))
	eventually(t, "persist", func() bool { return store.count() == 4 })
	store.release(3, core.Errorf(core.ResourceError, "disk full"))
	if pk := rc.recv(); pk.FixedHeader.Type != packets.Puback || pk.PacketID != 4 || pk.ReasonCode != packets.ErrQuotaExceeded.Code {
		t.Fatalf("got %v %d reason %#x", pk.FixedHeader.Type, pk.PacketID, pk.ReasonCode)
	}
	// Without any matching queue: "no matching subscribers", still a success.
	rc.publish(5, 1, "nowhere", []byte("5"))
	if pk := rc.recv(); pk.PacketID != 5 || pk.ReasonCode != packets.CodeNoMatchingSubscribers.Code {
		t.Fatalf("got %d reason %#x", pk.PacketID, pk.ReasonCode)
	}

	// MQTT 3 has no negative ack: the connection is closed.
	r3 := dialRaw(t, ts.addr, 4)
	r3.connect("acker3", true, nil)
	r3.publish(1, 1, "acks/y", []byte("1"))
	eventually(t, "persist", func() bool { return store.count() == 5 })
	store.release(4, core.Errorf(core.ResourceError, "disk full"))
	if got := r3.expectClosed(5 * time.Second); len(got) != 0 {
		t.Fatalf("v3 got %v", got[0].FixedHeader.Type)
	}
}

func TestQoS2ExactlyOnce(t *testing.T) {
	ts := startServer(t, nil, Options{})
	s := bindSink(t, ts.vhost("/"), "q2", "q2.#")
	rc := dialRaw(t, ts.addr, 5)
	rc.connect("q2", true, nil)
	rc.publish(7, 2, "q2/x", []byte("one"))
	if pk := rc.recv(); pk.FixedHeader.Type != packets.Pubrec || pk.PacketID != 7 {
		t.Fatalf("got %v %d", pk.FixedHeader.Type, pk.PacketID)
	}
	// The client did not see the PUBREC and sends the PUBLISH again.
	rc.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 2, Dup: true}, PacketID: 7, TopicName: "q2/x", Payload: []byte("one")})
	if pk := rc.recv(); pk.FixedHeader.Type != packets.Pubrec || pk.PacketID != 7 || pk.ReasonCode != 0 {
		t.Fatalf("got %v %d reason %#x", pk.FixedHeader.Type, pk.PacketID, pk.ReasonCode)
	}
	rc.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, PacketID: 7})
	if pk := rc.recv(); pk.FixedHeader.Type != packets.Pubcomp || pk.PacketID != 7 || pk.ReasonCode != 0 {
		t.Fatalf("got %v %d reason %#x", pk.FixedHeader.Type, pk.PacketID, pk.ReasonCode)
	}
	s.next(t)
	s.none(t, 100*time.Millisecond)
	// The id is free again: a new message.
	rc.publish(7, 2, "q2/x", []byte("two"))
	rc.recv()
	if d := s.next(t); string(d.Msg.Body) != "two" {
		t.Fatalf("got %q", d.Msg.Body)
	}
}

func TestOutboundFlowControl(t *testing.T) {
	ts := startServer(t, nil, Options{})
	rc := dialRaw(t, ts.addr, 5)
	rc.connect("slow", true, func(pk *packets.Packet) { pk.Properties.ReceiveMaximum = 3 })
	rc.subscribe(1, packets.Subscription{Filter: "flow/#", Qos: 1})
	pub := dialV5(t, ts.addr, "pub", nil)
	const n = 10
	for i := range n {
		pub.publish(&paho.Publish{Topic: "flow/x", QoS: 1, Payload: []byte{byte(i)}})
	}
	var ids []uint16
	var got []byte
	for range 3 {
		pk := rc.recv()
		ids = append(ids, pk.PacketID)
		got = append(got, pk.Payload...)
	}
	if pk, err := rc.read(200 * time.Millisecond); err == nil {
		t.Fatalf("a 4th message exceeds the client's receive maximum: %v", pk.Payload)
	}
	// Delivery ids stay clear of the ids clients count up from 1, which
	// mochi keeps in the same in-flight map.
	for _, id := range ids {
		if id < 1<<15 {
			t.Fatalf("delivery packet id %d", id)
		}
	}
	if sa := rc.subscribe(2, packets.Subscription{Filter: "other", Qos: 1}); sa.ReasonCodes[0] != 1 {
		t.Fatalf("SUBACK %#x while deliveries are in flight", sa.ReasonCodes[0])
	}
	for len(got) < n {
		rc.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: ids[0]})
		ids = ids[1:]
		pk := rc.recv()
		ids = append(ids, pk.PacketID)
		got = append(got, pk.Payload...)
	}
	for i := range n {
		if got[i] != byte(i) {
			t.Fatalf("order: %v", got)
		}
	}
}

func TestSubscriptionQueueDeleted(t *testing.T) {
	ts := startServer(t, nil, Options{})
	rc := dialRaw(t, ts.addr, 5)
	rc.connect("victim", true, nil)
	rc.subscribe(1, packets.Subscription{Filter: "v/#", Qos: 1})
	if _, err := ts.vhost("/").DeleteQueue(subscriptionQueueName("victim", "v/#"), false, false, 0); err == nil {
		t.Fatal("an exclusive clean-session queue was deleted by another connection")
	}
	// A persistent session's queue is not exclusive.
	r2 := dialRaw(t, ts.addr, 5)
	expiry := uint32(60)
	r2.connect("victim2", false, func(pk *packets.Packet) {
		pk.Properties.SessionExpiryInterval, pk.Properties.SessionExpiryIntervalFlag = expiry, true
	})
	r2.subscribe(1, packets.Subscription{Filter: "v/#", Qos: 1})
	// The consumer starts after SUBACK: a queue deleted before it starts
	// is declared again (as for one deleted while the session was away).
	eventually(t, "the subscription's consumer", func() bool {
		q, err := ts.vhost("/").Queue(subscriptionQueueName("victim2", "v/#"), 0)
		return err == nil && q.Consumers() == 1
	})
	if _, err := ts.vhost("/").DeleteQueue(subscriptionQueueName("victim2", "v/#"), false, false, 0); err != nil {
		t.Fatal(err)
	}
	got := r2.expectClosed(5 * time.Second)
	if len(got) != 1 || got[0].FixedHeader.Type != packets.Disconnect || got[0].ReasonCode != packets.ErrAdministrativeAction.Code {
		t.Fatalf("got %+v", got)
	}
}

// TestInboundBackpressure: with acknowledgements owed up to the receive
// maximum, the server stops reading the client instead of disconnecting it
// (MQTT 3 clients know no receive maximum), and resumes once they are sent.
func TestInboundBackpressure(t *testing.T) {
	store := &heldStore{}
	b := router.New(router.Options{Logger: testLogger(), Messages: store})
	ts := startServer(t, b, Options{ReceiveMaximum: 2})
	v := ts.vhost("/")
	if _, err := v.DeclareQueue(router.QueueDecl{QueueInfo: core.QueueInfo{Name: "durable", Durable: true}}); err != nil {
		t.Fatal(err)
	}
	if err := v.Bind(core.Binding{Source: router.AMQTopic, Dest: core.Dest{Kind: core.ToQueue, Name: "durable"}, Key: "#"}, 0); err != nil {
		t.Fatal(err)
	}
	rc := dialRaw(t, ts.addr, 4)
	rc.connect("eager", true, nil)
	for i := uint16(1); i <= 4; i++ {
		rc.publish(i, 1, "x", []byte{byte(i)})
	}
	eventually(t, "two publishes read", func() bool { return store.count() == 2 })
	time.Sleep(100 * time.Millisecond)
	if n := store.count(); n != 2 {
		t.Fatalf("%d publishes read past the receive maximum", n)
	}
	store.release(0, nil)
	store.release(1, nil)
	eventually(t, "all publishes read", func() bool { return store.count() == 4 })
	store.release(2, nil)
	store.release(3, nil)
	for i := uint16(1); i <= 4; i++ {
		if pk := rc.recv(); pk.FixedHeader.Type != packets.Puback || pk.PacketID != i {
			t.Fatalf("got %v %d, want PUBACK %d", pk.FixedHeader.Type, pk.PacketID, i)
		}
	}
}
