package main

import (
	"context"
	"encoding/json"
	"errors"
	"log"

	amqp "github.com/rabbitmq/amqp091-go"
)

// comms takes "send invoice" commands from the invoices queue over AMQP,
// "sends" the invoice (logs it) and publishes an "invoice sent" event to
// amq.topic for the dashboard; each command is acknowledged once handled.
func comms(ctx context.Context) error {
	conn, err := amqp.Dial(amqpURL)
	if err != nil {
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	if _, err := ch.QueueDeclare("invoices", true, false, false, false, nil); err != nil {
		return err
	}
	if err := ch.Qos(10, 0, false); err != nil {
		return err
	}
	cmds, err := ch.ConsumeWithContext(ctx, "invoices", "comms", false, false, false, false, nil)
	if err != nil {
		return err
	}
	for d := range cmds {
		var c map[string]any
		if err := json.Unmarshal(d.Body, &c); err != nil {
			d.Reject(false) // dead-lettered if the queue has a DLX
			continue
		}
		log.Printf("comms: invoice sent to %v for %v (%.2f EUR)", c["customer"], c["order"], c["amount"])
		ev, _ := json.Marshal(map[string]any{"event": "invoice.sent", "order": c["order"], "customer": c["customer"], "amount": c["amount"]})
		if err := ch.PublishWithContext(ctx, "amq.topic", "events.invoice.sent", false, false,
			amqp.Publishing{ContentType: "application/json", Body: ev}); err != nil {
			return err
		}
		d.Ack(false)
	}
	return errors.New("the invoices subscription ended")
}
