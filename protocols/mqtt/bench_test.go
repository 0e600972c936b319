package mqtt

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// BenchmarkBridge measures publish → subscribe throughput through the
// bridge: a raw MQTT 5 publisher, amq.topic, the subscriber's queue, and a
// raw subscriber, all over loopback in this process.
func BenchmarkBridge(b *testing.B) {
	for _, qos := range []byte{0, 1} {
		for _, size := range []int{16, 1024} {
			b.Run(fmt.Sprintf("qos%d/%dB", qos, size), func(b *testing.B) { benchPubSub(b, qos, size) })
		}
	}
}

func benchPubSub(b *testing.B, qos byte, size int) {
	ts := startServer(b, nil, Options{Logger: testLogger()})
	sub := dialRaw(b, ts.addr, 5)
	sub.connect("bench-sub", true, nil)
	sub.subscribe(1, packets.Subscription{Filter: "bench/#", Qos: qos})
	pub := dialRaw(b, ts.addr, 5)
	pub.connect("bench-pub", true, nil)
	// Both clients read the socket through their own bufio from now on.
	pubR, subR := pub.r, sub.r

	var tmpl bytes.Buffer
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos},
		TopicName: "bench/x", Payload: make([]byte, size), ProtocolVersion: 5}
	if qos > 0 {
		pk.PacketID = 1
	}
	if err := pk.PublishEncode(&tmpl); err != nil {
		b.Fatal(err)
	}
	frame := tmpl.Bytes()
	idAt := bytes.Index(frame, []byte("bench/x")) + len("bench/x") // packet id follows the topic

	n := b.N
	window := make(chan struct{}, 200) // stay under the server's receive maximum
	errs := make(chan error, 3)
	if qos > 0 {
		go func() { // publisher's PUBACKs
			for range n {
				if _, err := skipPacket(pubR); err != nil {
					errs <- err
					return
				}
				<-window
			}
			errs <- nil
		}()
	}
	go func() { // subscriber
		w := bufio.NewWriter(sub.nc)
		for range n {
			id, err := skipPacket(subR)
			if err != nil {
				errs <- err
				return
			}
			if qos > 0 {
				w.Write([]byte{0x40, 2, byte(id >> 8), byte(id)})
				if subR.Buffered() == 0 {
					if err := w.Flush(); err != nil {
						errs <- err
						return
					}
				}
			}
		}
		errs <- w.Flush()
	}()

	b.SetBytes(int64(size))
	b.ResetTimer()
	start := time.Now()
	_ = pub.nc.SetWriteDeadline(time.Now().Add(time.Minute))
	w := bufio.NewWriterSize(pub.nc, 64<<10)
	for i := range n {
		if qos > 0 {
			id := uint16(i%60000 + 1)
			frame[idAt], frame[idAt+1] = byte(id>>8), byte(id)
			select {
			case window <- struct{}{}:
			default:
				w.Flush()
				window <- struct{}{}
			}
		}
		w.Write(frame)
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	waits := 1
	if qos > 0 {
		waits = 2
	}
	for range waits {
		select {
		case err := <-errs:
			if err != nil {
				b.Fatal(err)
			}
		case <-time.After(time.Minute):
			b.Fatal("timed out")
		}
	}
	el := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(n)/el.Seconds(), "msgs/s")
}

// skipPacket reads one packet and returns its packet id when it is a
// PUBLISH with QoS > 0 or an ack.
func skipPacket(r *bufio.Reader) (uint16, error) {
	h, err := r.ReadByte()
	if err != nil {
		return 0, err
	}
	n, _, err := packets.DecodeLength(r)
	if err != nil {
		return 0, err
	}
	body, err := r.Peek(min(n, r.Size()))
	if err != nil && len(body) < n {
		body = nil
	}
	var id uint16
	switch h >> 4 {
	case packets.Publish:
		if (h>>1)&3 > 0 && len(body) >= 2 {
			tl := int(body[0])<<8 | int(body[1])
			if len(body) >= 4+tl {
				id = uint16(body[2+tl])<<8 | uint16(body[3+tl])
			}
		}
	case packets.Puback:
		if len(body) >= 2 {
			id = uint16(body[0])<<8 | uint16(body[1])
		}
	}
	_, err = r.Discard(n)
	return id, err
}

// TestIdleConnectionMemory opens idle MQTT 5 connections and reports what
// each costs: Go heap and stacks, goroutines, and process RSS (which here
// includes the client ends, a few hundred bytes each). MQTT_IDLE_CONNS sets
// the number (2000).
func TestIdleConnectionMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("opens thousands of sockets")
	}
	n := 2000
	if s := os.Getenv("MQTT_IDLE_CONNS"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	ts := startServer(t, nil, Options{})
	// Warm up: the first connection starts mochi and its loop.
	warm := dialRaw(t, ts.addr, 5)
	warm.connect("warm", true, nil)

	before, rss0, g0 := memSnapshot()
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	var buf bytes.Buffer
	for i := range n {
		nc, err := net.Dial("tcp", ts.addr)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		conns = append(conns, nc)
		buf.Reset()
		pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 5,
			Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 300, ClientIdentifier: "idle-" + strconv.Itoa(i)}}
		if err := pk.ConnectEncode(&buf); err != nil {
			t.Fatal(err)
		}
		if _, err := nc.Write(buf.Bytes()); err != nil {
			t.Fatal(err)
		}
		_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		var ack [4]byte
		if _, err := io.ReadFull(nc, ack[:2]); err != nil || ack[0] != 0x20 {
			t.Fatalf("CONNACK %d: %v %x", i, err, ack)
		}
		if _, err := io.CopyN(io.Discard, nc, int64(ack[1])); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "all connections established", func() bool {
		ts.s.mu.Lock()
		defer ts.s.mu.Unlock()
		return len(ts.s.conns) >= n+1
	})
	after, rss1, g1 := memSnapshot()
	if p := os.Getenv("MQTT_PROF"); p != "" {
		f, _ := os.Create(p)
		_ = pprof.Lookup("heap").WriteTo(f, 0)
		f.Close()
	}
	heap := float64(int64(after.HeapInuse)-int64(before.HeapInuse)) / float64(n)
	stack := float64(int64(after.StackInuse)-int64(before.StackInuse)) / float64(n)
	rss := float64(rss1-rss0) / float64(n)
	t.Logf("%d idle MQTT 5 connections: per connection %.0f B heap + %.0f B stacks = %.1f KiB Go memory; %.1f goroutines; %.1f KiB RSS (both ends, race=%v)",
		n, heap, stack, (heap+stack)/1024, float64(g1-g0)/float64(n), rss/1024, raceEnabled)
	// The goal is 16 KiB of RSS per connection; the Go memory of one is
	// 9 KiB (4 KiB of reader stack, no writer goroutine, no read buffer).
	if !raceEnabled && heap+stack > 16<<10 {
		t.Errorf("idle connections cost %.1f KiB each", (heap+stack)/1024)
	}
}

// memSnapshot collects garbage a few times first: each collection halves
// the stacks of idle goroutines that use under a quarter of theirs, as a
// running broker's collections do over time.
func memSnapshot() (runtime.MemStats, int64, int) {
	for range 5 {
		runtime.GC()
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms, vmRSS(), runtime.NumGoroutine()
}

// vmRSS reads the process's resident set size from /proc/self/status.
func vmRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}
