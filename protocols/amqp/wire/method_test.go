package wire

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestMethodRoundTrip(t *testing.T) {
	for i, sm := range allMethods(t) {
		t.Run(sm.name(), func(t *testing.T) {
			m := NewMethod(uint16(sm.class.ID), uint16(sm.m.ID))
			fillMethod(m, i*16)
			payload := mustEncode(t, m)
			got, err := DecodeMethod(payload)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if !reflect.DeepEqual(got, m) {
				t.Fatalf("round trip:\n got %#v\nwant %#v", got, m)
			}
			// The zero value round-trips too.
			zero := NewMethod(m.ClassID(), m.MethodID())
			got, err = DecodeMethod(mustEncode(t, zero))
			if err != nil || !reflect.DeepEqual(got, zero) {
				t.Fatalf("zero value: got %#v, %v", got, err)
			}
		})
	}
}

// TestBitPacking sets each bit argument alone, checking that consecutive bits
// share octets without overlapping (§4.2.5.2).
func TestBitPacking(t *testing.T) {
	for _, sm := range allMethods(t) {
		m := NewMethod(uint16(sm.class.ID), uint16(sm.m.ID))
		v := reflect.ValueOf(m).Elem()
		for i := range v.NumField() {
			if v.Field(i).Kind() != reflect.Bool {
				continue
			}
			one := NewMethod(m.ClassID(), m.MethodID())
			reflect.ValueOf(one).Elem().Field(i).SetBool(true)
			got, err := DecodeMethod(mustEncode(t, one))
			if err != nil || !reflect.DeepEqual(got, one) {
				t.Errorf("%s: only %s set: got %#v, %v", sm.name(), v.Type().Field(i).Name, got, err)
			}
		}
	}
}

// TestKnownEncodings pins the wire bytes of methods whose layout matters most.
func TestKnownEncodings(t *testing.T) {
	tests := []struct {
		m    Method
		want []byte
	}{
		{&BasicPublish{Exchange: "ex", RoutingKey: "rk", Mandatory: true, Immediate: true},
			[]byte{0, 60, 0, 40, 0, 0, 2, 'e', 'x', 2, 'r', 'k', 0x03}},
		{&QueueDeclare{Queue: "q", Durable: true, AutoDelete: true, NoWait: true},
			[]byte{0, 50, 0, 10, 0, 0, 1, 'q', 0x1a, 0, 0, 0, 0}},
		{&BasicNack{DeliveryTag: 258, Multiple: true, Requeue: true},
			[]byte{0, 60, 0, 120, 0, 0, 0, 0, 0, 0, 1, 2, 0x03}},
		{&ConnectionTune{ChannelMax: 2047, FrameMax: 131072, Heartbeat: 60},
			[]byte{0, 10, 0, 30, 0x07, 0xff, 0, 2, 0, 0, 0, 60}},
		{&BasicDeliver{ConsumerTag: "c", DeliveryTag: 1, Redelivered: true, Exchange: "", RoutingKey: "k"},
			[]byte{0, 60, 0, 60, 1, 'c', 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 1, 'k'}},
		{&ConnectionClose{ReplyCode: 320, ReplyText: "x", FailedClassID: 50, FailedMethodID: 10},
			[]byte{0, 10, 0, 50, 1, 64, 1, 'x', 0, 50, 0, 10}},
		{&TxSelect{}, []byte{0, 90, 0, 10}},
		{&ConfirmSelect{NoWait: true}, []byte{0, 85, 0, 10, 1}},
	}
	for _, tt := range tests {
		got := mustEncode(t, tt.m)
		if !bytes.Equal(got, tt.want) {
			t.Errorf("%s:\n got % x\nwant % x", tt.m.Name(), got, tt.want)
		}
		back, err := DecodeMethod(tt.want)
		if err != nil || !reflect.DeepEqual(back, tt.m) {
			t.Errorf("%s: decode known bytes: %#v, %v", tt.m.Name(), back, err)
		}
	}
}

func TestDecodeMethodErrors(t *testing.T) {
	// Unknown class and unknown method: 540 with the IDs.
	for _, p := range [][]byte{{0, 99, 0, 1}, {0, 60, 0, 99, 1, 2, 3}} {
		_, err := DecodeMethod(p)
		e := asError(t, err)
		if e.Code != NotImplemented || !e.Hard || e.ClassID != uint16(p[1]) || e.MethodID != uint16(p[3]) {
			t.Errorf("% x: %+v", p, e)
		}
	}
	// Too short for the IDs.
	for _, p := range [][]byte{nil, {0}, {0, 60, 0}} {
		_, err := DecodeMethod(p)
		if e := asError(t, err); e.Code != SyntaxError || !e.Hard {
			t.Errorf("% x: %+v", p, e)
		}
	}
	// Every truncation of every filled method is a 502 naming the method,
	// and so is a trailing byte.
	for i, sm := range allMethods(t) {
		m := NewMethod(uint16(sm.class.ID), uint16(sm.m.ID))
		fillMethod(m, i)
		p := mustEncode(t, m)
		for n := 4; n < len(p); n++ {
			_, err := DecodeMethod(p[:n])
			e := asError(t, err)
			if e.Code != SyntaxError || e.ClassID != m.ClassID() || e.MethodID != m.MethodID() {
				t.Fatalf("%s truncated to %d: %+v", sm.name(), n, e)
			}
		}
		_, err := DecodeMethod(append(p, 0))
		if e := asError(t, err); e.Code != SyntaxError || !strings.Contains(e.Text, "trailing") {
			t.Errorf("%s with trailing byte: %+v", sm.name(), e)
		}
	}
	// A long string whose length exceeds the payload.
	_, err := DecodeMethod([]byte{0, 10, 0, 21, 0xff, 0xff, 0xff, 0xff, 'a'})
	if e := asError(t, err); e.Code != SyntaxError {
		t.Errorf("long string beyond payload: %+v", e)
	}
}

