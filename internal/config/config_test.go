package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func load(t *testing.T, args []string, env []string) (Config, error) {
	t.Helper()
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	RegisterFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return Load(fs, func() []string { return env })
}

func TestPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "bourse.yaml")
	os.WriteFile(file, []byte("data_dir: /from/file\nlisteners:\n  amqp: 127.0.0.1:1\n  mqtt: 127.0.0.1:2\n  stomp: 127.0.0.1:3\nstorage:\n  fsync: interval\n  fsync_interval: 50ms\nheartbeat: 10s\n"), 0o600)

	c, err := load(t, nil, nil)
	if err != nil || c.DataDir != "data" || c.Listeners.AMQP != "127.0.0.1:5672" || c.Heartbeat.D() != time.Minute {
		t.Fatalf("defaults: %+v %v", c, err)
	}
	c, err = load(t, []string{"--config", file}, nil)
	if err != nil || c.DataDir != "/from/file" || c.Listeners.AMQP != "127.0.0.1:1" || c.Storage.FsyncInterval.D() != 50*time.Millisecond || c.Heartbeat.D() != 10*time.Second {
		t.Fatalf("file: %+v %v", c, err)
	}
	c, err = load(t, []string{"--config", file}, []string{"BOURSE_LISTENERS_AMQP=127.0.0.1:9", "BOURSE_DATA_DIR=/from/env", "BOURSE_LISTENERS__MQTT=", "PATH=/bin"})
	if err != nil || c.DataDir != "/from/env" || c.Listeners.AMQP != "127.0.0.1:9" || c.Listeners.MQTT != "" || c.Listeners.STOMP != "127.0.0.1:3" {
		t.Fatalf("env: %+v %v", c, err)
	}
	c, err = load(t, []string{"--config", file, "--amqp-addr", "127.0.0.1:7", "--stomp-addr", ""}, []string{"BOURSE_LISTENERS_AMQP=127.0.0.1:9"})
	if err != nil || c.Listeners.AMQP != "127.0.0.1:7" || c.Listeners.STOMP != "" || c.DataDir != "/from/file" {
		t.Fatalf("flags: %+v %v", c, err)
	}
}

func TestWebSocketOrigins(t *testing.T) {
	c, err := load(t, []string{"--ws-origin", "a.example.com", "--ws-origin", "127.0.0.1:*"}, nil)
	if err != nil || len(c.WebSocketOrigins) != 2 || c.WebSocketOrigins[1] != "127.0.0.1:*" {
		t.Fatalf("flags: %v %v", c.WebSocketOrigins, err)
	}
	c, err = load(t, nil, []string{"BOURSE_WEBSOCKET_ORIGINS=x.example.com,y.example.com"})
	if err != nil || len(c.WebSocketOrigins) != 2 || c.WebSocketOrigins[0] != "x.example.com" {
		t.Fatalf("env: %v %v", c.WebSocketOrigins, err)
	}
	if c, _ := load(t, nil, []string{"BOURSE_AUTH_LOOPBACK_USERS=guest,ops"}); len(c.Auth.LoopbackUsers) != 2 || c.Auth.LoopbackUsers[1] != "ops" {
		t.Fatalf("env loopback_users %v", c.Auth.LoopbackUsers)
	}
	if c, _ := load(t, nil, nil); len(c.Auth.LoopbackUsers) != 1 || c.Auth.LoopbackUsers[0] != "guest" {
		t.Fatalf("default loopback_users %v, want [guest]", c.Auth.LoopbackUsers)
	}
	if c, _ := load(t, nil, nil); len(c.WebSocketOrigins) != 0 {
		t.Fatalf("default origins %v, want same-origin only", c.WebSocketOrigins)
	}
}

func TestInvalid(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--amqp-addr", "nohostport"}, "listeners.amqp"},
		{[]string{"--log-level", "loud"}, "log.level"},
		{[]string{"--fsync", "sometimes"}, "storage.fsync"},
		{[]string{"--data-dir", ""}, "data_dir"},
	} {
		_, err := load(t, tc.args, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err %v, want mention of %s", tc.args, err, tc.want)
		}
	}
	if _, err := load(t, nil, []string{"BOURSE_HEARTBEAT=soon"}); err == nil {
		t.Error("bad duration accepted")
	}
	if _, err := load(t, []string{"--config", "/does/not/exist.yaml"}, nil); err == nil {
		t.Error("missing config file accepted")
	}
}

