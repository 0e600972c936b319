package wire

import (
	"encoding/binary"
	"fmt"
)

// Method is an AMQP method: the payload of a method frame (§4.2.4). Every
// method of the specification has a generated pointer type implementing it,
// named after its class and method: *ConnectionStart, *QueueDeclare,
// *BasicPublish, ….
type Method interface {
	// ClassID and MethodID identify the method on the wire.
	ClassID() uint16
	MethodID() uint16
	// Name is the spec name, such as "queue.declare".
	Name() string
	// Synchronous reports whether the method expects a reply method.
	Synchronous() bool
	// HasContent reports whether the method frame is followed by a content
	// header and body (basic.publish, basic.return, basic.deliver,
	// basic.get-ok).
	HasContent() bool
	// AppendArgs appends the encoded argument list to b. It fails only for
	// values the wire cannot carry (see the Err* variables), in which case
	// the returned slice must be discarded.
	AppendArgs(b []byte) ([]byte, error)
	// DecodeArgs decodes an argument list that occupies all of args into the
	// receiver. Malformed, truncated or over-long input is a 502
	// SYNTAX_ERROR *Error. The receiver retains no reference to args.
	DecodeArgs(args []byte) error
}

// NewMethod returns a new zero value of the method with the given IDs, or nil
// if the specification defines no such method.
func NewMethod(classID, methodID uint16) Method {
	return newMethod(classID, methodID)
}

// DecodeMethod decodes a method frame payload: class-id, method-id and the
// arguments (§4.2.4). Unknown class or method IDs are a 540 NOT_IMPLEMENTED
// *Error; malformed arguments a 502 SYNTAX_ERROR *Error. The result does not
// alias payload.
func DecodeMethod(payload []byte) (Method, error) {
	if len(payload) < 4 {
		return nil, newError(SyntaxError, "method frame payload shorter than class-id and method-id")
	}
	classID := binary.BigEndian.Uint16(payload)
	methodID := binary.BigEndian.Uint16(payload[2:])
	m := newMethod(classID, methodID)
	if m == nil {
		e := newError(NotImplemented, fmt.Sprintf("unknown method (class %d, method %d)", classID, methodID))
		e.ClassID, e.MethodID = classID, methodID
		return nil, e
	}
	if err := m.DecodeArgs(payload[4:]); err != nil {
		return nil, err
	}
	return m, nil
}

// EncodeMethod appends the method frame payload of m — class-id, method-id
// and arguments — to dst. On error it returns dst unchanged.
func EncodeMethod(dst []byte, m Method) ([]byte, error) {
	b := binary.BigEndian.AppendUint16(dst, m.ClassID())
	b = binary.BigEndian.AppendUint16(b, m.MethodID())
	b, err := m.AppendArgs(b)
	if err != nil {
		return dst, err
	}
	return b, nil
}

// Content header layout (§4.2.6.1): class-id (short), weight (short, always
// zero), body-size (longlong), property flags (short) and property list.
const headerFixedSize = 2 + 2 + 8

// AppendHeader appends a content header frame payload to dst. A nil props
// sends no properties. On error it returns dst unchanged.
func AppendHeader(dst []byte, classID uint16, bodySize uint64, props *Properties) ([]byte, error) {
	b := binary.BigEndian.AppendUint16(dst, classID)
	b = append(b, 0, 0) // weight
	b = binary.BigEndian.AppendUint64(b, bodySize)
	if props == nil {
		return append(b, 0, 0), nil // no property flags
	}
	b, err := props.appendTo(b)
	if err != nil {
		return dst, err
	}
	return b, nil
}

// DecodeHeader decodes a content header frame payload (§4.2.6.1). Only the
// basic class carries content; any other class-id is a 501 FRAME_ERROR, as
// is a class-id that does not match the preceding method, which the caller
// checks. Malformed properties are a 502 SYNTAX_ERROR. The weight field is
// ignored, and so are bytes after the last announced property (amqp091-go
// tolerates such padding too). The result does not alias payload.
func DecodeHeader(payload []byte) (classID uint16, bodySize uint64, props Properties, err error) {
	if len(payload) < headerFixedSize+2 {
		return 0, 0, Properties{}, newError(FrameError, "content header shorter than 14 bytes")
	}
	d := decoder{buf: payload}
	classID = d.short()
	d.short() // weight: unused, must be zero (§4.2.6.1)
	bodySize = d.longlong()
	if classID != ClassBasic {
		e := newError(FrameError, fmt.Sprintf("content header for class %d, which has no content", classID))
		e.ClassID = classID
		return 0, 0, Properties{}, e
	}
	props.decode(&d)
	if d.err != "" {
		e := newError(SyntaxError, "content header: "+d.err)
		e.ClassID = classID
		return 0, 0, Properties{}, e
	}
	return classID, bodySize, props, nil
}
