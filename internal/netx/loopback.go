package netx

import (
	"net"
	"slices"
)

// IsLoopback reports whether addr ("host:port", or a bare IP) is a
// loopback address (127.0.0.0/8 or ::1).
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// IsLocal reports whether a peer at a is on this machine: a loopback IP,
// or a transport that never leaves the host (an in-process pipe, a unix
// socket).
func IsLocal(a net.Addr) bool {
	if a == nil {
		return false
	}
	switch a.Network() {
	case "pipe", "unix", "unixpacket", "unixgram":
		return true
	}
	return IsLoopback(a.String())
}

// LoopbackOnly reports whether user may not connect from remote: the user
// is one of loopbackUsers (RabbitMQ's loopback_users, ["guest"] by
// default) and remote is not local.
func LoopbackOnly(loopbackUsers []string, user string, remote net.Addr) bool {
	return slices.Contains(loopbackUsers, user) && !IsLocal(remote)
}

// TCPAddrString is a TCP peer known only by its "host:port" text (as an
// http.Request's RemoteAddr).
type TCPAddrString string

// Network returns "tcp".
func (TCPAddrString) Network() string { return "tcp" }

func (a TCPAddrString) String() string { return string(a) }
