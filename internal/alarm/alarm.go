// Package alarm watches the broker's memory and the data directory's free
// disk space against their limits and reports when an alarm sets or
// clears, so that publishers can be blocked (flow control) before the
// process runs out of either.
package alarm

import (
	"bufio"
	"log/slog"
	"math"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Options configure a Monitor.
type Options struct {
	// MemoryLimit is the memory high watermark in bytes (0: no memory
	// alarm). Memory is what the Go runtime holds from the OS (heap,
	// stacks, runtime structures), which tracks the process's RSS.
	MemoryLimit int64
	// DiskFreeLimit sets the disk alarm when the file system of Dir has
	// fewer free bytes (0: no disk alarm).
	DiskFreeLimit int64
	Dir           string
	// Interval between samples [100ms].
	Interval time.Duration
	// OnChange is called (from the monitor's goroutine) when the memory or
	// disk alarm sets or clears.
	OnChange func(memory, disk bool)
	Logger   *slog.Logger
}

// Monitor samples memory and disk.
type Monitor struct {
	o          Options
	memory     atomic.Bool
	disk       atomic.Bool
	used, free atomic.Int64
	memLimit   atomic.Int64
	diskLimit  atomic.Int64
	stop       chan struct{}
	done       chan struct{}
	once       sync.Once
}

// TotalMemory returns the machine's memory in bytes (from /proc/meminfo),
// or 0 when unknown.
func TotalMemory() int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// Start begins sampling. With a memory limit it also sets the Go runtime's
// soft memory limit a little below it, so that the collector works harder
// (and returns memory to the OS) before the alarm has to block anyone.
func Start(o Options) *Monitor {
	if o.Interval <= 0 {
		o.Interval = 100 * time.Millisecond
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.MemoryLimit > 0 {
		debug.SetMemoryLimit(o.MemoryLimit * 85 / 100)
	}
	m := &Monitor{o: o, stop: make(chan struct{}), done: make(chan struct{})}
	m.memLimit.Store(o.MemoryLimit)
	m.diskLimit.Store(o.DiskFreeLimit)
	m.sample()
	go m.run()
	return m
}

// Stop ends sampling.
func (m *Monitor) Stop() {
	m.once.Do(func() { close(m.stop) })
	<-m.done
}

// Alarms reports the alarms in force.
func (m *Monitor) Alarms() (memory, disk bool) { return m.memory.Load(), m.disk.Load() }

// Used returns the memory in use at the last sample; Free the free disk bytes.
func (m *Monitor) Used() int64 { return m.used.Load() }

// Free returns the data directory's free disk bytes at the last sample.
func (m *Monitor) Free() int64 { return m.free.Load() }

// Limits returns the limits in force.
func (m *Monitor) Limits() (memory, diskFree int64) { return m.memLimit.Load(), m.diskLimit.Load() }

// SetLimits changes the limits (configuration reload); the next sample
// applies them.
func (m *Monitor) SetLimits(memory, diskFree int64) {
	m.memLimit.Store(memory)
	m.diskLimit.Store(diskFree)
	if memory > 0 {
		debug.SetMemoryLimit(memory * 85 / 100)
	} else {
		debug.SetMemoryLimit(math.MaxInt64)
	}
}

func (m *Monitor) run() {
	defer close(m.done)
	t := time.NewTicker(m.o.Interval)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
			m.sample()
		}
	}
}

var samples = []metrics.Sample{{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"}}

// memoryUsed is what the runtime holds from the OS and has not released.
func memoryUsed() int64 {
	s := make([]metrics.Sample, len(samples))
	copy(s, samples)
	metrics.Read(s)
	return int64(s[0].Value.Uint64() - s[1].Value.Uint64())
}

func diskFree(dir string) int64 {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return -1
	}
	return int64(st.Bavail) * int64(st.Bsize)
}

func (m *Monitor) sample() {
	changed := false
	memLimit, diskLimit := m.Limits()
	used := memoryUsed()
	m.used.Store(used)
	if on := m.memory.Load(); memLimit > 0 || on {
		// Clear a little below the watermark, so the alarm does not flap
		// (and at once when the limit is lifted).
		if !on && used > memLimit || on && (memLimit <= 0 || used < memLimit*95/100) {
			m.memory.Store(!on)
			changed = true
			m.o.Logger.Warn("memory alarm", "set", !on, "used_bytes", used, "limit_bytes", memLimit)
			if !on {
				debug.FreeOSMemory() // give back what a collection can, at once
			}
		}
	}
	if on := m.disk.Load(); (diskLimit > 0 || on) && m.o.Dir != "" {
		free := diskFree(m.o.Dir)
		m.free.Store(free)
		if free >= 0 && (!on && free < diskLimit || on && free > diskLimit) {
			m.disk.Store(!on)
			changed = true
			m.o.Logger.Warn("disk alarm", "set", !on, "free_bytes", free, "limit_bytes", diskLimit)
		}
	}
	if changed && m.o.OnChange != nil {
		m.o.OnChange(m.memory.Load(), m.disk.Load())
	}
}
