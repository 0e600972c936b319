package wire

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"

	"github.com/go-stomp/stomp/v3/frame"
)

// FuzzReadFrame feeds arbitrary bytes, one byte per Read, to a Reader in
// each version. Invariants: no panic; every error is io.EOF,
// io.ErrUnexpectedEOF or a *Error; no body or header section beyond the
// limits; and every frame read is stable: written back with the same
// version and read again, it is the same frame (parse → write → parse).
func FuzzReadFrame(f *testing.F) {
	seeds := []string{
		"CONNECT\naccept-version:1.0,1.1,1.2\nhost:/\nlogin:guest\npasscode:guest\nheart-beat:0,100\n\n\x00",
		"STOMP\naccept-version:1.2\nhost:/\n\n\x00\n",
		"SEND\ndestination:/queue/a\ncontent-type:text/plain\ncontent-length:5\n\nhe\x00lo\x00\n",
		"SEND\ndestination:/topic/a.b\nk\\cx:v\\nw\\\\\\r\nreceipt:1\n\nbody\x00",
		"SUBSCRIBE\r\nid:0\r\ndestination:/exchange/amq.topic/#\r\nack:client-individual\r\n\r\n\x00",
		"ACK\nid:T_0@@session-x@@1\ntransaction:tx1\n\n\x00",
		"MESSAGE\nsubscription:0\nmessage-id:1\ndestination:/queue/a\ncontent-length:0\n\n\x00",
		"SEND\ndestination:/queue/a\ncontent-length:4294967296\n\n",
		"\n\n\r\nDISCONNECT\nreceipt:77\n\n\x00",
		"SEND\nk:a\r\r\n\n\x00",
		"SEND\nk: spaced\n\n\x00",
	}
	for _, s := range seeds {
		for v := Raw; v <= V12; v++ {
			f.Add([]byte(s), uint8(v))
		}
	}
	lim := Limits{MaxHeaderBytes: 1024, MaxHeaders: 16, MaxBodyBytes: 4096}
	f.Fuzz(func(t *testing.T, data []byte, ver uint8) {
		v := Version(ver % 4)
		rd := NewReader(iotest.OneByteReader(bytes.NewReader(data)), lim)
		rd.SetVersion(v)
		for i := 0; i < 64; i++ {
			fr, err := rd.Read()
			if err != nil {
				if _, ok := IsDecodeError(err); !ok && err != io.EOF && !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("unexpected error type %T: %v", err, err)
				}
				return
			}
			if len(fr.Body) > lim.MaxBodyBytes || fr.Header.Len() > lim.MaxHeaders {
				t.Fatalf("limits exceeded: body %d headers %d", len(fr.Body), fr.Header.Len())
			}
			out := AppendFrame(nil, v, fr)
			rd2 := NewReader(bytes.NewReader(out), Limits{})
			rd2.SetVersion(v)
			again, err := rd2.Read()
			if err != nil {
				t.Fatalf("re-read of %q: %v", out, err)
			}
			if !sameFrame(fr, again) {
				t.Fatalf("unstable:\n first %q %v %q\nsecond %q %v %q\n wire %q", fr.Command, headers(fr), fr.Body, again.Command, headers(again), again.Body, out)
			}
		}
	})
}

func sameFrame(a, b *frame.Frame) bool {
	if a.Command != b.Command || !bytes.Equal(a.Body, b.Body) || a.Header.Len() != b.Header.Len() {
		return false
	}
	for i := 0; i < a.Header.Len(); i++ {
		k1, v1 := a.Header.GetAt(i)
		k2, v2 := b.Header.GetAt(i)
		if k1 != k2 || v1 != v2 {
			return false
		}
	}
	return true
}
