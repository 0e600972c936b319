package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"

	"github.com/bourse-mq/bourse/internal/config"
)

// TestDeployFiles checks deploy/: the Kubernetes manifests parse and probe
// the broker's real paths, the systemd unit is a notify unit that reloads
// on HUP, its YAML is a valid configuration, and every series the Grafana
// dashboard and the alert rules use is one the broker exports.
func TestDeployFiles(t *testing.T) {
	root := filepath.Join("..", "..", "deploy")
	// Kubernetes.
	f, err := os.Open(filepath.Join(root, "kubernetes", "bourse.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	kinds := map[string]bool{}
	for {
		var doc struct {
			Kind string `yaml:"kind"`
			Spec struct {
				Template struct {
					Spec struct {
						Containers []struct {
							LivenessProbe struct {
								HTTPGet struct{ Path string } `yaml:"httpGet"`
							} `yaml:"livenessProbe"`
							ReadinessProbe struct {
								HTTPGet struct{ Path string } `yaml:"httpGet"`
							} `yaml:"readinessProbe"`
						} `yaml:"containers"`
					} `yaml:"spec"`
				} `yaml:"template"`
			} `yaml:"spec"`
		}
		if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("kubernetes manifest: %v", err)
		}
		kinds[doc.Kind] = true
		if doc.Kind == "StatefulSet" {
			c := doc.Spec.Template.Spec.Containers[0]
			if c.LivenessProbe.HTTPGet.Path != "/healthz" || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
				t.Errorf("probes: %+v", c)
			}
		}
	}
	for _, k := range []string{"StatefulSet", "Service", "ConfigMap"} {
		if !kinds[k] {
			t.Errorf("no %s in the manifests", k)
		}
	}
	// systemd.
	unit, err := os.ReadFile(filepath.Join(root, "systemd", "bourse.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Type=notify", "ExecReload=/bin/kill -HUP $MAINPID", "KillSignal=SIGTERM", "NoNewPrivileges=yes"} {
		if !bytes.Contains(unit, []byte(want)) {
			t.Errorf("systemd unit lacks %q", want)
		}
	}
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	config.RegisterFlags(fs)
	if err := fs.Parse([]string{"--config", filepath.Join(root, "systemd", "bourse.yaml")}); err != nil {
		t.Fatal(err)
	}
	if _, err := config.Load(fs, func() []string { return nil }); err != nil {
		t.Errorf("deploy/systemd/bourse.yaml: %v", err)
	}

	// Series used by the dashboard and the alerts exist.
	dash, err := os.ReadFile(filepath.Join(root, "grafana", "bourse.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !json.Valid(dash) {
		t.Fatal("grafana dashboard is not JSON")
	}
	alerts, err := os.ReadFile(filepath.Join(root, "prometheus", "bourse-alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Rules []struct{ Expr string } `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(alerts, &rules); err != nil || len(rules.Groups) == 0 {
		t.Fatalf("alert rules: %v", err)
	}
	exported := scrapeMetrics(t)
	series := regexp.MustCompile(`\b(?:bourse|process|go)_[a-z_]+`)
	for _, src := range [][]byte{dash, alerts} {
		for _, name := range series.FindAllString(string(src), -1) {
			if !strings.Contains(exported, "\n"+name) && !strings.HasPrefix(exported, name) {
				t.Errorf("%s is used in deploy/ but the broker does not export it", name)
			}
		}
	}
}

// scrapeMetrics starts the broker and returns its /metrics.
func scrapeMetrics(t *testing.T) string {
	dir := t.TempDir()
	cfg := config.Default()
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.Listeners = config.Listeners{HTTP: "127.0.0.1:0"}
	ready := filepath.Join(dir, "ready.json")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), ready, new(slog.LevelVar), func() (config.Config, error) { return cfg, nil })
	}()
	defer func() { cancel(); <-done }()
	var addrs map[string]string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if b, err := os.ReadFile(ready); err == nil && json.Unmarshal(b, &addrs) == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("broker not ready")
		}
	}
	resp, err := http.Get("http://" + addrs["http"] + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	http.DefaultClient.CloseIdleConnections()
	return string(b)
}

