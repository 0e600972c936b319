package amqp

import (
	"encoding/binary"
	"strings"

	"github.com/bourse-mq/bourse/protocols/amqp/wire"
)

// Mechanisms offered in connection.start, in order of preference;
// EXTERNAL comes first on a TLS connection whose client certificate was
// verified, when certificate logins are on.
const mechanisms = "PLAIN AMQPLAIN"

// parseSASL extracts the credentials of a connection.start-ok response.
// ok is false for a malformed response; an unknown mechanism is reported by
// the caller before this is called.
func parseSASL(mechanism, response string) (user, pass string, ok bool) {
	switch mechanism {
	case "PLAIN":
		// RFC 4616: [authzid] NUL authcid NUL passwd.
		parts := strings.Split(response, "\x00")
		if len(parts) != 3 {
			return "", "", false
		}
		return parts[1], parts[2], true
	case "AMQPLAIN":
		// A field table without its 32-bit length prefix, holding LOGIN
		// and PASSWORD (RabbitMQ's AMQPLAIN).
		b := binary.BigEndian.AppendUint32(make([]byte, 0, 4+len(response)), uint32(len(response)))
		t, err := wire.DecodeTable(append(b, response...))
		if err != nil {
			return "", "", false
		}
		u, uok := stringField(t["LOGIN"])
		p, pok := stringField(t["PASSWORD"])
		return u, p, uok && pok
	}
	return "", "", false
}

func stringField(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case []byte:
		return string(x), true
	}
	return "", false
}

func supportedMechanism(m string, external bool) bool {
	return m == "PLAIN" || m == "AMQPLAIN" || (external && m == "EXTERNAL")
}
