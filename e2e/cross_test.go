package e2e

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/go-stomp/stomp/v3"
	"github.com/go-stomp/stomp/v3/frame"
	amqp "github.com/rabbitmq/amqp091-go"
)

const (
	traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	tracestate  = "congo=t61rcWkgMzE"
)

// richPublishing uses every AMQP property and header types that string-only
// protocols cannot carry natively.
func richPublishing(body string) amqp.Publishing {
	return amqp.Publishing{
		ContentType:     "application/json",
		ContentEncoding: "gzip",
		DeliveryMode:    amqp.Persistent,
		Priority:        3,
		CorrelationId:   "corr-1",
		ReplyTo:         "replies",
		Expiration:      "60000",
		MessageId:       "msg-1",
		Timestamp:       time.Unix(1700000000, 0),
		Type:            "payment.received",
		UserId:          "guest",
		AppId:           "payments",
		Headers: amqp.Table{
			"traceparent": traceparent,
			"tracestate":  tracestate,
			"plain":       "text",
			"count":       int64(42),
			"ratio":       1.5,
			"flag":        true,
			"nested":      amqp.Table{"a": int32(1), "list": []any{"x", int64(2)}},
		},
		Body: []byte(body),
	}
}

func amqpQueueOn(t *testing.T, ch *amqp.Channel, exchange, key string) (string, <-chan amqp.Delivery) {
	t.Helper()
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(q.Name, key, exchange, false, nil); err != nil {
		t.Fatal(err)
	}
	d, err := ch.Consume(q.Name, "", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	return q.Name, d
}

func recvAMQP(t *testing.T, d <-chan amqp.Delivery) amqp.Delivery {
	t.Helper()
	select {
	case m := <-d:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no AMQP delivery within 10s")
	}
	return amqp.Delivery{}
}

func recvMQTT(t *testing.T, c <-chan *paho.Publish) *paho.Publish {
	t.Helper()
	select {
	case m := <-c:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no MQTT message within 10s")
	}
	return nil
}

func recvSTOMP(t *testing.T, s *stomp.Subscription) *stomp.Message {
	t.Helper()
	select {
	case m := <-s.C:
		if m.Err != nil {
			t.Fatal(m.Err)
		}
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no STOMP message within 10s")
	}
	return nil
}

func userProp(p *paho.PublishProperties, key string) string {
	if p == nil {
		return ""
	}
	return p.User.Get(key)
}

// samePublishing compares what an AMQP consumer received with what was
// published, property by property.
func samePublishing(t *testing.T, got amqp.Delivery, want amqp.Publishing, skipExpiration bool) {
	t.Helper()
	check := func(name string, g, w any) {
		if !reflect.DeepEqual(g, w) {
			t.Errorf("%s: got %#v, want %#v", name, g, w)
		}
	}
	check("body", string(got.Body), string(want.Body))
	check("content_type", got.ContentType, want.ContentType)
	check("content_encoding", got.ContentEncoding, want.ContentEncoding)
	check("delivery_mode", got.DeliveryMode, want.DeliveryMode)
	check("priority", got.Priority, want.Priority)
	check("correlation_id", got.CorrelationId, want.CorrelationId)
	check("message_id", got.MessageId, want.MessageId)
	check("timestamp", got.Timestamp.Unix(), want.Timestamp.Unix())
	check("type", got.Type, want.Type)
	check("user_id", got.UserId, want.UserId)
	check("app_id", got.AppId, want.AppId)
	if !skipExpiration {
		check("expiration", got.Expiration, want.Expiration)
	}
	for k, v := range want.Headers {
		check("header "+k, got.Headers[k], v)
	}
}

func TestAMQPToMQTT5AndBack(t *testing.T) {
	b := Start(t)
	ch := b.AMQPChannel(t)
	name := uniq(t)
	_, back := amqpQueueOn(t, ch, "amq.topic", "back."+name)
	mc, msgs := b.MQTT5(t, "rt-"+name)
	Subscribe(t, mc, "out/"+name)

	pub := richPublishing("round trip")
	if err := ch.PublishWithContext(context.Background(), "amq.topic", "out."+name, false, false, pub); err != nil {
		t.Fatal(err)
	}
	m := recvMQTT(t, msgs)
	if string(m.Payload) != "round trip" || m.Properties == nil {
		t.Fatalf("mqtt got %+v", m)
	}
	p := m.Properties
	if p.ContentType != "application/json" || string(p.CorrelationData) != "corr-1" {
		t.Errorf("content type %q correlation %q", p.ContentType, p.CorrelationData)
	}
	if userProp(p, "traceparent") != traceparent || userProp(p, "tracestate") != tracestate {
		t.Errorf("trace context lost: %v", p.User)
	}
	if userProp(p, "x-amqp-message-id") != "msg-1" || userProp(p, "x-amqp-type") != "payment.received" || userProp(p, "x-amqp-app-id") != "payments" {
		t.Errorf("AMQP properties missing from user properties: %v", p.User)
	}
	if p.MessageExpiry == nil || *p.MessageExpiry == 0 || *p.MessageExpiry > 60 {
		t.Errorf("message expiry %v", p.MessageExpiry)
	}

	// The MQTT client republishes exactly what it got, to another topic.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := mc.Publish(ctx, &paho.Publish{Topic: "back/" + name, QoS: 1, Payload: m.Payload, Properties: m.Properties}); err != nil {
		t.Fatal(err)
	}
	got := recvAMQP(t, back)
	// MQTT counts expiry in whole seconds and from its own receipt, so the
	// expiration comes back as the remaining time, not the original value.
	samePublishing(t, got, pub, true)
}

