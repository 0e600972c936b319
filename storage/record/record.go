// Package record is the byte format Bourse stores messages in: the message
// encoding shared by the journal and the stream segments, and the framing of
// a stream record. A stream's records on disk are also its wire format for
// bulk readers (the HTTP fetch endpoint sends segment bytes as they are), so
// this package is public: a client decodes a fetched byte range with
// Decode. storage/FORMAT.md specifies every byte.
package record

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"time"

	"github.com/bourse-mq/bourse/core"
)

// Stream record framing (all integers big-endian):
//
//	length     uint32  bytes after this field (HeaderSize-4 + payload)
//	crc        uint32  CRC-32C (Castagnoli) of everything after this field
//	offset     uint64  the record's offset in its stream
//	timestamp  int64   Unix milliseconds when the broker appended it
//	payload    ...     the message (AppendMessage)
const (
	// HeaderSize is the size of the framing before the payload.
	HeaderSize = 24
	// MaxSize bounds a record so that a corrupt length cannot make a
	// reader allocate without limit.
	MaxSize = 1 << 30
)

// Castagnoli is the CRC-32C table every checksum in the data directory uses.
var Castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrTorn means the bytes end inside a record; ErrCorrupt that a record's
// length, CRC or contents are wrong.
var (
	ErrTorn    = errors.New("record: torn record")
	ErrCorrupt = errors.New("record: corrupt record")
)

// Header is the fixed part of a stream record.
type Header struct {
	Size      int // whole record, framing included
	Offset    uint64
	Timestamp int64 // Unix milliseconds
}

// PutHeader fills the framing of a record whose payload already follows
// HeaderSize bytes of room at b[0:]: length, CRC, offset and timestamp.
func PutHeader(b []byte, offset uint64, tsMillis int64) {
	binary.BigEndian.PutUint32(b[0:], uint32(len(b)-4))
	binary.BigEndian.PutUint64(b[8:], offset)
	binary.BigEndian.PutUint64(b[16:], uint64(tsMillis))
	binary.BigEndian.PutUint32(b[4:], crc32.Checksum(b[8:], Castagnoli))
}

// ParseHeader reads the framing at the start of b without checking the
// CRC. It needs only HeaderSize bytes.
func ParseHeader(b []byte) (Header, error) {
	if len(b) < HeaderSize {
		return Header{}, ErrTorn
	}
	n := binary.BigEndian.Uint32(b)
	if n < HeaderSize-4 || n > MaxSize {
		return Header{}, ErrCorrupt
	}
	return Header{
		Size:      int(n) + 4,
		Offset:    binary.BigEndian.Uint64(b[8:]),
		Timestamp: int64(binary.BigEndian.Uint64(b[16:])),
	}, nil
}

// Split checks the record at the start of b (length and CRC) and returns
// its header and payload.
func Split(b []byte) (Header, []byte, error) {
	h, err := ParseHeader(b)
	if err != nil {
		return h, nil, err
	}
	if len(b) < h.Size {
		return h, nil, ErrTorn
	}
	if crc32.Checksum(b[8:h.Size], Castagnoli) != binary.BigEndian.Uint32(b[4:]) {
		return h, nil, ErrCorrupt
	}
	return h, b[HeaderSize:h.Size], nil
}

// Record is one decoded stream record.
type Record struct {
	Offset    uint64
	Timestamp time.Time
	Message   *core.Message
}

// Decode decodes every whole record at the start of b and returns them with
// the number of bytes they took. It stops without an error at a torn
// record at the end of b; a corrupt record is an error.
func Decode(b []byte) ([]Record, int, error) {
	var out []Record
	n := 0
	for len(b) > 0 {
		h, payload, err := Split(b)
		if err == ErrTorn {
			break
		}
		if err != nil {
			return out, n, err
		}
		m, err := DecodeMessage(payload)
		if err != nil {
			return out, n, err
		}
		out = append(out, Record{Offset: h.Offset, Timestamp: time.UnixMilli(h.Timestamp), Message: m})
		b = b[h.Size:]
		n += h.Size
	}
	return out, n, nil
}

