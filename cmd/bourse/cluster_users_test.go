package main

import (
	"bytes"
	"errors"
	"net/http"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"
)

// TestClusterUsersAndPermissions: users and permissions are the cluster's.
// A user added over the management API of one node logs in on the others,
// a permission set on a second node applies on the third (to a connection
// already open there), and a user deleted on the third can no longer log in
// anywhere.
func TestClusterUsersAndPermissions(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	nodes, stop := startServeCluster(t)
	defer stop()

	api := func(node int, method, path, body string) {
		t.Helper()
		req, err := http.NewRequest(method, "http://"+nodes[node]["http"]+path, bytes.NewBufferString(body))
		if err != nil {
			t.Fatal(err)
		}
		req.SetBasicAuth("guest", "guest")
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			t.Fatalf("%s %s on node %d: %s", method, path, node, resp.Status)
		}
	}
	dial := func(node int) (*amqp.Connection, error) {
		return amqp.Dial("amqp://alice:s3cret@" + nodes[node]["amqp"] + "/")
	}
	refused := func(err error) bool {
		var ae *amqp.Error
		return errors.As(err, &ae) && ae.Code == amqp.AccessRefused
	}

	// The default user exists once for the whole cluster, on every node.
	for i := range nodes {
		c, err := amqp.Dial("amqp://guest:guest@" + nodes[i]["amqp"] + "/")
		if err != nil {
			t.Fatalf("guest on node %d: %v", i, err)
		}
		c.Close()
	}

	if _, err := dial(1); !refused(err) {
		t.Fatalf("unknown user on node 1: %v", err)
	}
	api(0, "PUT", "/api/users/alice", `{"password":"s3cret","tags":""}`)
	// Logged in on node 1 without waiting: no permissions yet, so opening
	// the vhost is refused (530), not the login (403).
	var conn *amqp.Connection
	waitFor(t, "alice known on node 1", func() bool {
		c, err := dial(1)
		if err == nil {
			c.Close()
			return false // no permission on "/" yet: must not open
		}
		var ae *amqp.Error
		return errors.As(err, &ae) && ae.Code == amqp.NotAllowed
	})

	api(1, "PUT", "/api/permissions/%2F/alice", `{"configure":"^alice\\.","write":"^alice\\.","read":"^alice\\."}`)
	waitFor(t, "alice's permissions on node 2", func() bool {
		c, err := dial(2)
		if err != nil {
			return false
		}
		conn = c
		return true
	})
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("alice.q", false, true, false, false, nil); err != nil {
		t.Fatalf("declare within her permissions: %v", err)
	}
	if _, err := ch.QueueDeclare("bob.q", false, true, false, false, nil); !refused(err) {
		t.Fatalf("declare outside her permissions: %v", err)
	}

	// Widened on node 0: her open connection on node 2 sees it.
	api(0, "PUT", "/api/permissions/%2F/alice", `{"configure":".*","write":".*","read":".*"}`)
	waitFor(t, "wider permissions on node 2", func() bool {
		ch, err := conn.Channel()
		if err != nil {
			return false
		}
		defer ch.Close()
		_, err = ch.QueueDeclare("bob.q", false, true, false, false, nil)
		return err == nil
	})

	api(2, "DELETE", "/api/users/alice", "")
	for i := range nodes {
		waitFor(t, "alice gone", func() bool {
			c, err := dial(i)
			if err == nil {
				c.Close()
			}
			return refused(err)
		})
	}
}
