package amqp

import (
	"errors"
	"fmt"

	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/protocols/amqp/wire"
)

// amqpError is an AMQP exception: a reply code and text to send in
// channel.close (soft codes) or connection.close (hard codes, see
// wire.IsHardError), with the class and method that failed.
type amqpError struct {
	code     uint16
	text     string
	classID  uint16
	methodID uint16
	cause    error
}

// errorf returns an exception with reply code code, blamed on method m
// (nil: no method).
func errorf(code uint16, m wire.Method, format string, args ...any) *amqpError {
	e := &amqpError{code: code, text: fmt.Sprintf(format, args...)}
	e.blame(m)
	return e
}

func (e *amqpError) blame(m wire.Method) {
	if m != nil && e.classID == 0 && e.methodID == 0 {
		e.classID, e.methodID = m.ClassID(), m.MethodID()
	}
}

func (e *amqpError) Error() string {
	return fmt.Sprintf("amqp %d %s", e.code, e.replyText())
}

func (e *amqpError) Unwrap() error { return e.cause }

// hard reports whether the exception closes the whole connection.
func (e *amqpError) hard() bool { return wire.IsHardError(e.code) }

// replyText is the reply-text RabbitMQ would send: "NAME - text", clipped
// to the 255 bytes of a short string.
func (e *amqpError) replyText() string {
	s := wire.ReplyText(e.code)
	if s == "" {
		s = fmt.Sprint(e.code)
	}
	if e.text != "" {
		s += " - " + e.text
	}
	return clip(s, 255)
}

// clip cuts s to at most n bytes without splitting a UTF-8 sequence.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := n
	for i > 0 && s[i]&0xC0 == 0x80 {
		i--
	}
	return s[:i]
}

// replyCode maps a broker error kind to its AMQP 0-9-1 reply code. It is the
// only place where core kinds meet AMQP codes.
func replyCode(k core.Kind) uint16 {
	switch k {
	case core.NotFound:
		return wire.NotFound
	case core.AccessRefused:
		return wire.AccessRefused
	case core.ResourceLocked:
		return wire.ResourceLocked
	case core.PreconditionFailed, core.InvalidArgument:
		return wire.PreconditionFailed
	case core.NotAllowed:
		return wire.NotAllowed
	case core.NotImplemented:
		return wire.NotImplemented
	case core.CommandInvalid:
		return wire.CommandInvalid
	case core.ResourceError:
		return wire.ResourceError
	case core.FrameError:
		return wire.FrameError
	default:
		return wire.InternalError
	}
}

// toAMQP turns any error met while handling method m (nil for content
// frames) into the exception to report.
func toAMQP(err error, m wire.Method) *amqpError {
	var ae *amqpError
	if errors.As(err, &ae) {
		ae.blame(m)
		return ae
	}
	var we *wire.Error
	if errors.As(err, &we) {
		e := &amqpError{code: we.Code, text: we.Text, classID: we.ClassID, methodID: we.MethodID, cause: err}
		e.blame(m)
		return e
	}
	var ce *core.Error
	if errors.As(err, &ce) {
		e := &amqpError{code: replyCode(ce.Kind), text: err.Error(), cause: err}
		e.blame(m)
		return e
	}
	e := &amqpError{code: wire.InternalError, text: "internal error", cause: err}
	e.blame(m)
	return e
}
