package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/go-stomp/stomp/v3"
	"github.com/nats-io/nats.go/jetstream"
	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"

	"github.com/bourse-mq/bourse/cluster"
	"github.com/bourse-mq/bourse/streamclient"
)

// jsStreamState reads the state of a stream's JetStream stream through a
// node's NATS client URL; ok is false when the JetStream stream does not
// exist.
func jsStreamState(t *testing.T, natsURL, stream string) (jetstream.StreamState, bool) {
	t.Helper()
	info, ok := jsStreamInfo(t, natsURL, stream)
	if !ok {
		return jetstream.StreamState{}, false
	}
	return info.State, true
}

// jsStreamInfo reads a stream's JetStream stream info (nil, false when it
// does not exist).
func jsStreamInfo(t *testing.T, natsURL, stream string) (*jetstream.StreamInfo, bool) {
	t.Helper()
	js, done := jsConnect(t, natsURL)
	defer done()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, cluster.StreamName("/", stream))
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, false
	}
	if err != nil {
		t.Fatalf("JetStream stream of %s: %v", stream, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info, true
}

// streamRecord is one delivery of a stream reader.
type streamRecord struct {
	offset int64
	body   string
}

// streamReader is an AMQP stream consumer on its own channel.
type streamReader struct {
	t  *testing.T
	ch *amqp.Channel
	ds <-chan amqp.Delivery
}

func readStream(t *testing.T, c *amqp.Connection, stream string, args amqp.Table) *streamReader {
	t.Helper()
	ch, err := c.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.Qos(20, 0, false); err != nil {
		t.Fatal(err)
	}
	ds, err := ch.Consume(stream, "", false, false, false, false, args)
	if err != nil {
		t.Fatalf("consume %s %v: %v", stream, args, err)
	}
	return &streamReader{t: t, ch: ch, ds: ds}
}

// next returns n deliveries, acked.
func (r *streamReader) next(n int) []streamRecord {
	r.t.Helper()
	var out []streamRecord
	for len(out) < n {
		select {
		case d, ok := <-r.ds:
			if !ok {
				r.t.Fatalf("consumer closed after %d of %d records", len(out), n)
			}
			off, _ := d.Headers["x-stream-offset"].(int64)
			out = append(out, streamRecord{off, string(d.Body)})
			if err := d.Ack(false); err != nil {
				r.t.Fatal(err)
			}
		case <-time.After(20 * time.Second):
			r.t.Fatalf("%d of %d records within 20s", len(out), n)
		}
	}
	return out
}

func (r *streamReader) close() {
	if err := r.ch.Close(); err != nil {
		r.t.Fatal(err)
	}
}

// publishConfirmed publishes bodies to the default exchange with key
// stream, message id = the body up to its first '-', and waits for every
// confirm.
func publishConfirmed(t *testing.T, c *amqp.Connection, stream string, bodies []string) {
	t.Helper()
	ch, err := c.Channel()
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var confs []*amqp.DeferredConfirmation
	for _, b := range bodies {
		id, _, _ := strings.Cut(b, "-")
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", stream, false, false,
			amqp.Publishing{DeliveryMode: amqp.Persistent, MessageId: id, Body: []byte(b)})
		if err != nil {
			t.Fatal(err)
		}
		confs = append(confs, dc)
	}
	for _, dc := range confs {
		if ok, err := dc.WaitContext(ctx); err != nil || !ok {
			t.Fatalf("confirm %d of %d: %v %v", dc.DeliveryTag, len(bodies), ok, err)
		}
	}
}

