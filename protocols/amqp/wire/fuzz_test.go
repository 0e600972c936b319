package wire

import (
	"bufio"
	"bytes"
	"io"
	"testing"
)

// Fuzz targets. Each checks that decoding arbitrary input never panics, fails
// only with the documented errors, and that whatever decodes re-encodes to a
// canonical form that is no longer than the input and decodes to the same
// value. Seeds are real encodings of every method, full properties and
// tables. Run one with, for example,
//
//	go test -run='^$' -fuzz=FuzzDecodeMethod -fuzztime=20s ./protocols/amqp/wire

func methodSeeds(f *testing.F) [][]byte {
	var seeds [][]byte
	for i, sm := range allMethods(f) {
		m := NewMethod(uint16(sm.class.ID), uint16(sm.m.ID))
		seeds = append(seeds, mustEncode(f, m))
		fillMethod(m, i)
		seeds = append(seeds, mustEncode(f, m))
	}
	return seeds
}

func FuzzDecodeMethod(f *testing.F) {
	for _, s := range methodSeeds(f) {
		f.Add(s)
	}
	f.Add([]byte{0, 60, 0, 40})
	f.Add([]byte{0, 99, 0, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := DecodeMethod(data)
		if err != nil {
			e := asError(t, err)
			if (e.Code != SyntaxError && e.Code != NotImplemented) || !e.Hard {
				t.Fatalf("unexpected error %+v", e)
			}
			return
		}
		enc, err := EncodeMethod(nil, m)
		if err != nil {
			t.Fatalf("%s decoded but does not re-encode: %v", m.Name(), err)
		}
		if len(enc) > len(data) {
			t.Fatalf("%s re-encoded to %d bytes from %d", m.Name(), len(enc), len(data))
		}
		m2, err := DecodeMethod(enc)
		if err != nil {
			t.Fatalf("%s: re-encoding does not decode: %v", m.Name(), err)
		}
		if !deepEqual(m, m2) {
			t.Fatalf("%s unstable:\n first %#v\nsecond %#v", m.Name(), m, m2)
		}
	})
}

func frameSeeds(f *testing.F) [][]byte {
	var buf bytes.Buffer
	w := bufio.NewWriter(&buf)
	props := fullProperties()
	WriteMethod(w, 1, &BasicPublish{Exchange: "ex", RoutingKey: "rk"})
	WriteContent(w, 1, ClassBasic, &props, bytes.Repeat([]byte("b"), 5000), FrameMinSize)
	WriteHeartbeat(w)
	w.Flush()
	seeds := [][]byte{buf.Bytes()}
	for _, p := range methodSeeds(f)[:6] {
		seeds = append(seeds, rawFrame(FrameMethod, 0, p))
	}
	seeds = append(seeds,
		[]byte{FrameBody, 0, 1, 0xff, 0xff, 0xff, 0xff},
		rawFrame(FrameHeartbeat, 1, nil),
		rawFrame(7, 1, []byte("x")),
	)
	return seeds
}

func FuzzReadFrame(f *testing.F) {
	for _, s := range frameSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bufio.NewReader(bytes.NewReader(data))
		fr := NewFrameReader(bytes.NewReader(data), FrameMinSize)
		for {
			f1, err1 := ReadFrame(r, FrameMinSize)
			f2, err2 := fr.ReadFrame()
			if (err1 == nil) != (err2 == nil) || err1 != nil && err1.Error() != err2.Error() {
				t.Fatalf("ReadFrame and FrameReader disagree: %v / %v", err1, err2)
			}
			if err1 != nil {
				if err1 == io.EOF || err1 == io.ErrUnexpectedEOF {
					return
				}
				if e := asError(t, err1); e.Code != FrameError || !e.Hard {
					t.Fatalf("unexpected error %+v", e)
				}
				return
			}
			if f1.Type != f2.Type || f1.Channel != f2.Channel || !bytes.Equal(f1.Payload, f2.Payload) {
				t.Fatalf("ReadFrame and FrameReader disagree: %+v / %+v", f1, f2)
			}
			if len(f1.Payload) > FrameMinSize-8 {
				t.Fatalf("payload of %d bytes exceeds frame-max", len(f1.Payload))
			}
			// The frame re-encodes to the bytes it came from.
			again, err := ReadFrame(reader(rawFrame(f1.Type, f1.Channel, f1.Payload)), FrameMinSize)
			if err != nil || again.Type != f1.Type || again.Channel != f1.Channel || !bytes.Equal(again.Payload, f1.Payload) {
				t.Fatalf("frame does not round-trip: %v", err)
			}
			// Payload decoders must not panic either.
			switch f1.Type {
			case FrameMethod:
				DecodeMethod(f1.Payload)
			case FrameHeader:
				DecodeHeader(f1.Payload)
			}
		}
	})
}

func FuzzDecodeHeader(f *testing.F) {
	props := fullProperties()
	full, _ := AppendHeader(nil, ClassBasic, 123456, &props)
	empty, _ := AppendHeader(nil, ClassBasic, 0, nil)
	some, _ := AppendHeader(nil, ClassBasic, 1, &Properties{DeliveryMode: 2, Headers: Table{"a": []any{int8(1)}}})
	f.Add(full)
	f.Add(empty)
	f.Add(some)
	f.Fuzz(func(t *testing.T, data []byte) {
		class, size, p, err := DecodeHeader(data)
		if err != nil {
			if e := asError(t, err); (e.Code != FrameError && e.Code != SyntaxError) || !e.Hard {
				t.Fatalf("unexpected error %+v", e)
			}
			return
		}
		enc, err := AppendHeader(nil, class, size, &p)
		if err != nil {
			t.Fatalf("decoded properties do not re-encode: %v", err)
		}
		if len(enc) > len(data) {
			t.Fatalf("re-encoded to %d bytes from %d", len(enc), len(data))
		}
		class2, size2, p2, err := DecodeHeader(enc)
		if err != nil || class2 != class || size2 != size || !deepEqual(p, p2) {
			t.Fatalf("unstable: %v\n first %#v\nsecond %#v", err, p, p2)
		}
	})
}

func FuzzTable(f *testing.F) {
	for _, tbl := range []Table{sampleTable(), {"n": nest(int8(1), MaxNesting)}, {"": nil}, nil} {
		b, err := AppendTable(nil, tbl)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		tbl, err := DecodeTable(data)
		if err != nil {
			if e := asError(t, err); e.Code != SyntaxError || !e.Hard {
				t.Fatalf("unexpected error %+v", e)
			}
			return
		}
		enc, err := AppendTable(nil, tbl)
		if err != nil {
			t.Fatalf("decoded table does not re-encode: %v", err)
		}
		if len(enc) > len(data) {
			t.Fatalf("re-encoded to %d bytes from %d", len(enc), len(data))
		}
		tbl2, err := DecodeTable(enc)
		if err != nil || !deepEqual(tbl, tbl2) {
			t.Fatalf("unstable: %v\n first %#v\nsecond %#v", err, tbl, tbl2)
		}
	})
}
