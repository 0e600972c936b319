package stomp

import (
	"reflect"
	"testing"
	"time"

	gostomp "github.com/go-stomp/stomp/v3"
	"github.com/go-stomp/stomp/v3/frame"

	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/protocols/stomp/wire"
	"github.com/bourse-mq/bourse/router"
)

// TestSendToRouter: what a STOMP SEND becomes in the core, as seen by a
// consumer that uses the router API directly.
func TestSendToRouter(t *testing.T) {
	e := start(t, Options{})
	out := e.consume("from-stomp")
	c := e.client(gostomp.ConnOpt.Login("guest", "guest"))
	err := c.Send("/queue/from-stomp", "application/json", []byte(`{"a":1}`),
		gostomp.SendOpt.Receipt,
		gostomp.SendOpt.Header("persistent", "true"),
		gostomp.SendOpt.Header("priority", "5"),
		gostomp.SendOpt.Header("correlation-id", "c-1"),
		gostomp.SendOpt.Header("reply-to", "/queue/answers"),
		gostomp.SendOpt.Header("expiration", "30000"),
		gostomp.SendOpt.Header("amqp-message-id", "m-1"),
		gostomp.SendOpt.Header("timestamp", "1700000000"),
		gostomp.SendOpt.Header("type", "order"),
		gostomp.SendOpt.Header("user-id", "guest"),
		gostomp.SendOpt.Header("app-id", "shop"),
		gostomp.SendOpt.Header("content-encoding", "identity"),
		gostomp.SendOpt.Header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
		gostomp.SendOpt.Header("tracestate", "rojo=00f067aa0ba902b7"),
		gostomp.SendOpt.Header("x-custom", "a:b\nc"),
		gostomp.SendOpt.Header("expires", "1700000000000"),
	)
	if err != nil {
		t.Fatal(err)
	}
	m := out.next(t)
	want := core.Properties{
		ContentType: "application/json", ContentEncoding: "identity", DeliveryMode: core.Persistent,
		Priority: 5, CorrelationID: "c-1", ReplyTo: "/queue/answers", Expiration: "30000",
		MessageID: "m-1", Timestamp: time.Unix(1700000000, 0).UTC(), Type: "order", UserID: "guest", AppID: "shop",
	}
	if !reflect.DeepEqual(m.Props, want) {
		t.Fatalf("props\n got %+v\nwant %+v", m.Props, want)
	}
	wantH := core.Table{
		"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"tracestate":  "rojo=00f067aa0ba902b7",
		"x-custom":    "a:b\nc",
		"expires":     "1700000000000", // ActiveMQ's header is not RabbitMQ's expiration
	}
	if !reflect.DeepEqual(m.Headers, wantH) {
		t.Fatalf("headers %#v", m.Headers)
	}
	if m.Exchange != "" || m.RoutingKey != "from-stomp" || string(m.Body) != `{"a":1}` {
		t.Fatalf("routing %q %q body %q", m.Exchange, m.RoutingKey, m.Body)
	}
	if m.Origin.Protocol != core.ProtoSTOMP || m.Origin.User != "guest" || m.Origin.VHost != "/" || m.Origin.Conn == 0 {
		t.Fatalf("origin %+v", m.Origin)
	}
	// A body with NUL octets travels whole with content-length.
	if err := c.Send("/queue/from-stomp", "", []byte("a\x00b\x00"), gostomp.SendOpt.Receipt); err != nil {
		t.Fatal(err)
	}
	if m := out.next(t); string(m.Body) != "a\x00b\x00" {
		t.Fatalf("body %q", m.Body)
	}
}

// fullMessage carries every AMQP property and headers of every shape.
func fullMessage() *core.Message {
	ts := time.Unix(1700000000, 0).UTC()
	return &core.Message{
		Exchange: "", RoutingKey: "rt-in",
		Props: core.Properties{
			ContentType: "application/json", ContentEncoding: "gzip", DeliveryMode: core.Persistent,
			Priority: 7, CorrelationID: "corr-1", ReplyTo: "amq.gen-reply", Expiration: "60000",
			MessageID: "mid-1", Timestamp: ts, Type: "order.created", UserID: "guest", AppID: "billing",
			ClusterID: "c1",
		},
		Headers: core.Table{
			"plain":       "value",
			"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
			"escapes":     "a:b\\c\nd\re",
			"multi\nline": "name with a LF",
			"big":         int64(1) << 40,
			"small":       int32(-5),
			"byte":        uint8(200),
			"bool":        true,
			"float":       1.5,
			"decimal":     core.Decimal{Scale: 2, Value: 12345},
			"bytes":       []byte{0, 1, 2},
			"void":        nil,
			"when":        ts,
			"nested":      core.Table{"a": core.Table{"b": []any{int64(1), "x", core.Table{}}}},
			"x-death": []any{core.Table{
				"count": int64(2), "queue": "q", "reason": "rejected", "exchange": "",
				"routing-keys": []any{"k1", "k2"}, "time": ts,
			}},
			// AMQP headers named like STOMP frame and property headers.
			"destination":  "not a destination",
			"message-id":   "not a message-id",
			"content-type": "not the content type",
			"":             "empty name",
		},
		Body: []byte("b\x00dy"),
	}
}

