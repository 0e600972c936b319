package mqtt

import (
	"log/slog"
	"time"

	"github.com/bourse-mq/bourse/auth"
	"github.com/bourse-mq/bourse/core"
)

// AnonymousPolicy says which clients may connect without a user name.
type AnonymousPolicy uint8

// Anonymous access policies. Anonymous clients act as Options.DefaultUser in
// Options.DefaultVHost, as RabbitMQ's mqtt.allow_anonymous does.
const (
	AnonymousLoopback AnonymousPolicy = iota // only from a loopback address (the default)
	AnonymousAlways                          // from anywhere
	AnonymousNever                           // never: a user name is required
)

// Options configure a Server. Zero fields take the defaults in brackets.
type Options struct {
	// Logger receives the adapter's logs [slog.Default()]. mochi's own logs
	// go to the same handler, at Warn and above only.
	Logger *slog.Logger

	// DefaultVHost is the vhost of a client whose user name names none ["/"].
	// As in RabbitMQ, a user name "vhost:user" selects the vhost.
	DefaultVHost string
	// Auth holds the users and their permissions: CONNECT logs in, every
	// PUBLISH needs write on amq.topic and the topic's write permission,
	// every SUBSCRIBE filter read on amq.topic and the filter's topic read
	// permission (a $stream filter: read on the stream). Nil means an
	// in-memory store of Users, who may do anything.
	Auth *auth.Store
	// DefaultUser and DefaultPass are the account accepted when Auth and
	// Users are both unset ["guest"/"guest"]; anonymous clients act as
	// DefaultUser.
	DefaultUser, DefaultPass string
	// Users maps user names to passwords when Auth is nil. Nil means
	// {DefaultUser: DefaultPass}.
	Users map[string]string
	// LoopbackUsers may connect only from a loopback address when Auth is
	// nil, as RabbitMQ's loopback_users ["guest"]; an empty non-nil list
	// restricts nobody.
	LoopbackUsers []string
	// CertLogin logs a client that sends no user name in as its verified
	// TLS client certificate's common name (RabbitMQ's ssl_cert_login).
	CertLogin bool
	// Anonymous says who may connect without a user name [AnonymousLoopback].
	Anonymous AnonymousPolicy

	// Store keeps persistent sessions and retained messages across
	// restarts (nil: in memory only). Persistent sessions' subscription
	// queues are durable when it is set, so their QoS 1/2 messages wait
	// in the journal.
	Store Store
	// Cluster shares persistent sessions (with session takeover across
	// nodes) and retained messages between the nodes of a cluster. It
	// replaces Store.
	Cluster Cluster

	// MaxPacketSize is the largest MQTT packet accepted, fixed header
	// included [1 MiB]. Larger packets close the connection, with DISCONNECT
	// 0x95 for MQTT 5 clients. It is announced in CONNACK.
	MaxPacketSize int
	// ReceiveMaximum is the number of unacknowledged QoS 1 and 2 publishes a
	// client may have in flight towards the server, announced in CONNACK
	// [256]. The server stops reading a connection whose acknowledgements it
	// cannot write, before that many are pending.
	ReceiveMaximum int
	// MaxInflight caps the QoS 1 and 2 deliveries a connection has
	// outstanding towards the client (the client's own Receive Maximum
	// lowers it further) [128].
	MaxInflight int
	// MaxOutboundBytes bounds the message bytes queued for one connection's
	// socket. Deliveries beyond it are left in their queues until the writer
	// has drained half of it [1 MiB].
	MaxOutboundBytes int
	// TopicAliasMaximum is the number of inbound topic aliases a client may
	// use, announced in CONNACK [16, as RabbitMQ]; negative disables them.
	TopicAliasMaximum int
	// MaxSessionExpiry caps how long a disconnected persistent session (MQTT
	// 3 clean_session=false, MQTT 5 session expiry > 0) keeps its queues
	// [24h, as RabbitMQ's max_session_expiry_interval_seconds].
	MaxSessionExpiry time.Duration
	// MaxQueuedMessages bounds each session queue (and shared group queue):
	// beyond it the oldest message is dropped, as for a RabbitMQ queue with
	// x-max-length and drop-head, so an offline device cannot make the
	// broker hold messages without bound [100000]. Negative: no bound.
	MaxQueuedMessages int
	// MaxConnections caps connected clients; more get CONNACK "server busy"
	// [unlimited].
	MaxConnections int

	// ConnectTimeout bounds the time from accept to a CONNECT packet [10s].
	ConnectTimeout time.Duration
	// WriteTimeout bounds one write to a client; a client that does not read
	// for that long is dropped [30s].
	WriteTimeout time.Duration
	// CloseTimeout bounds the final flush of a closing connection [1s].
	CloseTimeout time.Duration
	// SysInterval is how often mochi refreshes its $SYS topics [10s].
	SysInterval time.Duration

	// WebSocketOriginPatterns are extra origins allowed to open an MQTT
	// WebSocket (coder/websocket's AcceptOptions.OriginPatterns); by default
	// only same-origin browsers may.
	WebSocketOriginPatterns []string
}