func TestMQTT5ToAMQP(t *testing.T) {
	b := Start(t)
	ch := b.AMQPChannel(t)
	name := uniq(t)
	_, d := amqpQueueOn(t, ch, "amq.topic", "sensors."+name+".*")
	mc, _ := b.MQTT5(t, "pub-"+name)
	expiry := uint32(30)
	props := &paho.PublishProperties{ContentType: "text/plain", CorrelationData: []byte("c-9"), ResponseTopic: "resp/" + name,
		MessageExpiry: &expiry, User: paho.UserProperties{{Key: "traceparent", Value: traceparent}, {Key: "site", Value: "north"}}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := mc.Publish(ctx, &paho.Publish{Topic: "sensors/" + name + "/temp", QoS: 1, Payload: []byte("21.5"), Properties: props}); err != nil {
		t.Fatal(err)
	}
	got := recvAMQP(t, d)
	if got.RoutingKey != "sensors."+name+".temp" || string(got.Body) != "21.5" {
		t.Fatalf("routing key %q body %q", got.RoutingKey, got.Body)
	}
	if got.ContentType != "text/plain" || got.CorrelationId != "c-9" || got.DeliveryMode != amqp.Persistent {
		t.Errorf("properties %+v", got)
	}
	// As RabbitMQ: the response topic in AMQP routing-key form, so that an
	// AMQP replier publishes to amq.topic with it as the routing key.
	if got.Expiration != "30000" {
		t.Errorf("expiration %q, want 30000", got.Expiration)
	}
	if got.Headers["traceparent"] != traceparent || got.Headers["site"] != "north" || got.Headers["x-reply-to-topic"] != "resp."+name {
		t.Errorf("headers %v", got.Headers)
	}
}

func TestAMQPToSTOMPAndBack(t *testing.T) {
	b := Start(t)
	ch := b.AMQPChannel(t)
	name := uniq(t)
	_, back := amqpQueueOn(t, ch, "amq.direct", "back-"+name)
	sc := b.STOMP(t)
	sub, err := sc.Subscribe("/topic/out."+name, stomp.AckAuto)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	pub := richPublishing("via stomp")
	if err := ch.PublishWithContext(context.Background(), "amq.topic", "out."+name, false, false, pub); err != nil {
		t.Fatal(err)
	}
	m := recvSTOMP(t, sub)
	h := m.Header
	for k, want := range map[string]string{
		"content-type": "application/json", "correlation-id": "corr-1", "amqp-message-id": "msg-1",
		"type": "payment.received", "app-id": "payments", "persistent": "true", "priority": "3",
		"traceparent": traceparent, "tracestate": tracestate, "plain": "text",
	} {
		if got := h.Get(k); got != want {
			t.Errorf("STOMP header %s = %q, want %q", k, got, want)
		}
	}
	// Re-send what was received, with every header that is not STOMP
	// framing, to an AMQP queue.
	var opts []func(*frame.Frame) error
	for i := 0; i < h.Len(); i++ {
		k, v := h.GetAt(i)
		switch k {
		case "destination", "message-id", "subscription", "ack", "content-length", "redelivered", "content-type":
			continue
		}
		opts = append(opts, stomp.SendOpt.Header(k, v))
	}
	if err := sc.Send("/exchange/amq.direct/back-"+name, h.Get("content-type"), m.Body, opts...); err != nil {
		t.Fatal(err)
	}
	got := recvAMQP(t, back)
	samePublishing(t, got, pub, false)
}

func TestSTOMPToAMQPQueue(t *testing.T) {
	b := Start(t)
	ch := b.AMQPChannel(t)
	name := uniq(t)
	sc := b.STOMP(t)
	if err := sc.Send("/queue/"+name, "text/plain", []byte("order-1"),
		stomp.SendOpt.Header("persistent", "true"), stomp.SendOpt.Header("traceparent", traceparent),
		stomp.SendOpt.Header("x-order", "1"), stomp.SendOpt.Receipt); err != nil {
		t.Fatal(err)
	}
	msg, ok, err := ch.Get(name, true)
	if err != nil || !ok {
		t.Fatalf("get from %s: %v %v", name, ok, err)
	}
	if string(msg.Body) != "order-1" || msg.ContentType != "text/plain" || msg.DeliveryMode != amqp.Persistent ||
		msg.Headers["traceparent"] != traceparent || msg.Headers["x-order"] != "1" {
		t.Fatalf("got %+v", msg)
	}
}

func TestMQTTAndSTOMPBothWays(t *testing.T) {
	b := Start(t)
	name := uniq(t)
	sc := b.STOMP(t)
	sub, err := sc.Subscribe("/topic/m2s."+name, stomp.AckAuto)
	if err != nil {
		t.Fatal(err)
	}
	mc, msgs := b.MQTT5(t, "ms-"+name)
	Subscribe(t, mc, "s2m/"+name)
	time.Sleep(200 * time.Millisecond)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := mc.Publish(ctx, &paho.Publish{Topic: "m2s/" + name, QoS: 1, Payload: []byte("from mqtt"),
		Properties: &paho.PublishProperties{User: paho.UserProperties{{Key: "traceparent", Value: traceparent}}}}); err != nil {
		t.Fatal(err)
	}
	sm := recvSTOMP(t, sub)
	if string(sm.Body) != "from mqtt" || sm.Header.Get("traceparent") != traceparent {
		t.Fatalf("STOMP got %q %v", sm.Body, sm.Header)
	}
	if err := sc.Send("/topic/s2m."+name, "text/plain", []byte("from stomp"), stomp.SendOpt.Header("traceparent", traceparent)); err != nil {
		t.Fatal(err)
	}
	mm := recvMQTT(t, msgs)
	if string(mm.Payload) != "from stomp" || userProp(mm.Properties, "traceparent") != traceparent {
		t.Fatalf("MQTT got %q %+v", mm.Payload, mm.Properties)
	}
	select {
	case extra := <-msgs:
		t.Fatalf("duplicate or echoed MQTT message %q", extra.Payload)
	case <-time.After(300 * time.Millisecond):
	}
}

func TestDurableTopologySurvivesRestart(t *testing.T) {
	b := Start(t)
	ch := b.AMQPChannel(t)
	if err := ch.ExchangeDeclare("orders", "topic", true, false, false, false, amqp.Table{"alternate-exchange": "amq.fanout"}); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("invoices", true, false, false, false, amqp.Table{"x-max-length": int32(1000)}); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind("invoices", "order.*", "orders", false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("scratch", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	b.Restart()
	ch = b.AMQPChannel(t)
	if _, err := ch.QueueDeclarePassive("invoices", true, false, false, false, nil); err != nil {
		t.Fatalf("durable queue lost: %v", err)
	}
	if err := ch.PublishWithContext(context.Background(), "orders", "order.created", false, false, amqp.Publishing{Body: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := ch.Get("invoices", true); err != nil || !ok {
		t.Fatalf("binding lost: %v %v", ok, err)
	}
	if _, err := ch.QueueDeclarePassive("scratch", false, false, false, false, nil); err == nil {
		t.Fatal("transient queue survived a restart")
	}
}
