package e2e

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// rssBytes reads a process's resident set size.
func rssBytes(pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// TestFloodBlocksPublishers: publishers at full speed against a slow
// consumer, with a small memory limit. The memory alarm blocks them
// (connection.blocked), the consumer keeps draining, they are unblocked,
// the broker's RSS stays within the limit plus a bounded margin, and every
// confirmed message is delivered.
func TestFloodBlocksPublishers(t *testing.T) {
	const (
		limit      = 160 << 20
		margin     = 96 << 20
		publishers = 4
		perPub     = 3000
		bodySize   = 32 << 10
	)
	br := StartPlain(t, "--memory-limit", strconv.Itoa(limit))
	pid := br.cmd.Process.Pid
	var peak atomic.Int64
	stopRSS := make(chan struct{})
	var rssWG sync.WaitGroup
	rssWG.Add(1)
	go func() {
		defer rssWG.Done()
		for {
			if r := rssBytes(pid); r > peak.Load() {
				peak.Store(r)
			}
			select {
			case <-stopRSS:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	ch := br.AMQPChannel(t)
	if _, err := ch.QueueDeclare("flood", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}

	var blocked, unblocked atomic.Int32
	var confirmed atomic.Int64
	var wg sync.WaitGroup
	body := make([]byte, bodySize)
	deadline := time.Now().Add(120 * time.Second)
	for p := 0; p < publishers; p++ {
		conn := br.AMQP(t)
		notes := conn.NotifyBlocked(make(chan amqp.Blocking, 16))
		go func() {
			for b := range notes {
				if b.Active {
					blocked.Add(1)
				} else {
					unblocked.Add(1)
				}
			}
		}()
		pc, err := conn.Channel()
		if err != nil {
			t.Fatal(err)
		}
		pc.Confirm(false)
		acks := pc.NotifyPublish(make(chan amqp.Confirmation, perPub))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perPub && time.Now().Before(deadline); i++ {
				if err := pc.Publish("", "flood", false, false, amqp.Publishing{Body: body}); err != nil {
					t.Errorf("publish: %v", err)
					return
				}
			}
			for i := 0; i < perPub; i++ {
				select {
				case c := <-acks:
					if c.Ack {
						confirmed.Add(1)
					}
				case <-time.After(time.Until(deadline)):
					t.Errorf("confirms missing")
					return
				}
			}
		}()
	}
	// The consumer: slow for the first seconds, then as fast as it can.
	cc := br.AMQPChannel(t)
	cc.Qos(50, 0, false)
	ds, err := cc.Consume("flood", "", false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	slowUntil := time.Now().Add(3 * time.Second)
	received := 0
	for received < publishers*perPub && time.Now().Before(deadline) {
		select {
		case d := <-ds:
			if len(d.Body) != bodySize {
				t.Fatalf("body of %d bytes", len(d.Body))
			}
			received++
			d.Ack(false)
			if time.Now().Before(slowUntil) {
				time.Sleep(2 * time.Millisecond)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("consumer starved after %d messages", received)
		}
	}
	wg.Wait()
	close(stopRSS)
	rssWG.Wait()
	t.Logf("published %d, confirmed %d, received %d; blocked %d times, unblocked %d; peak RSS %d MiB (limit %d MiB)",
		publishers*perPub, confirmed.Load(), received, blocked.Load(), unblocked.Load(), peak.Load()>>20, limit>>20)
	if confirmed.Load() != publishers*perPub || received != publishers*perPub {
		t.Fatalf("confirmed %d, received %d of %d", confirmed.Load(), received, publishers*perPub)
	}
	if blocked.Load() == 0 || unblocked.Load() == 0 {
		t.Fatalf("publishers were never blocked (%d) or never unblocked (%d)", blocked.Load(), unblocked.Load())
	}
	if peak.Load() > limit+margin {
		t.Fatalf("peak RSS %d MiB above the limit %d MiB plus %d MiB", peak.Load()>>20, limit>>20, margin>>20)
	}
}
