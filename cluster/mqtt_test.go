package cluster_test

import (
	"sync"
	"testing"
	"time"

	"github.com/bourse-mq/bourse/cluster"
)

// TestMQTTClaimsAndRecords drives the MQTT state of three nodes without
// the adapter: a claim takes a session from the node holding it only
// after that node has let it go; a released key is claimed afresh; a node
// holds only what it claimed last; records written on one node are read
// and watched on the others, deletes included.
func TestMQTTClaimsAndRecords(t *testing.T) {
	c := newTestCluster(t, 3)
	var mu sync.Mutex
	var handed []string // "node:key", in order
	for i, n := range c.nodes {
		n.MQTT().OnTakeover(func(key string) {
			time.Sleep(100 * time.Millisecond) // letting go takes a while
			mu.Lock()
			handed = append(handed, string(rune('0'+i))+":"+key)
			mu.Unlock()
		})
	}
	handedOff := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), handed...)
	}
	m0, m1, m2 := c.nodes[0].MQTT(), c.nodes[1].MQTT(), c.nodes[2].MQTT()

	t0, moved, err := m0.Claim("/\x00dev")
	if err != nil || moved || t0 == 0 {
		t.Fatalf("first claim: token %d moved %v err %v", t0, moved, err)
	}
	if tok, ok := m0.Held("/\x00dev"); !ok || tok != t0 {
		t.Fatalf("node 0 Held = %d, %v; want %d, true", tok, ok, t0)
	}
	t1, moved, err := m1.Claim("/\x00dev")
	if err != nil || !moved || t1 <= t0 {
		t.Fatalf("claim on node 1: token %d moved %v err %v", t1, moved, err)
	}
	// Node 0 let go before node 1's claim returned, and only node 0 did.
	if got := handedOff(); len(got) != 1 || got[0] != "0:/\x00dev" {
		t.Fatalf("handed off when the claim returned: %q", got)
	}
	if _, ok := m0.Held("/\x00dev"); ok {
		t.Fatal("node 0 still holds a session node 1 took")
	}
	if tok, ok := m1.Held("/\x00dev"); !ok || tok != t1 {
		t.Fatalf("node 1 Held = %d, %v; want %d, true", tok, ok, t1)
	}

	// A stale release changes nothing; node 1's release frees the key, and
	// node 2 claims it without asking anyone.
	m0.Release("/\x00dev", t0)
	if _, ok := m1.Held("/\x00dev"); !ok {
		t.Fatal("a stale release from node 0 dropped node 1's claim")
	}
	m1.Release("/\x00dev", t1)
	if _, ok := m1.Held("/\x00dev"); ok {
		t.Fatal("node 1 holds a key it released")
	}
	t2, moved, err := m2.Claim("/\x00dev")
	if err != nil || moved || t2 <= t1 {
		t.Fatalf("claim of a released key: token %d moved %v err %v", t2, moved, err)
	}
	if got := handedOff(); len(got) != 1 {
		t.Fatalf("a claim of a released key handed off: %q", got)
	}

	// Records: written on node 0, read on node 2, watched on node 1.
	if err := m0.UpdateRecords("mqtt_sessions", map[string][]byte{"/\x00dev": []byte(`{"k":1}`)}, nil); err != nil {
		t.Fatal(err)
	}
	if v, err := m2.GetRecord("mqtt_sessions", "/\x00dev"); err != nil || string(v) != `{"k":1}` {
		t.Fatalf("GetRecord on node 2: %q, %v", v, err)
	}
	if v, err := m2.GetRecord("mqtt_sessions", "/\x00nobody"); err != nil || v != nil {
		t.Fatalf("GetRecord of a missing key: %q, %v", v, err)
	}
	if err := m0.UpdateRecords("mqtt_retained", map[string][]byte{"/\x00a/b": []byte("1")}, nil); err != nil {
		t.Fatal(err)
	}
	seen := make(chan [2]string, 10)
	if err := m1.WatchRecords("mqtt_retained", func(k string, v []byte) {
		s := string(v)
		if v == nil {
			s = "<deleted>"
		}
		seen <- [2]string{k, s}
	}); err != nil {
		t.Fatal(err)
	}
	expect := func(want [2]string) {
		t.Helper()
		select {
		case got := <-seen:
			if got != want {
				t.Fatalf("watched %q, want %q", got, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%q not watched", want)
		}
	}
	expect([2]string{"/\x00a/b", "1"}) // present at the start
	if err := m2.UpdateRecords("mqtt_retained", map[string][]byte{"/\x00a/c": []byte("2")}, []string{"/\x00a/b"}); err != nil {
		t.Fatal(err)
	}
	expect([2]string{"/\x00a/c", "2"})
	expect([2]string{"/\x00a/b", "<deleted>"})
	var keys []string
	if err := m2.ForEachRecord("mqtt_retained", func(k string, _ []byte) error {
		keys = append(keys, k)
		return nil
	}); err != nil || len(keys) != 1 || keys[0] != "/\x00a/c" {
		t.Fatalf("ForEachRecord: %q, %v", keys, err)
	}
}

// TestMQTTClaimOrphan: a session is claimed as an orphan only from the
// node named as its holder, and when two nodes claim one orphan at once,
// exactly one gets it, without asking anyone to let go.
func TestMQTTClaimOrphan(t *testing.T) {
	c := newTestCluster(t, 3)
	var mu sync.Mutex
	handed := 0
	for _, n := range c.nodes {
		n.MQTT().OnTakeover(func(string) {
			mu.Lock()
			handed++
			mu.Unlock()
		})
	}
	m0, m1, m2 := c.nodes[0].MQTT(), c.nodes[1].MQTT(), c.nodes[2].MQTT()
	const key = "/\x00orphan"
	if _, _, err := m0.Claim(key); err != nil {
		t.Fatal(err)
	}
	if _, ok := m1.ClaimOrphan(key, "n2"); ok {
		t.Fatal("claimed from a node that does not hold it")
	}
	if _, ok := m1.ClaimOrphan("/\x00nobody", "n0"); ok {
		t.Fatal("claimed a session nobody holds")
	}
	var wg sync.WaitGroup
	toks := make([]uint64, 2)
	for i, m := range []*cluster.MQTT{m1, m2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			toks[i], _ = m.ClaimOrphan(key, "n0")
		}()
	}
	wg.Wait()
	if (toks[0] == 0) == (toks[1] == 0) {
		t.Fatalf("claim tokens %v: want exactly one claim", toks)
	}
	winner := m1
	if toks[0] == 0 {
		winner = m2
	}
	if tok, ok := winner.Held(key); !ok || tok != max(toks[0], toks[1]) {
		t.Fatalf("the winner holds it: %d, %v", tok, ok)
	}
	if _, ok := m0.Held(key); ok {
		t.Fatal("the old holder still holds it")
	}
	mu.Lock()
	defer mu.Unlock()
	if handed != 0 {
		t.Fatalf("%d nodes asked to let go of an orphan", handed)
	}
}
