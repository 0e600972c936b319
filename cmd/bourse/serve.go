package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/bourse-mq/bourse/auth"
	"github.com/bourse-mq/bourse/cluster"
	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/httpapi"
	"github.com/bourse-mq/bourse/httpapi/console"
	"github.com/bourse-mq/bourse/httpapi/mgmt"
	"github.com/bourse-mq/bourse/internal/alarm"
	"github.com/bourse-mq/bourse/internal/config"
	"github.com/bourse-mq/bourse/internal/netx"
	"github.com/bourse-mq/bourse/internal/wiring"
	"github.com/bourse-mq/bourse/protocols/amqp"
	"github.com/bourse-mq/bourse/protocols/mqtt"
	"github.com/bourse-mq/bourse/protocols/stomp"
	"github.com/bourse-mq/bourse/router"
	"github.com/bourse-mq/bourse/storage/durable"
	"github.com/bourse-mq/bourse/storage/meta"
	"github.com/bourse-mq/bourse/storage/stream"
)

// service is what every listener-backed part of the broker implements.
type service interface {
	Name() string
	Serve(ln net.Listener) error
	Shutdown(ctx context.Context) error
}

func newServeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "run the broker",
		Args:  cobra.NoArgs,
	}
	config.RegisterFlags(cmd.Flags())
	cmd.Flags().Bool("print-config", false, "print the effective configuration as YAML and exit")
	cmd.Flags().String("ready-file", "", "write the bound listener addresses as JSON to this file once serving")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg, err := config.Load(cmd.Flags(), nil)
		if err != nil {
			return err
		}
		if p, _ := cmd.Flags().GetBool("print-config"); p {
			y, err := cfg.YAML()
			if err != nil {
				return err
			}
			_, err = fmt.Fprint(cmd.OutOrStdout(), y)
			return err
		}
		readyFile, _ := cmd.Flags().GetString("ready-file")
		log, level := newLogger(cfg.Log, cmd.ErrOrStderr())
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		reload := func() (config.Config, error) { return config.Load(cmd.Flags(), nil) }
		return serve(ctx, cfg, log, readyFile, level, reload)
	}
	return cmd
}

func newLogger(c config.Log, w interface{ Write([]byte) (int, error) }) (*slog.Logger, *slog.LevelVar) {
	lvl := new(slog.LevelVar)
	_ = lvl.UnmarshalText([]byte(c.Level))
	o := &slog.HandlerOptions{Level: lvl}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, o)), lvl
	}
	return slog.New(slog.NewTextHandler(w, o)), lvl
}

