package amqp

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/bourse-mq/bourse/auth"
	"github.com/bourse-mq/bourse/internal/testkit"
)

// authStore is a real user store: "app" may configure app.*, write to
// app.* and the default exchange, read app.*; "ops" has no permissions on
// "/"; topic permissions restrict "app" on amq.topic.
func authStore(t *testing.T) *auth.Store {
	t.Helper()
	s := testkit.Users(t)
	must := func(err error) { t.Helper(); testkit.Must(t, err) }
	must(s.PutUser("app", "pw", nil))
	must(s.SetPermissions(auth.Permission{User: "app", VHost: "/", Configure: `^app\.`, Write: `^(app\..*|amq\.default|amq\.topic)$`, Read: `^(app\..*|amq\.topic)$`}))
	must(s.SetTopicPermissions(auth.TopicPermission{User: "app", VHost: "/", Exchange: "amq.topic", Write: `^sensors\.`, Read: `^sensors\.`}))
	must(s.PutUser("ops", "pw", []string{"monitoring"}))
	return s
}

// TestPermissionMatrix drives every checked AMQP operation with a user
// allowed and refused, over a real socket with amqp091-go: refusals are
// channel exceptions 403 ACCESS_REFUSED, naming the resource.
func TestPermissionMatrix(t *testing.T) {
	store := authStore(t)
	e := startServer(t, func(o *Options) { o.Auth = store })
	// Fixtures made by the administrator.
	admin := e.dial(t)
	ach, _ := admin.Channel()
	for _, q := range []string{"app.in", "secret"} {
		if _, err := ach.QueueDeclare(q, false, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := ach.ExchangeDeclare("secret.x", "fanout", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ach.Publish("", "secret", false, false, amqp091.Publishing{Body: []byte("s")}); err != nil {
		t.Fatal(err)
	}

	conn, err := amqp091.Dial("amqp://app:pw@" + e.addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cases := []struct {
		name string
		ok   bool
		do   func(ch *amqp091.Channel) error
	}{
		{"declare own queue", true, func(ch *amqp091.Channel) error {
			_, err := ch.QueueDeclare("app.work", false, false, false, false, nil)
			return err
		}},
		{"declare foreign queue", false, func(ch *amqp091.Channel) error {
			_, err := ch.QueueDeclare("other.work", false, false, false, false, nil)
			return err
		}},
		{"passive declare needs nothing", true, func(ch *amqp091.Channel) error {
			_, err := ch.QueueDeclarePassive("secret", false, false, false, false, nil)
			return err
		}},
		{"server-named queue is amq.gen-*", false, func(ch *amqp091.Channel) error {
			_, err := ch.QueueDeclare("", false, false, true, false, nil)
			return err
		}},
		{"dead-letter exchange needs write", false, func(ch *amqp091.Channel) error {
			_, err := ch.QueueDeclare("app.dl", false, false, false, false, amqp091.Table{"x-dead-letter-exchange": "secret.x"})
			return err
		}},
		{"declare exchange", false, func(ch *amqp091.Channel) error {
			return ch.ExchangeDeclare("other.x", "direct", false, false, false, false, nil)
		}},
		{"delete foreign queue", false, func(ch *amqp091.Channel) error {
			_, err := ch.QueueDelete("secret", false, false, false)
			return err
		}},
		{"delete exchange", false, func(ch *amqp091.Channel) error { return ch.ExchangeDelete("secret.x", false, false) }},
		{"bind own queue to amq.topic", true, func(ch *amqp091.Channel) error {
			return ch.QueueBind("app.in", "sensors.#", "amq.topic", false, nil)
		}},
		{"bind from an unreadable exchange", false, func(ch *amqp091.Channel) error {
			return ch.QueueBind("app.in", "", "secret.x", false, nil)
		}},
		{"bind with a key outside the topic permission", false, func(ch *amqp091.Channel) error {
			return ch.QueueBind("app.in", "alarms.#", "amq.topic", false, nil)
		}},
		{"bind a foreign queue", false, func(ch *amqp091.Channel) error {
			return ch.QueueBind("secret", "sensors.x", "amq.topic", false, nil)
		}},
		{"exchange bind", false, func(ch *amqp091.Channel) error {
			return ch.ExchangeBind("secret.x", "", "amq.topic", false, nil)
		}},
		{"consume own queue", true, func(ch *amqp091.Channel) error {
			_, err := ch.Consume("app.in", "", false, false, false, false, nil)
			return err
		}},
		{"consume foreign queue", false, func(ch *amqp091.Channel) error {
			_, err := ch.Consume("secret", "", false, false, false, false, nil)
			return err
		}},
		{"get foreign queue", false, func(ch *amqp091.Channel) error {
			_, _, err := ch.Get("secret", false)
			return err
		}},
		{"purge foreign queue", false, func(ch *amqp091.Channel) error {
			_, err := ch.QueuePurge("secret", false)
			return err
		}},
		{"publish to the default exchange", true, func(ch *amqp091.Channel) error {
			return publishConfirmed(ch, "", "app.in")
		}},
		{"publish to a foreign exchange", false, func(ch *amqp091.Channel) error {
			return publishConfirmed(ch, "secret.x", "")
		}},
		{"publish with an allowed topic", true, func(ch *amqp091.Channel) error {
			return publishConfirmed(ch, "amq.topic", "sensors.t1")
		}},
		{"publish with a refused topic", false, func(ch *amqp091.Channel) error {
			return publishConfirmed(ch, "amq.topic", "alarms.t1")
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ch, err := conn.Channel()
			if err != nil {
				t.Fatal(err)
			}
			defer ch.Close()
			err = c.do(ch)
			if c.ok {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var ae *amqp091.Error
			if !errors.As(err, &ae) || ae.Code != amqp091.AccessRefused || !strings.Contains(ae.Reason, "refused for user 'app'") {
				t.Fatalf("got %v, want 403 ACCESS_REFUSED", err)
			}
		})
	}
	// The secret queue still holds its message: nothing leaked.
	if m, ok, err := ach.Get("secret", true); err != nil || !ok || string(m.Body) != "s" {
		t.Fatalf("secret queue: %v %v %q", ok, err, m.Body)
	}
}

func publishConfirmed(ch *amqp091.Channel, exchange, key string) error {
	closed := ch.NotifyClose(make(chan *amqp091.Error, 1))
	if err := ch.Confirm(false); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := ch.PublishWithDeferredConfirm(exchange, key, false, false, amqp091.Publishing{Body: []byte("x")})
	if err != nil {
		return err
	}
	if ok, err := c.WaitContext(ctx); err != nil {
		return err
	} else if !ok {
		// A refused publish closes the channel; the nack comes with it.
		select {
		case ae := <-closed:
			return ae
		case <-ctx.Done():
			return errors.New("nacked")
		}
	}
	return nil
}

func TestVHostAccessAndLogin(t *testing.T) {
	store := authStore(t)
	e := startServer(t, func(o *Options) { o.Auth = store })
	_, err := amqp091.Dial("amqp://ops:pw@" + e.addr + "/")
	var ae *amqp091.Error
	if !errors.As(err, &ae) || ae.Code != amqp091.NotAllowed || !strings.Contains(ae.Reason, "access to vhost '/' refused") {
		t.Fatalf("user without permissions on /: %v, want 530", err)
	}
	_, err = amqp091.Dial("amqp://app:wrong@" + e.addr + "/")
	if !errors.As(err, &ae) || ae.Code != amqp091.AccessRefused {
		t.Fatalf("wrong password: %v, want 403", err)
	}
	// Revoking applies to open connections at their next operation.
	conn, err := amqp091.Dial("amqp://app:pw@" + e.addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, _ := conn.Channel()
	if _, err := ch.QueueDeclare("app.a", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := store.SetPermissions(auth.Permission{User: "app", VHost: "/", Configure: "", Write: ".*", Read: ".*"}); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("app.b", false, false, false, false, nil); !errors.As(err, &ae) || ae.Code != amqp091.AccessRefused {
		t.Fatalf("after revoke: %v", err)
	}
}

func TestConnectionLimitPerUser(t *testing.T) {
	store := authStore(t)
	store.SetLimits(0, 2)
	e := startServer(t, func(o *Options) { o.Auth = store })
	var conns []*amqp091.Connection
	for i := 0; i < 2; i++ {
		c, err := amqp091.Dial("amqp://app:pw@" + e.addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	_, err := amqp091.Dial("amqp://app:pw@" + e.addr + "/")
	var ae *amqp091.Error
	if !errors.As(err, &ae) || ae.Code != amqp091.NotAllowed || !strings.Contains(ae.Reason, "limit") {
		t.Fatalf("third connection: %v, want 530 with the limit", err)
	}
	conns[0].Close()
	eventually(t, 5*time.Second, func() bool { return store.Connections() == 1 }, "the closed connection released its slot")
	c, err := amqp091.Dial("amqp://app:pw@" + e.addr + "/")
	if err != nil {
		t.Fatalf("after a close: %v", err)
	}
	c.Close()
	conns[1].Close()
}

func TestMaxConsumersPerChannel(t *testing.T) {
	e := startServer(t, func(o *Options) { o.MaxConsumersPerChannel = 2 })
	conn := e.dial(t)
	ch, _ := conn.Channel()
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if _, err := ch.Consume(q.Name, "", true, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	_, err = ch.Consume(q.Name, "", true, false, false, false, nil)
	var ae *amqp091.Error
	if !errors.As(err, &ae) || ae.Code != amqp091.NotAllowed || !strings.Contains(ae.Reason, "consumers per channel") {
		t.Fatalf("third consumer: %v, want 530", err)
	}
}
