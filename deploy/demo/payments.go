package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"math/rand/v2"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// payments publishes "payment received" events over AMQP, with publisher
// confirms, through the "payments" topic exchange into the "payments"
// stream. A message id makes a resend after a reconnect harmless (the
// stream deduplicates it).
func payments(ctx context.Context) error {
	conn, err := amqp.Dial(amqpURL)
	if err != nil {
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	if err := ch.ExchangeDeclare("payments", "topic", true, false, false, false, nil); err != nil {
		return err
	}
	if _, err := ch.QueueDeclare("payments", true, false, false, false, amqp.Table{"x-queue-type": "stream", "x-max-age": "7D"}); err != nil {
		return err
	}
	if err := ch.QueueBind("payments", "payment.#", "payments", false, nil); err != nil {
		return err
	}
	if err := ch.Confirm(false); err != nil {
		return err
	}
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, 1))
	for n := 1; ; n++ {
		id := fmt.Sprintf("pay-%d-%d", time.Now().Unix(), n)
		ev, _ := json.Marshal(map[string]any{"payment": id, "order": fmt.Sprintf("order-%d", 1000+n),
			"customer": fmt.Sprintf("customer%d@example.com", rand.IntN(50)), "amount": float64(rand.IntN(20000)) / 100})
		if err := ch.PublishWithContext(ctx, "payments", "payment.received", false, false, amqp.Publishing{
			ContentType: "application/json", DeliveryMode: amqp.Persistent, MessageId: id, Type: "payment.received",
			Timestamp: time.Now(), Body: ev,
		}); err != nil {
			return err
		}
		select {
		case c := <-confirms:
			if !c.Ack {
				return fmt.Errorf("payment %s not confirmed", id)
			}
		case <-ctx.Done():
			return ctx.Err()
		}
		log.Printf("payments: payment received %s", ev)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(rate()):
		}
	}
}
