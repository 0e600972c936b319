package match

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// words splits a key or pattern as RabbitMQ's split_topic_key does: the empty
// string is no words, anything else is strings.Split on '.'.
func words(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ".")
}

// naiveMatch is the reference matcher: a direct recursive reading of the
// topic-exchange rules on split words.
func naiveMatch(pattern, key []string) bool {
	if len(pattern) == 0 {
		return len(key) == 0
	}
	switch pattern[0] {
	case "#":
		for i := 0; i <= len(key); i++ {
			if naiveMatch(pattern[1:], key[i:]) {
				return true
			}
		}
		return false
	case "*":
		return len(key) > 0 && naiveMatch(pattern[1:], key[1:])
	default:
		return len(key) > 0 && key[0] == pattern[0] && naiveMatch(pattern[1:], key[1:])
	}
}

// model is the reference binding set.
type model map[binding[int]]bool

// route returns the sorted distinct destinations whose patterns match key.
func (m model) route(key string) []int {
	var out []int
	for b := range m {
		if naiveMatch(words(b.pattern), words(key)) && !slices.Contains(out, b.dest) {
			out = append(out, b.dest)
		}
	}
	slices.Sort(out)
	return out
}

// matchAll returns the destinations t yields for key, sorted, failing the
// test if one is yielded twice.
func matchAll(t testing.TB, tp *Topic[int], key string) []int {
	t.Helper()
	var out []int
	tp.Match(key, func(d int) {
		if slices.Contains(out, d) {
			t.Fatalf("key %q: destination %d yielded twice", key, d)
		}
		out = append(out, d)
	})
	slices.Sort(out)
	return out
}

func TestTopicSemantics(t *testing.T) {
	cases := []struct {
		pattern, key string
		want         bool
	}{
		// The empty string is zero words (RabbitMQ split_topic_key(<<>>) = []).
		{"", "", true},
		{"#", "", true},
		{"#.#", "", true},
		{"*", "", false},
		{"", "a", false},
		{"a", "", false},
		{"#.*", "", false},
		// "." is two empty words; empty words are ordinary words.
		{"*", ".", false},
		{"*.*", ".", true},
		{"#", ".", true},
		{".", ".", true},
		{"a.*", "a.", true},
		{"a.*", "a", false},
		{"a.", "a.", true},
		{"a.", "a", false},
		{"*.a", ".a", true},
		{"a.*.b", "a..b", true},
		{"a..b", "a..b", true},
		{"a..b", "a.b", false},
		// * is exactly one word.
		{"*", "a", true},
		{"*", "a.b", false},
		{"a.*", "a.b", true},
		{"a.*", "a.b.c", false},
		{"*.*.*", "a.b.c", true},
		// # is zero or more words, anywhere.
		{"#", "a.b.c", true},
		{"a.#", "a", true},
		{"a.#", "a.b.c", true},
		{"a.#", "b.a", false},
		{"#.a", "a", true},
		{"#.a", "x.y.a", true},
		{"#.a", "a.x", false},
		{"a.#.b", "a.b", true},
		{"a.#.b", "a.x.y.b", true},
		{"a.#.b", "a.x.y.c", false},
		{"#.a.#", "x.a.y", true},
		{"#.a.#", "a", true},
		{"#.a.#", "x.y", false},
		{"a.#.#.b", "a.b", true},
		{"a.#.#.b", "a.x.b", true},
		{"#.#.#", "a.b", true},
		{"#.*", "a", true},
		{"#.*.#", "a.b.c", true},
		{"*.#.*", "a", false},
		{"*.#.*", "a.b", true},
		{"a.#.b.#.c", "a.b.x.b.c", true},
		{"a.#.b.#.c", "a.c.b", false},
		// Wildcards are special only as whole pattern words.
		{"a*", "ab", false},
		{"a*", "a*", true},
		{"#a", "a", false},
		{"a.b#", "a.b.c", false},
		// In a key, * and # are ordinary words.
		{"*", "*", true},
		{"#", "#", true},
		{"a", "*", false},
		{"a", "#", false},
		{"a.*", "a.#", true},
		{"a.#", "a.*", true},
	}
	for _, c := range cases {
		if got := naiveMatch(words(c.pattern), words(c.key)); got != c.want {
			t.Errorf("reference: pattern %q key %q: got %v want %v", c.pattern, c.key, got, c.want)
		}
		tp := NewTopic[int]()
		tp.Add(c.pattern, 1)
		if got := len(matchAll(t, tp, c.key)) == 1; got != c.want {
			t.Errorf("Topic: pattern %q key %q: got %v want %v", c.pattern, c.key, got, c.want)
		}
	}
}

