package mqtt

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.uber.org/goleak"

	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/internal/wiring"
	"github.com/bourse-mq/bourse/router"
	"github.com/bourse-mq/bourse/router/queue"
	"github.com/bourse-mq/bourse/storage/stream"
)

func TestMain(m *testing.M) {
	flag.Parse()
	if f := flag.Lookup("test.fuzz"); f != nil && f.Value.String() != "" {
		// Fuzzing: the fuzzing engine's own goroutines may still be
		// winding down when m.Run returns (a leak check failed make fuzz
		// once, with no failing input).
		os.Exit(m.Run())
	}
	goleak.VerifyTestMain(m)
}

// testLogger logs warnings and errors to stderr (verbose with MQTT_TEST_DEBUG).
func testLogger() *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("MQTT_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

type testServer struct {
	t    testing.TB
	s    *Server
	b    *router.Broker
	addr string
}

// startServer runs an MQTT server on 127.0.0.1:0 over a fresh broker (or
// the given one) and shuts it down when the test ends.
func startServer(t testing.TB, b *router.Broker, opts Options) *testServer {
	t.Helper()
	if b == nil {
		streams, err := stream.Open(t.TempDir(), stream.Options{Logger: testLogger()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { streams.Close() })
		b = router.New(router.Options{Logger: testLogger(), Streams: wiring.StreamStore(streams)})
	}
	if opts.Logger == nil {
		opts.Logger = testLogger()
	}
	s := New(b, opts)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return &testServer{t: t, s: s, b: b, addr: ln.Addr().String()}
}

func (ts *testServer) vhost(name string) *router.VHost {
	v, err := ts.b.VHost(name)
	if err != nil {
		ts.t.Fatal(err)
	}
	return v
}

// queueNames lists the vhost's queues.
func (ts *testServer) queueNames(vhost string) []string {
	var names []string
	for _, q := range ts.vhost(vhost).Queues() {
		names = append(names, q.Name())
	}
	return names
}

// ---- paho (MQTT 5) ----

type v5client struct {
	t    testing.TB
	c    *paho.Client
	msgs chan *paho.Publish
	ca   *paho.Connack
}

// dialV5 connects a paho MQTT 5 client. cp may be nil.
func dialV5(t testing.TB, addr, clientID string, cp *paho.Connect) *v5client {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return connectV5(t, nc, clientID, cp)
}

func connectV5(t testing.TB, nc net.Conn, clientID string, cp *paho.Connect) *v5client {
	t.Helper()
	vc := &v5client{t: t, msgs: make(chan *paho.Publish, 10000)}
	vc.c = paho.NewClient(paho.ClientConfig{
		Conn: nc,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) {
				vc.msgs <- pr.Packet
				return true, nil
			},
		},
	})
	if cp == nil {
		cp = &paho.Connect{CleanStart: true, KeepAlive: 30}
	}
	cp.ClientID = clientID
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ca, err := vc.c.Connect(ctx, cp)
	if err != nil {
		t.Fatalf("connect %s: %v", clientID, err)
	}
	vc.ca = ca
	t.Cleanup(vc.close)
	return vc
}

func (vc *v5client) close() {
	select {
	case <-vc.c.Done():
	default:
		_ = vc.c.Disconnect(&paho.Disconnect{ReasonCode: 0})
		select {
		case <-vc.c.Done():
		case <-time.After(5 * time.Second):
		}
	}
}

func (vc *v5client) subscribe(opts ...paho.SubscribeOptions) *paho.Suback {
	vc.t.Helper()
	return vc.subscribeProps(nil, opts...)
}

func (vc *v5client) subscribeProps(p *paho.SubscribeProperties, opts ...paho.SubscribeOptions) *paho.Suback {
	vc.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sa, err := vc.c.Subscribe(ctx, &paho.Subscribe{Subscriptions: opts, Properties: p})
	if err != nil {
		vc.t.Fatalf("subscribe: %v", err)
	}
	return sa
}

func (vc *v5client) publish(p *paho.Publish) *paho.PublishResponse {
	vc.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := vc.c.Publish(ctx, p)
	if err != nil {
		vc.t.Fatalf("publish %s: %v", p.Topic, err)
	}
	return r
}

// next waits for the next message.
func (vc *v5client) next() *paho.Publish {
	vc.t.Helper()
	select {
	case m := <-vc.msgs:
		return m
	case <-time.After(5 * time.Second):
		vc.t.Fatal("no message within 5s")
		return nil
	}
}

// none checks that no message arrives for d.
func (vc *v5client) none(d time.Duration) {
	vc.t.Helper()
	select {
	case m := <-vc.msgs:
		vc.t.Fatalf("unexpected message on %q: %q", m.Topic, m.Payload)
	case <-time.After(d):
	}
}

