package mqtt

import (
	"bytes"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/router/match"
)

func TestTopicMapping(t *testing.T) {
	for _, tc := range []struct{ topic, key string }{
		{"a/b/c", "a.b.c"},
		{"spBv1.0/g/NDATA/n", "spBv1/0.g.NDATA.n"},
		{"/lead", ".lead"},
		{"a//b", "a..b"},
		{"x.y", "x/y"},
	} {
		if got := topicToKey(tc.topic); got != tc.key {
			t.Errorf("topicToKey(%q) = %q, want %q", tc.topic, got, tc.key)
		}
		if got := keyToTopic(tc.key); got != tc.topic {
			t.Errorf("keyToTopic(%q) = %q, want %q", tc.key, got, tc.topic)
		}
	}
	for _, tc := range []struct{ filter, pattern string }{
		{"a/+/c", "a.*.c"},
		{"a/#", "a.#"},
		{"#", "#"},
		{"+", "*"},
		{"spBv1.0/+/NDATA/#", "spBv1/0.*.NDATA.#"},
		{"a.b/c", "a/b.c"},
	} {
		if got := filterToPattern(tc.filter); got != tc.pattern {
			t.Errorf("filterToPattern(%q) = %q, want %q", tc.filter, got, tc.pattern)
		}
	}
	for _, tc := range []struct{ filter, group, inner string }{
		{"$share/g/a/b", "g", "a/b"},
		{"$SHARE/g/#", "g", "#"},
		{"a/b", "", "a/b"},
	} {
		if g, i := splitShared(tc.filter); g != tc.group || i != tc.inner {
			t.Errorf("splitShared(%q) = %q %q", tc.filter, g, i)
		}
	}
	// Queue names stay unambiguous and within limits.
	if subscriptionQueueName("a-b", "c") == subscriptionQueueName("a", "b-c") {
		t.Error("ambiguous queue names")
	}
	long := subscriptionQueueName(strings.Repeat("x", 400), "f")
	if len(long) > core.MaxNameLen || core.ValidateName("queue", long) != nil {
		t.Errorf("long name %q", long)
	}
}

// mqttMatches is a reference MQTT topic filter matcher (no $ rules).
func mqttMatches(topic, filter string) bool {
	t, f := strings.Split(topic, "/"), strings.Split(filter, "/")
	for i, l := range f {
		switch {
		case l == "#":
			return true
		case i >= len(t):
			return false
		case l != "+" && l != t[i]:
			return false
		}
	}
	return len(t) == len(f)
}

// FuzzTopicMapping checks that the translation is reversible and that a
// filter bound as an AMQP pattern matches exactly the topics MQTT says it
// matches (filters with a literal "*" level excepted: AMQP cannot escape
// it).
func FuzzTopicMapping(f *testing.F) {
	for _, s := range [][2]string{
		{"a/b/c", "a/+/c"}, {"spBv1.0/g/NDATA/n", "spBv1.0/g/+/n"}, {"a", "a/#"},
		{"/", "+/+"}, {"a.b", "a/b"}, {"x//y", "x/+/y"}, {"a/b", "#"}, {"a", "+/#"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, topic, filter string) {
		if keyToTopic(topicToKey(topic)) != topic {
			t.Fatalf("not reversible: %q", topic)
		}
		if topic == "" || strings.ContainsAny(topic, "+#") || !mochi.IsValidFilter(filter, false) ||
			mochi.IsSharedFilter(filter) || strings.HasPrefix(topic, "$") {
			return
		}
		for _, l := range strings.Split(filter, "/") {
			if l == "*" || (strings.ContainsAny(l, "+#") && len(l) > 1) {
				return
			}
		}
		m := match.NewTopic[int]()
		m.Add(filterToPattern(filter), 1)
		amqp := false
		m.Match(topicToKey(topic), func(int) { amqp = true })
		if want := mqttMatches(topic, filter); amqp != want {
			t.Fatalf("topic %q filter %q (pattern %q): AMQP match %v, MQTT %v",
				topic, filter, filterToPattern(filter), amqp, want)
		}
	})
}

