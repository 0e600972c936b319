package wire

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"

	"github.com/go-stomp/stomp/v3/frame"
)

// Version is the STOMP protocol version whose header encoding applies.
type Version uint8

// Versions. Raw is the encoding of CONNECT, STOMP and CONNECTED frames in
// every version: no escapes, no trimming.
const (
	Raw Version = iota
	V10
	V11
	V12
)

func (v Version) String() string {
	switch v {
	case V10:
		return "1.0"
	case V11:
		return "1.1"
	case V12:
		return "1.2"
	default:
		return "raw"
	}
}

// ParseVersion parses "1.0", "1.1" or "1.2".
func ParseVersion(s string) (Version, bool) {
	switch s {
	case "1.0":
		return V10, true
	case "1.1":
		return V11, true
	case "1.2":
		return V12, true
	}
	return Raw, false
}

// Default limits.
const (
	DefaultMaxHeaderBytes = 64 << 10
	DefaultMaxHeaders     = 1000
	DefaultMaxBodyBytes   = 16 << 20
)

// Limits bound what a Reader accepts. They are checked before anything is
// allocated for the part they bound. Zero fields take the defaults.
type Limits struct {
	// MaxHeaderBytes bounds the command line plus all header lines of one
	// frame, line ends included.
	MaxHeaderBytes int
	// MaxHeaders bounds the number of header lines of one frame.
	MaxHeaders int
	// MaxBodyBytes bounds a body, whether or not content-length is given.
	MaxBodyBytes int
}

func (l Limits) withDefaults() Limits {
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if l.MaxHeaders <= 0 {
		l.MaxHeaders = DefaultMaxHeaders
	}
	if l.MaxBodyBytes <= 0 {
		l.MaxBodyBytes = DefaultMaxBodyBytes
	}
	return l
}

// ErrorKind classifies decoding errors. Every one is fatal to the
// connection: the position in the stream is lost.
type ErrorKind uint8

// Error kinds.
const (
	Malformed ErrorKind = iota + 1 // the bytes are not a STOMP frame
	TooLarge                       // a limit was exceeded
)

// Error is a decoding error.
type Error struct {
	Kind ErrorKind
	Msg  string
}

func (e *Error) Error() string { return "stomp frame: " + e.Msg }

func malformed(format string, args ...any) error {
	return &Error{Kind: Malformed, Msg: fmt.Sprintf(format, args...)}
}

func tooLarge(format string, args ...any) error {
	return &Error{Kind: TooLarge, Msg: fmt.Sprintf(format, args...)}
}

// IsDecodeError reports whether err is a *Error (bad input rather than an
// I/O failure), returning it.
func IsDecodeError(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}

// Reader reads STOMP frames from a byte stream.
type Reader struct {
	br   *bufio.Reader
	v    Version
	lim  Limits
	line []byte // scratch for lines longer than the bufio buffer
}

// readBufferSize is the bufio buffer; lines longer than it are assembled in
// Reader.line, still within Limits.MaxHeaderBytes.
const readBufferSize = 16 << 10

// NewReader returns a Reader with version Raw (what a server expects before
// CONNECT) and the given limits.
func NewReader(r io.Reader, lim Limits) *Reader {
	lim = lim.withDefaults()
	// A buffer no larger than the header limit lets an over-long line be
	// refused as soon as the limit is passed, not when 16 KiB have come.
	size := min(readBufferSize, lim.MaxHeaderBytes+1)
	return &Reader{br: bufio.NewReaderSize(r, size), lim: lim}
}

// SetVersion sets the version whose header encoding applies to the frames
// read next. CONNECT, STOMP and CONNECTED frames are always read Raw.
func (r *Reader) SetVersion(v Version) { r.v = v }

// Version returns the version set with SetVersion.
func (r *Reader) Version() Version { return r.v }

// Limits returns the limits in force.
func (r *Reader) Limits() Limits { return r.lim }

// Read returns the next frame. Heart-beat EOLs between frames are skipped.
// It returns io.EOF when the stream ends cleanly between frames,
// io.ErrUnexpectedEOF when it ends inside one, and a *Error for bad input.
func (r *Reader) Read() (*frame.Frame, error) {
	for {
		budget := r.lim.MaxHeaderBytes
		line, err := r.readCommand()
		if err != nil {
			return nil, err
		}
		if len(line) == 0 {
			continue // heart-beat, or the optional EOL after a frame's NUL
		}
		return r.readRest(string(line), budget-len(line)-1)
	}
}

