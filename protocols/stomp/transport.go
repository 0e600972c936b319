package stomp

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// transport is a connection's byte stream: a TCP socket, or a WebSocket
// whose messages, of either type, are read as one stream (a frame may span
// messages and a message may hold several frames). Read is used by the
// reader goroutine only; the write methods by the writer goroutine only;
// Close by either, any number of times.
type transport interface {
	io.Reader
	// writeFrame writes head, body and the NUL that ends a frame. TCP
	// buffers it; WebSocket sends it as one message.
	writeFrame(head, body []byte) error
	heartbeat() error
	flush() error
	setWriteDeadline(t time.Time)
	Close() error
	remoteAddr() string
}

// touchReader records the time of every read that returned data: any
// bytes from the client count as a heart-beat.
type touchReader struct {
	r    io.Reader
	last *atomic.Int64
}

func (t touchReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if n > 0 {
		t.last.Store(time.Now().UnixNano())
	}
	return n, err
}

type tcpTransport struct {
	nc        net.Conn
	bw        *bufio.Writer
	closeOnce sync.Once
}

func newTCPTransport(nc net.Conn) *tcpTransport {
	return &tcpTransport{nc: nc, bw: bufio.NewWriterSize(nc, 32<<10)}
}

func (t *tcpTransport) Read(p []byte) (int, error) { return t.nc.Read(p) }

func (t *tcpTransport) writeFrame(head, body []byte) error {
	if _, err := t.bw.Write(head); err != nil {
		return err
	}
	if _, err := t.bw.Write(body); err != nil {
		return err
	}
	return t.bw.WriteByte(0)
}

func (t *tcpTransport) heartbeat() error {
	if err := t.bw.WriteByte('\n'); err != nil {
		return err
	}
	return t.bw.Flush()
}

func (t *tcpTransport) flush() error                 { return t.bw.Flush() }
func (t *tcpTransport) setWriteDeadline(d time.Time) { _ = t.nc.SetWriteDeadline(d) }
func (t *tcpTransport) remoteAddr() string           { return t.nc.RemoteAddr().String() }

func (t *tcpTransport) Close() error {
	var err error
	t.closeOnce.Do(func() { err = t.nc.Close() })
	return err
}

// wsTransport carries STOMP over a WebSocket. Incoming text and binary
// messages are concatenated into one byte stream; each outgoing frame and
// each heart-beat is one message of type typ.
type wsTransport struct {
	c      *websocket.Conn
	typ    websocket.MessageType
	ctx    context.Context
	cancel context.CancelFunc
	addr   string

	r io.Reader // the message being read

	deadline time.Time
	buf      []byte

	closeOnce sync.Once
}

func newWSTransport(c *websocket.Conn, typ websocket.MessageType, addr string) *wsTransport {
	ctx, cancel := context.WithCancel(context.Background())
	return &wsTransport{c: c, typ: typ, ctx: ctx, cancel: cancel, addr: addr}
}

func (t *wsTransport) Read(p []byte) (int, error) {
	for {
		if t.r == nil {
			_, r, err := t.c.Reader(t.ctx)
			if err != nil {
				switch websocket.CloseStatus(err) {
				case websocket.StatusNormalClosure, websocket.StatusGoingAway:
					return 0, io.EOF
				}
				return 0, err
			}
			t.r = r
		}
		n, err := t.r.Read(p)
		if errors.Is(err, io.EOF) {
			t.r = nil
			if n == 0 {
				continue
			}
			err = nil
		}
		return n, err
	}
}

func (t *wsTransport) write(b []byte) error {
	ctx, cancel := context.WithDeadline(t.ctx, t.deadline)
	defer cancel()
	return t.c.Write(ctx, t.typ, b)
}

func (t *wsTransport) writeFrame(head, body []byte) error {
	t.buf = append(append(append(t.buf[:0], head...), body...), 0)
	err := t.write(t.buf)
	if cap(t.buf) > 1<<20 {
		t.buf = nil // do not pin one large message's buffer
	}
	return err
}

func (t *wsTransport) heartbeat() error             { return t.write([]byte{'\n'}) }
func (t *wsTransport) flush() error                 { return nil }
func (t *wsTransport) setWriteDeadline(d time.Time) { t.deadline = d }
func (t *wsTransport) remoteAddr() string           { return t.addr }

func (t *wsTransport) Close() error {
	t.closeOnce.Do(func() {
		t.cancel()
		_ = t.c.CloseNow()
	})
	return nil
}

// transportName names a transport for the management API.
func transportName(t transport) string {
	if tt, ok := t.(*tcpTransport); ok {
		if _, tls := tt.nc.(*tls.Conn); tls {
			return "tls"
		}
		return "tcp"
	}
	return "websocket"
}

// localAddr is the broker's end of a TCP transport ("" for WebSocket).
func localAddr(t transport) string {
	if tt, ok := t.(*tcpTransport); ok {
		return tt.nc.LocalAddr().String()
	}
	return ""
}
