package wire

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

// readAll reads every frame in b.
func readAll(t *testing.T, b []byte, maxFrame uint32) []Frame {
	t.Helper()
	var out []Frame
	r := reader(b)
	for {
		f, err := ReadFrame(r, maxFrame)
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("frame %d: %v", len(out), err)
		}
		out = append(out, f)
	}
}

func TestWriteMethodAndContent(t *testing.T) {
	var buf bytes.Buffer
	w := bufio.NewWriter(&buf)
	pub := &BasicPublish{Exchange: "amq.topic", RoutingKey: "a.b", Mandatory: true}
	props := fullProperties()
	body := bytes.Repeat([]byte("0123456789"), 1000) // 10000 bytes
	if err := WriteMethod(w, 7, pub); err != nil {
		t.Fatal(err)
	}
	if buf.Len() != 0 {
		t.Error("WriteMethod flushed on its own")
	}
	if err := WriteContent(w, 7, ClassBasic, &props, body, FrameMinSize); err != nil {
		t.Fatal(err)
	}
	if err := WriteHeartbeat(w); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	frames := readAll(t, buf.Bytes(), FrameMinSize)
	if len(frames) != 6 {
		t.Fatalf("%d frames", len(frames))
	}
	m, err := DecodeMethod(frames[0].Payload)
	if err != nil || !reflect.DeepEqual(m, pub) || frames[0].Type != FrameMethod || frames[0].Channel != 7 {
		t.Fatalf("method frame: %#v %v", m, err)
	}
	class, size, got, err := DecodeHeader(frames[1].Payload)
	if err != nil || class != ClassBasic || size != 10000 || !deepEqual(got, props) || frames[1].Type != FrameHeader {
		t.Fatalf("header frame: %v", err)
	}
	var reassembled []byte
	for i, f := range frames[2:5] {
		if f.Type != FrameBody || f.Channel != 7 {
			t.Fatalf("body frame %d: %+v", i, f)
		}
		reassembled = append(reassembled, f.Payload...)
	}
	if l := []int{len(frames[2].Payload), len(frames[3].Payload), len(frames[4].Payload)}; !reflect.DeepEqual(l, []int{4088, 4088, 1824}) {
		t.Errorf("body frame sizes %v", l)
	}
	if !bytes.Equal(reassembled, body) {
		t.Error("body differs")
	}
	if f := frames[5]; f.Type != FrameHeartbeat || f.Channel != 0 || len(f.Payload) != 0 {
		t.Errorf("heartbeat %+v", f)
	}
	// Exact bytes of a heartbeat.
	buf.Reset()
	WriteHeartbeat(w)
	w.Flush()
	if !bytes.Equal(buf.Bytes(), []byte{8, 0, 0, 0, 0, 0, 0, 0xce}) {
		t.Errorf("heartbeat % x", buf.Bytes())
	}
}

func TestWriteContentEdgeCases(t *testing.T) {
	var buf bytes.Buffer
	w := bufio.NewWriterSize(&buf, 64)
	// Empty body: a header only. nil props: no flags.
	if err := WriteContent(w, 1, ClassBasic, nil, nil, 0); err != nil {
		t.Fatal(err)
	}
	// A body larger than the bufio buffer, no frame-max: one body frame
	// written through.
	big := bytes.Repeat([]byte{1}, 5000)
	if err := WriteContent(w, 1, ClassBasic, nil, big, 0); err != nil {
		t.Fatal(err)
	}
	// A body that is an exact multiple of the chunk size.
	if err := WriteBody(w, 2, make([]byte, 200), 108); err != nil {
		t.Fatal(err)
	}
	w.Flush()
	frames := readAll(t, buf.Bytes(), 0)
	if len(frames) != 5 {
		t.Fatalf("%d frames", len(frames))
	}
	if frames[0].Type != FrameHeader || frames[1].Type != FrameHeader || !bytes.Equal(frames[2].Payload, big) {
		t.Error("frame sequence")
	}
	if len(frames[3].Payload) != 100 || len(frames[4].Payload) != 100 {
		t.Errorf("chunks %d %d", len(frames[3].Payload), len(frames[4].Payload))
	}
}

func TestWriteErrorsLeaveWriterUnchanged(t *testing.T) {
	var buf bytes.Buffer
	w := bufio.NewWriter(&buf)
	WriteHeartbeat(w)
	before := w.Buffered()
	long := strings.Repeat("x", 300)
	if err := WriteMethod(w, 1, &QueueDeclare{Queue: long}); !errors.Is(err, ErrShortStringTooLong) {
		t.Errorf("WriteMethod: %v", err)
	}
	props := &Properties{Headers: Table{"big": strings.Repeat("y", 5000)}}
	if err := WriteContent(w, 1, ClassBasic, props, []byte("x"), FrameMinSize); !errors.Is(err, ErrFrameTooLarge) {
		t.Errorf("header over frame-max: %v", err)
	}
	if err := WriteContent(w, 1, ClassBasic, nil, []byte("x"), 8); !errors.Is(err, ErrInvalidFrameMax) {
		t.Errorf("frame-max 8: %v", err)
	}
	if err := WriteBody(w, 1, []byte("x"), 3); !errors.Is(err, ErrInvalidFrameMax) {
		t.Errorf("WriteBody frame-max 3: %v", err)
	}
	if w.Buffered() != before {
		t.Errorf("failed writes left %d bytes buffered, want %d", w.Buffered(), before)
	}
}

type failWriter struct{ err error }

func (f failWriter) Write([]byte) (int, error) { return 0, f.err }

func TestWritePropagatesIOErrors(t *testing.T) {
	boom := errors.New("boom")
	w := bufio.NewWriterSize(failWriter{boom}, 16)
	if err := WriteContent(w, 1, ClassBasic, nil, make([]byte, 100), 0); !errors.Is(err, boom) {
		t.Errorf("got %v", err)
	}
	if err := WriteMethod(w, 1, &TxSelect{}); !errors.Is(err, boom) {
		t.Errorf("got %v", err)
	}
}

// TestWritePathAllocations: publishing a message (method, header, body
// frames) allocates nothing per frame.
func TestWritePathAllocations(t *testing.T) {
	w := bufio.NewWriterSize(io.Discard, 64<<10)
	pub := &BasicPublish{Exchange: "amq.direct", RoutingKey: "orders"}
	props := &Properties{ContentType: "application/json", DeliveryMode: 2, Headers: Table{"x-retry": int32(3), "trace": "abc"}}
	body := bytes.Repeat([]byte("x"), 10000)
	allocs := testing.AllocsPerRun(200, func() {
		if err := WriteMethod(w, 1, pub); err != nil {
			t.Fatal(err)
		}
		if err := WriteContent(w, 1, ClassBasic, props, body, FrameMinSize); err != nil {
			t.Fatal(err)
		}
		if err := WriteHeartbeat(w); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per publish", allocs)
	}
}