// maxCommand is the longest command line accepted (the longest command,
// UNSUBSCRIBE, has 11 letters).
const maxCommand = 32

// readCommand reads a command line octet by octet, so that input that
// cannot be a command (binary, TLS, HTTP) is refused at its first wrong
// octet rather than when a LF or the header limit comes. An empty line is
// a heart-beat.
func (r *Reader) readCommand() ([]byte, error) {
	r.line = r.line[:0]
	for {
		b, err := r.br.ReadByte()
		if err != nil {
			if errors.Is(err, io.EOF) && len(r.line) > 0 {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
		n := len(r.line)
		switch {
		case b == '\n':
			if n > 0 && r.line[n-1] == '\r' {
				n-- // STOMP 1.2: an optional CR before the LF
			}
			return r.line[:n], nil
		case n > 0 && r.line[n-1] == '\r', // a CR not followed by LF
			b != '\r' && (b < 'A' || b > 'Z'),
			n >= maxCommand:
			return nil, malformed("invalid command line %q", truncate(append(r.line, b)))
		}
		r.line = append(r.line, b)
	}
}

func (r *Reader) readRest(cmd string, budget int) (*frame.Frame, error) {
	v := r.v
	switch cmd {
	case frame.CONNECT, frame.STOMP, frame.CONNECTED:
		v = Raw // STOMP 1.2 "Value Encoding": these frames never escape
	}
	f := frame.New(cmd)
	for n := 0; ; n++ {
		line, err := r.readLine(&budget, v)
		if err != nil {
			return nil, eofIsUnexpected(err)
		}
		if len(line) == 0 {
			break
		}
		if n >= r.lim.MaxHeaders {
			return nil, tooLarge("more than %d header lines", r.lim.MaxHeaders)
		}
		if bytes.IndexByte(line, 0) >= 0 {
			// No escape can produce a NUL, and a peer that splits frames
			// at NUL octets would see a frame end inside the header.
			return nil, malformed("NUL octet in header line %q", truncate(line))
		}
		i := bytes.IndexByte(line, ':')
		if i < 0 {
			return nil, malformed("header line without a colon: %q", truncate(line))
		}
		if i == 0 {
			return nil, malformed("header line with an empty name: %q", truncate(line))
		}
		key, err := decode(line[:i], v, false)
		if err != nil {
			return nil, err
		}
		value, err := decode(line[i+1:], v, true)
		if err != nil {
			return nil, err
		}
		if v >= V11 && (!utf8.ValidString(key) || !utf8.ValidString(value)) {
			// STOMP 1.1 and 1.2: "The commands and headers are encoded in
			// UTF-8."
			return nil, malformed("header line %q is not UTF-8", truncate(line))
		}
		f.Header.Add(key, value)
	}
	if cl, ok := f.Header.Contains(frame.ContentLength); ok {
		n, err := parseContentLength(cl, r.lim.MaxBodyBytes)
		if err != nil {
			return nil, err
		}
		if f.Body, err = r.readN(n); err != nil {
			return nil, err
		}
		b, err := r.br.ReadByte()
		if err != nil {
			return nil, eofIsUnexpected(err)
		}
		if b != 0 {
			return nil, malformed("body of %d bytes (content-length) is not followed by a NUL octet", n)
		}
		return f, nil
	}
	body, err := r.readUntilNUL()
	if err != nil {
		return nil, err
	}
	f.Body = body
	return f, nil
}

// readLine returns the next line without its EOL. The slice is valid until
// the next read. budget is decremented by the bytes consumed, EOL included.
func (r *Reader) readLine(budget *int, v Version) ([]byte, error) {
	r.line = r.line[:0]
	for {
		chunk, err := r.br.ReadSlice('\n')
		if len(chunk) > *budget {
			return nil, tooLarge("command and headers exceed %d bytes", r.lim.MaxHeaderBytes)
		}
		*budget -= len(chunk)
		switch {
		case err == nil:
			line := chunk
			if len(r.line) > 0 {
				r.line = append(r.line, chunk...)
				line = r.line
			}
			return trimEOL(line, v), nil
		case errors.Is(err, bufio.ErrBufferFull):
			r.line = append(r.line, chunk...)
		case errors.Is(err, io.EOF) && (len(chunk) > 0 || len(r.line) > 0):
			return nil, io.ErrUnexpectedEOF
		default:
			return nil, err
		}
	}
}

// trimEOL removes the LF and the CR before it. STOMP 1.2 lines end with an
// optional single CR; in the other encodings every trailing CR goes, so
// that a value read there never ends with a CR it could not write back.
func trimEOL(line []byte, v Version) []byte {
	line = line[:len(line)-1]
	if v == V12 {
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		return line
	}
	for n := len(line); n > 0 && line[n-1] == '\r'; n-- {
		line = line[:n-1]
	}
	return line
}

// decode turns a raw header name or value into a string per v.
func decode(b []byte, v Version, isValue bool) (string, error) {
	switch v {
	case Raw:
		return string(b), nil
	case V10:
		if isValue {
			b = bytes.TrimLeft(b, " ") // as RabbitMQ, for 1.0 clients writing "key: value"
		}
		return string(b), nil
	}
	if bytes.IndexByte(b, '\\') < 0 {
		return string(b), nil
	}
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); i++ {
		c := b[i]
		if c != '\\' {
			out = append(out, c)
			continue
		}
		i++
		if i == len(b) {
			return "", malformed("header %q ends with an incomplete escape", truncate(b))
		}
		switch b[i] {
		case 'n':
			out = append(out, '\n')
		case 'c':
			out = append(out, ':')
		case '\\':
			out = append(out, '\\')
		case 'r':
			if v != V12 {
				return "", malformed("undefined escape sequence \\r in STOMP %s header %q", v, truncate(b))
			}
			out = append(out, '\r')
		default:
			// STOMP 1.1/1.2: "Undefined escape sequences such as \t MUST
			// be treated as a fatal protocol error."
			return "", malformed("undefined escape sequence \\%c in header %q", b[i], truncate(b))
		}
	}
	return string(out), nil
}

// parseContentLength parses a content-length value without trusting it:
// anything above max is refused as soon as it is seen.
func parseContentLength(s string, max int) (int, error) {
	if s == "" {
		return 0, malformed("empty content-length")
	}
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, malformed("content-length %q is not a non-negative decimal integer", truncate([]byte(s)))
		}
		n = n*10 + int(c-'0')
		if n > max {
			return 0, tooLarge("content-length %s exceeds the limit of %d bytes", truncate([]byte(s)), max)
		}
	}
	return n, nil
}

