package amqp

import (
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bourse-mq/bourse/auth"
	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/internal/netx"
	"github.com/bourse-mq/bourse/protocols/amqp/wire"
	"github.com/bourse-mq/bourse/router"
)

// conn is one client connection. Its reader goroutine (run) owns the
// handshake, the channel table and every channel's reader-side state; its
// writer goroutine (writeLoop) owns the socket's write side.
type conn struct {
	s          *Server
	nc         net.Conn
	id         core.ConnID
	log        *slog.Logger
	out        *outbound
	fr         *wire.FrameReader
	writerDone chan struct{}

	// Set during the handshake, read-only afterwards.
	user            string
	principal       *auth.Principal // nil until the login succeeded
	vhostName       string
	vhost           *router.VHost
	frameMax        uint32
	channelMax      uint16
	heartbeat       time.Duration
	capBlocked      bool         // connection.blocked
	clientName      string       // connection_name client property
	unregister      func()       // from the broker's connection registry
	nchans          atomic.Int32 // open channels, for the management API
	finishing       atomic.Bool  // the final flush: the writer keeps CloseTimeout's deadline
	capCancelNotify bool         // consumer_cancel_notify

	// Reader-owned.
	chans       []*channel // by channel number; written under cmu
	cmu         sync.Mutex // lets the management API read chans
	cleaned     bool
	clientDone  bool // connection.close(-ok) handled: stop reading
	linger      bool // close the socket gracefully: the peer may still be writing
	deadlineAt  time.Time
	pubScratch  wire.BasicPublish
	ackScratch  wire.BasicAck
	recsScratch []unackRec

	closing       atomic.Bool  // connection.close sent: only close-ok matters now
	closeDeadline atomic.Int64 // unix nanoseconds
	stop          chan struct{}
	stopOnce      sync.Once

	bmu         sync.Mutex // guards the block state; taken before outbound.mu
	opened      bool
	blocked     bool
	notified    bool // connection.blocked was sent
	blockReason string
	unblocked   chan struct{}
}

func newConn(s *Server, nc net.Conn) *conn {
	id := nextConnID()
	return &conn{
		s:          s,
		nc:         nc,
		id:         id,
		log:        s.log.With("conn", uint64(id), "remote", nc.RemoteAddr().String()),
		out:        newOutbound(s.opts.MaxOutboundBytes),
		writerDone: make(chan struct{}),
		stop:       make(chan struct{}),
		frameMax:   s.opts.FrameMax,
		channelMax: s.opts.ChannelMax,
	}
}

// run is the reader goroutine: handshake, then frames until the end.
func (c *conn) run() {
	started := false
	defer func() {
		c.finish(started)
		c.s.untrack(c)
	}()
	_ = c.nc.SetDeadline(time.Now().Add(c.s.opts.HandshakeTimeout))
	var hdr [8]byte
	if _, err := io.ReadFull(c.nc, hdr[:]); err != nil {
		c.log.Debug("no protocol header", "err", err)
		return
	}
	if err := wire.CheckProtocolHeader(hdr[:]); err != nil {
		// AMQP 0-9-1 §4.2.2: answer with the header we speak, then close.
		c.log.Info("refused protocol header", "header", string(hdr[:]))
		_, _ = c.nc.Write(wire.ProtocolHeader)
		c.linger = true
		return
	}
	c.fr = wire.NewFrameReader(c.nc, c.s.opts.FrameMax)
	c.fr.OwnBodies = true
	started = true
	go c.writeLoop()
	if err := c.handshake(); err != nil {
		var ae *amqpError
		var we *wire.Error
		switch {
		case errors.Is(err, errClientClose):
			return
		case errors.As(err, &we):
			c.closeWith(toAMQP(err, nil))
			c.linger = true
			return
		case errors.As(err, &ae):
			c.closeWith(ae)
		default:
			c.log.Debug("handshake ended", "err", err)
			return
		}
	}
	c.loop()
}

// errClientClose reports a connection.close received (and answered)
// during the handshake.
var errClientClose = errors.New("client closed the connection")

// finish tears the connection down: channels first (subscriptions
// cancelled, unacknowledged deliveries requeued), then the broker's
// per-connection state, then the writer, then the socket.
func (c *conn) finish(started bool) {
	c.cleanupChannels()
	if c.principal != nil {
		c.principal.Close()
	}
	if c.unregister != nil {
		c.unregister()
	}
	c.s.b.ConnectionClosed(c.id)
	c.wakeStop()
	if started {
		c.finishing.Store(true)
		_ = c.nc.SetWriteDeadline(time.Now().Add(c.s.opts.CloseTimeout))
		c.out.close()
		<-c.writerDone
	}
	if c.linger {
		lingerClose(c.nc)
		return
	}
	_ = c.nc.Close()
}

