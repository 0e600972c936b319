package mqtt

import (
	"errors"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/bourse-mq/bourse/auth"
	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/internal/netx"
	"github.com/bourse-mq/bourse/router"
)

// bridge is the mochi hook through which Bourse takes over everything that
// touches messages: authentication, publishes (routed, acknowledged on
// confirm), subscriptions (router queues), acknowledgements of deliveries,
// wills and session lifecycle. mochi keeps the MQTT protocol: decoding,
// validation, keep-alive, topic aliases, packet ids, QoS 2 handshakes,
// SUBACK/UNSUBACK codes and $SYS.
//
// Every hook runs in the connection's reader goroutine, except
// OnPacketSent/OnPacketEncode (whichever goroutine writes) and
// OnClientExpired (mochi's event loop).
type bridge struct {
	mochi.HookBase
	s *Server
}

func (h *bridge) ID() string { return "bourse-bridge" }

func (h *bridge) Provides(b byte) bool {
	switch b {
	case mochi.OnConnect, mochi.OnConnectAuthenticate, mochi.OnACLCheck,
		mochi.OnSessionEstablish, mochi.OnSessionEstablished, mochi.OnDisconnect,
		mochi.OnPacketRead, mochi.OnPacketEncode, mochi.OnPacketSent, mochi.OnPacketProcessed,
		mochi.OnSubscribe, mochi.OnSubscribed, mochi.OnUnsubscribed,
		mochi.OnPublish, mochi.OnClientExpired, mochi.StoredClients:
		return true
	}
	return false
}

// OnConnect records the CONNECT's facts. The will is taken from mochi
// (whose Will keeps only user properties) so that the bridge publishes it
// through the router with all its properties.
func (h *bridge) OnConnect(cl *mochi.Client, pk packets.Packet) error {
	c := connOf(cl)
	if c == nil {
		return nil
	}
	if code := checkConnect(pk); code != nil {
		// MQTT 5 may be told why before the close (§4.13.1); MQTT 3.1.1
		// has no return code for these and just closes.
		if cl.Properties.ProtocolVersion == 5 {
			_ = h.s.mochi.SendConnack(cl, *code, false, nil)
		}
		return *code
	}
	c.cl.Store(cl)
	c.mu.Lock()
	c.v5 = cl.Properties.ProtocolVersion == 5
	c.mu.Unlock()
	c.clientID = cl.ID
	if pk.Connect.WillFlag {
		w := &inbound{
			topic:   pk.Connect.WillTopic,
			payload: pk.Connect.WillPayload,
			qos:     pk.Connect.WillQos,
			retain:  pk.Connect.WillRetain,
		}
		if c.v5 {
			wp := pk.Connect.WillProperties
			w.props = &wp
			c.willWait = time.Duration(wp.WillDelayInterval) * time.Second
		}
		c.will = w
		atomic.StoreUint32(&cl.Properties.Will.Flag, 0)
	}
	return nil
}

func (h *bridge) OnConnectAuthenticate(cl *mochi.Client, pk packets.Packet) bool {
	c := connOf(cl)
	return c != nil && h.s.authenticate(c, cl, pk)
}

// OnACLCheck authorizes a PUBLISH (write) or a SUBSCRIBE filter (read)
// against the user's permissions; mochi answers a refusal with reason 0x87
// (PUBACK/PUBREC or SUBACK; MQTT 3 clients get SUBACK 0x80, and a refused
// QoS 1/2 PUBLISH closes their connection, as MQTT 3 has no negative ack).
func (h *bridge) OnACLCheck(cl *mochi.Client, topic string, write bool) bool {
	c := connOf(cl)
	if c == nil || c.principal == nil {
		return c == nil // mochi's own inline client
	}
	err := c.authorize(topic, write)
	if err != nil {
		h.s.log.Info("MQTT operation refused", "conn", c.id, "user", c.user, "err", err)
	}
	return err == nil
}