// FuzzUserProperties decodes arbitrary user properties into headers and
// back: the result is always a valid MQTT string set, and a second trip
// changes nothing.
func FuzzUserProperties(f *testing.F) {
	typed, _ := core.EncodeTyped(core.Table{"n": int32(5), "l": []any{"a", int8(1)}})
	f.Add("k\x01v\x02k\x01w\x02x-amqp-priority\x013\x02" + core.TypedHeaders + "\x01" + typed)
	f.Add("x-amqp-timestamp\x01notanumber\x02a\x01\x00b")
	f.Add(core.TypedHeaders + "\x01{\"a\":{\"A\":[{\"x\":\"AAE=\"}]}}")
	f.Fuzz(func(t *testing.T, s string) {
		var up []packets.UserProperty
		for _, kv := range strings.Split(s, "\x02") {
			k, v, _ := strings.Cut(kv, "\x01")
			if !mqttString(k) || !mqttString(v) {
				return // mochi refuses such a packet before the bridge sees it
			}
			up = append(up, packets.UserProperty{Key: k, Val: v})
		}
		var p1 core.Properties
		h1 := headersFromUser(up, &p1)
		m := &core.Message{Props: p1, Headers: h1}
		out := userProperties(m)
		for _, u := range out {
			if !mqttString(u.Key) || !mqttString(u.Val) {
				t.Fatalf("invalid MQTT string in %q=%q", u.Key, u.Val)
			}
		}
		var p2 core.Properties
		h2 := headersFromUser(out, &p2)
		m2 := &core.Message{Props: p2, Headers: h2}
		out2 := userProperties(m2)
		if !reflect.DeepEqual(out, out2) {
			t.Fatalf("second trip differs:\n%q\n%q", out, out2)
		}
	})
}

// FuzzWire feeds arbitrary bytes, after a valid CONNECT or instead of one,
// to a live server: it must answer or close, never panic, and keep serving.
func FuzzWire(f *testing.F) {
	ts := startServer(f, nil, Options{Anonymous: AnonymousAlways, MaxPacketSize: 4096, ConnectTimeout: time.Second})
	enc := func(v byte, pks ...packets.Packet) []byte {
		var buf bytes.Buffer
		for _, pk := range pks {
			pk.ProtocolVersion = v
			switch pk.FixedHeader.Type {
			case packets.Connect:
				_ = pk.ConnectEncode(&buf)
			case packets.Publish:
				_ = pk.PublishEncode(&buf)
			case packets.Subscribe:
				_ = pk.SubscribeEncode(&buf)
			case packets.Pubrel:
				_ = pk.PubrelEncode(&buf)
			}
		}
		return buf.Bytes()
	}
	connect := func(v byte) packets.Packet {
		return packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect},
			Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 30, ClientIdentifier: "fz"}}
	}
	for _, v := range []byte{4, 5} {
		f.Add(enc(v, connect(v)))
		f.Add(enc(v, connect(v),
			packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 1,
				Filters: packets.Subscriptions{{Filter: "a/#", Qos: 2}, {Filter: "$share/g/b", Qos: 1}}},
			packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 2, Retain: true}, PacketID: 2,
				TopicName: "a/b", Payload: []byte("x"), Properties: packets.Properties{
					ContentType: "t", User: []packets.UserProperty{{Key: core.TypedHeaders, Val: "{"}}}},
			packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, PacketID: 2}))
	}
	f.Add([]byte{0x10, 0xff, 0xff, 0xff, 0xff, 0x7f})
	f.Add([]byte{0x30, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		nc, err := net.Dial("tcp", ts.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		_ = nc.SetDeadline(time.Now().Add(2 * time.Second))
		for len(data) > 0 { // in chunks, as a network delivers them
			n := min(len(data), 7)
			if _, err := nc.Write(data[:n]); err != nil {
				break
			}
			data = data[n:]
		}
		_ = nc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		var buf [4096]byte
		for {
			if _, err := nc.Read(buf[:]); err != nil {
				break
			}
		}
		if n := panics.Load(); n != 0 {
			t.Fatalf("%d panics serving connections", n)
		}
	})
}