// lingerClose half-closes the socket and reads what the peer still sends
// for a moment before closing: closing with unread input makes TCP send a
// reset, which can destroy the connection.close the peer has yet to read.
func lingerClose(nc net.Conn) {
	if cw, ok := nc.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		_ = nc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		_, _ = io.Copy(io.Discard, io.LimitReader(nc, 1<<20))
	}
	_ = nc.Close()
}

func (c *conn) wakeStop() { c.stopOnce.Do(func() { close(c.stop) }) }

// shutdown closes the connection on behalf of Server.Shutdown.
func (c *conn) shutdown() {
	c.bmu.Lock()
	opened := c.opened
	c.bmu.Unlock()
	if !opened {
		_ = c.nc.Close()
		return
	}
	c.closeWith(errorf(wire.ConnectionForced, nil, "broker forced connection closure with reason 'shutdown'"))
}

// closeWith sends connection.close (once) and bounds the wait for
// close-ok. It may be called from any goroutine.
func (c *conn) closeWith(ae *amqpError) {
	deadline := time.Now().Add(c.s.opts.CloseTimeout)
	c.closeDeadline.Store(deadline.UnixNano())
	if !c.closing.CompareAndSwap(false, true) {
		return
	}
	if ae.code == wire.ConnectionForced {
		c.log.Info("closing connection", "code", ae.code, "text", ae.replyText())
	} else {
		c.log.Warn("connection exception", "code", ae.code, "text", ae.replyText(),
			"class", ae.classID, "method", ae.methodID)
	}
	c.out.pushMethod(0, &wire.ConnectionClose{ReplyCode: ae.code, ReplyText: ae.replyText(),
		FailedClassID: ae.classID, FailedMethodID: ae.methodID})
	_ = c.nc.SetReadDeadline(deadline)
	c.wakeStop()
}

// loop reads frames until the connection ends.
func (c *conn) loop() {
	for !c.clientDone {
		if c.closing.Load() {
			c.cleanupChannels()
		}
		if !c.out.waitCtlSpace() {
			return
		}
		c.armDeadline()
		f, err := c.fr.ReadFrame()
		if err != nil {
			c.readFailed(err)
			return
		}
		if c.closing.Load() {
			c.closingFrame(f)
			continue
		}
		if ae := c.dispatch(f); ae != nil {
			c.closeWith(ae)
		}
	}
}

func (c *conn) readFailed(err error) {
	if c.closing.Load() {
		// No close-ok in time, or a broken stream: give up on it.
		c.linger = true
		return
	}
	var we *wire.Error
	switch {
	case errors.As(err, &we):
		// The stream cannot be resynchronised after a framing error: report
		// it and close without waiting for close-ok.
		c.closeWith(toAMQP(err, nil))
		c.linger = true
	case errors.Is(err, os.ErrDeadlineExceeded):
		c.log.Warn("missed heartbeats from client; closing", "heartbeat", c.heartbeat)
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
		c.log.Debug("client closed the socket")
	default:
		c.log.Debug("read failed", "err", err)
	}
}

// armDeadline refreshes the read deadline that detects a silent peer: no
// frame for two heartbeat intervals ends the connection. It is refreshed
// at most every quarter interval to keep timer updates off the hot path.
func (c *conn) armDeadline() {
	if c.heartbeat <= 0 || c.closing.Load() {
		return
	}
	now := time.Now()
	if now.Sub(c.deadlineAt) < c.heartbeat/4 {
		return
	}
	c.deadlineAt = now
	_ = c.nc.SetReadDeadline(now.Add(2 * c.heartbeat))
	if c.closing.Load() {
		// closeWith ran concurrently; its shorter deadline must win.
		_ = c.nc.SetReadDeadline(time.Unix(0, c.closeDeadline.Load()))
	}
}

// closingFrame handles a frame read after connection.close was sent: only
// close-ok (or a crossing close) matters (§4.2.2, connection.close).
func (c *conn) closingFrame(f wire.Frame) {
	if f.Type != wire.FrameMethod || f.Channel != 0 {
		return
	}
	m, err := wire.DecodeMethod(f.Payload)
	if err != nil {
		return
	}
	switch m.(type) {
	case *wire.ConnectionCloseOk:
		c.clientDone = true
	case *wire.ConnectionClose:
		c.out.pushMethod(0, &wire.ConnectionCloseOk{})
		c.clientDone = true
	}
}

