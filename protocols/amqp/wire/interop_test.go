package wire

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"reflect"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// This file cross-checks the codec against github.com/rabbitmq/amqp091-go,
// the reference Go client: a real amqp091-go connection talks over net.Pipe
// to a scripted broker built from this package, exercising every field-table
// type in both directions, all four content-carrying methods, body
// splitting at frame-max, bit packing and the handshake.

// clientTable holds every type amqp091-go can encode.
func clientTable() amqp.Table {
	return amqp.Table{
		"bool":    true,
		"int8":    int8(-8),
		"uint8":   byte(200),
		"int16":   int16(-1600),
		"uint16":  uint16(60000),
		"int":     7,
		"int32":   int32(-320000),
		"uint32":  uint32(4000000000),
		"int64":   int64(-6400000000),
		"float32": float32(1.5),
		"float64": -2.25,
		"decimal": amqp.Decimal{Scale: 2, Value: -12345},
		"string":  "s ✓",
		"bytes":   []byte{0, 1, 2},
		"array":   []any{int32(1), "two", nil, amqp.Table{"in": "array"}},
		"time":    time.Unix(1700000000, 0),
		"table":   amqp.Table{"nested": amqp.Table{"deeper": int64(1)}},
		"void":    nil,
	}
}

// fromAMQP091 converts a value built or decoded by amqp091-go to the Go type
// this package decodes the same wire bytes to.
func fromAMQP091(v any) any {
	switch v := v.(type) {
	case amqp.Table:
		t := Table{}
		for k, x := range v {
			t[k] = fromAMQP091(x)
		}
		return t
	case []any:
		a := make([]any, len(v))
		for i, x := range v {
			a[i] = fromAMQP091(x)
		}
		return a
	case amqp.Decimal:
		return Decimal{Scale: v.Scale, Value: v.Value}
	case time.Time:
		return v.UTC()
	case int:
		return int32(v) // amqp091-go writes int as 'I'
	}
	return v
}

func wantTable(t amqp.Table) Table { return fromAMQP091(t).(Table) }

// broker is the scripted server side.
type broker struct {
	t    *testing.T
	conn net.Conn
	fr   *FrameReader
	w    *bufio.Writer
}

func (b *broker) send(ch uint16, m Method) {
	if err := WriteMethod(b.w, ch, m); err != nil {
		panic(err)
	}
	if err := b.w.Flush(); err != nil {
		panic(err)
	}
}

func (b *broker) sendContent(ch uint16, m Method, props *Properties, body []byte) {
	if err := WriteMethod(b.w, ch, m); err != nil {
		panic(err)
	}
	if err := WriteContent(b.w, ch, ClassBasic, props, body, b.fr.MaxFrame()); err != nil {
		panic(err)
	}
	if err := b.w.Flush(); err != nil {
		panic(err)
	}
}

func (b *broker) frame() Frame {
	for {
		f, err := b.fr.ReadFrame()
		if err != nil {
			panic(fmt.Sprintf("read frame: %v", err))
		}
		if f.Type != FrameHeartbeat {
			return f
		}
	}
}

// expect reads the next method and checks it is a *T on channel ch.
func expect[T Method](b *broker, ch uint16) T {
	f := b.frame()
	m, err := DecodeMethod(f.Payload)
	if err != nil {
		panic(fmt.Sprintf("decode: %v", err))
	}
	got, ok := m.(T)
	if !ok || f.Channel != ch {
		panic(fmt.Sprintf("got %s on channel %d, want %T on %d", m.Name(), f.Channel, *new(T), ch))
	}
	return got
}

// content reads a content header and its body frames.
func (b *broker) content(ch uint16) (Properties, []byte, int) {
	f := b.frame()
	if f.Type != FrameHeader || f.Channel != ch {
		panic(fmt.Sprintf("want header frame, got %+v", f))
	}
	_, size, props, err := DecodeHeader(f.Payload)
	if err != nil {
		panic(err)
	}
	var body []byte
	frames := 0
	for uint64(len(body)) < size {
		f := b.frame()
		if f.Type != FrameBody || f.Channel != ch {
			panic(fmt.Sprintf("want body frame, got type %d", f.Type))
		}
		body = append(body, f.Payload...)
		frames++
	}
	return props, body, frames
}

func (b *broker) check(what string, got, want any) {
	if !deepEqual(got, want) {
		b.t.Errorf("broker: %s:\n got %#v\nwant %#v", what, got, want)
	}
}

