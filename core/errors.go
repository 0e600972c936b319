package core

import (
	"errors"
	"fmt"
)

// Kind classifies broker errors. Adapters map kinds to their protocol's codes
// (AMQP reply codes, STOMP ERROR frames, MQTT reason codes) at their edge, and
// nowhere else.
type Kind uint8

// Error kinds. The comments give the AMQP 0-9-1 reply code each maps to.
const (
	Internal           Kind = iota // 541 INTERNAL_ERROR
	NotFound                       // 404 NOT_FOUND
	PreconditionFailed             // 406 PRECONDITION_FAILED
	AccessRefused                  // 403 ACCESS_REFUSED
	ResourceLocked                 // 405 RESOURCE_LOCKED
	ResourceError                  // 506 RESOURCE_ERROR (limits, full disk)
	NotAllowed                     // 530 NOT_ALLOWED
	InvalidArgument                // 406 on declare arguments, 502 on frames
	FrameError                     // 501 FRAME_ERROR / malformed input
	NotImplemented                 // 540 NOT_IMPLEMENTED
	CommandInvalid                 // 503 COMMAND_INVALID (e.g. unknown exchange type)
)

var kindNames = [...]string{
	Internal:           "internal error",
	NotFound:           "not found",
	PreconditionFailed: "precondition failed",
	AccessRefused:      "access refused",
	ResourceLocked:     "resource locked",
	ResourceError:      "resource error",
	NotAllowed:         "not allowed",
	InvalidArgument:    "invalid argument",
	FrameError:         "frame error",
	NotImplemented:     "not implemented",
	CommandInvalid:     "command invalid",
}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", k)
}

// Error is a broker error of a given Kind.
type Error struct {
	Kind Kind
	Msg  string
	Err  error // optional cause
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Msg + ": " + e.Err.Error()
	}
	return e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

// Is makes errors.Is(err, core.ErrNotFound) and friends match on Kind.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Msg == "" && t.Err == nil && t.Kind == e.Kind
}

// Sentinels for errors.Is comparisons by kind.
var (
	ErrNotFound           = &Error{Kind: NotFound}
	ErrPreconditionFailed = &Error{Kind: PreconditionFailed}
	ErrAccessRefused      = &Error{Kind: AccessRefused}
	ErrResourceLocked     = &Error{Kind: ResourceLocked}
	ErrResourceError      = &Error{Kind: ResourceError}
	ErrNotAllowed         = &Error{Kind: NotAllowed}
	ErrInvalidArgument    = &Error{Kind: InvalidArgument}
)

// Errorf builds an *Error of kind k.
func Errorf(k Kind, format string, args ...any) error {
	return &Error{Kind: k, Msg: fmt.Sprintf(format, args...)}
}

// Wrap builds an *Error of kind k whose cause is err.
func Wrap(k Kind, err error, format string, args ...any) error {
	return &Error{Kind: k, Msg: fmt.Sprintf(format, args...), Err: err}
}

// KindOf returns the Kind of the first *Error in err's chain, or Internal.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return Internal
}