// authorize checks one topic name (write) or filter (read).
func (c *conn) authorize(topic string, write bool) error {
	p, vhost := c.principal, c.vhost.Name()
	if p.Unrestricted() {
		return nil
	}
	if write {
		if err := p.Check(vhost, auth.Exchange, router.AMQTopic, auth.Write); err != nil {
			return err
		}
		return p.CheckTopic(vhost, router.AMQTopic, topicToKey(topic), auth.Write, c.clientID)
	}
	if name, _, ok, _ := parseStreamFilter(topic, time.Now()); ok && name != "" {
		return p.Check(vhost, auth.Queue, name, auth.Read)
	}
	_, topic = splitShared(topic)
	if err := p.Check(vhost, auth.Exchange, router.AMQTopic, auth.Read); err != nil {
		return err
	}
	return p.CheckTopic(vhost, router.AMQTopic, filterToPattern(topic), auth.Read, c.clientID)
}

func (h *bridge) OnSessionEstablish(cl *mochi.Client, pk packets.Packet) {
	if c := connOf(cl); c != nil {
		h.s.attachSession(c, cl, pk)
	}
}

// OnSessionEstablished runs after CONNACK: deliveries may start.
func (h *bridge) OnSessionEstablished(cl *mochi.Client, pk packets.Packet) {
	c := connOf(cl)
	if c == nil || c.sess == nil {
		return
	}
	limit := h.s.opts.MaxInflight
	if c.v5 {
		if rm := int(cl.Properties.Props.ReceiveMaximum); rm > 0 && rm < limit {
			limit = rm
		}
	}
	c.mu.Lock()
	c.maxInflight = limit
	c.mu.Unlock()
	version := "MQTT 3.1.1"
	switch cl.Properties.ProtocolVersion {
	case 5:
		version = "MQTT 5.0"
	case 3:
		version = "MQTT 3.1"
	}
	c.unregister = h.s.b.RegisterConn(router.ConnInfo{
		Name: c.raw.RemoteAddr().String() + " -> " + c.raw.LocalAddr().String(), Protocol: version,
		Transport: c.transport, User: c.user, VHost: c.vhost.Name(), Peer: c.raw.RemoteAddr().String(),
		Local: c.raw.LocalAddr().String(), ClientID: c.clientID,
	}, func(string) { c.kill(packets.ErrAdministrativeAction) }, func() router.ConnStats {
		in, out, _ := netx.ByteCounts(c.raw)
		return router.ConnStats{Channels: 1, RecvOct: in, SendOct: out}
	})
	c.sess.startConsumers(c)
}

func (h *bridge) OnDisconnect(cl *mochi.Client, err error, expire bool) {
	if c := connOf(cl); c != nil {
		c.disconnected(err, expire)
	}
}

// StoredClients gives mochi the persistent sessions restored from the
// store, so that a returning client finds its session present.
func (h *bridge) StoredClients() ([]storage.Client, error) { return h.s.stored, nil }

func (h *bridge) OnClientExpired(cl *mochi.Client) {
	h.s.expireSession(cl.ID)
	h.s.mochi.UnsubscribeClient(cl) // mochi leaves expired clients in its index
}

// OnPublish routes the message and stops mochi from doing anything more
// with it: no ack (the bridge acks on confirm), no retain (the bridge keeps
// a store per vhost) and no fan-out (subscribers get it from their queues).
func (h *bridge) OnPublish(cl *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	c := connOf(cl)
	if c == nil || c.sess == nil {
		return pk, packets.ErrRejectPacket
	}
	c.publish(&pk)
	if pk.FixedHeader.Qos == 0 {
		return pk, packets.CodeSuccessIgnore // mochi stops quietly
	}
	return pk, packets.ErrRejectPacket
}

// OnSubscribe keeps mochi from sending retained messages itself (the
// bridge sends them, through the connection's flow control) and remembers
// what the client asked for.
func (h *bridge) OnSubscribe(cl *mochi.Client, pk packets.Packet) packets.Packet {
	c := connOf(cl)
	if c == nil || c.sess == nil {
		return pk
	}
	req := &subRequest{id: pk.PacketID}
	filters := slices.Clone(pk.Filters)
	for i := range filters {
		req.rh = append(req.rh, filters[i].RetainHandling)
		req.existed = append(req.existed, c.sess.has(filters[i].Filter))
		filters[i].RetainHandling = 2
	}
	pk.Filters = filters
	c.subReq = req
	return pk
}