func dialAMQP(t *testing.T, addr string) *amqp.Connection {
	t.Helper()
	c, err := amqp.Dial("amqp://guest:guest@" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestClusterStreamAcrossNodes: a stream declared on node A is a JetStream
// stream shaped by its arguments; published to on A (confirms once
// JetStream has the records), it is read from "first" over AMQP on B and
// on C with the same offsets and bodies, over STOMP on C from offset 40
// and over MQTT 5 on B from offset 90; a named reader resumes on C where
// it left off on B; C's fetch endpoint serves the records from its copy; a
// reader following "next" on C gets a record published on B live; a
// resent message id is not appended twice; a delete removes the JetStream
// stream.
func TestClusterStreamAcrossNodes(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	nodes, stop := startServeCluster(t)
	defer stop()
	ca, cb, cc := dialAMQP(t, nodes[0]["amqp"]), dialAMQP(t, nodes[1]["amqp"]), dialAMQP(t, nodes[2]["amqp"])
	defer ca.Close()
	defer cb.Close()
	defer cc.Close()

	decl, err := ca.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := decl.QueueDeclare("events", true, false, false, false, amqp.Table{"x-queue-type": "stream",
		"x-max-age": "7D", "x-stream-dedup-window": int32(60000)}); err != nil {
		t.Fatal(err)
	}
	info, ok := jsStreamInfo(t, nodes[1]["nats"], "events")
	if !ok {
		t.Fatal("no JetStream stream for a declared stream")
	}
	if cfg := info.Config; cfg.Retention != jetstream.LimitsPolicy || cfg.Storage != jetstream.FileStorage ||
		cfg.Replicas != 3 || cfg.MaxAge != 7*24*time.Hour || cfg.Duplicates != time.Minute || cfg.MaxBytes != -1 {
		t.Fatalf("JetStream stream of a declared stream: %+v", cfg)
	}
	var bodies []string
	for i := range 100 {
		bodies = append(bodies, fmt.Sprintf("e%03d", i))
	}
	publishConfirmed(t, ca, "events", bodies)
	if st, ok := jsStreamState(t, nodes[2]["nats"], "events"); !ok || st.Msgs != 100 || st.FirstSeq != 1 || st.LastSeq != 100 {
		t.Fatalf("JetStream stream after 100 confirms: %+v (exists %v)", st, ok)
	}

	// From "first" on B and on C: offsets 0..99, the bodies in order.
	for i, c := range []*amqp.Connection{cb, cc} {
		r := readStream(t, c, "events", amqp.Table{"x-stream-offset": "first"})
		got := r.next(100)
		r.close()
		for j, rec := range got {
			if rec.offset != int64(j) || rec.body != bodies[j] {
				t.Fatalf("node %c, record %d: offset %d body %q", 'B'+i, j, rec.offset, rec.body)
			}
		}
	}

	// Over STOMP on C, from offset 40: the same offsets.
	sc0, err := stomp.Dial("tcp", nodes[2]["stomp"], stomp.ConnOpt.Login("guest", "guest"), stomp.ConnOpt.Host("/"),
		stomp.ConnOpt.HeartBeat(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	sub, err := sc0.Subscribe("/stream/events", stomp.AckClientIndividual, stomp.SubscribeOpt.Header("x-stream-offset", "40"))
	if err != nil {
		t.Fatal(err)
	}
	for j := 40; j < 100; j++ {
		select {
		case m := <-sub.C:
			if m.Err != nil || m.Header.Get("x-stream-offset") != fmt.Sprint(j) || string(m.Body) != bodies[j] {
				t.Fatalf("STOMP on C, record %d: offset %s body %q (%v)", j, m.Header.Get("x-stream-offset"), m.Body, m.Err)
			}
			if err := sc0.Ack(m); err != nil {
				t.Fatal(err)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("STOMP on C: record %d not within 20s", j)
		}
	}
	if err := sub.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	_ = sc0.Disconnect()

	// Over MQTT 5 on B, from offset 90.
	conn, err := net.Dial("tcp", nodes[1]["mqtt"])
	if err != nil {
		t.Fatal(err)
	}
	mqttMsgs := make(chan *paho.Publish, 100)
	mc := paho.NewClient(paho.ClientConfig{Conn: conn, OnPublishReceived: []func(paho.PublishReceived) (bool, error){
		func(pr paho.PublishReceived) (bool, error) { mqttMsgs <- pr.Packet; return true, nil },
	}})
	mctx, mcancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer mcancel()
	if ca, err := mc.Connect(mctx, &paho.Connect{ClientID: "replayer", CleanStart: true, KeepAlive: 30,
		Username: "guest", UsernameFlag: true, Password: []byte("guest"), PasswordFlag: true}); err != nil || ca.ReasonCode != 0 {
		t.Fatalf("mqtt connect on B: %v %+v", err, ca)
	}
	if sa, err := mc.Subscribe(mctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "$stream/events/90", QoS: 1}}}); err != nil || sa.Reasons[0] >= 0x80 {
		t.Fatalf("mqtt subscribe on B: %v %+v", err, sa)
	}
	for j := 90; j < 100; j++ {
		select {
		case m := <-mqttMsgs:
			if got := m.Properties.User.Get("x-stream-offset"); got != fmt.Sprint(j) || string(m.Payload) != bodies[j] {
				t.Fatalf("MQTT on B, record %d: offset %s body %q", j, got, m.Payload)
			}
		case <-mctx.Done():
			t.Fatalf("MQTT on B: record %d not within 20s", j)
		}
	}
	_ = mc.Disconnect(&paho.Disconnect{})

	// A named reader reads 50 on B, then resumes on C from offset 50.
	r := readStream(t, cb, "events", amqp.Table{"x-stream-offset": "first", "x-stream-consumer-name": "billing"})
	got := r.next(50)
	r.close()
	if got[49].offset != 49 {
		t.Fatalf("named reader on B: last of 50 at offset %d", got[49].offset)
	}
	sc := streamclient.New("http://"+nodes[2]["http"], "guest", "guest")
	waitFor(t, "the named offset 50 seen on node C", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		off, ok, err := sc.Offset(ctx, "/", "events", "billing")
		return err == nil && ok && off == 50
	})
	r = readStream(t, cc, "events", amqp.Table{"x-stream-offset": "first", "x-stream-consumer-name": "billing"})
	got = r.next(50)
	r.close()
	if got[0].offset != 50 || got[0].body != "e050" || got[49].offset != 99 {
		t.Fatalf("named reader resumed on C at offset %d (%q), ended at %d", got[0].offset, got[0].body, got[49].offset)
	}

	// C's fetch endpoint (sendfile from C's copy): the same 100 records.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var fetched []streamRecord
	pos := streamclient.First
	for len(fetched) < 100 {
		b, err := sc.Fetch(ctx, "/", "events", pos, streamclient.Options{MaxBytes: 1 << 10})
		if err != nil {
			t.Fatalf("fetch on C after %d records: %v", len(fetched), err)
		}
		if len(b.Records) == 0 {
			t.Fatalf("fetch on C: no records at %d (tail %d)", b.First, b.Tail)
		}
		for _, rec := range b.Records {
			fetched = append(fetched, streamRecord{int64(rec.Offset), string(rec.Message.Body)})
		}
		pos = streamclient.From(b.Next)
	}
	for j, rec := range fetched[:100] {
		if rec.offset != int64(j) || rec.body != bodies[j] {
			t.Fatalf("fetched record %d: offset %d body %q", j, rec.offset, rec.body)
		}
	}

	// Live: a reader on C from "next" gets what B publishes; a resend of
	// an id within the window (e005) is confirmed but not appended.
	live := readStream(t, cc, "events", amqp.Table{"x-stream-offset": "next"})
	publishConfirmed(t, cb, "events", []string{"e005", "live"})
	got = live.next(1)
	if got[0].offset != 100 || got[0].body != "live" {
		t.Fatalf("live record on C: offset %d body %q", got[0].offset, got[0].body)
	}
	live.close()
	if st, _ := jsStreamState(t, nodes[0]["nats"], "events"); st.Msgs != 101 {
		t.Fatalf("JetStream holds %d records after a duplicate and one more; want 101", st.Msgs)
	}

	// A delete on C removes the JetStream stream.
	del, err := cc.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := del.QueueDelete("events", false, false, false); err != nil {
		t.Fatal(err)
	}
	if _, ok := jsStreamState(t, nodes[1]["nats"], "events"); ok {
		t.Fatal("JetStream stream still there after the stream was deleted")
	}
	ca.Close()
	cb.Close()
	cc.Close()
	stop()
}

// TestClusterStreamRetention: x-max-length-bytes is the JetStream stream's
// limit; a node copying the stream drops its local segments below the
// JetStream first sequence, and a reader from "first" on another node
// starts at that offset.
func TestClusterStreamRetention(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	nodes, stop := startServeCluster(t)
	defer stop()
	ca, cc := dialAMQP(t, nodes[0]["amqp"]), dialAMQP(t, nodes[2]["amqp"])
	defer ca.Close()
	defer cc.Close()
	decl, err := ca.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := decl.QueueDeclare("metrics", true, false, false, false, amqp.Table{"x-queue-type": "stream",
		"x-max-length-bytes": int64(20000), "x-stream-max-segment-size-bytes": int64(4000)}); err != nil {
		t.Fatal(err)
	}
	// C copies the stream from the start (a reader follows it).
	follower := readStream(t, cc, "metrics", amqp.Table{"x-stream-offset": "first"})
	pad := strings.Repeat("x", 500)
	var bodies []string
	for i := range 200 {
		bodies = append(bodies, fmt.Sprintf("m%03d-%s", i, pad))
	}
	publishConfirmed(t, ca, "metrics", bodies)
	// It reads up to the last record, in order; records that retention
	// dropped before C copied them are skipped (as a reader fallen behind
	// retention on one node is moved up).
	for last := int64(-1); last < 199; {
		rec := follower.next(1)[0]
		if rec.offset <= last || rec.body != bodies[rec.offset] {
			t.Fatalf("follower on C: offset %d (%.4s) after %d", rec.offset, rec.body, last)
		}
		last = rec.offset
	}
	follower.close()
	st, _ := jsStreamState(t, nodes[1]["nats"], "metrics")
	if st.FirstSeq <= 1 || st.LastSeq != 200 || st.Bytes > 20000 {
		t.Fatalf("JetStream stream with x-max-length-bytes 20000 after 200 records of 500 bytes: %+v", st)
	}
	first := st.FirstSeq - 1

	// C's copy follows: its oldest offset moves up to (at most) JetStream's.
	sc := streamclient.New("http://"+nodes[2]["http"], "guest", "guest")
	waitFor(t, "node C's copy trimmed", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		b, err := sc.Fetch(ctx, "/", "metrics", streamclient.From(first), streamclient.Options{MaxBytes: 1})
		return err == nil && b.Oldest > 0 && b.Oldest <= first && b.Tail == 200
	})
	// A new reader from "first" on A starts at JetStream's first offset.
	r := readStream(t, ca, "metrics", amqp.Table{"x-stream-offset": "first"})
	got := r.next(1)
	r.close()
	if got[0].offset != int64(first) || got[0].body != bodies[first] {
		t.Fatalf("reader from first on A: offset %d (JetStream first offset %d)", got[0].offset, first)
	}
	ca.Close()
	cc.Close()
	stop()
}