// TestLosslessRoundTrip: a message with every AMQP property and typed
// headers, published through the router, reaches a STOMP subscriber with
// RabbitMQ's header names; SENDing back what it got yields the identical
// core message, in every STOMP version.
func TestLosslessRoundTrip(t *testing.T) {
	for _, version := range []string{"1.2", "1.1", "1.0"} {
		t.Run(version, func(t *testing.T) {
			e := start(t, Options{})
			out := e.consume("rt-out")
			r := e.raw()
			r.connect(version)
			r.send("SUBSCRIBE\nid:rt\ndestination:/queue/rt-in\nreceipt:s\n\n\x00")
			r.expect(frame.RECEIPT)
			m1 := fullMessage()
			if _, err := e.vhost().Publish(m1, router.PublishOptions{}); err != nil {
				t.Fatal(err)
			}
			f := r.expect(frame.MESSAGE)
			for name, want := range map[string]string{
				"destination": "/queue/rt-in", "subscription": "rt", "content-type": "application/json",
				"content-encoding": "gzip", "persistent": "true", "priority": "7", "correlation-id": "corr-1",
				"reply-to": "/reply-queue/amq.gen-reply", "expiration": "60000", "amqp-message-id": "mid-1",
				"timestamp": "1700000000", "type": "order.created", "user-id": "guest", "app-id": "billing",
				"amqp-cluster-id": "c1", "plain": "value", "big": "1099511627776", "small": "-5",
				"traceparent":    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
				"content-length": "4", "redelivered": "false",
			} {
				if got := f.Header.Get(name); got != want {
					t.Errorf("header %s = %q, want %q", name, got, want)
				}
			}
			if version != "1.0" && f.Header.Get("escapes") != "a:b\\c\nd\re" {
				if version == "1.2" || f.Header.Get("escapes") != "" {
					t.Errorf("escapes header %q", f.Header.Get("escapes"))
				}
			}
			if string(f.Body) != "b\x00dy" {
				t.Fatalf("body %q", f.Body)
			}
			// Send back exactly what arrived, to another queue.
			send := frame.New(frame.SEND)
			for i := 0; i < f.Header.Len(); i++ {
				k, v := f.Header.GetAt(i)
				if k == frame.Destination {
					v = "/queue/rt-out"
				}
				send.Header.Add(k, v)
			}
			send.Body = f.Body
			v, _ := wire.ParseVersion(version)
			r.send(string(wire.AppendFrame(nil, v, send)))
			m2 := out.next(t)
			if !reflect.DeepEqual(m2.Props, m1.Props) {
				t.Errorf("props\n got %+v\nwant %+v", m2.Props, m1.Props)
			}
			if !reflect.DeepEqual(m2.Headers, m1.Headers) {
				t.Errorf("headers\n got %#v\nwant %#v", m2.Headers, m1.Headers)
			}
			if string(m2.Body) != string(m1.Body) || m2.Exchange != "" || m2.RoutingKey != "rt-out" {
				t.Errorf("body %q routing %q %q", m2.Body, m2.Exchange, m2.RoutingKey)
			}
		})
	}
}

// TestMessageDestinations: MESSAGE destinations for messages from other
// protocols are rebuilt from exchange and routing key, as RabbitMQ does.
func TestMessageDestinations(t *testing.T) {
	e := start(t, Options{})
	r := e.raw()
	r.connect("1.2")
	r.send("SUBSCRIBE\nid:t\ndestination:/topic/#\nreceipt:s\n\n\x00")
	r.expect(frame.RECEIPT)
	// MQTT's a/b arrives as amq.topic key a.b; a '/' inside a word (an
	// AMQP publisher's) is escaped so the destination parses back.
	for key, want := range map[string]string{"a.b": "/topic/a.b", "odd/word": "/topic/odd%2Fword"} {
		if _, err := e.vhost().Publish(&core.Message{Exchange: "amq.topic", RoutingKey: key, Body: []byte("x")}, router.PublishOptions{}); err != nil {
			t.Fatal(err)
		}
		if got := r.expect(frame.MESSAGE).Header.Get("destination"); got != want {
			t.Fatalf("key %q: destination %q, want %q", key, got, want)
		}
	}
}