// ---- paho.mqtt.golang (MQTT 3.1.1) ----

type v3client struct {
	t    testing.TB
	c    pahov3.Client
	msgs chan pahov3.Message
}

func dialV3(t testing.TB, addr, clientID string, clean bool, user, pass string) *v3client {
	t.Helper()
	c, err := tryDialV3(addr, clientID, clean, user, pass)
	if err != nil {
		t.Fatalf("v3 connect %s: %v", clientID, err)
	}
	c.t = t
	t.Cleanup(func() {
		if c.c.IsConnected() {
			c.c.Disconnect(100)
		}
	})
	return c
}

func tryDialV3(addr, clientID string, clean bool, user, pass string) (*v3client, error) {
	vc := &v3client{msgs: make(chan pahov3.Message, 10000)}
	o := pahov3.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(clientID).
		SetCleanSession(clean).SetAutoReconnect(false).SetConnectRetry(false).
		SetProtocolVersion(4).SetConnectTimeout(5 * time.Second).SetKeepAlive(30 * time.Second).
		SetDefaultPublishHandler(func(_ pahov3.Client, m pahov3.Message) { vc.msgs <- m })
	if user != "" {
		o.SetUsername(user).SetPassword(pass)
	}
	vc.c = pahov3.NewClient(o)
	tok := vc.c.Connect()
	if !tok.WaitTimeout(5 * time.Second) {
		return nil, errors.New("connect timed out")
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	return vc, nil
}

func (vc *v3client) wait(tok pahov3.Token) {
	vc.t.Helper()
	if !tok.WaitTimeout(5 * time.Second) {
		vc.t.Fatal("token timed out")
	}
	if err := tok.Error(); err != nil {
		vc.t.Fatal(err)
	}
}

func (vc *v3client) subscribe(filter string, qos byte) {
	vc.t.Helper()
	vc.wait(vc.c.Subscribe(filter, qos, nil))
}

func (vc *v3client) publish(topic string, qos byte, retained bool, payload string) {
	vc.t.Helper()
	vc.wait(vc.c.Publish(topic, qos, retained, payload))
}

func (vc *v3client) next() pahov3.Message {
	vc.t.Helper()
	select {
	case m := <-vc.msgs:
		return m
	case <-time.After(5 * time.Second):
		vc.t.Fatal("no message within 5s")
		return nil
	}
}

// ---- raw MQTT over a socket, with mochi's packet codec ----

type rawClient struct {
	t  testing.TB
	nc net.Conn
	r  *bufio.Reader
	v  byte // protocol version
}

func dialRaw(t testing.TB, addr string, version byte) *rawClient {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	rc := &rawClient{t: t, nc: nc, r: bufio.NewReader(nc), v: version}
	t.Cleanup(func() { _ = nc.Close() })
	return rc
}

// connect sends CONNECT and returns the CONNACK.
func (rc *rawClient) connect(clientID string, clean bool, mod func(*packets.Packet)) packets.Packet {
	rc.t.Helper()
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Connect: packets.ConnectParams{
			ProtocolName:     []byte("MQTT"),
			ClientIdentifier: clientID,
			Clean:            clean,
			Keepalive:        30,
		},
		ProtocolVersion: rc.v,
	}
	if rc.v == 3 {
		pk.Connect.ProtocolName = []byte("MQIsdp")
	}
	if mod != nil {
		mod(&pk)
	}
	rc.send(pk)
	ca := rc.recv()
	if ca.FixedHeader.Type != packets.Connack {
		rc.t.Fatalf("want CONNACK, got %v", ca.FixedHeader.Type)
	}
	return ca
}

func (rc *rawClient) send(pk packets.Packet) {
	rc.t.Helper()
	pk.ProtocolVersion = rc.v
	var buf bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectEncode(&buf)
	case packets.Publish:
		err = pk.PublishEncode(&buf)
	case packets.Puback:
		err = pk.PubackEncode(&buf)
	case packets.Pubrec:
		err = pk.PubrecEncode(&buf)
	case packets.Pubrel:
		err = pk.PubrelEncode(&buf)
	case packets.Pubcomp:
		err = pk.PubcompEncode(&buf)
	case packets.Subscribe:
		err = pk.SubscribeEncode(&buf)
	case packets.Unsubscribe:
		err = pk.UnsubscribeEncode(&buf)
	case packets.Pingreq:
		err = pk.PingreqEncode(&buf)
	case packets.Disconnect:
		err = pk.DisconnectEncode(&buf)
	default:
		rc.t.Fatalf("cannot send %v", pk.FixedHeader.Type)
	}
	if err != nil {
		rc.t.Fatal(err)
	}
	rc.write(buf.Bytes())
}

