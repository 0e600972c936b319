package match

import (
	"strings"
	"sync"
)

// smallSet is the size up to which the sets used while matching (active trie
// states, matched destinations) and the destination list of a trie node are
// searched linearly; beyond it they are backed by a map.
const smallSet = 8

// maxPooledScratch bounds the capacity of the scratch sets a Topic keeps for
// reuse, so that one match of a huge fan-out does not pin its memory forever.
const maxPooledScratch = 4096

// Topic is a set of (pattern, destination) bindings matched with RabbitMQ
// topic-exchange semantics (see the package documentation). The zero value is
// not usable; call NewTopic.
//
// # Concurrency
//
// Topic is safe for concurrent use: any number of Match calls run in parallel
// with each other, and Add and Remove may be called from other goroutines at
// the same time. It is guarded by a sync.RWMutex rather than copy-on-write:
//
//   - Add and Remove change the trie in place in O(words in the pattern), so a
//     writer holds the lock for about a microsecond and routing is never held
//     up for long; sync.RWMutex also keeps a stream of Match calls from
//     starving a writer.
//   - Copy-on-write would make every Add copy the path from the root,
//     including the word maps of wide nodes ("sensor.<site>" with thousands of
//     sites), so loading n bindings at start would cost O(n × fan-out) time and
//     garbage instead of O(n).
//
// Match holds the read lock only while it walks the trie: it collects the
// destinations into pooled scratch space and calls fn after releasing the
// lock, so fn may itself call Add or Remove on the same Topic.
type Topic[D comparable] struct {
	mu       sync.RWMutex
	root     *node[D]
	bindings map[binding[D]]struct{}
	scratch  sync.Pool // of *scratch[D]
}

type binding[D comparable] struct {
	pattern string
	dest    D
}

// node is a trie node. The edge into a node is a pattern word; patterns are
// normalised so that no "#" edge leads out of a node entered by a "#" edge.
type node[D comparable] struct {
	words map[string]*node[D] // literal words, "" included
	star  *node[D]            // "*": exactly one word
	hash  *node[D]            // "#": zero or more words
	// loop marks a node entered by a "#" edge: it may consume any number
	// of further words and stay where it is.
	loop bool

	// dests are the distinct destinations of the patterns ending here, and
	// refs[i] counts the bindings (patterns that normalise to this node's
	// path) holding dests[i]. index maps a destination to its position once
	// there are more than smallSet of them.
	dests []D
	refs  []int32
	index map[D]int
}

// NewTopic returns an empty Topic.
func NewTopic[D comparable]() *Topic[D] {
	return &Topic[D]{root: &node[D]{}, bindings: map[binding[D]]struct{}{}}
}

// Add binds pattern to d. It reports false, and changes nothing, when that
// exact (pattern, destination) binding exists already.
func (t *Topic[D]) Add(pattern string, d D) (added bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := binding[D]{pattern, d}
	if _, ok := t.bindings[k]; ok {
		return false
	}
	t.bindings[k] = struct{}{}
	n := t.root
	for w := range patternWords(pattern) {
		n = n.child(w)
	}
	n.addDest(d)
	return true
}

// Remove deletes the binding of pattern to d. It reports false when there is
// no such binding. Trie nodes left without bindings or children are freed.
func (t *Topic[D]) Remove(pattern string, d D) (removed bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := binding[D]{pattern, d}
	if _, ok := t.bindings[k]; !ok {
		return false
	}
	delete(t.bindings, k)

	type step struct {
		parent *node[D]
		word   string
	}
	var pathBuf [16]step
	path := pathBuf[:0]
	n := t.root
	for w := range patternWords(pattern) {
		path = append(path, step{n, w})
		n = n.edge(w)
	}
	n.removeDest(d)
	for i := len(path) - 1; i >= 0 && n.empty(); i-- {
		path[i].parent.unlink(path[i].word)
		n = path[i].parent
	}
	return true
}

// Len returns the number of bindings.
func (t *Topic[D]) Len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.bindings)
}

// Match calls fn once for every distinct destination bound by a pattern that
// matches routingKey. The order of the calls is unspecified. fn runs after the
// Topic's lock is released: it sees the bindings as they were when the trie
// was walked, and it may call Add or Remove.
//
// The walk visits only trie nodes that match a prefix of the key, so its cost
// does not depend on the number of bindings that cannot match, and it makes
// no allocation in the steady state.
func (t *Topic[D]) Match(routingKey string, fn func(D)) {
	s, _ := t.scratch.Get().(*scratch[D])
	if s == nil {
		s = &scratch[D]{}
	}
	t.mu.RLock()
	s.walk(t.root, routingKey)
	t.mu.RUnlock()
	for _, d := range s.out.list {
		fn(d)
	}
	if s.reset() {
		t.scratch.Put(s)
	}
}

// scratch is the per-Match working memory, pooled by each Topic.
type scratch[D comparable] struct {
	cur, next set[*node[D]]
	out       set[D]
}

// walk runs the trie as a nondeterministic automaton over the words of key:
// cur holds the set of nodes reached by the words consumed so far (closed
// under "#" edges, which match zero words). A node entered by "#" stays in the
// set on every word; the "*" edge and the edge named by the word advance. The
// sets are deduplicated, so the cost is O(words × reachable nodes) even for
// patterns with many "#" words, where a backtracking walk is exponential.
// At the end, the destinations of the nodes in cur are collected into out.
func (s *scratch[D]) walk(root *node[D], key string) {
	addState(&s.cur, root)
	if key != "" {
		for i := 0; ; {
			j := strings.IndexByte(key[i:], '.')
			w := key[i:]
			if j >= 0 {
				w = key[i : i+j]
			}
			s.step(w)
			if j < 0 || len(s.cur.list) == 0 {
				break
			}
			i += j + 1
		}
	}
	for _, n := range s.cur.list {
		for _, d := range n.dests {
			s.out.add(d)
		}
	}
}

