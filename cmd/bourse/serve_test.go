package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/bourse-mq/bourse/internal/config"
)

func TestServeProbesAndGracefulShutdown(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	dir := t.TempDir()
	cfg := config.Default()
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.Listeners = config.Listeners{AMQP: "127.0.0.1:0", MQTT: "127.0.0.1:0", STOMP: "127.0.0.1:0", HTTP: "127.0.0.1:0"}
	ready := filepath.Join(dir, "ready.json")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), ready, new(slog.LevelVar), func() (config.Config, error) { return cfg, nil })
	}()

	var addrs map[string]string
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := os.ReadFile(ready)
		if err == nil && json.Unmarshal(b, &addrs) == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("ready file never written")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, name := range []string{"amqp", "mqtt", "stomp", "http"} {
		if !strings.HasPrefix(addrs[name], "127.0.0.1:") || strings.HasSuffix(addrs[name], ":0") {
			t.Fatalf("address of %s: %q", name, addrs[name])
		}
	}
	for _, path := range []string{"/healthz", "/readyz", "/livez", "/metrics"} {
		resp, err := http.Get("http://" + addrs["http"] + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", path, resp.StatusCode, body)
		}
		if path == "/metrics" && (!bytes.Contains(body, []byte("go_goroutines")) || !bytes.Contains(body, []byte("bourse_journal_fsyncs_total"))) {
			t.Fatalf("metrics without runtime or journal collectors")
		}
	}
	http.DefaultClient.CloseIdleConnections()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve returned %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("graceful shutdown took too long")
	}
}

func TestSecondServeOnSameDataDirFails(t *testing.T) {
	dir := t.TempDir()
	cfg := config.Default()
	cfg.DataDir = dir
	cfg.Listeners = config.Listeners{HTTP: "127.0.0.1:0"}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := filepath.Join(dir, "ready.json")
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), ready, new(slog.LevelVar), func() (config.Config, error) { return cfg, nil })
	}()
	for i := 0; i < 500; i++ {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	err := serve(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), "", new(slog.LevelVar), func() (config.Config, error) { return cfg, nil })
	if err == nil || !strings.Contains(err.Error(), "another bourse") {
		t.Fatalf("second serve on the same data dir: %v", err)
	}
	cancel()
	<-done
}

func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

func TestPrintConfigAndVersion(t *testing.T) {
	out, err := run(t, "serve", "--print-config", "--amqp-addr", "", "--data-dir", "/tmp/x")
	if err != nil || !strings.Contains(out, "amqp: \"\"") || !strings.Contains(out, "data_dir: /tmp/x") {
		t.Fatalf("print-config: %v\n%s", err, out)
	}
	out, err = run(t, "version")
	if err != nil || !strings.HasPrefix(out, "bourse ") {
		t.Fatalf("version: %v %q", err, out)
	}
	if _, err := run(t, "serve", "--log-level", "chatty", "--print-config"); err == nil {
		t.Fatal("invalid log level accepted")
	}
}

// TestSystemdNotifyAndReload: under systemd (NOTIFY_SOCKET) the broker
// says READY=1 once serving and STOPPING=1 on the way out; SIGHUP reloads
// the log level and the alarm limits.
func TestSystemdNotifyAndReload(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "notify.sock")
	pc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	cfg := config.Default()
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.Listeners = config.Listeners{AMQP: "127.0.0.1:0"}
	reloaded := cfg
	reloaded.Log.Level = "debug"
	reloaded.Limits.MemoryLimitBytes = 1 << 40
	level := new(slog.LevelVar)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), "", level, func() (config.Config, error) { return reloaded, nil })
	}()
	buf := make([]byte, 64)
	pc.SetReadDeadline(time.Now().Add(20 * time.Second))
	n, _, err := pc.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "READY=1" {
		t.Fatalf("notify: %q %v", buf[:n], err)
	}
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	for deadline := time.Now().Add(10 * time.Second); level.Level() != slog.LevelDebug; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("log level not reloaded on SIGHUP")
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	n, _, err = pc.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "STOPPING=1" {
		t.Fatalf("notify on stop: %q %v", buf[:n], err)
	}
}

// TestServeWithListenersOffLeavesNoGoroutine: a service whose own
// listener is off (here MQTT and STOMP, served only over WebSocket) is shut
// down with the rest; its background work used to outlive serve.
func TestServeWithListenersOffLeavesNoGoroutine(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	dir := t.TempDir()
	cfg := config.Default()
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.Listeners = config.Listeners{AMQP: "127.0.0.1:0", HTTP: "127.0.0.1:0"}
	ready := filepath.Join(dir, "ready.json")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), ready, new(slog.LevelVar), func() (config.Config, error) { return cfg, nil })
	}()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("ready file never written")
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve returned %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("shutdown took too long")
	}
}
