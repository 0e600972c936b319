package wire

import (
	"encoding/binary"
	"fmt"
	"math"
	"time"
)

// This file holds the primitive encoders and the decoder for the AMQP data
// fields of §4.2.5: integers in network byte order (§4.2.5.1), packed bits
// (§4.2.5.2), short and long strings (§4.2.5.3) and timestamps (§4.2.5.4).
// Field tables (§4.2.5.5) are in table.go.

// bit returns the octet with bit pos set when v is true; the generated
// encoders OR these together to pack consecutive bit arguments (§4.2.5.2:
// bits are accumulated into octets starting from the least significant bit).
func bit(v bool, pos uint) uint8 {
	if v {
		return 1 << pos
	}
	return 0
}

// appendShortstr appends a short string: a length octet and up to 255 bytes.
func appendShortstr(b []byte, s string) ([]byte, error) {
	if len(s) > math.MaxUint8 {
		return b, ErrShortStringTooLong
	}
	b = append(b, byte(len(s)))
	return append(b, s...), nil
}

// appendLongstr appends a long string: a 32-bit length and the bytes.
func appendLongstr(b []byte, s string) ([]byte, error) {
	if uint64(len(s)) > math.MaxUint32 {
		return b, ErrLongStringTooLong
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...), nil
}

// appendTimestamp appends t as a 64-bit count of seconds since the Unix epoch
// (§4.2.5.4: POSIX time_t with one-second accuracy).
func appendTimestamp(b []byte, t time.Time) []byte {
	return binary.BigEndian.AppendUint64(b, uint64(t.Unix()))
}

// decoder reads AMQP data fields from a byte slice. Errors are sticky: after
// the first failure every read returns a zero value, so generated decoders can
// read all their fields and check once, in finish. It never panics and never
// allocates more than the bytes that remain in buf.
type decoder struct {
	buf []byte
	off int
	err string // first failure, "" while decoding succeeds
}

// fail records the first failure and stops further reads.
func (d *decoder) fail(msg string) {
	if d.err == "" {
		d.err = msg
	}
	d.off = len(d.buf)
}

// take returns the next n bytes, or nil after recording a failure if fewer
// than n remain.
func (d *decoder) take(n uint64) []byte {
	if d.err != "" {
		return nil
	}
	if n > uint64(len(d.buf)-d.off) {
		d.fail(fmt.Sprintf("truncated: %d bytes needed at offset %d, %d left", n, d.off, len(d.buf)-d.off))
		return nil
	}
	b := d.buf[d.off : d.off+int(n)]
	d.off += int(n)
	return b
}

func (d *decoder) octet() uint8 {
	if b := d.take(1); b != nil {
		return b[0]
	}
	return 0
}

func (d *decoder) short() uint16 {
	if b := d.take(2); b != nil {
		return binary.BigEndian.Uint16(b)
	}
	return 0
}

func (d *decoder) long() uint32 {
	if b := d.take(4); b != nil {
		return binary.BigEndian.Uint32(b)
	}
	return 0
}

func (d *decoder) longlong() uint64 {
	if b := d.take(8); b != nil {
		return binary.BigEndian.Uint64(b)
	}
	return 0
}

func (d *decoder) shortstr() string {
	n := d.octet()
	return string(d.take(uint64(n)))
}

func (d *decoder) longstr() string {
	n := d.long()
	return string(d.take(uint64(n)))
}

// longbytes reads a long string as a fresh byte slice (nil when empty).
func (d *decoder) longbytes() []byte {
	n := d.long()
	b := d.take(uint64(n))
	if len(b) == 0 {
		return nil
	}
	return append([]byte(nil), b...)
}

// timestamp reads a §4.2.5.4 timestamp and returns it in UTC.
func (d *decoder) timestamp() time.Time {
	sec := d.longlong()
	if d.err != "" {
		return time.Time{}
	}
	return time.Unix(int64(sec), 0).UTC()
}

// finish reports the outcome of decoding a method's arguments: a failure or
// unconsumed trailing bytes are a 502 SYNTAX_ERROR connection exception.
func (d *decoder) finish(classID, methodID uint16) error {
	if d.err == "" && d.off != len(d.buf) {
		d.err = "trailing bytes after method arguments"
	}
	if d.err == "" {
		return nil
	}
	e := newError(SyntaxError, d.err)
	e.ClassID, e.MethodID = classID, methodID
	return e
}
