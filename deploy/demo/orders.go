package main

import (
	"context"
	"encoding/json"
	"errors"
	"log"

	"github.com/go-stomp/stomp/v3"
	amqp "github.com/rabbitmq/amqp091-go"
)

// orders reads the payments stream over AMQP as the named reader "orders"
// (the broker keeps its offset, so a restart resumes where it left off)
// and, for each payment, sends a "send invoice" command over STOMP to the
// invoices queue, persistent, with a receipt.
func orders(ctx context.Context) error {
	conn, err := amqp.Dial(amqpURL)
	if err != nil {
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	if _, err := ch.QueueDeclare("payments", true, false, false, false, amqp.Table{"x-queue-type": "stream", "x-max-age": "7D"}); err != nil {
		return err
	}
	if err := ch.Qos(20, 0, false); err != nil {
		return err
	}
	events, err := ch.ConsumeWithContext(ctx, "payments", "orders", false, false, false, false,
		amqp.Table{"x-stream-consumer-name": "orders", "x-stream-offset": "first"})
	if err != nil {
		return err
	}
	st, err := stomp.Dial("tcp", stompAddr, stomp.ConnOpt.Login(user, pass), stomp.ConnOpt.Host("/"))
	if err != nil {
		return err
	}
	var failed error
	defer func() { closeStomp(st, failed) }()
	for d := range events {
		var p map[string]any
		if err := json.Unmarshal(d.Body, &p); err != nil {
			d.Ack(false) // not ours to fix: skip it
			continue
		}
		cmd, _ := json.Marshal(map[string]any{"command": "send-invoice", "order": p["order"], "payment": p["payment"],
			"customer": p["customer"], "amount": p["amount"]})
		if err := st.Send("/queue/invoices", "application/json", cmd, stomp.SendOpt.Receipt,
			stomp.SendOpt.Header("persistent", "true"), stomp.SendOpt.Header("message-id", "invoice-"+d.MessageId)); err != nil {
			failed = err
			return err
		}
		log.Printf("orders: stream offset %v: send invoice for %v", d.Headers["x-stream-offset"], p["order"])
		d.Ack(false)
	}
	return errors.New("the payments stream subscription ended")
}
