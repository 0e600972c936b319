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

// LoopbackOnly reports whether user may not connect from remote: the user
// is one of loopbackUsers (RabbitMQ's loopback_users, ["guest"] by
// default) and remote is not a loopback address.
func LoopbackOnly(loopbackUsers []string, user, remote string) bool {
	return slices.Contains(loopbackUsers, user) && !IsLoopback(remote)
}
