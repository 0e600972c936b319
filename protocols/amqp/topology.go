package amqp

import (
	"math"
	"strings"

	"github.com/bourse-mq/bourse/auth"
	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/protocols/amqp/wire"
	"github.com/bourse-mq/bourse/router"
)

// The exchange and queue classes map one to one onto router.VHost calls;
// the router checks names, equivalence, ownership and arguments, and its
// errors become channel or connection exceptions in toAMQP.

func (ch *channel) answer(noWait bool, m wire.Method) {
	if !noWait {
		ch.c.out.pushMethod(ch.id, m)
	}
}

func (ch *channel) exchangeDeclare(m *wire.ExchangeDeclare) error {
	args := tableFromWire(m.Arguments)
	if !m.Passive {
		if err := ch.allow(auth.Exchange, m.Exchange, auth.Configure); err != nil {
			return err
		}
		if err := ch.allowArgs(auth.Exchange, m.Exchange, args, "alternate-exchange"); err != nil {
			return err
		}
	}
	err := ch.c.vhost.DeclareExchange(router.ExchangeDecl{
		ExchangeInfo: router.ExchangeInfo{
			Name: m.Exchange, Type: m.Type, Durable: m.Durable, AutoDelete: m.AutoDelete,
			Internal: m.Internal, Args: args,
		},
		Passive: m.Passive,
	})
	if err != nil {
		return err
	}
	ch.answer(m.NoWait, &wire.ExchangeDeclareOk{})
	return nil
}

func (ch *channel) exchangeDelete(m *wire.ExchangeDelete) error {
	if err := ch.allow(auth.Exchange, m.Exchange, auth.Configure); err != nil {
		return err
	}
	if err := ch.c.vhost.DeleteExchange(m.Exchange, m.IfUnused); err != nil {
		return err
	}
	ch.answer(m.NoWait, &wire.ExchangeDeleteOk{})
	return nil
}

// allowExchangeBind checks exchange.bind and exchange.unbind.
func (ch *channel) allowExchangeBind(src, dst, key string) error {
	if err := ch.allow(auth.Exchange, dst, auth.Write); err != nil {
		return err
	}
	if err := ch.allow(auth.Exchange, src, auth.Read); err != nil {
		return err
	}
	return ch.allowTopic(src, key, auth.Read)
}

// allowQueueBind checks queue.bind and queue.unbind.
func (ch *channel) allowQueueBind(exchange, q, key string) error {
	if err := ch.allow(auth.Queue, q, auth.Write); err != nil {
		return err
	}
	if err := ch.allow(auth.Exchange, exchange, auth.Read); err != nil {
		return err
	}
	return ch.allowTopic(exchange, key, auth.Read)
}

func (ch *channel) exchangeBind(m *wire.ExchangeBind) error {
	if err := ch.allowExchangeBind(m.Source, m.Destination, m.RoutingKey); err != nil {
		return err
	}
	b := router.Binding{Source: m.Source, Dest: router.Dest{Kind: router.ToExchange, Name: m.Destination},
		Key: m.RoutingKey, Args: tableFromWire(m.Arguments)}
	if err := ch.c.vhost.Bind(b, ch.c.id); err != nil {
		return err
	}
	ch.answer(m.NoWait, &wire.ExchangeBindOk{})
	return nil
}

func (ch *channel) exchangeUnbind(m *wire.ExchangeUnbind) error {
	if err := ch.allowExchangeBind(m.Source, m.Destination, m.RoutingKey); err != nil {
		return err
	}
	b := router.Binding{Source: m.Source, Dest: router.Dest{Kind: router.ToExchange, Name: m.Destination},
		Key: m.RoutingKey, Args: tableFromWire(m.Arguments)}
	if err := ch.c.vhost.Unbind(b, ch.c.id); err != nil {
		return err
	}
	ch.answer(m.NoWait, &wire.ExchangeUnbindOk{})
	return nil
}