func TestYAMLRoundTrip(t *testing.T) {
	y, err := Default().YAML()
	if err != nil || !strings.Contains(y, "heartbeat: 1m0s") || !strings.Contains(y, "amqp: 127.0.0.1:5672") {
		t.Fatalf("yaml %q %v", y, err)
	}
	file := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(file, []byte(y), 0o600)
	c, err := load(t, []string{"--config", file}, nil)
	if err != nil || !reflect.DeepEqual(c, Default()) {
		t.Fatalf("reloaded %+v %v", c, err)
	}
}

func TestTLSValidation(t *testing.T) {
	for _, c := range []struct {
		mod  func(*Config)
		fail bool
	}{
		{func(c *Config) {}, false},
		{func(c *Config) { c.TLS.CertFile, c.TLS.KeyFile = "c.pem", "k.pem" }, false},
		{func(c *Config) { c.TLS.CertFile = "c.pem" }, true},
		{func(c *Config) { c.TLS.ClientAuth = "required" }, true},
		{func(c *Config) { c.TLS.ClientAuth, c.TLS.CAFile = "required", "ca.pem" }, false},
		{func(c *Config) { c.TLS.ClientAuth = "sometimes" }, true},
		{func(c *Config) { c.Listeners.AMQPS = "nope" }, true},
	} {
		cfg := Default()
		c.mod(&cfg)
		if err := cfg.Validate(); (err != nil) != c.fail {
			t.Errorf("%+v: %v", cfg.TLS, err)
		}
	}
}

func TestCluster(t *testing.T) {
	c, err := load(t, nil, nil)
	if err != nil || c.Cluster.Mode != "none" || c.Cluster.Listen != "127.0.0.1:4222" {
		t.Fatalf("default: %+v %v", c.Cluster, err)
	}
	if c.Cluster.StreamIdle.D() != 5*time.Minute {
		t.Fatalf("default stream_idle: %v", c.Cluster.StreamIdle.D())
	}
	c, err = load(t, []string{"--cluster", "embedded", "--cluster-routes", "nats://10.0.0.1:6222", "--cluster-routes", "nats://10.0.0.2:6222"},
		[]string{"BOURSE_CLUSTER_NODE_NAME=b1", "BOURSE_CLUSTER_ROUTE_LISTEN=0.0.0.0:6222", "BOURSE_CLUSTER_REPLICAS=3", "BOURSE_CLUSTER_STREAM_IDLE=30s"})
	if err != nil || c.Cluster.Mode != "embedded" || len(c.Cluster.Routes) != 2 || c.Cluster.NodeName != "b1" ||
		c.Cluster.RouteListen != "0.0.0.0:6222" || c.Cluster.Replicas != 3 || c.Cluster.StreamIdle.D() != 30*time.Second {
		t.Fatalf("embedded: %+v %v", c.Cluster, err)
	}
	c, err = load(t, nil, []string{"BOURSE_CLUSTER_MODE=embedded", "BOURSE_CLUSTER_ROUTE_USER=route", "BOURSE_CLUSTER_ROUTE_PASSWORD=pw",
		"BOURSE_CLUSTER_ROUTE_TLS_CERT_FILE=/n.pem", "BOURSE_CLUSTER_ROUTE_TLS_KEY_FILE=/n.key", "BOURSE_CLUSTER_ROUTE_TLS_CA_FILE=/ca.pem"})
	if err != nil || c.Cluster.RouteUser != "route" || c.Cluster.RoutePassword != "pw" || c.Cluster.RouteTLSCAFile != "/ca.pem" {
		t.Fatalf("route security: %+v %v", c.Cluster, err)
	}
	c, err = load(t, nil, []string{"BOURSE_CLUSTER_MODE=nats", "BOURSE_CLUSTER_NATS_URLS=nats://a:4222,nats://b:4222", "BOURSE_CLUSTER_CREDENTIALS_FILE=/x.creds"})
	if err != nil || len(c.Cluster.NATSURLs) != 2 || c.Cluster.CredentialsFile != "/x.creds" {
		t.Fatalf("nats: %+v %v", c.Cluster, err)
	}
	for _, bad := range [][]string{
		{"BOURSE_CLUSTER_MODE=raft"},
		{"BOURSE_CLUSTER_MODE=nats"},
		{"BOURSE_CLUSTER_MODE=embedded", "BOURSE_CLUSTER_LISTEN=nope"},
		{"BOURSE_CLUSTER_MODE=embedded", "BOURSE_CLUSTER_REPLICAS=9"},
		{"BOURSE_CLUSTER_MODE=embedded", "BOURSE_CLUSTER_STREAM_IDLE=-1s"},
		{"BOURSE_CLUSTER_MODE=embedded", "BOURSE_CLUSTER_ROUTE_USER=route"},
		{"BOURSE_CLUSTER_MODE=nats", "BOURSE_CLUSTER_NATS_URLS=tls://a:4222", "BOURSE_CLUSTER_TLS_CERT_FILE=/gw.pem"},
		{"BOURSE_CLUSTER_MODE=embedded", "BOURSE_CLUSTER_ROUTE_TLS_CERT_FILE=/n.pem", "BOURSE_CLUSTER_ROUTE_TLS_KEY_FILE=/n.key"},
	} {
		if _, err := load(t, nil, bad); err == nil || !strings.Contains(err.Error(), "cluster") {
			t.Errorf("%v: %v", bad, err)
		}
	}
}