// OnSubscribed declares the router side of each accepted filter. mochi
// builds the SUBACK from reasonCodes after this returns, so a filter the
// router refuses is reported as failed there.
func (h *bridge) OnSubscribed(cl *mochi.Client, pk packets.Packet, reasonCodes []byte) {
	c := connOf(cl)
	if c == nil || c.sess == nil {
		return
	}
	req := c.subReq
	if req == nil || req.id != pk.PacketID || len(req.rh) != len(pk.Filters) {
		req = &subRequest{id: pk.PacketID, rh: make([]byte, len(pk.Filters)), existed: make([]bool, len(pk.Filters))}
		c.subReq = req
	}
	now := time.Now()
	for i, f := range pk.Filters {
		if i >= len(reasonCodes) || reasonCodes[i] >= 0x80 {
			continue
		}
		group, inner := splitShared(f.Filter)
		wantRetained := group == "" && (req.rh[i] == 0 || req.rh[i] == 1 && !req.existed[i])
		if isSysFilter(inner) {
			// mochi serves $SYS itself, live from its topic index,
			// through its outbound channel.
			c.startMochiWriter(cl)
			if wantRetained {
				req.add(h.s.mochi.Topics.Messages(f.Filter), newSubOpts(f, inner))
			}
			continue
		}
		o, err := c.sess.subscribe(c, f)
		if err != nil {
			code := reasonFor(err).Code
			if !c.v5 || errors.Is(err, errNotOwner) {
				code = packets.ErrUnspecifiedError.Code
			}
			reasonCodes[i] = code
			h.s.mochi.Topics.Unsubscribe(f.Filter, cl.ID)
			cl.State.Subscriptions.Delete(f.Filter)
			h.s.log.Warn("subscription refused", "conn", c.id, "client", c.clientID, "filter", f.Filter, "err", err)
			continue
		}
		if wantRetained {
			req.add(h.s.retained.messages(c.vhost.Name(), f.Filter, now), o)
		}
	}
}

// subRequest follows one SUBSCRIBE from OnSubscribe to its SUBACK.
type subRequest struct {
	id       uint16
	rh       []byte // the client's Retain Handling per filter
	existed  []bool // whether the session had each filter already
	retained []retainedBatch
}

type retainedBatch struct {
	pks  []packets.Packet
	opts *subOpts
}

func (r *subRequest) add(pks []packets.Packet, o *subOpts) {
	if len(pks) > 0 {
		r.retained = append(r.retained, retainedBatch{pks, o})
	}
}

func (h *bridge) OnUnsubscribed(cl *mochi.Client, pk packets.Packet) {
	c := connOf(cl)
	if c == nil || c.sess == nil {
		return
	}
	for _, f := range pk.Filters {
		c.sess.unsubscribe(c, f.Filter)
	}
}

// OnPacketRead prepares a PUBREL: the bridge keeps the state of inbound QoS
// 2 flows itself, and gives mochi the entry its PUBREL handling looks for.
//
// It also settles deliveries the client acknowledges (PUBACK, PUBREC)
// here, before mochi handles the packet: mochi answers a PUBREC with a
// PUBREL as it handles it, and a client that hangs up on that PUBREL must
// not find the message requeued by the disconnect (QoS 2 is exactly once).
func (h *bridge) OnPacketRead(cl *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	if code := h.checkPacket(cl, pk); code != nil {
		// mochi's hooks can only end a connection with ErrRejectPacket;
		// the DISCONNECT (MQTT 5) carries the real reason.
		if c := connOf(cl); c != nil {
			c.killCode.CompareAndSwap(nil, code)
		}
		return pk, packets.ErrRejectPacket
	}
	if pk.FixedHeader.Type == packets.Publish {
		// Flow control: while a memory or disk alarm holds, a publishing
		// connection's reader parks here, so nothing more is read from its
		// socket (TCP then pushes back on the client).
		if c := connOf(cl); c != nil && !h.s.gate.Wait(c.readStop) {
			return pk, packets.ErrServerShuttingDown
		}
		return pk, nil
	}
	if t := pk.FixedHeader.Type; t == packets.Puback || t == packets.Pubrec {
		if c := connOf(cl); c != nil {
			c.settleOutbound(pk.PacketID, pk.ReasonCode)
		}
		return pk, nil
	}
	if pk.FixedHeader.Type != packets.Pubrel {
		return pk, nil
	}
	if c := connOf(cl); c != nil && c.sess != nil && c.sess.qos2Awaiting(pk.PacketID) {
		if _, ok := cl.State.Inflight.Get(pk.PacketID); !ok {
			cl.State.Inflight.Set(packets.Packet{
				FixedHeader: packets.FixedHeader{Type: packets.Pubrec},
				PacketID:    pk.PacketID,
				Created:     time.Now().Unix(),
			})
		}
	}
	return pk, nil
}

