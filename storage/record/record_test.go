package record

import (
	"bytes"
	"testing"
	"time"

	"github.com/bourse-mq/bourse/core"
)

func encode(t testing.TB, off uint64, ts int64, m *core.Message) []byte {
	b := make([]byte, HeaderSize)
	b, err := AppendMessage(b, m)
	if err != nil {
		t.Fatal(err)
	}
	PutHeader(b, off, ts)
	return b
}

func TestRoundTrip(t *testing.T) {
	m := &core.Message{Exchange: "ex", RoutingKey: "a.b", Body: []byte("hello"),
		Headers: core.Table{"n": int64(7), "nested": core.Table{"s": "x"}},
		Arrived: time.Unix(0, 12345)}
	m.Props.MessageID = "id-1"
	m.Props.Priority = 3
	m.Props.Timestamp = time.Unix(1700000000, 0).UTC()
	b := append(encode(t, 41, 1000, m), encode(t, 42, 1001, m)...)
	recs, n, err := Decode(append(b, 0, 0)) // a torn tail is left alone
	if err != nil || n != len(b) || len(recs) != 2 {
		t.Fatalf("decode: %d recs, %d bytes, %v", len(recs), n, err)
	}
	r := recs[1]
	if r.Offset != 42 || r.Timestamp.UnixMilli() != 1001 || !bytes.Equal(r.Message.Body, m.Body) ||
		r.Message.Props.MessageID != "id-1" || r.Message.Props.Priority != 3 || !r.Message.Props.Timestamp.Equal(m.Props.Timestamp) ||
		r.Message.Headers["n"] != int64(7) || r.Message.Headers["nested"].(core.Table)["s"] != "x" {
		t.Fatalf("decoded %+v", r.Message)
	}
	b[len(b)-1] ^= 1
	if _, _, err := Decode(b); err != ErrCorrupt {
		t.Fatalf("flipped byte: %v", err)
	}
}

func FuzzDecode(f *testing.F) {
	m := &core.Message{Exchange: "ex", RoutingKey: "k", Body: []byte("body"), Headers: core.Table{"a": "b"}}
	f.Add(encode(f, 0, 1, m))
	f.Add([]byte{0, 0, 0, 20, 1, 2, 3, 4})
	f.Fuzz(func(t *testing.T, b []byte) {
		recs, n, err := Decode(b)
		if n > len(b) {
			t.Fatalf("consumed %d of %d", n, len(b))
		}
		if err == nil {
			// Whatever decodes re-encodes to a record that decodes the same.
			for _, r := range recs {
				again := encode(t, r.Offset, r.Timestamp.UnixMilli(), r.Message)
				rs, _, err := Decode(again)
				if err != nil || len(rs) != 1 || !bytes.Equal(rs[0].Message.Body, r.Message.Body) {
					t.Fatalf("re-encode: %v", err)
				}
			}
		}
	})
}
