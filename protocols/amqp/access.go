package amqp

import (
	"github.com/bourse-mq/bourse/auth"
	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/router"
)

// Permission checks, by RabbitMQ's table for AMQP 0-9-1 operations:
//
//	exchange.declare           configure exchange (+ write on its alternate exchange, read on it)
//	exchange.delete            configure exchange
//	queue.declare              configure queue (+ write on its dead-letter exchange, read on it)
//	queue.delete               configure queue
//	exchange.bind / unbind     write destination exchange, read source exchange
//	queue.bind / unbind        write queue, read exchange (+ topic read on the key)
//	basic.publish              write exchange (+ topic write on the key)
//	basic.get / consume, purge read queue
//
// Passive declares need no permission. A refusal is a channel exception
// 403 ACCESS_REFUSED.

func (ch *channel) allow(r auth.Resource, name string, op auth.Op) error {
	return ch.c.principal.Check(ch.c.vhostName, r, name, op)
}

func (ch *channel) allowTopic(exchange, key string, op auth.Op) error {
	return ch.c.principal.CheckTopic(ch.c.vhostName, exchange, key, op, "")
}

// allowArgs checks the exchanges a declaration's arguments send messages to.
func (ch *channel) allowArgs(r auth.Resource, name string, args core.Table, key string) error {
	target, ok := args[key].(string)
	if !ok {
		return nil
	}
	if err := ch.allow(auth.Exchange, target, auth.Write); err != nil {
		return err
	}
	return ch.allow(r, name, auth.Read)
}

// allowPublish checks basic.publish; the channel remembers the last
// exchange allowed while permissions are unchanged, so a steady publisher
// pays for one check.
func (ch *channel) allowPublish(exchange, key string) error {
	p := ch.c.principal
	if p.Unrestricted() {
		return nil
	}
	gen := p.Generation()
	if !(ch.pubOK && ch.pubGen == gen && ch.pubExchange == exchange) {
		if err := ch.allow(auth.Exchange, exchange, auth.Write); err != nil {
			return err
		}
		ch.pubOK, ch.pubGen, ch.pubExchange = true, gen, exchange
	}
	return ch.allowTopic(exchange, key, auth.Write)
}

// declaredQueueName gives a server-named queue its name before the
// configure check, so the check sees the name RabbitMQ would check.
func declaredQueueName(name string) string {
	if name == "" {
		return router.GenerateQueueName()
	}
	return name
}
