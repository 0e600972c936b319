package netx

import (
	"log/slog"
	"net"
	"sync"
	"time"
)

// RateLimitListener wraps ln so that each source address may open at most
// rate connections per second (bursts up to twice that, at least 1);
// connections above it are closed as soon as they are accepted, before a
// byte is read, and logged at most once a minute per address. rate <= 0
// returns ln unchanged.
func RateLimitListener(ln net.Listener, rate float64, log *slog.Logger) net.Listener {
	if rate <= 0 {
		return ln
	}
	return &rateListener{Listener: ln, rate: rate, burst: max(1, 2*rate), log: log, m: map[string]*bucket{}}
}

type bucket struct {
	tokens float64
	last   time.Time
	warned time.Time
}

type rateListener struct {
	net.Listener
	rate, burst float64
	log         *slog.Logger
	mu          sync.Mutex
	m           map[string]*bucket
}

func (l *rateListener) Accept() (net.Conn, error) {
	for {
		nc, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.allow(nc.RemoteAddr()) {
			return nc, nil
		}
		_ = nc.Close()
	}
}

func (l *rateListener) allow(a net.Addr) bool {
	host := a.String()
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.m) > 10000 { // forget addresses whose bucket has refilled
		for h, b := range l.m {
			if now.Sub(b.last).Seconds()*l.rate >= l.burst {
				delete(l.m, h)
			}
		}
	}
	b := l.m[host]
	if b == nil {
		b = &bucket{tokens: l.burst, last: now}
		l.m[host] = b
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return true
	}
	if now.Sub(b.warned) >= time.Minute {
		b.warned = now
		l.log.Warn("connection rate limit reached; closing new connections from this address", "remote", host,
			"per_second", l.rate, "listener", l.Addr().String())
	}
	return false
}
