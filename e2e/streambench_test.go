package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/storage/stream"
)

// TestMain lets the test binary double as a plain file server for the
// stream fetch benchmark's reference paths (bare sendfile and read+write),
// so that their CPU is measured in a process of their own, as the broker's.
func TestMain(m *testing.M) {
	if mode := os.Getenv("BOURSE_E2E_FILESERVER"); mode != "" {
		fileServer(mode, strings.Split(os.Getenv("BOURSE_E2E_FILES"), string(os.PathListSeparator)))
		return
	}
	os.Exit(m.Run())
}

// fileServer serves every file, in order, to each connection: with
// sendfile (TCPConn.ReadFrom of an *os.File) or with a read/write loop.
func fileServer(mode string, files []string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		os.Exit(2)
	}
	fmt.Println(ln.Addr().String())
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		tc := c.(*net.TCPConn)
		buf := make([]byte, 64<<10)
		for _, name := range files {
			f, err := os.Open(name)
			if err != nil {
				os.Exit(3)
			}
			if mode == "sendfile" {
				_, err = tc.ReadFrom(f)
			} else {
				_, err = io.CopyBuffer(struct{ io.Writer }{tc}, struct{ io.Reader }{f}, buf)
			}
			f.Close()
			if err != nil {
				break
			}
		}
		tc.Close()
	}
}

// cpuSeconds reads a process's user+system CPU time from /proc.
func cpuSeconds(tb testing.TB, pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		tb.Fatal(err)
	}
	// Fields after the command name (which may hold spaces) start at ')'.
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ
}

// BenchmarkStreamFetch serves a stream of BOURSE_BENCH_STREAM_MB (default
// 1024) MiB over loopback three ways in one run: the broker's HTTP fetch
// endpoint (sendfile from the segment files), a bare sendfile of the same
// files, and a read+write copy of them. It reports MB/s and the serving
// process's CPU seconds per GB; the page cache is warm for all three.
func BenchmarkStreamFetch(b *testing.B) {
	mb := 1024
	if v, err := strconv.Atoi(os.Getenv("BOURSE_BENCH_STREAM_MB")); err == nil && v > 0 {
		mb = v
	}
	br := Start(b)
	ch := br.AMQPChannel(b)
	if _, err := ch.QueueDeclare("bulk", true, false, false, false, amqp.Table{"x-queue-type": "stream"}); err != nil {
		b.Fatal(err)
	}
	br.Stop()
	dir := filepath.Join(br.dataDir, "data", "streams")
	st, err := stream.Open(dir, stream.Options{Fsync: "never"})
	if err != nil {
		b.Fatal(err)
	}
	l, err := st.OpenStream("/", "bulk", stream.Config{})
	if err != nil {
		b.Fatal(err)
	}
	body := make([]byte, 64<<10)
	n := mb * 16
	done := make(chan error, n)
	for i := 0; i < n; i++ {
		l.Append(&core.Message{Exchange: "", RoutingKey: "bulk", Body: body}, func(_ uint64, err error) { done <- err })
	}
	for i := 0; i < n; i++ {
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	}
	st.Close()
	files, _ := filepath.Glob(filepath.Join(dir, "*", "*", "*.seg"))
	sort.Strings(files)
	var total int64
	for _, f := range files {
		fi, _ := os.Stat(f)
		total += fi.Size()
		data, _ := os.ReadFile(f) // warm the page cache
		_ = data
	}
	br.start()

	b.Run("endpoint", func(b *testing.B) {
		pid := br.cmd.Process.Pid
		base := "http://" + br.Addrs["http"] + "/api/streams/%2F/bulk/records?max_bytes=67108864&offset="
		client := &http.Client{}
		b.SetBytes(total)
		c0 := cpuSeconds(b, pid)
		t0 := time.Now()
		for i := 0; i < b.N; i++ {
			var got int64
			for off := uint64(0); ; {
				req, _ := http.NewRequest("GET", base+strconv.FormatUint(off, 10), nil)
				req.SetBasicAuth("guest", "guest")
				resp, err := client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				k, _ := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusNoContent {
					break
				}
				if resp.StatusCode != http.StatusOK {
					b.Fatalf("status %s", resp.Status)
				}
				got += k
				off, _ = strconv.ParseUint(resp.Header.Get("Bourse-Next-Offset"), 10, 64)
			}
			if got != total {
				b.Fatalf("fetched %d bytes of %d", got, total)
			}
		}
		report(b, cpuSeconds(b, pid)-c0, time.Since(t0), total)
	})
	for _, mode := range []string{"bare-sendfile", "copy"} {
		b.Run(mode, func(b *testing.B) {
			cmd := exec.Command(os.Args[0])
			cmd.Env = append(os.Environ(), "BOURSE_E2E_FILESERVER="+strings.TrimPrefix(mode, "bare-"),
				"BOURSE_E2E_FILES="+strings.Join(files, string(os.PathListSeparator)))
			out, _ := cmd.StdoutPipe()
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
			defer func() { cmd.Process.Kill(); cmd.Wait() }()
			addr, err := bufio.NewReader(out).ReadString('\n')
			if err != nil {
				b.Fatal(err)
			}
			addr = strings.TrimSpace(addr)
			b.SetBytes(total)
			c0 := cpuSeconds(b, cmd.Process.Pid)
			t0 := time.Now()
			for i := 0; i < b.N; i++ {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					b.Fatal(err)
				}
				got, _ := io.Copy(io.Discard, c)
				c.Close()
				if got != total {
					b.Fatalf("read %d bytes of %d", got, total)
				}
			}
			report(b, cpuSeconds(b, cmd.Process.Pid)-c0, time.Since(t0), total)
		})
	}
}

func report(b *testing.B, cpu float64, wall time.Duration, total int64) {
	gb := float64(total) * float64(b.N) / 1e9
	b.ReportMetric(cpu/gb, "server-cpu-s/GB")
	b.ReportMetric(gb/wall.Seconds(), "GB/s")
}
