package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestDemoFlow runs the demo's services as processes against the real
// broker: a payment going in comes out as an invoice sent, and telemetry
// reaches the dashboard's data endpoint; a restart of the broker in the
// middle does not stop the flow.
func TestDemoFlow(t *testing.T) {
	br := Start(t, "--ws-origin", "127.0.0.1:*")
	demo := filepath.Join(t.TempDir(), "demo")
	if out, err := exec.Command("go", "build", "-o", demo, "../deploy/demo").CombinedOutput(); err != nil {
		t.Fatalf("build demo: %v\n%s", err, out)
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	dash := l.Addr().String()
	l.Close()
	envFor := func() []string {
		return append(os.Environ(), "BOURSE_AMQP_URL=amqp://guest:guest@"+br.Addrs["amqp"]+"/",
			"BOURSE_STOMP_ADDR="+br.Addrs["stomp"], "BOURSE_MQTT_ADDR="+br.Addrs["mqtt"],
			"BOURSE_WS_URL=ws://"+br.Addrs["http"]+"/ws", "DASHBOARD_ADDR="+dash, "DEMO_RATE=5")
	}
	var mu sync.Mutex
	var lines []string
	start := func(svc string) *exec.Cmd {
		cmd := exec.Command(demo, svc)
		cmd.Env = envFor()
		out, _ := cmd.StdoutPipe()
		cmd.Stderr = cmd.Stdout
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				mu.Lock()
				lines = append(lines, svc+": "+sc.Text())
				mu.Unlock()
			}
		}()
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd
	}
	seen := func(substr string) bool {
		mu.Lock()
		defer mu.Unlock()
		for _, l := range lines {
			if strings.Contains(l, substr) {
				return true
			}
		}
		return false
	}
	waitWithin := func(what string, d time.Duration, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(d); !cond(); time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				mu.Lock()
				t.Fatalf("%s: not seen in %v; output:\n%s", what, d, strings.Join(lines, "\n"))
			}
		}
	}
	waitFor := func(what string, cond func() bool) { t.Helper(); waitWithin(what, 30*time.Second, cond) }
	// The dashboard first, before the payments service has declared the
	// exchange it subscribes to: the broker refuses the subscription and
	// the dashboard must retry at once (it once sat 30 s in go-stomp's
	// Disconnect waiting for a receipt from a closed connection).
	start("dashboard")
	waitWithin("the dashboard retrying", 10*time.Second, func() bool { return seen("retrying in 1s") })
	for _, svc := range []string{"payments", "orders", "comms", "sensors"} {
		start(svc)
	}
	// A payment in, an invoice out, for the same order.
	waitFor("an invoice sent", func() bool { return seen("comms: invoice sent to") })
	mu.Lock()
	var order string
	for _, l := range lines {
		if i := strings.Index(l, `"order":"`); i >= 0 && strings.HasPrefix(l, "payments:") {
			order = l[i+9 : i+9+strings.Index(l[i+9:], `"`)]
			break
		}
	}
	mu.Unlock()
	waitFor("the invoice of "+order, func() bool { return seen("for " + order + " (") })
	// Telemetry reaches the dashboard's data endpoint.
	var data struct {
		Telemetry map[string]json.RawMessage
		Payments  int
		Invoices  int
	}
	waitFor("telemetry on the dashboard", func() bool {
		resp, err := http.Get("http://" + dash + "/data")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		return json.NewDecoder(resp.Body).Decode(&data) == nil && len(data.Telemetry) == 3 && data.Invoices > 0
	})
	// A broker restart in the middle of the flow: the services reconnect,
	// the order service resumes from its named stream offset.
	br.RestartSamePorts()
	mu.Lock()
	before := len(lines)
	mu.Unlock()
	waitFor("invoices after the restart", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, l := range lines[before:] {
			if strings.Contains(l, "comms: invoice sent to") {
				return true
			}
		}
		return false
	})
	t.Logf("dashboard after the run: %d payments, %d invoices, sensors %v", data.Payments, data.Invoices, fmt.Sprint(len(data.Telemetry)))
}