// TestClusterManifest: the embedded-cluster StatefulSet runs three pods in
// parallel with their node name from the pod name, routes resolve through
// a headless Service published before readiness, route credentials come
// from a Secret in the manifests, and the ConfigMap's configuration, with
// the pod's environment, loads as embedded cluster mode with a route to
// every pod and authenticated routes.
func TestClusterManifest(t *testing.T) {
	f, err := os.Open(filepath.Join("..", "..", "deploy", "kubernetes-cluster", "bourse.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	var cfgText string
	var sts, peers bool
	secrets := map[string]map[string]string{} // name: stringData
	type secretRef struct{ name, key string }
	fromSecret := map[string]secretRef{} // the container's variables from Secrets
	for {
		var doc struct {
			Kind       string                `yaml:"kind"`
			Metadata   struct{ Name string } `yaml:"metadata"`
			Data       map[string]string     `yaml:"data"`
			StringData map[string]string     `yaml:"stringData"`
			Spec       struct {
				Replicas                 int    `yaml:"replicas"`
				PodManagementPolicy      string `yaml:"podManagementPolicy"`
				ServiceName              string `yaml:"serviceName"`
				ClusterIP                string `yaml:"clusterIP"`
				PublishNotReadyAddresses bool   `yaml:"publishNotReadyAddresses"`
				Template                 struct {
					Spec struct {
						Containers []struct {
							Env []struct {
								Name      string `yaml:"name"`
								ValueFrom struct {
									FieldRef struct {
										FieldPath string `yaml:"fieldPath"`
									} `yaml:"fieldRef"`
									SecretKeyRef struct {
										Name string `yaml:"name"`
										Key  string `yaml:"key"`
									} `yaml:"secretKeyRef"`
								} `yaml:"valueFrom"`
							} `yaml:"env"`
						} `yaml:"containers"`
					} `yaml:"spec"`
				} `yaml:"template"`
			} `yaml:"spec"`
		}
		if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		switch doc.Kind {
		case "ConfigMap":
			cfgText = doc.Data["bourse.yaml"]
		case "Secret":
			secrets[doc.Metadata.Name] = doc.StringData
		case "StatefulSet":
			sts = true
			if doc.Spec.Replicas != 3 || doc.Spec.PodManagementPolicy != "Parallel" || doc.Spec.ServiceName != "bourse-cluster-peers" {
				t.Errorf("StatefulSet spec %+v", doc.Spec)
			}
			named := false
			for _, e := range doc.Spec.Template.Spec.Containers[0].Env {
				named = named || (e.Name == "BOURSE_CLUSTER_NODE_NAME" && e.ValueFrom.FieldRef.FieldPath == "metadata.name")
				if r := e.ValueFrom.SecretKeyRef; r.Name != "" {
					fromSecret[e.Name] = secretRef{r.Name, r.Key}
				}
			}
			if !named {
				t.Error("the node name does not come from the pod name")
			}
		case "Service":
			if doc.Metadata.Name == "bourse-cluster-peers" {
				peers = doc.Spec.ClusterIP == "None" && doc.Spec.PublishNotReadyAddresses
			}
		}
	}
	if !sts || !peers {
		t.Fatalf("StatefulSet %v, headless peers Service published before readiness %v", sts, peers)
	}
	path := filepath.Join(t.TempDir(), "bourse.yaml")
	if err := os.WriteFile(path, []byte(cfgText), 0o600); err != nil {
		t.Fatal(err)
	}
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	config.RegisterFlags(fs)
	if err := fs.Parse([]string{"--config", path}); err != nil {
		t.Fatal(err)
	}
	env := []string{"BOURSE_CLUSTER_NODE_NAME=bourse-cluster-0"}
	for name, r := range fromSecret {
		v, ok := secrets[r.name][r.key]
		if !ok || v == "" {
			t.Errorf("%s: no key %q in a Secret %q of the manifests", name, r.key, r.name)
		}
		env = append(env, name+"="+v)
	}
	for _, name := range []string{"BOURSE_CLUSTER_ROUTE_USER", "BOURSE_CLUSTER_ROUTE_PASSWORD"} {
		if _, ok := fromSecret[name]; !ok {
			t.Errorf("%s does not come from a Secret", name)
		}
	}
	cfg, err := config.Load(fs, func() []string { return env })
	if err != nil {
		t.Fatalf("the ConfigMap's configuration: %v", err)
	}
	if cfg.Cluster.Mode != "embedded" || len(cfg.Cluster.Routes) != 3 || cfg.Cluster.NodeName != "bourse-cluster-0" ||
		cfg.Cluster.RouteUser == "" || cfg.Cluster.RoutePassword == "" {
		t.Fatalf("cluster config %+v", cfg.Cluster)
	}
}

// TestComposeCluster: the compose file's cluster profile runs three
// embedded nodes, each with its own name, the same routes and route
// credentials (from the environment, with defaults); each node's
// environment loads as a valid configuration with authenticated routes.
// interop/run.sh checks the same with docker-compose itself.
func TestComposeCluster(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]struct {
			Profiles    []string          `yaml:"profiles"`
			Environment map[string]string `yaml:"environment"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(b, &compose); err != nil {
		t.Fatal(err)
	}
	// ${NAME:-default} as compose interpolates it with NAME unset.
	interp := regexp.MustCompile(`\$\{[A-Z_]+:-([^}]*)\}`)
	var creds []string
	names := map[string]bool{}
	for _, svc := range []string{"bourse-1", "bourse-2", "bourse-3"} {
		s, ok := compose.Services[svc]
		if !ok || len(s.Profiles) != 1 || s.Profiles[0] != "cluster" {
			t.Fatalf("service %s: %+v", svc, s)
		}
		var env []string
		for k, v := range s.Environment {
			env = append(env, k+"="+interp.ReplaceAllString(v, "$1"))
		}
		fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
		config.RegisterFlags(fs)
		cfg, err := config.Load(fs, func() []string { return env })
		if err != nil {
			t.Fatalf("service %s: %v", svc, err)
		}
		c := cfg.Cluster
		if c.Mode != "embedded" || len(c.Routes) != 3 || c.RouteUser == "" || c.RoutePassword == "" {
			t.Errorf("service %s: cluster config %+v", svc, c)
		}
		for _, k := range []string{"BOURSE_CLUSTER_ROUTE_USER", "BOURSE_CLUSTER_ROUTE_PASSWORD"} {
			if !strings.HasPrefix(s.Environment[k], "${"+k+":-") {
				t.Errorf("service %s: %s is %q, not taken from the environment", svc, k, s.Environment[k])
			}
		}
		names[c.NodeName] = true
		creds = append(creds, c.RouteUser+":"+c.RoutePassword)
	}
	if len(names) != 3 || creds[0] != creds[1] || creds[1] != creds[2] {
		t.Errorf("node names %v, route credentials %v: want three names and one set of credentials", names, creds)
	}
}
