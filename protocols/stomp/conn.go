package stomp

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-stomp/stomp/v3/frame"

	"github.com/bourse-mq/bourse/auth"
	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/internal/netx"
	"github.com/bourse-mq/bourse/protocols/stomp/wire"
	"github.com/bourse-mq/bourse/router"
)

// connSeq numbers connections. Until core provides a broker-wide
// allocator, the protocol number is put in the top byte so that STOMP's
// ConnIDs cannot collide with another adapter's (exclusive queue ownership
// and ConnectionClosed are keyed by ConnID).
var connSeq atomic.Uint64

func nextConnID() core.ConnID {
	return core.ConnID(uint64(core.ProtoSTOMP)<<56 | connSeq.Add(1))
}

// conn is one client connection. Its reader goroutine (serve) reads and
// handles frames in order and owns the session state; its writer goroutine
// (writeLoop) owns the socket's write side. See doc.go for the lock order.
type conn struct {
	s   *Server
	id  core.ConnID
	log *slog.Logger
	t   transport
	rd  *wire.Reader
	out outbound

	start      time.Time
	lastRead   atomic.Int64 // unix ns of the last read that returned data
	writerDone chan struct{}

	// Writer goroutine state.
	wv          wire.Version
	connected   bool
	sendEvery   time.Duration
	recvTimeout time.Duration
	lastWrite   time.Time
	head        []byte

	// Session state, set by CONNECT in the reader goroutine before the
	// CONNECTED frame is queued, and read-only afterwards (the writer reads
	// session when it encodes message-ids).
	version wire.Version
	session string
	user    string
	// principal is the logged-in user, nil before CONNECT; checked on
	// every SEND and SUBSCRIBE.
	principal *auth.Principal
	vh        *router.VHost

	// Reader goroutine state.
	declared map[string]bool          // /queue/ names known to exist
	temp     map[string]*subscription // temp-queue id → its subscription
	txs      map[string]*transaction
	txBytes  int

	mu   sync.Mutex // guards subs: Cancelled arrives on other goroutines
	subs map[string]*subscription

	deliveries atomic.Uint64 // delivery numbers for message-ids
	unregister func()        // from the broker's connection registry
	confirms   pendingConfirms
}

func newConn(s *Server, t transport) *conn {
	c := &conn{
		s:          s,
		id:         nextConnID(),
		t:          t,
		start:      time.Now(),
		writerDone: make(chan struct{}),
		declared:   map[string]bool{},
		temp:       map[string]*subscription{},
		txs:        map[string]*transaction{},
		subs:       map[string]*subscription{},
	}
	c.log = s.log.With("conn", uint64(c.id), "remote", t.remoteAddr())
	c.lastRead.Store(c.start.UnixNano())
	c.rd = wire.NewReader(touchReader{r: t, last: &c.lastRead}, s.opts.limits())
	c.out.init(s.opts.MaxOutboundBytes)
	c.confirms.init()
	return c
}

// serve runs the connection to its end: it starts the writer, reads and
// handles frames, then tears the session down.
func (c *conn) serve() {
	c.log.Debug("stomp connection opened")
	go c.writeLoop()
	last := c.readLoop()
	c.out.finish(last)
	select {
	case <-c.writerDone:
	case <-time.After(c.s.opts.WriteTimeout):
	}
	c.t.Close()
	<-c.writerDone
	c.cleanup()
	c.log.Debug("stomp connection closed")
}

// readLoop reads and handles frames until the connection ends. It returns
// the last frame to write (an ERROR, or DISCONNECT's RECEIPT), if any.
func (c *conn) readLoop() *outItem {
	for {
		c.out.waitSpace()
		f, err := c.rd.Read()
		if err != nil {
			if _, ok := wire.IsDecodeError(err); ok {
				c.log.Info("stomp protocol error", "err", err)
				it := errorItem(toProtoError(err), "")
				return &it
			}
			if errors.Is(err, io.ErrUnexpectedEOF) {
				// The peer ended its stream inside a frame; it may still
				// read (a half-close), so say why the frame was dropped.
				c.log.Info("stomp protocol error", "err", err)
				it := errorItem(protoErr("Malformed frame", "The stream ended inside a frame"), "")
				return &it
			}
			return nil // the peer went away, or the writer closed the socket
		}
		stop, err := c.handle(f)
		if err != nil {
			pe := toProtoError(err)
			c.log.Info("stomp protocol error", "command", f.Command, "err", pe)
			it := errorItem(pe, f.Header.Get(frame.Receipt))
			return &it
		}
		if stop {
			return c.disconnect(f)
		}
	}
}

