// Package config holds Bourse's configuration: defaults, then a YAML file,
// then BOURSE_* environment variables, then command-line flags, each
// overriding the one before.
package config

import (
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/providers/posflag"
	"github.com/knadh/koanf/v2"
	"github.com/spf13/pflag"
)

// Config is the effective configuration of `bourse serve`.
type Config struct {
	DataDir   string    `koanf:"data_dir" yaml:"data_dir"`
	Listeners Listeners `koanf:"listeners" yaml:"listeners"`
	Log       Log       `koanf:"log" yaml:"log"`
	Auth      Auth      `koanf:"auth" yaml:"auth"`
	Storage   Storage   `koanf:"storage" yaml:"storage"`
	Limits    Limits    `koanf:"limits" yaml:"limits"`
	// WebSocketOrigins are the origins (host patterns such as
	// "app.example.com" or "127.0.0.1:*") allowed to open STOMP and MQTT
	// WebSockets besides the broker's own; empty means same-origin only.
	// Credentials travel inside the protocols, so an open list would let
	// any web page a local user visits log in as guest on loopback.
	WebSocketOrigins []string `koanf:"websocket_origins" yaml:"websocket_origins"`
	// Heartbeat is the AMQP heartbeat the server proposes.
	Heartbeat Duration `koanf:"heartbeat" yaml:"heartbeat"`
	// MetricsPrefix names the metric families of /metrics: "bourse" or
	// "rabbitmq" (RabbitMQ's names, for its dashboards); ?prefix= overrides.
	MetricsPrefix string `koanf:"metrics_prefix" yaml:"metrics_prefix"`
	// TLS, when cert_file is set, opens the TLS listeners (listeners.amqps,
	// mqtts, stomps, https).
	TLS TLS `koanf:"tls" yaml:"tls"`
	// Cluster turns on cluster mode (preview: topology only).
	Cluster Cluster `koanf:"cluster" yaml:"cluster"`
}

// Cluster configures cluster mode on NATS JetStream.
type Cluster struct {
	// Mode: none (single node), nats (a gateway on an existing JetStream
	// cluster at NATSURLs), or embedded (this process also runs a
	// nats-server node with routes to its peers).
	Mode string `koanf:"mode" yaml:"mode"`
	// NATSURLs (mode nats) and credentials: a .creds file, or user and
	// password, or a token.
	NATSURLs        []string `koanf:"nats_urls" yaml:"nats_urls"`
	CredentialsFile string   `koanf:"credentials_file" yaml:"credentials_file"`
	User            string   `koanf:"user" yaml:"user"`
	Password        string   `koanf:"password" yaml:"password"`
	Token           string   `koanf:"token" yaml:"token"`
	// TLS… (mode nats): the CA that signs the NATS servers' certificates,
	// and this gateway's certificate and key when the servers ask for one.
	TLSCAFile   string `koanf:"tls_ca_file" yaml:"tls_ca_file"`
	TLSCertFile string `koanf:"tls_cert_file" yaml:"tls_cert_file"`
	TLSKeyFile  string `koanf:"tls_key_file" yaml:"tls_key_file"`
	// Name is the cluster's name (mode embedded); NodeName this node's,
	// unique in the cluster (default: the host name and route port).
	Name     string `koanf:"name" yaml:"name"`
	NodeName string `koanf:"node_name" yaml:"node_name"`
	// Listen is the embedded server's NATS client listener; RouteListen
	// its cluster route listener; Routes the peers' route URLs
	// (nats://host:6222; this node's own may be listed).
	Listen      string   `koanf:"listen" yaml:"listen"`
	RouteListen string   `koanf:"route_listen" yaml:"route_listen"`
	Routes      []string `koanf:"routes" yaml:"routes"`
	// RouteUser and RoutePassword authenticate the routes between
	// embedded nodes: a node's route listener requires them and its routes
	// present them. The same on every node.
	RouteUser     string `koanf:"route_user" yaml:"route_user"`
	RoutePassword string `koanf:"route_password" yaml:"route_password"`
	// RouteTLS… encrypt the routes with mutual TLS: each node's
	// certificate and key (used to accept and to dial routes, so valid for
	// both) and the CA that signs every node's certificate.
	RouteTLSCertFile string `koanf:"route_tls_cert_file" yaml:"route_tls_cert_file"`
	RouteTLSKeyFile  string `koanf:"route_tls_key_file" yaml:"route_tls_key_file"`
	RouteTLSCAFile   string `koanf:"route_tls_ca_file" yaml:"route_tls_ca_file"`
	// StoreDir holds the embedded server's JetStream files (default:
	// data_dir/cluster).
	StoreDir string `koanf:"store_dir" yaml:"store_dir"`
	// Replicas of the topology bucket; 0 = 3 on three nodes or more, else 1.
	Replicas int `koanf:"replicas" yaml:"replicas"`
	// StartTimeout bounds joining the cluster and replaying its topology.
	StartTimeout Duration `koanf:"start_timeout" yaml:"start_timeout"`
	// AckWait is how long JetStream waits for a node's ack (or heartbeat)
	// of a shared queue's message before it hands the message out again:
	// how soon the messages held by a node that dies or is cut off come
	// back to the others (cluster.Options.AckWait; default
	// cluster.AckWait, 20s). At least 1s; the same on every node.
	AckWait Duration `koanf:"ack_wait" yaml:"ack_wait"`
	// MQTTOrphanAfter is how long a node must be down before the live
	// nodes adopt the MQTT sessions it held, to expire them and send
	// their delayed wills (cluster.Options.MQTTOrphanAfter; default
	// cluster.OrphanAfter, 2m). At least 1s.
	MQTTOrphanAfter Duration `koanf:"mqtt_orphan_after" yaml:"mqtt_orphan_after"`
	// StreamIdle is how long a node keeps copying a stream after its last
	// reader there is gone; then it drops its copy. 0 = 5 minutes.
	StreamIdle Duration `koanf:"stream_idle" yaml:"stream_idle"`
}