// serve runs the broker until ctx is done, then shuts down gracefully.
// SIGHUP reloads the configuration's log level, memory and disk limits,
// and the TLS certificate; everything else needs a restart.
func serve(ctx context.Context, cfg config.Config, log *slog.Logger, readyFile string, level *slog.LevelVar, reload func() (config.Config, error)) error {
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	ms, err := meta.Open(cfg.DataDir)
	if err != nil {
		return fmt.Errorf("%w (is another bourse using data dir %s?)", err, cfg.DataDir)
	}
	defer ms.Close()
	defs, err := ms.Load()
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	fsyncs := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "bourse_fsync_seconds",
		Help: "Time each fsync took, by log.", Buckets: prometheus.ExponentialBuckets(50e-6, 2, 16)}, []string{"log"})
	confirms := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "bourse_confirm_seconds",
		Help: "Time from publish to confirm for messages that had to reach the disk.", Buckets: prometheus.ExponentialBuckets(50e-6, 2, 16)})
	reg.MustRegister(fsyncs, confirms)
	journal, recovered, err := durable.Open(filepath.Join(cfg.DataDir, "journal"), durable.Options{
		Fsync: cfg.Storage.Fsync, FsyncInterval: cfg.Storage.FsyncInterval.D(), Logger: log.With("component", "journal"),
		LazyRecovery: true, OnFsync: func(d time.Duration) { fsyncs.WithLabelValues("journal").Observe(d.Seconds()) },
	})
	if err != nil {
		return err
	}
	// Closed after the listeners have shut down (defers run last in, first
	// out), so in-flight confirms are written and synced first.
	defer func() {
		if err := journal.Close(); err != nil {
			log.Error("close journal", "err", err)
		}
	}()
	streams, err := stream.Open(filepath.Join(cfg.DataDir, "streams"), stream.Options{
		Fsync: cfg.Storage.Fsync, Interval: cfg.Storage.FsyncInterval.D(), Logger: log.With("component", "streams"),
		OnFsync: func(d time.Duration) { fsyncs.WithLabelValues("stream").Observe(d.Seconds()) },
	})
	if err != nil {
		return err
	}
	defer streams.Close()
	var node *cluster.Node
	if cfg.Cluster.Mode != "" && cfg.Cluster.Mode != "none" {
		if node, err = cluster.Start(ctx, clusterOptions(cfg, log)); err != nil {
			return err
		}
		// Closed after the listeners have shut down.
		defer node.Close()
		if max := node.MaxMessageBytes(); max < cfg.Limits.MaxMessageBytes {
			log.Warn("cluster: the NATS payload limit lowers the largest message accepted", "max_message_bytes", max,
				"configured", cfg.Limits.MaxMessageBytes)
			cfg.Limits.MaxMessageBytes = max
		}
	}
	ropts := router.Options{Logger: log, Meta: ms, Messages: journal, Streams: wiring.StreamStore(streams),
		QueueMemoryBytes: cfg.Storage.QueueMemoryBytes,
		OnConfirm:        func(d time.Duration) { confirms.Observe(d.Seconds()) }}
	if node != nil {
		ropts.Replicator = node.Topology()
		ropts.Shared = node.Queues()
		ropts.Fanout = node.Fanout()
		ropts.SharedStreams = node.Streams()
	}
	broker := router.New(ropts)
	if node != nil {
		node.Fanout().Attach(broker)
	}
	if node == nil {
		if err := broker.Restore(defs); err != nil {
			return err
		}
		log.Info("restored topology", "vhosts", len(defs.VHosts), "exchanges", len(defs.Exchanges), "queues", len(defs.Queues), "bindings", len(defs.Bindings))
	} else {
		if n := len(defs.Exchanges) + len(defs.Queues) + len(defs.Bindings); n > 0 {
			log.Warn("cluster mode: the topology comes from the cluster; the local metadata store's is ignored", "objects", n)
		}
		sctx, cancel := context.WithTimeout(ctx, cfg.Cluster.StartTimeout.D())
		err := node.Topology().Start(sctx, broker)
		cancel()
		if err != nil {
			return fmt.Errorf("cluster: %w", err)
		}
	}
	restoreMessages(broker, journal, recovered, log)
	broker.SetMaxQueuesPerVHost(cfg.Limits.MaxQueuesPerVHost)
	var records auth.Persister = ms
	if node != nil {
		records = node.Users() // users and permissions are the cluster's
	}
	users, err := openUsers(records, cfg, log)
	if err != nil {
		return err
	}
	if node != nil {
		sctx, cancel := context.WithTimeout(ctx, cfg.Cluster.StartTimeout.D())
		err := node.Users().Watch(sctx, users)
		cancel()
		if err != nil {
			return err
		}
	}

	var ready atomic.Bool
	registerJournalMetrics(reg, journal)
	web := httpapi.New(httpapi.Options{Logger: log, Ready: ready.Load, Registry: reg})
	a := cfg.Auth
	certLogin := cfg.TLS.CertLogin
	amqpSrv := amqp.New(broker, amqp.Options{
		Logger: log.With("service", "amqp"), DefaultVHost: a.DefaultVHost, Auth: users, CertLogin: certLogin,
		FrameMax: uint32(cfg.Limits.MaxFrameBytes), Heartbeat: cfg.Heartbeat.D(), MaxMessageBytes: cfg.Limits.MaxMessageBytes,
		ChannelMax: uint16(cfg.Limits.MaxChannels), MaxConsumersPerChannel: cfg.Limits.MaxConsumersPerChannel,
	})
	stompSrv := stomp.New(broker, stomp.Options{
		Logger: log.With("service", "stomp"), DefaultVHost: a.DefaultVHost, DefaultUser: a.DefaultUser, DefaultPass: a.DefaultPass,
		Auth: users, CertLogin: certLogin,
		MaxBodyBytes: cfg.Limits.MaxMessageBytes, WebSocketOriginPatterns: cfg.WebSocketOrigins,
	})
	mopts := mqtt.Options{
		Logger: log.With("service", "mqtt"), DefaultVHost: a.DefaultVHost, DefaultUser: a.DefaultUser, DefaultPass: a.DefaultPass,
		Auth: users, CertLogin: certLogin,
		WebSocketOriginPatterns: cfg.WebSocketOrigins, Store: ms,
	}
	if node != nil {
		// Sessions and retained messages are the cluster's, not this node's.
		mopts.Cluster = node.MQTT()
	}
	mqttSrv := mqtt.New(broker, mopts)
	monitor := alarm.Start(alarm.Options{
		MemoryLimit: memoryLimit(cfg.Limits), DiskFreeLimit: cfg.Limits.DiskFreeLimitBytes, Dir: cfg.DataDir,
		Logger: log.With("component", "alarm"),
		OnChange: func(mem, disk bool) {
			reason := ""
			switch {
			case mem && disk:
				reason = "memory and disk alarms"
			case mem:
				reason = "memory alarm"
			case disk:
				reason = "disk alarm"
			}
			for _, s := range []interface{ SetBlocked(bool, string) }{amqpSrv, mqttSrv, stompSrv} {
				s.SetBlocked(mem || disk, reason)
			}
		},
	})
	defer monitor.Stop()
	registerAlarmMetrics(reg, monitor)
	web.MountMetrics(httpapi.MetricsOptions{Broker: broker, Registry: reg, Prefix: cfg.MetricsPrefix,
		Protocols: map[string]httpapi.ProtocolStats{"amqp": amqpSrv, "mqtt": mqttSrv, "stomp": stompSrv}})
	var listeners atomic.Pointer[[]mgmt.Listener]
	web.Handle("/api/", mgmt.New(mgmt.Options{Broker: broker, Users: users, Node: monitor, Version: versionString(),
		Listeners: func() []mgmt.Listener {
			if l := listeners.Load(); l != nil {
				return *l
			}
			return nil
		}}))
	web.Handle("/console/", console.Handler("/console/"))
	web.Handle("GET /{$}", http.RedirectHandler("/console/", http.StatusFound))
	web.MountStreams(httpapi.StreamsOptions{Broker: broker, Store: streams, Authorize: streamAuth(users)})
	web.Handle("/ws/stomp", stompSrv.WebSocketHandler())
	web.Handle("/ws", stompSrv.WebSocketHandler()) // RabbitMQ Web-STOMP's path
	web.Handle("/ws/mqtt", mqttSrv.WebSocketHandler())
	web.Handle("/mqtt", mqttSrv.WebSocketHandler()) // RabbitMQ Web-MQTT's path

	type bound struct {
		svc  service
		ln   net.Listener
		name string
	}
	var running []bound
	closeAll := func() {
		for _, b := range running {
			b.ln.Close()
		}
	}
	var tlsCfg *tls.Config
	var tlsCerts *netx.Certs
	if cfg.TLS.CertFile != "" {
		var certs *netx.Certs
		tlsCfg, certs, err = netx.NewTLSConfig(netx.TLSOptions{CertFile: cfg.TLS.CertFile, KeyFile: cfg.TLS.KeyFile,
			CAFile: cfg.TLS.CAFile, ClientAuth: cfg.TLS.ClientAuth})
		if err != nil {
			return err
		}
		tlsCerts = certs
	}
	for _, l := range []struct {
		addr string
		svc  service
		tls  bool
	}{
		{cfg.Listeners.AMQP, amqpSrv, false},
		{cfg.Listeners.MQTT, mqttSrv, false},
		{cfg.Listeners.STOMP, stompSrv, false},
		{cfg.Listeners.HTTP, web, false},
		{cfg.Listeners.AMQPS, amqpSrv, true},
		{cfg.Listeners.MQTTS, mqttSrv, true},
		{cfg.Listeners.STOMPS, stompSrv, true},
		{cfg.Listeners.HTTPS, web, true},
	} {
		name := l.svc.Name()
		if l.tls {
			name += "s"
			if tlsCfg == nil {
				continue // TLS listeners need tls.cert_file
			}
		}
		if l.addr == "" {
			log.Info("listener off", "service", name)
			continue
		}
		ln, err := net.Listen("tcp", l.addr)
		if err != nil {
			closeAll()
			return fmt.Errorf("%s listener: %w", name, err)
		}
		ln = netx.RateLimitListener(ln, cfg.Limits.ConnectionRatePerIP, log.With("service", name))
		if l.svc != web { // HTTP keeps *net.TCPConn: the stream endpoint's sendfile needs it
			ln = netx.CountingListener(ln)
		}
		if l.tls {
			ln = tls.NewListener(ln, tlsCfg)
		}
		running = append(running, bound{l.svc, ln, name})
	}

	var ls []mgmt.Listener
	for _, b := range running {
		proto := b.name
		if ssl, ok := map[string]string{"amqps": "amqp/ssl", "mqtts": "mqtt/ssl", "stomps": "stomp/ssl"}[b.name]; ok {
			proto = ssl
		}
		ls = append(ls, mgmt.Listener{Protocol: proto, Addr: b.ln.Addr().String()})
	}
	listeners.Store(&ls)
	errc := make(chan error, len(running))
	var wg sync.WaitGroup
	addrs := map[string]string{}
	if node != nil && node.ClientURL() != "" {
		addrs["nats"] = node.ClientURL()
	}
	for _, b := range running {
		addrs[b.name] = b.ln.Addr().String()
		log.Info("listening", "service", b.name, "addr", b.ln.Addr().String())
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := b.svc.Serve(b.ln); err != nil {
				errc <- fmt.Errorf("%s: %w", b.name, err)
			}
		}()
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	hupDone := make(chan struct{})
	defer close(hupDone)
	go func() {
		for {
			select {
			case <-hup:
				onReload(log, level, reload, monitor, tlsCerts, cfg.TLS.CertFile, users, broker)
			case <-hupDone:
				return
			}
		}
	}()
	ready.Store(true)
	notifySystemd(log, "READY=1")
	defer notifySystemd(log, "STOPPING=1")
	if readyFile != "" {
		if err := writeReadyFile(readyFile, addrs); err != nil {
			log.Error("write ready file", "path", readyFile, "err", err)
		}
	}
	log.Info("bourse ready", "version", versionString(), "data_dir", cfg.DataDir)

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case runErr = <-errc:
		log.Error("service failed; shutting down", "err", runErr)
	}
	ready.Store(false)
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	shut := map[service]bool{}
	for i := len(running) - 1; i >= 0; i-- {
		svc := running[i].svc
		if shut[svc] {
			continue // its TLS and plain listeners share one Shutdown
		}
		shut[svc] = true
		if err := svc.Shutdown(sctx); err != nil && !errors.Is(err, context.Canceled) {
			log.Warn("shutdown", "service", svc.Name(), "err", err)
		}
	}
	// A service whose own listener is off may still serve WebSocket clients
	// through the HTTP listener, and has background work to stop.
	for _, svc := range []service{stompSrv, mqttSrv, amqpSrv} {
		if !shut[svc] {
			if err := svc.Shutdown(sctx); err != nil && !errors.Is(err, context.Canceled) {
				log.Warn("shutdown", "service", svc.Name(), "err", err)
			}
		}
	}
	wg.Wait()
	log.Info("stopped")
	return runErr
}

