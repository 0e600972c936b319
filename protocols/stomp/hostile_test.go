package stomp

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	gostomp "github.com/go-stomp/stomp/v3"
	"github.com/go-stomp/stomp/v3/frame"
	"go.uber.org/goleak"

	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/internal/testkit"
	"github.com/bourse-mq/bourse/router"
)

// The hostile corpus: malformed frames sent over real sockets while a
// well-behaved go-stomp client keeps sending and receiving. Each case must
// get an ERROR frame whose message header says what went wrong, then a
// closed socket; no goroutine may be left behind, and the good client must
// not notice.

type stompCase struct {
	name      string
	version   string // "" sends before CONNECT; otherwise the version to connect with
	send      string
	halfClose bool   // end the client's side of the stream after sending
	message   string // what the ERROR's message header must contain
}

func TestHostileSTOMP(t *testing.T) {
	e := start(t, Options{MaxBodyBytes: 1 << 16, MaxHeaders: 32, MaxHeaderBytes: 2048})
	good := startGoodSTOMP(t, e)
	base := goleak.IgnoreCurrent()

	for _, tc := range hostileSTOMPCases() {
		t.Run(tc.name, func(t *testing.T) {
			r := e.raw()
			r.t = t
			t.Cleanup(func() { _ = r.nc.Close() })
			if tc.version != "" {
				r.connect(tc.version)
			}
			began := time.Now()
			r.send(tc.send)
			if tc.halfClose {
				if err := r.nc.(*net.TCPConn).CloseWrite(); err != nil {
					t.Fatal(err)
				}
			}
			r.expectError(tc.message)
			if d := time.Since(began); d > 3*time.Second {
				t.Errorf("the ERROR took %v", d)
			}
			_ = r.nc.Close()
			good.VerifyNoLeak(t, base)
			good.Check(t)
		})
	}
	// Nothing a hostile frame named was created.
	for _, q := range e.vhost().Queues() {
		if strings.Contains(q.Name(), "evil") {
			t.Errorf("queue %q was declared by a refused frame", q.Name())
		}
	}
}