// TLS configures the TLS listeners.
type TLS struct {
	CertFile string `koanf:"cert_file" yaml:"cert_file"`
	KeyFile  string `koanf:"key_file" yaml:"key_file"`
	// CAFile holds the CAs that sign client certificates.
	CAFile string `koanf:"ca_file" yaml:"ca_file"`
	// ClientAuth: none, optional (verified when presented) or required.
	ClientAuth string `koanf:"client_auth" yaml:"client_auth"`
	// CertLogin logs in a client that presents a verified certificate and
	// no credentials as the user named by the certificate's common name
	// (AMQP's EXTERNAL mechanism; MQTT and STOMP without a user name).
	CertLogin bool `koanf:"cert_login" yaml:"cert_login"`
}

// Listeners are listen addresses; an empty address turns a listener off.
type Listeners struct {
	AMQP  string `koanf:"amqp" yaml:"amqp"`
	MQTT  string `koanf:"mqtt" yaml:"mqtt"`
	STOMP string `koanf:"stomp" yaml:"stomp"`
	HTTP  string `koanf:"http" yaml:"http"`
	// TLS listeners, opened only when tls.cert_file is set.
	AMQPS  string `koanf:"amqps" yaml:"amqps"`
	MQTTS  string `koanf:"mqtts" yaml:"mqtts"`
	STOMPS string `koanf:"stomps" yaml:"stomps"`
	HTTPS  string `koanf:"https" yaml:"https"`
}

// Log configures log/slog.
type Log struct {
	Level  string `koanf:"level" yaml:"level"`   // debug, info, warn, error
	Format string `koanf:"format" yaml:"format"` // text, json
}

// Auth holds the bootstrap user and the default vhost.
type Auth struct {
	DefaultVHost string `koanf:"default_vhost" yaml:"default_vhost"`
	DefaultUser  string `koanf:"default_user" yaml:"default_user"`
	DefaultPass  string `koanf:"default_pass" yaml:"default_pass"`
	// LoopbackUsers may connect only from loopback addresses (RabbitMQ's
	// loopback_users); by default the well-known guest account.
	LoopbackUsers []string `koanf:"loopback_users" yaml:"loopback_users"`
	// MaxFailuresPerMinute is how many failed logins a source host may make
	// in a minute before it is refused unchecked for the rest of it; -1
	// turns the limit off.
	MaxFailuresPerMinute int `koanf:"max_failures_per_minute" yaml:"max_failures_per_minute"`
}

