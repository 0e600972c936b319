package durable

import (
	"encoding/binary"
	"errors"
	"hash/crc32"

	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/storage/record"
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

// appendString, reader and the message codec are shared with the streams.
var appendString = record.AppendString

type reader = record.Reader

func appendMessage(b []byte, m *core.Message) ([]byte, error) { return record.AppendMessage(b, m) }

func readMessage(r *reader, vhost string) (*core.Message, error) {
	m, err := r.Message()
	if err != nil {
		return nil, errCorrupt
	}
	m.Origin.VHost = vhost
	return m, nil
}

func appendUvarint(b []byte, v uint64) []byte { return binary.AppendUvarint(b, v) }

func appendUvarintLen(b []byte, n int) []byte { return binary.AppendUvarint(b, uint64(n)) }