func TestTopicAddRemoveLen(t *testing.T) {
	tp := NewTopic[string]()
	if !tp.Add("a.#", "q1") || tp.Add("a.#", "q1") {
		t.Fatal("Add must report true once, then false for the same binding")
	}
	if !tp.Add("a.#.#", "q1") {
		t.Fatal(`"a.#.#" is a binding distinct from "a.#"`)
	}
	if !tp.Add("a.*", "q1") || !tp.Add("a.*", "q2") || !tp.Add("", "q3") {
		t.Fatal("Add of new bindings")
	}
	if n := tp.Len(); n != 5 {
		t.Fatalf("Len = %d, want 5", n)
	}
	collect := func(key string) []string {
		var out []string
		tp.Match(key, func(d string) { out = append(out, d) })
		slices.Sort(out)
		return out
	}
	if got := collect("a.b"); !slices.Equal(got, []string{"q1", "q2"}) {
		t.Fatalf("a.b -> %v (q1 bound three ways must be yielded once)", got)
	}
	if tp.Remove("a.#", "q2") || tp.Remove("b", "q1") {
		t.Fatal("Remove of a missing binding must report false")
	}
	if !tp.Remove("a.#", "q1") || tp.Remove("a.#", "q1") {
		t.Fatal("Remove must report true once")
	}
	if got := collect("a"); !slices.Equal(got, []string{"q1"}) {
		t.Fatalf(`a -> %v: "a.#.#" still binds q1`, got)
	}
	tp.Remove("a.#.#", "q1")
	if got := collect("a"); len(got) != 0 {
		t.Fatalf("a -> %v, want none", got)
	}
	if got := collect(""); !slices.Equal(got, []string{"q3"}) {
		t.Fatalf(`"" -> %v, want q3`, got)
	}
	for _, b := range []struct{ p, d string }{{"a.*", "q1"}, {"a.*", "q2"}, {"", "q3"}} {
		if !tp.Remove(b.p, b.d) {
			t.Fatalf("Remove(%q, %q)", b.p, b.d)
		}
	}
	if tp.Len() != 0 || !tp.root.empty() {
		t.Fatalf("after removing everything: Len %d, root %+v", tp.Len(), tp.root)
	}
}

// TestTopicManyDestinations crosses the smallSet thresholds of a node's
// destination list and of the match sets.
func TestTopicManyDestinations(t *testing.T) {
	tp := NewTopic[int]()
	m := model{}
	for d := range 40 {
		for _, p := range []string{"x.y", "x.*", "#", "x.#", "*.y"} {
			if d%3 == 0 && p == "#" {
				continue
			}
			tp.Add(p, d)
			m[binding[int]{p, d}] = true
		}
	}
	check := func() {
		t.Helper()
		for _, k := range []string{"x.y", "x", "y", "", "x.y.z"} {
			if got, want := matchAll(t, tp, k), m.route(k); !slices.Equal(got, want) {
				t.Fatalf("key %q: got %v want %v", k, got, want)
			}
		}
	}
	check()
	for d := 0; d < 40; d += 2 {
		tp.Remove("x.y", d)
		tp.Remove("#", d)
		delete(m, binding[int]{"x.y", d})
		delete(m, binding[int]{"#", d})
	}
	check()
}

// TestTopicStateBlowup guards against exponential backtracking: many "#"
// words in a pattern must not make a long key expensive.
func TestTopicStateBlowup(t *testing.T) {
	tp := NewTopic[int]()
	p := strings.Repeat("#.a.", 30) + "b"
	tp.Add(p, 1)
	key := strings.Repeat("a.", 200) + "c"
	if got := matchAll(t, tp, key); len(got) != 0 {
		t.Fatalf("got %v", got)
	}
	if got := matchAll(t, tp, strings.Repeat("a.", 200)+"b"); len(got) != 1 {
		t.Fatalf("got %v", got)
	}
}

// alphabet is the word alphabet of the property and fuzz tests.
var alphabet = []string{"a", "b", "", "*", "#"}

func randomPattern(r *rand.Rand, maxWords int) string {
	n := r.IntN(maxWords + 1)
	ws := make([]string, n)
	for i := range ws {
		ws[i] = alphabet[r.IntN(len(alphabet))]
	}
	return strings.Join(ws, ".")
}

// keysUpTo lists every key of at most n words over the key alphabet ("*" and
// "#" included: in keys they are plain words).
func keysUpTo(n int) []string {
	keys := []string{""}
	level := [][]string{{}}
	for range n {
		var next [][]string
		for _, ws := range level {
			for _, w := range alphabet {
				nw := append(slices.Clone(ws), w)
				next = append(next, nw)
				if k := strings.Join(nw, "."); k != "" {
					keys = append(keys, k)
				}
			}
		}
		level = next
	}
	slices.Sort(keys)
	return slices.Compact(keys)
}

func checkAgainstModel(t *testing.T, tp *Topic[int], m model, keys []string) {
	t.Helper()
	if tp.Len() != len(m) {
		t.Fatalf("Len = %d, model has %d", tp.Len(), len(m))
	}
	for _, k := range keys {
		if got, want := matchAll(t, tp, k), m.route(k); !slices.Equal(got, want) {
			t.Fatalf("key %q: trie %v, reference %v; bindings %v", k, got, want, m)
		}
	}
}

