package stomp

import (
	"github.com/bourse-mq/bourse/auth"
	"github.com/bourse-mq/bourse/core"
)

// Permission checks, as RabbitMQ's STOMP plugin makes them through its
// AMQP operations:
//
//	SEND                   write on the target exchange (/queue/, /amq/queue/,
//	                       /stream/: the default exchange), topic write on
//	                       the key for /topic/ and /exchange/
//	declaring a /queue/    configure on the queue (+ write on its
//	                       dead-letter exchange, read on the queue)
//	SUBSCRIBE              read on the queue consumed; a /topic/ or
//	                       /exchange/ subscription also needs configure and
//	                       write on its subscription queue, read on the
//	                       exchange and topic read on the key
//
// A refusal is an ERROR frame "access_refused" and the connection closes.

func (c *conn) allow(r auth.Resource, name string, op auth.Op) error {
	return c.principal.Check(c.vh.Name(), r, name, op)
}

func (c *conn) allowPublish(exchange, key string) error {
	if err := c.allow(auth.Exchange, exchange, auth.Write); err != nil {
		return err
	}
	return c.principal.CheckTopic(c.vh.Name(), exchange, key, auth.Write, "")
}

func (c *conn) allowDeclare(queue string, args core.Table) error {
	if err := c.allow(auth.Queue, queue, auth.Configure); err != nil {
		return err
	}
	if dlx, ok := args["x-dead-letter-exchange"].(string); ok {
		if err := c.allow(auth.Exchange, dlx, auth.Write); err != nil {
			return err
		}
		return c.allow(auth.Queue, queue, auth.Read)
	}
	return nil
}

func (c *conn) allowSubscriptionQueue(exchange, queue, key string, args core.Table) error {
	if err := c.allowDeclare(queue, args); err != nil {
		return err
	}
	if err := c.allow(auth.Queue, queue, auth.Write); err != nil {
		return err
	}
	if err := c.allow(auth.Exchange, exchange, auth.Read); err != nil {
		return err
	}
	return c.principal.CheckTopic(c.vh.Name(), exchange, key, auth.Read, "")
}
