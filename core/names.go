package core

import (
	"unicode/utf8"
)

// MaxNameLen is the longest exchange, queue or vhost name: an AMQP shortstr.
const MaxNameLen = 255

// DefaultVHost is the vhost clients land in when they do not name one.
const DefaultVHost = "/"

// ValidateName checks an entity name (exchange, queue, vhost) as RabbitMQ
// does: at most 255 bytes of valid UTF-8.
func ValidateName(kind, name string) error {
	if len(name) > MaxNameLen {
		return Errorf(InvalidArgument, "%s name is %d bytes long; the limit is %d", kind, len(name), MaxNameLen)
	}
	if !utf8.ValidString(name) {
		return Errorf(InvalidArgument, "%s name is not valid UTF-8", kind)
	}
	return nil
}
