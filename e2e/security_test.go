package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/go-stomp/stomp/v3"
	rabbithole "github.com/michaelklishin/rabbit-hole/v3"
	amqp "github.com/rabbitmq/amqp091-go"
)

// TestUsersAndPermissionsEndToEnd: users made with the CLI, permissions
// set with the CLI, enforced on AMQP, MQTT, STOMP and HTTP by the real
// binary, and kept across a restart.
func TestUsersAndPermissionsEndToEnd(t *testing.T) {
	br := Start(t)
	cli := func(stdin string, args ...string) string {
		t.Helper()
		cmd := exec.Command(binary(t), append(args, "--url", "http://"+br.Addrs["http"])...)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("bourse %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	cli("s3cret\n", "user", "add", "sensor", "--tags", "")
	cli("", "user", "add", "viewer", "--password", "v", "--tags", "monitoring")
	cli("", "permissions", "set", "sensor", `^sensor\.`, `^(amq\.default|amq\.topic|sensor\..*)$`, `^(amq\.topic|sensor\..*)$`)
	cli("", "permissions", "topic", "set", "sensor", "amq.topic", `^telemetry\.`, `^commands\.`)
	if out := cli("", "user", "list"); !strings.Contains(out, "sensor") || !strings.Contains(out, "viewer") || !strings.Contains(out, "monitoring") {
		t.Fatalf("user list:\n%s", out)
	}
	// The password never reaches the log.
	if strings.Contains(br.Log(), "s3cret") {
		t.Fatal("a password was logged")
	}

	check := func() {
		t.Helper()
		// AMQP: own queue fine, a foreign one 403.
		conn, err := amqp.Dial("amqp://sensor:s3cret@" + br.Addrs["amqp"] + "/")
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ch, _ := conn.Channel()
		if _, err := ch.QueueDeclare("sensor.readings", true, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
		if err := ch.QueueBind("sensor.readings", "telemetry.#", "amq.topic", false, nil); err == nil {
			t.Fatal("bind with a key outside the topic read permission was allowed")
		}
		ch, _ = conn.Channel()
		_, err = ch.QueueDeclare("payments", true, false, false, false, nil)
		var ae *amqp.Error
		if !errors.As(err, &ae) || ae.Code != amqp.AccessRefused {
			t.Fatalf("foreign queue: %v", err)
		}
		if _, err := amqp.Dial("amqp://sensor:wrong@" + br.Addrs["amqp"] + "/"); !errors.As(err, &ae) || ae.Code != amqp.AccessRefused {
			t.Fatalf("wrong password: %v", err)
		}

		// MQTT: telemetry/… may be published, alarms/… not (PUBACK 0x87).
		nc, err := net.Dial("tcp", br.Addrs["mqtt"])
		if err != nil {
			t.Fatal(err)
		}
		mc := paho.NewClient(paho.ClientConfig{Conn: nc})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if ca, err := mc.Connect(ctx, &paho.Connect{ClientID: "s1", CleanStart: true, KeepAlive: 30,
			Username: "sensor", UsernameFlag: true, Password: []byte("s3cret"), PasswordFlag: true}); err != nil || ca.ReasonCode != 0 {
			t.Fatalf("mqtt connect: %v %+v", err, ca)
		}
		defer mc.Disconnect(&paho.Disconnect{})
		if r, err := mc.Publish(ctx, &paho.Publish{Topic: "telemetry/t1", QoS: 1, Payload: []byte("20")}); err != nil || r.ReasonCode >= 0x80 {
			t.Fatalf("allowed publish: %v %+v", err, r)
		}
		if r, _ := mc.Publish(ctx, &paho.Publish{Topic: "alarms/t1", QoS: 1, Payload: []byte("x")}); r == nil || r.ReasonCode != 0x87 {
			t.Fatalf("refused publish: %+v", r)
		}
		sa, _ := mc.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "commands/s1", QoS: 1}, {Topic: "telemetry/#", QoS: 1}}})
		if sa == nil || len(sa.Reasons) != 2 || sa.Reasons[0] != 1 || sa.Reasons[1] != 0x87 {
			t.Fatalf("SUBACK %+v", sa)
		}

		// STOMP: the foreign queue is an ERROR.
		sc, err := stomp.Dial("tcp", br.Addrs["stomp"], stomp.ConnOpt.Login("sensor", "s3cret"), stomp.ConnOpt.Host("/"), stomp.ConnOpt.HeartBeat(0, 0))
		if err != nil {
			t.Fatal(err)
		}
		if err := sc.Send("/queue/sensor.readings", "text/plain", []byte("ok"), stomp.SendOpt.Receipt); err != nil {
			t.Fatalf("allowed send: %v", err)
		}
		if err := sc.Send("/queue/payments", "text/plain", []byte("no"), stomp.SendOpt.Receipt); err == nil {
			t.Fatal("send to a foreign queue was allowed")
		}

		// HTTP: no management tag → 403; monitoring reads but cannot write;
		// the users API is for administrators.
		for _, c := range []struct {
			user, pass, method, path string
			want                     int
		}{
			{"sensor", "s3cret", "GET", "/api/overview", http.StatusForbidden},
			{"viewer", "v", "GET", "/api/queues", http.StatusOK},
			{"viewer", "v", "PUT", "/api/queues/%2F/x", http.StatusForbidden},
			{"viewer", "v", "GET", "/api/users", http.StatusForbidden},
			{"viewer", "nope", "GET", "/api/overview", http.StatusUnauthorized},
			{"guest", "guest", "GET", "/api/users", http.StatusOK},
		} {
			req, _ := http.NewRequest(c.method, "http://"+br.Addrs["http"]+c.path, strings.NewReader("{}"))
			req.SetBasicAuth(c.user, c.pass)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != c.want {
				t.Fatalf("%s %s %s: %d, want %d", c.user, c.method, c.path, resp.StatusCode, c.want)
			}
		}
	}
	check()
	br.Stop()
	br.Restart()
	check() // users, permissions and topic permissions were kept
}

