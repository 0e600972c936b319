package wire

import (
	"bytes"
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

func TestTableRoundTrip(t *testing.T) {
	in := sampleTable()
	b, err := AppendTable(nil, in)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeTable(b)
	if err != nil {
		t.Fatal(err)
	}
	if !deepEqual(got, in) {
		t.Fatalf("got %#v\nwant %#v", got, in)
	}
	// Empty and nil tables encode as a zero length and decode as nil.
	for _, e := range []Table{nil, {}} {
		b, _ := AppendTable(nil, e)
		if !bytes.Equal(b, []byte{0, 0, 0, 0}) {
			t.Errorf("empty table % x", b)
		}
		if got, err := DecodeTable(b); got != nil || err != nil {
			t.Errorf("decode empty: %#v %v", got, err)
		}
	}
}

// TestFieldEncodings pins the bytes of every field type, as RabbitMQ and
// amqp091-go encode them.
func TestFieldEncodings(t *testing.T) {
	ts := time.Unix(0x01020304, 0)
	tests := []struct {
		in   any
		want []byte
		back any // decoded value when it differs from in
	}{
		{true, []byte{'t', 1}, nil},
		{false, []byte{'t', 0}, nil},
		{int8(-2), []byte{'b', 0xfe}, nil},
		{uint8(0xfe), []byte{'B', 0xfe}, nil},
		{int16(-2), []byte{'s', 0xff, 0xfe}, nil},
		{uint16(0xfffe), []byte{'u', 0xff, 0xfe}, nil},
		{int32(-2), []byte{'I', 0xff, 0xff, 0xff, 0xfe}, nil},
		{uint32(0xfffffffe), []byte{'i', 0xff, 0xff, 0xff, 0xfe}, nil},
		{int64(-2), []byte{'l', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe}, nil},
		{float32(1), []byte{'f', 0x3f, 0x80, 0, 0}, nil},
		{float64(1), []byte{'d', 0x3f, 0xf0, 0, 0, 0, 0, 0, 0}, nil},
		{Decimal{Scale: 3, Value: -1}, []byte{'D', 3, 0xff, 0xff, 0xff, 0xff}, nil},
		{"hi", []byte{'S', 0, 0, 0, 2, 'h', 'i'}, nil},
		{[]byte{9, 8}, []byte{'x', 0, 0, 0, 2, 9, 8}, nil},
		{[]any{uint8(1), nil}, []byte{'A', 0, 0, 0, 3, 'B', 1, 'V'}, nil},
		{ts, []byte{'T', 0, 0, 0, 0, 1, 2, 3, 4}, ts.UTC()},
		{Table{"k": nil}, []byte{'F', 0, 0, 0, 3, 1, 'k', 'V'}, nil},
		{nil, []byte{'V'}, nil},
		// Convenience types.
		{int(-2), []byte{'I', 0xff, 0xff, 0xff, 0xfe}, int32(-2)},
		{int(math.MaxInt32 + 1), []byte{'l', 0, 0, 0, 0, 0x80, 0, 0, 0}, int64(math.MaxInt32 + 1)},
		{uint(5), []byte{'l', 0, 0, 0, 0, 0, 0, 0, 5}, int64(5)},
		{uint64(5), []byte{'l', 0, 0, 0, 0, 0, 0, 0, 5}, int64(5)},
		{map[string]any{"k": nil}, []byte{'F', 0, 0, 0, 3, 1, 'k', 'V'}, Table{"k": nil}},
	}
	for _, tt := range tests {
		b, err := AppendTable(nil, Table{"f": tt.in})
		if err != nil {
			t.Errorf("%#v: %v", tt.in, err)
			continue
		}
		// Table length, key "f", then the field.
		want := append([]byte{0, 0, 0, byte(2 + len(tt.want)), 1, 'f'}, tt.want...)
		if !bytes.Equal(b, want) {
			t.Errorf("%#v:\n got % x\nwant % x", tt.in, b, want)
		}
		got, err := DecodeTable(b)
		if err != nil {
			t.Errorf("%#v: decode: %v", tt.in, err)
			continue
		}
		back := tt.back
		if back == nil {
			back = tt.in
		}
		if !deepEqual(got["f"], back) {
			t.Errorf("%#v: decoded as %#v", tt.in, got["f"])
		}
	}
}

func TestTableEncodeErrors(t *testing.T) {
	for _, v := range []any{struct{}{}, uint64(math.MaxUint64), uint(math.MaxUint64), []string{"a"}, &Decimal{}, complex(1, 2)} {
		if _, err := AppendTable(nil, Table{"k": v}); !errors.Is(err, ErrUnsupportedFieldType) {
			t.Errorf("%T: %v", v, err)
		}
	}
	if _, err := AppendTable(nil, Table{strings.Repeat("k", 256): 1}); !errors.Is(err, ErrShortStringTooLong) {
		t.Errorf("long key: %v", err)
	}
	// Errors inside nested containers keep their path and sentinel.
	_, err := AppendTable(nil, Table{"outer": []any{1, Table{"inner": struct{}{}}}})
	if !errors.Is(err, ErrUnsupportedFieldType) || !strings.Contains(err.Error(), `"outer": array index 1: table key "inner"`) {
		t.Errorf("nested error: %v", err)
	}
	// A self-referencing table is caught by the depth limit.
	self := Table{}
	self["me"] = self
	if _, err := AppendTable(nil, self); !errors.Is(err, ErrNestingTooDeep) {
		t.Errorf("self reference: %v", err)
	}
	arr := []any{nil}
	arr[0] = arr
	if _, err := AppendTable(nil, Table{"a": arr}); !errors.Is(err, ErrNestingTooDeep) {
		t.Errorf("self-referencing array: %v", err)
	}
	dst := []byte("keep")
	if out, _ := AppendTable(dst, self); string(out) != "keep" {
		t.Errorf("AppendTable on error returned %q", out)
	}
}

// nest wraps v in n levels of alternating tables and arrays.
func nest(v any, n int) any {
	for i := range n {
		if i%2 == 0 {
			v = Table{"n": v}
		} else {
			v = []any{v}
		}
	}
	return v
}

func TestNestingLimit(t *testing.T) {
	// The outermost table is depth 0; MaxNesting more levels are allowed.
	ok := Table{"n": nest(int8(1), MaxNesting)}
	b, err := AppendTable(nil, ok)
	if err != nil {
		t.Fatalf("nesting %d: %v", MaxNesting, err)
	}
	if got, err := DecodeTable(b); err != nil || !deepEqual(got, ok) {
		t.Fatalf("decode nesting %d: %v", MaxNesting, err)
	}
	tooDeep := Table{"n": nest(int8(1), MaxNesting+1)}
	if _, err := AppendTable(nil, tooDeep); !errors.Is(err, ErrNestingTooDeep) {
		t.Fatalf("encode nesting %d: %v", MaxNesting+1, err)
	}
	// Hand-build the over-deep encoding: tables nested MaxNesting+2 deep.
	inner := []byte{0, 0, 0, 0}
	for range MaxNesting + 1 {
		entry := append([]byte{1, 'n', 'F'}, inner...)
		inner = append([]byte{0, 0, 0, byte(len(entry))}, entry...)
	}
	_, err = DecodeTable(inner)
	if e := asError(t, err); e.Code != SyntaxError || !strings.Contains(e.Text, "nested too deeply") {
		t.Fatalf("decode over-deep: %+v", e)
	}
}

func TestDecodeTableMalformed(t *testing.T) {
	tests := map[string][]byte{
		"length beyond input":    {0, 0, 0, 9, 1, 'k', 'V'},
		"unknown field type":     {0, 0, 0, 3, 1, 'k', 'Q'},
		"truncated key":          {0, 0, 0, 2, 5, 'k'},
		"truncated value":        {0, 0, 0, 4, 1, 'k', 'I', 0},
		"string beyond table":    {0, 0, 0, 7, 1, 'k', 'S', 0xff, 0xff, 0xff, 0xff},
		"bytes beyond table":     {0, 0, 0, 7, 1, 'k', 'x', 0x7f, 0xff, 0xff, 0xff},
		"array beyond table":     {0, 0, 0, 7, 1, 'k', 'A', 0, 0, 0, 9},
		"bad value inside array": {0, 0, 0, 8, 1, 'k', 'A', 0, 0, 0, 1, 'Z'},
		"trailing bytes":         {0, 0, 0, 0, 0},
		"short length":           {0, 0, 0},
		"missing type octet":     {0, 0, 0, 2, 1, 'k'},
	}
	for name, b := range tests {
		got, err := DecodeTable(b)
		if err == nil {
			t.Errorf("%s: decoded %#v", name, got)
			continue
		}
		if e := asError(t, err); e.Code != SyntaxError || !e.Hard {
			t.Errorf("%s: %+v", name, e)
		}
	}
}

// TestDecodeTableAllocationBound: a declared length far beyond the input must
// fail without allocating for it.
func TestDecodeTableAllocationBound(t *testing.T) {
	b := []byte{0, 0, 0, 10, 1, 'k', 'S', 0x7f, 0xff, 0xff, 0xff, 'a', 'b'}
	b[3] = byte(len(b) - 4)
	n := allocatedBytes(func() {
		if _, err := DecodeTable(b); err == nil {
			t.Fatal("decoded")
		}
	})
	if n > 4096 {
		t.Errorf("allocated %d bytes", n)
	}
}