func TestClusterAckWait(t *testing.T) {
	c, err := load(t, nil, []string{"BOURSE_CLUSTER_MODE=embedded"})
	if err != nil || c.Cluster.AckWait.D() != 20*time.Second {
		t.Fatalf("default: %v %v", c.Cluster.AckWait.D(), err)
	}
	c, err = load(t, nil, []string{"BOURSE_CLUSTER_MODE=embedded", "BOURSE_CLUSTER_ACK_WAIT=45s"})
	if err != nil || c.Cluster.AckWait.D() != 45*time.Second {
		t.Fatalf("env: %v %v", c.Cluster.AckWait.D(), err)
	}
	file := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(file, []byte("cluster:\n  mode: nats\n  nats_urls: [nats://127.0.0.1:4222]\n  ack_wait: 1s\n"), 0o600)
	c, err = load(t, []string{"--config", file}, nil)
	if err != nil || c.Cluster.AckWait.D() != time.Second {
		t.Fatalf("file, at the minimum: %v %v", c.Cluster.AckWait.D(), err)
	}
	for _, bad := range []string{"999ms", "0s", "-5s"} {
		_, err := load(t, nil, []string{"BOURSE_CLUSTER_MODE=embedded", "BOURSE_CLUSTER_ACK_WAIT=" + bad})
		if err == nil || !strings.Contains(err.Error(), "cluster.ack_wait") || !strings.Contains(err.Error(), "minimum of 1s") {
			t.Errorf("ack_wait %s: %v", bad, err)
		}
	}
	if _, err := load(t, nil, []string{"BOURSE_CLUSTER_MODE=embedded", "BOURSE_CLUSTER_ACK_WAIT=20"}); err == nil || !strings.Contains(err.Error(), "ack_wait") {
		t.Errorf("a duration without a unit: %v", err)
	}
}

// TestClusterMQTTOrphanAfterSetting: cluster.mqtt_orphan_after defaults
// to two minutes, is read from the environment, and is at least a second.
func TestClusterMQTTOrphanAfterSetting(t *testing.T) {
	c, err := load(t, nil, []string{"BOURSE_CLUSTER_MODE=embedded"})
	if err != nil || c.Cluster.MQTTOrphanAfter.D() != 2*time.Minute {
		t.Fatalf("default: %v %v", c.Cluster.MQTTOrphanAfter.D(), err)
	}
	c, err = load(t, nil, []string{"BOURSE_CLUSTER_MODE=embedded", "BOURSE_CLUSTER_MQTT_ORPHAN_AFTER=10m"})
	if err != nil || c.Cluster.MQTTOrphanAfter.D() != 10*time.Minute {
		t.Fatalf("env: %v %v", c.Cluster.MQTTOrphanAfter.D(), err)
	}
	for _, bad := range []string{"500ms", "0s"} {
		_, err := load(t, nil, []string{"BOURSE_CLUSTER_MODE=embedded", "BOURSE_CLUSTER_MQTT_ORPHAN_AFTER=" + bad})
		if err == nil || !strings.Contains(err.Error(), "cluster.mqtt_orphan_after") {
			t.Errorf("mqtt_orphan_after %s: %v", bad, err)
		}
	}
}
