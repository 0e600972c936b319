package stomp

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

func wsDial(t *testing.T, url string, subprotocols ...string) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: subprotocols})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.CloseNow() })
	return c
}

func wsRead(t *testing.T, c *websocket.Conn) (websocket.MessageType, string) {
	t.Helper()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		typ, b, err := c.Read(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if string(b) == "\n" {
			continue // heart-beat
		}
		return typ, string(b)
	}
}

func wsWrite(t *testing.T, c *websocket.Conn, typ websocket.MessageType, s string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Write(ctx, typ, []byte(s)); err != nil {
		t.Fatal(err)
	}
}

func TestWebSocket(t *testing.T) {
	e := start(t, Options{})
	hs := httptest.NewServer(e.srv.WebSocketHandler())
	t.Cleanup(hs.Close)
	url := "ws" + strings.TrimPrefix(hs.URL, "http")

	c := wsDial(t, url, "v12.stomp")
	if c.Subprotocol() != "v12.stomp" {
		t.Fatalf("subprotocol %q", c.Subprotocol())
	}
	wsWrite(t, c, websocket.MessageText, "CONNECT\naccept-version:1.2\nhost:/\n\n\x00")
	typ, msg := wsRead(t, c)
	if typ != websocket.MessageText || !strings.HasPrefix(msg, "CONNECTED\n") || !strings.HasSuffix(msg, "\x00") {
		t.Fatalf("got %v %q", typ, msg)
	}
	// Two frames in one message.
	wsWrite(t, c, websocket.MessageText, "SUBSCRIBE\nid:0\ndestination:/queue/ws\n\n\x00SEND\ndestination:/queue/ws\n\nhello ws\x00")
	_, msg = wsRead(t, c)
	if !strings.HasPrefix(msg, "MESSAGE\n") || !strings.Contains(msg, "\n\nhello ws\x00") || strings.Count(msg, "\x00") != 1 {
		t.Fatalf("got %q", msg)
	}
	// One frame across two binary messages, and a RECEIPT as its own
	// message.
	wsWrite(t, c, websocket.MessageBinary, "SEND\ndestination:/queue/ws\ncontent-length:5\nreceipt:r1\n\nsp")
	wsWrite(t, c, websocket.MessageBinary, "lit\x00\n")
	got := map[string]bool{}
	for range 2 {
		_, msg = wsRead(t, c)
		got[msg[:strings.IndexByte(msg, '\n')]] = true
		if strings.HasPrefix(msg, "MESSAGE") && !strings.HasSuffix(msg, "\n\nsplit\x00") {
			t.Fatalf("got %q", msg)
		}
	}
	if !got["MESSAGE"] || !got["RECEIPT"] {
		t.Fatalf("got %v", got)
	}
	wsWrite(t, c, websocket.MessageText, "DISCONNECT\nreceipt:bye\n\n\x00")
	if _, msg = wsRead(t, c); !strings.HasPrefix(msg, "RECEIPT\nreceipt-id:bye\n") {
		t.Fatalf("got %q", msg)
	}

	// No subprotocol works too, and errors close the socket after ERROR.
	c2 := wsDial(t, url)
	wsWrite(t, c2, websocket.MessageText, "CONNECT\naccept-version:1.1\nhost:/\n\n\x00")
	if _, msg = wsRead(t, c2); !strings.HasPrefix(msg, "CONNECTED\n") {
		t.Fatalf("got %q", msg)
	}
	wsWrite(t, c2, websocket.MessageText, "FROB\n\n\x00")
	if _, msg = wsRead(t, c2); !strings.HasPrefix(msg, "ERROR\nmessage:Bad command\n") {
		t.Fatalf("got %q", msg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, _, err := c2.Read(ctx); err == nil {
		t.Fatal("want the socket closed after ERROR")
	}
}
