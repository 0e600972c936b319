package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Modes of a node.
const (
	ModeNATS     = "nats"     // a gateway on an existing JetStream cluster
	ModeEmbedded = "embedded" // also runs a nats-server node in process
)

// Options configure a cluster node.
type Options struct {
	Mode string // ModeNATS or ModeEmbedded

	// ModeNATS: the servers to connect to, and credentials (a .creds
	// file, or user and password, or a token).
	URLs            []string
	CredentialsFile string
	User, Password  string
	Token           string
	// TLSCAFile verifies the servers' certificates (else the system's
	// roots, for tls:// URLs or servers that require TLS); TLSCertFile and
	// TLSKeyFile are this gateway's, for servers that verify clients.
	TLSCAFile, TLSCertFile, TLSKeyFile string

	// ModeEmbedded: the cluster's name, this node's unique name, the NATS
	// client listener ("" = in-process only), the route listener and the
	// peers' route URLs (nats://host:port; this node's own may be listed),
	// and the JetStream store directory. An empty Listen takes a free
	// loopback port.
	ClusterName string
	NodeName    string
	Listen      string
	RouteListen string
	Routes      []string
	StoreDir    string
	// RouteUser and RoutePassword, when set, authenticate the routes (the
	// route listener requires them, the routes present them). RouteTLS…,
	// when set, make the routes mutual TLS with this node's certificate
	// and the CA of every node's.
	RouteUser, RoutePassword                          string
	RouteTLSCertFile, RouteTLSKeyFile, RouteTLSCAFile string

	// Replicas of the topology bucket; 0 = 3 when the cluster has three
	// nodes or more, else 1.
	Replicas int
	// MaxMessageBytes is the largest message body Bourse accepts: embedded
	// mode raises the NATS payload limit (1 MiB by default) to carry it,
	// up to NATS's 64 MiB ceiling.
	MaxMessageBytes int
	// Timeout bounds the start (JetStream ready, initial replay) [30s]
	// and each topology change [10s].
	StartTimeout, Timeout time.Duration
	// AckWait is how long the messages a node holds stay with it after
	// its last heartbeat (a node that dies or is cut off); 0 = AckWait.
	AckWait time.Duration
	// MQTTOrphanAfter is how long a node must be down (no answer on its
	// liveness subject) before the live nodes adopt the MQTT sessions it
	// held, so that they expire and their delayed wills go out; 0 =
	// OrphanAfter.
	MQTTOrphanAfter time.Duration
	// StreamIdle is how long this node keeps copying a stream after its
	// last reader here is gone; then the copy stops and its records are
	// dropped. 0 = StreamIdle.
	StreamIdle time.Duration
	// RouteAdvertise is the route address this node gives its peers
	// ("" = RouteListen).
	RouteAdvertise string
	Logger         *slog.Logger
}

// Node is this process's membership of a Bourse cluster: a NATS
// connection, the embedded server in ModeEmbedded, and the replicated
// topology.
type Node struct {
	srv     *server.Server
	nc      *nats.Conn // control: the topology
	data    *nats.Conn // messages of the shared queues
	fan     *nats.Conn // fan-out to node-local queues (no echo)
	topo    *Topology
	queues  *Queues
	streams *Streams
	users   *Users
	fanout  *Fanout
	mqtt    *MQTT
	log     *slog.Logger
}