// Storage configures durability.
type Storage struct {
	// Fsync is "always" (fsync every group-commit batch before confirming:
	// the default, and the only policy under which a confirm means
	// "survives a crash"), "interval" or "never".
	Fsync         string   `koanf:"fsync" yaml:"fsync"`
	FsyncInterval Duration `koanf:"fsync_interval" yaml:"fsync_interval"`
	// QueueMemoryBytes bounds the bodies of ready persistent messages each
	// durable queue keeps in memory; beyond it only an index stays in RAM
	// and bodies are read back from the journal on delivery. 0 = no bound.
	QueueMemoryBytes int64 `koanf:"queue_memory_bytes" yaml:"queue_memory_bytes"`
}

// Limits bound what one client may send.
type Limits struct {
	MaxFrameBytes   int `koanf:"max_frame_bytes" yaml:"max_frame_bytes"`
	MaxMessageBytes int `koanf:"max_message_bytes" yaml:"max_message_bytes"`
	// MemoryHighWatermark is the memory alarm's threshold as a fraction of
	// the machine's memory (RabbitMQ's vm_memory_high_watermark);
	// MemoryLimitBytes, when set, is an absolute threshold instead. While
	// the alarm holds, publishers are blocked.
	MemoryHighWatermark float64 `koanf:"memory_high_watermark" yaml:"memory_high_watermark"`
	MemoryLimitBytes    int64   `koanf:"memory_limit_bytes" yaml:"memory_limit_bytes"`
	// DiskFreeLimitBytes blocks publishers while the data directory's file
	// system has less free space (RabbitMQ's disk_free_limit); 0 = off.
	DiskFreeLimitBytes int64 `koanf:"disk_free_limit_bytes" yaml:"disk_free_limit_bytes"`
	// MaxConnections bounds logged-in connections over every protocol and
	// MaxConnectionsPerUser those of one user (0: unlimited); refusals are
	// AMQP 530, MQTT CONNACK 0x97 (3.1.1: 0x03) and a STOMP ERROR.
	MaxConnections        int `koanf:"max_connections" yaml:"max_connections"`
	MaxConnectionsPerUser int `koanf:"max_connections_per_user" yaml:"max_connections_per_user"`
	// MaxChannels bounds AMQP channels per connection (channel_max).
	MaxChannels int `koanf:"max_channels" yaml:"max_channels"`
	// MaxConsumersPerChannel bounds AMQP consumers per channel (0: unlimited).
	MaxConsumersPerChannel int `koanf:"max_consumers_per_channel" yaml:"max_consumers_per_channel"`
	// MaxQueuesPerVHost bounds queues (streams included) per vhost (0: unlimited).
	MaxQueuesPerVHost int `koanf:"max_queues_per_vhost" yaml:"max_queues_per_vhost"`
	// ConnectionRatePerIP bounds new connections per second from one
	// source address on every listener (0: unlimited); connections above it
	// are closed at accept.
	ConnectionRatePerIP float64 `koanf:"connection_rate_per_ip" yaml:"connection_rate_per_ip"`
}

// Default returns the embedded defaults: every listener on loopback.
func Default() Config {
	return Config{
		DataDir: "data",
		Listeners: Listeners{
			AMQP:  "127.0.0.1:5672",
			MQTT:  "127.0.0.1:1883",
			STOMP: "127.0.0.1:61613",
			HTTP:  "127.0.0.1:15672",
			AMQPS: "127.0.0.1:5671", MQTTS: "127.0.0.1:8883", STOMPS: "127.0.0.1:61614", HTTPS: "127.0.0.1:15671",
		},
		TLS:           TLS{ClientAuth: "none"},
		MetricsPrefix: "bourse",
		Log:           Log{Level: "info", Format: "text"},
		Auth: Auth{DefaultVHost: "/", DefaultUser: "guest", DefaultPass: "guest", LoopbackUsers: []string{"guest"},
			MaxFailuresPerMinute: 20},
		Storage: Storage{Fsync: "always", FsyncInterval: Duration(200 * time.Millisecond), QueueMemoryBytes: 64 << 20},
		Limits: Limits{MaxFrameBytes: 128 << 10, MaxMessageBytes: 16 << 20,
			MemoryHighWatermark: 0.4, DiskFreeLimitBytes: 50_000_000, MaxChannels: 2047},
		Heartbeat:        Duration(60 * time.Second),
		WebSocketOrigins: []string{},
		Cluster: Cluster{Mode: "none", Name: "bourse", Listen: "127.0.0.1:4222", RouteListen: "127.0.0.1:6222",
			NATSURLs: []string{}, Routes: []string{}, StartTimeout: Duration(60 * time.Second),
			AckWait: Duration(20 * time.Second), MQTTOrphanAfter: Duration(2 * time.Minute), StreamIdle: Duration(5 * time.Minute)},
	}
}

