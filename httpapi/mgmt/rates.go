package mgmt

import (
	"sync"
	"time"
)

// Message rates, as RabbitMQ's API reports them ("publish_details":
// {"rate": …}): each counter's change per second between the current value
// and the newest sample at least a second old. Samples are taken when the
// API is asked (at most one per 2 s per object, four kept), so there is no
// background work; a client polling every few seconds (the console) sees
// the rate over its polling interval, one polling rarely sees the average
// since its previous poll.

const (
	nCounters      = 4 // publish, deliver_get, ack, redeliver
	sampleEvery    = 2 * time.Second
	minRateWindow  = time.Second
	keepSamples    = 4
	forgetUnusedIn = 10 * time.Minute
)

var counterNames = [nCounters]string{"publish", "deliver_get", "ack", "redeliver"}

type sample struct {
	t time.Time
	c [nCounters]uint64
}

type series struct {
	samples []sample
	used    time.Time
}

type rateSampler struct {
	mu   sync.Mutex
	m    map[string]*series
	last time.Time // of the last sweep of unused series
}

// rates returns the per-second rates of cur for the object key, and
// records cur as a sample when the last one is old enough.
func (r *rateSampler) rates(key string, now time.Time, cur [nCounters]uint64) [nCounters]float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = map[string]*series{}
	}
	if now.Sub(r.last) > forgetUnusedIn {
		for k, s := range r.m {
			if now.Sub(s.used) > forgetUnusedIn {
				delete(r.m, k) // a deleted queue's series
			}
		}
		r.last = now
	}
	s := r.m[key]
	if s == nil {
		s = &series{}
		r.m[key] = s
	}
	s.used = now
	var out [nCounters]float64
	for i := len(s.samples) - 1; i >= 0; i-- {
		ref := s.samples[i]
		dt := now.Sub(ref.t)
		if dt < minRateWindow {
			continue
		}
		for j := range cur {
			if cur[j] >= ref.c[j] {
				out[j] = float64(cur[j]-ref.c[j]) / dt.Seconds()
			}
		}
		break
	}
	if n := len(s.samples); n == 0 || now.Sub(s.samples[n-1].t) >= sampleEvery {
		s.samples = append(s.samples, sample{now, cur})
		if len(s.samples) > keepSamples {
			s.samples = s.samples[1:]
		}
	}
	return out
}

// messageStats is RabbitMQ's message_stats object: counters and their
// "_details" rates.
func (r *rateSampler) messageStats(key string, cur [nCounters]uint64) map[string]any {
	rates := r.rates(key, time.Now(), cur)
	m := map[string]any{}
	for i, name := range counterNames {
		m[name] = cur[i]
		m[name+"_details"] = map[string]float64{"rate": rates[i]}
	}
	return m
}
