package stomp

import (
	"errors"
	"fmt"
	"strings"

	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/protocols/stomp/wire"
)

// protoError is a STOMP protocol error: it becomes an ERROR frame whose
// message header is Message and whose body is Detail, after which the
// connection is closed. Every error a frame handler returns is turned into
// one at the adapter edge by toProtoError.
type protoError struct {
	Message string   // the ERROR frame's message header
	Detail  string   // its body
	Headers []string // extra header name/value pairs
	cause   error
}

func (e *protoError) Error() string {
	if e.cause != nil {
		return e.Message + ": " + e.Detail + ": " + e.cause.Error()
	}
	return e.Message + ": " + e.Detail
}

func (e *protoError) Unwrap() error { return e.cause }

func protoErr(message, format string, args ...any) *protoError {
	return &protoError{Message: message, Detail: fmt.Sprintf(format, args...)}
}

// kindNames are RabbitMQ's AMQP error names, which its STOMP adapter puts
// in the message header of an ERROR frame caused by the broker ("not_found",
// "precondition_failed", ...). The body carries "NOT_FOUND - <reason>".
var kindNames = map[core.Kind]string{
	core.Internal:           "internal_error",
	core.NotFound:           "not_found",
	core.PreconditionFailed: "precondition_failed",
	core.AccessRefused:      "access_refused",
	core.ResourceLocked:     "resource_locked",
	core.ResourceError:      "resource_error",
	core.NotAllowed:         "not_allowed",
	core.InvalidArgument:    "precondition_failed",
	core.FrameError:         "frame_error",
	core.NotImplemented:     "not_implemented",
	core.CommandInvalid:     "command_invalid",
}

// toProtoError maps any handler error to the ERROR frame it produces. This
// is the only place core error kinds meet STOMP.
func toProtoError(err error) *protoError {
	var pe *protoError
	if errors.As(err, &pe) {
		return pe
	}
	if de, ok := wire.IsDecodeError(err); ok {
		if de.Kind == wire.TooLarge {
			return &protoError{Message: "Frame too large", Detail: de.Msg, cause: err}
		}
		return &protoError{Message: "Malformed frame", Detail: de.Msg, cause: err}
	}
	var ce *core.Error
	if errors.As(err, &ce) {
		name := kindNames[ce.Kind]
		if name == "" {
			name = kindNames[core.Internal]
		}
		return &protoError{Message: name, Detail: strings.ToUpper(name) + " - " + ce.Error(), cause: err}
	}
	return &protoError{Message: "internal_error", Detail: "INTERNAL_ERROR - " + err.Error(), cause: err}
}

func invalidHeader(name, format string, args ...any) *protoError {
	return &protoError{Message: "Invalid header", Detail: fmt.Sprintf("'%s' header: ", name) + fmt.Sprintf(format, args...)}
}

func missingHeader(command, name string) *protoError {
	return protoErr("Missing header", "%s must include a '%s' header", command, name)
}