// Flag names of `bourse serve` and the config keys they set.
var flagKeys = map[string]string{
	"data-dir":        "data_dir",
	"amqp-addr":       "listeners.amqp",
	"mqtt-addr":       "listeners.mqtt",
	"stomp-addr":      "listeners.stomp",
	"http-addr":       "listeners.http",
	"log-level":       "log.level",
	"log-format":      "log.format",
	"fsync":           "storage.fsync",
	"ws-origin":       "websocket_origins",
	"amqps-addr":      "listeners.amqps",
	"mqtts-addr":      "listeners.mqtts",
	"stomps-addr":     "listeners.stomps",
	"https-addr":      "listeners.https",
	"tls-cert":        "tls.cert_file",
	"tls-key":         "tls.key_file",
	"tls-ca":          "tls.ca_file",
	"tls-client-auth": "tls.client_auth",
	"tls-cert-login":  "tls.cert_login",
	"memory-limit":    "limits.memory_limit_bytes",
	"disk-free-limit": "limits.disk_free_limit_bytes",
	"cluster":         "cluster.mode",
	"cluster-nats":    "cluster.nats_urls",
	"cluster-routes":  "cluster.routes",
}

// listKeys are the keys whose environment values are comma-separated lists.
var listKeys = map[string]bool{"websocket_origins": true, "auth.loopback_users": true,
	"cluster.nats_urls": true, "cluster.routes": true}

// RegisterFlags defines the serve flags on fs.
func RegisterFlags(fs *pflag.FlagSet) {
	d := Default()
	fs.String("config", "", "YAML configuration file")
	fs.String("data-dir", d.DataDir, "data directory")
	fs.String("amqp-addr", d.Listeners.AMQP, "AMQP 0-9-1 listen address (empty: off)")
	fs.String("mqtt-addr", d.Listeners.MQTT, "MQTT listen address (empty: off)")
	fs.String("stomp-addr", d.Listeners.STOMP, "STOMP listen address (empty: off)")
	fs.String("http-addr", d.Listeners.HTTP, "HTTP listen address: health, metrics, WebSocket (empty: off)")
	fs.String("log-level", d.Log.Level, "log level: debug, info, warn, error")
	fs.String("log-format", d.Log.Format, "log format: text, json")
	fs.String("fsync", d.Storage.Fsync, "fsync policy: always, interval, never")
	fs.StringSlice("ws-origin", nil, "extra origins (host patterns) allowed to open WebSockets; repeatable")
	fs.String("amqps-addr", d.Listeners.AMQPS, "AMQP over TLS listen address, with --tls-cert (empty: off)")
	fs.String("mqtts-addr", d.Listeners.MQTTS, "MQTT over TLS listen address, with --tls-cert (empty: off)")
	fs.String("stomps-addr", d.Listeners.STOMPS, "STOMP over TLS listen address, with --tls-cert (empty: off)")
	fs.String("https-addr", d.Listeners.HTTPS, "HTTPS listen address (API, WSS), with --tls-cert (empty: off)")
	fs.String("tls-cert", "", "PEM certificate (chain) of the TLS listeners; SIGHUP or a change on disk reloads it")
	fs.String("tls-key", "", "PEM private key of --tls-cert")
	fs.String("tls-ca", "", "PEM CAs that sign client certificates (mTLS)")
	fs.String("tls-client-auth", d.TLS.ClientAuth, "client certificates: none, optional, required")
	fs.Bool("tls-cert-login", false, "log in clients without credentials as their verified certificate's common name (AMQP EXTERNAL)")
	fs.Int64("memory-limit", 0, "memory alarm threshold in bytes (default: limits.memory_high_watermark of RAM)")
	fs.Int64("disk-free-limit", d.Limits.DiskFreeLimitBytes, "disk alarm: block publishers below this many free bytes (0: off)")
	fs.String("cluster", d.Cluster.Mode, "cluster mode (preview): none, nats, embedded")
	fs.StringSlice("cluster-nats", nil, "NATS URLs of the JetStream cluster (--cluster nats); repeatable")
	fs.StringSlice("cluster-routes", nil, "route URLs of the peers (--cluster embedded); repeatable")
}

