package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// broker is one broker under test, started on free loopback ports.
type broker struct {
	name              string
	amqp, mqtt, stomp string // host:port, "" when the broker does not speak it
	http              string // Bourse's metrics listener
	cmd               *exec.Cmd
	pidFn             func() int // the process whose CPU is measured
	dir               string
	epmd              bool   // the Erlang port mapper was started for this broker: stop it too
	stopFn            func() // stops a broker of several processes (a cluster)
}

// listenerPid is the pid of the process listening on a loopback TCP port
// (from ss), 0 if none.
func listenerPid(port string) int {
	out, _ := exec.Command("ss", "-ltnpH", "sport = :"+port).Output()
	if i := strings.Index(string(out), "pid="); i >= 0 {
		if f := strings.FieldsFunc(string(out)[i+4:], func(r rune) bool { return r < '0' || r > '9' }); len(f) > 0 {
			n, _ := strconv.Atoi(f[0])
			return n
		}
	}
	return 0
}

func freePort() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func waitTCP(addr string, d time.Duration) error {
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return nil
		}
	}
	return fmt.Errorf("%s not listening after %v", addr, d)
}

func startBourse(bin string) (*broker, error) {
	dir, _ := os.MkdirTemp("", "bench-bourse")
	ready := filepath.Join(dir, "ready.json")
	cmd := exec.Command(bin, "serve", "--data-dir", filepath.Join(dir, "data"), "--amqp-addr", "127.0.0.1:0",
		"--mqtt-addr", "127.0.0.1:0", "--stomp-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
		"--ready-file", ready, "--log-level", "warn", "--memory-limit", "0")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	b := &broker{name: "bourse", cmd: cmd, dir: dir}
	b.pidFn = func() int { return cmd.Process.Pid }
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		var addrs map[string]string
		if data, err := os.ReadFile(ready); err == nil && json.Unmarshal(data, &addrs) == nil {
			b.amqp, b.mqtt, b.stomp, b.http = addrs["amqp"], addrs["mqtt"], addrs["stomp"], addrs["http"]
			return b, nil
		}
		if time.Now().After(deadline) {
			b.stop()
			return nil, fmt.Errorf("bourse not ready")
		}
	}
}