// onReload applies what SIGHUP may change without a restart.
func onReload(log *slog.Logger, level *slog.LevelVar, reload func() (config.Config, error), m *alarm.Monitor, certs *netx.Certs, certFile string,
	users *auth.Store, b *router.Broker) {
	cfg, err := reload()
	if err != nil {
		log.Error("configuration not reloaded", "err", err)
		return
	}
	if err := level.UnmarshalText([]byte(cfg.Log.Level)); err != nil {
		log.Error("log level not reloaded", "err", err)
	}
	m.SetLimits(memoryLimit(cfg.Limits), cfg.Limits.DiskFreeLimitBytes)
	users.SetLimits(cfg.Limits.MaxConnections, cfg.Limits.MaxConnectionsPerUser)
	b.SetMaxQueuesPerVHost(cfg.Limits.MaxQueuesPerVHost)
	if certs != nil {
		if err := certs.Reload(); err != nil {
			log.Error("TLS certificate not reloaded; the old one stays", "err", err)
		}
	}
	mem, disk := m.Limits()
	log.Info("configuration reloaded", "log_level", cfg.Log.Level, "memory_limit_bytes", mem, "disk_free_limit_bytes", disk, "tls_cert", certFile)
}

// memoryLimit is the memory alarm's threshold in bytes.
func memoryLimit(l config.Limits) int64 {
	if l.MemoryLimitBytes > 0 {
		return l.MemoryLimitBytes
	}
	if l.MemoryHighWatermark > 0 {
		return int64(float64(alarm.TotalMemory()) * l.MemoryHighWatermark)
	}
	return 0
}