// AppendMessage encodes a message: exchange, routing key, the ten string
// properties, delivery mode and priority, timestamp (Unix seconds, 0 =
// unset), arrival (Unix ns), origin protocol and user, headers (core's
// typed JSON, empty = none), body.
func AppendMessage(b []byte, m *core.Message) ([]byte, error) {
	p := &m.Props
	b = AppendString(b, m.Exchange)
	b = AppendString(b, m.RoutingKey)
	for _, s := range [...]string{p.ContentType, p.ContentEncoding, p.CorrelationID, p.ReplyTo, p.Expiration,
		p.MessageID, p.Type, p.UserID, p.AppID, p.ClusterID} {
		b = AppendString(b, s)
	}
	b = append(b, p.DeliveryMode, p.Priority)
	var ts int64
	if !p.Timestamp.IsZero() {
		ts = p.Timestamp.Unix()
	}
	b = binary.AppendVarint(b, ts)
	b = binary.AppendVarint(b, m.Arrived.UnixNano())
	b = append(b, byte(m.Origin.Protocol))
	b = AppendString(b, m.Origin.User)
	var headers string
	if len(m.Headers) > 0 {
		var err error
		if headers, err = core.EncodeTyped(m.Headers); err != nil {
			return b, err
		}
	}
	b = AppendString(b, headers)
	b = binary.AppendUvarint(b, uint64(len(m.Body)))
	return append(b, m.Body...), nil
}

// DecodeMessage decodes a payload written by AppendMessage; the body is
// copied, so b may be reused.
func DecodeMessage(b []byte) (*core.Message, error) {
	r := Reader{B: b}
	m, err := r.Message()
	if err != nil {
		return nil, err
	}
	if len(r.B) != 0 {
		return nil, ErrCorrupt
	}
	return m, nil
}

// Message decodes a message written by AppendMessage from r.
func (r *Reader) Message() (*core.Message, error) {
	m, _, err := r.message(true)
	return m, err
}

// MessageWithoutBody decodes a message but skips its body, returning the
// body's length instead (for an index that reads bodies back later).
func (r *Reader) MessageWithoutBody() (*core.Message, int, error) {
	return r.message(false)
}

func (r *Reader) message(withBody bool) (*core.Message, int, error) {
	m := &core.Message{}
	p := &m.Props
	m.Exchange = r.String()
	m.RoutingKey = r.String()
	for _, s := range [...]*string{&p.ContentType, &p.ContentEncoding, &p.CorrelationID, &p.ReplyTo, &p.Expiration,
		&p.MessageID, &p.Type, &p.UserID, &p.AppID, &p.ClusterID} {
		*s = r.String()
	}
	p.DeliveryMode = r.Byte()
	p.Priority = r.Byte()
	if ts := r.Varint(); ts != 0 {
		p.Timestamp = time.Unix(ts, 0).UTC()
	}
	m.Arrived = time.Unix(0, r.Varint())
	m.Origin = core.Origin{Protocol: core.Protocol(r.Byte())}
	m.Origin.User = r.String()
	headers := r.String()
	body := r.Bytes()
	if r.Err != nil {
		return nil, 0, r.Err
	}
	if headers != "" {
		h, err := core.DecodeTyped(headers)
		if err != nil {
			return nil, 0, ErrCorrupt
		}
		m.Headers = h
	}
	if withBody {
		m.Body = append([]byte(nil), body...)
	}
	return m, len(body), nil
}

// AppendString appends a uvarint length and the bytes of s.
func AppendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// Reader decodes a payload field by field; the first error sticks in Err.
type Reader struct {
	B   []byte
	Err error
}

// Uvarint reads an unsigned varint.
func (r *Reader) Uvarint() uint64 {
	if r.Err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.B)
	if n <= 0 {
		r.Err = ErrCorrupt
		return 0
	}
	r.B = r.B[n:]
	return v
}

// Varint reads a zig-zag signed varint.
func (r *Reader) Varint() int64 {
	if r.Err != nil {
		return 0
	}
	v, n := binary.Varint(r.B)
	if n <= 0 {
		r.Err = ErrCorrupt
		return 0
	}
	r.B = r.B[n:]
	return v
}

// Bytes reads a length-prefixed byte string (aliasing the input).
func (r *Reader) Bytes() []byte {
	n := r.Uvarint()
	if r.Err != nil {
		return nil
	}
	if n > uint64(len(r.B)) {
		r.Err = ErrCorrupt
		return nil
	}
	v := r.B[:n:n]
	r.B = r.B[n:]
	return v
}

// String reads a length-prefixed string.
func (r *Reader) String() string { return string(r.Bytes()) }

// Byte reads one byte.
func (r *Reader) Byte() byte {
	if r.Err != nil {
		return 0
	}
	if len(r.B) == 0 {
		r.Err = ErrCorrupt
		return 0
	}
	v := r.B[0]
	r.B = r.B[1:]
	return v
}
