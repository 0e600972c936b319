package stomp

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	gostomp "github.com/go-stomp/stomp/v3"
	"github.com/go-stomp/stomp/v3/frame"
)

// TestErrorFrames drives bad input over raw sockets: each gets an ERROR
// with a message header and a readable body, then the connection closes.
func TestErrorFrames(t *testing.T) {
	e := start(t, Options{MaxBodyBytes: 1 << 20, MaxHeaders: 50, MaxHeaderBytes: 4096})
	cases := []struct {
		name, frames, message string
		connect               bool
	}{
		{"before CONNECT", "SEND\ndestination:/queue/a\n\nx\x00", "Illegal command", false},
		{"unknown command", "FROB\n\n\x00", "Bad command", true},
		{"server command", "MESSAGE\n\n\x00", "Bad command", true},
		{"lowercase command", "send\n\n\x00", "Malformed frame", true},
		{"missing destination SEND", "SEND\n\nx\x00", "Missing header", true},
		{"missing destination SUBSCRIBE", "SUBSCRIBE\nid:1\n\n\x00", "Missing header", true},
		{"unknown destination", "SEND\ndestination:/bogus/a\n\nx\x00", "Unknown destination", true},
		{"invalid destination", "SEND\ndestination:/queue/\n\nx\x00", "Invalid destination", true},
		{"bad header escape", "SEND\ndestination:/queue/a\nk:a\\tb\n\nx\x00", "Malformed frame", true},
		{"header without colon", "SEND\ndestination:/queue/a\nnocolon\n\nx\x00", "Malformed frame", true},
		{"oversize content-length", "SEND\ndestination:/queue/a\ncontent-length:4294967295\n\n", "Frame too large", true},
		{"oversize body", "SEND\ndestination:/queue/a\n\n" + strings.Repeat("x", 1<<20+1) + "\x00", "Frame too large", true},
		{"too many headers", "SEND\n" + strings.Repeat("h:v\n", 51) + "\n\x00", "Frame too large", true},
		{"headers too long", "SEND\nh:" + strings.Repeat("v", 5000) + "\n\n\x00", "Frame too large", true},
		{"bad content-length", "SEND\ndestination:/queue/a\ncontent-length:12x\n\n", "Malformed frame", true},
		{"missing NUL", "SEND\ndestination:/queue/a\ncontent-length:1\n\nxy", "Malformed frame", true},
		{"bad ack id", "ACK\nid:nonsense\n\n\x00", "Invalid header", true},
		{"ack of unknown subscription", "ACK\nid:T_zz@@session-x@@1\n\n\x00", "Invalid header", true},
		{"ACK without id", "ACK\n\n\x00", "Missing header", true},
		{"unknown unsubscribe", "UNSUBSCRIBE\nid:nope\n\n\x00", "No subscription found", true},
		{"bad ack mode", "SUBSCRIBE\nid:1\ndestination:/queue/a\nack:sometimes\n\n\x00", "Invalid header", true},
		{"duplicate subscription", "SUBSCRIBE\nid:1\ndestination:/queue/a\n\n\x00SUBSCRIBE\nid:1\ndestination:/queue/b\n\n\x00", "Duplicated subscription identifier", true},
		{"temp-queue subscribe", "SUBSCRIBE\nid:1\ndestination:/temp-queue/x\n\n\x00", "Invalid destination", true},
		{"bad priority", "SEND\ndestination:/queue/a\npriority:high\n\nx\x00", "Invalid header", true},
		{"bad expiration", "SEND\ndestination:/queue/a\nexpiration:soon\n\nx\x00", "precondition_failed", true},
		{"spoofed user-id", "SEND\ndestination:/queue/a\nuser-id:admin\n\nx\x00", "precondition_failed", true},
		{"bad typed header", "SEND\ndestination:/queue/a\nx-bourse-typed:{\n\nx\x00", "Invalid header", true},
		{"missing exchange", "SEND\ndestination:/exchange/nope/k\n\nx\x00", "not_found", true},
		{"BEGIN twice", "BEGIN\ntransaction:t\n\n\x00BEGIN\ntransaction:t\n\n\x00", "Bad transaction", true},
		{"ABORT unknown", "ABORT\ntransaction:t\n\n\x00", "Bad transaction", true},
		{"second CONNECT", "CONNECT\naccept-version:1.2\n\n\x00", "Bad CONNECT", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.raw()
			if tc.connect {
				r.connect("1.2")
			}
			began := time.Now()
			r.send(tc.frames)
			f := r.expectError(tc.message)
			if time.Since(began) > 2*time.Second {
				t.Fatalf("ERROR took %v", time.Since(began))
			}
			if f.Header.Get("content-type") != "text/plain" {
				t.Fatalf("headers %v", f.Header)
			}
		})
	}
}