// handle dispatches one frame. stop is true for DISCONNECT.
func (c *conn) handle(f *frame.Frame) (stop bool, err error) {
	if c.vh == nil {
		switch f.Command {
		case frame.CONNECT, frame.STOMP:
			return false, c.onConnect(f)
		}
		return false, protoErr("Illegal command", "You must log in using CONNECT first")
	}
	switch f.Command {
	case frame.SEND:
		// Flow control: while a memory or disk alarm holds, the reader
		// parks here and reads nothing more from this socket.
		if !c.s.gate.Wait(c.writerDone) {
			return true, nil
		}
		return false, c.onSend(f) // receipts follow confirms
	case frame.COMMIT:
		return false, c.onCommit(f) // likewise
	case frame.DISCONNECT:
		return true, nil
	case frame.SUBSCRIBE:
		err = c.onSubscribe(f)
	case frame.UNSUBSCRIBE:
		err = c.onUnsubscribe(f)
	case frame.ACK:
		err = c.onAck(f, false)
	case frame.NACK:
		err = c.onAck(f, true)
	case frame.BEGIN:
		err = c.onBegin(f)
	case frame.ABORT:
		err = c.onAbort(f)
	case frame.CONNECT, frame.STOMP:
		err = protoErr("Bad CONNECT", "Already connected")
	default:
		err = protoErr("Bad command", "Could not interpret command %s", f.Command)
	}
	if err == nil {
		if r, ok := f.Header.Contains(frame.Receipt); ok {
			c.sendReceipt(r)
		}
	}
	return false, err
}

func (c *conn) sendReceipt(id string) {
	c.out.push(outItem{f: frame.New(frame.RECEIPT, frame.ReceiptId, id), size: 64 + len(id)})
}

// fail ends the connection from any goroutine: the ERROR frame is written
// after what is already queued, then the socket is closed, which ends the
// reader.
func (c *conn) fail(pe *protoError, receipt string) {
	c.log.Info("stomp connection failed", "err", pe)
	c.out.push(errorItem(pe, receipt))
}

// errorItem builds an ERROR frame that closes the connection.
func errorItem(pe *protoError, receipt string) outItem {
	f := frame.New(frame.ERROR, frame.Message, pe.Message)
	if receipt != "" {
		f.Header.Add(frame.ReceiptId, receipt)
	}
	for i := 0; i+1 < len(pe.Headers); i += 2 {
		f.Header.Add(pe.Headers[i], pe.Headers[i+1])
	}
	body := pe.Detail
	if !strings.HasSuffix(body, "\n") {
		body += "\n"
	}
	f.Header.Add(frame.ContentType, "text/plain")
	f.Header.Add(frame.ContentLength, strconv.Itoa(len(body)))
	f.Body = []byte(body)
	return outItem{f: f, close: true, size: 128 + len(body)}
}

// disconnect handles DISCONNECT: with a receipt, it waits until every
// earlier persistent SEND is confirmed, then the RECEIPT is the last frame.
func (c *conn) disconnect(f *frame.Frame) *outItem {
	r, ok := f.Header.Contains(frame.Receipt)
	if !ok {
		return nil
	}
	if !c.confirms.wait(c.s.opts.WriteTimeout) {
		c.log.Warn("stomp DISCONNECT: confirms still pending; sending its RECEIPT anyway")
	}
	return &outItem{f: frame.New(frame.RECEIPT, frame.ReceiptId, r), close: true, size: 64}
}

// cleanup releases everything the session holds: subscriptions are
// cancelled and their unacknowledged messages requeued (redelivered), open
// transactions are dropped, and the router deletes the exclusive queues.
func (c *conn) cleanup() {
	c.mu.Lock()
	subs := c.subs
	c.subs = nil
	c.mu.Unlock()
	for _, s := range subs {
		s.stop()
	}
	c.txs = nil
	if c.unregister != nil {
		c.unregister()
	}
	c.s.b.ConnectionClosed(c.id)
	c.s.forget(c)
	if c.principal != nil {
		c.principal.Close()
	}
}