func (ch *channel) queueDeclare(m *wire.QueueDeclare) error {
	if m.Passive && (m.Queue == router.ReplyToPrefix || strings.HasPrefix(m.Queue, router.ReplyToPrefix+".")) {
		// The direct reply-to pseudo-queue exists for passive declares, as
		// in RabbitMQ.
		ch.answer(m.NoWait, &wire.QueueDeclareOk{Queue: m.Queue})
		return nil
	}
	name, args := m.Queue, tableFromWire(m.Arguments)
	if !m.Passive {
		name = declaredQueueName(name)
		if err := ch.allow(auth.Queue, name, auth.Configure); err != nil {
			return err
		}
		if err := ch.allowArgs(auth.Queue, name, args, "x-dead-letter-exchange"); err != nil {
			return err
		}
	}
	ok, err := ch.c.vhost.DeclareQueue(router.QueueDecl{
		QueueInfo: core.QueueInfo{
			Name: name, Durable: m.Durable, Exclusive: m.Exclusive, AutoDelete: m.AutoDelete,
			Args: args,
		},
		Passive: m.Passive,
		Owner:   ch.c.id,
	})
	if err != nil {
		return err
	}
	ch.lastQueue = ok.Name
	ch.answer(m.NoWait, &wire.QueueDeclareOk{Queue: ok.Name, MessageCount: count32(ok.Messages), ConsumerCount: count32(ok.Consumers)})
	return nil
}

func count32(n int) uint32 { return uint32(min(max(n, 0), math.MaxUint32)) }

// bindTarget applies §1.7.2.3 (queue.bind): an empty queue name means the
// last declared queue, and then an empty routing key means that name too.
func (ch *channel) bindTarget(queue, key string, m wire.Method) (string, string, error) {
	if queue != "" {
		return queue, key, nil
	}
	q, err := ch.queueName(queue, m)
	if err != nil {
		return "", "", err
	}
	if key == "" {
		key = q
	}
	return q, key, nil
}

func (ch *channel) queueBind(m *wire.QueueBind) error {
	q, key, err := ch.bindTarget(m.Queue, m.RoutingKey, m)
	if err != nil {
		return err
	}
	if err := ch.allowQueueBind(m.Exchange, q, key); err != nil {
		return err
	}
	b := router.Binding{Source: m.Exchange, Dest: router.Dest{Kind: router.ToQueue, Name: q}, Key: key, Args: tableFromWire(m.Arguments)}
	if err := ch.c.vhost.Bind(b, ch.c.id); err != nil {
		return err
	}
	ch.answer(m.NoWait, &wire.QueueBindOk{})
	return nil
}

func (ch *channel) queueUnbind(m *wire.QueueUnbind) error {
	q, key, err := ch.bindTarget(m.Queue, m.RoutingKey, m)
	if err != nil {
		return err
	}
	if err := ch.allowQueueBind(m.Exchange, q, key); err != nil {
		return err
	}
	b := router.Binding{Source: m.Exchange, Dest: router.Dest{Kind: router.ToQueue, Name: q}, Key: key, Args: tableFromWire(m.Arguments)}
	if err := ch.c.vhost.Unbind(b, ch.c.id); err != nil {
		return err
	}
	ch.c.out.pushMethod(ch.id, &wire.QueueUnbindOk{})
	return nil
}

func (ch *channel) queuePurge(m *wire.QueuePurge) error {
	q, err := ch.queueName(m.Queue, m)
	if err != nil {
		return err
	}
	if err := ch.allow(auth.Queue, q, auth.Read); err != nil {
		return err
	}
	n, err := ch.c.vhost.PurgeQueue(q, ch.c.id)
	if err != nil {
		return err
	}
	ch.answer(m.NoWait, &wire.QueuePurgeOk{MessageCount: count32(n)})
	return nil
}

func (ch *channel) queueDelete(m *wire.QueueDelete) error {
	q, err := ch.queueName(m.Queue, m)
	if err != nil {
		return err
	}
	if err := ch.allow(auth.Queue, q, auth.Configure); err != nil {
		return err
	}
	n, err := ch.c.vhost.DeleteQueue(q, m.IfUnused, m.IfEmpty, ch.c.id)
	if err != nil {
		return err
	}
	ch.answer(m.NoWait, &wire.QueueDeleteOk{MessageCount: count32(n)})
	return nil
}
