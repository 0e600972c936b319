package stomp

import (
	"testing"

	"github.com/bourse-mq/bourse/router"
)

// FuzzDestination parses arbitrary destination headers and checks the
// names RabbitMQ's escaping carries. Invariants: parseDestination never
// panics, and a destination written by formatDestination (a MESSAGE's
// destination header) parses back to the same exchange and routing key.
func FuzzDestination(f *testing.F) {
	for _, s := range []string{"/queue/a", "/topic/a.b", "/exchange/amq.topic/a%2Fb", "/amq/queue/q",
		"/temp-queue/t", "/reply-queue/amq.gen-1", "/stream/s", "/queue/%", "/queue/%zz%4", "/exchange//k"} {
		f.Add(s, "ex", "key")
	}
	f.Add("", "", "k/%\x00é")
	f.Fuzz(func(t *testing.T, header, ex, key string) {
		_, _ = parseDestination(header)
		if key == "" || ex == router.DefaultExchange && key == "" {
			return
		}
		s := formatDestination(ex, key)
		d, err := parseDestination(s)
		if err != nil {
			t.Fatalf("formatDestination(%q, %q) = %q: %v", ex, key, s, err)
		}
		gotEx, gotKey := "", ""
		switch d.kind {
		case destQueue:
			gotEx, gotKey = router.DefaultExchange, d.name
		case destTopic:
			gotEx, gotKey = router.AMQTopic, d.name
		case destExchange:
			gotEx, gotKey = d.name, d.key
		default:
			t.Fatalf("%q parsed as kind %v", s, d.kind)
		}
		if gotEx != ex || gotKey != key {
			t.Fatalf("%q parsed as (%q, %q), want (%q, %q)", s, gotEx, gotKey, ex, key)
		}
	})
}
