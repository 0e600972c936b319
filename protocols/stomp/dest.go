package stomp

import (
	"strings"

	"github.com/bourse-mq/bourse/router"
)

// destKind is the form of a STOMP destination, as RabbitMQ's STOMP plugin
// defines them.
type destKind uint8

const (
	destQueue      destKind = iota + 1 // /queue/x: queue x, declared on demand
	destTopic                          // /topic/k: amq.topic, key k
	destExchange                       // /exchange/E[/k]: exchange E, key k
	destAMQQueue                       // /amq/queue/x: existing queue x
	destTempQueue                      // /temp-queue/id: only in a SEND's reply-to
	destReplyQueue                     // /reply-queue/x: queue x (a temp queue's real name)
	destStream                         // /stream/x: existing stream x
)

var destPrefixes = []struct {
	prefix string
	kind   destKind
}{
	{"/queue/", destQueue},
	{"/topic/", destTopic},
	{"/exchange/", destExchange},
	{"/amq/queue/", destAMQQueue},
	{"/temp-queue/", destTempQueue},
	{"/reply-queue/", destReplyQueue},
	{"/stream/", destStream},
}

const validPrefixes = "/queue/, /topic/, /exchange/, /amq/queue/, /stream/, /temp-queue/ (in reply-to), /reply-queue/"

// destination is a parsed destination header.
type destination struct {
	kind destKind
	name string // queue name, topic key, exchange name or temp-queue id
	key  string // routing key of an /exchange/ destination
}

// parseDestination parses a destination header. Name segments are
// percent-decoded ("%2F" is a slash inside a name, as in RabbitMQ; every
// other %XX is decoded too, so that formatDestination round-trips).
func parseDestination(s string) (destination, error) {
	for _, p := range destPrefixes {
		rest, ok := strings.CutPrefix(s, p.prefix)
		if !ok {
			continue
		}
		d := destination{kind: p.kind}
		switch p.kind {
		case destReplyQueue:
			// As RabbitMQ: reply queue names are taken verbatim.
			if rest == "" {
				return d, invalidDest(s, "the queue name is empty")
			}
			d.name = rest
			return d, nil
		case destExchange:
			parts := strings.Split(rest, "/")
			if len(parts) > 2 || parts[0] == "" {
				// The default exchange cannot be named this way: it has
				// different semantics for SEND and SUBSCRIBE.
				return d, invalidDest(s, "want /exchange/<exchange>[/<routing key>] with a non-empty exchange name")
			}
			d.name = unescapeName(parts[0])
			if len(parts) == 2 {
				d.key = unescapeName(parts[1])
			}
			return d, nil
		default:
			if rest == "" || strings.Contains(rest, "/") {
				return d, invalidDest(s, "want exactly one non-empty name after the prefix (write a slash inside a name as %2F)")
			}
			d.name = unescapeName(rest)
			return d, nil
		}
	}
	return destination{}, protoErr("Unknown destination", "'%s' is not a valid destination.\nValid destination types are: %s.", s, validPrefixes)
}

func invalidDest(s, why string) *protoError {
	return protoErr("Invalid destination", "'%s' is not a valid destination: %s", s, why)
}

// formatDestination is the destination header of a MESSAGE for a message
// routed through exchange ex with key, as RabbitMQ writes it, so that a
// client that SENDs to it reaches the same exchange with the same key.
func formatDestination(ex, key string) string {
	switch {
	case ex == router.DefaultExchange:
		return "/queue/" + escapeName(key)
	case ex == router.AMQTopic:
		return "/topic/" + escapeName(key)
	case key == "":
		return "/exchange/" + escapeName(ex)
	default:
		return "/exchange/" + escapeName(ex) + "/" + escapeName(key)
	}
}

const hexDigits = "0123456789ABCDEF"

// escapeName escapes a name as RabbitMQ does: '/', '%' and bytes outside
// 32..127 become %XX.
func escapeName(s string) string {
	clean := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '/' || c == '%' || c < 32 || c > 127 {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '/' || c == '%' || c < 32 || c > 127 {
			b.WriteByte('%')
			b.WriteByte(hexDigits[c>>4])
			b.WriteByte(hexDigits[c&15])
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// unescapeName decodes %XX sequences; a '%' not followed by two hex digits
// stays as it is.
func unescapeName(s string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			hi, ok1 := unhex(s[i+1])
			lo, ok2 := unhex(s[i+2])
			if ok1 && ok2 {
				b.WriteByte(hi<<4 | lo)
				i += 2
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// replyToPrefixes are the reply-to values a STOMP client can SEND to as
// they are; any other reply-to (an AMQP queue name) is shown to STOMP
// clients behind /reply-queue/, as RabbitMQ does.
var replyToPrefixes = []string{"/queue/", "/topic/", "/exchange/", "/amq/queue/", "/reply-queue/", "/temp-queue/"}

// stompReplyTo renders an AMQP reply_to for a MESSAGE frame.
func stompReplyTo(rt string) string {
	for _, p := range replyToPrefixes {
		if strings.HasPrefix(rt, p) {
			return rt
		}
	}
	return "/reply-queue/" + rt
}