// Defaults.
const (
	defaultMaxPacketSize     = 1 << 20
	defaultReceiveMaximum    = 256
	defaultMaxInflight       = 128
	defaultMaxOutboundBytes  = 1 << 20
	defaultTopicAliasMaximum = 16
	defaultMaxSessionExpiry  = 24 * time.Hour
	// mochiWritesPending sizes mochi's per-client outbound channel
	// (Capabilities.MaximumClientWritesPending, 8192 slots = 64 KiB by
	// default). Bourse writes every delivery through its own byte-bounded
	// queue; mochi's channel only carries $SYS updates, so 32 slots
	// (256 bytes) are plenty.
	mochiWritesPending = 32
	// mochiReadBuffer is mochi's per-client bufio.Reader size, the least
	// bufio allows: the connection buffers its reads itself (pipe.Read),
	// in a buffer it holds only while data is arriving.
	mochiReadBuffer = 16
	// readBufferSize is the size of the pooled read buffers (pipe.Read).
	readBufferSize = 4096
)

func (o *Options) setDefaults() {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.DefaultVHost == "" {
		o.DefaultVHost = core.DefaultVHost
	}
	if o.DefaultUser == "" {
		o.DefaultUser, o.DefaultPass = "guest", "guest"
	}
	if o.Users == nil {
		o.Users = map[string]string{o.DefaultUser: o.DefaultPass}
	}
	if o.Auth == nil {
		o.Auth = auth.NewStatic(o.Users, auth.Options{LoopbackUsers: o.LoopbackUsers})
	}
	if o.MaxPacketSize <= 0 {
		o.MaxPacketSize = defaultMaxPacketSize
	}
	if o.MaxPacketSize > 268435455+5 { // the largest packet MQTT can frame
		o.MaxPacketSize = 268435455 + 5
	}
	if o.ReceiveMaximum <= 0 {
		o.ReceiveMaximum = defaultReceiveMaximum
	}
	if o.ReceiveMaximum > 65535 {
		o.ReceiveMaximum = 65535
	}
	if o.MaxInflight <= 0 {
		o.MaxInflight = defaultMaxInflight
	}
	if o.MaxQueuedMessages == 0 {
		o.MaxQueuedMessages = 100000
	}
	if o.MaxInflight > 1<<15-1 { // delivery ids use half the id space
		o.MaxInflight = 1<<15 - 1
	}
	if o.MaxOutboundBytes <= 0 {
		o.MaxOutboundBytes = defaultMaxOutboundBytes
	}
	switch {
	case o.TopicAliasMaximum == 0:
		o.TopicAliasMaximum = defaultTopicAliasMaximum
	case o.TopicAliasMaximum < 0:
		o.TopicAliasMaximum = 0
	case o.TopicAliasMaximum > 65535:
		o.TopicAliasMaximum = 65535
	}
	if o.MaxSessionExpiry <= 0 {
		o.MaxSessionExpiry = defaultMaxSessionExpiry
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = 10 * time.Second
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 30 * time.Second
	}
	if o.CloseTimeout <= 0 {
		o.CloseTimeout = time.Second
	}
	if o.SysInterval <= 0 {
		o.SysInterval = 10 * time.Second
	}
}
