package durable

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"time"

	"github.com/bourse-mq/bourse/core"
)

// Journal record framing (all integers big-endian):
//
//	length  uint32  bytes after this field (crc + type + payload)
//	crc     uint32  CRC-32C (Castagnoli) of type + payload
//	type    uint8   recMessage, recSettle, recDelivered, recQueueDeleted
//	payload ...
//
// recMessage payload: vhost, then a target count (uvarint) and per target the
// queue name and seq (uvarint), then the message (see appendMessage).
// recSettle / recDelivered payload: vhost, queue, count (uvarint), seqs.
// recQueueDeleted payload: vhost, queue.
// Strings and byte slices are a uvarint length and the bytes.
const (
	recMessage      = 1
	recSettle       = 2
	recDelivered    = 3
	recQueueDeleted = 4

	frameHeader = 9 // length + crc + type
	// maxRecord bounds a record so that a corrupt length cannot make
	// recovery allocate without limit.
	maxRecord = 1 << 30
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errTorn means the buffer ends inside a record; errCorrupt that a record's
// CRC or contents are wrong.
var (
	errTorn    = errors.New("torn record")
	errCorrupt = errors.New("corrupt record")
)

// beginRecord appends a frame header with a placeholder length and CRC.
func beginRecord(b []byte, typ byte) ([]byte, int) {
	start := len(b)
	b = append(b, 0, 0, 0, 0, 0, 0, 0, 0, typ)
	return b, start
}

// endRecord fills in the length and CRC of the record starting at start.
func endRecord(b []byte, start int) []byte {
	binary.BigEndian.PutUint32(b[start:], uint32(len(b)-start-4))
	binary.BigEndian.PutUint32(b[start+4:], crc32.Checksum(b[start+8:], castagnoli))
	return b
}

// nextRecord splits one record off buf.
func nextRecord(buf []byte) (typ byte, payload []byte, n int, err error) {
	if len(buf) < frameHeader {
		return 0, nil, 0, errTorn
	}
	size := binary.BigEndian.Uint32(buf)
	if size < 5 || size > maxRecord {
		return 0, nil, 0, errCorrupt
	}
	if uint64(len(buf)) < 4+uint64(size) {
		return 0, nil, 0, errTorn
	}
	rec := buf[8 : 4+size]
	if crc32.Checksum(rec, castagnoli) != binary.BigEndian.Uint32(buf[4:]) {
		return 0, nil, 0, errCorrupt
	}
	return rec[0], rec[1:], int(4 + size), nil
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// reader decodes a payload; the first error sticks.
type reader struct {
	b   []byte
	err error
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errCorrupt
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) bytes() []byte {
	n := r.uvarint()
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) {
		r.err = errCorrupt
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) string() string { return string(r.bytes()) }

func (r *reader) byte() byte {
	if r.err != nil {
		return 0
	}
	if len(r.b) == 0 {
		r.err = errCorrupt
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *reader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.err = errCorrupt
		return 0
	}
	r.b = r.b[n:]
	return v
}

// appendMessage encodes a message: exchange, routing key, the 13 string or
// small properties, timestamp (unix seconds, 0 = unset), arrival (unix ns),
// origin protocol and user, headers (core's typed JSON, empty = none), body.
func appendMessage(b []byte, m *core.Message) ([]byte, error) {
	p := &m.Props
	b = appendString(b, m.Exchange)
	b = appendString(b, m.RoutingKey)
	for _, s := range [...]string{p.ContentType, p.ContentEncoding, p.CorrelationID, p.ReplyTo, p.Expiration,
		p.MessageID, p.Type, p.UserID, p.AppID, p.ClusterID} {
		b = appendString(b, s)
	}
	b = append(b, p.DeliveryMode, p.Priority)
	var ts int64
	if !p.Timestamp.IsZero() {
		ts = p.Timestamp.Unix()
	}
	b = binary.AppendVarint(b, ts)
	b = binary.AppendVarint(b, m.Arrived.UnixNano())
	b = append(b, byte(m.Origin.Protocol))
	b = appendString(b, m.Origin.User)
	var headers string
	if len(m.Headers) > 0 {
		var err error
		if headers, err = core.EncodeTyped(m.Headers); err != nil {
			return b, err
		}
	}
	b = appendString(b, headers)
	b = binary.AppendUvarint(b, uint64(len(m.Body)))
	return append(b, m.Body...), nil
}

func readMessage(r *reader, vhost string) (*core.Message, error) {
	m := &core.Message{}
	p := &m.Props
	m.Exchange = r.string()
	m.RoutingKey = r.string()
	for _, s := range [...]*string{&p.ContentType, &p.ContentEncoding, &p.CorrelationID, &p.ReplyTo, &p.Expiration,
		&p.MessageID, &p.Type, &p.UserID, &p.AppID, &p.ClusterID} {
		*s = r.string()
	}
	p.DeliveryMode = r.byte()
	p.Priority = r.byte()
	if ts := r.varint(); ts != 0 {
		p.Timestamp = time.Unix(ts, 0).UTC()
	}
	m.Arrived = time.Unix(0, r.varint())
	m.Origin = core.Origin{Protocol: core.Protocol(r.byte()), VHost: vhost}
	m.Origin.User = r.string()
	headers := r.string()
	body := r.bytes()
	if r.err != nil {
		return nil, r.err
	}
	if headers != "" {
		h, err := core.DecodeTyped(headers)
		if err != nil {
			return nil, errCorrupt
		}
		m.Headers = h
	}
	m.Body = append([]byte(nil), body...)
	return m, nil
}

func appendUvarint(b []byte, v uint64) []byte { return binary.AppendUvarint(b, v) }

func appendUvarintLen(b []byte, n int) []byte { return binary.AppendUvarint(b, uint64(n)) }
