package core

import (
	"reflect"
	"testing"
	"time"
)

func TestTypedRoundTrip(t *testing.T) {
	in := Table{
		"s": "str", "b": int8(-3), "B": uint8(200), "sh": int16(-300), "u": uint16(60000),
		"I": int32(-70000), "i": uint32(4000000000), "l": int64(-1 << 62), "f": float32(1.5),
		"d": 2.25, "D": Decimal{Scale: 2, Value: 12345}, "x": []byte{0, 1, 2}, "t": true,
		"T": time.Unix(1700000000, 0).UTC(), "V": nil,
		"x-death": []any{Table{"count": int64(2), "routing-keys": []any{"a", "b"}}},
	}
	plain, typed, err := SplitHeaders(in)
	if err != nil {
		t.Fatal(err)
	}
	if plain["s"] != "str" || plain["I"] != "-70000" {
		t.Fatalf("plain %v", plain)
	}
	out, err := JoinHeaders(plain, typed)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("round trip\n in %#v\nout %#v", in, out)
	}
}

func FuzzDecodeTyped(f *testing.F) {
	s, _ := EncodeTyped(Table{"a": []any{Table{"b": int64(1)}}, "c": Decimal{1, 2}})
	f.Add(s)
	f.Add(`{"a":{"I":1e20}}`)
	f.Add(`{"a":{"A":[{"A":[]}]}}`)
	f.Fuzz(func(t *testing.T, s string) {
		tab, err := DecodeTyped(s)
		if err != nil {
			return
		}
		again, err := EncodeTyped(tab)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		tab2, err := DecodeTyped(again)
		if err != nil || !reflect.DeepEqual(tab, tab2) {
			t.Fatalf("unstable: %v %#v %#v", err, tab, tab2)
		}
	})
}
