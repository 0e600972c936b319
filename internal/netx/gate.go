package netx

import "sync"

// Gate is the publish side of flow control: while it is shut (a memory or
// disk alarm), readers of publishing connections park in Wait instead of
// reading more from their sockets; Open releases them all. The zero Gate
// is open.
type Gate struct {
	mu     sync.Mutex
	shut   chan struct{} // non-nil while shut; closed by Open
	reason string
}

// Set shuts (blocked) or opens the gate and reports whether that changed
// anything.
func (g *Gate) Set(blocked bool, reason string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case blocked && g.shut == nil:
		g.shut, g.reason = make(chan struct{}), reason
		return true
	case !blocked && g.shut != nil:
		close(g.shut)
		g.shut, g.reason = nil, ""
		return true
	}
	return false
}

// State reports whether the gate is shut, and why.
func (g *Gate) State() (bool, string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.shut != nil, g.reason
}

// Wait returns at once while the gate is open; while it is shut it parks
// until it opens (true) or stop is closed (false).
func (g *Gate) Wait(stop <-chan struct{}) bool {
	g.mu.Lock()
	ch := g.shut
	g.mu.Unlock()
	if ch == nil {
		return true
	}
	select {
	case <-ch:
		return true
	case <-stop:
		return false
	}
}