func TestOversizeContentLengthIsNotAllocated(t *testing.T) {
	e := start(t, Options{MaxBodyBytes: 64 << 20})
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range 20 {
		r := e.raw()
		r.connect("1.2")
		// Within the limit, declared but never sent: the connection must
		// not allocate the declared 60 MiB up front.
		r.send("SEND\ndestination:/queue/a\ncontent-length:62914560\n\nonly this")
		r.quiet(20 * time.Millisecond)
		r.nc.Close()
	}
	runtime.ReadMemStats(&after)
	if grown := after.TotalAlloc - before.TotalAlloc; grown > 100<<20 {
		t.Fatalf("20 connections declaring 60 MiB each allocated %d MiB", grown>>20)
	}
}

func TestConnectErrors(t *testing.T) {
	e := start(t, Options{Users: map[string]string{"guest": "guest", "alice": "s3cret"}})
	cases := []struct{ connect, message string }{
		{"CONNECT\naccept-version:1.2\nhost:/\nlogin:alice\npasscode:wrong\n\n\x00", "Access refused"},
		{"CONNECT\naccept-version:1.2\nhost:/\nlogin:mallory\npasscode:x\n\n\x00", "Access refused"},
		{"CONNECT\naccept-version:1.2\nhost:nowhere\n\n\x00", "Bad CONNECT"},
		{"CONNECT\naccept-version:2.0,3.1\n\n\x00", "Version mismatch"},
		{"STOMP\naccept-version:1.2\nheart-beat:fast\n\n\x00", "Invalid heart-beat"},
	}
	for _, tc := range cases {
		r := e.raw()
		r.send(tc.connect)
		f := r.expectError(tc.message)
		if tc.message == "Version mismatch" && f.Header.Get("version") != "1.0,1.1,1.2" {
			t.Fatalf("Version mismatch ERROR should list versions: %v", f.Header)
		}
	}
	// Good logins, the STOMP command, and each version.
	for _, v := range []string{"1.0", "1.1", "1.2", "1.0,1.1", "1.1,1.2,1.0"} {
		r := e.raw()
		r.send("STOMP\naccept-version:" + v + "\nhost:/\nlogin:alice\npasscode:s3cret\n\n\x00")
		f := r.expect(frame.CONNECTED)
		want := v[len(v)-3:]
		if v == "1.1,1.2,1.0" {
			want = "1.2"
		}
		if f.Header.Get("version") != want || !strings.HasPrefix(f.Header.Get("session"), "session-") || f.Header.Get("server") == "" {
			t.Fatalf("accept-version %s: CONNECTED %v", v, f.Header)
		}
	}
	// No accept-version: STOMP 1.0; no login: the default user.
	r := e.raw()
	r.send("CONNECT\n\n\x00")
	if f := r.expect(frame.CONNECTED); f.Header.Get("version") != "1.0" {
		t.Fatalf("CONNECTED %v", f.Header)
	}
	e2 := start(t, Options{RequireLogin: true})
	r = e2.raw()
	r.send("CONNECT\naccept-version:1.2\n\n\x00")
	r.expectError("Access refused")
}

func TestShutdownClosesClients(t *testing.T) {
	e := start(t, Options{})
	c := e.client()
	sub, err := c.Subscribe("/queue/sd", gostomp.AckClientIndividual)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Send("/queue/sd", "", []byte("x"), gostomp.SendOpt.Receipt); err != nil {
		t.Fatal(err)
	}
	recv(t, sub)
	r := e.raw()
	r.connect("1.1")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	r.expectError("Server shutdown")
	// The unacknowledged message went back to its queue.
	q, err := e.vhost().Queue("sd", 0)
	if err != nil {
		t.Fatal(err)
	}
	if st := q.Stats(); st.Ready != 1 || st.Unacked != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestQueueDeletedUnderSubscription(t *testing.T) {
	e := start(t, Options{})
	r := e.raw()
	r.connect("1.2")
	r.send("SUBSCRIBE\nid:s1\ndestination:/queue/doomed\nreceipt:r\n\n\x00")
	r.expect(frame.RECEIPT)
	if _, err := e.vhost().DeleteQueue("doomed", false, false, 0); err != nil {
		t.Fatal(err)
	}
	if f := r.expectError("Server cancelled subscription"); f.Header.Get("subscription") != "s1" {
		t.Fatalf("ERROR %v", f.Header)
	}
}

func TestMaxConnections(t *testing.T) {
	e := start(t, Options{MaxConnections: 1})
	r := e.raw()
	r.connect("1.2")
	r2 := e.raw()
	r2.expectError("Too many connections")
}
