package amqp

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/bourse-mq/bourse/protocols/amqp/wire"
	"github.com/bourse-mq/bourse/router/queue"
)

// TestUnackedListAgainstModel drives unackedList with random pushes,
// single and multiple takes, drains and restores, and compares it with a
// sorted set after every step.
func TestUnackedListAgainstModel(t *testing.T) {
	q := &queue.Queue{} // identity only: marks a record as live
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 50 {
		var l unackedList
		model := map[uint64]bool{}
		next := uint64(0)
		for step := range 2000 {
			switch op := rng.IntN(10); {
			case op < 5:
				next++
				l.push(unackRec{tag: next, q: q, id: next})
				model[next] = true
			case op < 8: // single take, of a live tag or a random one
				tag := uint64(rng.IntN(int(next) + 2))
				got, ok := l.take(tag, false, nil)
				if ok != model[tag] {
					t.Fatalf("round %d step %d: take(%d) ok=%v, model %v", round, step, tag, ok, model[tag])
				}
				if ok {
					if len(got) != 1 || got[0].tag != tag || got[0].id != tag {
						t.Fatalf("take(%d) = %+v", tag, got)
					}
					delete(model, tag)
				}
			case op < 9: // multiple take
				tag := uint64(rng.IntN(int(next) + 2))
				got, ok := l.take(tag, true, nil)
				if tag != 0 && ok != model[tag] {
					t.Fatalf("take multiple(%d) ok=%v, model %v", tag, ok, model[tag])
				}
				if ok {
					var want []uint64
					for k := range model {
						if tag == 0 || k <= tag {
							want = append(want, k)
						}
					}
					slices.Sort(want)
					var gotTags []uint64
					for _, r := range got {
						gotTags = append(gotTags, r.tag)
						delete(model, r.tag)
					}
					if !slices.Equal(gotTags, want) {
						t.Fatalf("take multiple(%d) = %v, want %v", tag, gotTags, want)
					}
				}
			default: // take some, then restore them (tx.rollback)
				var taken []unackRec
				for k := range model {
					if rng.IntN(3) == 0 {
						got, ok := l.take(k, false, nil)
						if !ok {
							t.Fatalf("take(%d) of a live tag failed", k)
						}
						taken = append(taken, got...)
					}
				}
				l.restore(taken)
			}
			if l.live != len(model) {
				t.Fatalf("round %d step %d: live %d, model %d", round, step, l.live, len(model))
			}
		}
		var want []uint64
		for k := range model {
			want = append(want, k)
		}
		slices.Sort(want)
		var got []uint64
		for _, r := range l.drain(nil) {
			got = append(got, r.tag)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("drain %v, want %v", got, want)
		}
	}
}

func TestDecodePublishReusing(t *testing.T) {
	for _, in := range []wire.BasicPublish{
		{Exchange: "ex", RoutingKey: "key", Mandatory: true},
		{RoutingKey: "k", Immediate: true, Ticket: 7},
		{},
	} {
		p, err := wire.EncodeMethod(nil, &in)
		must(t, err)
		var m wire.BasicPublish
		if !decodePublishReusing(&m, p[4:]) || m != in {
			t.Fatalf("decoded %+v, want %+v", m, in)
		}
		if !decodePublishReusing(&m, p[4:]) || m != in {
			t.Fatalf("redecoded %+v", m)
		}
		for i := 0; i < len(p)-4; i++ {
			var x wire.BasicPublish
			if decodePublishReusing(&x, p[4:4+i]) {
				t.Fatalf("accepted a truncated argument list of %d bytes", i)
			}
		}
		if decodePublishReusing(&m, append(p[4:len(p):len(p)], 0)) {
			t.Fatal("accepted trailing bytes")
		}
	}
	var m wire.BasicPublish
	_ = decodePublishReusing(&m, []byte{0, 0, 1, 'a', 1, 'b', 0})
	a := testing.AllocsPerRun(100, func() { _ = decodePublishReusing(&m, []byte{0, 0, 1, 'a', 1, 'b', 0}) })
	if a != 0 {
		t.Fatalf("%v allocations per decode of a repeated publish", a)
	}
}
