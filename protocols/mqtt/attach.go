package mqtt

import (
	"fmt"
	"sync/atomic"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// establish runs one client through mochi's connection lifecycle in the
// calling goroutine: CONNECT, session, then a packet at a time until the
// connection ends. It does what mochi's EstablishConnection does, through
// mochi's exported API and the bridge (mochi's only hook, so calling it
// directly is calling mochi's hook chain), with two differences that make
// an idle connection cheap:
//
//   - The goroutine waits for the next packet in a shallow frame (readLoop).
//     mochi's own loop waits beneath two live 800-byte packets (the CONNECT
//     in EstablishConnection, the last packet in Client.Read), more than a
//     quarter of a 16 KiB stack, so the runtime could never shrink the stack
//     of an idle connection below 16 KiB. Here each packet is read and
//     handled in a call that returns before the next wait, and the garbage
//     collector shrinks an idle reader's stack to a few KiB.
//   - mochi's writer goroutine (Client.WriteLoop, which drains mochi's
//     outbound channel) starts only for a client subscribed to '$' topics:
//     mochi sends nothing else through it, since every application message
//     reaches clients through the bridge (conn.writeLoop, itself started only
//     while there is something to write).
//
// A panic in the protocol engine ends this connection only.
func (s *Server) establish(c *conn, listener string) (err error) {
	cl := s.mochi.NewClient(&pipe{c: c}, listener, "", false)
	connected := false
	defer func() {
		if r := recover(); r != nil {
			panics.Add(1)
			s.log.Error("panic serving connection", "conn", c.id, "panic", r)
			err = fmt.Errorf("panic: %v", r)
			if connected {
				atomic.AddInt64(&s.mochi.Info.ClientsConnected, -1)
			}
		}
		cl.Stop(nil)
	}()
	if err = s.handshake(c, cl, listener); err != nil {
		return err
	}
	connected = true
	err = s.readLoop(cl)
	connected = false
	s.detach(c, cl, err)
	return err
}

// detach ends a connected client as mochi does once its reader stops.
//
//go:noinline
func (s *Server) detach(c *conn, cl *mochi.Client, err error) {
	atomic.AddInt64(&s.mochi.Info.ClientsConnected, -1)
	if err != nil {
		// mochi would publish the will here; the bridge took it at CONNECT
		// (its flag is cleared) and publishes it itself in OnDisconnect.
		cl.Stop(err)
	} else {
		cl.Properties.Will = mochi.Will{} // [MQTT-3.14.4-3] [MQTT-3.1.2-10]
	}
	expire := (cl.Properties.ProtocolVersion == 5 && cl.Properties.Props.SessionExpiryInterval == 0) ||
		(cl.Properties.ProtocolVersion < 5 && cl.Properties.Clean)
	s.hook.OnDisconnect(cl, err, expire)
	if expire && !c.takenOver.Load() {
		cl.ClearInflights()
		s.mochi.UnsubscribeClient(cl)
		s.mochi.Clients.Delete(cl.ID) // [MQTT-4.1.0-2] ![MQTT-3.1.2-23]
	}
}

// handshake reads and answers the CONNECT and attaches the session. A nil
// error means the client is connected (and counted in ClientsConnected).
// It is a call of its own so that the CONNECT packet is off the stack while
// the connection waits for its next packet.
//
//go:noinline
func (s *Server) handshake(c *conn, cl *mochi.Client, listener string) error {
	m := s.mochi
	pk, err := readConnect(cl)
	if err != nil {
		return err
	}
	cl.ParseConnect(listener, pk)
	if atomic.LoadInt64(&m.Info.ClientsConnected) >= m.Options.Capabilities.MaximumClients {
		code := packets.ErrServerBusy
		if cl.Properties.ProtocolVersion < 5 {
			code = packets.ErrServerUnavailable
		}
		_ = m.SendConnack(cl, code, false, nil)
		return packets.ErrServerBusy
	}
	if code := s.validateConnect(cl, &pk); code != packets.CodeSuccess { // [MQTT-3.1.4-1] [MQTT-3.1.4-2]
		_ = m.SendConnack(cl, code, false, nil)
		return code // [MQTT-3.2.2-7] [MQTT-3.1.4-6]
	}
	if err := s.hook.OnConnect(cl, pk); err != nil {
		return err
	}
	keepalive(cl)
	if !s.hook.OnConnectAuthenticate(cl, pk) { // [MQTT-3.1.4-2]
		_ = m.SendConnack(cl, packets.ErrBadUsernameOrPassword, false, nil)
		return packets.ErrBadUsernameOrPassword
	}
	atomic.AddInt64(&m.Info.ClientsConnected, 1)
	s.hook.OnSessionEstablish(cl, pk)
	present := s.inherit(cl, &pk)
	m.Clients.Add(cl) // [MQTT-4.1.0-1]
	if err := m.SendConnack(cl, packets.CodeSuccess, present, nil); err != nil {
		atomic.AddInt64(&m.Info.ClientsConnected, -1)
		return err
	}
	if present {
		if err := cl.ResendInflightMessages(true); err != nil {
			atomic.AddInt64(&m.Info.ClientsConnected, -1)
			return err
		}
	}
	if present && readsSys(cl) {
		c.startMochiWriter(cl)
	}
	s.hook.OnSessionEstablished(cl, pk)
	return nil
}

// readConnect reads the first packet, which must be a CONNECT.
func readConnect(cl *mochi.Client) (packets.Packet, error) {
	var fh packets.FixedHeader
	if err := cl.ReadFixedHeader(&fh); err != nil {
		return packets.Packet{}, err
	}
	if fh.Type != packets.Connect {
		return packets.Packet{}, packets.ErrProtocolViolationRequireFirstConnect // [MQTT-3.1.0-1]
	}
	return cl.ReadPacket(&fh)
}

// validateConnect is mochi's check of a CONNECT against the server's
// capabilities.
func (s *Server) validateConnect(cl *mochi.Client, pk *packets.Packet) packets.Code {
	if code := pk.ConnectValidate(); code != packets.CodeSuccess {
		return code
	}
	caps := s.mochi.Options.Capabilities
	switch {
	case cl.Properties.ProtocolVersion < 5 && !pk.Connect.Clean && pk.Connect.ClientIdentifier == "":
		return packets.ErrUnspecifiedError
	case cl.Properties.ProtocolVersion < caps.MinimumProtocolVersion:
		return packets.ErrUnsupportedProtocolVersion // [MQTT-3.1.2-2]
	case cl.Properties.Will.Qos > caps.MaximumQos:
		return packets.ErrQosNotSupported // [MQTT-3.2.2-12]
	case cl.Properties.Will.Retain && caps.RetainAvailable == 0:
		return packets.ErrRetainNotSupported // [MQTT-3.2.2-13]
	}
	return packets.CodeSuccess
}

// inherit gives cl the mochi state of a previous client with the same id,
// as mochi does (its subscriptions and in-flight messages, unless either
// side asked for a clean session), and closes that client's connection
// with "session taken over". It reports whether a session is present.
func (s *Server) inherit(cl *mochi.Client, pk *packets.Packet) bool {
	m := s.mochi
	old, ok := m.Clients.Get(cl.ID)
	if !ok {
		if atomic.LoadInt64(&m.Info.ClientsConnected) > atomic.LoadInt64(&m.Info.ClientsMaximum) {
			atomic.AddInt64(&m.Info.ClientsMaximum, 1)
		}
		return false
	}
	oldConn := connOf(old)
	if oldConn != nil {
		// Before it can end: its cleanup must not remove what is now
		// this client's (same id) from mochi's client list and index.
		oldConn.takenOver.Store(true)
	}
	_ = m.DisconnectClient(old, packets.ErrSessionTakenOver)                              // [MQTT-3.1.4-3]
	if pk.Connect.Clean || (old.Properties.Clean && old.Properties.ProtocolVersion < 5) { // [MQTT-3.1.2-4] [MQTT-3.1.4-4]
		m.UnsubscribeClient(old)
		old.ClearInflights()
		return false // [MQTT-3.2.2-3]
	}
	if old.State.Inflight.Len() > 0 { // [MQTT-3.1.2-5]
		cl.State.Inflight = old.State.Inflight.Clone()
		// Receive and send quotas are per network connection.
		cl.State.Inflight.ResetReceiveQuota(int32(m.Options.Capabilities.ReceiveMaximum))
		cl.State.Inflight.ResetSendQuota(int32(cl.Properties.Props.ReceiveMaximum))
	}
	for _, sub := range old.State.Subscriptions.GetAll() {
		if m.Topics.Subscribe(cl.ID, sub) { // [MQTT-3.8.4-3]
			atomic.AddInt64(&m.Info.Subscriptions, 1)
		}
		cl.State.Subscriptions.Add(sub.Filter, sub)
	}
	// The old client keeps nothing, so that a chain of takeovers does not
	// pile up state; the index entries now belong to cl.
	for filter := range old.State.Subscriptions.GetAll() {
		old.State.Subscriptions.Delete(filter)
	}
	old.ClearInflights()
	return true // [MQTT-3.2.2-3]
}

// readLoop reads and handles packets until the connection ends. Between
// packets the goroutine waits for the next fixed header in this frame, with
// nothing else live on its stack.
func (s *Server) readLoop(cl *mochi.Client) error {
	for {
		if cl.Closed() {
			return nil
		}
		keepalive(cl)
		var fh packets.FixedHeader
		if err := cl.ReadFixedHeader(&fh); err != nil {
			return err
		}
		if err := s.handlePacket(cl, &fh); err != nil {
			return err
		}
	}
}

// handlePacket reads the rest of one packet and hands it to mochi, as
// mochi's own reader does; an MQTT 5 client gets a DISCONNECT with the
// reason of an error.
//
//go:noinline
func (s *Server) handlePacket(cl *mochi.Client, fh *packets.FixedHeader) error {
	pk, err := cl.ReadPacket(fh)
	if err != nil {
		return err
	}
	if err := s.mochi.InjectPacket(cl, pk); err != nil {
		if code, ok := err.(packets.Code); ok && cl.Properties.ProtocolVersion == 5 && code.Code >= packets.ErrUnspecifiedError.Code {
			_ = s.mochi.DisconnectClient(cl, code)
		}
		return err
	}
	// InjectPacket counts the packet again; ReadPacket counted it already.
	atomic.AddInt64(&s.mochi.Info.PacketsReceived, -1)
	if fh.Type == packets.Publish {
		atomic.AddInt64(&s.mochi.Info.MessagesReceived, -1)
	}
	return nil
}

// keepalive sets the read deadline of the client's keep-alive: one and a
// half times the interval, none for 0 ([MQTT-3.1.2-22]).
func keepalive(cl *mochi.Client) {
	var deadline time.Time
	if ka := cl.State.Keepalive; ka > 0 {
		deadline = time.Now().Add(time.Duration(ka+ka/2) * time.Second)
	}
	_ = cl.Net.Conn.SetDeadline(deadline)
}

// startMochiWriter starts mochi's writer goroutine, which drains mochi's
// outbound channel, for a client subscribed to $SYS: mochi sends nothing
// else through it. It runs until the client stops.
func (c *conn) startMochiWriter(cl *mochi.Client) {
	if c.mochiWriter.CompareAndSwap(false, true) {
		go cl.WriteLoop()
	}
}

// readsSys reports whether a client has a $SYS subscription (one it
// inherited with its session).
func readsSys(cl *mochi.Client) bool {
	for filter := range cl.State.Subscriptions.GetAll() {
		if _, f := splitShared(filter); isSysFilter(f) {
			return true
		}
	}
	return false
}
