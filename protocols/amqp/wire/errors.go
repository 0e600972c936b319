package wire

import (
	"errors"
	"fmt"
	"strconv"
)

// Error is an AMQP protocol violation detected by the codec. Code is the reply
// code the peer should be sent (in connection.close when Hard, otherwise in
// channel.close), and ClassID/MethodID identify the method that failed, when
// known, for the class-id and method-id fields of those methods.
type Error struct {
	Code     uint16
	Text     string
	ClassID  uint16
	MethodID uint16
	Hard     bool
}

// newError returns an *Error for code, classing it hard or soft as the
// specification does.
func newError(code uint16, text string) *Error {
	return &Error{Code: code, Text: text, Hard: IsHardError(code)}
}

// ReplyText formats e the way RabbitMQ formats reply-text, "NAME - text",
// clipped to the 255 bytes a short string can hold.
func (e *Error) ReplyText() string {
	name := ReplyText(e.Code)
	if name == "" {
		name = strconv.Itoa(int(e.Code))
	}
	s := name
	if e.Text != "" {
		s += " - " + e.Text
	}
	if len(s) > 255 {
		s = s[:255]
	}
	return s
}

// Error implements error.
func (e *Error) Error() string {
	s := "amqp: " + strconv.Itoa(int(e.Code)) + " " + e.ReplyText()
	if e.ClassID != 0 || e.MethodID != 0 {
		s += fmt.Sprintf(" (class %d, method %d)", e.ClassID, e.MethodID)
	}
	return s
}

// CloseMethod returns the method that reports e to the peer: connection.close for
// a hard error, channel.close otherwise.
func (e *Error) CloseMethod() Method {
	if e.Hard {
		return &ConnectionClose{ReplyCode: e.Code, ReplyText: e.ReplyText(), FailedClassID: e.ClassID, FailedMethodID: e.MethodID}
	}
	return &ChannelClose{ReplyCode: e.Code, ReplyText: e.ReplyText(), FailedClassID: e.ClassID, FailedMethodID: e.MethodID}
}

// Encoding errors. They describe values that cannot be represented on the
// wire and are returned wrapped with the field that held them.
var (
	// ErrShortStringTooLong: short strings (§4.2.5.3) hold at most 255 bytes.
	ErrShortStringTooLong = errors.New("wire: short string longer than 255 bytes")
	// ErrLongStringTooLong: long strings and tables hold at most 2^32-1 bytes.
	ErrLongStringTooLong = errors.New("wire: long string longer than 2^32-1 bytes")
	// ErrUnsupportedFieldType: a Table or array holds a Go value with no AMQP
	// field type (see the package documentation for the accepted types).
	ErrUnsupportedFieldType = errors.New("wire: unsupported field value type")
	// ErrNestingTooDeep: tables and arrays nest deeper than MaxNesting (which
	// also catches self-referencing tables).
	ErrNestingTooDeep = errors.New("wire: field tables nested too deeply")
	// ErrFrameTooLarge: an encoded frame exceeds the frame-max it must fit in.
	ErrFrameTooLarge = errors.New("wire: frame larger than frame-max")
	// ErrInvalidFrameMax: frameMax must be 0 (no limit) or more than the 8
	// bytes of frame overhead.
	ErrInvalidFrameMax = errors.New("wire: frame-max must be 0 or greater than 8")
	// ErrProtocolHeader: the peer did not open with the AMQP 0-9-1 protocol
	// header. Per §4.2.2 a server answers by writing ProtocolHeader and
	// closing the connection.
	ErrProtocolHeader = errors.New("wire: not an AMQP 0-9-1 protocol header")
)

// fieldError wraps an encoding error with the field it occurred in.
func fieldError(owner, field string, err error) error {
	return fmt.Errorf("wire: encoding %s %s: %w", owner, field, err)
}
