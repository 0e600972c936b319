package wire

import (
	"encoding/binary"
	"fmt"
	"math"
	"time"
)

// Table is an AMQP field table (§4.2.5.5): a map from short-string names to
// typed values. See the package documentation for the Go type of each AMQP
// field type. Decoding an empty table yields a nil Table.
type Table map[string]any

// Decimal is the AMQP decimal field type 'D': Value × 10^-Scale.
type Decimal struct {
	Scale uint8
	Value int32
}

// MaxNesting is how deeply field tables and arrays may nest inside the
// outermost one. Deeper input is a 502 SYNTAX_ERROR when decoding and
// ErrNestingTooDeep when encoding, which bounds recursion on hostile input and
// on self-referencing tables.
const MaxNesting = 32

// Field-value type octets as RabbitMQ and amqp091-go use them. They differ
// from the grammar in the 0-9-1 specification, which RabbitMQ's errata
// supersede: 's' is a signed 16-bit integer and 'l' a signed 64-bit one.
const (
	fieldBool      = 't'
	fieldInt8      = 'b'
	fieldUint8     = 'B'
	fieldInt16     = 's'
	fieldUint16    = 'u'
	fieldInt32     = 'I'
	fieldUint32    = 'i'
	fieldInt64     = 'l'
	fieldFloat32   = 'f'
	fieldFloat64   = 'd'
	fieldDecimal   = 'D'
	fieldLongstr   = 'S'
	fieldBytes     = 'x'
	fieldArray     = 'A'
	fieldTimestamp = 'T'
	fieldTable     = 'F'
	fieldVoid      = 'V'
)

// AppendTable appends t to dst as a field table: a 32-bit byte count followed
// by name-value pairs. Entry order follows Go map iteration and so varies.
// On error the returned slice holds dst truncated to its original length.
func AppendTable(dst []byte, t Table) ([]byte, error) {
	b, err := appendTable(dst, t)
	if err != nil {
		return dst, err
	}
	return b, nil
}

// DecodeTable decodes a field table that occupies all of b, including its
// 32-bit length prefix. Malformed input is a 502 SYNTAX_ERROR *Error.
func DecodeTable(b []byte) (Table, error) {
	d := decoder{buf: b}
	t := d.table()
	if d.err == "" && d.off != len(b) {
		d.fail("trailing bytes after field table")
	}
	if d.err != "" {
		return nil, newError(SyntaxError, d.err)
	}
	return t, nil
}

func appendTable(b []byte, t Table) ([]byte, error) {
	return appendTableDepth(b, t, 0)
}

func appendTableDepth(b []byte, t map[string]any, depth int) ([]byte, error) {
	if depth > MaxNesting {
		return b, ErrNestingTooDeep
	}
	start := len(b)
	b = append(b, 0, 0, 0, 0)
	var err error
	for k, v := range t {
		if b, err = appendShortstr(b, k); err != nil {
			return b, fmt.Errorf("table key of %d bytes: %w", len(k), err)
		}
		if b, err = appendField(b, v, depth); err != nil {
			return b, fmt.Errorf("table key %q: %w", k, err)
		}
	}
	return finishLength(b, start)
}

func appendArrayDepth(b []byte, a []any, depth int) ([]byte, error) {
	if depth > MaxNesting {
		return b, ErrNestingTooDeep
	}
	start := len(b)
	b = append(b, 0, 0, 0, 0)
	var err error
	for i, v := range a {
		if b, err = appendField(b, v, depth); err != nil {
			return b, fmt.Errorf("array index %d: %w", i, err)
		}
	}
	return finishLength(b, start)
}

// finishLength back-fills the 32-bit length reserved at b[start:start+4].
func finishLength(b []byte, start int) ([]byte, error) {
	n := len(b) - start - 4
	if uint64(n) > math.MaxUint32 {
		return b, ErrLongStringTooLong
	}
	binary.BigEndian.PutUint32(b[start:], uint32(n))
	return b, nil
}

