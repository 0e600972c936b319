package wire

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// rawFrame builds a frame byte by byte, independently of the writers.
func rawFrame(typ uint8, channel uint16, payload []byte) []byte {
	n := len(payload)
	b := []byte{typ, byte(channel >> 8), byte(channel), byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
	return append(append(b, payload...), FrameEnd)
}

func reader(b []byte) *bufio.Reader { return bufio.NewReader(bytes.NewReader(b)) }

func TestReadFrame(t *testing.T) {
	method := mustEncode(t, &BasicPublish{Exchange: "e", RoutingKey: "r"})
	stream := bytes.Join([][]byte{
		rawFrame(FrameMethod, 1, method),
		rawFrame(FrameHeader, 1, []byte{0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0}),
		rawFrame(FrameBody, 1, []byte("abc")),
		rawFrame(FrameBody, 65535, nil),
		rawFrame(FrameHeartbeat, 0, nil),
	}, nil)
	want := []Frame{
		{FrameMethod, 1, method},
		{FrameHeader, 1, []byte{0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0}},
		{FrameBody, 1, []byte("abc")},
		{FrameBody, 65535, nil},
		{FrameHeartbeat, 0, nil},
	}
	check := func(name string, next func() (Frame, error)) {
		for i, w := range want {
			f, err := next()
			if err != nil {
				t.Fatalf("%s frame %d: %v", name, i, err)
			}
			if f.Type != w.Type || f.Channel != w.Channel || !bytes.Equal(f.Payload, w.Payload) {
				t.Fatalf("%s frame %d: got %+v want %+v", name, i, f, w)
			}
		}
		if _, err := next(); err != io.EOF {
			t.Fatalf("%s: at end: %v", name, err)
		}
	}
	r := reader(stream)
	check("ReadFrame", func() (Frame, error) { return ReadFrame(r, FrameMinSize) })
	fr := NewFrameReader(bytes.NewReader(stream), FrameMinSize)
	check("FrameReader", fr.ReadFrame)
	// One byte at a time, as from a slow socket.
	fr = NewFrameReader(iotest.OneByteReader(bytes.NewReader(stream)), 0)
	check("OneByteReader", fr.ReadFrame)
}

func frameErrorCode(t *testing.T, err error) uint16 {
	t.Helper()
	e := asError(t, err)
	if !e.Hard {
		t.Errorf("frame error %+v is not hard", e)
	}
	return e.Code
}

func TestReadFrameErrors(t *testing.T) {
	good := rawFrame(FrameMethod, 1, []byte{0, 90, 0, 10})
	badEnd := bytes.Clone(good)
	badEnd[len(badEnd)-1] = 0xcd
	tests := map[string]struct {
		in       []byte
		maxFrame uint32
		contains string
	}{
		"bad frame-end":           {badEnd, 0, "frame-end"},
		"unknown type":            {rawFrame(4, 1, nil), 0, "unknown frame type 4"},
		"type zero":               {rawFrame(0, 0, nil), 0, "unknown frame type"},
		"heartbeat on channel 1":  {rawFrame(FrameHeartbeat, 1, nil), 0, "heartbeat"},
		"heartbeat with payload":  {rawFrame(FrameHeartbeat, 0, []byte{1}), 0, "heartbeat"},
		"one byte over frame-max": {rawFrame(FrameBody, 1, make([]byte, 4096-7)), 4096, "exceeds frame-max"},
		"frame-max below 8":       {rawFrame(FrameBody, 1, nil), 7, "exceeds frame-max"},
	}
	for name, tt := range tests {
		_, err := ReadFrame(reader(tt.in), tt.maxFrame)
		if code := frameErrorCode(t, err); code != FrameError || !strings.Contains(err.Error(), tt.contains) {
			t.Errorf("%s: %v", name, err)
		}
	}
	// Exactly frame-max is fine.
	if _, err := ReadFrame(reader(rawFrame(FrameBody, 1, make([]byte, 4096-8))), 4096); err != nil {
		t.Errorf("frame of exactly frame-max: %v", err)
	}
}

func TestReadFrameTruncated(t *testing.T) {
	full := rawFrame(FrameBody, 3, []byte("payload"))
	for n := range len(full) {
		_, err := ReadFrame(reader(full[:n]), 0)
		want := io.ErrUnexpectedEOF
		if n == 0 {
			want = io.EOF
		}
		if err != want {
			t.Errorf("truncated to %d: %v", n, err)
		}
	}
	// Other read errors pass through.
	boom := errors.New("boom")
	_, err := ReadFrame(bufio.NewReader(iotest.ErrReader(boom)), 0)
	if err != boom {
		t.Errorf("read error: %v", err)
	}
	_, err = ReadFrame(bufio.NewReader(io.MultiReader(bytes.NewReader(full[:9]), iotest.ErrReader(boom))), 0)
	if err != boom {
		t.Errorf("read error in payload: %v", err)
	}
}

// TestReadFrameOversizedNoAllocation: a frame declaring 4 GiB is rejected from
// its header, before anything is allocated for the payload.
func TestReadFrameOversizedNoAllocation(t *testing.T) {
	hdr := []byte{FrameBody, 0, 1, 0xff, 0xff, 0xff, 0xf0}
	br := bufio.NewReader(nil)
	n := allocatedBytes(func() {
		br.Reset(bytes.NewReader(hdr))
		_, err := ReadFrame(br, 131072)
		if code := frameErrorCode(t, err); code != FrameError {
			t.Errorf("code %d", code)
		}
	})
	if n > 1024 {
		t.Errorf("rejecting an oversized frame allocated %d bytes", n)
	}
	// Without a limit, a lying size costs at most one read chunk beyond the
	// bytes that actually arrive.
	lying := append(hdr, "only a few bytes"...)
	n = allocatedBytes(func() {
		br.Reset(bytes.NewReader(lying))
		if _, err := ReadFrame(br, 0); err != io.ErrUnexpectedEOF {
			t.Errorf("lying size: %v", err)
		}
	})
	if n > readChunk+1024 {
		t.Errorf("lying size allocated %d bytes", n)
	}
}

// TestReadFrameLarge reads a payload larger than the read chunk, which takes
// the incremental path.
func TestReadFrameLarge(t *testing.T) {
	payload := bytes.Repeat([]byte("0123456789abcdef"), 3*readChunk/16+5)
	in := rawFrame(FrameBody, 9, payload)
	for _, name := range []string{"ReadFrame", "FrameReader"} {
		var f Frame
		var err error
		if name == "ReadFrame" {
			f, err = ReadFrame(reader(in), 0)
		} else {
			fr := NewFrameReader(bytes.NewReader(bytes.Repeat(in, 2)), uint32(len(in)))
			if f, err = fr.ReadFrame(); err == nil {
				f, err = fr.ReadFrame()
			}
		}
		if err != nil || !bytes.Equal(f.Payload, payload) || f.Channel != 9 {
			t.Fatalf("%s: %v", name, err)
		}
	}
}

// TestFrameReaderReusesBuffer: steady-state reads reuse the payload buffer and
// do not allocate.
func TestFrameReaderReusesBuffer(t *testing.T) {
	frame := rawFrame(FrameBody, 1, bytes.Repeat([]byte{7}, 1000))
	const runs = 100
	src := bytes.NewReader(bytes.Repeat(frame, runs+3))
	fr := NewFrameReader(bufio.NewReaderSize(src, 64<<10), FrameMinSize)
	first, err := fr.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	p0 := &first.Payload[0]
	allocs := testing.AllocsPerRun(runs, func() {
		f, err := fr.ReadFrame()
		if err != nil || len(f.Payload) != 1000 || &f.Payload[0] != p0 {
			t.Fatalf("read: %v (buffer reused: %t)", err, err == nil && &f.Payload[0] == p0)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per frame", allocs)
	}
	if fr.MaxFrame() != FrameMinSize {
		t.Error("MaxFrame")
	}
	fr.SetMaxFrame(100)
	if _, err := fr.ReadFrame(); frameErrorCode(t, err) != FrameError {
		t.Errorf("after SetMaxFrame(100): %v", err)
	}
}

func TestProtocolHeader(t *testing.T) {
	if string(ProtocolHeader) != "AMQP\x00\x00\x09\x01" {
		t.Fatalf("ProtocolHeader = %q", ProtocolHeader)
	}
	if err := CheckProtocolHeader([]byte("AMQP\x00\x00\x09\x01")); err != nil {
		t.Error(err)
	}
	for _, h := range []string{"AMQP\x00\x01\x00\x00", "AMQP\x01\x01\x00\x09", "GET / HT", "AMQP"} {
		if err := CheckProtocolHeader([]byte(h)); !errors.Is(err, ErrProtocolHeader) {
			t.Errorf("%q: %v", h, err)
		}
	}
	if err := ReadProtocolHeader(strings.NewReader("AMQP\x00\x00\x09\x01rest")); err != nil {
		t.Error(err)
	}
	if err := ReadProtocolHeader(strings.NewReader("AMQP")); err != io.ErrUnexpectedEOF {
		t.Errorf("short header: %v", err)
	}
	if err := ReadProtocolHeader(strings.NewReader("HTTP/1.1")); !errors.Is(err, ErrProtocolHeader) {
		t.Errorf("wrong header: %v", err)
	}
}

// TestFrameReaderOwnBodies: with OwnBodies, a large body frame arrives in
// a buffer the next read does not reuse; small ones and other frames still
// share the reader's buffer.
func TestFrameReaderOwnBodies(t *testing.T) {
	big1, big2 := bytes.Repeat([]byte{1}, 8192), bytes.Repeat([]byte{2}, 8192)
	var in []byte
	in = append(in, rawFrame(FrameBody, 1, big1)...)
	in = append(in, rawFrame(FrameBody, 1, []byte("small"))...)
	in = append(in, rawFrame(FrameBody, 1, big2)...)
	fr := NewFrameReader(bytes.NewReader(in), 131072)
	fr.OwnBodies = true
	f1, err := fr.ReadFrame()
	if err != nil || !fr.Owned() {
		t.Fatalf("first: %v owned=%v", err, fr.Owned())
	}
	if _, err := fr.ReadFrame(); err != nil || fr.Owned() {
		t.Fatalf("small: %v owned=%v", err, fr.Owned())
	}
	f3, err := fr.ReadFrame()
	if err != nil || !fr.Owned() {
		t.Fatalf("third: %v owned=%v", err, fr.Owned())
	}
	if !bytes.Equal(f1.Payload, big1) || !bytes.Equal(f3.Payload, big2) {
		t.Fatal("an owned payload was overwritten by a later read")
	}
	// Over frame-max: refused before anything is allocated, as before.
	fr = NewFrameReader(bytes.NewReader(rawFrame(FrameBody, 1, make([]byte, 9000))), 8192)
	fr.OwnBodies = true
	if _, err := fr.ReadFrame(); err == nil {
		t.Fatal("a body frame above frame-max was read")
	}
}
