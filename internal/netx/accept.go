// Package netx holds the network plumbing the protocol adapters share.
package netx

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"
)

// AcceptLoop accepts connections on ln and hands each to handle (which must
// not block: start a goroutine), until ln is closed. When Accept fails and
// closing reports true, AcceptLoop returns nil: the server is shutting
// down. Other closed-listener errors are returned. Any other error (out of
// file descriptors and the like) is logged and retried with a backoff from
// 5 ms to 1 s, as net/http does, rather than spinning or giving up.
func AcceptLoop(ln net.Listener, closing func() bool, log *slog.Logger, handle func(net.Conn)) error {
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if closing() {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("accept on %s: %w", ln.Addr(), err)
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			log.Warn("accept failed; retrying", "addr", ln.Addr().String(), "err", err, "delay", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		handle(nc)
	}
}
