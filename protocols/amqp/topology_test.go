package amqp

import (
	"reflect"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/protocols/amqp/wire"
)

func TestExchangesAndBindings(t *testing.T) {
	e := startServer(t)
	_, ch := e.channel(t)
	must(t, ch.ExchangeDeclare("orders", "topic", true, false, false, false, nil))
	must(t, ch.ExchangeDeclare("orders", "topic", true, false, false, false, nil)) // idempotent
	must(t, ch.ExchangeDeclarePassive("orders", "topic", true, false, false, false, nil))
	must(t, ch.ExchangeDeclare("eu", "fanout", false, true, false, true, nil)) // nowait
	must(t, ch.ExchangeBind("eu", "orders.eu.*", "orders", false, nil))        // exchange to exchange
	q, err := ch.QueueDeclare("eu-orders", false, false, false, false, nil)
	must(t, err)
	must(t, ch.QueueBind(q.Name, "", "eu", true, nil)) // nowait

	pub := func(key string) {
		must(t, ch.Publish("orders", key, false, false, amqp091.Publishing{Body: []byte(key)}))
	}
	pub("orders.eu.paris")
	pub("orders.us.nyc")
	eventually(t, 5*time.Second, func() bool { return queueLen(t, e, q.Name) == 1 }, "routing through e2e binding")

	must(t, ch.ExchangeUnbind("eu", "orders.eu.*", "orders", false, nil))
	pub("orders.eu.rome")
	time.Sleep(50 * time.Millisecond)
	if n := queueLen(t, e, q.Name); n != 1 {
		t.Fatalf("after unbind: %d ready", n)
	}

	// if-unused refuses an exchange that still has bindings (406).
	err2 := chanErr(t, e.dial(t), func(ch *amqp091.Channel) error { return ch.ExchangeDelete("eu", true, false) })
	if err2 == nil || err2.Code != 406 {
		t.Fatalf("delete if-unused: %v", err2)
	}
	must(t, ch.ExchangeDelete("orders", false, false))
	err2 = chanErr(t, e.dial(t), func(ch *amqp091.Channel) error {
		return ch.ExchangeDeclarePassive("orders", "topic", true, false, false, false, nil)
	})
	if err2 == nil || err2.Code != 404 {
		t.Fatalf("passive declare after delete: %v", err2)
	}
	// Redeclaring with another type is 406.
	err2 = chanErr(t, e.dial(t), func(ch *amqp091.Channel) error {
		return ch.ExchangeDeclare("eu", "direct", false, true, false, false, nil)
	})
	if err2 == nil || err2.Code != 406 {
		t.Fatalf("redeclare with another type: %v", err2)
	}
}

func TestQueueCounts(t *testing.T) {
	e := startServer(t)
	_, ch := e.channel(t)
	q, err := ch.QueueDeclare("", false, false, true, false, nil)
	must(t, err)
	if len(q.Name) < 9 || q.Name[:8] != "amq.gen-" {
		t.Fatalf("server-named queue %q", q.Name)
	}
	for i := range 3 {
		must(t, ch.Publish("", q.Name, false, false, amqp091.Publishing{Body: []byte{byte(i)}}))
	}
	eventually(t, 5*time.Second, func() bool { return queueLen(t, e, q.Name) == 3 }, "publishes")
	_, ch2 := e.channel(t)
	_, err = ch2.Consume("", "", false, false, false, false, nil)
	if amqpCode(err) != 404 {
		t.Fatalf("consume with no previously declared queue: %v", err)
	}

	info, err := ch.QueueDeclarePassive(q.Name, false, false, true, false, nil)
	must(t, err)
	if info.Messages != 3 || info.Consumers != 0 {
		t.Fatalf("declare-ok %+v", info)
	}
	n, err := ch.QueuePurge(q.Name, false)
	must(t, err)
	if n != 3 {
		t.Fatalf("purged %d", n)
	}
	must(t, ch.Publish("", q.Name, false, false, amqp091.Publishing{Body: []byte("one")}))
	_, err = ch.Consume(q.Name, "c1", false, false, false, false, nil)
	must(t, err)
	info, err = ch.QueueDeclarePassive(q.Name, false, false, true, false, nil)
	must(t, err)
	if info.Consumers != 1 {
		t.Fatalf("consumers %+v", info)
	}
	must(t, ch.Cancel("c1", false))
	// The delivered message stays unacknowledged after cancel: nothing is
	// ready when the queue is deleted.
	must(t, ch.Publish("", q.Name, false, false, amqp091.Publishing{Body: []byte("two")}))
	eventually(t, 5*time.Second, func() bool { return queueLen(t, e, q.Name) == 1 }, "publish")
	n, err = ch.QueueDelete(q.Name, false, false, false)
	must(t, err)
	if n != 1 {
		t.Fatalf("deleted with %d ready, want 1", n)
	}
	_, err = ch.QueueDeclarePassive(q.Name, false, false, true, false, nil)
	if amqpCode(err) != 404 {
		t.Fatalf("passive declare after delete: %v", err)
	}
}

