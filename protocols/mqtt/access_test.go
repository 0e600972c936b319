package mqtt

import (
	"context"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/bourse-mq/bourse/auth"
	"github.com/bourse-mq/bourse/internal/testkit"
)

// mqttAuth: "dev" may publish devices/<client id>/… and subscribe to
// devices/<user>/cmd/…; "noperm" has no permissions on "/"; "ro" may read
// amq.topic but not write it.
func mqttAuth(t *testing.T) *auth.Store {
	t.Helper()
	s := testkit.Users(t)
	must := func(err error) { t.Helper(); testkit.Must(t, err) }
	must(s.PutUser("dev", "pw", nil))
	must(s.SetPermissions(auth.Permission{User: "dev", VHost: "/", Configure: ".*", Write: ".*", Read: ".*"}))
	must(s.SetTopicPermissions(auth.TopicPermission{User: "dev", VHost: "/", Exchange: "amq.topic",
		Write: `^devices\.{client_id}\.`, Read: `^devices\.{username}\.cmd\.`}))
	must(s.PutUser("noperm", "pw", nil))
	must(s.PutUser("ro", "pw", nil))
	must(s.SetPermissions(auth.Permission{User: "ro", VHost: "/", Configure: ".*", Write: "^$", Read: ".*"}))
	return s
}

func loginAs(user, pass string) func(*packets.Packet) {
	return func(pk *packets.Packet) {
		pk.Connect.UsernameFlag, pk.Connect.Username = true, []byte(user)
		pk.Connect.PasswordFlag, pk.Connect.Password = true, []byte(pass)
	}
}

func TestMQTTPermissions(t *testing.T) {
	ts := startServer(t, nil, Options{Auth: mqttAuth(t)})
	// CONNECT: no permissions on the vhost is 0x87 (v5) / 0x05 (v3).
	for _, v := range []byte{5, 4} {
		rc := dialRaw(t, ts.addr, v)
		ca := rc.connect("np", true, loginAs("noperm", "pw"))
		if want := map[byte]byte{5: 0x87, 4: 0x05}[v]; ca.ReasonCode != want {
			t.Fatalf("v%d CONNACK %#x, want %#x", v, ca.ReasonCode, want)
		}
		rc.expectClosed(5 * time.Second)
	}
	// A will on a topic the user may not write is refused at CONNECT.
	rc := dialRaw(t, ts.addr, 5)
	ca := rc.connect("d1", true, func(pk *packets.Packet) {
		loginAs("dev", "pw")(pk)
		pk.Connect.WillFlag, pk.Connect.WillTopic, pk.Connect.WillPayload = true, "devices/other/status", []byte("gone")
	})
	if ca.ReasonCode != 0x87 {
		t.Fatalf("will outside the topic permission: CONNACK %#x", ca.ReasonCode)
	}
	rc.expectClosed(5 * time.Second)

	watch := bindSink(t, ts.vhost("/"), "watch", "#")
	dev := dialV5(t, ts.addr, "d1", &paho.Connect{CleanStart: true, KeepAlive: 30,
		Username: "dev", UsernameFlag: true, Password: []byte("pw"), PasswordFlag: true})
	// PUBLISH: allowed topic goes through; refused one gets PUBACK 0x87 and
	// reaches nobody.
	if r := dev.publish(&paho.Publish{Topic: "devices/d1/temp", QoS: 1, Payload: []byte("21")}); r.ReasonCode != 0 {
		t.Fatalf("allowed publish: %#x", r.ReasonCode)
	}
	if d := watch.next(t); string(d.Msg.Body) != "21" {
		t.Fatalf("got %q", d.Msg.Body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	r, _ := dev.c.Publish(ctx, &paho.Publish{Topic: "devices/d2/temp", QoS: 1, Payload: []byte("spoof")})
	cancel()
	if r == nil || r.ReasonCode != 0x87 {
		t.Fatalf("refused publish: %+v, want PUBACK 0x87", r)
	}
	watch.none(t, 100*time.Millisecond)
	// SUBSCRIBE: per filter.
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	sa, _ := dev.c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "devices/dev/cmd/#", QoS: 1},
		{Topic: "devices/#", QoS: 1}, {Topic: "$share/g/devices/+/cmd/x", QoS: 1}}})
	cancel()
	if sa == nil || len(sa.Reasons) != 3 || sa.Reasons[0] != 1 || sa.Reasons[1] != 0x87 || sa.Reasons[2] != 0x87 {
		t.Fatalf("SUBACK %v, want [1 0x87 0x87]", sa.Reasons)
	}

	// MQTT 3.1.1: a refused filter is SUBACK 0x80; a refused QoS 1 publish
	// closes the connection (3.1.1 has no negative PUBACK).
	r3 := dialRaw(t, ts.addr, 4)
	if ca := r3.connect("ro-1", true, loginAs("ro", "pw")); ca.ReasonCode != 0 {
		t.Fatalf("ro CONNACK %#x", ca.ReasonCode)
	}
	if sk := r3.subscribe(1, packets.Subscription{Filter: "a/b", Qos: 1}); len(sk.ReasonCodes) != 1 || sk.ReasonCodes[0] != 1 {
		t.Fatalf("ro may read: %v", sk.ReasonCodes)
	}
	r3.publish(2, 1, "a/b", []byte("nope"))
	r3.expectClosed(5 * time.Second)
	watch.none(t, 100*time.Millisecond)

	d3 := dialRaw(t, ts.addr, 4)
	if ca := d3.connect("d3", true, loginAs("dev", "pw")); ca.ReasonCode != 0 {
		t.Fatalf("CONNACK %#x", ca.ReasonCode)
	}
	if sk := d3.subscribe(1, packets.Subscription{Filter: "alarms/#", Qos: 1}); len(sk.ReasonCodes) != 1 || sk.ReasonCodes[0] != 0x80 {
		t.Fatalf("v3 refused filter: %v, want [0x80]", sk.ReasonCodes)
	}
}
