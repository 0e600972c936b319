package stomp

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	gostomp "github.com/go-stomp/stomp/v3"

	"github.com/bourse-mq/bourse/router"
)

type remoteConn struct{ net.Conn }

func (remoteConn) RemoteAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 40000} }

func TestGuestOnlyFromLoopback(t *testing.T) {
	s := New(router.New(router.Options{}), Options{Logger: testLogger(), Users: map[string]string{"guest": "guest", "alice": "pw"}})
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
	}()
	connect := func(user, pass string) (*gostomp.Conn, error) {
		cli, srv := net.Pipe()
		c, ok := s.adopt(newTCPTransport(remoteConn{srv}))
		if !ok {
			t.Fatal("connection refused by adopt")
		}
		go func() {
			defer s.wg.Done()
			c.serve()
		}()
		return gostomp.Connect(cli, gostomp.ConnOpt.Login(user, pass), gostomp.ConnOpt.Host("/"), gostomp.ConnOpt.HeartBeat(0, 0))
	}
	if _, err := connect("guest", "guest"); err == nil || !strings.Contains(err.Error(), "Access refused") {
		t.Fatalf("guest from 10.0.0.1: %v, want an Access refused ERROR", err)
	}
	c, err := connect("alice", "pw")
	if err != nil {
		t.Fatalf("alice from 10.0.0.1: %v", err)
	}
	_ = c.Disconnect()
}
