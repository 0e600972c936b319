package mqtt

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	pahopackets "github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/bourse-mq/bourse/core"
)

func TestAuthentication(t *testing.T) {
	ts := startServer(t, nil, Options{Users: map[string]string{"guest": "guest", "alice": "s3cret"}})
	if _, err := ts.b.AddVHost("tenant"); err != nil {
		t.Fatal(err)
	}
	login := func(user, pass string) func(*packets.Packet) {
		return func(pk *packets.Packet) {
			pk.Connect.UsernameFlag, pk.Connect.Username = true, []byte(user)
			pk.Connect.PasswordFlag, pk.Connect.Password = true, []byte(pass)
		}
	}
	for _, tc := range []struct {
		name       string
		version    byte
		user, pass string
		want       byte
	}{
		{"v5 good", 5, "alice", "s3cret", 0},
		{"v5 bad password", 5, "alice", "nope", 0x86},
		{"v5 unknown user", 5, "bob", "x", 0x86},
		{"v3 bad password", 4, "alice", "nope", 0x04},
		{"v31 bad password", 3, "alice", "nope", 0x04},
		{"v5 vhost", 5, "tenant:guest", "guest", 0},
		{"v5 unknown vhost", 5, "nowhere:guest", "guest", 0x87},
		{"v3 unknown vhost", 4, "nowhere:guest", "guest", 0x05},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := dialRaw(t, ts.addr, tc.version)
			ca := rc.connect("auth-"+strings.ReplaceAll(tc.name, " ", "-"), true, login(tc.user, tc.pass))
			if ca.ReasonCode != tc.want {
				t.Fatalf("CONNACK %#x, want %#x", ca.ReasonCode, tc.want)
			}
			if tc.want != 0 {
				rc.expectClosed(5 * time.Second)
			}
		})
	}
	// Anonymous clients are accepted from loopback, as the default user.
	anon := dialV5(t, ts.addr, "anon", nil)
	s := bindSink(t, ts.vhost("/"), "anon", "anon")
	anon.publish(&paho.Publish{Topic: "anon", QoS: 1, Payload: []byte("x")})
	if d := s.next(t); d.Msg.Origin.User != "guest" {
		t.Fatalf("anonymous publishes as %q", d.Msg.Origin.User)
	}

	// The vhost part of the user name selects the vhost.
	ten := bindSink(t, ts.vhost("tenant"), "t", "#")
	root := bindSink(t, ts.vhost("/"), "r", "#")
	tc := dialV5(t, ts.addr, "same-id", &paho.Connect{CleanStart: true, KeepAlive: 30,
		Username: "tenant:alice", UsernameFlag: true, Password: []byte("s3cret"), PasswordFlag: true})
	rc := dialV5(t, ts.addr, "same-id", nil) // same client id, other vhost: no takeover
	tc.publish(&paho.Publish{Topic: "x", QoS: 1, Payload: []byte("tenant")})
	if d := ten.next(t); string(d.Msg.Body) != "tenant" || d.Msg.Origin.VHost != "tenant" || d.Msg.Origin.User != "alice" {
		t.Fatalf("tenant got %q from %+v", d.Msg.Body, d.Msg.Origin)
	}
	root.none(t, 50*time.Millisecond)
	rc.publish(&paho.Publish{Topic: "x", QoS: 1, Payload: []byte("root")})
	root.next(t)
	select {
	case <-tc.c.Done():
		t.Fatal("a client in another vhost took the session over")
	default:
	}
}

func TestAnonymousRefused(t *testing.T) {
	ts := startServer(t, nil, Options{Anonymous: AnonymousNever})
	rc := dialRaw(t, ts.addr, 5)
	if ca := rc.connect("anon", true, nil); ca.ReasonCode != 0x86 {
		t.Fatalf("CONNACK %#x", ca.ReasonCode)
	}
	r3 := dialRaw(t, ts.addr, 4)
	if ca := r3.connect("anon", true, nil); ca.ReasonCode != 0x04 {
		t.Fatalf("CONNACK %#x", ca.ReasonCode)
	}
}