func TestQueueNoWaitAndLastQueue(t *testing.T) {
	e := startServer(t)
	r := dialRaw(t, e.addr)
	r.handshake(0)
	r.send(1, &wire.ChannelOpen{})
	expectMethod[*wire.ChannelOpenOk](r)
	r.send(1, &wire.QueueDeclare{Queue: "nw", NoWait: true})
	// Empty queue name and key: the last declared queue, bound by its name.
	r.send(1, &wire.QueueBind{Exchange: "amq.direct", NoWait: true})
	r.send(1, &wire.BasicPublish{Exchange: "amq.direct", RoutingKey: "nw"})
	r.frame(wire.FrameHeader, 1, mustHeader(t, 2))
	r.frame(wire.FrameBody, 1, []byte("hi"))
	r.send(1, &wire.BasicGet{})
	ok := expectMethod[*wire.BasicGetOk](r)
	if ok.RoutingKey != "nw" || ok.Exchange != "amq.direct" || ok.MessageCount != 0 || ok.DeliveryTag != 1 {
		t.Fatalf("get-ok %+v", ok)
	}
	f, err := r.next(5 * time.Second)
	must(t, err)
	if f.Type != wire.FrameHeader {
		t.Fatalf("frame type %d", f.Type)
	}
	f, err = r.next(5 * time.Second)
	must(t, err)
	if f.Type != wire.FrameBody || string(f.Payload) != "hi" {
		t.Fatalf("body %q", f.Payload)
	}
	r.send(1, &wire.BasicAck{DeliveryTag: 1})
	r.send(1, &wire.QueuePurge{NoWait: true})
	r.send(1, &wire.QueueDelete{NoWait: true})
	r.send(1, &wire.QueueDeclare{Queue: "nw", Passive: true})
	cl := expectMethod[*wire.ChannelClose](r)
	if cl.ReplyCode != 404 {
		t.Fatalf("close %+v", cl)
	}
	r.send(1, &wire.ChannelCloseOk{})
}

func mustHeader(t testing.TB, size uint64) []byte {
	t.Helper()
	b, err := wire.AppendHeader(nil, wire.ClassBasic, size, &wire.Properties{})
	must(t, err)
	return b
}

func TestHeadersExchange(t *testing.T) {
	e := startServer(t)
	_, ch := e.channel(t)
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	must(t, err)
	must(t, ch.QueueBind(q.Name, "", "amq.headers", false, amqp091.Table{"x-match": "all", "format": "pdf", "type": "report"}))
	msgs, err := ch.Consume(q.Name, "", true, false, false, false, nil)
	must(t, err)
	must(t, ch.Publish("amq.headers", "", false, false, amqp091.Publishing{Headers: amqp091.Table{"format": "pdf"}, Body: []byte("partial")}))
	must(t, ch.Publish("amq.headers", "", false, false, amqp091.Publishing{Headers: amqp091.Table{"format": "pdf", "type": "report"}, Body: []byte("full")}))
	if d := recv(t, msgs, 5*time.Second); string(d.Body) != "full" {
		t.Fatalf("got %q", d.Body)
	}
	quiet(t, msgs, 100*time.Millisecond)
}

