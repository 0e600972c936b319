package alarm

import (
	"sync"
	"testing"
	"time"
)

var sink [][]byte // memory held on purpose

func TestMemoryAlarmSetsAndClears(t *testing.T) {
	base := memoryUsed()
	var mu sync.Mutex
	var events []bool
	m := Start(Options{MemoryLimit: base + 64<<20, Interval: 10 * time.Millisecond, OnChange: func(mem, _ bool) {
		mu.Lock()
		events = append(events, mem)
		mu.Unlock()
	}})
	defer m.Stop()
	for i := 0; i < 128; i++ {
		b := make([]byte, 1<<20)
		for j := range b {
			b[j] = byte(j)
		}
		sink = append(sink, b)
	}
	waitFor(t, func() bool { mem, _ := m.Alarms(); return mem })
	sink = nil
	waitFor(t, func() bool { mem, _ := m.Alarms(); return !mem })
	// OnChange runs after the state changes: wait for the clearing event
	// too (CI once read the events in between).
	waitFor(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(events) >= 2 && !events[len(events)-1]
	})
	mu.Lock()
	defer mu.Unlock()
	if !events[0] {
		t.Fatalf("events %v", events)
	}
}

func TestDiskAlarm(t *testing.T) {
	free := diskFree(t.TempDir())
	if free <= 0 {
		t.Skip("statfs unavailable")
	}
	m := Start(Options{DiskFreeLimit: free * 4, Dir: t.TempDir(), Interval: 10 * time.Millisecond})
	defer m.Stop()
	if _, disk := m.Alarms(); !disk {
		t.Fatalf("disk alarm not set with free %d below limit %d", m.Free(), free*4)
	}
	m2 := Start(Options{DiskFreeLimit: 1, Dir: t.TempDir()})
	defer m2.Stop()
	if _, disk := m2.Alarms(); disk {
		t.Fatal("disk alarm set with plenty of space")
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("condition not reached")
}
