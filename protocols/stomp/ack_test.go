package stomp

import (
	"fmt"
	"strings"
	"testing"
	"time"

	gostomp "github.com/go-stomp/stomp/v3"
	"github.com/go-stomp/stomp/v3/frame"

	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/router"
)

func sendN(t *testing.T, c *gostomp.Conn, dest string, n int) {
	t.Helper()
	for i := 1; i <= n; i++ {
		if err := c.Send(dest, "", []byte(fmt.Sprint(i)), gostomp.SendOpt.Receipt); err != nil {
			t.Fatal(err)
		}
	}
}

// TestAckModes: in client-individual an ACK settles one message; in client
// it settles every earlier one too; what is left unacknowledged when the
// connection goes is redelivered, flagged so.
func TestAckModes(t *testing.T) {
	for _, tc := range []struct {
		mode       gostomp.AckMode
		version    gostomp.Version
		redelivers []string
	}{
		{gostomp.AckClientIndividual, gostomp.V12, []string{"1", "3"}},
		{gostomp.AckClient, gostomp.V12, []string{"3"}},
		{gostomp.AckClientIndividual, gostomp.V11, []string{"1", "3"}},
		{gostomp.AckClient, gostomp.V10, []string{"3"}},
	} {
		t.Run(tc.mode.String()+"-"+string(tc.version), func(t *testing.T) {
			e := start(t, Options{})
			p := e.client()
			sendN(t, p, "/queue/acks", 3)
			c := e.client(gostomp.ConnOpt.AcceptVersion(tc.version))
			opts := []func(*frame.Frame) error{}
			if tc.version != gostomp.V10 {
				opts = append(opts, gostomp.SubscribeOpt.Id("s"))
			}
			sub, err := c.Subscribe("/queue/acks", tc.mode, opts...)
			if err != nil {
				t.Fatal(err)
			}
			var ms []*gostomp.Message
			for range 3 {
				ms = append(ms, recv(t, sub))
			}
			if tc.version == gostomp.V12 && ms[0].Header.Get("ack") == "" {
				t.Fatal("STOMP 1.2 MESSAGEs in client modes carry an ack header")
			}
			if err := c.Ack(ms[1]); err != nil {
				t.Fatal(err)
			}
			if err := c.Disconnect(); err != nil {
				t.Fatal(err)
			}
			c2 := e.client()
			sub2, err := c2.Subscribe("/queue/acks", gostomp.AckAuto)
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range tc.redelivers {
				m := recv(t, sub2)
				if string(m.Body) != want || m.Header.Get("redelivered") != "true" {
					t.Fatalf("got %q redelivered=%s, want %q redelivered", m.Body, m.Header.Get("redelivered"), want)
				}
			}
			noRecv(t, sub2, 50*time.Millisecond)
		})
	}
}

func TestAutoAckAndPrefetch(t *testing.T) {
	e := start(t, Options{})
	p := e.client()
	sendN(t, p, "/queue/pf", 5)
	c := e.client()
	sub, err := c.Subscribe("/queue/pf", gostomp.AckClientIndividual, gostomp.SubscribeOpt.Header("prefetch-count", "2"))
	if err != nil {
		t.Fatal(err)
	}
	m1, m2 := recv(t, sub), recv(t, sub)
	noRecv(t, sub, 100*time.Millisecond) // prefetch 2 reached
	if err := c.Ack(m1); err != nil {
		t.Fatal(err)
	}
	m3 := recv(t, sub)
	if string(m2.Body) != "2" || string(m3.Body) != "3" {
		t.Fatalf("got %q %q", m2.Body, m3.Body)
	}
	// An ACK of an auto-mode delivery is a bad ack id.
	r := e.raw()
	r.connect("1.2")
	sendN(t, p, "/queue/pf-auto", 1)
	r.send("SUBSCRIBE\nid:a\ndestination:/queue/pf-auto\nack:auto\n\n\x00")
	msg := r.expect(frame.MESSAGE)
	if msg.Header.Get("ack") != "" {
		t.Fatal("no ack header in auto mode")
	}
	r.send("ACK\nid:" + msg.Header.Get("message-id") + "\n\n\x00")
	r.expectError("Invalid header")
}

