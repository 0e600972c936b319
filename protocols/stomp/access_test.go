package stomp

import (
	"strings"
	"testing"

	"github.com/bourse-mq/bourse/auth"
	"github.com/bourse-mq/bourse/internal/testkit"
)

func stompAuth(t *testing.T) *auth.Store {
	t.Helper()
	s := testkit.Users(t)
	must := func(err error) { t.Helper(); testkit.Must(t, err) }
	// web may use queues web.*, publish to amq.topic with keys news.*, and
	// subscribe to topics (its subscription queues are stomp-subscription-*).
	must(s.PutUser("web", "pw", nil))
	must(s.SetPermissions(auth.Permission{User: "web", VHost: "/",
		Configure: `^(web\..*|stomp-subscription-.*)$`,
		Write:     `^(web\..*|stomp-subscription-.*|amq\.default|amq\.topic)$`,
		Read:      `^(web\..*|stomp-subscription-.*|amq\.topic)$`}))
	must(s.SetTopicPermissions(auth.TopicPermission{User: "web", VHost: "/", Exchange: "amq.topic", Write: `^news\.`, Read: `^news\.`}))
	must(s.PutUser("nobody", "pw", nil))
	return s
}

// TestSTOMPPermissions: each allowed and refused frame over a real socket;
// a refusal is an ERROR "access_refused" naming the resource, then close.
func TestSTOMPPermissions(t *testing.T) {
	store := stompAuth(t)
	e := start(t, Options{Auth: store})
	r := e.raw()
	r.send("CONNECT\naccept-version:1.2\nhost:/\nlogin:nobody\npasscode:pw\n\n\x00")
	if f := r.expectError("Access refused"); !contains(string(f.Body), "access to vhost '/' refused") {
		t.Fatalf("vhost without permissions: %q", f.Body)
	}
	r = e.raw()
	r.send("CONNECT\naccept-version:1.2\nhost:/\nlogin:web\npasscode:bad\n\n\x00")
	r.expectError("Access refused")

	secret := e.consume("secret")
	cases := []struct {
		name  string
		frame string
		ok    bool
	}{
		{"send to own queue", "SEND\ndestination:/queue/web.in\nreceipt:r\n\nx\x00", true},
		{"send to a foreign queue declares it: configure refused", "SEND\ndestination:/queue/secret2\nreceipt:r\n\nx\x00", false},
		{"send to an existing foreign queue via the default exchange", "SEND\ndestination:/amq/queue/secret\nreceipt:r\n\nx\x00", true},
		{"send to a foreign exchange", "SEND\ndestination:/exchange/amq.fanout\nreceipt:r\n\nx\x00", false},
		{"send an allowed topic", "SEND\ndestination:/topic/news.eu\nreceipt:r\n\nx\x00", true},
		{"send a refused topic", "SEND\ndestination:/topic/alarms.eu\nreceipt:r\n\nx\x00", false},
		{"subscribe to own queue", "SUBSCRIBE\nid:1\ndestination:/queue/web.sub\nreceipt:r\n\n\x00", true},
		{"subscribe to a foreign queue", "SUBSCRIBE\nid:1\ndestination:/amq/queue/secret\nreceipt:r\n\n\x00", false},
		{"subscribe to an allowed topic", "SUBSCRIBE\nid:1\ndestination:/topic/news.#\nreceipt:r\n\n\x00", true},
		{"subscribe to a refused topic", "SUBSCRIBE\nid:1\ndestination:/topic/alarms.#\nreceipt:r\n\n\x00", false},
		{"subscribe to a foreign exchange", "SUBSCRIBE\nid:1\ndestination:/exchange/amq.fanout\nreceipt:r\n\n\x00", false},
		{"subscribe with a foreign dead-letter exchange", "SUBSCRIBE\nid:1\ndestination:/queue/web.dl\nx-dead-letter-exchange:amq.fanout\nreceipt:r\n\n\x00", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := e.raw()
			r.connect("1.2", "login", "web", "passcode", "pw")
			r.send(c.frame)
			if c.ok {
				r.expect("RECEIPT")
				return
			}
			f := r.expectError("access_refused")
			if !contains(string(f.Body), "refused for user 'web'") {
				t.Fatalf("ERROR body %q", f.Body)
			}
		})
	}
	// Exactly the one allowed SEND reached the foreign queue.
	if m := secret.next(t); string(m.Body) != "x" {
		t.Fatalf("got %q", m.Body)
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
