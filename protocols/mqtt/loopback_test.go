package mqtt

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

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
	s.startMochi()
	connect := func(user, pass string) (*paho.Client, *paho.Connack, error) {
		cli, srv := net.Pipe()
		go s.serveConn(remoteConn{srv}, "tcp")
		c := paho.NewClient(paho.ClientConfig{Conn: cli})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ca, err := c.Connect(ctx, &paho.Connect{ClientID: "c-" + user, CleanStart: true, KeepAlive: 30,
			Username: user, UsernameFlag: true, Password: []byte(pass), PasswordFlag: true})
		return c, ca, err
	}
	if _, ca, err := connect("guest", "guest"); err == nil || ca == nil || ca.ReasonCode != 0x86 {
		t.Fatalf("guest from 10.0.0.1: %v %+v, want CONNACK 0x86", err, ca)
	}
	c, ca, err := connect("alice", "pw")
	if err != nil || ca.ReasonCode != 0 {
		t.Fatalf("alice from 10.0.0.1: %v %+v", err, ca)
	}
	_ = c.Disconnect(&paho.Disconnect{})
}