func TestTopicProperty(t *testing.T) {
	keys := keysUpTo(4)
	for seed := range uint64(200) {
		r := rand.New(rand.NewPCG(seed, 7))
		tp := NewTopic[int]()
		m := model{}
		for range 60 {
			p, d := randomPattern(r, 5), r.IntN(12)
			k := binding[int]{p, d}
			if r.IntN(3) == 0 && len(m) > 0 {
				// Remove an existing binding (or sometimes a missing one).
				for b := range m {
					k = b
					break
				}
				if r.IntN(4) == 0 {
					k = binding[int]{p, d}
				}
				if got := tp.Remove(k.pattern, k.dest); got != m[k] {
					t.Fatalf("seed %d: Remove(%q,%d) = %v", seed, k.pattern, k.dest, got)
				}
				delete(m, k)
				continue
			}
			if got := tp.Add(p, d); got == m[k] {
				t.Fatalf("seed %d: Add(%q,%d) = %v", seed, p, d, got)
			}
			m[k] = true
		}
		checkAgainstModel(t, tp, m, keys)
		for b := range m {
			tp.Remove(b.pattern, b.dest)
		}
		if !tp.root.empty() {
			t.Fatalf("seed %d: trie not pruned after removing every binding", seed)
		}
	}
}

// FuzzTopicMatch decodes the input as a program of Add and Remove operations
// over patterns of at most 6 words from {a, b, "", *, #} and 5 destinations,
// and checks the trie against the reference matcher for every key of at most
// 3 words, after the whole program and, for the key the program names, after
// every operation.
func FuzzTopicMatch(f *testing.F) {
	f.Add([]byte{0, 2, 0, 4, 1, 2, 4, 0, 3, 5, 3, 3, 1, 2, 4, 0})
	f.Add([]byte{0, 0, 2, 0, 4, 4, 1, 2, 2, 3, 0, 0, 3, 1, 1})
	f.Add([]byte{0, 1, 5, 2, 4, 0, 3, 0, 9, 1, 5, 2, 4, 0})
	keys := keysUpTo(3)
	f.Fuzz(func(t *testing.T, prog []byte) {
		if len(prog) > 512 {
			return
		}
		tp := NewTopic[int]()
		m := model{}
		next := func() int {
			if len(prog) == 0 {
				return 0
			}
			b := prog[0]
			prog = prog[1:]
			return int(b)
		}
		for len(prog) > 0 {
			op, n := next(), next()%7
			ws := make([]string, n)
			for i := range ws {
				ws[i] = alphabet[next()%len(alphabet)]
			}
			p, d := strings.Join(ws, "."), next()%5
			k := binding[int]{p, d}
			if op%3 == 2 {
				if got := tp.Remove(p, d); got != m[k] {
					t.Fatalf("Remove(%q,%d) = %v, model %v", p, d, got, m[k])
				}
				delete(m, k)
			} else {
				if got := tp.Add(p, d); got == m[k] {
					t.Fatalf("Add(%q,%d) = %v, model %v", p, d, got, m[k])
				}
				m[k] = true
			}
			key := keys[op%len(keys)]
			if got, want := matchAll(t, tp, key), m.route(key); !slices.Equal(got, want) {
				t.Fatalf("key %q: trie %v, reference %v; bindings %v", key, got, want, m)
			}
		}
		checkAgainstModel(t, tp, m, keys)
	})
}

// TestTopicConcurrent runs matchers against writers; run it with -race. A
// stable binding must be seen by every Match, whatever the writers do.
func TestTopicConcurrent(t *testing.T) {
	tp := NewTopic[int]()
	tp.Add("s.#", -1)
	var stop atomic.Bool
	var writers, matchers sync.WaitGroup
	for w := range 4 {
		writers.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for i := 0; !stop.Load(); i++ {
				p := fmt.Sprintf("s.%s.%d", []string{"*", "#", "x"}[r.IntN(3)], r.IntN(8))
				d := r.IntN(16)
				if r.IntN(2) == 0 {
					tp.Add(p, d)
				} else {
					tp.Remove(p, d)
				}
				if i%64 == 0 {
					tp.Add(p, 100) // fn below removes these again
				}
			}
		})
	}
	for range 4 {
		matchers.Go(func() {
			for range 20000 {
				seen := false
				tp.Match("s.x.3", func(d int) {
					if d == -1 {
						seen = true
					}
					if d == 100 {
						tp.Remove("s.x.3", 100) // fn may write to the Topic
					}
				})
				if !seen {
					t.Error("stable binding s.# not matched")
					return
				}
			}
		})
	}
	matchers.Wait()
	stop.Store(true)
	writers.Wait()
	if tp.Len() < 1 {
		t.Fatal("stable binding lost")
	}
}