func (c *conn) serverProperties() wire.Table {
	caps := wire.Table{}
	for _, k := range []string{"publisher_confirms", "exchange_exchange_bindings", "basic.nack",
		"consumer_cancel_notify", "connection.blocked", "authentication_failure_close",
		"per_consumer_qos", "direct_reply_to"} {
		caps[k] = true
	}
	return wire.Table{
		"product":      "Bourse",
		"version":      c.s.opts.Version,
		"platform":     "Go " + runtime.Version(),
		"copyright":    "The Bourse authors",
		"information":  "Bourse multi-protocol message broker",
		"capabilities": caps,
	}
}

// handshake runs connection.start … connection.open-ok (§2.2.4).
func (c *conn) handshake() error {
	mechs := mechanisms
	certUser, external := "", false
	if c.s.opts.CertLogin {
		if certUser, external = netx.PeerCommonName(c.nc); external {
			mechs = "EXTERNAL " + mechanisms
		}
	}
	c.out.pushMethod(0, &wire.ConnectionStart{VersionMajor: wire.ProtocolMajor, VersionMinor: wire.ProtocolMinor,
		ServerProperties: c.serverProperties(), Mechanisms: mechs, Locales: "en_US"})

	m, err := c.readHandshake()
	if err != nil {
		return err
	}
	so, ok := m.(*wire.ConnectionStartOk)
	if !ok {
		return errorf(wire.CommandInvalid, m, "expected connection.start-ok, got %s", m.Name())
	}
	c.clientName, _ = so.ClientProperties["connection_name"].(string)
	if caps, ok := so.ClientProperties["capabilities"].(wire.Table); ok {
		c.capBlocked, _ = caps["connection.blocked"].(bool)
		c.capCancelNotify, _ = caps["consumer_cancel_notify"].(bool)
	}
	if !supportedMechanism(so.Mechanism, external) {
		return errorf(wire.CommandInvalid, so, "unknown authentication mechanism '%s'", so.Mechanism)
	}
	var p *auth.Principal
	remote := c.nc.RemoteAddr()
	if so.Mechanism == "EXTERNAL" {
		p, err = c.s.opts.Auth.LoginExternal(certUser, remote)
	} else if user, pass, ok := parseSASL(so.Mechanism, so.Response); ok {
		p, err = c.s.opts.Auth.Login(user, pass, remote)
	} else {
		err = core.Errorf(core.AccessRefused, "malformed %s response", so.Mechanism)
	}
	if err != nil {
		// Announced authentication_failure_close: say why before closing.
		// The store logged the failure (rate limited, without secrets).
		if core.KindOf(err) == core.ResourceError {
			return errorf(wire.NotAllowed, so, "%s", err.Error())
		}
		if strings.Contains(err.Error(), "localhost") || strings.Contains(err.Error(), "too many") {
			return errorf(wire.AccessRefused, so, "%s", err.Error())
		}
		return errorf(wire.AccessRefused, so, "Login was refused using authentication mechanism %s. For details see the broker logfile.", so.Mechanism)
	}
	c.principal, c.user = p, p.Name

	hbSecs := uint16(0)
	if hb := c.s.opts.Heartbeat; hb > 0 {
		hbSecs = uint16(min(max(hb/time.Second, 1), 65535))
	}
	c.out.pushMethod(0, &wire.ConnectionTune{ChannelMax: c.s.opts.ChannelMax, FrameMax: c.s.opts.FrameMax, Heartbeat: hbSecs})
	if m, err = c.readHandshake(); err != nil {
		return err
	}
	to, ok := m.(*wire.ConnectionTuneOk)
	if !ok {
		return errorf(wire.CommandInvalid, m, "expected connection.tune-ok, got %s", m.Name())
	}
	if err := c.tune(to); err != nil {
		return err
	}

	if m, err = c.readHandshake(); err != nil {
		return err
	}
	op, ok := m.(*wire.ConnectionOpen)
	if !ok {
		return errorf(wire.CommandInvalid, m, "expected connection.open, got %s", m.Name())
	}
	name := op.VirtualHost
	if name == "" {
		name = c.s.opts.DefaultVHost
	}
	v, err := c.s.b.VHost(name)
	if err != nil {
		return errorf(wire.NotAllowed, op, "vhost '%s' not found", name)
	}
	if err := c.principal.CheckVHost(name); err != nil {
		return errorf(wire.NotAllowed, op, "%s", err.Error())
	}
	c.vhost, c.vhostName = v, name
	_ = c.nc.SetDeadline(time.Time{})

	// opened is set before open-ok goes out: a Shutdown racing with a
	// client that has just seen open-ok must send connection.close, not
	// drop the socket.
	c.bmu.Lock()
	c.opened = true
	c.out.pushMethod(0, &wire.ConnectionOpenOk{})
	if c.blocked && c.capBlocked && !c.notified {
		c.notified = true
		c.out.pushMethod(0, &wire.ConnectionBlocked{Reason: c.blockReason})
	}
	c.bmu.Unlock()
	c.unregister = c.s.b.RegisterConn(router.ConnInfo{
		Name: c.nc.RemoteAddr().String() + " -> " + c.nc.LocalAddr().String(), Protocol: "AMQP 0-9-1",
		Transport: transportOf(c.nc), User: c.user, VHost: name, Peer: c.nc.RemoteAddr().String(),
		Local: c.nc.LocalAddr().String(), ClientID: c.clientName,
	}, func(reason string) {
		c.closeWith(errorf(wire.ConnectionForced, nil, "broker forced connection closure with reason '%s'", reason))
	}, c.stats)
	c.log.Debug("connection opened", "user", c.user, "vhost", name)
	return nil
}