func startRabbit() (*broker, error) {
	dir, _ := os.MkdirTemp("", "bench-rabbit")
	b := &broker{name: "rabbitmq", amqp: freePort(), mqtt: freePort(), stomp: freePort(), dir: dir}
	dist := freePort()
	_, distPort, _ := net.SplitHostPort(dist)
	conf := fmt.Sprintf(`listeners.tcp.default = %s
loopback_users = none
stomp.listeners.tcp.1 = %s
mqtt.listeners.tcp.default = %s
mqtt.allow_anonymous = true
mqtt.default_user = guest
mqtt.default_pass = guest
log.console = false
log.file.level = warning
`, b.amqp, b.stomp, b.mqtt)
	os.WriteFile(filepath.Join(dir, "rabbitmq.conf"), []byte(conf), 0o644)
	os.WriteFile(filepath.Join(dir, "enabled_plugins"), []byte("[rabbitmq_stomp,rabbitmq_mqtt].\n"), 0o644)
	os.MkdirAll(filepath.Join(dir, "mnesia"), 0o755)
	os.MkdirAll(filepath.Join(dir, "log"), 0o755)
	if os.Getuid() == 0 {
		// Debian's wrapper drops root for the rabbitmq user.
		_ = exec.Command("chown", "-R", "rabbitmq:rabbitmq", dir).Run()
	}
	// The node starts epmd (port 4369) unless one is running; a daemon,
	// it outlives the node, so stop() ends it when this run started it.
	b.epmd = listenerPid("4369") == 0
	node := fmt.Sprintf("bench%d@localhost", os.Getpid())
	cmd := exec.Command("rabbitmq-server")
	if inner := "/usr/lib/rabbitmq/bin/rabbitmq-server"; os.Getuid() == 0 {
		if _, err := os.Stat(inner); err == nil {
			// Debian's wrapper switches to the rabbitmq user with su, whose
			// PAM session drops the open-file limit to 1,024 (about 830
			// connections); take it back up to the hard limit we hold.
			var lim syscall.Rlimit
			_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
			cmd = exec.Command("su", "rabbitmq", "-s", "/bin/sh", "-c", fmt.Sprintf("ulimit -n %d; cd /var/lib/rabbitmq; exec %s", lim.Max, inner))
		}
	}
	cmd.Env = append(os.Environ(), "HOME="+dir, "RABBITMQ_NODENAME="+node, "RABBITMQ_CONFIG_FILE="+filepath.Join(dir, "rabbitmq"),
		"RABBITMQ_MNESIA_BASE="+filepath.Join(dir, "mnesia"), "RABBITMQ_LOG_BASE="+filepath.Join(dir, "log"),
		"RABBITMQ_ENABLED_PLUGINS_FILE="+filepath.Join(dir, "enabled_plugins"), "RABBITMQ_DIST_PORT="+distPort,
		"RABBITMQ_FEATURE_FLAGS_FILE="+filepath.Join(dir, "mnesia", "feature_flags"),
		"RABBITMQ_PID_FILE="+filepath.Join(dir, "pid"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	logf, _ := os.Create(filepath.Join(os.TempDir(), fmt.Sprintf("bench-rabbit-%d.log", os.Getpid())))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	b.cmd = cmd
	b.pidFn = func() int {
		// The Erlang VM (beam.smp, a grandchild of the start script) is
		// the process listening on the AMQP port.
		_, port, _ := net.SplitHostPort(b.amqp)
		if n := listenerPid(port); n > 0 {
			return n
		}
		return cmd.Process.Pid
	}
	for _, a := range []string{b.amqp, b.stomp, b.mqtt} {
		if err := waitTCP(a, 90*time.Second); err != nil {
			b.stop()
			out, _ := os.ReadFile(logf.Name())
			return nil, fmt.Errorf("rabbitmq: %v\n%s", err, out)
		}
	}
	vm := b.pidFn()
	b.pidFn = func() int { return vm }
	return b, nil
}

func startMosquitto() (*broker, error) {
	dir, _ := os.MkdirTemp("", "bench-mosquitto")
	b := &broker{name: "mosquitto", mqtt: freePort(), dir: dir}
	host, port, _ := net.SplitHostPort(b.mqtt)
	conf := fmt.Sprintf("listener %s %s\nallow_anonymous true\npersistence false\nmax_queued_messages 1000000\nmax_inflight_messages 100\nlog_type error\nlog_type warning\nconnection_messages false\n", port, host)
	path := filepath.Join(dir, "mosquitto.conf")
	os.WriteFile(path, []byte(conf), 0o644)
	cmd := exec.Command("mosquitto", "-c", path)
	return runMQTTBroker(b, cmd)
}

// startMochi starts bench/mochibare, a plain mochi-mqtt server.
func startMochi(bin string) (*broker, error) {
	b := &broker{name: "mochi", mqtt: freePort()}
	cmd := exec.Command(bin, "-addr", b.mqtt)
	return runMQTTBroker(b, cmd)
}

// fsyncs is the number of fsyncs Bourse has made (all logs), from its
// /metrics; 0 for other brokers.
func (b *broker) fsyncs() float64 {
	if b.http == "" {
		return 0
	}
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + b.http + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	var n float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && strings.HasPrefix(f[0], "bourse_fsync_seconds_count") {
			v, _ := strconv.ParseFloat(f[1], 64)
			n += v
		}
	}
	return n
}

// rssKiB is a process's resident set (VmRSS) in KiB.
func rssKiB(pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			f := strings.Fields(l)
			v, _ := strconv.ParseFloat(f[1], 64)
			return v
		}
	}
	return 0
}

func (b *broker) stop() {
	if b.stopFn != nil {
		b.stopFn()
		return
	}
	if b.cmd != nil && b.cmd.Process != nil {
		if b.name == "rabbitmq" {
			if pid := b.pidFn(); pid != b.cmd.Process.Pid {
				_ = syscall.Kill(pid, syscall.SIGTERM) // the VM, which may have left the group
			}
			_ = syscall.Kill(-b.cmd.Process.Pid, syscall.SIGTERM)
			done := make(chan struct{})
			go func() { _ = b.cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				_ = syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL)
				<-done
			}
			if pid := b.pidFn(); pid != b.cmd.Process.Pid {
				for i := 0; i < 100 && syscall.Kill(pid, 0) == nil; i++ {
					time.Sleep(100 * time.Millisecond)
				}
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			if pid := listenerPid("4369"); b.epmd && pid > 0 {
				_ = syscall.Kill(pid, syscall.SIGKILL) // epmd ignores SIGTERM
			}
		} else {
			_ = b.cmd.Process.Signal(syscall.SIGTERM)
			_ = b.cmd.Wait()
		}
	}
	os.RemoveAll(b.dir)
}

// cpuSeconds is a process's user+system CPU time.
func cpuSeconds(pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100
}

func loadAvg() string {
	data, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(data))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}

// runMQTTBroker starts a broker process and waits for its MQTT port.
func runMQTTBroker(b *broker, cmd *exec.Cmd) (*broker, error) {
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	b.cmd = cmd
	b.pidFn = func() int { return cmd.Process.Pid }
	if err := waitTCP(b.mqtt, 10*time.Second); err != nil {
		b.stop()
		return nil, err
	}
	return b, nil
}