func TestNack(t *testing.T) {
	e := start(t, Options{})
	v := e.vhost()
	if err := v.DeclareExchange(router.ExchangeDecl{ExchangeInfo: router.ExchangeInfo{Name: "dlx", Type: router.Fanout, Durable: true}}); err != nil {
		t.Fatal(err)
	}
	for _, q := range []core.QueueInfo{
		{Name: "work", Durable: true, Args: core.Table{"x-dead-letter-exchange": "dlx"}},
		{Name: "dead", Durable: true},
	} {
		if _, err := v.DeclareQueue(router.QueueDecl{QueueInfo: q}); err != nil {
			t.Fatal(err)
		}
	}
	if err := v.Bind(router.Binding{Source: "dlx", Dest: router.Dest{Kind: router.ToQueue, Name: "dead"}}, 0); err != nil {
		t.Fatal(err)
	}
	c := e.client()
	sendN(t, c, "/amq/queue/work", 1)
	sub, err := c.Subscribe("/amq/queue/work", gostomp.AckClientIndividual)
	if err != nil {
		t.Fatal(err)
	}
	m := recv(t, sub)
	if err := c.Nack(m); err != nil { // requeue defaults to true
		t.Fatal(err)
	}
	m = recv(t, sub)
	if string(m.Body) != "1" || m.Header.Get("redelivered") != "true" {
		t.Fatalf("requeued: got %q redelivered=%s", m.Body, m.Header.Get("redelivered"))
	}
	if err := c.Disconnect(); err != nil { // the message goes back, redelivered
		t.Fatal(err)
	}
	// requeue:false dead-letters through the queue's DLX. go-stomp's Nack
	// takes no headers, so this part speaks raw STOMP.
	r := e.raw()
	r.connect("1.2")
	r.send("SUBSCRIBE\nid:w\ndestination:/amq/queue/work\nack:client-individual\n\n\x00")
	rm := r.expect(frame.MESSAGE)
	r.send("NACK\nid:" + rm.Header.Get("ack") + "\nrequeue:false\nreceipt:n1\n\n\x00")
	r.expect(frame.RECEIPT)
	c = e.client()
	dead, err := c.Subscribe("/amq/queue/dead", gostomp.AckAuto)
	if err != nil {
		t.Fatal(err)
	}
	d := recv(t, dead)
	if string(d.Body) != "1" || d.Header.Get("x-first-death-reason") != "rejected" {
		t.Fatalf("dead-lettered: %q %v", d.Body, d.Header)
	}
	typed, err := core.DecodeTyped(d.Header.Get(core.TypedHeaders))
	if err != nil {
		t.Fatal(err)
	}
	deaths, _ := typed["x-death"].([]any)
	if len(deaths) != 1 || deaths[0].(core.Table)["queue"] != "work" {
		t.Fatalf("x-death %#v", typed["x-death"])
	}
	if d.Destination != "/exchange/dlx/work" { // the DLX, with the original routing key

		t.Fatalf("destination %q", d.Destination)
	}
}