// TestMalformedInput sends bytes no well-behaved client sends. Each case
// gets the spec's answer and a closed connection, and the server keeps
// serving everyone else.
func TestMalformedInput(t *testing.T) {
	ts := startServer(t, nil, Options{MaxPacketSize: 1024})
	watcher := dialV5(t, ts.addr, "watcher", nil)
	watcher.subscribe(paho.SubscribeOptions{Topic: "ok", QoS: 1})
	connected := func(v byte) *rawClient {
		rc := dialRaw(t, ts.addr, v)
		if ca := rc.connect("", true, nil); ca.ReasonCode != 0 {
			t.Fatalf("CONNACK %#x", ca.ReasonCode)
		}
		return rc
	}
	disconnectWith := func(t *testing.T, rc *rawClient, code byte) {
		t.Helper()
		got := rc.expectClosed(5 * time.Second)
		if len(got) != 1 || got[0].FixedHeader.Type != packets.Disconnect || got[0].ReasonCode != code {
			var desc []string
			for _, p := range got {
				desc = append(desc, packets.PacketNames[p.FixedHeader.Type])
			}
			t.Fatalf("want DISCONNECT %#x then close, got %v %+v", code, desc, got)
		}
	}
	t.Run("oversize publish v5", func(t *testing.T) {
		rc := connected(5)
		rc.publish(1, 1, "big", make([]byte, 2000))
		disconnectWith(t, rc, packets.ErrPacketTooLarge.Code)
	})
	t.Run("oversize length field v5", func(t *testing.T) {
		rc := connected(5)
		rc.write([]byte{0x32, 0x80, 0x80, 0x40, 0, 3, 'a', 'b', 'c'}) // claims 1 MiB
		disconnectWith(t, rc, packets.ErrPacketTooLarge.Code)
	})
	t.Run("oversize v3", func(t *testing.T) {
		rc := connected(4)
		rc.publish(1, 1, "big", make([]byte, 2000))
		if got := rc.expectClosed(5 * time.Second); len(got) != 0 {
			t.Fatalf("MQTT 3 has no DISCONNECT from the server; got %v", got)
		}
	})
	t.Run("oversize connect", func(t *testing.T) {
		rc := dialRaw(t, ts.addr, 5)
		rc.write([]byte{0x10, 0xff, 0xff, 0x7f})
		rc.expectClosed(5 * time.Second)
	})
	t.Run("malformed length", func(t *testing.T) {
		rc := connected(5)
		rc.write([]byte{0x30, 0xff, 0xff, 0xff, 0xff, 0x01})
		disconnectWith(t, rc, packets.ErrMalformedPacket.Code)
	})
	t.Run("wildcard in topic", func(t *testing.T) {
		rc := connected(5)
		rc.publish(1, 1, "a/+", []byte("x"))
		disconnectWith(t, rc, packets.ErrProtocolViolationSurplusWildcard.Code)
	})
	t.Run("qos 1 without packet id", func(t *testing.T) {
		rc := connected(5)
		rc.write([]byte{0x32, 0x05, 0x00, 0x01, 'a', 0x00, 0x00})
		rc.expectClosed(5 * time.Second)
	})
	t.Run("truncated publish", func(t *testing.T) {
		rc := connected(5)
		rc.write([]byte{0x30, 0x02, 0x00, 0x09}) // topic length 9, no topic
		disconnectWith(t, rc, packets.ErrMalformedPacket.Code)
	})
	t.Run("invalid utf-8 topic", func(t *testing.T) {
		rc := connected(5)
		rc.write([]byte{0x30, 0x05, 0x00, 0x02, 0xc3, 0x28, 'x'})
		disconnectWith(t, rc, packets.ErrMalformedPacket.Code)
	})
	t.Run("reserved packet type", func(t *testing.T) {
		rc := connected(5)
		rc.write([]byte{0xf0, 0x00})
		rc.expectClosed(5 * time.Second)
	})
	t.Run("second connect", func(t *testing.T) {
		rc := connected(5)
		rc.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect},
			Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 30}})
		disconnectWith(t, rc, packets.ErrProtocolViolationSecondConnect.Code)
	})
	t.Run("not connect first", func(t *testing.T) {
		rc := dialRaw(t, ts.addr, 5)
		rc.write([]byte{0xc0, 0x00}) // PINGREQ
		rc.expectClosed(5 * time.Second)
	})
	t.Run("garbage", func(t *testing.T) {
		rc := dialRaw(t, ts.addr, 5)
		rc.write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
		rc.expectClosed(5 * time.Second)
	})
	t.Run("bad protocol name", func(t *testing.T) {
		rc := dialRaw(t, ts.addr, 5)
		rc.write([]byte{0x10, 0x0c, 0, 4, 'A', 'M', 'Q', 'P', 5, 2, 0, 30, 0, 0, 0})
		rc.expectClosed(5 * time.Second)
	})
	// The server is fine.
	pub := dialV5(t, ts.addr, "pub", nil)
	pub.publish(&paho.Publish{Topic: "ok", QoS: 1, Payload: []byte("still here")})
	if m := watcher.next(); string(m.Payload) != "still here" {
		t.Fatalf("got %q", m.Payload)
	}
}

