package stomp

import (
	"log/slog"
	"time"

	"github.com/bourse-mq/bourse/auth"
	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/protocols/stomp/wire"
)

// Options configure a Server. Zero fields take the defaults documented on
// each field.
type Options struct {
	// Logger receives the adapter's logs; slog.Default() when nil.
	Logger *slog.Logger

	// DefaultVHost is the vhost of a CONNECT without a host header ("/").
	// As in RabbitMQ, the host header names the vhost.
	DefaultVHost string
	// DefaultUser and DefaultPass are the credentials of a CONNECT without
	// a login header, as RabbitMQ's default_user/default_pass ("guest",
	// "guest"). They are checked against Users like any other.
	DefaultUser, DefaultPass string
	// RequireLogin refuses a CONNECT without a login header instead of
	// using DefaultUser.
	RequireLogin bool
	// Auth holds the users and their permissions, checked as RabbitMQ's
	// STOMP plugin checks them (see access.go). Nil means an in-memory
	// store of Users, who may do anything.
	Auth *auth.Store
	// Users are the accepted login/passcode pairs when Auth is nil. Nil
	// means {DefaultUser: DefaultPass}.
	Users map[string]string
	// LoopbackUsers may connect only from a loopback address when Auth is
	// nil, as RabbitMQ's loopback_users ["guest"]; an empty non-nil list
	// restricts nobody.
	LoopbackUsers []string
	// CertLogin logs a CONNECT without a login header in as its verified
	// TLS client certificate's common name (RabbitMQ's ssl_cert_login).
	CertLogin bool
	// ServerName is the CONNECTED frame's server header ("Bourse/dev").
	ServerName string

	// Frame limits, enforced before allocation (see package wire).
	MaxHeaderBytes int // command + header lines of one frame (64 KiB)
	MaxHeaders     int // header lines of one frame (1000)
	MaxBodyBytes   int // body of one frame (16 MiB)

	// MaxOutboundBytes bounds a connection's queue of frames waiting to be
	// written (4 MiB). When it is full, deliveries are refused (the queue
	// keeps the message and resumes when the writer has drained half of
	// it) and the connection's socket is not read.
	MaxOutboundBytes int
	// DefaultPrefetch caps unacknowledged messages per subscription in the
	// client and client-individual ack modes when SUBSCRIBE has no
	// prefetch-count header (1000). RabbitMQ's default is unlimited; a cap
	// keeps one forgetful client from holding a whole queue in its unacked
	// set. Negative means unlimited. prefetch-count:0 asks for unlimited.
	DefaultPrefetch int

	// HeartBeatMin is the shortest heart-beat interval the server agrees
	// to in either direction (1s); a client asking for less gets this.
	HeartBeatMin time.Duration
	// HeartBeatGrace is added to twice the client's interval before a
	// silent client is dropped (1s).
	HeartBeatGrace time.Duration
	// ConnectTimeout bounds the time from accept to a successful CONNECT
	// (10s).
	ConnectTimeout time.Duration
	// WriteTimeout bounds one write to a client (30s); a client that does
	// not read for that long is dropped.
	WriteTimeout time.Duration

	MaxSubscriptions int // per connection, temp-queue subscriptions included (1024)
	MaxTransactions  int // open transactions per connection (128)
	MaxTxBytes       int // message bodies buffered in open transactions per connection (64 MiB)
	MaxConnections   int // open connections (0: unlimited)

	// NackDeadLetterByDefault makes a NACK without a requeue header
	// dead-letter the message; by default it is requeued, as RabbitMQ's
	// default_nack_requeue.
	NackDeadLetterByDefault bool

	// WebSocketBinary sends frames in binary WebSocket messages instead of
	// text ones (RabbitMQ Web STOMP's ws_frame setting). Incoming messages
	// may be of either type.
	WebSocketBinary bool
	// WebSocketOriginPatterns are extra origins allowed to open a
	// WebSocket (coder/websocket's AcceptOptions.OriginPatterns); by
	// default only same-origin browsers may.
	WebSocketOriginPatterns []string
}

func (o Options) withDefaults() Options {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.DefaultVHost == "" {
		o.DefaultVHost = core.DefaultVHost
	}
	if o.DefaultUser == "" && o.DefaultPass == "" {
		o.DefaultUser, o.DefaultPass = "guest", "guest"
	}
	if o.Users == nil {
		o.Users = map[string]string{o.DefaultUser: o.DefaultPass}
	}
	if o.Auth == nil {
		o.Auth = auth.NewStatic(o.Users, auth.Options{LoopbackUsers: o.LoopbackUsers})
	}
	if o.ServerName == "" {
		o.ServerName = "Bourse/dev"
	}
	if o.MaxHeaderBytes <= 0 {
		o.MaxHeaderBytes = wire.DefaultMaxHeaderBytes
	}
	if o.MaxHeaders <= 0 {
		o.MaxHeaders = wire.DefaultMaxHeaders
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = wire.DefaultMaxBodyBytes
	}
	if o.MaxOutboundBytes <= 0 {
		o.MaxOutboundBytes = 4 << 20
	}
	if o.DefaultPrefetch == 0 {
		o.DefaultPrefetch = 1000
	}
	if o.HeartBeatMin <= 0 {
		o.HeartBeatMin = time.Second
	}
	if o.HeartBeatGrace <= 0 {
		o.HeartBeatGrace = time.Second
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = 10 * time.Second
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 30 * time.Second
	}
	if o.MaxSubscriptions <= 0 {
		o.MaxSubscriptions = 1024
	}
	if o.MaxTransactions <= 0 {
		o.MaxTransactions = 128
	}
	if o.MaxTxBytes <= 0 {
		o.MaxTxBytes = 64 << 20
	}
	return o
}

func (o Options) limits() wire.Limits {
	return wire.Limits{MaxHeaderBytes: o.MaxHeaderBytes, MaxHeaders: o.MaxHeaders, MaxBodyBytes: o.MaxBodyBytes}
}