func TestInteropAMQP091(t *testing.T) {
	srvConn, cliConn := net.Pipe()
	deadline := time.Now().Add(20 * time.Second)
	srvConn.SetDeadline(deadline)
	cliConn.SetDeadline(deadline)

	body := bytes.Repeat([]byte("bourse-"), 1500) // 10500 bytes: 3 body frames at frame-max 4096
	serverDone := make(chan struct{})
	go func() {
		defer close(serverDone)
		defer srvConn.Close()
		defer func() {
			if r := recover(); r != nil {
				t.Errorf("broker: %v", r)
			}
		}()
		br := bufio.NewReader(srvConn)
		b := &broker{t: t, conn: srvConn, fr: NewFrameReader(br, FrameMinSize), w: bufio.NewWriter(srvConn)}
		runBroker(b, br, body)
	}()

	cfg := amqp.Config{
		Dial:       func(string, string) (net.Conn, error) { return cliConn, nil },
		Properties: amqp.Table{"bourse-test": clientTable(), "product": "interop"},
	}
	conn, err := amqp.DialConfig("amqp://guest:secret@pipe/?heartbeat=0", cfg)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	// Server properties: our encoder, amqp091-go's decoder.
	if got := fromAMQP091(conn.Properties["all-types"]); !deepEqual(got, sampleTable()) {
		t.Errorf("server properties decoded by amqp091-go:\n got %#v\nwant %#v", got, sampleTable())
	}
	if conn.Major != 0 || conn.Minor != 9 || !reflect.DeepEqual(conn.Locales, []string{"en_US", "de_DE"}) {
		t.Errorf("start: %d.%d %v", conn.Major, conn.Minor, conn.Locales)
	}

	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	returns := ch.NotifyReturn(make(chan amqp.Return, 1))
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, 1))
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	q, err := ch.QueueDeclare("orders", true, false, true, false, clientTable())
	if err != nil || q.Messages != 7 || q.Consumers != 3 || q.Name != "orders" {
		t.Fatalf("queue.declare: %+v %v", q, err)
	}
	if err := ch.ExchangeDeclare("ex", "topic", true, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind("orders", "rk.#", "ex", false, amqp.Table{"x-match": "all"}); err != nil {
		t.Fatal(err)
	}
	if err := ch.Qos(5, 0, true); err != nil {
		t.Fatal(err)
	}
	deliveries, err := ch.Consume("orders", "ctag", false, true, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	pub := amqp.Publishing{
		Headers: clientTable(), ContentType: "text/plain", ContentEncoding: "identity",
		DeliveryMode: 2, Priority: 4, CorrelationId: "corr", ReplyTo: "reply",
		Expiration: "1000", MessageId: "mid", Timestamp: time.Unix(1700000002, 0),
		Type: "type", UserId: "guest", AppId: "app", Body: body,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ch.PublishWithContext(ctx, "ex", "rk.a", true, false, pub); err != nil {
		t.Fatal(err)
	}

	// Our encoder, amqp091-go's decoder: basic.return, basic.ack, basic.deliver.
	want := fullProperties()
	ret := <-returns
	if ret.ReplyCode != NoRoute || ret.ReplyText != "NO_ROUTE" || ret.Exchange != "ex" || ret.RoutingKey != "rk.a" ||
		!bytes.Equal(ret.Body, []byte("returned")) || ret.MessageId != want.MessageID {
		t.Errorf("return: %+v", ret)
	}
	if c := <-confirms; !c.Ack || c.DeliveryTag != 1 {
		t.Errorf("confirm: %+v", c)
	}
	d := <-deliveries
	if d.ConsumerTag != "ctag" || d.DeliveryTag != 42 || !d.Redelivered || d.Exchange != "ex" || d.RoutingKey != "rk.a" || !bytes.Equal(d.Body, body) {
		t.Errorf("deliver: tag %d redelivered %t %q %q body %d bytes", d.DeliveryTag, d.Redelivered, d.Exchange, d.RoutingKey, len(d.Body))
	}
	gotProps := Properties{
		ContentType: d.ContentType, ContentEncoding: d.ContentEncoding, Headers: wantTable(d.Headers),
		DeliveryMode: d.DeliveryMode, Priority: d.Priority, CorrelationID: d.CorrelationId, ReplyTo: d.ReplyTo,
		Expiration: d.Expiration, MessageID: d.MessageId, Timestamp: d.Timestamp.UTC(), Type: d.Type,
		UserID: d.UserId, AppID: d.AppId, ClusterID: want.ClusterID, // amqp091-go drops cluster-id
	}
	if !deepEqual(gotProps, want) {
		t.Errorf("delivery properties decoded by amqp091-go:\n got %#v\nwant %#v", gotProps, want)
	}
	if err := d.Ack(false); err != nil {
		t.Fatal(err)
	}
	g, ok, err := ch.Get("orders", false)
	if err != nil || !ok || g.DeliveryTag != 43 || g.MessageCount != 5 || g.RoutingKey != "orders" || string(g.Body) != "got" {
		t.Fatalf("get: %+v %t %v", g, ok, err)
	}
	if err := g.Nack(true, false); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := ch.Get("orders", true); ok || err != nil {
		t.Fatalf("get-empty: %t %v", ok, err)
	}
	if err := ch.Close(); err != nil {
		t.Fatal(err)
	}
	if err := conn.Close(); err != nil {
		t.Fatal(err)
	}
	<-serverDone
}

// runBroker is the server side of TestInteropAMQP091.
func runBroker(b *broker, br *bufio.Reader, body []byte) {
	if err := ReadProtocolHeader(br); err != nil {
		panic(err)
	}
	b.send(0, &ConnectionStart{VersionMajor: 0, VersionMinor: 9, Mechanisms: "PLAIN AMQPLAIN", Locales: "en_US de_DE",
		ServerProperties: Table{"product": "bourse", "all-types": sampleTable(),
			"capabilities": Table{"publisher_confirms": true, "basic.nack": true, "consumer_cancel_notify": true}}})

	// amqp091-go's encoder, our decoder.
	so := expect[*ConnectionStartOk](b, 0)
	b.check("client properties", so.ClientProperties["bourse-test"], wantTable(clientTable()))
	b.check("start-ok", [3]string{so.Mechanism, so.Response, so.Locale}, [3]string{"PLAIN", "\x00guest\x00secret", "en_US"})

	b.send(0, &ConnectionTune{ChannelMax: 16, FrameMax: FrameMinSize, Heartbeat: 0})
	to := expect[*ConnectionTuneOk](b, 0)
	b.check("tune-ok", *to, ConnectionTuneOk{ChannelMax: 16, FrameMax: FrameMinSize, Heartbeat: 0})
	b.fr.SetMaxFrame(to.FrameMax)
	op := expect[*ConnectionOpen](b, 0)
	b.check("vhost", op.VirtualHost, "/")
	b.send(0, &ConnectionOpenOk{})

	expect[*ChannelOpen](b, 1)
	b.send(1, &ChannelOpenOk{})
	b.check("confirm.select", *expect[*ConfirmSelect](b, 1), ConfirmSelect{})
	b.send(1, &ConfirmSelectOk{})

	qd := expect[*QueueDeclare](b, 1)
	b.check("queue.declare", *qd, QueueDeclare{Queue: "orders", Durable: true, Exclusive: true, Arguments: wantTable(clientTable())})
	b.send(1, &QueueDeclareOk{Queue: "orders", MessageCount: 7, ConsumerCount: 3})
	b.check("exchange.declare", *expect[*ExchangeDeclare](b, 1), ExchangeDeclare{Exchange: "ex", Type: "topic", Durable: true, AutoDelete: true})
	b.send(1, &ExchangeDeclareOk{})
	b.check("queue.bind", *expect[*QueueBind](b, 1), QueueBind{Queue: "orders", Exchange: "ex", RoutingKey: "rk.#", Arguments: Table{"x-match": "all"}})
	b.send(1, &QueueBindOk{})
	b.check("basic.qos", *expect[*BasicQos](b, 1), BasicQos{PrefetchCount: 5, Global: true})
	b.send(1, &BasicQosOk{})
	b.check("basic.consume", *expect[*BasicConsume](b, 1), BasicConsume{Queue: "orders", ConsumerTag: "ctag", Exclusive: true})
	b.send(1, &BasicConsumeOk{ConsumerTag: "ctag"})

	b.check("basic.publish", *expect[*BasicPublish](b, 1), BasicPublish{Exchange: "ex", RoutingKey: "rk.a", Mandatory: true})
	props, got, frames := b.content(1)
	b.check("published properties", props, Properties{
		Headers: wantTable(clientTable()), ContentType: "text/plain", ContentEncoding: "identity",
		DeliveryMode: 2, Priority: 4, CorrelationID: "corr", ReplyTo: "reply",
		Expiration: "1000", MessageID: "mid", Timestamp: time.Unix(1700000002, 0).UTC(),
		Type: "type", UserID: "guest", AppID: "app",
	})
	b.check("published body", got, body)
	b.check("published body frames", frames, 3)

	full := fullProperties()
	b.sendContent(1, &BasicReturn{ReplyCode: NoRoute, ReplyText: "NO_ROUTE", Exchange: "ex", RoutingKey: "rk.a"}, &full, []byte("returned"))
	b.send(1, &BasicAck{DeliveryTag: 1})
	b.sendContent(1, &BasicDeliver{ConsumerTag: "ctag", DeliveryTag: 42, Redelivered: true, Exchange: "ex", RoutingKey: "rk.a"}, &full, body)
	b.check("basic.ack", *expect[*BasicAck](b, 1), BasicAck{DeliveryTag: 42})

	b.check("basic.get", *expect[*BasicGet](b, 1), BasicGet{Queue: "orders"})
	b.sendContent(1, &BasicGetOk{DeliveryTag: 43, RoutingKey: "orders", MessageCount: 5}, nil, []byte("got"))
	b.check("basic.nack", *expect[*BasicNack](b, 1), BasicNack{DeliveryTag: 43, Multiple: true})
	b.check("basic.get no-ack", *expect[*BasicGet](b, 1), BasicGet{Queue: "orders", NoAck: true})
	b.send(1, &BasicGetEmpty{})

	expect[*ChannelClose](b, 1)
	b.send(1, &ChannelCloseOk{})
	cc := expect[*ConnectionClose](b, 0)
	b.check("connection.close", cc.ReplyCode, uint16(ReplySuccess))
	b.send(0, &ConnectionCloseOk{})
}
