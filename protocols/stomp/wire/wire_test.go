package wire

import (
	"bytes"
	"io"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/go-stomp/stomp/v3/frame"
)

// readers returns the same input through readers that chunk it differently.
func readers(s string) map[string]io.Reader {
	return map[string]io.Reader{
		"whole":   strings.NewReader(s),
		"onebyte": iotest.OneByteReader(strings.NewReader(s)),
		"half":    iotest.HalfReader(strings.NewReader(s)),
		"dataerr": iotest.DataErrReader(strings.NewReader(s)),
	}
}

func headers(f *frame.Frame) []string {
	var out []string
	for i := 0; i < f.Header.Len(); i++ {
		k, v := f.Header.GetAt(i)
		out = append(out, k+"="+v)
	}
	return out
}

func TestReadFrames(t *testing.T) {
	in := "\n\r\nCONNECT\naccept-version:1.2\nlogin:a\\cb\n\n\x00\n" +
		"SEND\r\ndestination:/queue/a\r\ncontent-length:3\r\n\r\na\x00b\x00\n\n" +
		"SEND\ndestination:/queue/b\nx:one\nx:two\n\nhello\x00"
	for name, r := range readers(in) {
		t.Run(name, func(t *testing.T) {
			rd := NewReader(r, Limits{})
			f, err := rd.Read()
			if err != nil {
				t.Fatal(err)
			}
			if f.Command != "CONNECT" || f.Header.Get("login") != `a\cb` {
				t.Fatalf("CONNECT must not be unescaped: %v", headers(f))
			}
			rd.SetVersion(V12)
			f, err = rd.Read()
			if err != nil {
				t.Fatal(err)
			}
			if f.Command != "SEND" || f.Header.Get("destination") != "/queue/a" || string(f.Body) != "a\x00b" {
				t.Fatalf("got %s %v %q", f.Command, headers(f), f.Body)
			}
			f, err = rd.Read()
			if err != nil {
				t.Fatal(err)
			}
			if string(f.Body) != "hello" || f.Header.Get("x") != "one" || len(f.Header.GetAll("x")) != 2 {
				t.Fatalf("got %v %q", headers(f), f.Body)
			}
			if _, err := rd.Read(); err != io.EOF {
				t.Fatalf("want io.EOF at the end, got %v", err)
			}
		})
	}
}

