package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	amqp "github.com/rabbitmq/amqp091-go"
)

// confirmedLog records, per publisher, the sequence numbers the broker
// confirmed and the highest one ever sent.
type confirmedLog struct {
	mu        sync.Mutex
	confirmed map[string]map[int]bool
	sent      map[string]int
}

func (l *confirmedLog) sentUpTo(pub string, n int) {
	l.mu.Lock()
	if n > l.sent[pub] {
		l.sent[pub] = n
	}
	l.mu.Unlock()
}

func (l *confirmedLog) confirm(pub string, n int) {
	l.mu.Lock()
	if l.confirmed[pub] == nil {
		l.confirmed[pub] = map[int]bool{}
	}
	l.confirmed[pub][n] = true
	l.mu.Unlock()
}

// amqpPublisher publishes persistent messages "pub:n" with confirms to the
// fanout exchange until its connection dies or stop closes.
func amqpPublisher(addr, pub string, start int, log *confirmedLog, stop <-chan struct{}) int {
	c, err := amqp.Dial("amqp://guest:guest@" + addr + "/")
	if err != nil {
		return start
	}
	defer c.Close()
	ch, err := c.Channel()
	if err != nil || ch.Confirm(false) != nil {
		return start
	}
	n := start
	for {
		select {
		case <-stop:
			return n
		default:
		}
		// A window of 20 outstanding confirms per publisher.
		var pending []*amqp.DeferredConfirmation
		var seqs []int
		for range 20 {
			n++
			log.sentUpTo(pub, n)
			dc, err := ch.PublishWithDeferredConfirmWithContext(context.Background(), "crash-x", "", false, false,
				amqp.Publishing{DeliveryMode: amqp.Persistent, Body: []byte(fmt.Sprintf("%s:%d", pub, n))})
			if err != nil {
				return n
			}
			pending = append(pending, dc)
			seqs = append(seqs, n)
		}
		for i, dc := range pending {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			ok, err := dc.WaitContext(ctx)
			cancel()
			if err != nil {
				return n
			}
			if ok {
				log.confirm(pub, seqs[i])
			}
		}
	}
}

// mqttPublisher publishes QoS 1 messages "pub:n" to crash/in; each PUBACK
// is a confirm.
func mqttPublisher(addr, pub string, start int, log *confirmedLog, stop <-chan struct{}) int {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return start
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_, err = c.Connect(ctx, &paho.Connect{ClientID: pub, CleanStart: true, KeepAlive: 30,
		Username: "guest", UsernameFlag: true, Password: []byte("guest"), PasswordFlag: true})
	cancel()
	if err != nil {
		conn.Close()
		return start
	}
	defer func() { _ = c.Disconnect(&paho.Disconnect{}) }()
	n := start
	for {
		select {
		case <-stop:
			return n
		default:
		}
		n++
		log.sentUpTo(pub, n)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := c.Publish(ctx, &paho.Publish{Topic: "crash/in", QoS: 1, Payload: []byte(fmt.Sprintf("%s:%d", pub, n))})
		cancel()
		if err != nil {
			return n
		}
		log.confirm(pub, n)
	}
}

// TestCrashKeepsConfirmedMessages publishes persistent messages with
// confirms from AMQP and QoS 1 from MQTT into two durable queues, kills the
// broker with SIGKILL at random moments several times, and checks that
// every confirmed message is delivered after the last restart, that nothing
// unpublished appears, and that each publisher's order is kept.
func TestCrashKeepsConfirmedMessages(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test skipped in -short mode")
	}
	b := Start(t, "--fsync", "always")
	ch := b.AMQPChannel(t)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(ch.ExchangeDeclare("crash-x", "fanout", true, false, false, false, nil))
	for _, q := range []string{"crash-a", "crash-b"} {
		_, err := ch.QueueDeclare(q, true, false, false, false, nil)
		must(err)
		must(ch.QueueBind(q, "", "crash-x", false, nil))
		must(ch.QueueBind(q, "crash.in", "amq.topic", false, nil))
	}

	log := &confirmedLog{confirmed: map[string]map[int]bool{}, sent: map[string]int{}}
	pubs := []string{"amqp-1", "amqp-2", "amqp-3", "amqp-4", "mqtt-1", "mqtt-2"}
	next := map[string]int{}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	const rounds = 4
	for round := range rounds {
		stop := make(chan struct{})
		var wg sync.WaitGroup
		var mu sync.Mutex
		for _, p := range pubs {
			wg.Add(1)
			mu.Lock() // publishers of this round already write next
			start := next[p]
			mu.Unlock()
			go func() {
				defer wg.Done()
				var last int
				if strings.HasPrefix(p, "amqp") {
					last = amqpPublisher(b.Addrs["amqp"], p, start, log, stop)
				} else {
					last = mqttPublisher(b.Addrs["mqtt"], p, start, log, stop)
				}
				mu.Lock()
				next[p] = last
				mu.Unlock()
			}()
		}
		time.Sleep(time.Duration(300+rng.IntN(700)) * time.Millisecond)
		b.Kill9()
		close(stop)
		wg.Wait()
		t.Logf("round %d: killed the broker with SIGKILL", round+1)
		b.start()
	}

	// Drain both queues after the last restart.
	ch = b.AMQPChannel(t)
	totalConfirmed := 0
	for _, c := range log.confirmed {
		totalConfirmed += len(c)
	}
	for _, q := range []string{"crash-a", "crash-b"} {
		got := map[string]map[int]int{}
		last := map[string]int{}
		reordered := 0
		received, dups := 0, 0
		for {
			d, ok, err := ch.Get(q, true)
			must(err)
			if !ok {
				break
			}
			received++
			pub, nstr, found := strings.Cut(string(d.Body), ":")
			n, err := strconv.Atoi(nstr)
			if !found || err != nil || n < 1 || n > log.sent[pub] {
				t.Fatalf("%s: message %q was never published", q, d.Body)
			}
			if got[pub] == nil {
				got[pub] = map[int]int{}
			}
			got[pub][n]++
			if got[pub][n] > 1 {
				dups++
			} else if n < last[pub] {
				reordered++
			}
			if n > last[pub] {
				last[pub] = n
			}
		}
		lost := 0
		for pub, c := range log.confirmed {
			for n := range c {
				if got[pub][n] == 0 {
					lost++
					if lost <= 5 {
						t.Errorf("%s: confirmed message %s:%d lost", q, pub, n)
					}
				}
			}
		}
		t.Logf("%s: %d rounds of kill -9; confirmed %d, recovered %d, lost %d, duplicates %d, out of order %d",
			q, rounds, totalConfirmed, received, lost, dups, reordered)
		if lost > 0 || reordered > 0 {
			t.Fatalf("%s: lost %d confirmed messages, %d out of order", q, lost, reordered)
		}
	}
	if totalConfirmed < 100 {
		t.Fatalf("only %d messages confirmed: the test did not exercise the broker", totalConfirmed)
	}
}
