package netx

import (
	"crypto/tls"
	"net"
	"sync/atomic"
)

// CountingListener wraps ln so that every accepted connection counts the
// bytes read from and written to it (for the management API's
// recv_oct/send_oct and their rates). Put it beneath a TLS listener: the
// counts are then of the bytes on the wire.
func CountingListener(ln net.Listener) net.Listener { return countingListener{ln} }

type countingListener struct{ net.Listener }

func (l countingListener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: nc}, nil
}

type countingConn struct {
	net.Conn
	in, out atomic.Uint64
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.in.Add(uint64(n))
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.out.Add(uint64(n))
	return n, err
}

// CloseWrite half-closes a TCP connection, as *net.TCPConn does.
func (c *countingConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

// ByteCounts returns the bytes read from and written to a connection
// accepted by a CountingListener (also beneath TLS); ok is false for any
// other connection.
func ByteCounts(nc net.Conn) (in, out uint64, ok bool) {
	if tc, isTLS := nc.(*tls.Conn); isTLS {
		nc = tc.NetConn()
	}
	c, ok := nc.(*countingConn)
	if !ok {
		return 0, 0, false
	}
	return c.in.Load(), c.out.Load(), true
}