// notifySystemd sends a state to systemd's notify socket (Type=notify
// units); it does nothing outside systemd.
func notifySystemd(log *slog.Logger, state string) {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return
	}
	if path[0] == '@' {
		path = "\x00" + path[1:] // an abstract socket
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		log.Warn("systemd notify", "err", err)
		return
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		log.Warn("systemd notify", "err", err)
	}
}

// openUsers opens the user store kept in the metadata store (in cluster
// mode: the cluster's users bucket). On the first
// start (no user at all) it creates the configured default user as an
// administrator with every permission on the default vhost, as RabbitMQ
// creates guest.
func openUsers(ms auth.Persister, cfg config.Config, log *slog.Logger) (*auth.Store, error) {
	a := cfg.Auth
	users, err := auth.Open(ms, auth.Options{LoopbackUsers: a.LoopbackUsers, MaxFailuresPerMinute: a.MaxFailuresPerMinute,
		MaxConnections: cfg.Limits.MaxConnections, MaxConnectionsPerUser: cfg.Limits.MaxConnectionsPerUser,
		Logger: log.With("component", "auth")})
	if err != nil {
		return nil, err
	}
	if users.Empty() && a.DefaultUser != "" {
		if err := users.PutUser(a.DefaultUser, a.DefaultPass, []string{"administrator"}); err != nil {
			return nil, fmt.Errorf("default user: %w", err)
		}
		if err := users.SetPermissions(auth.Permission{User: a.DefaultUser, VHost: a.DefaultVHost, Configure: ".*", Write: ".*", Read: ".*"}); err != nil {
			return nil, fmt.Errorf("default user: %w", err)
		}
		log.Info("created the default user", "user", a.DefaultUser, "vhost", a.DefaultVHost)
	}
	return users, nil
}