// OnPacketProcessed ends an inbound QoS 2 flow once its PUBREL is handled.
func (h *bridge) OnPacketProcessed(cl *mochi.Client, pk packets.Packet, err error) {
	c := connOf(cl)
	if c == nil {
		return
	}
	if pk.FixedHeader.Type == packets.Pubrel && c.sess != nil {
		c.sess.qos2Delete(pk.PacketID)
	}
}

// OnPacketEncode adjusts CONNACK: the reason codes of refused logins, and
// the limits mochi does not announce itself.
func (h *bridge) OnPacketEncode(cl *mochi.Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type != packets.Connack {
		return pk
	}
	c := connOf(cl)
	if c == nil {
		return pk
	}
	v5 := cl.Properties.ProtocolVersion == 5
	switch c.authFail {
	case authBadCredentials:
		pk.ReasonCode = packets.ErrBadUsernameOrPassword.Code // v3: 0x04 below
		pk.Properties.ReasonString = packets.ErrBadUsernameOrPassword.Reason
	case authBadVHost:
		pk.ReasonCode = packets.ErrNotAuthorized.Code
		pk.Properties.ReasonString = "vhost not found"
	case authRefused:
		pk.ReasonCode = packets.ErrNotAuthorized.Code
		pk.Properties.ReasonString = c.authReason
	case authQuota:
		pk.ReasonCode = packets.ErrQuotaExceeded.Code // v3: 0x03 server unavailable
		pk.Properties.ReasonString = c.authReason
	}
	if fixed, ok := connackCodes[packets.Code{Code: pk.ReasonCode, Reason: pk.Properties.ReasonString}]; ok &&
		(v5 || fixed == packets.ErrUnsupportedProtocolVersion.Code) {
		pk.ReasonCode = fixed
	}
	switch {
	case !v5 && pk.ReasonCode > 5:
		pk.ReasonCode = v3ConnackCode(pk.ReasonCode)
	case v5 && pk.ReasonCode == 0:
		pk.Properties.TopicAliasMaximum = uint16(h.s.opts.TopicAliasMaximum)
		pk.Properties.MaximumPacketSize = uint32(h.s.opts.MaxPacketSize)
	}
	return pk
}

// v3ConnackCode maps an MQTT 5 CONNACK reason code to the MQTT 3.1.1
// return codes (3.2.2.3).
func v3ConnackCode(code byte) byte {
	switch code {
	case packets.ErrUnsupportedProtocolVersion.Code:
		return 0x01
	case packets.ErrClientIdentifierNotValid.Code, packets.ErrUnspecifiedError.Code:
		// mochi answers an empty client id with clean session 0 with
		// 0x80; MQTT 3.1.1 wants "identifier rejected" ([MQTT-3.1.3-9]).
		return 0x02
	case packets.ErrBadUsernameOrPassword.Code, packets.ErrMalformedUsername.Code:
		return 0x04
	case packets.ErrNotAuthorized.Code:
		return 0x05
	default:
		return 0x03 // server unavailable
	}
}

func (h *bridge) OnPacketSent(cl *mochi.Client, pk packets.Packet, b []byte) {
	c := connOf(cl)
	if c == nil {
		return
	}
	switch pk.FixedHeader.Type {
	case packets.Connack:
		c.established = pk.ReasonCode < 0x80 // written by the reader goroutine
	case packets.Disconnect:
		c.sentDisconnect.Store(true)
	case packets.Suback:
		// Retained messages follow the SUBACK, then live deliveries start.
		if req := c.subReq; req != nil && req.id == pk.PacketID {
			c.subReq = nil
			for _, b := range req.retained {
				c.enqueueRetained(b.pks, b.opts)
			}
			if c.sess != nil {
				c.sess.startConsumers(c)
			}
		}
	}
}