// growChunk is the most a body buffer grows ahead of the bytes received.
const growChunk = 64 << 10

// readN reads exactly n body bytes, growing the buffer as they arrive so a
// peer that declares a large content-length and sends nothing costs at most
// growChunk bytes.
func (r *Reader) readN(n int) ([]byte, error) {
	if n == 0 {
		return nil, nil
	}
	buf := make([]byte, 0, min(n, growChunk))
	for len(buf) < n {
		if len(buf) == cap(buf) {
			nb := make([]byte, len(buf), min(n, 2*cap(buf)))
			copy(nb, buf)
			buf = nb
		}
		m, err := r.br.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+m]
		if err != nil && len(buf) < n {
			return nil, eofIsUnexpected(err)
		}
	}
	return buf, nil
}

func (r *Reader) readUntilNUL() ([]byte, error) {
	var body []byte
	for {
		chunk, err := r.br.ReadSlice(0)
		size := len(body) + len(chunk)
		if err == nil {
			size-- // the NUL
		}
		if size > r.lim.MaxBodyBytes {
			return nil, tooLarge("body exceeds the limit of %d bytes", r.lim.MaxBodyBytes)
		}
		switch {
		case err == nil:
			if len(body) == 0 {
				if len(chunk) == 1 {
					return nil, nil
				}
				return append([]byte(nil), chunk[:len(chunk)-1]...), nil
			}
			return append(body, chunk[:len(chunk)-1]...), nil
		case errors.Is(err, bufio.ErrBufferFull):
			body = append(body, chunk...)
		default:
			return nil, eofIsUnexpected(err)
		}
	}
}

func eofIsUnexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// truncate bounds what error messages quote of the input.
func truncate(b []byte) string {
	const max = 64
	if len(b) > max {
		return string(b[:max]) + "…"
	}
	return string(b)
}