// streamAuth checks HTTP Basic credentials for the stream endpoints: read
// permission on the stream in its vhost, for records and for offsets.
func streamAuth(users *auth.Store) func(w http.ResponseWriter, r *http.Request, vhost, stream string, write bool) bool {
	return func(w http.ResponseWriter, r *http.Request, vhost, stream string, _ bool) bool {
		user, pass, ok := r.BasicAuth()
		var p *auth.Principal
		var err error
		if ok {
			p, err = users.Authenticate(user, pass, auth.Addr(r.RemoteAddr))
		}
		if !ok || err != nil {
			w.Header().Set("WWW-Authenticate", `Basic realm="bourse"`)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error":"not_authorised","reason":"Login failed"}` + "\n"))
			return false
		}
		if err := p.Check(vhost, auth.Queue, stream, auth.Read); err != nil {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			b, _ := json.Marshal(map[string]string{"error": "access_refused", "reason": err.Error()})
			_, _ = w.Write(append(b, '\n'))
			return false
		}
		return true
	}
}

// writeReadyFile writes the addresses atomically (tmp + rename), so a reader
// polling for the file never sees it half written.
func writeReadyFile(path string, addrs map[string]string) error {
	b, err := json.Marshal(addrs)
	if err != nil {
		return err
	}
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// restoreMessages puts recovered persistent messages back into their queues.
// Messages of a queue that no longer exists are dropped from the journal.
func restoreMessages(b *router.Broker, j *durable.Store, rec map[[2]string][]durable.Recovered, log *slog.Logger) {
	total := 0
	for name, msgs := range rec {
		vhost, queueName := name[0], name[1]
		v, err := b.VHost(vhost)
		var q interface {
			Restore(seq uint64, m *core.Message, redelivered bool)
			RestorePaged(seq uint64, m *core.Message, redelivered bool, size int)
		}
		if err == nil {
			if qq, qerr := v.Queue(queueName, 0); qerr == nil && qq.Durable() {
				q = qq
			}
		}
		if q == nil {
			log.Warn("journal holds messages of a queue that no longer exists; dropping them", "vhost", vhost, "queue", queueName, "messages", len(msgs))
			j.QueueDeleted(vhost, queueName)
			continue
		}
		for _, r := range msgs {
			if r.Paged {
				q.RestorePaged(r.Seq, r.Msg, r.Redelivered, r.Size)
			} else {
				q.Restore(r.Seq, r.Msg, r.Redelivered)
			}
		}
		total += len(msgs)
	}
	log.Info("restored messages", "messages", total, "queues", len(rec))
}

// registerJournalMetrics exposes the journal's counters, read at scrape time.
func registerJournalMetrics(reg *prometheus.Registry, j *durable.Store) {
	counter := func(name, help string, v func(durable.Stats) uint64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help},
			func() float64 { return float64(v(j.Stats())) }))
	}
	counter("bourse_journal_records_total", "Records appended to the message journal.", func(s durable.Stats) uint64 { return s.Records })
	counter("bourse_journal_batches_total", "Group-commit batches written to the message journal.", func(s durable.Stats) uint64 { return s.Batches })
	counter("bourse_journal_fsyncs_total", "fsync calls on the message journal.", func(s durable.Stats) uint64 { return s.Fsyncs })
	counter("bourse_journal_bytes_total", "Bytes written to the message journal.", func(s durable.Stats) uint64 { return s.Bytes })
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "bourse_journal_segments", Help: "Segment files of the message journal."},
		func() float64 { return float64(j.Stats().Segments) }))
}