// disconnected runs once when the client's connection ends (OnDisconnect):
// it tells an MQTT 5 client why when mochi did not, detaches the session
// (deleting it if it ends with the connection), and handles the will.
func (c *conn) disconnected(err error, expire bool) {
	if c.gone {
		return
	}
	c.gone = true
	c.wmu.Lock()
	dead := c.wdead
	c.wmu.Unlock()
	if c.v5 && c.established && !dead && !c.sentDisconnect.Load() {
		var code packets.Code
		switch {
		case c.killCode.Load() != nil:
			c.writeFinalDisconnect(*c.killCode.Load())
		case err == nil:
		case errors.As(err, &code) && code.Code >= 0x80:
			c.writeFinalDisconnect(code)
		case errTimeout(err):
			c.writeFinalDisconnect(packets.ErrKeepAliveTimeout)
		}
	}
	ss := c.sess
	if ss == nil {
		return
	}
	owned := ss.release(c)
	if w := c.will; w != nil && err != nil {
		switch {
		case c.willWait == 0 || owned && expire:
			c.s.publishWill(c.vhost, w, c.origin())
		case owned:
			ss.scheduleWill(w, c.origin(), c.willWait)
		}
		// Otherwise a new connection took the session over within the will
		// delay: no will ([MQTT-3.1.3-9]).
	}
	if owned && expire {
		ss.end(true)
	}
}

// authFailure says why a CONNECT was refused.
type authFailure uint8

const (
	authOK authFailure = iota
	authBadCredentials
	authBadVHost
	authRefused // no permission on the vhost, or for the will's topic
	authQuota   // connection limit reached
)

// authenticate logs the CONNECT's user in and selects the vhost. A user
// name "vhost:user" selects a vhost, as in RabbitMQ. Without a user name the
// client is its verified certificate's common name (when CertLogin is on),
// or else, where anonymous clients are allowed, the default user. Outside
// the default vhost, mochi's client id is qualified with the vhost, so that
// sessions of different vhosts never take each other over.
func (s *Server) authenticate(c *conn, cl *mochi.Client, pk packets.Packet) bool {
	vhost := s.opts.DefaultVHost
	remote := c.raw.RemoteAddr()
	var p *auth.Principal
	var err error
	if len(pk.Connect.Username) == 0 {
		if cn, ok := netx.PeerCommonName(c.raw); ok && s.opts.CertLogin {
			p, err = s.opts.Auth.LoginExternal(cn, remote)
		} else if s.anonymousAllowed(remote) {
			p, err = s.opts.Auth.LoginExternal(s.opts.DefaultUser, remote)
		} else {
			c.authFail = authBadCredentials
			return false
		}
	} else {
		name := string(pk.Connect.Username)
		if v, u, ok := strings.Cut(name, ":"); ok {
			vhost, name = v, u
		}
		p, err = s.opts.Auth.Login(name, string(pk.Connect.Password), remote)
	}
	if err != nil {
		c.authFail, c.authReason = authBadCredentials, ""
		if core.KindOf(err) == core.ResourceError {
			c.authFail, c.authReason = authQuota, err.Error()
		}
		return false
	}
	fail := func(f authFailure, reason string) bool {
		p.Close()
		c.authFail, c.authReason = f, reason
		return false
	}
	v, err := s.b.VHost(vhost)
	if err != nil {
		return fail(authBadVHost, "")
	}
	if err := p.CheckVHost(vhost); err != nil {
		return fail(authRefused, err.Error())
	}
	c.vhost, c.user, c.principal = v, p.Name, p
	c.clientID = cl.ID
	if pk.Connect.WillFlag {
		if err := c.authorize(pk.Connect.WillTopic, true); err != nil {
			c.principal = nil
			return fail(authRefused, "will: "+err.Error())
		}
	}
	if vhost != s.opts.DefaultVHost {
		// NUL cannot occur in an MQTT string, so the key is unambiguous.
		cl.ID = vhost + "\x00" + cl.ID
	}
	return true
}

func (s *Server) anonymousAllowed(addr net.Addr) bool {
	switch s.opts.Anonymous {
	case AnonymousAlways:
		return true
	case AnonymousNever:
		return false
	}
	var ip net.IP
	switch a := addr.(type) {
	case *net.TCPAddr:
		ip = a.IP
	default:
		host, _, err := net.SplitHostPort(addr.String())
		if err != nil {
			return false
		}
		ip = net.ParseIP(host)
	}
	return ip != nil && ip.IsLoopback()
}
