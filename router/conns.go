package router

import (
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bourse-mq/bourse/core"
)

// ConnInfo describes a client connection, for the management API.
type ConnInfo struct {
	Name      string // RabbitMQ's form: "peer -> local"
	Protocol  string // "AMQP 0-9-1", "MQTT 5.0", "STOMP 1.2" …
	Transport string // tcp, tls, websocket
	User      string
	VHost     string
	Peer      string // host:port
	Local     string // host:port
	ClientID  string // MQTT client id, AMQP connection_name
	Connected time.Time
}

// ConnStats are a connection's live figures.
type ConnStats struct {
	Channels    int
	ChannelList []ChannelStats // AMQP channels; nil for protocols without them
	// RecvOct and SendOct count the bytes read and written on the
	// connection's socket (0 where the listener does not count them).
	RecvOct, SendOct uint64
}

// ChannelStats describe one AMQP channel, for the management API.
type ChannelStats struct {
	Number         int
	Consumers      int
	Unacked        int  // deliveries awaiting acknowledgement
	GlobalPrefetch int  // channel-wide prefetch (basic.qos global=true)
	Confirm        bool // publisher confirms on
	Transactional  bool // tx.select done
}

// Conn is a registered connection.
type Conn struct {
	Info  ConnInfo
	close func(reason string)
	stats func() ConnStats
}

// Stats returns the connection's live figures.
func (c *Conn) Stats() ConnStats {
	if c.stats == nil {
		return ConnStats{}
	}
	return c.stats()
}

type connRegistry struct {
	mu    sync.Mutex
	conns map[string]*Conn
	seq   atomic.Uint64
}

// RegisterConn records an open client connection: close ends it in the
// protocol's own way (AMQP connection.close 320, MQTT 5 DISCONNECT 0x98,
// STOMP ERROR), stats reports its live figures (may be nil). The returned
// function unregisters it.
func (b *Broker) RegisterConn(info ConnInfo, close func(reason string), stats func() ConnStats) (unregister func()) {
	r := &b.connReg
	r.mu.Lock()
	if r.conns == nil {
		r.conns = map[string]*Conn{}
	}
	if info.Name == "" || r.conns[info.Name] != nil {
		info.Name += " #" + strconv.FormatUint(r.seq.Add(1), 10)
	}
	if info.Connected.IsZero() {
		info.Connected = time.Now()
	}
	c := &Conn{Info: info, close: close, stats: stats}
	r.conns[info.Name] = c
	r.mu.Unlock()
	return func() {
		r.mu.Lock()
		if r.conns[info.Name] == c {
			delete(r.conns, info.Name)
		}
		r.mu.Unlock()
	}
}

// Conns lists the open connections, by name.
func (b *Broker) Conns() []*Conn {
	r := &b.connReg
	r.mu.Lock()
	out := make([]*Conn, 0, len(r.conns))
	for _, c := range r.conns {
		out = append(out, c)
	}
	r.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Info.Name < out[j].Info.Name })
	return out
}

// CloseConn closes the named connection, telling the client why.
func (b *Broker) CloseConn(name, reason string) error {
	r := &b.connReg
	r.mu.Lock()
	c := r.conns[name]
	r.mu.Unlock()
	if c == nil {
		return core.Errorf(core.NotFound, "no connection '%s'", name)
	}
	c.close(reason)
	return nil
}