// TestUsersAPIWithRabbitHole drives the users and permissions endpoints
// with an unchanged RabbitMQ client library.
func TestUsersAPIWithRabbitHole(t *testing.T) {
	br := Start(t)
	rh, err := rabbithole.NewClient("http://"+br.Addrs["http"], "guest", "guest")
	if err != nil {
		t.Fatal(err)
	}
	must := func(_ *http.Response, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(rh.PutUser("ops", rabbithole.UserSettings{Password: "pw", Tags: rabbithole.UserTags{"management"}}))
	must(rh.PutVhost("ops-vh", rabbithole.VhostSettings{}))
	must(rh.UpdatePermissionsIn("ops-vh", "ops", rabbithole.Permissions{Configure: ".*", Write: ".*", Read: ".*"}))
	must(rh.UpdateTopicPermissionsIn("ops-vh", "ops", rabbithole.TopicPermissions{Exchange: "amq.topic", Write: "^a", Read: "^a"}))
	u, err := rh.GetUser("ops")
	if err != nil || len(u.Tags) != 1 || u.Tags[0] != "management" || u.PasswordHash == "" {
		t.Fatalf("GetUser: %+v %v", u, err)
	}
	if ps, err := rh.ListPermissionsOf("ops"); err != nil || len(ps) != 1 || ps[0].Vhost != "ops-vh" {
		t.Fatalf("ListPermissionsOf: %+v %v", ps, err)
	}
	if tp, err := rh.ListTopicPermissionsOf("ops"); err != nil || len(tp) != 1 || tp[0].Exchange != "amq.topic" {
		t.Fatalf("ListTopicPermissionsOf: %+v %v", tp, err)
	}
	// The management user sees its vhost only, and may declare in it.
	ops, _ := rabbithole.NewClient("http://"+br.Addrs["http"], "ops", "pw")
	vhs, err := ops.ListVhosts()
	if err != nil || len(vhs) != 1 || vhs[0].Name != "ops-vh" {
		t.Fatalf("ops sees vhosts %+v (%v)", vhs, err)
	}
	must(ops.DeclareQueue("ops-vh", "jobs", rabbithole.QueueSettings{Durable: true}))
	if _, err := ops.DeclareQueue("/", "jobs", rabbithole.QueueSettings{Durable: true}); err == nil {
		t.Fatal("ops declared in a vhost it has no permissions in")
	}
	if _, err := ops.ListUsers(); err == nil {
		t.Fatal("a management user listed users")
	}
	// Definitions carry users and permissions (rabbit-hole's definitions
	// type drops a permission's user and vhost, so the JSON is moved as is).
	raw := func(method, addr string, body io.Reader) []byte {
		t.Helper()
		req, _ := http.NewRequest(method, "http://"+addr+"/api/definitions", body)
		req.SetBasicAuth("guest", "guest")
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode/100 != 2 {
			t.Fatalf("%s definitions: %s %s", method, resp.Status, b)
		}
		return b
	}
	var defs map[string]any
	if err := json.Unmarshal(raw("GET", br.Addrs["http"], nil), &defs); err != nil {
		t.Fatal(err)
	}
	users, _ := defs["users"].([]any)
	perms, _ := defs["permissions"].([]any)
	if len(users) != 2 || len(perms) != 3 || len(defs["topic_permissions"].([]any)) != 1 {
		t.Fatalf("definitions: users %v permissions %v", users, perms)
	}
	// A RabbitMQ-exported user (salted SHA-256 of "rabbit") imports as is.
	defs["users"] = append(users, map[string]any{"name": "from-rabbit", "password_hash": "kI3GCtSWKzaxDyeAk552s8+zlRJ9Rvy51mxrgCJL0NC2lsit",
		"hashing_algorithm": "rabbit_password_hashing_sha256", "tags": "monitoring"})
	other := Start(t)
	b, _ := json.Marshal(defs)
	raw("POST", other.Addrs["http"], bytes.NewReader(b))
	if _, err := amqp.Dial("amqp://ops:pw@" + other.Addrs["amqp"] + "/ops-vh"); err != nil {
		t.Fatalf("imported user on AMQP: %v", err)
	}
	fr, _ := rabbithole.NewClient("http://"+other.Addrs["http"], "from-rabbit", "rabbit")
	if _, err := fr.Overview(); err != nil {
		t.Fatalf("imported RabbitMQ hash: %v", err)
	}
	must(rh.DeleteUser("ops"))
	if _, err := amqp.Dial("amqp://ops:pw@" + br.Addrs["amqp"] + "/ops-vh"); err == nil {
		t.Fatal("a deleted user logged in")
	}
}