func hostileSTOMPCases() []stompCase {
	const send = "SEND\ndestination:/queue/hs\n"
	return []stompCase{
		// Header injection: a raw LF ends the header line, so whatever
		// follows is a header line of its own (refused without a colon); a
		// NUL cannot hide a second frame inside a header.
		{"injection/raw LF in a value", "1.2", send + "x-note:first line\nsecond line\n\nbody\x00", false, "Malformed frame"},
		{"injection/raw LF in a value 1.0", "1.0", send + "x-note:first line\nsecond line\n\nbody\x00", false, "Malformed frame"},
		{"injection/NUL in a value", "1.2", "SEND\ndestination:/queue/hs\x00SEND\ndestination:/queue/evil\n\nbody\x00", false, "Malformed frame"},
		{"injection/NUL in a name", "1.1", "SEND\ndestination:/queue/hs\nx\x00y:z\n\nbody\x00", false, "Malformed frame"},
		{"injection/NUL in a CONNECT header", "", "CONNECT\naccept-version:1.2\nlogin:guest\x00SEND\n\n\x00", false, "Malformed frame"},
		{"injection/CR LF CR in 1.2", "1.2", send + "x-note:a\r\r\nb\n\nbody\x00", false, "Malformed frame"},

		// Escapes (STOMP 1.1 and 1.2 "Value Encoding").
		{"escape/\\t in 1.2", "1.2", send + "k:a\\tb\n\nx\x00", false, "Malformed frame"},
		{"escape/\\r in 1.1", "1.1", send + "k:a\\rb\n\nx\x00", false, "Malformed frame"},
		{"escape/incomplete at the end", "1.2", send + "k:ab\\\n\nx\x00", false, "Malformed frame"},
		{"escape/in a header name", "1.2", send + "k\\x:v\n\nx\x00", false, "Malformed frame"},

		// Lengths and limits, checked before anything is allocated.
		{"length/content-length beyond the body", "1.2", send + "content-length:10\n\nshort\x00SEND\ndestination:/queue/evil\n\nmore\x00", false, "Malformed frame"},
		{"length/content-length 2^32", "1.2", send + "content-length:4294967296\n\n", false, "Frame too large"},
		{"length/content-length 20 digits", "1.2", send + "content-length:99999999999999999999\n\n", false, "Frame too large"},
		{"length/negative content-length", "1.2", send + "content-length:-1\n\nx\x00", false, "Malformed frame"},
		{"length/content-length with spaces", "1.2", send + "content-length: 1\n\nx\x00", false, "Malformed frame"},
		{"length/body above the limit", "1.2", send + "\n" + strings.Repeat("x", 1<<16+1) + "\x00", false, "Frame too large"},
		{"length/body above the limit, no NUL", "1.2", send + "\n" + strings.Repeat("x", 1<<17), false, "Frame too large"},
		{"length/headers above the limit", "1.2", send + "h:" + strings.Repeat("v", 4096) + "\n\n\x00", false, "Frame too large"},
		{"length/one long command line", "1.2", strings.Repeat("S", 8192), false, "Malformed frame"},
		{"length/one long header line", "1.2", send + "h:" + strings.Repeat("v", 3000), false, "Frame too large"},
		{"length/too many headers", "1.2", send + strings.Repeat("h:v\n", 33) + "\n\x00", false, "Frame too large"},
		{"length/too many headers before CONNECT", "", "CONNECT\n" + strings.Repeat("h:v\n", 33) + "\n\x00", false, "Frame too large"},

		// Truncated streams.
		{"truncated/no NUL before EOF", "1.2", send + "\nbody", true, "Malformed frame"},
		{"truncated/content-length then EOF", "1.2", send + "content-length:100\n\nshort\x00", true, "Malformed frame"},
		{"truncated/inside the headers", "1.2", send + "x-note:va", true, "Malformed frame"},
		{"truncated/CONNECT", "", "CONNECT\naccept-version:1.2\n", true, "Malformed frame"},

		// Commands and required headers.
		{"command/unknown", "1.2", "FROB\n\n\x00", false, "Bad command"},
		{"command/server command", "1.2", "CONNECTED\nversion:1.2\n\n\x00", false, "Bad command"},
		{"command/lowercase", "1.2", "send\ndestination:/queue/hs\n\nx\x00", false, "Malformed frame"},
		{"command/with trailing space", "1.2", "SEND \ndestination:/queue/hs\n\nx\x00", false, "Malformed frame"},
		{"command/before CONNECT", "", send + "\nx\x00", false, "Illegal command"},
		{"command/second CONNECT", "1.2", "CONNECT\naccept-version:1.2\n\n\x00", false, "Bad CONNECT"},
		{"header/SEND without destination", "1.2", "SEND\n\nx\x00", false, "Missing header"},
		{"header/SEND with empty destination", "1.2", "SEND\ndestination:\n\nx\x00", false, "destination"},
		{"header/SUBSCRIBE without destination", "1.2", "SUBSCRIBE\nid:1\n\n\x00", false, "Missing header"},
		{"header/ACK without id", "1.2", "ACK\n\n\x00", false, "Missing header"},
		{"header/empty name", "1.2", send + ":v\n\nx\x00", false, "Malformed frame"},
		{"header/line without colon", "1.2", send + "nocolon\n\nx\x00", false, "Malformed frame"},
		{"header/bad heart-beat", "", "CONNECT\naccept-version:1.2\nheart-beat:1,x\n\n\x00", false, "Invalid heart-beat"},
		{"header/unknown version", "", "CONNECT\naccept-version:9.9\n\n\x00", false, "Version mismatch"},

		// Non-UTF-8 (headers are UTF-8 in STOMP 1.1 and 1.2; bodies are
		// octets).
		{"utf-8/destination", "1.2", "SEND\ndestination:/queue/\xff\xfe\n\nx\x00", false, "Malformed frame"},
		{"utf-8/header value", "1.2", send + "x-note:\xc3\x28\n\nx\x00", false, "Malformed frame"},
		{"utf-8/header name", "1.1", send + "\xed\xa0\x80:v\n\nx\x00", false, "Malformed frame"},
		{"utf-8/destination in 1.0", "1.0", "SEND\ndestination:/queue/\xff\xfe\n\nx\x00", false, "precondition_failed"},
		{"utf-8/command", "1.2", "SE\xffND\n\n\x00", false, "Malformed frame"},
		{"binary/garbage", "", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", false, "Malformed frame"},
		{"binary/http", "", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", false, "Malformed frame"},
	}
}

// startGoodSTOMP starts the well-behaved go-stomp client that sends and
// receives throughout the hostile corpus.
func startGoodSTOMP(t *testing.T, e *env) *testkit.Live {
	t.Helper()
	c := e.client()
	sub, err := c.Subscribe("/queue/hostile-good", gostomp.AckAuto)
	if err != nil {
		t.Fatal(err)
	}
	return testkit.StartLive(t, func(i int) error {
		body := fmt.Sprint(i)
		if err := c.Send("/queue/hostile-good", "text/plain", []byte(body)); err != nil {
			return fmt.Errorf("send: %w", err)
		}
		select {
		case m, ok := <-sub.C:
			if !ok || m.Err != nil || string(m.Body) != body {
				return fmt.Errorf("round %d: got %v (open %v)", i, m, ok)
			}
		case <-time.After(5 * time.Second):
			return fmt.Errorf("round %d: no message within 5s", i)
		}
		return nil
	})
}

// TestHostileSTOMPHeaderInjection: what a hostile header carries never
// makes the broker act on it, and never reaches a subscriber as a header
// (or a frame) of its own.
func TestHostileSTOMPHeaderInjection(t *testing.T) {
	e := start(t, Options{})
	destinations := func(f *frame.Frame) []string {
		var ds []string
		for i := 0; i < f.Header.Len(); i++ {
			if k, v := f.Header.GetAt(i); k == frame.Destination {
				ds = append(ds, v)
			}
		}
		return ds
	}
	sub := func(version, dest string) *raw {
		r := e.raw()
		r.connect(version)
		r.send("SUBSCRIBE\nid:s1\ndestination:" + dest + "\nreceipt:sub\n\n\x00")
		r.expect(frame.RECEIPT)
		return r
	}
	s12 := sub("1.2", "/queue/hs-inj")
	s10 := sub("1.0", "/queue/hs-inj10")
	st := sub("1.2", "/topic/#")

	// A repeated destination (what a raw LF in an application's header
	// value turns into) and an escaped LF that spells another destination.
	p := e.raw()
	p.connect("1.2")
	for _, q := range []string{"hs-inj", "hs-inj10"} {
		p.send("SEND\ndestination:/queue/" + q + "\ndestination:/queue/evil-dup\n" +
			"x-note:a\\ndestination\\c/queue/evil-esc\nreceipt:r\n\nbody\x00")
		p.expect(frame.RECEIPT)
	}
	m := s12.expect(frame.MESSAGE)
	if ds := destinations(m); len(ds) != 1 || ds[0] != "/queue/hs-inj" {
		t.Fatalf("1.2 MESSAGE destinations %q", ds)
	}
	if got := m.Header.Get("x-note"); got != "a\ndestination:/queue/evil-esc" {
		t.Fatalf("x-note %q", got)
	}
	m = s10.expect(frame.MESSAGE)
	if ds := destinations(m); len(ds) != 1 || ds[0] != "/queue/hs-inj10" {
		t.Fatalf("1.0 MESSAGE destinations %q (headers %v)", ds, m.Header)
	}

	// From another protocol: NUL and LF in header values and in the
	// routing key that becomes a /topic destination.
	evil := "a\x00MESSAGE\ndestination:/queue/evil-nul\n\n"
	if _, err := e.vhost().Publish(&core.Message{Exchange: "amq.topic", RoutingKey: "k\x00x",
		Headers: core.Table{"x-evil": evil, "x\x00name": "v"}, Body: []byte("x")}, router.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	// The raw client's reader refuses NUL in headers: reading the frame
	// at all shows that none was written.
	m = st.expect(frame.MESSAGE)
	if ds := destinations(m); len(ds) != 1 || ds[0] != "/topic/k%00x" {
		t.Fatalf("topic MESSAGE destinations %q", ds)
	}
	if m.Header.Get("x-evil") != "" {
		t.Fatalf("x-evil written as a header: %q", m.Header.Get("x-evil"))
	}
	typed, err := core.DecodeTyped(m.Header.Get(core.TypedHeaders))
	if err != nil || typed["x-evil"] != evil {
		t.Fatalf("x-evil not carried in %s: %v %v", core.TypedHeaders, typed, err)
	}

	for _, q := range e.vhost().Queues() {
		if strings.Contains(q.Name(), "evil") {
			t.Errorf("queue %q was declared from an injected header", q.Name())
		}
	}
}