func TestEscapesPerVersion(t *testing.T) {
	cases := []struct {
		v       Version
		in      string
		want    string
		wantErr bool
	}{
		{V10, `k: a\nb`, `a\nb`, false},
		{V11, `k:a\nb\cc\\d`, "a\nb:c\\d", false},
		{V11, `k:a\rb`, "", true},
		{V12, `k:a\rb`, "a\rb", false},
		{V12, `k:a\tb`, "", true},
		{V12, `k:a\`, "", true},
		{Raw, `k:a\tb`, `a\tb`, false},
	}
	for _, c := range cases {
		rd := NewReader(strings.NewReader("SEND\n"+c.in+"\n\n\x00"), Limits{})
		rd.SetVersion(c.v)
		f, err := rd.Read()
		if c.wantErr {
			if e, ok := IsDecodeError(err); !ok || e.Kind != Malformed {
				t.Errorf("%v %q: want a Malformed error, got %v", c.v, c.in, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%v %q: %v", c.v, c.in, err)
			continue
		}
		if got := f.Header.Get("k"); got != c.want {
			t.Errorf("%v %q: got %q want %q", c.v, c.in, got, c.want)
		}
	}
}

func TestWriteEscapes(t *testing.T) {
	for v, f := range map[Version]*frame.Frame{
		V11: frame.New("MESSAGE", "a:b", "x\ny\\z\rw"),
		V12: frame.New("MESSAGE", "a:b", "x\ny\\z\r"),
	} {
		b := AppendFrame(nil, v, f)
		rd := NewReader(bytes.NewReader(b), Limits{})
		rd.SetVersion(v)
		g, err := rd.Read()
		if err != nil {
			t.Fatalf("%v: %v in %q", v, err, b)
		}
		k, val := g.Header.GetAt(0)
		if k0, v0 := f.Header.GetAt(0); k != k0 || val != v0 {
			t.Fatalf("%v: %q:%q became %q:%q", v, k0, v0, k, val)
		}
	}
	// 1.0 cannot represent a LF: it must not split the header line.
	b := AppendFrame(nil, V10, frame.New("MESSAGE", "a:b", "x\ninjected:1"))
	rd := NewReader(bytes.NewReader(b), Limits{})
	rd.SetVersion(V10)
	g, err := rd.Read()
	if err != nil || g.Header.Len() != 1 || g.Header.Get("a_b") != "x injected:1" {
		t.Fatalf("1.0 sanitising: %v %v", err, headers(g))
	}
}

func TestLimits(t *testing.T) {
	lim := Limits{MaxHeaderBytes: 128, MaxHeaders: 3, MaxBodyBytes: 10}
	cases := map[string]string{
		"header bytes": "SEND\nk:" + strings.Repeat("x", 200) + "\n\n\x00",
		"header count": "SEND\na:1\nb:2\nc:3\nd:4\n\n\x00",
		"cl":           "SEND\ncontent-length:11\n\n01234567890\x00",
		"huge cl":      "SEND\ncontent-length:99999999999999999999999999\n\n",
		"nul body":     "SEND\n\n01234567890\x00",
		"command":      strings.Repeat("A", 200) + "\n",
	}
	for name, in := range cases {
		for rname, r := range readers(in) {
			_, err := NewReader(r, lim).Read()
			if e, ok := IsDecodeError(err); !ok || (e.Kind != TooLarge && name != "command") {
				t.Errorf("%s/%s: want TooLarge, got %v", name, rname, err)
			}
		}
	}
	malformedCases := []string{
		"SEND\nno-colon\n\n\x00",
		"SEND\n:empty-name\n\n\x00",
		"SEND\ncontent-length:-1\n\n\x00",
		"SEND\ncontent-length:2\n\nabc\x00",
		"send\n\n\x00",
	}
	for _, in := range malformedCases {
		_, err := NewReader(strings.NewReader(in), Limits{}).Read()
		if e, ok := IsDecodeError(err); !ok || e.Kind != Malformed {
			t.Errorf("%q: want Malformed, got %v", in, err)
		}
	}
	if _, err := NewReader(strings.NewReader("SEND\ncontent-length:5\n\nab"), Limits{}).Read(); err != io.ErrUnexpectedEOF {
		t.Errorf("truncated body: want io.ErrUnexpectedEOF, got %v", err)
	}
}

// TestDeclaredLengthIsNotAllocated checks STYLE.md trap 3: a peer declaring
// a large content-length and sending a few bytes costs a few bytes, not the
// declared length.
func TestDeclaredLengthIsNotAllocated(t *testing.T) {
	alloc := func(in string, lim Limits) (uint64, error) {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		_, err := NewReader(strings.NewReader(in), lim).Read()
		runtime.ReadMemStats(&after)
		return after.TotalAlloc - before.TotalAlloc, err
	}
	// Over the limit: refused before the body.
	n, err := alloc("SEND\ncontent-length:4294967295\n\n", Limits{})
	if e, ok := IsDecodeError(err); !ok || e.Kind != TooLarge {
		t.Fatalf("want TooLarge, got %v", err)
	}
	if n > 1<<20 {
		t.Fatalf("allocated %d bytes for a refused frame", n)
	}
	// Within the limit but never sent: the buffer grows with the data.
	n, err = alloc("SEND\ncontent-length:15000000\n\nabc", Limits{})
	if err != io.ErrUnexpectedEOF {
		t.Fatalf("want io.ErrUnexpectedEOF, got %v", err)
	}
	if n > 1<<20 {
		t.Fatalf("allocated %d bytes for 3 body bytes", n)
	}
}

func TestLargeBodyChunked(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789"), 50000)
	in := string(AppendFrame(nil, V12, &frame.Frame{Command: "SEND", Header: frame.NewHeader("content-length", "500000"), Body: body}))
	for name, r := range readers(in) {
		f, err := NewReader(r, Limits{}).Read()
		if err != nil || !bytes.Equal(f.Body, body) {
			t.Fatalf("%s: %v", name, err)
		}
	}
}

// Bourse never writes a header its own reader refuses: no NUL in any
// version, and only UTF-8 in 1.1 and 1.2.
func TestWriterNeverWritesUnreadableHeaders(t *testing.T) {
	for _, tc := range []struct {
		v           Version
		name, value string
		want        string
	}{
		{V12, "k", "a\x00b", "k:a\uFFFDb\n"},
		{V12, "k", "a\xffb\n", "k:a\uFFFDb\\n\n"},
		{V11, "k\x00", "v", "k\uFFFD:v\n"},
		{V10, "k", "a\x00b", "k:a\uFFFDb\n"},
		{V10, "k", "a\xffb", "k:a\xffb\n"}, // 1.0 headers are octets
	} {
		got := string(AppendHeader(nil, tc.v, tc.name, tc.value))
		if got != tc.want {
			t.Errorf("%s %q: %q, want %q", tc.v, tc.name+":"+tc.value, got, tc.want)
		}
		if Representable(tc.v, tc.name, tc.value) && tc.v != V10 {
			t.Errorf("%s %q: Representable", tc.v, tc.value)
		}
		rd := NewReader(strings.NewReader("SEND\n"+got+"\n\x00"), Limits{})
		rd.SetVersion(tc.v)
		f, err := rd.Read()
		if err != nil {
			t.Errorf("%s %q: reading it back: %v (frame %v)", tc.v, got, err, f)
		}
	}
}