// envKey maps BOURSE_LISTENERS_AMQP to listeners.amqp and BOURSE_DATA_DIR to
// data_dir: after the prefix, a double underscore separates sections, or,
// for the known sections, the first single underscore does.
func envKey(s string) string {
	s = strings.ToLower(strings.TrimPrefix(s, "BOURSE_"))
	if strings.Contains(s, "__") {
		return strings.ReplaceAll(s, "__", ".")
	}
	for _, sec := range []string{"listeners", "log", "auth", "storage", "limits", "tls", "cluster"} {
		if strings.HasPrefix(s, sec+"_") {
			return sec + "." + strings.TrimPrefix(s, sec+"_")
		}
	}
	return s
}

// Load builds the effective config: defaults < file < environment < flags
// (only the flags the user set).
func Load(fs *pflag.FlagSet, environ func() []string) (Config, error) {
	k := koanf.New(".")
	if err := k.Load(structProvider{Default()}, nil); err != nil {
		return Config{}, err
	}
	if path, _ := fs.GetString("config"); path != "" {
		if _, err := os.Stat(path); err != nil {
			return Config{}, fmt.Errorf("config file: %w", err)
		}
		if err := k.Load(file.Provider(path), yaml.Parser()); err != nil {
			return Config{}, fmt.Errorf("read config file %s: %w", path, err)
		}
	}
	if environ == nil {
		environ = os.Environ
	}
	// Read the environment directly (not through koanf's env provider) so
	// that an empty value, which turns a listener off, is kept.
	envMap := map[string]any{}
	for _, kv := range environ() {
		name, val, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, "BOURSE_") {
			continue
		}
		key := envKey(name)
		if listKeys[key] { // a list: comma-separated
			var l []string
			for _, o := range strings.Split(val, ",") {
				if o = strings.TrimSpace(o); o != "" {
					l = append(l, o)
				}
			}
			envMap[key] = l
			continue
		}
		envMap[key] = val
	}
	if err := k.Load(mapProvider(envMap), nil); err != nil {
		return Config{}, err
	}
	if err := k.Load(posflag.ProviderWithFlag(fs, ".", k, func(f *pflag.Flag) (string, any) {
		key, ok := flagKeys[f.Name]
		if !ok || !f.Changed {
			return "", nil
		}
		return key, posflag.FlagVal(fs, f)
	}), nil); err != nil {
		return Config{}, err
	}
	var c Config
	if err := k.UnmarshalWithConf("", &c, koanf.UnmarshalConf{Tag: "koanf"}); err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	return c, c.Validate()
}

// Validate checks the config and says what is wrong.
func (c Config) Validate() error {
	for name, addr := range map[string]string{"amqp": c.Listeners.AMQP, "mqtt": c.Listeners.MQTT, "stomp": c.Listeners.STOMP, "http": c.Listeners.HTTP,
		"amqps": c.Listeners.AMQPS, "mqtts": c.Listeners.MQTTS, "stomps": c.Listeners.STOMPS, "https": c.Listeners.HTTPS} {
		if addr == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return fmt.Errorf("listeners.%s: %q is not host:port: %w", name, addr, err)
		}
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log.level: %q is not one of debug, info, warn, error", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		return fmt.Errorf("log.format: %q is not one of text, json", c.Log.Format)
	}
	switch c.Storage.Fsync {
	case "always", "never":
	case "interval":
		if c.Storage.FsyncInterval <= 0 {
			return fmt.Errorf("storage.fsync_interval must be positive with fsync: interval")
		}
	default:
		return fmt.Errorf("storage.fsync: %q is not one of always, interval, never", c.Storage.Fsync)
	}
	if c.DataDir == "" {
		return fmt.Errorf("data_dir must not be empty")
	}
	if c.Limits.MaxFrameBytes < 4096 {
		return fmt.Errorf("limits.max_frame_bytes: %d is below the AMQP minimum of 4096", c.Limits.MaxFrameBytes)
	}
	if c.Limits.MaxMessageBytes <= 0 {
		return fmt.Errorf("limits.max_message_bytes must be positive")
	}
	if c.MetricsPrefix != "bourse" && c.MetricsPrefix != "rabbitmq" {
		return fmt.Errorf("metrics_prefix: %q is not one of bourse, rabbitmq", c.MetricsPrefix)
	}
	if c.Limits.MemoryHighWatermark < 0 || c.Limits.MemoryHighWatermark > 1 {
		return fmt.Errorf("limits.memory_high_watermark: %v is not a fraction between 0 and 1", c.Limits.MemoryHighWatermark)
	}
	if c.Limits.MemoryLimitBytes < 0 || c.Limits.DiskFreeLimitBytes < 0 {
		return fmt.Errorf("limits.memory_limit_bytes and limits.disk_free_limit_bytes must not be negative")
	}
	switch c.TLS.ClientAuth {
	case "", "none":
	case "optional", "required":
		if c.TLS.CAFile == "" {
			return fmt.Errorf("tls.client_auth %s needs tls.ca_file", c.TLS.ClientAuth)
		}
	default:
		return fmt.Errorf("tls.client_auth: %q is not one of none, optional, required", c.TLS.ClientAuth)
	}
	if c.TLS.CertLogin && (c.TLS.ClientAuth == "" || c.TLS.ClientAuth == "none") {
		return fmt.Errorf("tls.cert_login needs tls.client_auth optional or required")
	}
	if c.Limits.MaxConnections < 0 || c.Limits.MaxConnectionsPerUser < 0 || c.Limits.MaxQueuesPerVHost < 0 || c.Limits.ConnectionRatePerIP < 0 {
		return fmt.Errorf("limits.max_connections, max_connections_per_user, max_queues_per_vhost and connection_rate_per_ip must not be negative")
	}
	if c.Limits.MaxChannels < 1 || c.Limits.MaxChannels > 65535 {
		return fmt.Errorf("limits.max_channels: %d is not between 1 and 65535", c.Limits.MaxChannels)
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		return fmt.Errorf("tls.cert_file and tls.key_file go together")
	}
	return c.Cluster.validate()
}

