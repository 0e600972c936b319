package cluster

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/bourse-mq/bourse/router"
	"github.com/bourse-mq/bourse/router/match"
)

// TestInterestSubjectsMatchTopicSemantics: for topic patterns and keys
// drawn from a small alphabet (empty words, '*' and '#' anywhere, words
// that look like NATS wildcards), a node's subscriptions for a binding
// pattern receive every key the router's topic matcher routes to it
// (never a missed message), and only those when the pattern maps onto
// NATS wildcards ('#' only at the end); every subject is valid.
func TestInterestSubjectsMatchTopicSemantics(t *testing.T) {
	words := []string{"a", "b", "", "*", "#", ">", "a b", "é"}
	keyWords := []string{"a", "b", "", "*", "#", ">", "a b", "é"}
	rng := rand.New(rand.NewPCG(1, 2))
	gen := func(ws []string, max int) string {
		n := rng.IntN(max + 1)
		parts := make([]string, n)
		for i := range parts {
			parts[i] = ws[rng.IntN(len(ws))]
		}
		return strings.Join(parts, ".")
	}
	checked, exact := 0, 0
	for range 3000 {
		pattern := gen(words, 4)
		subjects := interestSubjects("/v", router.Interest{Exchange: "x.y", Kind: router.InterestPattern, Key: pattern})
		for _, s := range subjects {
			if !server.IsValidSubject(s) {
				t.Fatalf("pattern %q: invalid subject %q", pattern, s)
			}
		}
		tp := match.NewTopic[int]()
		tp.Add(pattern, 1)
		hashInside := strings.Contains(strings.TrimSuffix(pattern, "#"), "#")
		for range 20 {
			key := gen(keyWords, 5)
			routed := false
			tp.Match(key, func(int) { routed = true })
			subj := FanoutSubject("/v", "x.y", key)
			if !server.IsValidSubject(subj) || strings.ContainsAny(subj, "*>") {
				t.Fatalf("key %q: subject %q is not a valid literal subject", key, subj)
			}
			heard := false
			for _, s := range subjects {
				heard = heard || server.SubjectMatchesFilter(subj, s)
			}
			if routed && !heard {
				t.Fatalf("pattern %q routes key %q, but subjects %q miss %q", pattern, key, subjects, subj)
			}
			if !hashInside {
				exact++
				if heard != routed {
					t.Fatalf("pattern %q, key %q: heard %v, routed %v (subjects %q)", pattern, key, heard, routed, subjects)
				}
			}
			checked++
		}
	}
	t.Logf("%d pattern/key pairs, %d with an exact mapping", checked, exact)

	// Exact keys: only the one key; other vhosts and exchanges never.
	subs := interestSubjects("/", router.Interest{Exchange: "amq.direct", Kind: router.InterestKey, Key: "a.b"})
	for key, want := range map[string]bool{"a.b": true, "a": false, "a.b.c": false, "": false, "a.*": false} {
		heard := false
		for _, s := range subs {
			heard = heard || server.SubjectMatchesFilter(FanoutSubject("/", "amq.direct", key), s)
		}
		if heard != want {
			t.Fatalf("direct key a.b, publish %q: heard %v", key, heard)
		}
	}
	for _, s := range subs {
		if server.SubjectMatchesFilter(FanoutSubject("/", "amq.directx", "a.b"), s) ||
			server.SubjectMatchesFilter(FanoutSubject("/x", "amq.direct", "a.b"), s) {
			t.Fatalf("subject %q hears another exchange or vhost", s)
		}
	}
	// The bare subject (messages with CC or BCC) reaches every interest.
	for _, i := range []router.Interest{{Exchange: "e", Kind: router.InterestKey, Key: "k"},
		{Exchange: "e", Kind: router.InterestPattern, Key: "a.#"}, {Exchange: "e", Kind: router.InterestAll}} {
		heard := false
		for _, s := range interestSubjects("/", i) {
			heard = heard || s == fanPrefix("/", "e")
		}
		if !heard {
			t.Fatalf("%+v does not listen to the bare subject", i)
		}
	}
}
