package main

import (
	"context"
	"fmt"
	"math"
	"net"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// sensors are three IoT devices publishing temperature telemetry over
// MQTT 5 (QoS 0) to sensors/<id>/temperature, which Bourse routes through
// amq.topic (routing key sensors.<id>.temperature).
func sensors(ctx context.Context) error {
	errc := make(chan error, 3)
	for i := 1; i <= 3; i++ {
		go func() { errc <- sensor(ctx, fmt.Sprintf("sensor-%d", i), float64(18+i*2)) }()
	}
	return <-errc
}

func sensor(ctx context.Context, id string, base float64) error {
	nc, err := net.Dial("tcp", mqttAddr)
	if err != nil {
		return err
	}
	c := paho.NewClient(paho.ClientConfig{Conn: nc})
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30,
		Username: user, UsernameFlag: true, Password: []byte(pass), PasswordFlag: true}); err != nil {
		return err
	}
	defer c.Disconnect(&paho.Disconnect{})
	for t := 0.0; ; t++ {
		v := base + 2*math.Sin(t/10)
		if _, err := c.Publish(ctx, &paho.Publish{Topic: "sensors/" + id + "/temperature", QoS: 0,
			Payload:    []byte(fmt.Sprintf(`{"sensor":%q,"celsius":%.2f}`, id, v)),
			Properties: &paho.PublishProperties{ContentType: "application/json"}}); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}
