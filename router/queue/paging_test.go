package queue

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/storage/durable"
)

// TestPagingBoundsMemory: a durable queue over its memory budget keeps only
// an index of persistent messages and reads their bodies back from the
// journal when it delivers or dead-letters them, also after a restart.
func TestPagingBoundsMemory(t *testing.T) {
	dir := t.TempDir()
	j, _, err := durable.Open(dir, durable.Options{})
	if err != nil {
		t.Fatal(err)
	}
	args, _ := ParseArgs(core.Table{"x-dead-letter-exchange": "dlx"})
	var dead []*core.Message
	cfg := Config{Name: "big", VHost: "/", Durable: true, Args: args, MemoryBytes: 10 << 10}
	q := New(cfg, Hooks{DeadLetter: func(_ string, m *core.Message) { dead = append(dead, m) }}, j)
	body := func(i int) []byte { return bytes.Repeat([]byte{byte(i)}, 1024) }
	done := make(chan error, 500)
	for i := 0; i < 500; i++ {
		m := &core.Message{RoutingKey: "big", Body: body(i), Props: core.Properties{DeliveryMode: core.Persistent, MessageID: fmt.Sprint(i)}}
		seq, res := q.Enqueue(m)
		if res != Accepted {
			t.Fatal(res)
		}
		j.Persist("/", m, []core.QueueSeq{{Queue: "big", Seq: seq}}, func(err error) { done <- err })
		if q.memBytes > cfg.MemoryBytes {
			t.Fatalf("after %d messages %d bytes of bodies in memory, budget %d", i+1, q.memBytes, cfg.MemoryBytes)
		}
	}
	if st := q.Stats(); st.Ready != 500 || st.ReadyBytes != 500*1024 {
		t.Fatalf("stats %+v", st)
	}
	for i := 0; i < 500; i++ {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 200; i++ {
		d, _, ok := q.Get(false)
		if !ok || d.Msg.Props.MessageID != fmt.Sprint(i) || !bytes.Equal(d.Msg.Body, body(i)) {
			t.Fatalf("get %d: ok=%v id=%s body %d bytes", i, ok, d.Msg.Props.MessageID, len(d.Msg.Body))
		}
		if i == 0 {
			q.Reject(d.ID, false) // dead-lettered with its body
		} else {
			q.Ack(d.ID)
		}
	}
	if len(dead) != 1 || !bytes.Equal(dead[0].Body, body(0)) {
		t.Fatalf("dead-lettered %d, body %d bytes", len(dead), len(dead[0].Body))
	}
	j.Close()

	j2, rec, err := durable.Open(dir, durable.Options{LazyRecovery: true})
	if err != nil {
		t.Fatal(err)
	}
	defer j2.Close()
	q2 := New(cfg, Hooks{}, j2)
	for _, r := range rec[[2]string{"/", "big"}] {
		if !r.Paged || r.Msg.Body != nil || r.Size != 1024 {
			t.Fatalf("recovered entry not paged: %+v", r)
		}
		q2.RestorePaged(r.Seq, r.Msg, r.Redelivered, r.Size)
	}
	if st := q2.Stats(); st.Ready != 300 || q2.memBytes != 0 {
		t.Fatalf("after recovery: %+v, %d bytes in memory", st, q2.memBytes)
	}
	for i := 200; i < 500; i++ {
		d, _, ok := q2.Get(true)
		if !ok || d.Msg.Props.MessageID != fmt.Sprint(i) || !bytes.Equal(d.Msg.Body, body(i)) {
			t.Fatalf("after restart get %d: ok=%v id=%s", i, ok, d.Msg.Props.MessageID)
		}
	}
}