func TestReceiptAfterConfirm(t *testing.T) {
	store := &slowStore{}
	e := start(t, Options{}, router.Options{Messages: store})
	r := e.raw()
	r.connect("1.2")
	r.send("SUBSCRIBE\nid:0\ndestination:/queue/durable\nreceipt:sub\n\n\x00")
	r.expect(frame.RECEIPT)
	r.send("SEND\ndestination:/queue/durable\npersistent:true\nreceipt:p1\n\npersist me\x00")
	waitFor(t, "the persist to start", func() bool { return store.count() == 1 })
	m := r.expect(frame.MESSAGE) // delivered at once; the RECEIPT waits for the disk
	if string(m.Body) != "persist me" || m.Header.Get("persistent") != "true" {
		t.Fatalf("got %q %v", m.Body, m.Header)
	}
	r.quiet(100 * time.Millisecond) // nothing before the store confirms
	store.release(nil)
	if f := r.expect(frame.RECEIPT); f.Header.Get("receipt-id") != "p1" {
		t.Fatalf("receipt-id %q", f.Header.Get("receipt-id"))
	}
	// A transient SEND's receipt is immediate; a failed persist is an ERROR
	// naming the receipt.
	r.send("SEND\ndestination:/queue/durable\nreceipt:t1\n\nx\x00")
	r.expect(frame.MESSAGE)
	r.expect(frame.RECEIPT)
	r.send("SEND\ndestination:/queue/durable\npersistent:true\nreceipt:p2\n\nx\x00")
	r.expect(frame.MESSAGE)
	waitFor(t, "the persist to start", func() bool { return store.count() == 1 })
	store.release(core.Errorf(core.ResourceError, "disk full"))
	if f := r.expectError("resource_error"); f.Header.Get("receipt-id") != "p2" {
		t.Fatalf("ERROR receipt-id %q", f.Header.Get("receipt-id"))
	}
}

func TestDisconnectWaitsForConfirms(t *testing.T) {
	store := &slowStore{}
	e := start(t, Options{}, router.Options{Messages: store})
	r := e.raw()
	r.connect("1.2")
	r.send("SEND\ndestination:/queue/d\npersistent:true\n\nx\x00")
	waitFor(t, "the persist to start", func() bool { return store.count() == 1 })
	r.send("DISCONNECT\nreceipt:bye\n\n\x00")
	r.quiet(100 * time.Millisecond) // nothing before the store confirms
	store.release(nil)
	if f := r.expect(frame.RECEIPT); f.Header.Get("receipt-id") != "bye" {
		t.Fatalf("receipt-id %q", f.Header.Get("receipt-id"))
	}
	r.expectClosed()
}

func TestTransactions(t *testing.T) {
	e := start(t, Options{})
	c := e.client()
	sub, err := c.Subscribe("/queue/tx", gostomp.AckClientIndividual)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := c.BeginWithError()
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Send("/queue/tx", "", []byte("aborted")); err != nil {
		t.Fatal(err)
	}
	if err := tx.Abort(); err != nil {
		t.Fatal(err)
	}
	tx, err = c.BeginWithError()
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"a", "b"} {
		if err := tx.Send("/queue/tx", "", []byte(b)); err != nil {
			t.Fatal(err)
		}
	}
	noRecv(t, sub, 50*time.Millisecond)
	if err := tx.CommitWithReceipt(); err != nil {
		t.Fatal(err)
	}
	ma, mb := recv(t, sub), recv(t, sub)
	if string(ma.Body) != "a" || string(mb.Body) != "b" {
		t.Fatalf("got %q %q", ma.Body, mb.Body)
	}
	// ACKs in an aborted transaction do not happen; committed ones do.
	tx, _ = c.BeginWithError()
	if err := tx.Ack(ma); err != nil {
		t.Fatal(err)
	}
	if err := tx.Abort(); err != nil {
		t.Fatal(err)
	}
	tx, _ = c.BeginWithError()
	if err := tx.Ack(mb); err != nil {
		t.Fatal(err)
	}
	if err := tx.CommitWithReceipt(); err != nil {
		t.Fatal(err)
	}
	if err := c.Disconnect(); err != nil {
		t.Fatal(err)
	}
	c2 := e.client()
	sub2, _ := c2.Subscribe("/queue/tx", gostomp.AckAuto)
	if m := recv(t, sub2); string(m.Body) != "a" {
		t.Fatalf("want only the un-acked 'a' back, got %q", m.Body)
	}
	noRecv(t, sub2, 50*time.Millisecond)

	r := e.raw()
	r.connect("1.2")
	r.send("COMMIT\ntransaction:nope\n\n\x00")
	r.expectError("Bad transaction")
	r = e.raw()
	r.connect("1.2")
	r.send("SEND\ndestination:/queue/tx\ntransaction:nope\n\nx\x00")
	r.expectError("Bad transaction")
}

