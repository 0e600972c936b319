package amqp

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/bourse-mq/bourse/protocols/amqp/wire"
	"github.com/bourse-mq/bourse/router"
)

// fuzzSeed encodes a sequence of frames on channel 1.
func fuzzSeed(t testing.TB, parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

func methodFrame(t testing.TB, ch uint16, m wire.Method) []byte {
	p, err := wire.EncodeMethod(nil, m)
	must(t, err)
	return rawFrame(wire.FrameMethod, ch, p)
}

func contentFrames(t testing.TB, ch uint16, body string, props *wire.Properties) []byte {
	h, err := wire.AppendHeader(nil, wire.ClassBasic, uint64(len(body)), props)
	must(t, err)
	b := rawFrame(wire.FrameHeader, ch, h)
	if body != "" {
		b = append(b, rawFrame(wire.FrameBody, ch, []byte(body))...)
	}
	return b
}

// FuzzConnection feeds arbitrary bytes to a connection after a valid
// handshake, over an in-process pipe. Invariants: the server never panics,
// and the connection's goroutines end once the client goes away.
func FuzzConnection(f *testing.F) {
	open := methodFrame(f, 1, &wire.ChannelOpen{})
	declare := methodFrame(f, 1, &wire.QueueDeclare{Queue: "fz", Arguments: wire.Table{"x-max-length": int32(3), "x-dead-letter-exchange": "amq.fanout"}})
	publish := append(methodFrame(f, 1, &wire.BasicPublish{RoutingKey: "fz", Mandatory: true}),
		contentFrames(f, 1, "hello", &wire.Properties{Headers: wire.Table{"n": wire.Table{"d": wire.Decimal{Scale: 1, Value: 2}}}, ReplyTo: "amq.rabbitmq.reply-to"})...)
	consume := methodFrame(f, 1, &wire.BasicConsume{Queue: "fz", ConsumerTag: "c"})
	f.Add(fuzzSeed(f, open, declare, publish, consume, methodFrame(f, 1, &wire.BasicAck{DeliveryTag: 1, Multiple: true})))
	f.Add(fuzzSeed(f, open, methodFrame(f, 1, &wire.ConfirmSelect{}), declare, publish, publish,
		methodFrame(f, 1, &wire.BasicGet{Queue: "fz"}), methodFrame(f, 1, &wire.BasicNack{DeliveryTag: 1, Requeue: false})))
	f.Add(fuzzSeed(f, open, methodFrame(f, 1, &wire.TxSelect{}), declare, publish, methodFrame(f, 1, &wire.TxCommit{}),
		methodFrame(f, 1, &wire.BasicQos{PrefetchCount: 1, Global: true}), consume, methodFrame(f, 1, &wire.TxRollback{})))
	f.Add(fuzzSeed(f, open, methodFrame(f, 1, &wire.BasicConsume{Queue: "amq.rabbitmq.reply-to", NoAck: true}), publish,
		methodFrame(f, 1, &wire.ChannelFlow{Active: false}), methodFrame(f, 1, &wire.ChannelClose{})))
	f.Add(fuzzSeed(f, open, methodFrame(f, 1, &wire.ExchangeDeclare{Exchange: "x", Type: "topic"}),
		methodFrame(f, 1, &wire.ExchangeBind{Destination: "amq.fanout", Source: "x", RoutingKey: "#"}),
		methodFrame(f, 1, &wire.QueueDelete{Queue: "fz"}), methodFrame(f, 0, &wire.ConnectionClose{})))
	f.Add(fuzzSeed(f, open, rawFrame(wire.FrameBody, 1, []byte("stray")), rawFrame(9, 0, nil)))
	f.Add([]byte("AMQP\x00\x00\x09\x01garbage"))
	f.Add([]byte{wire.FrameMethod, 0, 1, 0xff, 0xff, 0xff, 0xff})

	f.Fuzz(func(t *testing.T, data []byte) {
		b := router.New(router.Options{Logger: testLogger()})
		srv := New(b, Options{Logger: testLogger(), CloseTimeout: 100 * time.Millisecond, HandshakeTimeout: 2 * time.Second})
		client, server := net.Pipe()
		served := make(chan struct{})
		go func() {
			srv.ServeConn(server)
			close(served)
		}()
		r := newRaw(t, client)
		r.handshake(0)
		drained := make(chan struct{})
		go func() {
			_, _ = io.Copy(io.Discard, client)
			close(drained)
		}()
		wrote := make(chan struct{})
		go func() {
			_ = client.SetWriteDeadline(time.Now().Add(2 * time.Second))
			_, _ = client.Write(data)
			close(wrote)
		}()
		<-wrote
		_ = client.Close()
		select {
		case <-served:
		case <-time.After(5 * time.Second):
			t.Fatal("connection goroutines did not end after the client left")
		}
		<-drained
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
	})
}