func TestEncodeErrors(t *testing.T) {
	long := strings.Repeat("x", 256)
	dst := []byte("prefix")
	out, err := EncodeMethod(dst, &QueueDeclare{Queue: long})
	if !errors.Is(err, ErrShortStringTooLong) || !strings.Contains(err.Error(), "queue.declare queue") {
		t.Errorf("long queue name: %v", err)
	}
	if string(out) != "prefix" {
		t.Errorf("EncodeMethod on error returned %q", out)
	}
	_, err = EncodeMethod(nil, &QueueDeclare{Queue: long[:255]})
	if err != nil {
		t.Errorf("255-byte queue name: %v", err)
	}
	_, err = EncodeMethod(nil, &ExchangeDeclare{Arguments: Table{"bad": struct{}{}}})
	if !errors.Is(err, ErrUnsupportedFieldType) {
		t.Errorf("unsupported argument: %v", err)
	}
	_, err = AppendHeader(nil, ClassBasic, 0, &Properties{AppID: long})
	if !errors.Is(err, ErrShortStringTooLong) {
		t.Errorf("long app-id: %v", err)
	}
}

func TestErrorFormatting(t *testing.T) {
	e := &Error{Code: NotFound, Text: "no queue 'q'", ClassID: 50, MethodID: 10}
	if got := e.ReplyText(); got != "NOT_FOUND - no queue 'q'" {
		t.Errorf("ReplyText = %q", got)
	}
	if got := e.Error(); got != "amqp: 404 NOT_FOUND - no queue 'q' (class 50, method 10)" {
		t.Errorf("Error = %q", got)
	}
	cc, ok := e.CloseMethod().(*ChannelClose)
	if !ok || cc.ReplyCode != 404 || cc.FailedClassID != 50 || cc.FailedMethodID != 10 {
		t.Errorf("soft error Close = %#v", e.CloseMethod())
	}
	hard := newError(SyntaxError, strings.Repeat("y", 300))
	if !hard.Hard || len(hard.ReplyText()) != 255 {
		t.Errorf("hard error: %+v", hard)
	}
	if _, ok := hard.CloseMethod().(*ConnectionClose); !ok {
		t.Errorf("hard error Close = %#v", hard.CloseMethod())
	}
	if _, err := EncodeMethod(nil, hard.CloseMethod()); err != nil {
		t.Errorf("encoding the close method: %v", err)
	}
}

func TestHeaderRoundTrip(t *testing.T) {
	props := fullProperties()
	b, err := AppendHeader(nil, ClassBasic, 1<<40, &props)
	if err != nil {
		t.Fatal(err)
	}
	class, size, got, err := DecodeHeader(b)
	if err != nil || class != ClassBasic || size != 1<<40 || !deepEqual(got, props) {
		t.Fatalf("got %d %d %#v %v", class, size, got, err)
	}
	// Flags: all 14 properties set.
	if flags := uint16(b[12])<<8 | uint16(b[13]); flags != 0xfffc {
		t.Errorf("flags = %#04x", flags)
	}
	// No properties.
	b, _ = AppendHeader(nil, ClassBasic, 5, nil)
	want := []byte{0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0}
	if !bytes.Equal(b, want) {
		t.Errorf("empty header % x", b)
	}
	// Known bytes for delivery-mode and content-type only.
	b, _ = AppendHeader(nil, ClassBasic, 0, &Properties{ContentType: "t", DeliveryMode: 2})
	want = []byte{0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x90, 0x00, 1, 't', 2}
	if !bytes.Equal(b, want) {
		t.Errorf("header % x, want % x", b, want)
	}
	// Trailing padding is tolerated.
	if _, _, p, err := DecodeHeader(append(want, 0, 0)); err != nil || p.ContentType != "t" {
		t.Errorf("padding: %v", err)
	}
}

func TestDecodeHeaderErrors(t *testing.T) {
	props := fullProperties()
	full, _ := AppendHeader(nil, ClassBasic, 1, &props)
	for n := range len(full) {
		_, _, _, err := DecodeHeader(full[:n])
		e := asError(t, err)
		if n < 14 && e.Code != FrameError || n >= 14 && e.Code != SyntaxError {
			t.Fatalf("truncated to %d: %+v", n, e)
		}
	}
	// A class without content.
	bad := append([]byte{0, 50}, full[2:]...)
	if _, _, _, err := DecodeHeader(bad); asError(t, err).Code != FrameError {
		t.Errorf("queue class header: %v", err)
	}
	// Continuation flag and unassigned flag bits.
	for _, flags := range []uint16{0x0001, 0x0002} {
		h := []byte{0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, byte(flags >> 8), byte(flags)}
		if _, _, _, err := DecodeHeader(h); asError(t, err).Code != SyntaxError {
			t.Errorf("flags %#04x: %v", flags, err)
		}
	}
}