func TestHeartBeats(t *testing.T) {
	e := start(t, Options{HeartBeatMin: 20 * time.Millisecond, HeartBeatGrace: 50 * time.Millisecond})
	// The client wants a heart-beat every 100ms: the server sends EOLs.
	r := e.raw()
	f := r.connect("1.2", "heart-beat", "0,100")
	if hb := f.Header.Get("heart-beat"); hb != "100,0" {
		t.Fatalf("CONNECTED heart-beat %q", hb)
	}
	_ = r.nc.SetReadDeadline(time.Now().Add(550 * time.Millisecond))
	buf := make([]byte, 64)
	eols := 0
	for {
		n, err := r.nc.Read(buf)
		eols += strings.Count(string(buf[:n]), "\n")
		if err != nil {
			break
		}
	}
	if eols < 3 || eols > 7 {
		t.Fatalf("got %d heart-beats in 550ms at 100ms", eols)
	}
	// The client promises one every 100ms, then goes silent: it is
	// dropped after 2×100ms plus the grace.
	r = e.raw()
	f = r.connect("1.2", "heart-beat", "100,0")
	if hb := f.Header.Get("heart-beat"); hb != "0,100" {
		t.Fatalf("CONNECTED heart-beat %q", hb)
	}
	began := time.Now()
	r.expectError("Heart-beat timeout")
	if d := time.Since(began); d < 200*time.Millisecond || d > 2*time.Second {
		t.Fatalf("dropped after %v", d)
	}
	// A client that keeps sending heart-beats stays.
	r = e.raw()
	r.connect("1.2", "heart-beat", "50,0")
	for range 10 {
		time.Sleep(40 * time.Millisecond)
		r.send("\n")
	}
	r.send("SUBSCRIBE\nid:x\ndestination:/queue/hb\nreceipt:alive\n\n\x00")
	r.expect(frame.RECEIPT)
	// The brief's "heart-beat:0,100 then silent" does not promise anything
	// from the client, so it is not dropped: heart-beats flow one way.
}

func TestConnectTimeout(t *testing.T) {
	e := start(t, Options{ConnectTimeout: 100 * time.Millisecond})
	r := e.raw()
	r.expectClosed()
}

func TestSlowConsumerBackpressure(t *testing.T) {
	e := start(t, Options{MaxOutboundBytes: 8 << 10})
	c := e.client()
	sub, err := c.Subscribe("/queue/bulk", gostomp.AckAuto)
	if err != nil {
		t.Fatal(err)
	}
	p := e.client()
	body := strings.Repeat("x", 1000)
	const n = 500
	go func() {
		for range n {
			if p.Send("/queue/bulk", "", []byte(body)) != nil {
				return
			}
		}
	}()
	for i := range n {
		if i%100 == 0 {
			time.Sleep(20 * time.Millisecond) // a slow reader: the outbound queue fills
		}
		recv(t, sub)
	}
}

func TestSTOMP10WithoutID(t *testing.T) {
	e := start(t, Options{})
	r := e.raw()
	f := r.connect("1.0")
	if f.Header.Get("version") != "1.0" || f.Header.Get("heart-beat") != "" {
		t.Fatalf("CONNECTED %v", f.Header)
	}
	r.send("SUBSCRIBE\ndestination: /queue/old\nack: client\n\n\x00")
	r.send("SEND\ndestination:/queue/old\n\nhello\x00")
	m := r.expect(frame.MESSAGE)
	if string(m.Body) != "hello" || m.Header.Get("subscription") != "/queue/old" {
		t.Fatalf("MESSAGE %v", m.Header)
	}
	r.send("ACK\nmessage-id:" + m.Header.Get("message-id") + "\nreceipt:a\n\n\x00")
	r.expect(frame.RECEIPT)
	r.send("UNSUBSCRIBE\ndestination:/queue/old\nreceipt:u\n\n\x00")
	r.expect(frame.RECEIPT)
	q, _ := e.vhost().Queue("old", 0)
	if st := q.Stats(); st.Ready != 0 || st.Unacked != 0 || st.Acked != 1 {
		t.Fatalf("stats %+v", st)
	}
}