// stats reports the connection's channels to the management API (any
// goroutine).
func (c *conn) stats() router.ConnStats {
	c.cmu.Lock()
	chans := make([]*channel, 0, 4)
	for _, ch := range c.chans {
		if ch != nil {
			chans = append(chans, ch)
		}
	}
	c.cmu.Unlock()
	st := router.ConnStats{Channels: int(c.nchans.Load()), ChannelList: make([]router.ChannelStats, 0, len(chans))}
	st.RecvOct, st.SendOct, _ = netx.ByteCounts(c.nc)
	for _, ch := range chans {
		mode := ch.mode.Load()
		ch.mu.Lock()
		cs := router.ChannelStats{Number: int(ch.id), Consumers: len(ch.consumers), Unacked: ch.unacked.live,
			GlobalPrefetch: ch.gPrefetch, Confirm: mode == modeConfirm, Transactional: mode == modeTx}
		ch.mu.Unlock()
		st.ChannelList = append(st.ChannelList, cs)
	}
	return st
}

// transportOf names a connection's transport for the management API.
func transportOf(nc net.Conn) string {
	if _, ok := nc.(*tls.Conn); ok {
		return "tls"
	}
	return "tcp"
}

// tune checks the client's tune-ok against the server's proposal.
func (c *conn) tune(to *wire.ConnectionTuneOk) error {
	o := &c.s.opts
	switch {
	case to.ChannelMax > o.ChannelMax:
		return errorf(wire.NotAllowed, to, "negotiated channel_max = %d is higher than the maximum allowed value (%d)", to.ChannelMax, o.ChannelMax)
	case to.FrameMax != 0 && to.FrameMax < wire.FrameMinSize:
		return errorf(wire.NotAllowed, to, "frame_max=%d < %d min size", to.FrameMax, wire.FrameMinSize)
	case to.FrameMax > o.FrameMax:
		return errorf(wire.NotAllowed, to, "frame_max=%d > %d max size", to.FrameMax, o.FrameMax)
	}
	c.channelMax = o.ChannelMax
	if to.ChannelMax != 0 {
		c.channelMax = to.ChannelMax
	}
	c.frameMax = o.FrameMax
	if to.FrameMax != 0 {
		c.frameMax = to.FrameMax
	}
	// The client's heartbeat is final: it already picked the lower
	// non-zero value, and 0 turns heartbeats off (as in RabbitMQ).
	c.heartbeat = time.Duration(to.Heartbeat) * time.Second
	c.fr.SetMaxFrame(c.frameMax)
	c.out.setTuning(c.frameMax, c.heartbeat)
	return nil
}