// Start starts the embedded server (ModeEmbedded), connects, and opens the
// topology bucket. The caller then attaches a broker with
// Topology().Start.
func Start(ctx context.Context, o Options) (*Node, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, o.StartTimeout)
	defer cancel()
	n := &Node{log: o.Logger}
	replicas := o.Replicas
	var connect []nats.Option
	var urls string
	switch o.Mode {
	case ModeEmbedded:
		srv, err := startServer(o)
		if err != nil {
			return nil, err
		}
		n.srv = srv
		connect = append(connect, nats.InProcessServer(srv))
		if replicas <= 0 {
			replicas = 1
			if 1+len(peerRoutes(o.Routes, o.RouteListen)) >= 3 {
				replicas = 3
			}
		}
	case ModeNATS:
		if len(o.URLs) == 0 {
			return nil, errors.New("cluster: mode nats needs at least one URL")
		}
		urls = strings.Join(o.URLs, ",")
		switch {
		case o.CredentialsFile != "":
			connect = append(connect, nats.UserCredentials(o.CredentialsFile))
		case o.User != "":
			connect = append(connect, nats.UserInfo(o.User, o.Password))
		case o.Token != "":
			connect = append(connect, nats.Token(o.Token))
		}
		if o.TLSCAFile != "" {
			connect = append(connect, nats.RootCAs(o.TLSCAFile))
		}
		if o.TLSCertFile != "" {
			connect = append(connect, nats.ClientCert(o.TLSCertFile, o.TLSKeyFile))
		}
	default:
		return nil, fmt.Errorf("cluster: unknown mode %q", o.Mode)
	}
	name := "bourse"
	if o.NodeName != "" {
		name += " " + o.NodeName
	}
	connect = append(connect, nats.MaxReconnects(-1), nats.RetryOnFailedConnect(true),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				o.Logger.Warn("disconnected from NATS", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { o.Logger.Info("reconnected to NATS", "url", c.ConnectedUrlRedacted()) }))
	nc, err := nats.Connect(urls, append(connect, nats.Name(name))...)
	if err != nil {
		n.Close()
		return nil, fmt.Errorf("cluster: connect to NATS: %w", err)
	}
	n.nc = nc
	// A connection of its own for messages, so that a slow data path
	// cannot get the topology's connection dropped.
	if n.data, err = nats.Connect(urls, append(connect, nats.Name(name+" data"))...); err != nil {
		n.Close()
		return nil, fmt.Errorf("cluster: connect to NATS: %w", err)
	}
	// And one for the fan-out, without echo: a node never receives its own
	// fan-out publishes, and a node that does not keep up is cut off (and
	// reconnects) without its control or JetStream connections.
	if n.fan, err = nats.Connect(urls, append(connect, nats.Name(name+" fanout"), nats.NoEcho())...); err != nil {
		n.Close()
		return nil, fmt.Errorf("cluster: connect to NATS: %w", err)
	}
	var acc *server.Account
	if n.srv != nil {
		acc = n.srv.GlobalAccount()
	}
	if n.fanout, err = newFanout(n.fan, acc, o.Logger.With("component", "fanout")); err != nil {
		n.Close()
		return nil, fmt.Errorf("cluster: fan-out: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		n.Close()
		return nil, fmt.Errorf("cluster: JetStream: %w", err)
	}
	n.topo, err = OpenTopology(ctx, js, TopologyOptions{Replicas: replicas, Timeout: o.Timeout, Logger: o.Logger.With("component", "topology")})
	if err != nil {
		n.Close()
		return nil, fmt.Errorf("cluster: %w", err)
	}
	qreplicas := replicas
	if qreplicas <= 0 {
		qreplicas = 3 // falls back to 1 when JetStream is not clustered
	}
	timeout := o.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ackWait := o.AckWait
	if ackWait <= 0 {
		ackWait = AckWait
	}
	if n.queues, err = newQueues(n.data, qreplicas, timeout, ackWait, o.Logger.With("component", "queues")); err != nil {
		n.Close()
		return nil, fmt.Errorf("cluster: JetStream: %w", err)
	}
	n.topo.shared = n.queues
	streamIdle := o.StreamIdle
	if streamIdle <= 0 {
		streamIdle = StreamIdle
	}
	if n.streams, err = newStreams(n.data, qreplicas, timeout, streamIdle, o.Logger.With("component", "streams")); err != nil {
		n.Close()
		return nil, fmt.Errorf("cluster: %w", err)
	}
	n.topo.streams = n.streams
	if n.users, err = openUsers(ctx, js, replicas, timeout, o.Logger.With("component", "users")); err != nil {
		n.Close()
		return nil, fmt.Errorf("cluster: %w", err)
	}
	node := o.NodeName
	if node == "" {
		node, _ = os.Hostname()
	}
	if n.mqtt, err = newMQTT(ctx, nc, js, node, replicas, timeout, o.MQTTOrphanAfter, o.Logger.With("component", "mqtt")); err != nil {
		n.Close()
		return nil, fmt.Errorf("cluster: %w", err)
	}
	return n, nil
}

// Users returns the cluster's store of users and permissions (an
// auth.Persister); Users().Watch applies other nodes' changes.
func (n *Node) Users() *Users { return n.users }

// MQTT returns the MQTT sessions and retained messages shared by the
// nodes (protocols/mqtt's Cluster).
func (n *Node) MQTT() *MQTT { return n.mqtt }

// Streams returns the store of streams (a router.SharedStreams).
func (n *Node) Streams() *Streams { return n.streams }

// Queues returns the store of the shared queues' messages (a
// router.SharedQueues).
func (n *Node) Queues() *Queues { return n.queues }

// Fanout returns the fan-out to the other nodes' node-local queues (a
// router.NodeFanout); give it the broker with Attach.
func (n *Node) Fanout() *Fanout { return n.fanout }

// payloadOverhead is what a message's encoding (properties, headers)
// adds to its body, at most, in a NATS payload: Bourse's header tables are
// bounded by its frame size (128 KiB).
const payloadOverhead = 192 << 10

// MaxMessageBytes is the largest message body the cluster can carry (the
// NATS payload limit minus room for properties and headers); the adapters'
// limit is lowered to it, so a larger message is refused by each protocol
// in its own way (AMQP 406, MQTT 0x95, STOMP ERROR) before it is routed.
func (n *Node) MaxMessageBytes() int {
	return int(n.data.MaxPayload()) - payloadOverhead
}

// Topology returns the replicated topology (a router.Replicator).
func (n *Node) Topology() *Topology { return n.topo }

// ClientURL returns the embedded server's NATS client URL, or "" when the
// node is not embedded.
func (n *Node) ClientURL() string {
	if n.srv == nil {
		return ""
	}
	return n.srv.ClientURL()
}

