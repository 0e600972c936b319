package wire

import (
	"io"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/go-stomp/stomp/v3/frame"
)

// AppendHeader appends one "name:value" header line encoded for v.
//
// STOMP 1.1 and 1.2 escape what they can. Raw and 1.0 have no escapes, so a
// LF (in a name or a value) or a colon (in a name) cannot be written as is:
// it is replaced by a space or an underscore rather than allowed to split
// the header line or inject another header. A NUL, which no version can
// carry, and invalid UTF-8 in 1.1 and 1.2 (whose headers are UTF-8) become
// U+FFFD. Callers that must not lose such
// headers carry them some other way (the adapter uses its typed header).
func AppendHeader(dst []byte, v Version, name, value string) []byte {
	dst = appendEncoded(dst, v, name, true)
	dst = append(dst, ':')
	dst = appendEncoded(dst, v, value, false)
	return append(dst, '\n')
}

// Representable reports whether name and value survive AppendHeader in
// version v unchanged.
func Representable(v Version, name, value string) bool {
	if name == "" || strings.IndexByte(name, 0) >= 0 || strings.IndexByte(value, 0) >= 0 {
		return false
	}
	if v >= V11 && (!utf8.ValidString(name) || !utf8.ValidString(value)) {
		return false
	}
	switch v {
	case V12:
		return true
	case V11:
		// 1.1 has no escape for CR, and a reader drops trailing CRs.
		return value == "" || value[len(value)-1] != '\r'
	}
	for i := 0; i < len(name); i++ {
		if name[i] == '\n' || name[i] == ':' || name[i] == '\r' {
			return false
		}
	}
	for i := 0; i < len(value); i++ {
		if value[i] == '\n' || value[i] == '\r' {
			return false
		}
	}
	return v != V10 || len(value) == 0 || value[0] != ' '
}

func needsEscape(v Version, s string, isName bool) bool {
	if v >= V11 && !utf8.ValidString(s) {
		return true
	}
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\n', 0:
			return true
		case ':':
			if isName || v == V11 || v == V12 {
				return true
			}
		case '\\':
			if v == V11 || v == V12 {
				return true
			}
		case '\r':
			if v == V12 {
				return true
			}
		}
	}
	return false
}

func appendEncoded(dst []byte, v Version, s string, isName bool) []byte {
	if !needsEscape(v, s, isName) {
		return append(dst, s...)
	}
	if v >= V11 {
		s = strings.ToValidUTF8(s, "\uFFFD") // readers refuse anything else
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == 0 {
			// No version can carry a NUL in a header, and a reader that
			// splits frames at NUL octets would end the frame here.
			dst = append(dst, "\uFFFD"...)
			continue
		}
		switch v {
		case V11, V12:
			switch {
			case c == '\\':
				dst = append(dst, '\\', '\\')
			case c == '\n':
				dst = append(dst, '\\', 'n')
			case c == ':':
				dst = append(dst, '\\', 'c')
			case c == '\r' && v == V12:
				dst = append(dst, '\\', 'r')
			default:
				dst = append(dst, c)
			}
		default:
			switch {
			case c == '\n':
				dst = append(dst, ' ')
			case c == ':' && isName:
				dst = append(dst, '_')
			default:
				dst = append(dst, c)
			}
		}
	}
	return dst
}

// frameVersion returns the encoding f's headers use when the session
// version is v.
func frameVersion(command string, v Version) Version {
	switch command {
	case frame.CONNECT, frame.STOMP, frame.CONNECTED:
		return Raw
	}
	return v
}

// AppendHead appends f's command line, its headers and the blank line that
// ends them. The body and the NUL are the caller's.
func AppendHead(dst []byte, v Version, f *frame.Frame) []byte {
	v = frameVersion(f.Command, v)
	dst = append(dst, f.Command...)
	dst = append(dst, '\n')
	if f.Header != nil {
		for i := 0; i < f.Header.Len(); i++ {
			k, val := f.Header.GetAt(i)
			dst = AppendHeader(dst, v, k, val)
		}
	}
	return append(dst, '\n')
}

// AppendFrame appends the whole of f. It writes the headers f has and adds
// none: a body containing a NUL octet needs a content-length header.
func AppendFrame(dst []byte, v Version, f *frame.Frame) []byte {
	dst = AppendHead(dst, v, f)
	dst = append(dst, f.Body...)
	return append(dst, 0)
}

// WriteFrame writes f to w with a single Write call.
func WriteFrame(w io.Writer, v Version, f *frame.Frame) error {
	_, err := w.Write(AppendFrame(nil, v, f))
	return err
}

// AppendContentLength appends a content-length header for n body bytes.
func AppendContentLength(dst []byte, n int) []byte {
	dst = append(dst, "content-length:"...)
	dst = strconv.AppendInt(dst, int64(n), 10)
	return append(dst, '\n')
}