func countSet(vals ...string) int {
	n := 0
	for _, v := range vals {
		if v != "" {
			n++
		}
	}
	return n
}

// minAckWait is the shortest cluster.ack_wait: nodes beat for the
// messages they hold every quarter of it, on a 250 ms tick.
const minAckWait = Duration(time.Second)

func (c Cluster) validate() error {
	switch c.Mode {
	case "", "none":
		return nil
	case "nats":
		if len(c.NATSURLs) == 0 {
			return fmt.Errorf("cluster.mode nats needs cluster.nats_urls")
		}
		if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
			return fmt.Errorf("cluster.tls_cert_file and cluster.tls_key_file go together")
		}
	case "embedded":
		if c.Name == "" {
			return fmt.Errorf("cluster.name must not be empty")
		}
		for name, addr := range map[string]string{"listen": c.Listen, "route_listen": c.RouteListen} {
			if addr == "" {
				continue
			}
			if _, _, err := net.SplitHostPort(addr); err != nil {
				return fmt.Errorf("cluster.%s: %q is not host:port: %w", name, addr, err)
			}
		}
		if len(c.Routes) > 0 && c.RouteListen == "" {
			return fmt.Errorf("cluster.routes need cluster.route_listen")
		}
		if (c.RouteUser == "") != (c.RoutePassword == "") {
			return fmt.Errorf("cluster.route_user and cluster.route_password go together")
		}
		if n := countSet(c.RouteTLSCertFile, c.RouteTLSKeyFile, c.RouteTLSCAFile); n != 0 && n != 3 {
			return fmt.Errorf("cluster.route_tls_cert_file, route_tls_key_file and route_tls_ca_file go together")
		}
	default:
		return fmt.Errorf("cluster.mode: %q is not one of none, nats, embedded", c.Mode)
	}
	if c.Replicas < 0 || c.Replicas > 5 {
		return fmt.Errorf("cluster.replicas: %d is not between 0 (auto) and 5", c.Replicas)
	}
	if c.StartTimeout <= 0 {
		return fmt.Errorf("cluster.start_timeout must be positive")
	}
	if c.AckWait < minAckWait {
		return fmt.Errorf("cluster.ack_wait: %s is below the minimum of %s", c.AckWait.D(), minAckWait.D())
	}
	if c.MQTTOrphanAfter < Duration(time.Second) {
		return fmt.Errorf("cluster.mqtt_orphan_after: %s is below the minimum of 1s", c.MQTTOrphanAfter.D())
	}
	if c.StreamIdle < 0 {
		return fmt.Errorf("cluster.stream_idle must not be negative")
	}
	return nil
}
