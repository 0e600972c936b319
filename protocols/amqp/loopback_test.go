package amqp

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/bourse-mq/bourse/router"
)

// remoteConn reports a non-loopback peer, so that loopback_users can be
// tested without leaving loopback.
type remoteConn struct{ net.Conn }

func (remoteConn) RemoteAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 40000} }

func TestGuestOnlyFromLoopback(t *testing.T) {
	s := New(router.New(router.Options{}), Options{
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Users:  map[string]string{"guest": "guest", "alice": "pw"},
	})
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
	}()
	dial := func(user, pass string) (*amqp091.Connection, error) {
		return amqp091.DialConfig("amqp://"+user+":"+pass+"@10.0.0.1/", amqp091.Config{
			Dial: func(string, string) (net.Conn, error) {
				cli, srv := net.Pipe()
				go s.ServeConn(remoteConn{srv})
				return cli, nil
			},
		})
	}
	_, err := dial("guest", "guest")
	var ae *amqp091.Error
	if !errors.As(err, &ae) || ae.Code != amqp091.AccessRefused {
		t.Fatalf("guest from 10.0.0.1: %v, want 403 ACCESS_REFUSED", err)
	}
	c, err := dial("alice", "pw")
	if err != nil {
		t.Fatalf("alice from 10.0.0.1: %v", err)
	}
	c.Close()
}