// onConnect negotiates the version, authenticates, picks the vhost and
// heart-beats, and queues CONNECTED.
func (c *conn) onConnect(f *frame.Frame) error {
	v, ok := negotiateVersion(f.Header.Get(frame.AcceptVersion))
	if !ok {
		pe := protoErr("Version mismatch", "Supported versions are 1.0,1.1,1.2")
		pe.Headers = []string{frame.Version, "1.0,1.1,1.2"}
		return pe
	}
	login, hasLogin := f.Header.Contains(frame.Login)
	pass := f.Header.Get(frame.Passcode)
	remote := netx.TCPAddrString(c.t.remoteAddr())
	var p *auth.Principal
	var err error
	cn, certOK := "", false
	if tt, ok := c.t.(*tcpTransport); ok && !hasLogin && c.s.opts.CertLogin {
		cn, certOK = netx.PeerCommonName(tt.nc)
	}
	switch {
	case certOK:
		login = cn
		p, err = c.s.opts.Auth.LoginExternal(cn, remote)
	case !hasLogin && c.s.opts.RequireLogin:
		return protoErr("Access refused", "A login header is required")
	default:
		if !hasLogin {
			login, pass = c.s.opts.DefaultUser, c.s.opts.DefaultPass
		}
		p, err = c.s.opts.Auth.Login(login, pass, remote)
	}
	if err != nil {
		if core.KindOf(err) == core.ResourceError {
			return protoErr("Connection limit reached", "%s", err.Error())
		}
		if strings.Contains(err.Error(), "localhost") || strings.Contains(err.Error(), "too many") {
			return protoErr("Access refused", "%s", err.Error())
		}
		return protoErr("Access refused", "Access refused for user '%s'", login)
	}
	host := f.Header.Get(frame.Host)
	if host == "" {
		host = c.s.opts.DefaultVHost
	}
	vh, err := c.s.b.VHost(host)
	if err != nil {
		p.Close()
		return &protoError{Message: "Bad CONNECT", Detail: "Virtual host '" + host + "' does not exist", cause: err}
	}
	if err := p.CheckVHost(host); err != nil {
		p.Close()
		return protoErr("Access refused", "%s", err.Error())
	}
	c.principal = p
	var ci connectedInfo
	ci.v = v
	hdr := []string{frame.Version, v.String(), frame.Server, c.s.opts.ServerName}
	if v >= wire.V11 {
		if hb, ok := f.Header.Contains(frame.HeartBeat); ok {
			cx, cy, err := frame.ParseHeartBeat(hb)
			if err != nil {
				return protoErr("Invalid heart-beat", "'%s' is not a valid heart-beat header (want \"<ms>,<ms>\")", hb)
			}
			sx, sy := c.negotiateHeartBeat(cx, cy)
			ci.sendEvery = sx
			if sy > 0 {
				ci.recvTimeout = 2*sy + c.s.opts.HeartBeatGrace
			}
			hdr = append(hdr, frame.HeartBeat, strconv.FormatInt(sx.Milliseconds(), 10)+","+strconv.FormatInt(sy.Milliseconds(), 10))
		} else {
			hdr = append(hdr, frame.HeartBeat, "0,0")
		}
	}
	c.session = newSessionID()
	hdr = append(hdr, frame.Session, c.session)
	c.version, c.user, c.vh = v, login, vh
	c.unregister = c.s.b.RegisterConn(router.ConnInfo{
		Name: c.t.remoteAddr() + " -> " + localAddr(c.t), Protocol: "STOMP " + v.String(), Transport: transportName(c.t),
		User: login, VHost: host, Peer: c.t.remoteAddr(), Local: localAddr(c.t),
	}, func(reason string) {
		c.out.push(errorItem(protoErr("Connection forced", "The broker closed the connection: %s", reason), ""))
	}, func() router.ConnStats {
		st := router.ConnStats{Channels: 1}
		if tt, ok := c.t.(*tcpTransport); ok {
			st.RecvOct, st.SendOct, _ = netx.ByteCounts(tt.nc)
		}
		return st
	})
	c.rd.SetVersion(v)
	c.log = c.log.With("user", login, "vhost", host)
	c.out.push(outItem{f: frame.New(frame.CONNECTED, hdr...), connected: &ci, size: 256})
	return nil
}

// maxHeartBeat bounds negotiated intervals so that timeouts cannot overflow.
const maxHeartBeat = 24 * time.Hour

// negotiateHeartBeat answers a client's "cx,cy" (it can send every cx, it
// wants to receive every cy) with the server's "sx,sy": the server sends
// every sx and expects something every sy, each at least HeartBeatMin and
// zero when the client opted out of that direction.
func (c *conn) negotiateHeartBeat(cx, cy time.Duration) (sx, sy time.Duration) {
	if cy > 0 {
		sx = min(max(cy, c.s.opts.HeartBeatMin), maxHeartBeat)
	}
	if cx > 0 {
		sy = min(max(cx, c.s.opts.HeartBeatMin), maxHeartBeat)
	}
	return sx, sy
}

// negotiateVersion picks the highest version both sides speak. No
// accept-version header means STOMP 1.0.
func negotiateVersion(accept string) (wire.Version, bool) {
	if accept == "" {
		return wire.V10, true
	}
	best, ok := wire.Raw, false
	for _, s := range strings.Split(accept, ",") {
		if v, good := wire.ParseVersion(strings.TrimSpace(s)); good && v >= best {
			best, ok = v, true
		}
	}
	return best, ok
}

func newSessionID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "session-" + base64.RawURLEncoding.EncodeToString(b[:])
}

// pendingConfirms counts publishes whose Confirm has not fired yet, so
// that DISCONNECT's RECEIPT can wait for them.
type pendingConfirms struct {
	mu   sync.Mutex
	n    int
	zero chan struct{} // closed while n == 0
}

func (p *pendingConfirms) init() {
	p.zero = make(chan struct{})
	close(p.zero)
}

func (p *pendingConfirms) add() {
	p.mu.Lock()
	if p.n == 0 {
		p.zero = make(chan struct{})
	}
	p.n++
	p.mu.Unlock()
}

func (p *pendingConfirms) done() {
	p.mu.Lock()
	p.n--
	if p.n == 0 {
		close(p.zero)
	}
	p.mu.Unlock()
}

func (p *pendingConfirms) wait(timeout time.Duration) bool {
	p.mu.Lock()
	ch := p.zero
	p.mu.Unlock()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-ch:
		return true
	case <-t.C:
		return false
	}
}