func registerAlarmMetrics(reg *prometheus.Registry, m *alarm.Monitor) {
	gauge := func(name, help string, f func() float64) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
	}
	b2f := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	gauge("bourse_alarm_memory", "1 while the memory alarm blocks publishers.", func() float64 { mem, _ := m.Alarms(); return b2f(mem) })
	gauge("bourse_alarm_disk", "1 while the disk alarm blocks publishers.", func() float64 { _, disk := m.Alarms(); return b2f(disk) })
	gauge("bourse_memory_used_bytes", "Memory the broker holds from the OS, as the memory alarm sees it.", func() float64 { return float64(m.Used()) })
	gauge("bourse_memory_limit_bytes", "The memory alarm's threshold (0: off).", func() float64 { l, _ := m.Limits(); return float64(l) })
	gauge("bourse_disk_free_bytes", "Free bytes on the data directory's file system.", func() float64 { return float64(m.Free()) })
	gauge("bourse_disk_free_limit_bytes", "The disk alarm's threshold (0: off).", func() float64 { _, l := m.Limits(); return float64(l) })
}

// clusterOptions maps the cluster section of the config to the cluster
// package's options.
func clusterOptions(cfg config.Config, log *slog.Logger) cluster.Options {
	c := cfg.Cluster
	o := cluster.Options{
		Mode: c.Mode, URLs: c.NATSURLs, CredentialsFile: c.CredentialsFile, User: c.User, Password: c.Password, Token: c.Token,
		TLSCAFile: c.TLSCAFile, TLSCertFile: c.TLSCertFile, TLSKeyFile: c.TLSKeyFile,
		ClusterName: c.Name, NodeName: c.NodeName, Listen: c.Listen, RouteListen: c.RouteListen, Routes: c.Routes,
		RouteUser: c.RouteUser, RoutePassword: c.RoutePassword,
		RouteTLSCertFile: c.RouteTLSCertFile, RouteTLSKeyFile: c.RouteTLSKeyFile, RouteTLSCAFile: c.RouteTLSCAFile,
		StoreDir: c.StoreDir, Replicas: c.Replicas, StartTimeout: c.StartTimeout.D(), AckWait: c.AckWait.D(),
		MQTTOrphanAfter: c.MQTTOrphanAfter.D(), StreamIdle: c.StreamIdle.D(),
		MaxMessageBytes: cfg.Limits.MaxMessageBytes, Logger: log.With("component", "cluster"),
	}
	if o.StoreDir == "" {
		o.StoreDir = filepath.Join(cfg.DataDir, "cluster")
	}
	if o.NodeName == "" {
		host, _ := os.Hostname()
		_, port, _ := net.SplitHostPort(c.RouteListen)
		o.NodeName = host + "-" + port
	}
	return o
}
