package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/go-stomp/stomp/v3"
	amqp "github.com/rabbitmq/amqp091-go"
)

// An MQTT 5 requester sets a response topic; an AMQP service replies the
// RabbitMQ way (publish to amq.topic with x-reply-to-topic as the routing
// key), and the reply reaches the requester with its correlation data.
func TestMQTTRequestAMQPReply(t *testing.T) {
	b := Start(t)
	name := uniq(t)
	ch := b.AMQPChannel(t)
	_, reqs := amqpQueueOn(t, ch, "amq.topic", "rpc."+name)
	mc, msgs := b.MQTT5(t, "req-"+name)
	Subscribe(t, mc, "resp/"+name)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := mc.Publish(ctx, &paho.Publish{Topic: "rpc/" + name, QoS: 1, Payload: []byte("2+2"),
		Properties: &paho.PublishProperties{ResponseTopic: "resp/" + name, CorrelationData: []byte("q1")}}); err != nil {
		t.Fatal(err)
	}
	req := recvAMQP(t, reqs)
	replyKey, _ := req.Headers["x-reply-to-topic"].(string)
	if replyKey == "" {
		t.Fatalf("request without x-reply-to-topic: %v", req.Headers)
	}
	if err := ch.PublishWithContext(ctx, "amq.topic", replyKey, false, false,
		amqp.Publishing{CorrelationId: req.CorrelationId, Body: []byte("4")}); err != nil {
		t.Fatal(err)
	}
	resp := recvMQTT(t, msgs)
	if string(resp.Payload) != "4" || resp.Properties == nil || string(resp.Properties.CorrelationData) != "q1" {
		t.Fatalf("reply %q %+v", resp.Payload, resp.Properties)
	}
}

// An AMQP client uses direct reply-to; a STOMP service takes the request
// from a queue and replies to the reply-to address through the default
// exchange.
func TestAMQPDirectReplyToAnsweredOverSTOMP(t *testing.T) {
	b := Start(t)
	name := uniq(t)
	sc := b.STOMP(t)
	sub, err := sc.Subscribe("/queue/"+name, stomp.AckAuto)
	if err != nil {
		t.Fatal(err)
	}
	ch := b.AMQPChannel(t)
	replies, err := ch.Consume("amq.rabbitmq.reply-to", "", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if err := ch.PublishWithContext(context.Background(), "", name, false, false,
		amqp.Publishing{ReplyTo: "amq.rabbitmq.reply-to", CorrelationId: "r1", Body: []byte("ping")}); err != nil {
		t.Fatal(err)
	}
	req := recvSTOMP(t, sub)
	replyTo := req.Header.Get("reply-to")
	if replyTo == "" {
		t.Fatalf("no reply-to header: %v", req.Header)
	}
	if err := sc.Send(replyTo, "text/plain", []byte("pong"), stomp.SendOpt.Header("correlation-id", req.Header.Get("correlation-id"))); err != nil {
		t.Fatal(err)
	}
	got := recvAMQP(t, replies)
	if string(got.Body) != "pong" || got.CorrelationId != "r1" {
		t.Fatalf("reply %q corr %q", got.Body, got.CorrelationId)
	}
}
