package mqtt

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// TestReadSplitsAndBursts feeds the reader (pipe.Read's pooled buffering
// under mochi's 16-byte bufio.Reader) packets in every shape a socket can
// deliver them: a CONNECT one byte at a time, a burst of many small
// packets in one write (crossing the 16-byte and 4 KiB buffer boundaries
// at every offset), a large packet split in uneven pieces, and pauses
// between packets (the reader drops its buffer and waits in mochi's).
// Every message must arrive, in order, intact.
func TestReadSplitsAndBursts(t *testing.T) {
	ts := startServer(t, nil, Options{})
	s := bindSink(t, ts.vhost("/"), "reads", "r.#")

	rc := dialRaw(t, ts.addr, 4)
	var buf bytes.Buffer
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 4,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 30, ClientIdentifier: "reader-split"}}
	if err := pk.ConnectEncode(&buf); err != nil {
		t.Fatal(err)
	}
	for _, b := range buf.Bytes() {
		rc.write([]byte{b})
		time.Sleep(time.Millisecond)
	}
	if ca := rc.recv(); ca.FixedHeader.Type != packets.Connack || ca.ReasonCode != 0 {
		t.Fatalf("CONNACK %+v", ca)
	}

	encode := func(i, size int) []byte {
		body := bytes.Repeat([]byte{byte('a' + i%26)}, size)
		copy(body, fmt.Sprintf("%06d", i))
		p := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, ProtocolVersion: 4,
			TopicName: "r/" + fmt.Sprint(i%7), Payload: body}
		var b bytes.Buffer
		if err := p.PublishEncode(&b); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	want := 0
	check := func(size int) {
		t.Helper()
		d := s.next(t)
		got := d.Msg.Body
		if len(got) != size || string(got[:6]) != fmt.Sprintf("%06d", want) || got[size-1] != byte('a'+want%26) {
			t.Fatalf("message %d: got %d bytes starting %q", want, len(got), got[:min(len(got), 8)])
		}
		want++
	}

	// A burst: 600 packets of 7 to 41 byte bodies in one write.
	var burst bytes.Buffer
	sizes := make([]int, 600)
	for i := range sizes {
		sizes[i] = 7 + i%35
		burst.Write(encode(i, sizes[i]))
	}
	rc.write(burst.Bytes())
	for _, n := range sizes {
		check(n)
	}

	// A 100 KiB packet in uneven pieces, then small ones with pauses.
	big := encode(len(sizes), 100<<10)
	for off, step := 0, 1; off < len(big); step = step*3 + 1 {
		end := min(off+step, len(big))
		rc.write(big[off:end])
		off = end
	}
	check(100 << 10)
	for i := range 5 {
		time.Sleep(20 * time.Millisecond)
		rc.write(encode(want, 10+i))
		check(10 + i)
	}
}