// readHandshake reads the next method frame on channel 0.
func (c *conn) readHandshake() (wire.Method, error) {
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			return nil, err
		}
		switch {
		case f.Type == wire.FrameHeartbeat:
			continue
		case f.Type != wire.FrameMethod:
			return nil, errorf(wire.UnexpectedFrame, nil, "expected a method frame during the handshake, got frame type %d", f.Type)
		case f.Channel != 0 && connectionClass(f.Payload):
			return nil, errConnectionMethodOffChannel0(f.Channel)
		case f.Channel != 0:
			return nil, errorf(wire.ChannelError, nil, "expected channel 0 during the handshake, got channel %d", f.Channel)
		}
		m, err := wire.DecodeMethod(f.Payload)
		if err != nil {
			return nil, toAMQP(err, nil)
		}
		if _, ok := m.(*wire.ConnectionClose); ok {
			c.out.pushMethod(0, &wire.ConnectionCloseOk{})
			return nil, errClientClose
		}
		return m, nil
	}
}

// Block tells the client that the broker is blocking its publishes
// (connection.blocked, when the client announced the capability) and makes
// the reader stop at the next basic.publish until Unblock.
func (c *conn) Block(reason string) {
	c.bmu.Lock()
	defer c.bmu.Unlock()
	if c.blocked {
		return
	}
	c.blocked, c.blockReason = true, reason
	c.unblocked = make(chan struct{})
	if c.opened && c.capBlocked {
		c.notified = true
		c.out.pushMethod(0, &wire.ConnectionBlocked{Reason: reason})
	}
}

// Unblock lifts Block.
func (c *conn) Unblock() {
	c.bmu.Lock()
	defer c.bmu.Unlock()
	if !c.blocked {
		return
	}
	c.blocked = false
	close(c.unblocked)
	if c.notified {
		c.notified = false
		c.out.pushMethod(0, &wire.ConnectionUnblocked{})
	}
}

// waitUnblocked parks the reader while the connection is blocked. While it
// waits nothing is read, so heartbeat monitoring pauses too (as RabbitMQ
// does). It returns false when the connection is closing.
func (c *conn) waitUnblocked() bool {
	c.bmu.Lock()
	if !c.blocked {
		c.bmu.Unlock()
		return true
	}
	ch := c.unblocked
	c.bmu.Unlock()
	c.log.Debug("publisher blocked")
	select {
	case <-ch:
		c.deadlineAt = time.Time{}
		return true
	case <-c.stop:
		return false
	}
}

// dispatch handles one frame of an open connection. It returns a
// connection exception; channel exceptions are handled by the channel.
func (c *conn) dispatch(f wire.Frame) *amqpError {
	switch {
	case f.Type == wire.FrameHeartbeat:
		return nil
	case f.Channel == 0:
		return c.dispatch0(f)
	}
	var ch *channel
	if int(f.Channel) < len(c.chans) {
		ch = c.chans[f.Channel]
	}
	if ch == nil {
		if f.Type != wire.FrameMethod {
			return errorf(wire.ChannelError, nil, "frame of type %d on channel %d, which is not open", f.Type, f.Channel)
		}
		m, err := c.decodeMethod(f.Payload)
		if err != nil {
			return toAMQP(err, nil)
		}
		if m.ClassID() == wire.ClassConnection {
			ae := errConnectionMethodOffChannel0(f.Channel)
			ae.blame(m)
			return ae
		}
		if _, ok := m.(*wire.ChannelOpen); !ok {
			return errorf(wire.ChannelError, m, "expected 'channel.open' on channel %d, got %s", f.Channel, m.Name())
		}
		return c.openChannel(f.Channel, m)
	}
	return ch.frame(f)
}

// connectionClass reports whether a method frame payload belongs to the
// connection class.
func connectionClass(p []byte) bool {
	return len(p) >= 2 && binary.BigEndian.Uint16(p) == wire.ClassConnection
}

// errConnectionMethodOffChannel0 is §4.2.3's answer to a connection-class
// method on another channel than 0: "A peer that receives a non-zero
// channel number for one of these frames MUST signal a connection
// exception with reply code 503 (command invalid)."
func errConnectionMethodOffChannel0(ch uint16) *amqpError {
	return errorf(wire.CommandInvalid, nil, "connection method on channel %d; the connection class uses channel 0", ch)
}