// step advances the state set by one key word.
func (s *scratch[D]) step(w string) {
	s.next.clear()
	for _, n := range s.cur.list {
		if n.loop {
			addState(&s.next, n)
		}
		if n.words != nil {
			if c := n.words[w]; c != nil {
				addState(&s.next, c)
			}
		}
		if n.star != nil {
			addState(&s.next, n.star)
		}
	}
	s.cur, s.next = s.next, s.cur
}

// reset clears s for reuse and reports whether it is small enough to pool.
func (s *scratch[D]) reset() bool {
	s.cur.clear()
	s.next.clear()
	s.out.clear()
	return cap(s.cur.list) <= maxPooledScratch && cap(s.next.list) <= maxPooledScratch &&
		cap(s.out.list) <= maxPooledScratch
}

// addState adds n to the state set s together with the nodes reachable from
// it by "#" edges, which match zero words. A node already in s has had its
// closure added with it.
func addState[D comparable](s *set[*node[D]], n *node[D]) {
	for n != nil && s.add(n) {
		n = n.hash
	}
}

// patternWords yields the words of a binding pattern with every run of
// consecutive "#" words reduced to one. The empty pattern has no words.
func patternWords(pattern string) func(yield func(string) bool) {
	return func(yield func(string) bool) {
		if pattern == "" {
			return
		}
		prevHash := false
		for w := range strings.SplitSeq(pattern, ".") {
			if w == "#" && prevHash {
				continue
			}
			prevHash = w == "#"
			if !yield(w) {
				return
			}
		}
	}
}

// edge returns the child of n along pattern word w, or nil.
func (n *node[D]) edge(w string) *node[D] {
	switch w {
	case "*":
		return n.star
	case "#":
		return n.hash
	}
	return n.words[w]
}

// child returns the child of n along pattern word w, creating it if needed.
func (n *node[D]) child(w string) *node[D] {
	if c := n.edge(w); c != nil {
		return c
	}
	c := &node[D]{}
	switch w {
	case "*":
		n.star = c
	case "#":
		c.loop = true
		n.hash = c
	default:
		if n.words == nil {
			n.words = map[string]*node[D]{}
		}
		n.words[w] = c
	}
	return c
}

// unlink removes the edge along pattern word w.
func (n *node[D]) unlink(w string) {
	switch w {
	case "*":
		n.star = nil
	case "#":
		n.hash = nil
	default:
		delete(n.words, w)
		if len(n.words) == 0 {
			n.words = nil
		}
	}
}

// empty reports whether n holds no binding and has no children.
func (n *node[D]) empty() bool {
	return len(n.dests) == 0 && len(n.words) == 0 && n.star == nil && n.hash == nil
}

func (n *node[D]) find(d D) (int, bool) {
	if n.index != nil {
		i, ok := n.index[d]
		return i, ok
	}
	for i, x := range n.dests {
		if x == d {
			return i, true
		}
	}
	return -1, false
}

// addDest counts one more binding of d at n.
func (n *node[D]) addDest(d D) {
	if i, ok := n.find(d); ok {
		n.refs[i]++
		return
	}
	n.dests = append(n.dests, d)
	n.refs = append(n.refs, 1)
	switch {
	case n.index != nil:
		n.index[d] = len(n.dests) - 1
	case len(n.dests) > smallSet:
		n.index = make(map[D]int, 2*len(n.dests))
		for i, x := range n.dests {
			n.index[x] = i
		}
	}
}

// removeDest counts one binding of d at n fewer, and drops d from n when
// none is left.
func (n *node[D]) removeDest(d D) {
	i, ok := n.find(d)
	if !ok {
		return
	}
	if n.refs[i]--; n.refs[i] > 0 {
		return
	}
	last := len(n.dests) - 1
	if i != last {
		n.dests[i], n.refs[i] = n.dests[last], n.refs[last]
		if n.index != nil {
			n.index[n.dests[i]] = i
		}
	}
	var zero D
	n.dests[last] = zero
	n.dests, n.refs = n.dests[:last], n.refs[:last]
	if n.index != nil {
		delete(n.index, d)
		if len(n.dests) <= smallSet {
			n.index = nil
		}
	}
}

// set is a small insertion-ordered set: linear search up to smallSet
// elements, a map beside the list beyond that. Its memory is kept by clear.
type set[T comparable] struct {
	list []T
	m    map[T]struct{}
}

// add inserts v and reports whether it was absent.
func (s *set[T]) add(v T) bool {
	if len(s.list) <= smallSet {
		for _, x := range s.list {
			if x == v {
				return false
			}
		}
		s.list = append(s.list, v)
		if len(s.list) > smallSet {
			if s.m == nil {
				s.m = make(map[T]struct{}, 4*smallSet)
			}
			for _, x := range s.list {
				s.m[x] = struct{}{}
			}
		}
		return true
	}
	if _, ok := s.m[v]; ok {
		return false
	}
	s.m[v] = struct{}{}
	s.list = append(s.list, v)
	return true
}

// clear empties s, keeping its memory; it zeroes the elements so that a
// pooled set does not keep removed nodes or destinations alive.
func (s *set[T]) clear() {
	if len(s.list) > smallSet {
		clear(s.m)
	}
	clear(s.list)
	s.list = s.list[:0]
}