// appendField appends one field value: its type octet and encoding. depth is
// the nesting depth of the table or array that holds the value.
func appendField(b []byte, v any, depth int) ([]byte, error) {
	switch v := v.(type) {
	case nil:
		return append(b, fieldVoid), nil
	case bool:
		var x byte
		if v {
			x = 1
		}
		return append(b, fieldBool, x), nil
	case int8:
		return append(b, fieldInt8, byte(v)), nil
	case uint8:
		return append(b, fieldUint8, v), nil
	case int16:
		return binary.BigEndian.AppendUint16(append(b, fieldInt16), uint16(v)), nil
	case uint16:
		return binary.BigEndian.AppendUint16(append(b, fieldUint16), v), nil
	case int32:
		return binary.BigEndian.AppendUint32(append(b, fieldInt32), uint32(v)), nil
	case uint32:
		return binary.BigEndian.AppendUint32(append(b, fieldUint32), v), nil
	case int64:
		return binary.BigEndian.AppendUint64(append(b, fieldInt64), uint64(v)), nil
	case int:
		// amqp091-go writes int as 'I'; do the same when the value fits so
		// peers see identical bytes, and widen rather than truncate otherwise.
		if v >= math.MinInt32 && v <= math.MaxInt32 {
			return binary.BigEndian.AppendUint32(append(b, fieldInt32), uint32(v)), nil
		}
		return binary.BigEndian.AppendUint64(append(b, fieldInt64), uint64(v)), nil
	case uint:
		if uint64(v) > math.MaxInt64 {
			return b, fmt.Errorf("%w: uint %d overflows int64", ErrUnsupportedFieldType, v)
		}
		return binary.BigEndian.AppendUint64(append(b, fieldInt64), uint64(v)), nil
	case uint64:
		if v > math.MaxInt64 {
			return b, fmt.Errorf("%w: uint64 %d overflows int64", ErrUnsupportedFieldType, v)
		}
		return binary.BigEndian.AppendUint64(append(b, fieldInt64), v), nil
	case float32:
		return binary.BigEndian.AppendUint32(append(b, fieldFloat32), math.Float32bits(v)), nil
	case float64:
		return binary.BigEndian.AppendUint64(append(b, fieldFloat64), math.Float64bits(v)), nil
	case Decimal:
		return binary.BigEndian.AppendUint32(append(b, fieldDecimal, v.Scale), uint32(v.Value)), nil
	case string:
		return appendLongstr(append(b, fieldLongstr), v)
	case []byte:
		if uint64(len(v)) > math.MaxUint32 {
			return b, ErrLongStringTooLong
		}
		b = binary.BigEndian.AppendUint32(append(b, fieldBytes), uint32(len(v)))
		return append(b, v...), nil
	case []any:
		return appendArrayDepth(append(b, fieldArray), v, depth+1)
	case time.Time:
		return appendTimestamp(append(b, fieldTimestamp), v), nil
	case Table:
		return appendTableDepth(append(b, fieldTable), v, depth+1)
	case map[string]any:
		return appendTableDepth(append(b, fieldTable), v, depth+1)
	default:
		return b, fmt.Errorf("%w: %T", ErrUnsupportedFieldType, v)
	}
}

// table decodes a top-level field table.
func (d *decoder) table() Table {
	return d.fieldTable(0)
}

func (d *decoder) fieldTable(depth int) Table {
	if depth > MaxNesting {
		d.fail("field tables nested too deeply")
		return nil
	}
	body := d.take(uint64(d.long()))
	if len(body) == 0 {
		return nil
	}
	sub := decoder{buf: body}
	t := make(Table)
	for sub.off < len(sub.buf) {
		k := sub.shortstr()
		v := sub.value(depth)
		if sub.err != "" {
			d.fail("field table: " + sub.err)
			return nil
		}
		t[k] = v
	}
	return t
}

func (d *decoder) fieldArray(depth int) []any {
	if depth > MaxNesting {
		d.fail("field arrays nested too deeply")
		return nil
	}
	body := d.take(uint64(d.long()))
	if len(body) == 0 {
		return nil
	}
	sub := decoder{buf: body}
	var a []any
	for sub.off < len(sub.buf) {
		v := sub.value(depth)
		if sub.err != "" {
			d.fail("field array: " + sub.err)
			return nil
		}
		a = append(a, v)
	}
	return a
}

// value decodes one field value (type octet and encoding) held by a table or
// array at the given depth.
func (d *decoder) value(depth int) any {
	typ := d.octet()
	if d.err != "" {
		return nil
	}
	switch typ {
	case fieldBool:
		return d.octet() != 0
	case fieldInt8:
		return int8(d.octet())
	case fieldUint8:
		return d.octet()
	case fieldInt16:
		return int16(d.short())
	case fieldUint16:
		return d.short()
	case fieldInt32:
		return int32(d.long())
	case fieldUint32:
		return d.long()
	case fieldInt64:
		return int64(d.longlong())
	case fieldFloat32:
		return math.Float32frombits(d.long())
	case fieldFloat64:
		return math.Float64frombits(d.longlong())
	case fieldDecimal:
		scale := d.octet()
		return Decimal{Scale: scale, Value: int32(d.long())}
	case fieldLongstr:
		return d.longstr()
	case fieldBytes:
		return d.longbytes()
	case fieldArray:
		return d.fieldArray(depth + 1)
	case fieldTimestamp:
		return d.timestamp()
	case fieldTable:
		return d.fieldTable(depth + 1)
	case fieldVoid:
		return nil
	}
	d.fail(fmt.Sprintf("unknown field type %q", typ))
	return nil
}