// TestFieldTablesRoundTrip publishes headers of every field type, nested,
// and checks that a consumer reads them back identical.
func TestFieldTablesRoundTrip(t *testing.T) {
	e := startServer(t)
	_, ch := e.channel(t)
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	must(t, err)
	ts := time.Unix(1700000000, 0).UTC()
	headers := amqp091.Table{
		"bool": true, "int8": int8(-8), "uint8": uint8(200), "int16": int16(-1600), "uint16": uint16(60000),
		"int32": int32(-320000), "uint32": uint32(4000000000), "int64": int64(-6400000000),
		"float32": float32(1.5), "float64": -2.25, "decimal": amqp091.Decimal{Scale: 2, Value: -12345},
		"string": "héllo", "bytes": []byte{0, 1, 0xff}, "time": ts, "void": nil,
		"array":  []interface{}{int32(1), "two", []interface{}{true, amqp091.Decimal{Scale: 1, Value: 5}}, amqp091.Table{"in": "array"}},
		"nested": amqp091.Table{"deeper": amqp091.Table{"deepest": int64(7), "d": amqp091.Decimal{Scale: 3, Value: 9}}},
	}
	props := amqp091.Publishing{
		Headers: headers, ContentType: "application/json", ContentEncoding: "gzip", DeliveryMode: 2,
		Priority: 3, CorrelationId: "corr", ReplyTo: "replies", Expiration: "60000", MessageId: "mid",
		Timestamp: ts, Type: "order.created", UserId: "guest", AppId: "tests", Body: []byte("{}"),
	}
	must(t, ch.Publish("", q.Name, false, false, props))
	d, ok, err := ch.Get(q.Name, true)
	must(t, err)
	if !ok {
		t.Fatal("empty")
	}
	if tm, ok := d.Headers["time"].(time.Time); !ok || !tm.Equal(ts) {
		t.Fatalf("timestamp header %v", d.Headers["time"])
	}
	d.Headers["time"] = ts // amqp091-go decodes timestamps in local time
	if !reflect.DeepEqual(d.Headers, headers) {
		t.Fatalf("headers\n got %#v\nwant %#v", d.Headers, headers)
	}
	if d.ContentType != props.ContentType || d.ContentEncoding != props.ContentEncoding || d.DeliveryMode != 2 ||
		d.Priority != 3 || d.CorrelationId != "corr" || d.ReplyTo != "replies" || d.Expiration != "60000" ||
		d.MessageId != "mid" || !d.Timestamp.Equal(ts) || d.Type != "order.created" || d.UserId != "guest" || d.AppId != "tests" {
		t.Fatalf("properties %+v", d)
	}

	// The broker holds them as core types.
	must(t, ch.Publish("", q.Name, false, false, amqp091.Publishing{Headers: headers}))
	eventually(t, 5*time.Second, func() bool { return queueLen(t, e, q.Name) == 1 }, "publish")
	got, _, _ := findQueue(t, e, q.Name).Get(true)
	h := got.Msg.Headers
	if _, ok := h["nested"].(core.Table)["deeper"].(core.Table); !ok {
		t.Fatalf("nested table stored as %T", h["nested"])
	}
	if _, ok := h["decimal"].(core.Decimal); !ok {
		t.Fatalf("decimal stored as %T", h["decimal"])
	}
	if err := h.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestTableConversionDoesNotMutateMessages(t *testing.T) {
	in := core.Table{"flat": int32(1), "n": core.Table{"d": core.Decimal{Scale: 1, Value: 2}}, "a": []any{core.Table{"x": "y"}}}
	before := in.Clone()
	w := tableToWire(in)
	if _, ok := w["n"].(wire.Table); !ok {
		t.Fatalf("nested %T", w["n"])
	}
	if a := w["a"].([]any); reflect.TypeOf(a[0]) != reflect.TypeOf(wire.Table{}) {
		t.Fatalf("array element %T", a[0])
	}
	if !reflect.DeepEqual(in, before) {
		t.Fatal("tableToWire modified its input")
	}
	flat := core.Table{"a": "b", "c": []any{int32(1)}}
	if w := tableToWire(flat); reflect.ValueOf(w).Pointer() != reflect.ValueOf(flat).Pointer() {
		t.Fatal("a flat table was copied")
	}
	back := tableFromWire(w)
	if !reflect.DeepEqual(back, before) {
		t.Fatalf("round trip %#v", back)
	}
}
