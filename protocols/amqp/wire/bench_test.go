package wire

import (
	"bufio"
	"bytes"
	"io"
	"testing"
)

func benchProps() *Properties {
	return &Properties{
		ContentType:   "application/json",
		DeliveryMode:  2,
		CorrelationID: "3f2b9c1e-5d4a-4e8f-9b7c-1a2b3c4d5e6f",
		Headers:       Table{"x-retry": int32(3), "trace-id": "abc123"},
	}
}

// BenchmarkWritePublish encodes basic.publish, its content header and a
// 1 KiB body into a bufio.Writer, the broker's per-message write path.
func BenchmarkWritePublish(b *testing.B) {
	w := bufio.NewWriterSize(io.Discard, 64<<10)
	pub := &BasicPublish{Exchange: "amq.direct", RoutingKey: "orders.created"}
	props := benchProps()
	body := bytes.Repeat([]byte("x"), 1024)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if err := WriteMethod(w, 1, pub); err != nil {
			b.Fatal(err)
		}
		if err := WriteContent(w, 1, ClassBasic, props, body, 131072); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWriteDeliverLarge writes basic.deliver with a 1 MiB body split
// into 128 KiB frames.
func BenchmarkWriteDeliverLarge(b *testing.B) {
	w := bufio.NewWriterSize(io.Discard, 64<<10)
	del := &BasicDeliver{ConsumerTag: "amq.ctag-1", DeliveryTag: 1 << 20, Exchange: "amq.direct", RoutingKey: "orders.created"}
	props := benchProps()
	body := bytes.Repeat([]byte("x"), 1<<20)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if err := WriteMethod(w, 1, del); err != nil {
			b.Fatal(err)
		}
		if err := WriteContent(w, 1, ClassBasic, props, body, 131072); err != nil {
			b.Fatal(err)
		}
	}
}

// loopReader yields data over and over.
type loopReader struct {
	data []byte
	off  int
}

func (l *loopReader) Read(p []byte) (int, error) {
	n := copy(p, l.data[l.off:])
	l.off = (l.off + n) % len(l.data)
	return n, nil
}

// BenchmarkReadPublish reads and decodes basic.publish, its content header
// and a 1 KiB body frame with a FrameReader, the broker's per-message read
// path. The allocations are the decoded method, its strings and the headers
// table; framing itself allocates nothing.
func BenchmarkReadPublish(b *testing.B) {
	var buf bytes.Buffer
	w := bufio.NewWriter(&buf)
	body := bytes.Repeat([]byte("x"), 1024)
	WriteMethod(w, 1, &BasicPublish{Exchange: "amq.direct", RoutingKey: "orders.created"})
	WriteContent(w, 1, ClassBasic, benchProps(), body, 131072)
	w.Flush()
	fr := NewFrameReader(bufio.NewReaderSize(&loopReader{data: buf.Bytes()}, 64<<10), 131072)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		f, err := fr.ReadFrame()
		if err != nil {
			b.Fatal(err)
		}
		m, err := DecodeMethod(f.Payload)
		if err != nil || !m.HasContent() {
			b.Fatal(err)
		}
		if f, err = fr.ReadFrame(); err != nil {
			b.Fatal(err)
		}
		_, size, _, err := DecodeHeader(f.Payload)
		if err != nil {
			b.Fatal(err)
		}
		if f, err = fr.ReadFrame(); err != nil || uint64(len(f.Payload)) != size {
			b.Fatal(err)
		}
	}
}

// BenchmarkReadFrames measures framing alone: three frames per iteration.
func BenchmarkReadFrames(b *testing.B) {
	var buf bytes.Buffer
	w := bufio.NewWriter(&buf)
	WriteMethod(w, 1, &BasicPublish{Exchange: "amq.direct", RoutingKey: "orders.created"})
	WriteContent(w, 1, ClassBasic, benchProps(), bytes.Repeat([]byte("x"), 1024), 131072)
	w.Flush()
	fr := NewFrameReader(bufio.NewReaderSize(&loopReader{data: buf.Bytes()}, 64<<10), 131072)
	b.ReportAllocs()
	for b.Loop() {
		for range 3 {
			if _, err := fr.ReadFrame(); err != nil {
				b.Fatal(err)
			}
		}
	}
}

func BenchmarkTableRoundTrip(b *testing.B) {
	t := sampleTable()
	var dst []byte
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if dst, err = AppendTable(dst[:0], t); err != nil {
			b.Fatal(err)
		}
		if _, err := DecodeTable(dst); err != nil {
			b.Fatal(err)
		}
	}
}