// Close stops the topology watcher, closes the connection and shuts the
// embedded server down.
func (n *Node) Close() {
	if n.mqtt != nil {
		n.mqtt.Close()
	}
	if n.topo != nil {
		n.topo.Close()
	}
	if n.users != nil {
		n.users.Close()
	}
	if n.queues != nil {
		n.queues.Close()
	}
	if n.streams != nil {
		n.streams.Close()
	}
	if n.fanout != nil {
		n.fanout.close()
	}
	if n.fan != nil {
		n.fan.Close()
	}
	if n.data != nil {
		// Flush first: the acknowledgements and naks just sent.
		_ = n.data.FlushTimeout(time.Second)
		n.data.Close()
	}
	if n.nc != nil {
		n.nc.Close()
	}
	if n.srv != nil {
		n.srv.Shutdown()
		n.srv.WaitForShutdown()
	}
}

func startServer(o Options) (*server.Server, error) {
	if o.StoreDir == "" {
		return nil, errors.New("cluster: mode embedded needs a store directory")
	}
	so := &server.Options{
		ServerName: o.NodeName,
		JetStream:  true,
		StoreDir:   o.StoreDir,
		// Every write is fsynced before JetStream acknowledges it, so that
		// an acknowledgement means durable (JetStream's default syncs every
		// two minutes).
		SyncAlways: true,
		NoSigs:     true,
		// The server needs a client listener (its routes wait for it);
		// with none configured it takes a free loopback port.
		Host: "127.0.0.1",
		Port: server.RANDOM_PORT,
	}
	if need := o.MaxMessageBytes + payloadOverhead; need > server.MAX_PAYLOAD_SIZE {
		so.MaxPayload = int32(min(need, 64<<20)) // NATS's own ceiling
		so.MaxPending = max(so.MaxPending, int64(so.MaxPayload)*2)
	}
	if o.Listen != "" {
		host, port, err := splitHostPort(o.Listen)
		if err != nil {
			return nil, fmt.Errorf("cluster.listen: %w", err)
		}
		so.Host, so.Port = host, port
	}
	if peers := peerRoutes(o.Routes, o.RouteListen); len(peers) > 0 {
		if o.RouteListen == "" {
			return nil, errors.New("cluster: routes need a route listen address")
		}
		host, port, err := splitHostPort(o.RouteListen)
		if err != nil {
			return nil, fmt.Errorf("cluster.route_listen: %w", err)
		}
		if o.NodeName == "" {
			return nil, errors.New("cluster: a clustered node needs a node name")
		}
		so.Cluster = server.ClusterOpts{Name: o.ClusterName, Host: host, Port: port, Advertise: o.RouteAdvertise,
			Username: o.RouteUser, Password: o.RoutePassword}
		so.Routes = server.RoutesFromStr(strings.Join(o.Routes, ","))
		for _, u := range so.Routes {
			if o.RouteUser != "" && u.User == nil {
				u.User = url.UserPassword(o.RouteUser, o.RoutePassword)
			}
		}
		if o.RouteTLSCertFile != "" {
			tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: o.RouteTLSCertFile, KeyFile: o.RouteTLSKeyFile,
				CaFile: o.RouteTLSCAFile, Verify: true})
			if err != nil {
				return nil, fmt.Errorf("cluster: route TLS: %w", err)
			}
			tc.RootCAs = tc.ClientCAs // the same config dials the routes
			so.Cluster.TLSConfig, so.Cluster.TLSTimeout = tc, 5
		}
	}
	srv, err := server.NewServer(so)
	if err != nil {
		return nil, fmt.Errorf("cluster: embedded NATS server: %w", err)
	}
	srv.SetLoggerV2(natsLogger{o.Logger.With("component", "nats")}, false, false, false)
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, errors.New("cluster: embedded NATS server not ready in 10s")
	}
	return srv, nil
}

// peerRoutes returns the route URLs that are not this node's own route
// listener.
func peerRoutes(routes []string, own string) []string {
	seen := map[string]bool{}
	var out []string
	for _, r := range routes {
		u, err := url.Parse(r)
		host := r
		if err == nil && u.Host != "" {
			host = u.Host
		}
		if host == own || seen[host] {
			continue
		}
		seen[host] = true
		out = append(out, r)
	}
	return out
}

func splitHostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return "", 0, fmt.Errorf("port %q: %w", p, err)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	return host, port, nil
}

// natsLogger sends the embedded server's log to slog.
type natsLogger struct{ l *slog.Logger }

func (n natsLogger) Noticef(format string, v ...any) { n.l.Debug(fmt.Sprintf(format, v...)) }
func (n natsLogger) Warnf(format string, v ...any)   { n.l.Warn(fmt.Sprintf(format, v...)) }
func (n natsLogger) Fatalf(format string, v ...any)  { n.l.Error(fmt.Sprintf(format, v...)) }
func (n natsLogger) Errorf(format string, v ...any)  { n.l.Error(fmt.Sprintf(format, v...)) }
func (n natsLogger) Debugf(format string, v ...any)  { n.l.Debug(fmt.Sprintf(format, v...)) }
func (n natsLogger) Tracef(format string, v ...any)  { n.l.Debug(fmt.Sprintf(format, v...)) }