// dispatch0 handles a frame on channel 0, the connection's own.
func (c *conn) dispatch0(f wire.Frame) *amqpError {
	if f.Type != wire.FrameMethod {
		return errorf(wire.UnexpectedFrame, nil, "frame of type %d on channel 0", f.Type)
	}
	m, err := wire.DecodeMethod(f.Payload)
	if err != nil {
		return toAMQP(err, nil)
	}
	switch m := m.(type) {
	case *wire.ConnectionClose:
		c.log.Debug("client closed the connection", "code", m.ReplyCode, "text", m.ReplyText)
		c.cleanupChannels()
		c.out.pushMethod(0, &wire.ConnectionCloseOk{})
		c.clientDone = true
	case *wire.ConnectionCloseOk:
		c.clientDone = true
	case *wire.ConnectionUpdateSecret:
		// Passwords do not expire here; accept the new secret as RabbitMQ
		// does for backends without expiring credentials.
		c.out.pushMethod(0, &wire.ConnectionUpdateSecretOk{})
	default:
		return errorf(wire.CommandInvalid, m, "unexpected method %s on channel 0", m.Name())
	}
	return nil
}

// decodeMethod decodes a method frame payload, reusing the connection's
// structs for the two methods of the publish and ack hot paths. The reused
// values are valid until the next frame.
func (c *conn) decodeMethod(p []byte) (wire.Method, error) {
	if len(p) >= 4 && binary.BigEndian.Uint16(p) == wire.ClassBasic {
		var m wire.Method
		switch binary.BigEndian.Uint16(p[2:]) {
		case 40:
			if decodePublishReusing(&c.pubScratch, p[4:]) {
				return &c.pubScratch, nil
			}
			m = &c.pubScratch
		case 80:
			m = &c.ackScratch
		}
		if m != nil {
			if err := m.DecodeArgs(p[4:]); err != nil {
				return nil, err
			}
			return m, nil
		}
	}
	return wire.DecodeMethod(p)
}

// decodePublishReusing decodes basic.publish arguments (§1.8.3.7: ticket
// short, exchange shortstr, routing-key shortstr, mandatory and immediate
// bits) into m, keeping m's strings when the bytes are the same, so a
// producer that repeats its exchange and routing key costs no string
// allocation per publish. It reports false for anything but a well-formed
// argument list, leaving the decision (and the 502 error) to wire.
func decodePublishReusing(m *wire.BasicPublish, a []byte) bool {
	if len(a) < 3 {
		return false
	}
	ticket := binary.BigEndian.Uint16(a)
	a = a[2:]
	ex, a, ok := shortstrReusing(a, m.Exchange)
	if !ok {
		return false
	}
	key, a, ok := shortstrReusing(a, m.RoutingKey)
	if !ok || len(a) != 1 {
		return false
	}
	m.Ticket, m.Exchange, m.RoutingKey = ticket, ex, key
	m.Mandatory, m.Immediate = a[0]&1 != 0, a[0]&2 != 0
	return true
}

func shortstrReusing(a []byte, prev string) (string, []byte, bool) {
	if len(a) < 1 || len(a) < 1+int(a[0]) {
		return "", nil, false
	}
	b := a[1 : 1+int(a[0])]
	if string(b) == prev { // compiles to a comparison, no allocation
		return prev, a[1+len(b):], true
	}
	return string(b), a[1+len(b):], true
}

// openChannel handles channel.open on a free channel number.
func (c *conn) openChannel(id uint16, m wire.Method) *amqpError {
	if id > c.channelMax {
		return errorf(wire.NotAllowed, m, "channel %d exceeds the negotiated channel_max (%d)", id, c.channelMax)
	}
	if int(id) >= len(c.chans) {
		n := max(int(id)+1, 2*len(c.chans), 8)
		n = min(n, int(c.channelMax)+1)
		chans := make([]*channel, n)
		copy(chans, c.chans)
		c.cmu.Lock()
		c.chans = chans
		c.cmu.Unlock()
	}
	ch := newChannel(c, id)
	c.cmu.Lock()
	c.chans[id] = ch
	c.cmu.Unlock()
	c.s.channels.Add(1)
	c.nchans.Add(1)
	c.out.pushMethod(id, &wire.ChannelOpenOk{})
	return nil
}

// freeChannel releases a channel number after close/close-ok.
func (c *conn) freeChannel(id uint16) {
	if int(id) < len(c.chans) && c.chans[id] != nil {
		c.cmu.Lock()
		c.chans[id] = nil
		c.cmu.Unlock()
		c.s.channels.Add(-1)
		c.nchans.Add(-1)
	}
}

// cleanupChannels tears down every channel (once).
func (c *conn) cleanupChannels() {
	if c.cleaned {
		return
	}
	c.cleaned = true
	for i, ch := range c.chans {
		if ch != nil {
			ch.teardown()
			c.cmu.Lock()
			c.chans[i] = nil
			c.cmu.Unlock()
			c.s.channels.Add(-1)
			c.nchans.Add(-1)
		}
	}
}