func TestConnectTimeout(t *testing.T) {
	ts := startServer(t, nil, Options{ConnectTimeout: 200 * time.Millisecond})
	rc := dialRaw(t, ts.addr, 5)
	start := time.Now()
	rc.expectClosed(5 * time.Second)
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("closed after %v", d)
	}
}

func TestKeepAlive(t *testing.T) {
	ts := startServer(t, nil, Options{})
	rc := dialRaw(t, ts.addr, 5)
	rc.connect("sleepy", true, func(pk *packets.Packet) { pk.Connect.Keepalive = 1 })
	start := time.Now()
	got := rc.expectClosed(5 * time.Second)
	if len(got) != 1 || got[0].ReasonCode != packets.ErrKeepAliveTimeout.Code {
		t.Fatalf("got %+v", got)
	}
	if d := time.Since(start); d < 900*time.Millisecond { // mochi: 1.5 × 1s, in whole seconds
		t.Fatalf("closed after %v, before the keep-alive expired", d)
	}
	// Pings keep a connection open.
	r2 := dialRaw(t, ts.addr, 5)
	r2.connect("pinger", true, func(pk *packets.Packet) { pk.Connect.Keepalive = 1 })
	for range 4 {
		time.Sleep(500 * time.Millisecond)
		r2.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}})
		if pk := r2.recv(); pk.FixedHeader.Type != packets.Pingresp {
			t.Fatalf("got %v", pk.FixedHeader.Type)
		}
	}
}

func TestShutdown(t *testing.T) {
	b := startServer(t, nil, Options{}) // cleanup shuts down a second time: must be harmless
	rc := dialRaw(t, b.addr, 5)
	rc.connect("c", true, nil)
	r3 := dialRaw(t, b.addr, 4)
	r3.connect("c3", true, nil)
	idle := dialRaw(t, b.addr, 5) // no CONNECT yet
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if got := rc.expectClosed(time.Second); len(got) != 1 || got[0].ReasonCode != packets.ErrServerShuttingDown.Code {
		t.Fatalf("v5 got %+v", got)
	}
	if got := r3.expectClosed(time.Second); len(got) != 0 {
		t.Fatalf("v3 got %+v", got)
	}
	idle.expectClosed(time.Second)
	if _, err := net.Dial("tcp", b.addr); err == nil {
		t.Fatal("still accepting")
	}
}

func TestWebSocket(t *testing.T) {
	ts := startServer(t, nil, Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/ws/mqtt", ts.s.WebSocketHandler())
	hs := &http.Server{Handler: mux}
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { _ = hs.Close() })
	url := "ws://" + ln.Addr().String() + "/ws/mqtt"

	dial := func(protos ...string) (*websocket.Conn, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: protos})
		return c, err
	}
	wc, err := dial("mqtt")
	if err != nil {
		t.Fatal(err)
	}
	if wc.Subprotocol() != "mqtt" {
		t.Fatalf("subprotocol %q", wc.Subprotocol())
	}
	// paho writes a packet in several Writes, each a WebSocket message: the
	// connection must serialise whole packets (paho's own advice).
	nc := pahopackets.NewThreadSafeConn(websocket.NetConn(context.Background(), wc, websocket.MessageBinary))
	ws := connectV5(t, nc, "ws-client", nil)
	ws.subscribe(paho.SubscribeOptions{Topic: "ws/#", QoS: 1})
	tcp := dialV5(t, ts.addr, "tcp-client", nil)
	tcp.subscribe(paho.SubscribeOptions{Topic: "from-ws", QoS: 2})
	tcp.publish(&paho.Publish{Topic: "ws/in", QoS: 1, Payload: []byte("to ws")})
	if m := ws.next(); string(m.Payload) != "to ws" {
		t.Fatalf("ws got %q", m.Payload)
	}
	ws.publish(&paho.Publish{Topic: "from-ws", QoS: 2, Payload: []byte("from ws")})
	if m := tcp.next(); string(m.Payload) != "from ws" || m.QoS != 2 {
		t.Fatalf("tcp got %q", m.Payload)
	}
	bs := bindSink(t, ts.vhost("/"), "wsq", "ws.#")
	ws.publish(&paho.Publish{Topic: "ws/x", QoS: 1, Payload: []byte("r")})
	if d := bs.next(t); d.Msg.Origin.Protocol != core.ProtoMQTT {
		t.Fatal("bad origin")
	}
	ws.next() // its own subscription matches too

	// Without the mqtt subprotocol the upgrade is refused.
	if c, err := dial(); err == nil {
		_, _, rerr := c.Read(context.Background())
		if websocket.CloseStatus(rerr) != websocket.StatusPolicyViolation {
			t.Fatalf("read: %v", rerr)
		}
	}
}