func (rc *rawClient) write(b []byte) {
	rc.t.Helper()
	_ = rc.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := rc.nc.Write(b); err != nil {
		rc.t.Fatalf("write: %v", err)
	}
}

// read reads one packet; err is io.EOF (or similar) when the server closed.
func (rc *rawClient) read(timeout time.Duration) (packets.Packet, error) {
	var pk packets.Packet
	_ = rc.nc.SetReadDeadline(time.Now().Add(timeout))
	b, err := rc.r.ReadByte()
	if err != nil {
		return pk, err
	}
	if err := pk.FixedHeader.Decode(b); err != nil {
		return pk, err
	}
	n, _, err := packets.DecodeLength(rc.r)
	if err != nil {
		return pk, err
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(rc.r, body); err != nil {
		return pk, err
	}
	pk.ProtocolVersion = rc.v
	pk.FixedHeader.Remaining = n
	switch pk.FixedHeader.Type {
	case packets.Connack:
		err = pk.ConnackDecode(body)
	case packets.Publish:
		err = pk.PublishDecode(body)
	case packets.Puback:
		err = pk.PubackDecode(body)
	case packets.Pubrec:
		err = pk.PubrecDecode(body)
	case packets.Pubrel:
		err = pk.PubrelDecode(body)
	case packets.Pubcomp:
		err = pk.PubcompDecode(body)
	case packets.Suback:
		err = pk.SubackDecode(body)
	case packets.Unsuback:
		err = pk.UnsubackDecode(body)
	case packets.Disconnect:
		err = pk.DisconnectDecode(body)
	case packets.Pingresp:
	default:
		err = fmt.Errorf("unexpected packet type %d", pk.FixedHeader.Type)
	}
	return pk, err
}

func (rc *rawClient) recv() packets.Packet {
	rc.t.Helper()
	pk, err := rc.read(5 * time.Second)
	if err != nil {
		rc.t.Fatalf("read: %v", err)
	}
	return pk
}

// expectClosed reads until the server closes the connection, returning
// the packets it sent before.
func (rc *rawClient) expectClosed(timeout time.Duration) []packets.Packet {
	rc.t.Helper()
	var got []packets.Packet
	deadline := time.Now().Add(timeout)
	for {
		pk, err := rc.read(time.Until(deadline))
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				rc.t.Fatalf("connection still open after %v (got %d packets)", timeout, len(got))
			}
			return got
		}
		got = append(got, pk)
	}
}

func (rc *rawClient) subscribe(id uint16, subs ...packets.Subscription) packets.Packet {
	rc.t.Helper()
	rc.send(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1},
		PacketID:    id,
		Filters:     subs,
	})
	for {
		pk := rc.recv()
		if pk.FixedHeader.Type == packets.Suback {
			return pk
		}
	}
}

func (rc *rawClient) publish(id uint16, qos byte, topic string, payload []byte) {
	rc.t.Helper()
	rc.send(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos},
		PacketID:    id,
		TopicName:   topic,
		Payload:     payload,
	})
}

// ---- router-side test consumer ----

// sink is a queue.Consumer that collects deliveries.
type sink struct {
	ch chan queue.Delivery
}

func newSink() *sink                                { return &sink{ch: make(chan queue.Delivery, 10000)} }
func (s *sink) Deliver(d queue.Delivery) bool       { s.ch <- d; return true }
func (s *sink) Cancelled(q *queue.Queue, err error) {}

func (s *sink) next(t testing.TB) queue.Delivery {
	t.Helper()
	select {
	case d := <-s.ch:
		return d
	case <-time.After(5 * time.Second):
		t.Fatal("no delivery within 5s")
		return queue.Delivery{}
	}
}

func (s *sink) none(t testing.TB, d time.Duration) {
	t.Helper()
	select {
	case dv := <-s.ch:
		t.Fatalf("unexpected delivery %q", dv.Msg.Body)
	case <-time.After(d):
	}
}

// bindSink declares a queue bound to amq.topic with key and consumes it
// (no-ack).
func bindSink(t testing.TB, v *router.VHost, name, key string) *sink {
	t.Helper()
	if _, err := v.DeclareQueue(router.QueueDecl{QueueInfo: core.QueueInfo{Name: name}}); err != nil {
		t.Fatal(err)
	}
	if err := v.Bind(core.Binding{Source: router.AMQTopic, Dest: core.Dest{Kind: core.ToQueue, Name: name}, Key: key}, 0); err != nil {
		t.Fatal(err)
	}
	s := newSink()
	sub, err := v.Consume(name, s, queue.ConsumeOptions{NoAck: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sub.Cancel)
	return s
}

// eventually polls cond until it holds or 5s pass.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
